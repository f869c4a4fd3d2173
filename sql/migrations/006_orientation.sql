-- 6: pixels as a person sees them, and dates kept as they are.
-- orientation: the file's EXIF orientation; 0 for images loaded before it was read, whose stored width,
-- height, hashes and vector may be of the sideways picture: `clipsearch hashes` reads their files again,
-- records it and, for those not upright (orientation 2-8), re-computes all four from the upright pixels.
ALTER TABLE images ADD COLUMN IF NOT EXISTS orientation UInt8 DEFAULT 0 AFTER centre_chroma_hash;
-- taken_at held 1970 to 2106 and clamped the rest (1899 became 1970-01-01, 2299 2106-02-07); DateTime64 holds
-- 1900 to 2299 exactly, and a date outside it is NULL there with its EXIF text in exif_date. Rows loaded before
-- get their dates read again by `clipsearch hashes` with the orientation.
ALTER TABLE images MODIFY COLUMN IF EXISTS taken_at Nullable(DateTime64(0));
ALTER TABLE images ADD COLUMN IF NOT EXISTS exif_date String DEFAULT '' AFTER taken_at;
