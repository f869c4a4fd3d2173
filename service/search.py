"""Search: encode the query with the model, let ClickHouse rank with one SQL query."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .query import Filter, QueryError, search_sql
from .store import Store


class NotFound(LookupError):
    """An image id that is not in the table."""


class EmptyStore(QueryError):
    """Nothing has been loaded yet."""


@dataclass
class SearchResult:
    rows: list[dict]
    sql: str
    params: dict
    took_ms: dict = field(default_factory=dict)


class Searcher:
    """Runs searches against `store`; `get_model` is called only when a query needs encoding."""

    def __init__(self, store: Store, get_model):
        self.store = store
        self._get_model = get_model

    @property
    def model(self):
        return self._get_model()

    def table_columns(self) -> dict[str, str]:
        columns = self.store.columns()
        if not columns or not self.store.query("SELECT 1 AS x FROM images LIMIT 1"):
            raise EmptyStore("no images loaded yet: run `clipsearch load FOLDER` first")
        return columns

    def check_model(self) -> None:
        """Refuse to compare vectors from different models."""
        stored = [r["model"] for r in self.store.query("SELECT DISTINCT model FROM images LIMIT 3")]
        if stored and stored != [self.model.label]:
            raise QueryError(f"the table holds embeddings from {', '.join(stored)}, but the configured "
                             f"model is {self.model.label}; use the same --model/--pretrained as the load")

    def encode(self, text: str | None = None, image=None) -> np.ndarray:
        if image is not None:
            return self.model.encode_images([image])[0]
        if not text or not text.strip():
            raise QueryError("empty query: give a text, an image or an image id")
        return self.model.encode_texts([text.strip()])[0]

    def search(self, text: str | None = None, image=None, similar: str | None = None, k: int = 10,
               filters: list[Filter] = ()) -> SearchResult:
        start = time.perf_counter()
        columns = self.table_columns()
        if similar is not None:
            if not self.store.query("SELECT id FROM images WHERE id = {id:String} LIMIT 1", {"id": similar}):
                raise NotFound(f"no image with id {similar!r}")
            sql, params = search_sql(columns, list(filters), k, similar_to=similar)
            encode_ms = 0.0
        else:
            sql, params = search_sql(columns, list(filters), k)  # validate before the slow encode
            self.check_model()
            t = time.perf_counter()
            params["q"] = self.encode(text, image).astype(np.float32).tolist()
            encode_ms = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        rows = self.store.query(sql, params)
        query_ms = (time.perf_counter() - t) * 1000
        return SearchResult(rows, sql, params, {"encode": round(encode_ms, 2), "query": round(query_ms, 2),
                                                "total": round((time.perf_counter() - start) * 1000, 2)})
