"""The page's SQL console and dashboards: SQL from the network, run in the collection's read-only session
(Collection.analyst_sql: readonly=1, time, memory and result-row limits, and clipsearch.readonly's check of
the statement itself)."""
from __future__ import annotations

import json
import re
import time
from typing import Any

from ..collection import Collection
from ..errors import QueryError

PLACEHOLDER = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*([^{}]+?)\s*\}")


def check(sql: str) -> None:
    """What the console adds to the library's read-only check (clipsearch.readonly, run by analyst_sql)."""
    if re.search(r"(?im)^\s*FORMAT\s+\w+\s*;?\s*$|\sFORMAT\s+\w+\s*;?\s*$", sql):
        raise QueryError("leave out FORMAT: the console asks for JSON (and CSV for the download) itself")


def run(collection: Collection, sql: str, params: dict | None, max_rows: int) -> dict:
    """The result as {columns: [{name, type}], rows (at most max_rows), row_count, truncated, elapsed_ms,
    rows_read}: what POST /api/sql answers."""
    start = time.perf_counter()
    check(sql)
    text = collection.analyst_sql(sql, params or None, fmt="JSONCompact")
    elapsed_ms = round((time.perf_counter() - start) * 1000, 2)
    if not text.strip():
        return {"columns": [], "rows": [], "row_count": 0, "truncated": False, "elapsed_ms": elapsed_ms,
                "rows_read": 0}
    try:
        result = json.loads(text)
    except ValueError:
        raise QueryError("the result could not be read as JSON; run one query at a time") from None
    rows = result.get("data", [])
    return {"columns": [{"name": c["name"], "type": c["type"]} for c in result.get("meta", [])],
            "rows": rows[:max_rows], "row_count": len(rows), "truncated": len(rows) > max_rows,
            "elapsed_ms": elapsed_ms, "rows_read": result.get("statistics", {}).get("rows_read", 0)}


def csv(collection: Collection, sql: str, params: dict | None) -> str:
    """The whole result as CSV with a header row."""
    check(sql)
    return collection.analyst_sql(sql, params or None, fmt="CSVWithNames")


def shipped_queries() -> list[dict[str, Any]]:
    """The analyst queries of sql/queries: name, sql, description (the leading -- lines) and the
    {name:Type} parameters they take."""
    from ..sql import query_names, read
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
