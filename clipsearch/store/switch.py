"""Another model's vectors (the `embeddings` table) and the switch of `images` to them: the statements of
`clipsearch reembed` (loader/reembed.py tells the steps)."""
from __future__ import annotations

from typing import Any

from clipsearch.store.connection import Connection, quote_identifier
from clipsearch.store.images import ImageTable, StoredFile, stored_files
from clipsearch.store.indexes import Indexes, with_dimension

SWITCH_TABLE = "images_switch"   # `images` with another model's vectors, until `reembed` exchanges the two


class ModelSwitch:
    """`embeddings` (vectors by model and id) and `images_switch` (`images` with another model's vectors)."""

    def __init__(self, connection: Connection, images: ImageTable, indexes: Indexes):
        self._connection, self._images, self._indexes = connection, images, indexes

    # -- the new model's vectors, in `embeddings` -----------------------------------------------
    def without_vectors(self, model: str, after: str = "", limit: int = 4096) -> list[StoredFile]:
        """Stored images with no vector of `model` in `embeddings`, by id from just after `after`."""
        return stored_files(self._connection, "id > {after:String} AND id NOT IN (SELECT id FROM embeddings "
                            "WHERE model = {model:String} AND id > {after:String})",
                            {"model": model, "after": after}, limit=limit)

    def vectors_missing(self, model: str) -> int:
        """How many stored images have no vector of `model` in `embeddings` yet."""
        return int(self._connection.query("SELECT uniqExact(id) AS n FROM images WHERE id NOT IN "
                                          "(SELECT id FROM embeddings WHERE model = {model:String})",
                                          {"model": model})[0]["n"])

    def insert_vectors(self, model: str, ids: list[str], vectors: Any) -> None:
        import numpy as np
        import pyarrow as pa
        vectors = np.asarray(vectors, dtype=np.float32)
        offsets = pa.array(np.arange(0, vectors.size + 1, vectors.shape[1], dtype=np.int32))
        self._connection.insert("embeddings", pa.table({
            "model": pa.array([model] * len(ids), pa.string()), "id": pa.array(ids, pa.string()),
            "embedding": pa.ListArray.from_arrays(offsets, pa.array(vectors.ravel()))}))

    def keep_vectors(self, model: str) -> None:
        """Copy the active vectors (those of `model`) into `embeddings`, to keep them past a switch."""
        self._connection.command("INSERT INTO embeddings (model, id, embedding) SELECT {model:String}, id, "
                                 "any(embedding) FROM images WHERE model = {model:String} GROUP BY id",
                                 {"model": model})

    # -- the switch ----------------------------------------------------------------------------
    def _select_switched(self) -> tuple[list[str], str]:
        """`images`' columns, and the SELECT list that fills them from `i` (rows) and `e` (new vectors)."""
        columns = list(self._images.columns())
        select = ", ".join("e.embedding" if c == "embedding" else "{model:String}" if c == "model"
                           else f"i.{quote_identifier(c)}" for c in columns)
        return columns, select

    def build(self, model: str, dim: int) -> int:
        """Make `images_switch`: `images` (its columns, filter columns, settings) with the vectors of `model`
        from `embeddings`, and a vector index like its own for `dim`-long vectors, built as the rows go in.
        Rows without such a vector are left out. Returns its row count."""
        command = self._connection.command
        command(f"DROP TABLE IF EXISTS {SWITCH_TABLE}")
        command(f"CREATE TABLE {SWITCH_TABLE} AS images")
        index = self._indexes.vector_index()
        if index:
            name = quote_identifier(index["name"])
            command(f"ALTER TABLE {SWITCH_TABLE} DROP INDEX {name}")
            command(f"ALTER TABLE {SWITCH_TABLE} ADD INDEX {name} embedding TYPE "
                    f"{with_dimension(index['type_full'], dim)} GRANULARITY 100000000")
        columns, select = self._select_switched()
        # In 16 slices by the id's first hex digit: each join holds one slice of the vectors in memory.
        for lo, hi in zip("0123456789abcdef", [*"123456789abcdef", "g"], strict=True):
            command(
                f"INSERT INTO {SWITCH_TABLE} ({', '.join(map(quote_identifier, columns))}) SELECT {select} "
                "FROM images AS i FINAL INNER JOIN (SELECT id, any(embedding) AS embedding FROM embeddings "
                "WHERE model = {model:String} AND id >= {lo:String} AND id < {hi:String} GROUP BY id) AS e "
                "ON i.id = e.id WHERE i.id >= {lo:String} AND i.id < {hi:String}",
                {"model": model, "lo": lo, "hi": hi})
        return int(self._connection.query(f"SELECT count() AS n FROM {SWITCH_TABLE}")[0]["n"])

    def exchange(self) -> None:
        """Put `images_switch` in the place of `images` (and `images` in its place): one atomic step, so every
        query reads the one table or the other, never a mix."""
        self._connection.command(f"EXCHANGE TABLES images AND {SWITCH_TABLE}")

    def left_model(self) -> str | None:
        """The model of the rows of the table a switch made or left (None if there is none)."""
        if not self._connection.query("SELECT 1 FROM system.tables WHERE database = currentDatabase() "
                                      "AND name = {t:String}", {"t": SWITCH_TABLE}):
            return None
        rows = self._connection.query(f"SELECT model FROM {SWITCH_TABLE} LIMIT 1")
        return rows[0]["model"] if rows else ""

    def not_caught_up(self, model: str, source: str) -> list[StoredFile]:
        """After the exchange: the images of `source` (the table the switch left, or `images`) stored with
        another model's vectors and not yet in `images` with those of `model` (loaded during the switch)."""
        return stored_files(self._connection, "model != {model:String} AND id NOT IN "
                            "(SELECT id FROM images WHERE model = {model:String})", {"model": model}, table=source)

    def copy(self, model: str, ids: list[str], source: str) -> None:
        """Insert into `images` the rows `ids` of `source` (images itself, or the table a switch left) with
        their `model` vectors from `embeddings`, and delete their rows of any other model."""
        columns, select = self._select_switched()
        params = {"model": model, "ids": ids}
        self._connection.command(
            f"INSERT INTO images ({', '.join(map(quote_identifier, columns))}) SELECT {select} "
            f"FROM {quote_identifier(source)} AS i FINAL INNER JOIN (SELECT id, any(embedding) AS embedding "
            "FROM embeddings WHERE model = {model:String} AND id IN {ids:Array(String)} GROUP BY id) AS e "
            "ON i.id = e.id WHERE i.id IN {ids:Array(String)}", params)
        if self._connection.query("SELECT 1 FROM images WHERE model != {model:String} LIMIT 1", params):
            self._images.delete("model != {model:String}", params)

    def finish(self, model: str) -> None:
        """After a switch to `model`: drop the table it left (the old vectors, unless kept) and the copies of
        the new vectors in `embeddings` (they are in `images` now)."""
        self._connection.command(f"DROP TABLE IF EXISTS {SWITCH_TABLE}")
        self._connection.command("DELETE FROM embeddings WHERE model = {model:String}", {"model": model})
