"""Which models made the stored vectors: the `models` table (how to load each one again) and the model of
`images`' rows, with the check that keeps vectors of two models from being mixed or compared."""
from __future__ import annotations

from clipsearch.errors import ModelMismatch
from clipsearch.store.connection import Connection
from clipsearch.store.images import ImageTable


class ModelRegistry:
    """The recorded models, and the model of the vectors in `images`."""

    def __init__(self, connection: Connection, images: ImageTable):
        self._connection, self._images = connection, images

    def active(self) -> list[str]:
        """The models whose vectors `images` holds (one, unless a load mixed them; at most 3 read)."""
        return [r["model"] for r in self._connection.query("SELECT DISTINCT model FROM images LIMIT 3")]

    def register(self, label: str, name: str | None, pretrained: str | None, dim: int) -> None:
        """Record how to load the model whose vectors are stored under `label` (once per label)."""
        if not self._connection.query("SELECT 1 FROM models WHERE label = {label:String} LIMIT 1", {"label": label}):
            self._connection.command("INSERT INTO models (label, name, pretrained, dim) VALUES "
                                     "({label:String}, {name:String}, {pretrained:String}, {dim:UInt32})",
                                     {"label": label, "name": name or "", "pretrained": pretrained or "", "dim": dim})

    def records(self) -> list[dict]:
        """The recorded models: label, name, pretrained, dim, and how many images have their vectors: in
        `images` (`active` rows) or in `embeddings` (`stored` rows: re-embedding, or kept)."""
        query = self._connection.query
        models = query("SELECT label, name, pretrained, dim FROM models FINAL ORDER BY registered_at, label")
        active = {r["model"]: int(r["n"]) for r in query("SELECT model, count() AS n FROM images GROUP BY model")}
        stored = {r["model"]: int(r["n"]) for r in query("SELECT model, uniqExact(id) AS n FROM embeddings "
                                                         "GROUP BY model")}
        return [{**m, "active_rows": active.get(m["label"], 0), "stored_rows": stored.get(m["label"], 0)}
                for m in models]

    def check(self, label: str, stored: list[str] | None = None) -> None:
        """Refuse to mix or compare vectors from different models: they live in different spaces."""
        stored = self.active() if stored is None else stored
        if stored and stored != [label]:
            raise ModelMismatch(f"the table holds embeddings from {', '.join(stored)}, but the model in use is "
                                f"{label}; leave out --model to use the store's own (`clipsearch models` lists "
                                "them), or use another --db")

    def check_batch(self, label: str, ids: list[str]) -> None:
        """After inserting the rows `ids` with vectors of `label`: if `reembed` switched the store to another
        model meanwhile, take them out again and say so (their vectors are in the other model's space)."""
        other = self._connection.query("SELECT model FROM images WHERE id NOT IN {ids:Array(String)} LIMIT 1",
                                       {"ids": ids})
        if other and other[0]["model"] != label:
            mine = "model = {label:String} AND id IN {ids:Array(String)}"
            params = {"label": label, "ids": ids}
            if self._connection.query(f"SELECT 1 FROM images WHERE {mine} LIMIT 1", params):   # the batch's rows
                self._images.delete(mine, params)
            raise ModelMismatch(f"the store switched to the model {other[0]['model']} during this load; run it "
                                "again (without --model it uses the store's model)")
