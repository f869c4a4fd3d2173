-- Rebuild `images` with 128-row granules, keeping every row, column, the vector index and the filter
-- columns' projections (CREATE TABLE ... AS copies them). For stores made before sql/schema.sql set
-- index_granularity = 128: a MergeTree table keeps the granule it was made with, and searches read
-- one granule of every column per result row (bench/README.md, "Search at real CLIP size").
-- Check first: SELECT engine_full FROM system.tables WHERE name = 'images' (no index_granularity = 128 in it).
-- Stop loaders and `clipsearch serve` first, then run
--   clipsearch sql --file sql/rebuild_images.sql              (the embedded store)
--   clickhouse-client --multiquery < sql/rebuild_images.sql    (a server)
-- It needs the table's size again on disk until the old copy is dropped, and rebuilds the vector index.
-- The settings are the ones clipsearch gives the table (filter columns need the two projection modes).
DROP TABLE IF EXISTS images_rebuilt;
-- Only the single table sql/schema.sql makes: a cluster's `images` is a Distributed table, and swapping it
-- for a local copy of every shard's rows would break the cluster.
SELECT throwIf(engine != 'ReplacingMergeTree',
               'images is not the ReplacingMergeTree table of sql/schema.sql: nothing was changed (see sql/README.md)')
FROM system.tables WHERE database = currentDatabase() AND name = 'images';
CREATE TABLE images_rebuilt AS images
ENGINE = ReplacingMergeTree(loaded_at) ORDER BY id
SETTINGS index_granularity = 128, deduplicate_merge_projection_mode = 'rebuild',
         lightweight_mutation_projection_mode = 'drop';
INSERT INTO images_rebuilt SELECT * FROM images FINAL;
EXCHANGE TABLES images AND images_rebuilt;
DROP TABLE images_rebuilt;
