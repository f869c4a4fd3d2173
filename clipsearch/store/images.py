"""The `images` table's rows, columns and files: what a load stores, finds stored, replaces and forgets.

One row per image content (its id: the hash of its bytes); a row's `path`, `file_size` and `modified_at`
say which file it was loaded from. Failures to load go to `load_errors`.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from clipsearch.errors import NotFound, QueryError
from clipsearch.store.columns import NOT_FILTERABLE, NUMERIC_TYPE, TIME_TYPE, base_type
from clipsearch.store.connection import Connection, quote_identifier
from clipsearch.store.indexes import Indexes, filter_columns, filter_projection
from clipsearch.store.words import field_words, name_words, prefixes

MIN_ID_PREFIX = 6           # the CLI prints 12; shorter prefixes are too likely to be ambiguous
# Which manifest columns give an image's title words (words_title): every text column, unless a load named
# them (`--text-columns`); the choice is kept in the columns' comments, so later manifests and metadata
# updates follow it.
TEXT_WORDS, NO_WORDS = "words", "no words"
WORDS_VERSION = 1           # images.words_version of a row whose names' and metadata's words were read
# The content a row is of: its own id for a photo, its video's for a moment of a video (files.id of its path)
CONTENT = "if(video = '', id, video)"
OF_CONTENT = "(id IN {ids:Array(String)} OR video IN {ids:Array(String)})"   # the rows of the contents `ids`


def title_words(values: dict[str, Any], text_columns: list[str]) -> list[str]:
    """An image's words_title: the words of its values of the text columns, in the columns' order."""
    return field_words(values.get(c) for c in text_columns)


def path_words(path: str) -> dict[str, list[str]]:
    """words_name and words_prefixes of a stored path."""
    name = name_words(path)
    return {"words_name": name, "words_prefixes": prefixes(name)}


class StoredFile(NamedTuple):
    """The file a stored image was loaded from: read back only while it still hashes to `id`; for a video's
    moment, its stored frame (`thumbnail`, base64 JPEG), since its id is no file's."""
    id: str
    path: str
    file_size: int
    thumbnail: str = ""


def stored_files(connection: Connection, where: str = "1", params: dict | None = None, table: str = "images",
                 order_by: str = "id", limit: int | None = None) -> list[StoredFile]:
    """The stored images of `table` matching `where`, one per id (an id loaded under several paths, or not
    merged yet, has several rows; any one of its files will do: they hold the same bytes), by `order_by`.
    The one statement that reads stored files back: re-embedding, the catch-up after a switch, backfill."""
    sql = (f"SELECT id, any(path) AS path, any(file_size) AS file_size, any(thumbnail) AS thumbnail "
           f"FROM {quote_identifier(table)} "
           f"WHERE {where} GROUP BY id ORDER BY {order_by}" + (" LIMIT {limit:UInt32}" if limit else ""))
    rows = connection.query(sql, {**(params or {}), **({"limit": limit} if limit else {})})
    return [StoredFile(r["id"], r["path"], int(r["file_size"]), r["thumbnail"]) for r in rows]


class ImageTable:
    """The `images` table: columns, rows, the files they came from; `load_errors`."""

    def __init__(self, connection: Connection):
        self._connection = connection

    # -- columns ----------------------------------------------------------------------------
    def columns(self, table: str = "images") -> dict[str, str]:
        """Column name -> ClickHouse type, in table order; empty if the table does not exist."""
        rows = self._connection.query("SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                                      "AND table = {table:String} ORDER BY position", {"table": table})
        return {r["name"]: r["type"] for r in rows}

    def add_columns(self, columns: dict[str, str]) -> None:
        """Add the `columns` (name -> type) the table lacks, and change those it has with another type to it
        (a manifest's column widened: ClickHouse converts the stored values, and rewrites a filter column's
        projection with them). One statement for all: one per column took 95 s for 1,000 columns."""
        existing = self.columns()
        new = {n: t for n, t in columns.items() if n not in existing}
        changed = {n: t for n, t in columns.items() if n in existing and existing[n] != t}
        if new:
            self._connection.command("ALTER TABLE images " + ", ".join(
                f"ADD COLUMN IF NOT EXISTS {quote_identifier(n)} {t}" for n, t in new.items()))
        if changed:
            self._connection.command("ALTER TABLE images " + ", ".join(
                f"MODIFY COLUMN {quote_identifier(n)} {t}" for n, t in changed.items()) +
                " SETTINGS mutations_sync = 2")
        # A text filter column's projection is sorted by lowerUTF8(column), as its filters compare: built again.
        texts = {n for n, t in changed.items() if base_type(t) == "String"}
        for name in sorted(texts & set(filter_columns(self._connection))):
            self._connection.command(f"ALTER TABLE images DROP PROJECTION IF EXISTS {filter_projection(name)} "
                                     "SETTINGS mutations_sync = 2")
            Indexes(self._connection, self.columns).add_filter_column(name)

    def text_columns(self) -> list[str]:
        """The columns whose values are an image's title words (TEXT_WORDS above), in table order."""
        rows = self._connection.query("SELECT name, type, comment FROM system.columns WHERE database = "
                                      "currentDatabase() AND table = 'images' ORDER BY position")
        return [r["name"] for r in rows if r["comment"] == TEXT_WORDS or
                (r["type"] == "Nullable(String)" and r["comment"] != NO_WORDS)]

    def choose_text_columns(self, chosen: list[str], manifest_columns: list[str]) -> None:
        """Make `chosen` the manifest's columns that give title words, the other `manifest_columns` not."""
        comments = {c: TEXT_WORDS if c in chosen else NO_WORDS for c in dict.fromkeys([*chosen, *manifest_columns])}
        self._connection.command("ALTER TABLE images " + ", ".join(
            f"COMMENT COLUMN {quote_identifier(c)} '{comment}'" for c, comment in comments.items()))

    def integers_beyond_float(self, column: str) -> bool:
        """Whether the integer column `column` holds a value that a Float64 would round (beyond 2**53)."""
        col = quote_identifier(column)
        return bool(self._connection.query(f"SELECT 1 AS x FROM images WHERE toFloat64({col}) != {col} LIMIT 1"))

    def column_summaries(self) -> list[dict]:
        """Each filterable column with what a filter form needs: distinct values or a numeric range. One
        query for every column (a manifest may bring a thousand)."""
        out, aggregates = [], []
        for n, (name, ch_type) in enumerate(self.columns().items()):
            if name in NOT_FILTERABLE:
                continue
            kind = base_type(ch_type)
            info: dict[str, Any] = {"name": name, "type": ch_type}
            col = quote_identifier(name)
            if NUMERIC_TYPE.match(kind):
                info["kind"] = "number"
                aggregates += [f"min({col}) AS min_{n}", f"max({col}) AS max_{n}"]
            elif TIME_TYPE.match(kind):
                info["kind"] = "time"
            elif kind == "String":
                info["kind"] = "text"
                aggregates.append(f"groupUniqArray(21)({col}) AS values_{n}")
            else:
                info["kind"] = "array" if kind.startswith("Array") else "other"
            out.append((n, info))
        found = self._connection.query(f"SELECT {', '.join(aggregates)} FROM images")[0] if aggregates else {}
        for n, info in out:
            if info["kind"] == "number":
                info.update(min=found[f"min_{n}"], max=found[f"max_{n}"])
            elif info["kind"] == "text":
                values = found[f"values_{n}"]
                info["values"] = sorted(v for v in values if v is not None) if len(values) <= 20 else None
        return [info for _, info in out]

    def engine(self) -> str:
        """The table engine of `images` (Distributed on a cluster)."""
        rows = self._connection.query("SELECT engine FROM system.tables WHERE database = currentDatabase() "
                                      "AND name = 'images'")
        return rows[0]["engine"] if rows else ""

    # -- rows ---------------------------------------------------------------------------------
    def count(self) -> int:
        return int(self._connection.query("SELECT count() AS n FROM images")[0]["n"])

    def get(self, image_id: str) -> dict:
        """The row of the image whose id is `image_id` or starts with it (at least MIN_ID_PREFIX hex digits,
        like git's short hashes); NotFound if none, QueryError if the prefix names several."""
        image_id = str(image_id).strip().lower()
        if len(image_id) < 32:
            if len(image_id) < MIN_ID_PREFIX or not all(c in "0123456789abcdef" for c in image_id):
                raise NotFound(f"no image with id {image_id!r} (give at least {MIN_ID_PREFIX} hex digits of it)")
            rows = self._connection.query("SELECT * EXCEPT (embedding, thumbnail) FROM images FINAL WHERE "
                                          "startsWith(id, {id:String}) ORDER BY id LIMIT 2", {"id": image_id})
            if len(rows) > 1:
                raise QueryError(f"the id prefix {image_id!r} names several images ({rows[0]['id']}, "
                                 f"{rows[1]['id']}, ...); give more of it")
        else:
            rows = self._connection.query("SELECT * EXCEPT (embedding, thumbnail) FROM images "
                                          "WHERE id = {id:String} LIMIT 1", {"id": image_id})
        if not rows:
            raise NotFound(f"no image with id {image_id!r}")
        return rows[0]

    def existing_ids(self, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        rows = self._connection.query("SELECT id FROM images WHERE id IN {ids:Array(String)}", {"ids": list(ids)})
        return {r["id"] for r in rows}

    def existing_videos(self, ids: list[str]) -> set[str]:
        """The videos of `ids` stored, by their moments' `video` (apart from existing_ids, which the primary
        key answers: an OR of the two would read every row's id)."""
        if not ids:
            return set()
        rows = self._connection.query("SELECT DISTINCT video FROM images WHERE video IN {ids:Array(String)}",
                                      {"ids": list(ids)})
        return {r["video"] for r in rows}

    def thumbnail(self, image_id: str) -> str:
        """A video moment's stored thumbnail (base64 JPEG), '' for a photo."""
        rows = self._connection.query("SELECT thumbnail FROM images WHERE id = {id:String} LIMIT 1", {"id": image_id})
        return rows[0]["thumbnail"] if rows else ""

    def stored_before(self, ids: list[str], stamp_ms: int, videos: bool = False) -> set[str]:
        """The `ids` (with `videos`: of videos) that also have a row loaded before `stamp_ms` (ms since the
        epoch): stored by another load racing this one, which both read as new."""
        if not ids:
            return set()
        column = "video" if videos else "id"
        rows = self._connection.query(f"SELECT {column} AS key FROM images WHERE {column} IN {{ids:Array(String)}} "
                                      "GROUP BY key HAVING min(toUnixTimestamp64Milli(loaded_at)) < {stamp:Int64}",
                                      {"ids": ids, "stamp": stamp_ms})
        return {r["key"] for r in rows}

    def insert(self, rows: Any) -> None:
        """Insert a pyarrow Table of image rows (the loader builds it)."""
        self._connection.insert("images", rows)

    def delete(self, where: str, params: dict) -> None:
        """Delete the rows matching `where`. A lightweight delete drops the filter columns' projections from
        the parts it touches (kept, they would still return the deleted rows: measured on ClickHouse 26.9),
        so they are rebuilt in the background; searches read the table itself until then."""
        self._connection.command(f"DELETE FROM images WHERE {where}", params)
        columns = filter_columns(self._connection)
        if columns:
            self._connection.command("ALTER TABLE images APPLY DELETED MASK SETTINGS mutations_sync = 0")
            for column in columns:
                self._connection.command(f"ALTER TABLE images MATERIALIZE PROJECTION {filter_projection(column)} "
                                         "SETTINGS mutations_sync = 0")

    def set_hashes(self, hashes: dict[str, Any]) -> None:
        """Store the perceptual hashes (id -> hashes.Hashes) of images already stored (one mutation, waited for)."""
        columns = next(iter(hashes.values()))._fields
        updates = ", ".join(f"{c} = transform(id, {{ids:Array(String)}}, {{{c}:Array(UInt64)}}, {c})" for c in columns)
        params: dict[str, Any] = {c: [getattr(h, c) for h in hashes.values()] for c in columns}
        self._connection.command(f"ALTER TABLE images UPDATE {updates} WHERE id IN {{ids:Array(String)}} "
                                 "SETTINGS mutations_sync = 2", {"ids": list(hashes), **params})

    def update_columns(self, ids: list[str], values: dict[str, tuple[str, list]], model: str | None = None) -> None:
        """Set columns of the stored images `ids` (column -> (ClickHouse type, one value per id)), in one
        mutation, waited for; with `model`, only in rows whose vector is that model's (a vector given is).
        Filter columns' projections of the parts it rewrote are rebuilt in the background, as after a delete."""
        sets = ", ".join(f"{quote_identifier(c)} = {{{c}:Array({t})}}[indexOf({{ids:Array(String)}}, id)]"
                         for c, (t, _) in values.items())
        where = "id IN {ids:Array(String)}" + (" AND model = {model:String}" if model else "")
        self._connection.command(f"ALTER TABLE images UPDATE {sets} WHERE {where} SETTINGS mutations_sync = 2",
                                 {"ids": ids, "model": model or "", **{c: v for c, (_, v) in values.items()}})
        self._rebuild_filter_projections()

    def _rebuild_filter_projections(self) -> None:
        """After an update in place: the filter columns' projections of the parts it rewrote are rebuilt in the
        background, as after a delete; searches read the table itself until then."""
        for column in filter_columns(self._connection):
            self._connection.command(f"ALTER TABLE images MATERIALIZE PROJECTION {filter_projection(column)} "
                                     "SETTINGS mutations_sync = 0")

    def set_metadata(self, values: dict[str, dict[str, Any]]) -> None:
        """Set metadata columns of stored images (id -> {column: value}, values as the columns' types hold
        them) in place: one mutation, waited for. A column an id's dict lacks keeps its value."""
        table = self.columns()
        column_types = {c: table[c] for c in dict.fromkeys(c for v in values.values() for c in v)}
        if not column_types:
            return
        ids = list(values)
        updates: list[str] = []
        params: dict[str, Any] = {"ids": ids}
        for n, (column, ch_type) in enumerate(column_types.items()):
            has = [column in values[i] for i in ids]
            if not any(has):
                continue
            col = quote_identifier(column)
            updates.append(f"{col} = if({{has{n}:Array(Bool)}}[indexOf({{ids:Array(String)}}, id)], "
                           f"{{v{n}:Array({ch_type})}}[indexOf({{ids:Array(String)}}, id)], {col})")
            params[f"has{n}"] = has
            params[f"v{n}"] = [values[i].get(column) for i in ids]
        titled = self.text_columns()
        if updates and set(titled) & set(column_types):   # the title words follow the text columns
            current = self._values_of(ids, titled)
            params["words_title"] = [title_words({**current.get(i, {}), **values[i]}, titled) for i in ids]
            updates.append("words_title = {words_title:Array(Array(String))}[indexOf({ids:Array(String)}, id)]")
        if updates:
            self._connection.command(f"ALTER TABLE images UPDATE {', '.join(updates)} "
                                     "WHERE id IN {ids:Array(String)} SETTINGS mutations_sync = 2", params)
            self._rebuild_filter_projections()

    def metadata_of(self, ids: list[str], builtin: set[str]) -> dict[str, dict[str, Any]]:
        """id -> its row's values of the columns not in `builtin` (a manifest's), those that are not NULL."""
        columns = [c for c in self.columns() if c not in builtin]
        if not ids or not columns:
            return {}
        rows = self._connection.query(f"SELECT id, {', '.join(map(quote_identifier, columns))} FROM images "
                                      "WHERE id IN {ids:Array(String)} LIMIT 1 BY id", {"ids": list(ids)})
        return {r["id"]: {c: r[c] for c in columns if r[c] is not None} for r in rows}

    def _values_of(self, ids: list[str], columns: list[str]) -> dict[str, dict[str, Any]]:
        rows = self._connection.query(f"SELECT id, {', '.join(map(quote_identifier, columns))} FROM images "
                                      "WHERE id IN {ids:Array(String)} LIMIT 1 BY id", {"ids": list(ids)})
        return {r["id"]: {c: r[c] for c in columns} for r in rows}

    def paths_of(self, ids: list[str]) -> dict[str, list[str]]:
        """content id -> the paths its rows are shown under (one, unless rows are not merged yet)."""
        if not ids:
            return {}
        rows = self._connection.query(f"SELECT {CONTENT} AS key, groupUniqArray(path) AS paths FROM images "
                                      f"WHERE {OF_CONTENT} GROUP BY key", {"ids": list(ids)})
        return {r["key"]: list(r["paths"]) for r in rows}

    def move(self, moves: dict[str, tuple[str, int | None]]) -> None:
        """Show each image or video (content id -> (path, modification time in ms)) under another path that
        holds the same bytes, its name's words with it: one mutation, waited for."""
        if not moves:
            return
        ids = list(moves)
        named = [path_words(moves[i][0]) for i in ids]
        self._connection.command(
            f"ALTER TABLE images UPDATE path = {{paths:Array(String)}}[indexOf({{ids:Array(String)}}, {CONTENT})], "
            "modified_at = fromUnixTimestamp64Milli({mtimes:Array(Nullable(Int64))}"
            f"[indexOf({{ids:Array(String)}}, {CONTENT})]), "
            f"words_name = {{names:Array(Array(String))}}[indexOf({{ids:Array(String)}}, {CONTENT})], "
            f"words_prefixes = {{prefixes:Array(Array(String))}}[indexOf({{ids:Array(String)}}, {CONTENT})] "
            f"WHERE {OF_CONTENT} SETTINGS mutations_sync = 2",
            {"ids": ids, "paths": [moves[i][0] for i in ids], "mtimes": [moves[i][1] for i in ids],
             "names": [n["words_name"] for n in named], "prefixes": [n["words_prefixes"] for n in named]})
        self._rebuild_filter_projections()

    def record_errors(self, errors: list[tuple[str, str]], versions: list[tuple[int, int] | None] | None = None
                      ) -> list[tuple[str, str]]:
        """Record files that could not be loaded (path, reason) in `load_errors`, each with the version of the
        file it held (size, modification time in ms) where known; an error already recorded for that path,
        reason and version is not recorded again. Returns the errors recorded."""
        import pyarrow as pa
        if not errors:
            return []
        versions = versions or [None] * len(errors)
        latest = {r["path"]: (r["reason"], r["size"], r["mtime"]) for r in self._connection.query(
            "SELECT path, argMax(reason, error_at) AS reason, argMax(file_size, error_at) AS size, "
            "argMax(toUnixTimestamp64Milli(modified_at), error_at) AS mtime FROM load_errors "
            "WHERE path IN {paths:Array(String)} GROUP BY path", {"paths": [p for p, _ in errors]})}
        new = [(path, reason, version) for (path, reason), version in zip(errors, versions, strict=True)
               if latest.get(path) != (reason, *(version or (None, None)))]
        if new:
            self._connection.insert("load_errors", pa.table({
                "path": pa.array([p for p, _, _ in new], pa.string()),
                "reason": pa.array([e for _, e, _ in new], pa.string()),
                "file_size": pa.array([v[0] if v else None for _, _, v in new], pa.uint64()),
                "modified_at": pa.array([v[1] if v else None for _, _, v in new], pa.timestamp("ms"))}))
        return [(p, e) for p, e, _ in new]

    def failed_files(self, root: str) -> dict[str, tuple[int, int]]:
        """path -> (size, modification time in ms) of the file versions under `root` whose last load failed
        on their content (a version that could not even be looked at has none)."""
        rows = self._connection.query(
            "SELECT path, argMax(file_size, error_at) AS size, argMax(toUnixTimestamp64Milli(modified_at), "
            "error_at) AS mtime FROM load_errors WHERE startsWith(path, {root:String}) GROUP BY path "
            "HAVING size IS NOT NULL AND mtime IS NOT NULL", {"root": root})
        return {r["path"]: (int(r["size"]), int(r["mtime"])) for r in rows}

    # -- the files the rows came from ---------------------------------------------------------
    def files(self, where: str = "1", order_by: str = "id", params: dict | None = None) -> list[StoredFile]:
        """The files of the stored images matching `where` (a condition on `images`' columns, with its
        `params`), one per id."""
        return stored_files(self._connection, where, params, order_by=order_by)
