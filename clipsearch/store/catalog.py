"""The catalogue: every statement clipsearch runs on the `images` table and its companions.

`Catalog` sits on a `Connection` (embedded or server) and knows the schema
(sql/schema.sql), the columns users filter by, what is loaded, the vector index,
the search log. The search ranking SQL itself is built in `search/statement.py`; labels
and near-duplicates keep their one statement each beside the logic it serves.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any

from clipsearch.errors import ModelMismatch, NotFound, QueryError
from clipsearch.search.tuning import RESCORE_FETCH
from clipsearch.search.values import NOT_FILTERABLE, NUMERIC_TYPE, TIME_TYPE, base_type
from clipsearch.settings import Settings
from clipsearch.store import schema
from clipsearch.store.connection import Connection, connect, quote_identifier

MIN_ID_PREFIX = 6           # the CLI prints 12; shorter prefixes are too likely to be ambiguous
VECTOR_QUANTIZATIONS = ("bf16", "f16", "f32", "i8", "b1")
# ClickHouse's own default. f16 (same size, 3 more bits of mantissa) scores closer to exact but, at 1M x 512,
# ranked no better and built slower (bench/README.md, "Index quantization").
DEFAULT_QUANTIZATION = "bf16"
# The table state a search reads is cached until its connection writes (Connection.writes) or this many
# seconds pass: the time other clients of a ClickHouse server take to be seen. Reading it costs 10-14 ms at 1M rows.
STATE_TTL_S = 1.0
# A filter column is a projection of the whole table sorted by that column, so the rows a filter on it
# matches sit together and an exact ranking reads only them (see Catalog.add_filter_column).
FILTER_PREFIX = "filter_"   # projection name = prefix + column
FILTER_PROJECTIONS = ("FROM system.projections WHERE database = currentDatabase() AND table = 'images' "
                      f"AND startsWith(name, '{FILTER_PREFIX}') AND length(sorting_key) = 1")
FILTER_COLUMN = f"substring(name, {len(FILTER_PREFIX) + 1})"   # the column a filter projection sorts by


def filter_projection(column: str) -> str:
    """The quoted name of the projection that makes `column` a filter column."""
    return quote_identifier(FILTER_PREFIX + column)


VECTOR_INDEXES = ("FROM system.data_skipping_indices WHERE database = currentDatabase() "
                  "AND table = 'images' AND type = 'vector_similarity'")
VECTOR_DIMENSION = re.compile(r"^(vector_similarity\('hnsw', '\w+', )\d+")
SWITCH_TABLE = "images_switch"   # `images` with another model's vectors, until `reembed` exchanges the two
QUANTIZATION_ARGUMENT = re.compile(r"^vector_similarity\('hnsw', '\w+', \d+, '(\w+)'")


def index_quantization(type_full: str | None) -> str:
    """The quantization a vector_similarity index's type names ('bf16' where it names none: ClickHouse's
    default), '' for no index."""
    if not type_full:
        return ""
    found = QUANTIZATION_ARGUMENT.match(type_full)
    return found.group(1) if found else "bf16"


@dataclass(frozen=True)
class TableState:
    """What a search needs to know of `images` (Catalog.search_state)."""
    columns: dict[str, str]        # name -> ClickHouse type, in table order
    models: list[str]              # the models whose vectors it holds (at most 3 read)
    rows: int
    vector_index: bool             # an HNSW index exists
    filter_columns: list[str]      # columns with a sorted copy (projection) for selective filters
    beam: int | None               # the tuned HNSW search beam, if tuned
    rescore: int                   # for a coarse index quantization: how many candidates to re-rank, x k
    image_beam: int | None = None  # the tuned beam for image queries ("more like this", an uploaded image)
    granule: int = 8192            # rows per granule (what a selective filter reads per matching row)
    exact_ms_per_row: float = 0.0  # measured when tuned (0: not measured): an exact ranking's cost per row
    index_ms: float = 0.0          # ...and an index search's at `beam`


class Catalog:
    """The tables of one clipsearch database, on `connection` (created if missing)."""

    def __init__(self, connection: Connection):
        self.connection = connection
        self.backend = connection.backend
        self._state: tuple[int, float, TableState] | None = None   # (writes count, when, state)
        schema.ensure(connection)   # one query when the database is current

    @classmethod
    def open(cls, settings: Settings | str | os.PathLike, create: bool = True) -> Catalog:
        """The catalogue the settings name (or of the embedded folder at a path); closes the connection
        again if the schema cannot be created. With `create` false an embedded folder must hold one."""
        if not isinstance(settings, Settings):
            settings = Settings(db=os.fspath(settings))
        connection = connect(settings, create)
        try:
            return cls(connection)
        except BaseException:
            connection.close()
            raise

    # The connection's own calls, for raw SQL.
    def query(self, sql: str, params: dict | None = None) -> list[dict]:
        return self.connection.query(sql, params)

    def text(self, sql: str, params: dict | None = None, fmt: str = "PrettyCompact") -> str:
        return self.connection.text(sql, params, fmt)

    def command(self, sql: str, params: dict | None = None) -> None:
        self.connection.command(sql, params)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- columns ----------------------------------------------------------------------------
    def columns(self, table: str = "images") -> dict[str, str]:
        """Column name -> ClickHouse type, in table order; empty if the table does not exist."""
        rows = self.query("SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                          "AND table = {table:String} ORDER BY position", {"table": table})
        return {r["name"]: r["type"] for r in rows}

    def add_columns(self, new_columns: dict[str, str]) -> None:
        for name, ch_type in new_columns.items():
            self.command(f"ALTER TABLE images ADD COLUMN IF NOT EXISTS {quote_identifier(name)} {ch_type}")

    def column_summaries(self) -> list[dict]:
        """Each filterable column with what a filter form needs: distinct values or a numeric range."""
        out = []
        for name, ch_type in self.columns().items():
            if name in NOT_FILTERABLE:
                continue
            kind = base_type(ch_type)
            info: dict[str, Any] = {"name": name, "type": ch_type}
            col = quote_identifier(name)
            if NUMERIC_TYPE.match(kind):
                info.update(kind="number", **self.query(f"SELECT min({col}) AS min, max({col}) AS max FROM images")[0])
            elif TIME_TYPE.match(kind):
                info["kind"] = "time"
            elif kind == "String":
                values = self.query(f"SELECT groupUniqArray(21)({col}) AS v FROM images")[0]["v"]
                info.update(kind="text",
                            values=sorted(v for v in values if v is not None) if len(values) <= 20 else None)
            else:
                info["kind"] = "array" if kind.startswith("Array") else "other"
            out.append(info)
        return out

    # -- what is loaded ---------------------------------------------------------------------
    def count(self) -> int:
        return int(self.query("SELECT count() AS n FROM images")[0]["n"])

    def existing_ids(self, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        rows = self.query("SELECT id FROM images WHERE id IN {ids:Array(String)}", {"ids": list(ids)})
        return {r["id"] for r in rows}

    def stored_before(self, ids: list[str], stamp_ms: int) -> set[str]:
        """The `ids` that also have a row loaded before `stamp_ms` (ms since the epoch): stored by another
        load racing this one, which both read as new."""
        if not ids:
            return set()
        rows = self.query("SELECT id FROM images WHERE id IN {ids:Array(String)} GROUP BY id "
                          "HAVING min(toUnixTimestamp64Milli(loaded_at)) < {stamp:Int64}",
                          {"ids": ids, "stamp": stamp_ms})
        return {r["id"] for r in rows}

    def known_files(self, root: str) -> dict[str, tuple[int, int | None]]:
        """path -> (size, modification time in ms or None) of the stored images under the folder `root`."""
        rows = self.query("SELECT path, file_size, toUnixTimestamp64Milli(modified_at) AS mtime FROM images "
                          "WHERE startsWith(path, {root:String})", {"root": root})
        return {r["path"]: (int(r["file_size"]), None if r["mtime"] is None else int(r["mtime"])) for r in rows}

    def forget_missing(self, root: str) -> list[str]:
        """Delete the rows under the folder `root` whose files are gone; returns their paths."""
        rows = self.query("SELECT DISTINCT path FROM images WHERE startsWith(path, {root:String})", {"root": root})
        gone = [r["path"] for r in rows if not os.path.lexists(r["path"])]
        if gone:
            self.delete_images("path IN {paths:Array(String)}", {"paths": gone})
        return gone

    def forget_replaced(self, current: dict[str, str]) -> int:
        """Delete the rows of each path whose id is not the path's current one (path -> id); returns how
        many paths had such rows. Rows of the same content under other paths stay."""
        if not current:
            return 0
        where = ("path IN {paths:Array(String)} "
                 "AND id != {ids:Array(String)}[indexOf({paths:Array(String)}, path)]")
        params = {"paths": list(current), "ids": list(current.values())}
        stale = self.query(f"SELECT DISTINCT path FROM images WHERE {where}", params)
        if stale:
            self.delete_images(where, params)
        return len(stale)

    def delete_images(self, where: str, params: dict) -> None:
        """Delete the rows matching `where`. A lightweight delete drops the filter columns' projections from
        the parts it touches (kept, they would still return the deleted rows: measured on ClickHouse 26.9),
        so they are rebuilt in the background; searches read the table itself until then."""
        self.command(f"DELETE FROM images WHERE {where}", params)
        columns = self.filter_columns()
        if columns:
            self.command("ALTER TABLE images APPLY DELETED MASK SETTINGS mutations_sync = 0")
            for column in columns:
                self.command(f"ALTER TABLE images MATERIALIZE PROJECTION {filter_projection(column)} "
                             "SETTINGS mutations_sync = 0")

    def insert_images(self, rows: Any) -> None:
        """Insert a pyarrow Table of image rows (the loader builds it)."""
        self.connection.insert("images", rows)

    def set_hashes(self, hashes: dict[str, Any]) -> None:
        """Store the perceptual hashes (id -> hashes.Hashes) of images already stored (one mutation, waited for)."""
        columns = next(iter(hashes.values()))._fields
        updates = ", ".join(f"{c} = transform(id, {{ids:Array(String)}}, {{{c}:Array(UInt64)}}, {c})" for c in columns)
        params: dict[str, Any] = {c: [getattr(h, c) for h in hashes.values()] for c in columns}
        self.command(f"ALTER TABLE images UPDATE {updates} WHERE id IN {{ids:Array(String)}} "
                     "SETTINGS mutations_sync = 2", {"ids": list(hashes), **params})

    def record_load_errors(self, errors: list[tuple[str, str]]) -> None:
        import pyarrow as pa
        if errors:
            self.connection.insert("load_errors", pa.table({"path": [p for p, _ in errors],
                                                            "reason": [e for _, e in errors]}))

    def get_image(self, image_id: str) -> dict:
        """The row of the image whose id is `image_id` or starts with it (at least MIN_ID_PREFIX hex digits,
        like git's short hashes); NotFound if none, QueryError if the prefix names several."""
        image_id = str(image_id).strip().lower()
        if len(image_id) < 32:
            if len(image_id) < MIN_ID_PREFIX or not all(c in "0123456789abcdef" for c in image_id):
                raise NotFound(f"no image with id {image_id!r} (give at least {MIN_ID_PREFIX} hex digits of it)")
            rows = self.query("SELECT * EXCEPT (embedding) FROM images FINAL WHERE startsWith(id, {id:String}) "
                              "ORDER BY id LIMIT 2", {"id": image_id})
            if len(rows) > 1:
                raise QueryError(f"the id prefix {image_id!r} names several images ({rows[0]['id']}, "
                                 f"{rows[1]['id']}, ...); give more of it")
        else:
            rows = self.query("SELECT * EXCEPT (embedding) FROM images WHERE id = {id:String} LIMIT 1",
                              {"id": image_id})
        if not rows:
            raise NotFound(f"no image with id {image_id!r}")
        return rows[0]

    def models(self) -> list[str]:
        return [r["model"] for r in self.query("SELECT DISTINCT model FROM images LIMIT 3")]

    def register_model(self, label: str, name: str | None, pretrained: str | None, dim: int) -> None:
        """Record how to load the model whose vectors are stored under `label` (once per label)."""
        if not self.query("SELECT 1 FROM models WHERE label = {label:String} LIMIT 1", {"label": label}):
            self.command("INSERT INTO models (label, name, pretrained, dim) VALUES "
                         "({label:String}, {name:String}, {pretrained:String}, {dim:UInt32})",
                         {"label": label, "name": name or "", "pretrained": pretrained or "", "dim": dim})

    def model_records(self) -> list[dict]:
        """The recorded models: label, name, pretrained, dim, and how many images have their vectors: in
        `images` (`active` rows) or in `embeddings` (`stored` rows: re-embedding, or kept)."""
        models = self.query("SELECT label, name, pretrained, dim FROM models FINAL ORDER BY registered_at, label")
        active = {r["model"]: int(r["n"]) for r in self.query("SELECT model, count() AS n FROM images GROUP BY model")}
        stored = {r["model"]: int(r["n"]) for r in self.query(
            "SELECT model, uniqExact(id) AS n FROM embeddings GROUP BY model")}
        return [{**m, "active_rows": active.get(m["label"], 0), "stored_rows": stored.get(m["label"], 0)}
                for m in models]

    # -- re-embedding: another model's vectors, and the switch to them ----------------------------
    def without_vectors(self, model: str, table: str = "images", after: str = "", limit: int = 4096) -> list[dict]:
        """Rows of `table` (images, or the table a switch left) with no vector of `model` in `embeddings`,
        by id from just after `after`: id, path, file_size."""
        return self.query(
            f"SELECT id, any(path) AS path, any(file_size) AS file_size FROM {quote_identifier(table)} "
            "WHERE id > {after:String} AND id NOT IN (SELECT id FROM embeddings WHERE model = {model:String} "
            "AND id > {after:String}) GROUP BY id ORDER BY id LIMIT {limit:UInt32}",
            {"model": model, "after": after, "limit": limit})

    def vectors_missing(self, model: str) -> int:
        """How many stored images have no vector of `model` in `embeddings` yet."""
        return int(self.query("SELECT uniqExact(id) AS n FROM images WHERE id NOT IN "
                              "(SELECT id FROM embeddings WHERE model = {model:String})", {"model": model})[0]["n"])

    def insert_vectors(self, model: str, ids: list[str], vectors: Any) -> None:
        import numpy as np
        import pyarrow as pa
        vectors = np.asarray(vectors, dtype=np.float32)
        offsets = pa.array(np.arange(0, vectors.size + 1, vectors.shape[1], dtype=np.int32))
        self.connection.insert("embeddings", pa.table({
            "model": pa.array([model] * len(ids), pa.string()), "id": pa.array(ids, pa.string()),
            "embedding": pa.ListArray.from_arrays(offsets, pa.array(vectors.ravel()))}))

    def keep_vectors(self, model: str) -> None:
        """Copy the active vectors (those of `model`) into `embeddings`, to keep them past a switch."""
        self.command("INSERT INTO embeddings (model, id, embedding) SELECT {model:String}, id, any(embedding) "
                     "FROM images WHERE model = {model:String} GROUP BY id", {"model": model})

    def build_switched(self, model: str, dim: int) -> int:
        """Make `images_switch`: `images` (its columns, filter columns, settings) with the vectors of `model`
        from `embeddings`, and a vector index like its own for `dim`-long vectors, built as the rows go in.
        Rows without such a vector are left out. Returns its row count."""
        self.command(f"DROP TABLE IF EXISTS {SWITCH_TABLE}")
        self.command(f"CREATE TABLE {SWITCH_TABLE} AS images")
        index = self.vector_index()
        if index:
            name = quote_identifier(index["name"])
            type_full = VECTOR_DIMENSION.sub(rf"\g<1>{int(dim)}", index["type_full"], count=1)
            self.command(f"ALTER TABLE {SWITCH_TABLE} DROP INDEX {name}")
            self.command(f"ALTER TABLE {SWITCH_TABLE} ADD INDEX {name} embedding TYPE {type_full} "
                         "GRANULARITY 100000000")
        columns = list(self.columns())
        select = ", ".join("e.embedding" if c == "embedding" else "{model:String}" if c == "model"
                           else f"i.{quote_identifier(c)}" for c in columns)
        # In 16 slices by the id's first hex digit: each join holds one slice of the vectors in memory.
        for lo, hi in zip("0123456789abcdef", [*"123456789abcdef", "g"], strict=True):
            self.command(
                f"INSERT INTO {SWITCH_TABLE} ({', '.join(map(quote_identifier, columns))}) SELECT {select} "
                "FROM images AS i FINAL INNER JOIN (SELECT id, any(embedding) AS embedding FROM embeddings "
                "WHERE model = {model:String} AND id >= {lo:String} AND id < {hi:String} GROUP BY id) AS e "
                "ON i.id = e.id WHERE i.id >= {lo:String} AND i.id < {hi:String}",
                {"model": model, "lo": lo, "hi": hi})
        return int(self.query(f"SELECT count() AS n FROM {SWITCH_TABLE}")[0]["n"])

    def images_engine(self) -> str:
        """The table engine of `images` (Distributed on a cluster)."""
        rows = self.query("SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = 'images'")
        return rows[0]["engine"] if rows else ""

    def switch(self) -> None:
        """Put `images_switch` in the place of `images` (and `images` in its place): one atomic step, so every
        query reads the one table or the other, never a mix."""
        self.command(f"EXCHANGE TABLES images AND {SWITCH_TABLE}")

    def switch_table_model(self) -> str | None:
        """The model of the rows of the table a switch made or left (None if there is none)."""
        if not self.query("SELECT 1 FROM system.tables WHERE database = currentDatabase() "
                          "AND name = {t:String}", {"t": SWITCH_TABLE}):
            return None
        rows = self.query(f"SELECT model FROM {SWITCH_TABLE} LIMIT 1")
        return rows[0]["model"] if rows else ""

    def copy_switched(self, model: str, ids: list[str], source: str) -> None:
        """Insert into `images` the rows `ids` of `source` (images itself, or the table a switch left) with
        their `model` vectors from `embeddings`, and delete their rows of any other model."""
        columns = list(self.columns())
        select = ", ".join("e.embedding" if c == "embedding" else "{model:String}" if c == "model"
                           else f"i.{quote_identifier(c)}" for c in columns)
        params = {"model": model, "ids": ids}
        self.command(
            f"INSERT INTO images ({', '.join(map(quote_identifier, columns))}) SELECT {select} "
            f"FROM {quote_identifier(source)} AS i FINAL INNER JOIN (SELECT id, any(embedding) AS embedding "
            "FROM embeddings WHERE model = {model:String} AND id IN {ids:Array(String)} GROUP BY id) AS e "
            "ON i.id = e.id WHERE i.id IN {ids:Array(String)}", params)
        if self.query("SELECT 1 FROM images WHERE model != {model:String} LIMIT 1", params):
            self.delete_images("model != {model:String}", params)

    def finish_switch(self, model: str) -> None:
        """After a switch to `model`: drop the table it left (the old vectors, unless kept) and the copies of
        the new vectors in `embeddings` (they are in `images` now)."""
        self.command(f"DROP TABLE IF EXISTS {SWITCH_TABLE}")
        self.command("DELETE FROM embeddings WHERE model = {model:String}", {"model": model})

    def check_batch_model(self, label: str, ids: list[str]) -> None:
        """After inserting the rows `ids` with vectors of `label`: if `reembed` switched the store to another
        model meanwhile, take them out again and say so (their vectors are in the other model's space)."""
        other = self.query("SELECT model FROM images WHERE id NOT IN {ids:Array(String)} LIMIT 1", {"ids": ids})
        if other and other[0]["model"] != label:
            mine = "model = {label:String} AND id IN {ids:Array(String)}"
            params = {"label": label, "ids": ids}
            if self.query(f"SELECT 1 FROM images WHERE {mine} LIMIT 1", params):   # by the key: the batch's rows
                self.delete_images(mine, params)
            raise ModelMismatch(f"the store switched to the model {other[0]['model']} during this load; run it "
                                "again (without --model it uses the store's model)")

    def check_model(self, label: str, stored: list[str] | None = None) -> None:
        """Refuse to mix or compare vectors from different models: they live in different spaces."""
        stored = self.models() if stored is None else stored
        if stored and stored != [label]:
            raise ModelMismatch(f"the table holds embeddings from {', '.join(stored)}, but the model in use is "
                                f"{label}; leave out --model to use the store's own (`clipsearch models` lists "
                                "them), or use another --db")

    def search_state(self) -> TableState:
        """What a search needs to know of `images`: columns, models, rows, vector index. Read in one round
        trip, then served from memory until a write or STATE_TTL_S."""
        writes, now = self.connection.writes.count, time.monotonic()   # read first: a write while reading invalidates
        if self._state is not None and self._state[0] == writes and now - self._state[1] < STATE_TTL_S:
            return self._state[2]
        row = self.query(
            "SELECT (SELECT groupArray((position, name, type)) FROM system.columns "
            "        WHERE database = currentDatabase() AND table = 'images') AS columns, "
            "       (SELECT groupUniqArray(3)(model) FROM images) AS models, "
            "       (SELECT count() FROM images) AS rows, "
            f"       (SELECT groupArray({FILTER_COLUMN}) {FILTER_PROJECTIONS}) AS filter_columns, "
            "       (SELECT argMax((beam, image_beam, rows, exact_ms, index_ms), tuned_at) FROM vector_index_tuning "
            f"        WHERE index_type IN (SELECT type_full {VECTOR_INDEXES})) AS tuning, "
            "       (SELECT intDiv(sum(rows), greatest(1, sum(marks) - count())) FROM system.parts "
            "        WHERE database = currentDatabase() AND table = 'images' AND active) AS granule, "
            f"       (SELECT any(type_full) {VECTOR_INDEXES}) AS index_type")[0]
        beam, image_beam, tuned_rows, exact_ms, index_ms = row["tuning"]
        state = TableState(columns={name: ch_type for _, name, ch_type in sorted(row["columns"])},
                           models=sorted(row["models"]), rows=int(row["rows"]), vector_index=bool(row["index_type"]),
                           filter_columns=sorted(row["filter_columns"]), beam=int(beam) or None,
                           rescore=RESCORE_FETCH.get(index_quantization(row["index_type"]), 0),
                           image_beam=int(image_beam) or None, granule=max(1, int(row["granule"]) or 8192),
                           exact_ms_per_row=float(exact_ms) / int(tuned_rows) if int(tuned_rows) else 0.0,
                           index_ms=float(index_ms))
        self._state = (writes, now, state)
        return state

    def forget_state(self) -> None:
        """Read the table state afresh at the next search (another process changed it)."""
        self._state = None

    # -- vector index -----------------------------------------------------------------------
    def vector_index(self) -> dict | None:
        """The HNSW index on images.embedding, if there is one: {name, type_full}."""
        rows = self.query(f"SELECT name, type_full {VECTOR_INDEXES}")
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
        dims = self.query("SELECT DISTINCT length(embedding) AS d FROM images LIMIT 2")
        if len(dims) != 1:
            raise QueryError("the index needs a table whose vectors all have one length; load images first")
        hnsw = f"'hnsw', 'cosineDistance', {int(dims[0]['d'])}, '{quantization}', {int(m)}, {int(ef_construction)}"
        self.command("ALTER TABLE images ADD INDEX IF NOT EXISTS embedding_hnsw embedding "
                     f"TYPE vector_similarity({hnsw}) GRANULARITY 100000000")
        self.command("ALTER TABLE images MATERIALIZE INDEX embedding_hnsw SETTINGS mutations_sync = 2")

    def add_filter_column(self, column: str) -> None:
        """Keep a copy of the table sorted by `column` (a ClickHouse projection, built now and kept up to date
        by every insert, delete and merge), so a selective filter on it reads only the rows it matches
        instead of every granule of the vector column. Costs the table's size again on disk."""
        columns = self.columns()
        if column not in columns or column in NOT_FILTERABLE:
            known = ", ".join(c for c in columns if c not in NOT_FILTERABLE)
            raise QueryError(f"unknown filter column {column!r}; known columns: {known}")
        name = filter_projection(column)
        # ReplacingMergeTree merges and lightweight deletes refuse tables with projections unless told what
        # to do: merges rebuild them; deletes drop them from the parts they touch (see delete_images).
        self.command("ALTER TABLE images MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild', "
                     "lightweight_mutation_projection_mode = 'drop'")
        # Text filters compare case-insensitively (search/filters.py: lowerUTF8(col) = lowerUTF8(value)): sorted the
        # same way, so ClickHouse can find their rows by the projection's key.
        key = quote_identifier(column)
        key = f"lowerUTF8({key})" if base_type(columns[column]) == "String" else key
        self.command(f"ALTER TABLE images ADD PROJECTION IF NOT EXISTS {name} (SELECT * ORDER BY {key})")
        self.command(f"ALTER TABLE images MATERIALIZE PROJECTION {name} SETTINGS mutations_sync = 2")

    def drop_filter_column(self, column: str) -> None:
        if column not in self.filter_columns():
            raise QueryError(f"{column!r} is not a filter column")
        self.command(f"ALTER TABLE images DROP PROJECTION IF EXISTS {filter_projection(column)} "
                     "SETTINGS mutations_sync = 2")

    def filter_columns(self) -> list[str]:
        return sorted(r["c"] for r in self.query(f"SELECT {FILTER_COLUMN} AS c {FILTER_PROJECTIONS}"))

    def drop_vector_index(self) -> None:
        index = self.vector_index()
        if index:
            self.command(f"ALTER TABLE images DROP INDEX {quote_identifier(index['name'])}")
