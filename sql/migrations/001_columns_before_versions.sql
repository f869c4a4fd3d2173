-- 1: the columns added before schema versions were recorded (2026-11 to 2026-12): databases made by those
-- releases get each one they lack, as NULL or its default.
-- modified_at: compared by size alone until the file is loaded again.
ALTER TABLE images ADD COLUMN IF NOT EXISTS modified_at Nullable(DateTime64(3)) AFTER file_size;
-- The perceptual hashes: `clipsearch hashes` fills them in.
ALTER TABLE images ADD COLUMN IF NOT EXISTS phash Nullable(UInt64) AFTER camera;
ALTER TABLE images ADD COLUMN IF NOT EXISTS colour_hash Nullable(UInt64) AFTER phash;
ALTER TABLE images ADD COLUMN IF NOT EXISTS centre_phash Nullable(UInt64) AFTER colour_hash;
ALTER TABLE images ADD COLUMN IF NOT EXISTS chroma_hash Nullable(UInt64) AFTER centre_phash;
ALTER TABLE images ADD COLUMN IF NOT EXISTS centre_chroma_hash Nullable(UInt64) AFTER chroma_hash;
-- GPS positions: files loaded again fill them in.
ALTER TABLE images ADD COLUMN IF NOT EXISTS latitude Nullable(Float64) AFTER camera;
ALTER TABLE images ADD COLUMN IF NOT EXISTS longitude Nullable(Float64) AFTER latitude;
-- Where a search came from, and the model's load time of a first search.
ALTER TABLE search_log ADD COLUMN IF NOT EXISTS origin LowCardinality(String) DEFAULT '' AFTER kind;
ALTER TABLE search_log ADD COLUMN IF NOT EXISTS model_load_ms Float32 DEFAULT 0 AFTER k;
