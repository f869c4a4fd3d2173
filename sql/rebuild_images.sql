-- Rebuild `images` with 1,024-row granules, keeping every row, column, the vector index and the filter
-- columns' projections (CREATE TABLE ... AS copies them). For stores made before sql/schema.sql set
-- index_granularity = 1024: a MergeTree table keeps the granule it was made with, and searches read
-- one granule of every column per result row (bench/README.md, "Search at real CLIP size").
-- Check first: SELECT engine_full FROM system.tables WHERE name = 'images' (no index_granularity = 1024 in it).
-- Stop loaders and `clipsearch serve` first, then run
--   clipsearch sql --file sql/rebuild_images.sql           (embedded, or a server via CLICKHOUSE_URL)
--   clickhouse-client --multiquery < sql/rebuild_images.sql
-- It needs the table's size again on disk until the old copy is dropped, and rebuilds the vector index.
-- The settings are the ones clipsearch gives the table (filter columns need the two projection modes).
DROP TABLE IF EXISTS images_rebuilt;
CREATE TABLE images_rebuilt AS images
ENGINE = ReplacingMergeTree(loaded_at) ORDER BY id
SETTINGS index_granularity = 1024, deduplicate_merge_projection_mode = 'rebuild',
         lightweight_mutation_projection_mode = 'drop';
INSERT INTO images_rebuilt SELECT * FROM images FINAL;
EXCHANGE TABLES images AND images_rebuilt;
DROP TABLE images_rebuilt;
