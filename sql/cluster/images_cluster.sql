-- Scale-out: `images` sharded and replicated across a ClickHouse cluster.
-- Run once against any node, e.g.
--   clickhouse-client --queries-file sql/cluster/images_cluster.sql
-- `clipsearch` cluster is defined in the servers' remote_servers config (see
-- docker/clickhouse/cluster.xml); {shard} and {replica} are per-node macros.
-- Writers and readers use `images`, the Distributed table: the loader's INSERTs
-- are spread over shards by id, and a search runs on every shard in parallel
-- (each returns its own top k, the initiator merges them).

CREATE TABLE IF NOT EXISTS images_local ON CLUSTER clipsearch
(
    id         String,
    path       String,
    width      UInt32,
    height     UInt32,
    format     LowCardinality(String),
    file_size  UInt64,
    modified_at Nullable(DateTime64(3)),
    taken_at   Nullable(DateTime),
    camera     String DEFAULT '',
    latitude   Nullable(Float64),
    longitude  Nullable(Float64),
    phash      Nullable(UInt64),
    colour_hash Nullable(UInt64),
    centre_phash Nullable(UInt64),
    chroma_hash Nullable(UInt64),
    centre_chroma_hash Nullable(UInt64),
    model      LowCardinality(String),
    loaded_at  DateTime64(3) DEFAULT now64(3),
    embedding  Array(Float32) CODEC(NONE)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/clipsearch/images_local', '{replica}', loaded_at)
ORDER BY id
SETTINGS index_granularity = 1024;

-- Sharding by a hash of the content id keeps every copy of a file on one shard,
-- so ReplacingMergeTree still collapses duplicates there.
CREATE TABLE IF NOT EXISTS images ON CLUSTER clipsearch AS images_local
ENGINE = Distributed(clipsearch, currentDatabase(), images_local, sipHash64(id));

CREATE TABLE IF NOT EXISTS load_errors_local ON CLUSTER clipsearch
(
    path       String,
    reason     String,
    error_at   DateTime64(3) DEFAULT now64(3)
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/clipsearch/load_errors_local', '{replica}')
ORDER BY (error_at, path);

CREATE TABLE IF NOT EXISTS load_errors ON CLUSTER clipsearch AS load_errors_local
ENGINE = Distributed(clipsearch, currentDatabase(), load_errors_local, rand());

CREATE TABLE IF NOT EXISTS search_log_local ON CLUSTER clipsearch
(
    time       DateTime64(3) DEFAULT now64(3),
    kind       LowCardinality(String),
    origin     LowCardinality(String) DEFAULT '',
    text       String,
    filters    String,
    k          UInt32,
    results    UInt32,
    model_load_ms Float32 DEFAULT 0,
    encode_ms  Float32,
    query_ms   Float32,
    total_ms   Float32,
    top_ids    Array(String)
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/clipsearch/search_log_local', '{replica}')
ORDER BY time;

CREATE TABLE IF NOT EXISTS search_log ON CLUSTER clipsearch AS search_log_local
ENGINE = Distributed(clipsearch, currentDatabase(), search_log_local, rand());

-- Clusters made before the perceptual hashes existed add them the same way (and the same five on `images`):
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS phash Nullable(UInt64) AFTER camera;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS colour_hash Nullable(UInt64) AFTER phash;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS centre_phash Nullable(UInt64) AFTER colour_hash;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS chroma_hash Nullable(UInt64) AFTER centre_phash;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS centre_chroma_hash Nullable(UInt64) AFTER chroma_hash;
-- and the GPS columns (loads fill them from EXIF from then on) and search_log's newer columns:
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS latitude Nullable(Float64) AFTER camera;
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS longitude Nullable(Float64) AFTER latitude;
--   ALTER TABLE search_log_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS origin LowCardinality(String) DEFAULT '' AFTER kind;
--   ALTER TABLE search_log_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS model_load_ms Float32 DEFAULT 0 AFTER results;
-- Rows loaded before keep NULL hashes and take no part in finding copies: `clipsearch hashes` updates rows
-- in place (ALTER TABLE ... UPDATE), which a Distributed table does not take.
-- Manifest columns go on both tables, local first:
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS price Nullable(Float64);
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS price Nullable(Float64);
