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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .catalog import Catalog
    from .model import ClipModel

_registered: dict[str, Callable[[str], str]] = {}


def register_embedded(catalog: Catalog, get_model: Callable[[], ClipModel]) -> None:
    """Make clipTextEmbedding() available to `catalog` (on the embedded engine); the model loads on first call."""
    from chdb.udf import func

    @lru_cache(maxsize=1024)
    def embed_json(text: str) -> str:
        return json.dumps([round(float(x), 7) for x in get_model().encode_texts([text])[0]])

    if "clipsearch_text_embedding_json" not in _registered:
        # chdb registers Python UDFs per process, by name; later calls rebind the model getter.
        @func(["String"], "String")
        def clipsearch_text_embedding_json(text: str) -> str:
            return _registered["embed"](text)
        _registered["clipsearch_text_embedding_json"] = clipsearch_text_embedding_json
    _registered["embed"] = embed_json
    catalog.command("CREATE OR REPLACE FUNCTION clipTextEmbedding AS (text) -> "
                  "JSONExtract(assumeNotNull(clipsearch_text_embedding_json(text)), 'Array(Float32)')")
