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
ALTER TABLE images ADD INDEX IF NOT EXISTS words_name_text words_name TYPE text(tokenizer = 'array');
ALTER TABLE images ADD INDEX IF NOT EXISTS words_prefixes_text words_prefixes TYPE text(tokenizer = 'array');
ALTER TABLE images ADD INDEX IF NOT EXISTS words_title_text words_title TYPE text(tokenizer = 'array');
ALTER TABLE images ADD INDEX IF NOT EXISTS words_meta_text words_meta TYPE text(tokenizer = 'array');
ALTER TABLE images ADD INDEX IF NOT EXISTS words_ocr_text words_ocr TYPE text(tokenizer = 'array');
ALTER TABLE images ADD INDEX IF NOT EXISTS words_label_text words_label TYPE text(tokenizer = 'array');
