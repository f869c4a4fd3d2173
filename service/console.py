"""The page's SQL console and dashboards: SQL from the network, run as an analyst's (Collection.analyst_stream,
under the analyst policy that `serve`'s ClickHouse port also uses: clipsearch.analyst.policy's check of the
statement, then a read-only session within its limits)."""
from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator
from typing import Any

from clipsearch.analyst.policy import AnalystPolicy
from clipsearch.collection import Collection
from clipsearch.errors import QueryError

PLACEHOLDER = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*([^{}]+?)\s*\}")
# What one console result may hold in the service's memory: the policy's bounds on a result held whole (the
# engine counts its own bytes; these count what the service keeps).
MAX_RESULT_BYTES: int = AnalystPolicy.HELD_RESULT_LIMITS["max_result_bytes"]
MAX_RESULT_ROWS: int = AnalystPolicy.HELD_RESULT_LIMITS["max_result_rows"]


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The lines of a streamed result, at most MAX_RESULT_BYTES of it: past that a clear refusal."""
    size, rest = 0, b""
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_RESULT_BYTES:
            raise QueryError(f"the result is larger than {MAX_RESULT_BYTES // 2**20} MiB: select fewer rows or "
                             "columns (LIMIT), or query the ClickHouse port, which streams")
        *lines, rest = (rest + chunk).split(b"\n")
        yield from lines
    if rest:
        yield rest


def run(collection: Collection, sql: str, params: dict | None, max_rows: int) -> dict:
    """The result as {columns: [{name, type}], rows (at most max_rows), row_count, truncated, elapsed_ms,
    rows_read}: what POST /api/sql answers. The engine streams it; rows past max_rows are counted, not kept."""
    start = time.perf_counter()
    lines = _lines(collection.analyst_stream(sql, params or None, "JSONCompactEachRowWithNamesAndTypes"))
    names = json.loads(next(lines, b"[]"))
    types = json.loads(next(lines, b"[]"))
    rows: list[list] = []
    row_count = 0
    for line in lines:
        if not line.strip():
            continue
        if not line.startswith(b"["):   # a server writes an error met mid-result as text after the rows
            raise QueryError(_error_after_rows(line, lines))
        row_count += 1
        if row_count > MAX_RESULT_ROWS:
            raise QueryError(f"the result has more than {MAX_RESULT_ROWS:,} rows: add a LIMIT")
        if len(rows) < max_rows:
            rows.append(json.loads(line))
    columns = [{"name": n, "type": t} for n, t in zip(names, types, strict=True)]
    # rows_read (ClickHouse's statistics) is not part of a streamed row format: 0, which the page leaves out
    return {"columns": columns, "rows": rows, "row_count": row_count, "truncated": row_count > max_rows,
            "elapsed_ms": round((time.perf_counter() - start) * 1000, 2), "rows_read": 0}


def _error_after_rows(line: bytes, lines: Iterator[bytes]) -> str:
    """The message of an error a server wrote after rows: the `Code: ...` line, also from between the
    `__exception__` markers ClickHouse 25.11 and the served port put around it (a few lines at most)."""
    text = b"\n".join([line, *itertools.islice(lines, 20)]).decode("utf-8", "replace")
    found = re.search(r"Code: \d+\..*", text)
    return found.group(0).strip() if found else line.decode("utf-8", "replace").strip()


def csv(collection: Collection, sql: str, params: dict | None) -> str:
    """The whole result as CSV with a header row (at most MAX_RESULT_BYTES)."""
    return b"\n".join(_lines(collection.analyst_stream(sql, params or None, "CSVWithNames"))).decode() + "\n"


def shipped_queries() -> list[dict[str, Any]]:
    """The analyst queries of sql/queries: name, sql, description (the leading -- lines) and the
    {name:Type} parameters they take."""
    from clipsearch.sql import query_names, read
    out = []
    for name in query_names():
        text = read(f"queries/{name}")
        description = []
        for line in text.splitlines():
            if not line.startswith("--"):
                break
            description.append(line[2:].strip())
        params: dict[str, str] = {}
        for pname, ptype in PLACEHOLDER.findall(text):
            params.setdefault(pname, ptype)
        out.append({"name": name, "sql": text, "description": " ".join(description),
                    "params": [{"name": n, "type": t} for n, t in params.items()]})
    return out
