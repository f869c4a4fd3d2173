-- 4: vector_index_tuning keeps a beam for images and the measured cost of an exact ranking and of an
-- index search (clipsearch/search.py: Searcher.tune_index, Searcher.plan). Rows tuned before keep zeros
-- there: searches then use the one beam and the fixed share threshold, as before.
ALTER TABLE vector_index_tuning
    ADD COLUMN IF NOT EXISTS image_beam UInt32 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS rows UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS exact_ms Float32 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS index_ms Float32 DEFAULT 0;
