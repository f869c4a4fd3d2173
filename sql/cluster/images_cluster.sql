-- Scale-out: `images` sharded and replicated across a ClickHouse cluster.
-- Written by `python -m scripts.cluster_ddl` from sql/schema.sql and sql/migrations/: edit those, not this.
-- Run once against any node, e.g.
--   clickhouse-client --queries-file sql/cluster/images_cluster.sql
-- `clipsearch` cluster is defined in the servers' remote_servers config (see
-- docker/clickhouse/cluster.xml); {shard} and {replica} are per-node macros.
-- Writers and readers use `images`, the Distributed table: the loader's INSERTs
-- are spread over shards by id, and a search runs on every shard in parallel
-- (each returns its own top k, the initiator merges them). The other tables of
-- the schema (labels, vector_index_tuning, schema_version) stay on the node
-- clipsearch connects to.

CREATE TABLE IF NOT EXISTS images_local ON CLUSTER clipsearch
(
    id         String,                       -- first 128 bits of SHA-256 of the file, hex
    path       String,                       -- as given to the loader (absolute for folders)
    width      UInt32,
    height     UInt32,
    format     LowCardinality(String),       -- JPEG, PNG, WEBP, ...
    media      LowCardinality(String) DEFAULT 'image',  -- image or video
    video      String DEFAULT '',            -- the video's content id (as files.id of its path), '' for a photo
    start      Nullable(Float64),            -- the moment's start and end in the video, in seconds
    `end`      Nullable(Float64),
    duration   Nullable(Float64),            -- the video's length in seconds
    codec      LowCardinality(String) DEFAULT '',  -- the video stream's codec (h264, hevc, vp9, av1, ...)
    thumbnail  String DEFAULT '' CODEC(ZSTD(1)),  -- the moment's frame as a small JPEG, base64 (photos: '')
    file_size  UInt64,                       -- bytes
    modified_at Nullable(DateTime64(3)),     -- the file's modification time when it was read
    taken_at   Nullable(DateTime64(0)),      -- EXIF DateTimeOriginal when present and 1900 to 2299, else NULL
    exif_date  String DEFAULT '',            -- the EXIF date as written when taken_at cannot hold it (1899:...)
    camera     String DEFAULT '',            -- EXIF Make and Model when present
    latitude   Nullable(Float64),            -- EXIF GPS position in degrees when present (north +)
    longitude  Nullable(Float64),            -- (east +): `near=LAT,LON,KM` filters by greatCircleDistance
    phash      Nullable(UInt64),             -- perceptual hashes of the pixels, for copies of one picture
    colour_hash Nullable(UInt64),            -- (clipsearch/hashes.py), NULL if none: grey layout, mean colour,
    centre_phash Nullable(UInt64),           -- the grey layout of the central 85%,
    chroma_hash Nullable(UInt64),            -- the colour layout of the whole picture
    centre_chroma_hash Nullable(UInt64),     -- and of its central 85%
    orientation UInt8 DEFAULT 0,             -- EXIF orientation: 1 upright, 2-8 turned or mirrored (width, height,
    words_name Array(String) DEFAULT [],
    words_prefixes Array(String) DEFAULT [],
    words_title Array(String) DEFAULT [],
    words_meta Array(String) DEFAULT [],
    words_ocr  Array(String) DEFAULT [],
    words_label Array(String) DEFAULT [],
    words_version UInt8 DEFAULT 0,           -- 1: names' and metadata's words read, 0: loaded before words
    ocr_engine LowCardinality(String) DEFAULT '',  -- the OCR that read words_ocr, '' none yet
    model      LowCardinality(String),       -- the CLIP model that made `embedding`
    loaded_at  DateTime64(3) DEFAULT now64(3),
    embedding  Array(Float32) CODEC(NONE),
    INDEX words_any arrayConcat(words_name, words_prefixes, words_title, words_meta, words_ocr, words_label)
        TYPE text(tokenizer = 'array')
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/clipsearch/images_local', '{replica}', loaded_at)
ORDER BY id
SETTINGS index_granularity = 128;

CREATE TABLE IF NOT EXISTS images ON CLUSTER clipsearch AS images_local
ENGINE = Distributed(clipsearch, currentDatabase(), images_local, sipHash64(id));

CREATE TABLE IF NOT EXISTS files_local ON CLUSTER clipsearch
(
    path        String,
    id          String,                      -- images.id of its content when it was read
    file_size   UInt64,
    modified_at Nullable(DateTime64(3)),
    metadata    String DEFAULT '{}',         -- the manifest columns attached to this path: a JSON object
    present     Bool DEFAULT true,
    updated_at  DateTime64(3) DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/clipsearch/files_local', '{replica}', updated_at)
ORDER BY path;

CREATE TABLE IF NOT EXISTS files ON CLUSTER clipsearch AS files_local
ENGINE = Distributed(clipsearch, currentDatabase(), files_local, sipHash64(path));

CREATE TABLE IF NOT EXISTS load_errors_local ON CLUSTER clipsearch
(
    path       String,
    reason     String,
    error_at   DateTime64(3) DEFAULT now64(3),
    file_size  Nullable(UInt64),
    modified_at Nullable(DateTime64(3))
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/clipsearch/load_errors_local', '{replica}')
ORDER BY (error_at, path);

CREATE TABLE IF NOT EXISTS load_errors ON CLUSTER clipsearch AS load_errors_local
ENGINE = Distributed(clipsearch, currentDatabase(), load_errors_local, rand());

CREATE TABLE IF NOT EXISTS search_log_local ON CLUSTER clipsearch
(
    time       DateTime64(3) DEFAULT now64(3),
    kind       LowCardinality(String),       -- text, image, similar, hybrid
    origin     LowCardinality(String) DEFAULT '',  -- http, cli or python: where the search came from
    text       String,
    filters    String,                       -- JSON list of [column, op, value]
    k          UInt32,
    results    UInt32,
    model_load_ms Float32 DEFAULT 0,         -- loading the model, when this search was its first use
    encode_ms  Float32,                      -- encoding the query (not loading the model)
    query_ms   Float32,
    total_ms   Float32,
    top_ids    Array(String),                -- best first, at most 10
    search_id  String DEFAULT ''             -- what search_clicks names this search by ('' before 8)
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/clipsearch/search_log_local', '{replica}')
ORDER BY time;

CREATE TABLE IF NOT EXISTS search_log ON CLUSTER clipsearch AS search_log_local
ENGINE = Distributed(clipsearch, currentDatabase(), search_log_local, rand());

-- Clusters made by earlier releases: each migration's statements on both tables, local first (an index:-- on the shards' tables only).
-- 001_columns_before_versions.sql:
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS modified_at Nullable(DateTime64(3)) AFTER file_size;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS modified_at Nullable(DateTime64(3)) AFTER file_size;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS phash Nullable(UInt64) AFTER camera;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS phash Nullable(UInt64) AFTER camera;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS colour_hash Nullable(UInt64) AFTER phash;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS colour_hash Nullable(UInt64) AFTER phash;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS centre_phash Nullable(UInt64) AFTER colour_hash;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS centre_phash Nullable(UInt64) AFTER colour_hash;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS chroma_hash Nullable(UInt64) AFTER centre_phash;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS chroma_hash Nullable(UInt64) AFTER centre_phash;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS centre_chroma_hash Nullable(UInt64) AFTER chroma_hash;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS centre_chroma_hash Nullable(UInt64) AFTER chroma_hash;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS latitude Nullable(Float64) AFTER camera;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS latitude Nullable(Float64) AFTER camera;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS longitude Nullable(Float64) AFTER latitude;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS longitude Nullable(Float64) AFTER latitude;
--   ALTER TABLE search_log_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS origin LowCardinality(String) DEFAULT '' AFTER kind;
--   ALTER TABLE search_log ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS origin LowCardinality(String) DEFAULT '' AFTER kind;
--   ALTER TABLE search_log_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS model_load_ms Float32 DEFAULT 0 AFTER k;
--   ALTER TABLE search_log ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS model_load_ms Float32 DEFAULT 0 AFTER k;
-- 002_models.sql:
-- 003_embeddings.sql:
-- 004_tuning_costs.sql:
-- 005_files.sql:
--   ALTER TABLE load_errors_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS file_size Nullable(UInt64), ADD COLUMN IF NOT EXISTS modified_at Nullable(DateTime64(3));
--   ALTER TABLE load_errors ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS file_size Nullable(UInt64), ADD COLUMN IF NOT EXISTS modified_at Nullable(DateTime64(3));
--   INSERT INTO files (path, id, file_size, modified_at, updated_at) SELECT path, argMax(id, loaded_at), argMax(file_size, loaded_at), argMax(modified_at, loaded_at), max(loaded_at) FROM images WHERE path NOT IN (SELECT path FROM files) GROUP BY path;
-- 006_orientation.sql:
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS orientation UInt8 DEFAULT 0 AFTER centre_chroma_hash;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS orientation UInt8 DEFAULT 0 AFTER centre_chroma_hash;
--   ALTER TABLE images_local ON CLUSTER clipsearch MODIFY COLUMN IF EXISTS taken_at Nullable(DateTime64(0));
--   ALTER TABLE images ON CLUSTER clipsearch MODIFY COLUMN IF EXISTS taken_at Nullable(DateTime64(0));
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS exif_date String DEFAULT '' AFTER taken_at;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS exif_date String DEFAULT '' AFTER taken_at;
-- 007_words.sql:
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS words_name Array(String) DEFAULT [] AFTER orientation;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS words_name Array(String) DEFAULT [] AFTER orientation;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS words_prefixes Array(String) DEFAULT [] AFTER words_name;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS words_prefixes Array(String) DEFAULT [] AFTER words_name;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS words_title Array(String) DEFAULT [] AFTER words_prefixes;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS words_title Array(String) DEFAULT [] AFTER words_prefixes;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS words_meta Array(String) DEFAULT [] AFTER words_title;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS words_meta Array(String) DEFAULT [] AFTER words_title;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS words_ocr Array(String) DEFAULT [] AFTER words_meta;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS words_ocr Array(String) DEFAULT [] AFTER words_meta;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS words_label Array(String) DEFAULT [] AFTER words_ocr;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS words_label Array(String) DEFAULT [] AFTER words_ocr;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS words_version UInt8 DEFAULT 0 AFTER words_label;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS words_version UInt8 DEFAULT 0 AFTER words_label;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS ocr_engine LowCardinality(String) DEFAULT '' AFTER words_version;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS ocr_engine LowCardinality(String) DEFAULT '' AFTER words_version;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD INDEX IF NOT EXISTS words_any arrayConcat(words_name, words_prefixes, words_title, words_meta, words_ocr, words_label) TYPE text(tokenizer = 'array');
-- 008_clicks_and_judgments.sql:
--   ALTER TABLE search_log_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS search_id String DEFAULT '' AFTER top_ids;
--   ALTER TABLE search_log ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS search_id String DEFAULT '' AFTER top_ids;
-- 009_videos.sql:
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS media LowCardinality(String) DEFAULT 'image' AFTER format;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS media LowCardinality(String) DEFAULT 'image' AFTER format;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS video String DEFAULT '' AFTER media;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS video String DEFAULT '' AFTER media;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS start Nullable(Float64) AFTER video;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS start Nullable(Float64) AFTER video;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS `end` Nullable(Float64) AFTER start;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS `end` Nullable(Float64) AFTER start;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS duration Nullable(Float64) AFTER `end`;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS duration Nullable(Float64) AFTER `end`;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS codec LowCardinality(String) DEFAULT '' AFTER duration;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS codec LowCardinality(String) DEFAULT '' AFTER duration;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS thumbnail String DEFAULT '' CODEC(ZSTD(1)) AFTER codec;
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS thumbnail String DEFAULT '' CODEC(ZSTD(1)) AFTER codec;
-- Rows loaded before the perceptual hashes keep NULL hashes and take no part in finding copies:
-- `clipsearch hashes` updates rows in place (ALTER TABLE ... UPDATE), which a Distributed table does not take.
-- Manifest columns go on both tables, local first:
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS price Nullable(Float64);
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS price Nullable(Float64);
