"""The page's SQL console and dashboards: SQL from the network, run in the collection's read-only session
(Collection.analyst_sql: readonly=1, time, memory and result-row limits), after a check of its own.

readonly=1 alone still lets a query read the server's files and network on the embedded engine: the
scalar function file('/etc/passwd'), `SELECT ... INTO OUTFILE` (which writes a file), DESCRIBE of a table
function (url(), s3(), file(): it fetches the source to infer its columns) and KILL QUERY. So ClickHouse
parses the SQL first (formatQuery: one statement, comments gone, strings and names in one spelling) and
the console refuses what is not one query that returns rows, INTO OUTFILE, and any call of a table function
that reads outside the database (every table function but SAFE_TABLE_FUNCTIONS) or of file().
"""
from __future__ import annotations

import json
import re
import threading
import time
import weakref
from typing import Any

from ..collection import Collection
from ..errors import QueryError, StoreError

ROW_STATEMENTS = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"}
# Table functions that read only the database or their own arguments; every other one the engine knows
# (file, url, s3, remote, mysql, executable, python, ...) is refused, and so is a new one an upgrade adds.
SAFE_TABLE_FUNCTIONS = {"numbers", "numbers_mt", "zeros", "zeros_mt", "primes", "generate_series", "generateSeries",
                        "generateRandom", "values", "SQLStandardValues", "null", "format", "input", "merge", "view",
                        "viewIfPermitted", "viewExplain", "loop", "dictionary", "mergeTreeIndex",
                        "mergeTreeProjection", "mergeTreeAnalyzeIndexes", "mergeTreeAnalyzeIndexesUUID",
                        "mergeTreeCodecBlockCounts", "mergeTreeTextIndex", "fuzzJSON", "fuzzQuery"}
# What formatQuery writes: strings '...' and quoted names `...` (backslash escapes in both).
QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|`((?:[^`\\]|\\.)*)`|\"((?:[^\"\\]|\\.)*)\"", re.S)
PLACEHOLDER = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*([^{}]+?)\s*\}")
_denied: weakref.WeakKeyDictionary[Collection, set[str]] = weakref.WeakKeyDictionary()
_denied_lock = threading.Lock()


def _denied_functions(collection: Collection) -> set[str]:
    """The engine's table functions that are not SAFE_TABLE_FUNCTIONS, lower case, and file."""
    with _denied_lock:
        if collection not in _denied:
            names = {r["name"] for r in collection.analyst_sql("SELECT name FROM system.table_functions")}
            _denied[collection] = {n.lower() for n in names - SAFE_TABLE_FUNCTIONS} | {"file"}  # also a function
        return _denied[collection]


def check(collection: Collection, sql: str) -> str:
    """`sql` as ClickHouse formats it, if the console may run it; else a QueryError that says why."""
    if not sql.strip():
        raise QueryError("empty SQL")
    try:
        formatted = collection.analyst_sql("SELECT formatQuery({q:String}) AS f", {"q": sql})[0]["f"]
    except StoreError as exc:  # ClickHouse's parser: the message and position refer to `sql` itself
        raise StoreError(re.sub(r"\s*:?\s*In scope SELECT formatQuery\(.*$", "", str(exc), flags=re.S)) from None
    code = QUOTED.sub(lambda m: m.group(1) if m.group(1) is not None else
                      m.group(2) if m.group(2) is not None else "''", formatted)
    first = re.match(r"[\s(]*([A-Za-z]+)", code)
    if not first or first.group(1).upper() not in ROW_STATEMENTS:
        raise QueryError("the console runs one query that returns rows: SELECT, WITH, SHOW, DESCRIBE, EXPLAIN or "
                         "EXISTS (the session is read-only)")
    if re.search(r"\bINTO\s+OUTFILE\b", code, re.I):
        raise QueryError("INTO OUTFILE is not allowed here (it writes a file on the server); use the CSV download")
    for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(", code):
        if name.lower() in _denied_functions(collection):
            raise QueryError(f"{name}() reads files or the network from the server and is not allowed here")
    if re.search(r"^FORMAT\s+\w+\s*$", code, re.M):
        raise QueryError("leave out FORMAT: the console asks for JSON (and CSV for the download) itself")
    return formatted


def run(collection: Collection, sql: str, params: dict | None, max_rows: int) -> dict:
    """The result as {columns: [{name, type}], rows (at most max_rows), row_count, truncated, elapsed_ms,
    rows_read}: what POST /api/sql answers."""
    start = time.perf_counter()
    check(collection, sql)
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
    check(collection, sql)
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
