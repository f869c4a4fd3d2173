-- 9: videos beside photos. A video is many rows, one per moment kept (a frame at a scene change or every few
-- seconds), each with the video's content id in `video`, the moment's start and end in seconds and a small
-- JPEG of its frame (base64) to show; a photo is media 'image' with video ''.
ALTER TABLE images ADD COLUMN IF NOT EXISTS media LowCardinality(String) DEFAULT 'image' AFTER format;
ALTER TABLE images ADD COLUMN IF NOT EXISTS video String DEFAULT '' AFTER media;
ALTER TABLE images ADD COLUMN IF NOT EXISTS start Nullable(Float64) AFTER video;
ALTER TABLE images ADD COLUMN IF NOT EXISTS `end` Nullable(Float64) AFTER start;
ALTER TABLE images ADD COLUMN IF NOT EXISTS duration Nullable(Float64) AFTER `end`;
ALTER TABLE images ADD COLUMN IF NOT EXISTS codec LowCardinality(String) DEFAULT '' AFTER duration;
ALTER TABLE images ADD COLUMN IF NOT EXISTS thumbnail String DEFAULT '' CODEC(ZSTD(1)) AFTER codec;
