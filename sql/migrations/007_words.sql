-- 7: every image has words, for the words signal of a search (clipsearch/store/words.py makes the tokens;
-- ClickHouse's text index takes each array as its tokens). Rows loaded before get words_version 0:
-- `clipsearch words` (and the next load) fill their names' and metadata's words.
ALTER TABLE images ADD COLUMN IF NOT EXISTS words_name Array(String) DEFAULT [] AFTER orientation;
ALTER TABLE images ADD COLUMN IF NOT EXISTS words_prefixes Array(String) DEFAULT [] AFTER words_name;
ALTER TABLE images ADD COLUMN IF NOT EXISTS words_title Array(String) DEFAULT [] AFTER words_prefixes;
ALTER TABLE images ADD COLUMN IF NOT EXISTS words_meta Array(String) DEFAULT [] AFTER words_title;
ALTER TABLE images ADD COLUMN IF NOT EXISTS words_ocr Array(String) DEFAULT [] AFTER words_meta;
ALTER TABLE images ADD COLUMN IF NOT EXISTS words_label Array(String) DEFAULT [] AFTER words_ocr;
ALTER TABLE images ADD COLUMN IF NOT EXISTS words_version UInt8 DEFAULT 0 AFTER words_label;
ALTER TABLE images ADD COLUMN IF NOT EXISTS ocr_engine LowCardinality(String) DEFAULT '' AFTER words_version;
-- One text index over every field's words (a search looks them all up at once: one lookup, not six).
ALTER TABLE images ADD INDEX IF NOT EXISTS words_any arrayConcat(words_name, words_prefixes, words_title, words_meta, words_ocr, words_label) TYPE text(tokenizer = 'array');
