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
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from clipsearch.models.bundled import BUNDLED_NAME
from clipsearch.models.model import MAX_QUERY_CHARS, ImageTextModel

if TYPE_CHECKING:
    from clipsearch.models.factory import ModelRef
    from clipsearch.store.catalog import Catalog
    from clipsearch.store.connection import Connection

# The Python function behind clipTextEmbedding. Its name begins with "clipsearch_", the prefix the analyst
# check refuses (clipsearch.analyst.readonly.INTERNAL_PREFIX): its arguments include the query's start and
# time limit, which an analyst calling it directly could make up.
PYTHON_FUNCTION = "clipsearch_text_embedding_json"


class EmbeddingRefused(ValueError):
    """clipTextEmbedding's own refusal, its message fit to show (a model's own error may name server paths)."""


class EmbeddingTimeout(EmbeddingRefused):
    """The query calling clipTextEmbedding is past its time limit. The engine checks its limit between blocks
    only, and a block of rows is embedded call by call, so the Python function checks it on every call."""


def register_embedded(catalog: Catalog, model_for: Callable[[str], ImageTextModel | None]) -> None:
    """Make clipTextEmbedding() available to `catalog` (on the embedded engine), embedding with
    `model_for(label)`: the model whose vectors are stored under `label` ('' for an empty store), or None
    where this process does not have it in use (clipsearch.models.store_model.StoreModel.for_label).

    The SQL function hands the Python one the model of the store's vectors as the query sees them (read in
    the same query), so a text is never embedded by another model than the one it is ranked against: after
    `clipsearch reembed` switches the store, a query that meets a model not in use yet fails instead.

    chdb keeps Python functions per process, by name: registering replaces the function an earlier
    collection of this process registered (chdb opens one database at a time: the one now open is this
    catalog's), and nothing else in the process keeps a model."""
    import chdb

    @lru_cache(maxsize=1024)
    def embed_json(label: str, text: str) -> str:   # each float32 in full: parsed back, the vector is the model's own
        model = model_for(label)
        if model is None or label and model.label != label:
            raise EmbeddingRefused(f"the store's vectors come from {label}, and this process has not switched to it "
                             "yet; run the query again")
        return json.dumps([float(x) for x in model.encode_texts([text])[0]])

    def text_embedding_json(label: str | None, text: str, started_us: str | None, limit_s: str | None) -> str:
        # The query's start (now64: one value per query) and its max_execution_time (0: none): past that, the
        # query stops here, whoever is waiting for it (a client that has gone included)
        limit = float(limit_s or 0)
        if limit > 0 and time.time() - int(started_us or 0) / 1e6 > limit:
            raise EmbeddingTimeout(f"Timeout exceeded: clipTextEmbedding ran past the query's time limit "
                                   f"(max_execution_time {limit:g} s)")
        # CLIP reads 77 tokens: a longer text only costs tokenizing time and cache memory
        try:
            return embed_json(label or "", text[:MAX_QUERY_CHARS])
        except EmbeddingRefused:
            raise
        except Exception as exc:   # the model's own failure: its type, not its message (which may hold paths)
            raise ValueError(f"clipTextEmbedding could not embed the text ({type(exc).__name__})") from None

    chdb.drop_function(PYTHON_FUNCTION)   # an earlier collection's, bound to its model (nothing if none)
    chdb.create_function(PYTHON_FUNCTION, text_embedding_json, ["String", "String", "String", "String"], "String")
    catalog.define_function("clipTextEmbedding", f"(text) -> JSONExtract(assumeNotNull({PYTHON_FUNCTION}("
                            "(SELECT any(model) FROM (SELECT model FROM images LIMIT 1)), text, "
                            "toString(toUnixTimestamp64Micro(now64(6))), toString(getSetting('max_execution_time'))"
                            ")), 'Array(Float32)')")


class ServiceModel:
    """The model of the `clipsearch serve` that holds the store, used through its ClickHouse port: texts are
    embedded by clipTextEmbedding() in the service's process, which has the model loaded, so a command
    through the service starts no model of its own (torch and open_clip take seconds to import). Images
    do not go through SQL: encoding one loads the same model here, on first use. (An ImageTextModel.)"""

    def __init__(self, connection: Connection, info: dict, local: ModelRef):
        self._connection, self._local = connection, local
        self.label, self.dim, self.logit_scale = str(info["label"]), int(info["dim"]), float(info["logit_scale"])
        self.name, self.pretrained = local.name or BUNDLED_NAME, local.pretrained   # how to make it here

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        rows = self._connection.query(
            "SELECT i, clipTextEmbedding(texts[i]) AS v FROM (SELECT {texts:Array(String)} AS texts, "
            "arrayJoin(range(1, length(texts) + 1)) AS i) ORDER BY i", {"texts": list(texts)})
        return np.array([r["v"] for r in rows], dtype=np.float32).reshape(len(texts), self.dim)

    @property
    def image_size(self) -> int:
        return self._local.get().image_size

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        return self._local.get().encode_images(images)

    def prepare(self) -> Callable[[Image.Image], Any]:
        return self._local.get().prepare()

    def encode_prepared(self, prepared: list[Any]) -> np.ndarray:
        return self._local.get().encode_prepared(prepared)
