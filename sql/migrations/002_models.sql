-- 2: the models a database's vectors come from, by the name their vectors are stored under, with how to
-- load each one again: commands without --model use the store's own.
CREATE TABLE IF NOT EXISTS models
(
    label         String,                    -- as images.model (clipsearch.model.model_label)
    name          String,                    -- the open_clip model name or FAMILY:NAME, '' for the bundled model
    pretrained    String,                    -- its tag or weights file, as given, '' for none
    dim           UInt32,
    registered_at DateTime64(3) DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(registered_at)
ORDER BY label;
