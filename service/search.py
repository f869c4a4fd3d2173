"""Search: encode the query with the model, let ClickHouse rank with one SQL query, log it."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from .query import Filter, QueryError, QueryVector, filter_sql, search_sql
from .store import Store

DEFAULT_WEIGHTS = {"image": 0.5, "text": 0.5}
# With filters, the HNSW index is asked for POSTFILTER_SAFETY / share x k neighbours (share: the
# fraction of rows the filters match, estimated in SQL first). ClickHouse fetches at most 1000 x k, so
# below MIN_INDEX_SHARE = 4 / 1000 the matching rows are ranked exactly. See bench/results.md.
POSTFILTER_SAFETY = 4.0
MIN_INDEX_SHARE = POSTFILTER_SAFETY / 1000
SAMPLE_ROWS = 100_000   # rows the filter share is estimated on: a few ms at any table size


class NotFound(LookupError):
    """An image id that is not in the table."""


class EmptyStore(QueryError):
    """Nothing has been loaded yet."""


@dataclass
class SearchResult:
    rows: list[dict]
    sql: str
    params: dict
    kind: str
    strategy: str
    took_ms: dict = field(default_factory=dict)


class Searcher:
    """Runs searches against `store`; `get_model` is called only when a query needs encoding."""

    def __init__(self, store: Store, get_model, log: bool = True):
        self.store = store
        self._get_model = get_model
        self.log = log

    @property
    def model(self):
        return self._get_model()

    def table_state(self) -> dict:
        """Columns, models and index of `images`; an error if nothing is loaded yet."""
        state = self.store.search_state()
        if not state["models"]:  # every row names its model, so no model means no rows
            raise EmptyStore("no images loaded yet: run `clipsearch load FOLDER` first")
        return state

    def get_image(self, image_id: str) -> dict:
        rows = self.store.query("SELECT * EXCEPT (embedding) FROM images WHERE id = {id:String} LIMIT 1",
                                {"id": str(image_id)})
        if not rows:
            raise NotFound(f"no image with id {image_id!r}")
        return rows[0]

    def search(self, text: str | None = None, image=None, image_id: str | None = None, k: int = 10,
               filters: list[Filter] = (), weights: dict | None = None) -> SearchResult:
        """Rank by text, an image, a stored image id, or a weighted mix of an image and a text."""
        start = time.perf_counter()
        text = text.strip() if isinstance(text, str) and text.strip() else None
        if text is None and image is None and image_id is None:
            raise QueryError("empty query: give a text, an image or an image id")
        if image is not None and image_id is not None:
            raise QueryError("give an image or an image id, not both")
        state = self.table_state()
        if image_id is not None:
            self.get_image(image_id)
        weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        for name, w in weights.items():
            if name not in DEFAULT_WEIGHTS or isinstance(w, bool) or not isinstance(w, (int, float)) \
                    or not 0 <= w < float("inf"):
                raise QueryError(f"weights are non-negative numbers for 'image' and 'text', got {name}={w!r}")
        hybrid = text is not None and (image is not None or image_id is not None)
        t = time.perf_counter()
        parts = []
        if image_id is not None:
            parts.append(QueryVector(weights["image"] if hybrid else 1.0, image_id=str(image_id)))
        if image is not None or text is not None:
            self.store.check_model(self.model.label, state["models"])
        if image is not None:
            parts.append(QueryVector(weights["image"] if hybrid else 1.0, vector=self.model.encode_images([image])[0]))
        if text is not None:
            parts.append(QueryVector(weights["text"] if hybrid else 1.0, vector=self.model.encode_texts([text])[0]))
        encode_ms = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        rows, sql, params, strategy = self.rank(state, parts, list(filters), k)
        query_ms = (time.perf_counter() - t) * 1000
        kind = "hybrid" if hybrid else "text" if text else "image" if image is not None else "similar"
        result = SearchResult(rows, sql, params, kind, strategy, {
            "encode": round(encode_ms, 2), "query": round(query_ms, 2),
            "total": round((time.perf_counter() - start) * 1000, 2)})
        if self.log:
            self._record(result, text, filters)
        return result

    def rank(self, state: dict, parts: list[QueryVector], filters: list[Filter], k: int):
        """Rows ranked by the weighted distance to `parts`: (rows, sql, params, strategy that ran)."""
        strategy, multiplier, _ = self.plan(state, filters, parts)
        sql, params = search_sql(state["columns"], filters, k, parts, strategy, multiplier)
        rows = self.store.query(sql, params)
        if strategy != "exact" and len(rows) < params["k"] and len(rows) < self._count(state, filters)[0]:
            # The index came back short (the filter dropped too many neighbours): rank the matching
            # rows exactly, so a search always returns k rows when k rows match.
            strategy = f"exact (after {strategy} returned {len(rows)})"
            sql, params = search_sql(state["columns"], filters, k, parts, "exact")
            rows = self.store.query(sql, params)
        return rows, sql, params, strategy

    def plan(self, state: dict, filters: list[Filter], parts: list[QueryVector]) -> tuple[str, float, int]:
        """The strategy for one search: (name, postfilter multiplier, estimated rows matching the filters).

        The index serves a single query vector; a mix or a stored id is ranked exactly. With filters,
        their share of rows is counted in SQL on the first SAMPLE_ROWS rows (ids are content hashes, so
        that is a random sample; the whole table when it is smaller): from MIN_INDEX_SHARE up the index
        is used, below it the matching rows are ranked exactly. The "rerank" strategy (a QBit scan and
        an exact re-rank) is never picked: on our benchmark it was both slower and less exact than the
        Float32 scan (bench/results.md).
        """
        if len(parts) != 1 or parts[0].vector is None or not state["vector_index"]:
            return "exact", 1.0, state["rows"]
        matching, seen = self._count(state, filters, SAMPLE_ROWS)
        share = matching / max(1, seen)
        matching = round(share * state["rows"])
        if share >= MIN_INDEX_SHARE:
            return "hnsw", POSTFILTER_SAFETY / share, matching
        return "exact", 1.0, matching

    def _count(self, state: dict, filters: list[Filter], limit: int | None = None) -> tuple[int, int]:
        """(rows matching the filters, rows looked at): over the whole table, or its first `limit` rows."""
        if not filters:
            return state["rows"], state["rows"]
        conditions, params = filter_sql(filters, state["columns"])
        source = f"(SELECT * FROM images LIMIT {int(limit)})" if limit else "images"
        row = self.store.query(f"SELECT countIf({' AND '.join(conditions)}) AS matching, count() AS seen "
                               f"FROM {source}", params)[0]
        return int(row["matching"]), int(row["seen"])

    def _record(self, result: SearchResult, text, filters) -> None:
        """One row in search_log per search, for analysts to chart usage in SQL."""
        self.store.command(
            "INSERT INTO search_log (kind, text, filters, k, results, encode_ms, query_ms, total_ms, top_ids) "
            "SELECT {kind:String}, {text:String}, {filters:String}, {k:UInt32}, {results:UInt32}, "
            "{encode:Float32}, {query:Float32}, {total:Float32}, {top_ids:Array(String)}",
            {"kind": result.kind, "text": text or "", "k": int(result.params["k"]), "results": len(result.rows),
             "filters": json.dumps([[f.column, f.op, f.value] for f in filters], default=str),
             **result.took_ms, "top_ids": [r["id"] for r in result.rows[:10]]})
