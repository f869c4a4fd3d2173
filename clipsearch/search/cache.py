"""What a search reuses: text vectors per model, and whole results until the store is written.

Popular searches repeat (a shop's "red dress", a family's "beach"): encoding the text again costs 4-5 ms with
the bundled model and more with a real one, and the ranking SQL as much again. A result is kept under the
connection's write count read before the search ran (Connection.writes: every load, delete, label run, model
switch and analyst write through this process counts), so a write made while it ran leaves it unused; on a
ClickHouse server, which other clients also write, a result is used for STATE_TTL_S at most, as the table
state is. Searches by an uploaded image are not kept (its pixels would be the key).
"""
from __future__ import annotations

import copy
import json
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
from cachetools import LRUCache

from clipsearch.store.state import STATE_TTL_S

TEXTS_PER_MODEL = 4096            # text vectors kept per model (2 KB each at 512 dimensions)
MAX_BATCH = 64                    # texts encoded in one pass
RESULT_BYTES = 64 * 1024 * 1024   # results kept, by the size of their rows as JSON
ROW_BYTES = 32 * 1024 * 1024      # rows' shown columns kept (Rows), by their size as JSON


def _result_bytes(entry: tuple[int, float, Any]) -> int:
    return len(json.dumps(entry[2].rows, default=str))


class _ModelTexts:
    """One model's kept vectors, the texts searches wait for, and its one batch at a time."""

    def __init__(self, size: int):
        self.kept: LRUCache = LRUCache(size)
        self.waiting: dict[str, None] = {}   # texts asked for and not encoded yet, in order
        self.encoding = threading.Lock()


class TextVectors:
    """Each model's recent text vectors: `encode` encodes only the texts it has not seen. Those are encoded one
    batch at a time per model: the searches that arrive while a batch runs wait, and the next batch encodes
    all their texts in one pass (one pass of several texts costs far less than a pass each, and passes side by
    side would only share the cores)."""

    def __init__(self, size: int = TEXTS_PER_MODEL):
        self.size = size
        self._lock = threading.Lock()   # the kept vectors and the waiting texts
        self._models: weakref.WeakKeyDictionary[Any, _ModelTexts] = weakref.WeakKeyDictionary()

    def encode(self, model: Any, texts: list[str]) -> np.ndarray:
        if not self.size:
            return model.encode_texts(texts)
        with self._lock:
            m = self._models.setdefault(model, _ModelTexts(self.size))
            known = {t: m.kept[t] for t in texts if t in m.kept}
            missing = list(dict.fromkeys(t for t in texts if t not in known))
            m.waiting.update(dict.fromkeys(missing))
        while missing:
            with m.encoding:
                with self._lock:   # another search's batch may have encoded them meanwhile
                    known.update({t: m.kept[t] for t in missing if t in m.kept})
                    missing = [t for t in missing if t not in known]
                    others = [t for t in m.waiting if t not in missing][:max(0, MAX_BATCH - len(missing))]
                    batch = missing + others if missing else []
                    for t in batch:
                        m.waiting.pop(t, None)
                if not batch:
                    break
                vectors = model.encode_texts(batch)
                with self._lock:
                    for text, vector in zip(batch, vectors, strict=True):
                        m.kept[text] = np.array(vector, dtype=np.float32)   # a copy no caller can change
                    known.update({t: m.kept[t] for t in missing if t in m.kept})
                    missing = [t for t in missing if t not in known]
        return np.stack([known[t] for t in texts])


class Results:
    """Recent searches' results by their inputs, each valid while the store is unwritten."""

    def __init__(self, max_bytes: int = RESULT_BYTES, ttl_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic, copier: Callable[[Any], Any] = copy.deepcopy):
        self.ttl_s = ttl_s   # None: only this process writes the store (an embedded folder it holds)
        self._clock = clock
        self._copy = copier   # a copy a caller may change: what it changes (rows) must be its own
        self._lock = threading.Lock()
        self._cache: LRUCache | None = LRUCache(max_bytes, getsizeof=_result_bytes) if max_bytes else None

    def get(self, key: Hashable | None, writes: int) -> Any | None:
        """A copy of the result kept for `key`, if it was made at `writes` (and within the TTL)."""
        if self._cache is None or key is None:
            return None
        with self._lock:
            entry = self._cache.get(key)
        if entry is None or not _current(entry, writes, self._clock(), self.ttl_s):
            return None
        return self._copy(entry[2])

    def put(self, key: Hashable | None, writes: int, result: Any) -> None:
        if self._cache is None or key is None:
            return
        entry = (writes, self._clock(), self._copy(result))
        with self._lock:
            try:
                self._cache[key] = entry
            except ValueError:   # larger than the whole cache: not kept
                pass


class Rows:
    """Rows' shown columns by id, each valid while the store is unwritten (and within the TTL, as Results):
    a page ranked by ids reads only the rows not kept here. Popular pictures come back for many searches."""

    def __init__(self, max_bytes: int = ROW_BYTES, ttl_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.ttl_s, self._clock = ttl_s, clock
        self._lock = threading.Lock()
        self._cache: LRUCache | None = LRUCache(max_bytes, getsizeof=lambda entry: entry[2]) if max_bytes else None

    @property
    def on(self) -> bool:
        return self._cache is not None

    def get(self, ids: list[str], writes: int) -> dict[str, dict]:
        """The kept rows of `ids` made at `writes`, each a copy a caller may change."""
        if self._cache is None:
            return {}
        now, found = self._clock(), {}
        with self._lock:
            for i in ids:
                entry = self._cache.get(i)
                if entry is not None and _current(entry, writes, now, self.ttl_s):
                    found[i] = entry[3]
        return {i: _row_copy(row) for i, row in found.items()}

    def clear(self) -> None:
        if self._cache is not None:
            with self._lock:
                self._cache.clear()

    def put(self, rows: dict[str, dict], writes: int) -> None:
        if self._cache is None:
            return
        now = self._clock()
        entries = {i: (writes, now, len(json.dumps(row, default=str)), _row_copy(row)) for i, row in rows.items()}
        with self._lock:
            for i, entry in entries.items():
                try:
                    self._cache[i] = entry
                except ValueError:   # larger than the whole cache: not kept
                    pass


def _current(entry: tuple, writes: int, now: float, ttl_s: float | None) -> bool:
    """Whether a kept entry (write count, time kept, ...) still holds: made at `writes`, within the TTL."""
    return entry[0] == writes and (ttl_s is None or now - entry[1] <= ttl_s)


def _row_copy(row: dict) -> dict:
    """A row whose lists and dicts (array and map columns) are its own: a caller may change them."""
    return {k: copy.deepcopy(v) if isinstance(v, (list, dict)) else v for k, v in row.items()}


def result_ttl(embedded: bool) -> float | None:
    return None if embedded else STATE_TTL_S
