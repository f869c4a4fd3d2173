-- clipsearch schema, as the current release makes a new database (statements split on ';'); the loader
-- then adds one column per manifest column with ALTER TABLE ... ADD COLUMN. A database made by an earlier
-- release is brought here by the numbered files of migrations/ (clipsearch/schema.py), and the version it
-- has reached is recorded in schema_version.

-- One row per distinct image file. `id` is derived from the file's bytes, so
-- loading the same file again (from any path) never adds a second row; the
-- loader skips ids already stored, and ReplacingMergeTree collapses any row
-- two racing loads might both have written.
CREATE TABLE IF NOT EXISTS images
(
    id         String,                       -- first 128 bits of SHA-256 of the file, hex
    path       String,                       -- as given to the loader (absolute for folders)
    width      UInt32,
    height     UInt32,
    format     LowCardinality(String),       -- JPEG, PNG, WEBP, ...
    -- Videos (migration 009): one row per moment kept of a video (a frame at a scene change or every few
    -- seconds, clipsearch/images/video.py), `id` derived from the video's id and the moment's start; a photo
    -- is media 'image' with video '' and NULL times.
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
                                             -- hashes and embedding are of the upright picture), 0 not read yet
    -- Words (clipsearch/store/words.py tokens) for the words signal, by where they come from: the file's
    -- and its folders' names (and their prefixes, for partial matches), the manifest's text columns, the
    -- photo's own metadata (EXIF, IPTC, XMP), the text read in the picture (OCR) and its zero-shot labels.
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
    -- L2-normalized, so cosineDistance ranks exactly like a dot product.
    -- CODEC(NONE): float vectors barely compress, and decompressing them
    -- costs more than reading them (measured: ~3x faster scans).
    embedding  Array(Float32) CODEC(NONE),
    -- one text index over every field's words (store/columns.py WORDS_ANY: a search looks them up at once)
    INDEX words_any arrayConcat(words_name, words_prefixes, words_title, words_meta, words_ocr, words_label)
        TYPE text(tokenizer = 'array')
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY id
-- Granules of 128 rows (ClickHouse's default 8,192, or ~5,000 at 2 KB of 512-d vector a row): a search
-- reads one granule of every column per result row, and a selective filter reads the granules holding
-- its matches, so smaller granules read less (measured at 200k x 128: a 0.1% filter's exact ranking
-- 22 -> 13.5 ms against 1,024 rows; at 1M x 512 with a filter column 25 -> 15 ms against 8,192). Full
-- scans are no slower. Set when the table is made: sql/rebuild_images.sql; see bench/README.md.
SETTINGS index_granularity = 128;

-- Every file path the loader has read, and the image content (images.id) it held. Path and content are
-- apart: `images` has one row per content, under one of its paths; this table has every path, so a copy
-- stays findable when another path of it goes, a file edited in place keeps its path's metadata, and
-- metadata attached to a path (a manifest's columns, as JSON) comes back when the file does. A path whose
-- file was gone at the last look is kept with present = false. Latest row per path wins (FINAL).
CREATE TABLE IF NOT EXISTS files
(
    path        String,
    id          String,                      -- images.id of its content when it was read
    file_size   UInt64,
    modified_at Nullable(DateTime64(3)),
    metadata    String DEFAULT '{}',         -- the manifest columns attached to this path: a JSON object
    present     Bool DEFAULT true,
    updated_at  DateTime64(3) DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY path;

-- Files the loader could not read, with the reason: one row per version of a file (its size and time, NULL
-- when the file could not be looked at) and reason, so a folder watched for days holds each bad file once.
CREATE TABLE IF NOT EXISTS load_errors
(
    path       String,
    reason     String,
    error_at   DateTime64(3) DEFAULT now64(3),
    file_size  Nullable(UInt64),
    modified_at Nullable(DateTime64(3))
)
ENGINE = MergeTree
ORDER BY (error_at, path);

-- One row per search made through clipsearch (CLI or HTTP), for usage charts.
CREATE TABLE IF NOT EXISTS search_log
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
ENGINE = MergeTree
ORDER BY time;

-- Which result a person opened from which search on the page (its search_log.search_id): clicks as
-- judgments (`clipsearch eval --from-clicks`) and the Dashboard's click-through. Nothing leaves the store.
CREATE TABLE IF NOT EXISTS search_clicks
(
    time       DateTime64(3) DEFAULT now64(3),
    search_id  String,
    image_id   String,                       -- the result opened
    rank       UInt32                        -- its place in that search's results, from 1
)
ENGINE = MergeTree
ORDER BY time;

-- Judged queries (`clipsearch eval --save`, or clicks): what is relevant to a query, graded 0-3 (0: judged
-- not relevant). sql/queries/eval_metrics.sql scores the searches in search_log against them. The latest
-- judgment of a (query, image) is the one that counts.
CREATE TABLE IF NOT EXISTS judgments
(
    query      String,
    image_id   String,
    grade      UInt8,
    source     LowCardinality(String) DEFAULT '',   -- the judgments file, or 'clicks'
    judged_at  DateTime64(3) DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(judged_at)
ORDER BY (query, image_id);

-- Zero-shot labels: per image and label set, the softmax over the set's prompts
-- (CLIP's own logit scale). `clipsearch label --name shape ...` writes one set;
-- labelling again replaces that set's rows for the images it covers.
CREATE TABLE IF NOT EXISTS labels
(
    image_id       String,
    label_set      LowCardinality(String),
    label          LowCardinality(String),   -- the most probable label
    probability    Float32,                  -- its probability
    labels         Array(String),            -- every label of the set, in order
    probabilities  Array(Float32),           -- their probabilities, summing to 1
    prompt         String,                   -- e.g. 'a photo of a {}'
    model          LowCardinality(String),
    labelled_at    DateTime64(3) DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(labelled_at)
ORDER BY (label_set, image_id);

-- The HNSW search beam (hnsw_candidate_list_size_for_search at k = 10) that reached the recall target
-- when the index was built: the smallest tried whose recall@10 against an exact ranking of sample
-- queries met it, for texts and for images. Searches scale it with k and filters (clipsearch/search/tuning.py).
-- The two timings let a search weigh the index against an exact ranking (Searcher.plan).
CREATE TABLE IF NOT EXISTS vector_index_tuning
(
    tuned_at   DateTime64(3) DEFAULT now64(3),
    index_type String,                       -- the index tuned, as system.data_skipping_indices.type_full
    beam       UInt32,                       -- for texts (and whatever else comes from outside the table)
    recall     Float32,                      -- mean recall@10 at that beam on the sample queries
    target     Float32,
    queries    UInt32,
    image_beam UInt32 DEFAULT 0,             -- for images and "more like this" (0: tuned before, so `beam`)
    rows       UInt64 DEFAULT 0,             -- the table's rows when tuned
    exact_ms   Float32 DEFAULT 0,            -- p50 of an exact ranking of every row then (0: not measured)
    index_ms   Float32 DEFAULT 0             -- p50 of an index search at `beam` then
)
ENGINE = MergeTree
ORDER BY tuned_at;

-- The models a database's vectors come from, with how to load each one again (commands without --model
-- use the store's own).
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

-- Vectors of models other than the store's active one (whose vectors are images.embedding): those that
-- `clipsearch reembed` is computing, moved into `images` when it switches the store to their model, and
-- those it keeps (--keep) of the model it switched from, so analysts can rank the same rows by both
-- (sql/queries/compare_models.sql).
CREATE TABLE IF NOT EXISTS embeddings
(
    model       LowCardinality(String),      -- as images.model
    id          String,                      -- images.id
    embedding   Array(Float32) CODEC(NONE),  -- L2-normalized, like images.embedding
    embedded_at DateTime64(3) DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(embedded_at)
ORDER BY (model, id)
SETTINGS index_granularity = 1024;

-- The migrations of sql/migrations/ a database has had (clipsearch/schema.py): one row each, and one for
-- the version a new database was made at.
CREATE TABLE IF NOT EXISTS schema_version
(
    version    UInt32,
    applied_at DateTime64(3) DEFAULT now64(3),
    note       String
)
ENGINE = MergeTree
ORDER BY version;
