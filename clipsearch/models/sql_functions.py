"""`clipTextEmbedding(text)` inside SQL, so analysts can rank by a description in plain SQL.

On a ClickHouse server it is an executable UDF (sql/udf/). In the embedded
store it is a chdb Python UDF plus a SQL function of the same name: chdb's
Python UDFs cannot return arrays, so the Python side returns the vector as
JSON text and the SQL function parses it into Array(Float32).

Call it once per query, in a scalar subquery, so the text is embedded once:
    WITH (SELECT clipTextEmbedding('red circle')) AS q
    SELECT path FROM images ORDER BY cosineDistance(embedding, q) LIMIT 10
"""
from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from clipsearch.models.model import ImageTextModel
from clipsearch.search.searcher import MAX_QUERY_CHARS

if TYPE_CHECKING:
    from clipsearch.store.catalog import Catalog
    from clipsearch.store.connection import Connection

_registered: dict[str, Callable[..., str]] = {}


def register_embedded(catalog: Catalog, get_model: Callable[[], ImageTextModel]) -> None:
    """Make clipTextEmbedding() available to `catalog` (on the embedded engine); the model loads on first call.

    The SQL function hands the Python one the model of the store's vectors as the query sees them (read in
    the same query), so a text is never embedded by another model than the one it is ranked against: after
    `clipsearch reembed` switches the store, a query that meets a model not in use yet fails instead."""
    from chdb.udf import func

    @lru_cache(maxsize=1024)
    def embed_json(label: str, text: str) -> str:   # each float32 in full: parsed back, the vector is the model's own
        for_label = getattr(get_model, "for_label", None)
        model = for_label(label) if for_label is not None and label else get_model()
        if model is None or label and model.label != label:
            raise ValueError(f"the store's vectors come from {label}, and this process has not switched to it "
                             "yet; run the query again")
        return json.dumps([float(x) for x in model.encode_texts([text])[0]])

    if "clipsearch_text_embedding_json" not in _registered:
        # chdb registers Python UDFs per process, by name; later calls rebind the model getter.
        @func(["String", "String"], "String")
        def clipsearch_text_embedding_json(label: str | None, text: str) -> str:
            # CLIP reads 77 tokens: a longer text only costs tokenizing time (which no query time limit
            # stops: the engine waits for Python) and cache memory
            return _registered["embed"](label or "", text[:MAX_QUERY_CHARS])
        _registered["clipsearch_text_embedding_json"] = clipsearch_text_embedding_json
    _registered["embed"] = embed_json
    catalog.define_function("clipTextEmbedding", "(text) -> JSONExtract(assumeNotNull(clipsearch_text_embedding_json("
                            "(SELECT any(model) FROM (SELECT model FROM images LIMIT 1)), text)), 'Array(Float32)')")


class ServiceModel:
    """The model of the `clipsearch serve` that holds the store, used through its ClickHouse port: texts are
    embedded by clipTextEmbedding() in the service's process, which has the model loaded, so a command
    through the service starts no model of its own (torch and open_clip take seconds to import). Images
    do not go through SQL: encoding one loads the same model here, on first use. (An ImageTextModel.)"""

    def __init__(self, connection: Connection, info: dict, local: Callable[[], ImageTextModel]):
        self._connection, self._local = connection, local
        self.label, self.dim, self.logit_scale = str(info["label"]), int(info["dim"]), float(info["logit_scale"])

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        rows = self._connection.query(
            "SELECT i, clipTextEmbedding(texts[i]) AS v FROM (SELECT {texts:Array(String)} AS texts, "
            "arrayJoin(range(1, length(texts) + 1)) AS i) ORDER BY i", {"texts": list(texts)})
        return np.array([r["v"] for r in rows], dtype=np.float32).reshape(len(texts), self.dim)

    @property
    def image_size(self) -> int:
        return self._local().image_size

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        return self._local().encode_images(images)

    def prepare(self) -> Callable[[Image.Image], Any]:
        return self._local().prepare()

    def encode_prepared(self, prepared: list[Any]) -> np.ndarray:
        return self._local().encode_prepared(prepared)
