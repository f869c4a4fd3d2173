"""What read-only SQL may run: `readonly = 1` is not enough on its own.

On the embedded engine readonly=1 still lets a query read the server's files and network: the scalar
function file('/etc/passwd'), `SELECT ... INTO OUTFILE` (which writes a file), DESCRIBE of a table
function (url(), s3(), file(): it fetches the source to infer its columns) and KILL QUERY; and chdb runs
several statements sent in one call. So ClickHouse parses the SQL first (formatQuery: one statement,
comments gone, strings and names in one spelling) and `check` refuses what is not one query that returns
rows, INTO OUTFILE, and any call of a table function that reads outside the database (every table function
but SAFE_TABLE_FUNCTIONS, so also one an upgrade adds) or of file(). Every read-only path runs it: the
library's analyst_sql (the page's SQL tab) and the analyst role of `serve`'s ClickHouse HTTP port.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from .errors import QueryError, StoreError

RunQuery = Callable[[str, dict], list[dict]]   # SQL and parameters -> rows, in a read-only session

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


def denied_functions(run: RunQuery) -> set[str]:
    """The engine's table functions that are not SAFE_TABLE_FUNCTIONS, lower case, and file."""
    names = {r["name"] for r in run("SELECT name FROM system.table_functions", {})}
    return {n.lower() for n in names - SAFE_TABLE_FUNCTIONS} | {"file"}  # file() is also a scalar function


def check(run: RunQuery, sql: str, denied: set[str]) -> str:
    """`sql` as ClickHouse formats it, if a read-only session may run it; else a QueryError saying why."""
    if not sql.strip():
        raise QueryError("empty SQL")
    try:
        formatted = run("SELECT formatQuery({q:String}) AS f", {"q": sql})[0]["f"]
    except StoreError as exc:  # ClickHouse's parser: the message and position refer to `sql` itself
        raise StoreError(re.sub(r"\s*:?\s*In scope SELECT formatQuery\(.*$", "", str(exc), flags=re.S)) from None
    code = QUOTED.sub(lambda m: m.group(1) if m.group(1) is not None else
                      m.group(2) if m.group(2) is not None else "''", formatted)
    first = re.match(r"[\s(]*([A-Za-z]+)", code)
    if not first or first.group(1).upper() not in ROW_STATEMENTS:
        raise QueryError("read-only SQL is one query that returns rows: SELECT, WITH, SHOW, DESCRIBE, EXPLAIN or "
                         "EXISTS (the session is read-only)")
    if re.search(r"\bINTO\s+OUTFILE\b", code, re.I):
        raise QueryError("INTO OUTFILE is not allowed here (it writes a file on the server)")
    for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(", code):
        if name.lower() in denied:
            raise QueryError(f"{name}() reads files or the network from the server and is not allowed here")
    return formatted
