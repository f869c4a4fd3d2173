"""What makes a search on `images` fast: the vector (HNSW) index with its recorded tuning, and the filter
columns (projections of the table sorted by one column)."""
from __future__ import annotations

import re
from collections.abc import Callable

from clipsearch.errors import QueryError
from clipsearch.store.columns import NOT_FILTERABLE, base_type
from clipsearch.store.connection import Connection, quote_identifier

VECTOR_QUANTIZATIONS = ("bf16", "f16", "f32", "i8", "b1")
# ClickHouse's own default. f16 (same size, 3 more bits of mantissa) scores closer to exact but, at 1M x 512,
# ranked no better and built slower (bench/README.md, "Index quantization").
DEFAULT_QUANTIZATION = "bf16"
# Index quantizations too coarse to rank by or to show as scores (300k x 512, beam 2048: i8 scores off by up
# to 0.012 and recall@10 0.685, b1 off by up to 160 and 0.057; bf16 within 2e-4). For these ClickHouse fetches
# this many times the window from the index and re-ranks them by the stored Float32 vectors
# (vector_search_with_rescoring): scores exact, recall@10 0.99 for i8 and 0.835 for b1 there (bench/results.md).
RESCORE_FETCH = {"i8": 2, "b1": 64}
# A filter column is a projection of the whole table sorted by that column, so the rows a filter on it
# matches sit together and an exact ranking reads only them (see Indexes.add_filter_column).
FILTER_PREFIX = "filter_"   # projection name = prefix + column
FILTER_PROJECTIONS = ("FROM system.projections WHERE database = currentDatabase() AND table = 'images' "
                      f"AND startsWith(name, '{FILTER_PREFIX}') AND length(sorting_key) = 1")
FILTER_COLUMN = f"substring(name, {len(FILTER_PREFIX) + 1})"   # the column a filter projection sorts by
VECTOR_INDEXES = ("FROM system.data_skipping_indices WHERE database = currentDatabase() "
                  "AND table = 'images' AND type = 'vector_similarity'")
VECTOR_DIMENSION = re.compile(r"^(vector_similarity\('hnsw', '\w+', )\d+")
QUANTIZATION_ARGUMENT = re.compile(r"^vector_similarity\('hnsw', '\w+', \d+, '(\w+)'")


def filter_projection(column: str) -> str:
    """The quoted name of the projection that makes `column` a filter column."""
    return quote_identifier(FILTER_PREFIX + column)


def filter_columns(connection: Connection) -> list[str]:
    """The filter columns of `images`, sorted."""
    return sorted(r["c"] for r in connection.query(f"SELECT {FILTER_COLUMN} AS c {FILTER_PROJECTIONS}"))


def index_quantization(type_full: str | None) -> str:
    """The quantization a vector_similarity index's type names ('bf16' where it names none: ClickHouse's
    default), '' for no index."""
    if not type_full:
        return ""
    found = QUANTIZATION_ARGUMENT.match(type_full)
    return found.group(1) if found else "bf16"


def with_dimension(type_full: str, dim: int) -> str:
    """A vector index type like `type_full`, for `dim`-long vectors."""
    return VECTOR_DIMENSION.sub(rf"\g<1>{int(dim)}", type_full, count=1)


class Indexes:
    """The vector index on images.embedding, its tuning (`vector_index_tuning`), and the filter columns."""

    def __init__(self, connection: Connection, columns: Callable[[], dict[str, str]]):
        self._connection, self._columns = connection, columns   # columns: ImageTable.columns

    # -- the vector index ------------------------------------------------------------------------
    def vector_index(self) -> dict | None:
        """The HNSW index on images.embedding, if there is one: {name, type_full}."""
        rows = self._connection.query(f"SELECT name, type_full {VECTOR_INDEXES}")
        return rows[0] if rows else None

    def create_vector_index(self, quantization: str = DEFAULT_QUANTIZATION, m: int = 16,
                            ef_construction: int = 128) -> None:
        """Add ClickHouse's vector_similarity (HNSW) index on images.embedding and build it for stored rows.

        Building costs minutes per few hundred thousand rows on small machines; new
        parts get their index as they are inserted and merged.
        """
        if quantization not in VECTOR_QUANTIZATIONS:
            raise QueryError(f"quantization must be one of {', '.join(VECTOR_QUANTIZATIONS)}")
        for name, value, low in (("m", m, 2), ("ef_construction", ef_construction, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 10_000:
                raise QueryError(f"{name} must be an integer between {low} and 10000, got {value!r}")
        dims = self._connection.query("SELECT DISTINCT length(embedding) AS d FROM images LIMIT 2")
        if len(dims) != 1:
            raise QueryError("the index needs a table whose vectors all have one length; load images first")
        hnsw = f"'hnsw', 'cosineDistance', {int(dims[0]['d'])}, '{quantization}', {int(m)}, {int(ef_construction)}"
        self._connection.command("ALTER TABLE images ADD INDEX IF NOT EXISTS embedding_hnsw embedding "
                                 f"TYPE vector_similarity({hnsw}) GRANULARITY 100000000")
        self._connection.command("ALTER TABLE images MATERIALIZE INDEX embedding_hnsw SETTINGS mutations_sync = 2")

    def drop_vector_index(self) -> None:
        index = self.vector_index()
        if index:
            self._connection.command(f"ALTER TABLE images DROP INDEX {quote_identifier(index['name'])}")

    def record_tuning(self, index_type: str, beam: int, recall: float, target: float, queries: int,
                      image_beam: int, rows: int, exact_ms: float, index_ms: float) -> None:
        """Record what tuning the index of type `index_type` found (Searcher.tune_index); the latest record
        for the index in place is what searches use (state.TableState)."""
        self._connection.command(
            "INSERT INTO vector_index_tuning (index_type, beam, recall, target, queries, image_beam, rows, exact_ms, "
            "index_ms) SELECT {type:String}, {beam:UInt32}, {recall:Float32}, {target:Float32}, {n:UInt32}, "
            "{image_beam:UInt32}, {rows:UInt64}, {exact_ms:Float32}, {index_ms:Float32}",
            {"type": index_type, "beam": beam, "recall": recall, "target": target, "n": queries,
             "image_beam": image_beam, "rows": rows, "exact_ms": exact_ms, "index_ms": index_ms})

    # -- filter columns --------------------------------------------------------------------------
    def filter_columns(self) -> list[str]:
        return filter_columns(self._connection)

    def add_filter_column(self, column: str) -> None:
        """Keep a copy of the table sorted by `column` (a ClickHouse projection, built now and kept up to date
        by every insert, delete and merge), so a selective filter on it reads only the rows it matches
        instead of every granule of the vector column. Costs the table's size again on disk."""
        columns = self._columns()
        if column not in columns or column in NOT_FILTERABLE:
            known = ", ".join(c for c in columns if c not in NOT_FILTERABLE)
            raise QueryError(f"unknown filter column {column!r}; known columns: {known}")
        name = filter_projection(column)
        # ReplacingMergeTree merges and lightweight deletes refuse tables with projections unless told what
        # to do: merges rebuild them; deletes drop them from the parts they touch (see ImageTable.delete).
        self._connection.command("ALTER TABLE images MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild', "
                                 "lightweight_mutation_projection_mode = 'drop'")
        # Text filters compare case-insensitively (query.py: lowerUTF8(col) = lowerUTF8(value)): sorted the
        # same way, so ClickHouse can find their rows by the projection's key.
        key = quote_identifier(column)
        key = f"lowerUTF8({key})" if base_type(columns[column]) == "String" else key
        self._connection.command(f"ALTER TABLE images ADD PROJECTION IF NOT EXISTS {name} (SELECT * ORDER BY {key})")
        self._connection.command(f"ALTER TABLE images MATERIALIZE PROJECTION {name} SETTINGS mutations_sync = 2")

    def drop_filter_column(self, column: str) -> None:
        if column not in self.filter_columns():
            raise QueryError(f"{column!r} is not a filter column")
        self._connection.command(f"ALTER TABLE images DROP PROJECTION IF EXISTS {filter_projection(column)} "
                                 "SETTINGS mutations_sync = 2")
