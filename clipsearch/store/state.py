"""The table state a search reads (TableState): read in one round trip, then served from memory until the
connection writes (or, on a server, STATE_TTL_S passes)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from clipsearch.store.connection import Backend, Connection
from clipsearch.store.indexes import (
    FILTER_COLUMN,
    FILTER_PROJECTIONS,
    RESCORE_FETCH,
    VECTOR_INDEXES,
    index_quantization,
)

# The table state a search reads is cached until its connection writes (Connection.writes) or, on a ClickHouse
# server, this many seconds pass: the time other clients of a server take to be seen. Reading it costs 10-14 ms
# at 1M rows.
STATE_TTL_S = 1.0


@dataclass(frozen=True)
class TableState:
    """What a search needs to know of `images` (StateCache.read)."""
    columns: dict[str, str]        # name -> ClickHouse type, in table order
    models: list[str]              # the models whose vectors it holds (at most 3 read)
    rows: int
    vector_index: bool             # an HNSW index exists
    filter_columns: list[str]      # columns with a sorted copy (projection) for selective filters
    beam: int | None               # the tuned HNSW search beam, if tuned
    rescore: int                   # for a coarse index quantization: how many candidates to re-rank, x k
    image_beam: int | None = None  # the tuned beam for image queries ("more like this", an uploaded image)
    granule: int = 8192            # rows per granule (what a selective filter reads per matching row)
    exact_ms_per_row: float = 0.0  # measured when tuned (0: not measured): an exact ranking's cost per row
    index_ms: float = 0.0          # ...and an index search's at `beam`
    videos: bool = False           # some rows are moments of videos (a search keeps each video's best)


STATE_SQL = (
    "SELECT (SELECT groupArray((position, name, type)) FROM system.columns "
    "        WHERE database = currentDatabase() AND table = 'images') AS columns, "
    "       (SELECT groupUniqArray(3)(model) FROM images) AS models, "
    "       (SELECT count() FROM images) AS rows, "
    f"       (SELECT groupArray({FILTER_COLUMN}) {FILTER_PROJECTIONS}) AS filter_columns, "
    "       (SELECT argMax((beam, image_beam, rows, exact_ms, index_ms), tuned_at) FROM vector_index_tuning "
    f"        WHERE index_type IN (SELECT type_full {VECTOR_INDEXES})) AS tuning, "
    "       (SELECT intDiv(sum(rows), greatest(1, sum(marks) - count())) FROM system.parts "
    "        WHERE database = currentDatabase() AND table = 'images' AND active) AS granule, "
    f"       (SELECT any(type_full) {VECTOR_INDEXES}) AS index_type, "
    "       (SELECT count() FROM (SELECT 1 FROM images WHERE media = 'video' LIMIT 1)) AS videos")


class StateCache:
    """`images`' TableState, cached for one connection."""

    def __init__(self, connection: Connection):
        self._connection = connection
        self._state: tuple[int, float, TableState] | None = None   # (writes count, when, state)

    def read(self) -> TableState:
        """What a search needs to know of `images`: columns, models, rows, vector index. Read in one round
        trip, then served from memory until a write or STATE_TTL_S."""
        writes, now = self._connection.writes.count, time.monotonic()   # read first: a write while reading invalidates
        # an embedded store is written by this process alone (it holds the folder's lock): its writes say it all
        alone = self._connection.backend == Backend.EMBEDDED
        if self._state is not None and self._state[0] == writes and (alone or now - self._state[1] < STATE_TTL_S):
            return self._state[2]
        row = self._connection.query(STATE_SQL)[0]
        beam, image_beam, tuned_rows, exact_ms, index_ms = row["tuning"]
        state = TableState(columns={name: ch_type for _, name, ch_type in sorted(row["columns"])},
                           models=sorted(row["models"]), rows=int(row["rows"]), vector_index=bool(row["index_type"]),
                           filter_columns=sorted(row["filter_columns"]), beam=int(beam) or None,
                           rescore=RESCORE_FETCH.get(index_quantization(row["index_type"]), 0),
                           image_beam=int(image_beam) or None, granule=max(1, int(row["granule"]) or 8192),
                           exact_ms_per_row=float(exact_ms) / int(tuned_rows) if int(tuned_rows) else 0.0,
                           index_ms=float(index_ms), videos=bool(int(row["videos"])))
        self._state = (writes, now, state)
        return state

    def forget(self) -> None:
        """Read the table state afresh at the next search (another process changed it)."""
        self._state = None
