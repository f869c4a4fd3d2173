"""search_log rows written off the search's path.

A search only appends its row to a buffer; FLUSH_S seconds after the first pending row a timer thread
inserts the buffer in one batch (one insert instead of one per search, which cost 3-4 ms of each), and
`close()` writes what is left, so a clean shutdown loses no row. If the store stays unwritable the
buffer is capped at MAX_PENDING rows: the oldest are dropped and counted, a search never waits or fails
for its log row.
"""
from __future__ import annotations

import json
import logging
import threading
from collections import deque
from datetime import datetime, timezone

from clipsearch.search.filters import Filter
from clipsearch.store.catalog import Catalog

FLUSH_S = 0.5
MAX_PENDING = 100_000
MAX_FAILURES = 5   # background tries in a row before waiting for close() (a store closed under us)
COLUMNS = ("time", "kind", "origin", "text", "filters", "k", "results", "model_load_ms", "encode_ms", "query_ms",
           "total_ms", "top_ids", "search_id")

log = logging.getLogger(__name__)


class SearchLog:
    """Buffers one row per search and inserts them into `catalog`'s search_log in batches."""

    def __init__(self, catalog: Catalog, flush_s: float = FLUSH_S, max_pending: int = MAX_PENDING):
        self.catalog = catalog
        self.flush_s = flush_s
        self.dropped = 0
        self._pending: deque[tuple] = deque(maxlen=max_pending)
        self._lock = threading.Lock()         # guards _pending
        self._write_lock = threading.Lock()   # one batch at a time, so rows keep their order
        self._timer: threading.Timer | None = None   # set while a flush is scheduled
        self._failures = 0
        self._closed = False

    def record(self, kind: str, origin: str, text: str | None, filters: list[Filter], k: int,
               top_ids: list[str], results: int, took_ms: dict, search_id: str = "") -> None:
        row = (datetime.now(timezone.utc), kind, origin, text or "",
               json.dumps([[f.column, f.op, f.value] for f in filters], default=str), int(k), results,
               took_ms.get("model_load", 0.0), took_ms.get("encode", 0.0), took_ms.get("query", 0.0),
               took_ms.get("total", 0.0), top_ids[:10], search_id)
        with self._lock:
            if len(self._pending) == self._pending.maxlen:
                self.dropped += 1
            self._pending.append(row)
            if self._timer is None and not self._closed:
                self._schedule()

    def record_click(self, search_id: str, image_id: str, rank: int) -> None:
        """A person opened the result `image_id`, at `rank`, of the search `search_id` (search_clicks): one row
        at once, since a person clicks far less often than searches run."""
        self.catalog.append_click(search_id, image_id, rank)

    def _schedule(self) -> None:
        self._timer = threading.Timer(self.flush_s, self._flush_later)
        self._timer.daemon = True
        self._timer.start()

    def _flush_later(self) -> None:
        with self._lock:
            self._timer = None
        try:
            self.flush()
            self._failures = 0
        except Exception as exc:   # the store is busy or gone: keep the rows; close() tries once more
            self._failures += 1
            log.warning("search_log not written yet: %s", exc)
            with self._lock:
                if self._failures < MAX_FAILURES and self._timer is None and not self._closed:
                    self._schedule()

    def flush(self) -> None:
        """Insert every buffered row now (they stay buffered if the insert fails)."""
        import pyarrow as pa
        with self._write_lock:
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
            if not batch:
                return
            columns = dict(zip(COLUMNS, zip(*batch, strict=True), strict=True))
            table = pa.table({name: pa.array(values, type=pa.timestamp("ms", tz="UTC")) if name == "time"
                              else list(values) for name, values in columns.items()})
            try:
                self.catalog.append_search_log(table)
            except Exception:
                with self._lock:   # back in front of newer rows, for the next try
                    self._pending.extendleft(reversed(batch))
                raise

    def close(self) -> None:
        """Stop flushing in the background and write what is left. A write that fails here (a full disk, a
        store gone) is a warning and its rows are counted in `dropped`: a search never fails for its log."""
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        try:
            self.flush()
        except Exception as exc:
            with self._lock:
                lost, self.dropped = len(self._pending), self.dropped + len(self._pending)
                self._pending.clear()
            log.warning("search_log: %d rows not written: %s", lost, exc)
