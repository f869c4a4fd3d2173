"""What read-only SQL may run, and the exact text that runs: `readonly = 1` is not enough on its own.

On the embedded engine readonly=1 still lets a query read the server's files: the scalar function
file('/etc/passwd'), `SELECT ... INTO OUTFILE` (which writes a file), DESCRIBE of a table function (it
fetches the source to infer its columns), KILL QUERY, SHOW PROCESSLIST and the system tables that hold
other sessions' SQL (every session is the engine's one user); and chdb runs several statements sent in
one call. So ClickHouse's own parser formats the SQL first (formatQuery: one statement, comments gone,
strings and names in one spelling) and `check` judges that formatted text, which is then what runs:

- the text reaches the parser hex-encoded, so no escape rule of a parameter value changes a byte of it;
- the formatted text must format to itself, so the engine parses exactly what was judged;
- what is judged: one query that returns rows, no INTO OUTFILE, no table function that reads outside the
  database (every one but SAFE_TABLE_FUNCTIONS, so also one an upgrade adds), no file(), and only the
  system tables in SYSTEM_TABLES (metadata; never processes, logs or errors) however the statement names
  them (system.t, or SHOW ... FROM t FROM system), no Identifier parameter (its value, bound after the
  check, could name any table), no name holding '/' (the embedded engine's default database answers for
  a file by its path: EXISTS TABLE of the name /etc/shadow would tell whether it exists) and no internal
  function of clipsearch's (INTERNAL_PREFIX: clipTextEmbedding's Python function).

Every read-only path runs it, through the analyst policy (clipsearch.analyst.policy.AnalystPolicy.check):
the library's analyst_sql (the page's SQL tab) and the analyst logins of `serve`'s ClickHouse HTTP port.
The engine's own guards beside it: sql/README.md#what-analysts-may-run.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from clipsearch.errors import QueryError, StoreError, StoreUnavailable

RunQuery = Callable[[str, dict], list[dict]]   # SQL and parameters -> rows, in a read-only session
MAX_SQL_CHARS = 100_000   # an analyst's query; ClickHouse parses at most 256 KiB
MAX_NAME_CHARS = 1024     # a column or alias name

ROW_STATEMENTS = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"}
# Table functions that read only their own arguments or a query the check sees; every other one the engine
# knows (file, url, s3, remote, executable, python; merge, loop and mergeTree*, which name a table by
# database and table, e.g. loop(system, processes)) is refused, and so is a new one an upgrade adds.
SAFE_TABLE_FUNCTIONS = {"numbers", "numbers_mt", "zeros", "zeros_mt", "primes", "generate_series", "generateSeries",
                        "generateRandom", "values", "SQLStandardValues", "null", "format", "view", "viewIfPermitted",
                        "viewExplain", "fuzzJSON", "fuzzQuery"}
# System tables that describe the schema and the engine, not other sessions: what clients' metadata
# queries (clickhouse-connect, SQLAlchemy, Grafana, Superset, DBeaver) and analysts read.
SYSTEM_TABLES = {"one", "numbers", "numbers_mt", "zeros", "zeros_mt", "databases", "tables", "columns",
                 "data_skipping_indices", "projections", "parts", "parts_columns", "detached_parts", "dictionaries",
                 "functions", "table_functions", "aggregate_function_combinators", "formats", "data_type_families",
                 "table_engines", "database_engines", "settings", "merge_tree_settings", "server_settings",
                 "build_options", "time_zones", "collations", "contributors", "licenses", "keywords", "privileges",
                 "current_roles", "enabled_roles", "grants", "users", "disks", "storage_policies"}
# Statements the check refuses whatever they read: the SQL of every session, to everyone.
REFUSED_SHOW = re.compile(r"^\s*SHOW\s+(FULL\s+)?PROCESSLIST\b", re.I)
# What formatQuery writes: strings '...' and quoted names `...` (backslash escapes in both).
QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|`((?:[^`\\]|\\.)*)`|\"((?:[^\"\\]|\\.)*)\"", re.S)
NAME = r"(?:[A-Za-z_][A-Za-z0-9_]*)"
SYSTEM_TABLE = re.compile(rf"\bsystem\s*\.\s*({NAME})", re.I)
# SHOW COLUMNS / INDEXES / KEYS FROM <table> FROM|IN system: a system table named apart from its database
SHOW_FROM_SYSTEM = re.compile(rf"\b(?:FROM|IN)\s+({NAME})\s+(?:FROM|IN)\s+system\b", re.I)
# clipsearch's own functions behind the ones analysts call (clipTextEmbedding's Python function, whose
# arguments include the query's start and time limit): never called directly
INTERNAL_PREFIX = "clipsearch_"
# formatQuery puts the FORMAT clause on a line of its own, before or after a SETTINGS clause (strings and
# names never hold a raw newline there, and a column named FORMAT is never alone on its line)
FORMAT_CLAUSE = re.compile(r"^FORMAT (\w+)$", re.M)


def denied_functions(run: RunQuery) -> set[str]:
    """The engine's table functions that are not SAFE_TABLE_FUNCTIONS, lower case, and file."""
    names = {r["name"] for r in run("SELECT name FROM system.table_functions", {})}
    return {n.lower() for n in names - SAFE_TABLE_FUNCTIONS} | {"file"}  # file() is also a scalar function


def formatted(run: RunQuery, sql: str) -> str:
    """`sql` as ClickHouse's parser formats it. The text goes to the parser hex-encoded: a parameter's value
    has its backslash escapes decoded, hex has none, so the parser reads these bytes exactly."""
    try:
        return str(run("SELECT formatQuery(unhex({q:String})) AS f", {"q": sql.encode("utf-8").hex()})[0]["f"])
    except StoreUnavailable:
        raise
    except StoreError as exc:  # ClickHouse's parser: the message and position refer to `sql` itself
        message = str(exc)
        name = re.search(r" \((\w+)\)\s*$", message)   # the error's name, e.g. (SYNTAX_ERROR), kept
        message = re.sub(r"\s*:?\s*In scope SELECT formatQuery\(.*$", "", message, flags=re.S)
        raise StoreError(message + (f" ({name.group(1)})" if name and not message.endswith(")") else "")) from None


def check(run: RunQuery, sql: str, denied: set[str]) -> str:
    """The text to run for `sql`, if a read-only session may run it (ClickHouse's formatting of it, which
    is what this judged); else a QueryError saying why."""
    if not sql.strip():
        raise QueryError("empty SQL")
    if len(sql) > MAX_SQL_CHARS:
        raise QueryError(f"the SQL is {len(sql):,} characters; at most {MAX_SQL_CHARS:,} here")
    if "\0" in sql:
        raise QueryError("the SQL contains a NUL character")
    text = formatted(run, sql)
    if formatted(run, text) != text:   # parsed again it must mean the same: then what runs is what was judged
        raise QueryError("this SQL could not be checked (ClickHouse formats it differently each time)")
    code = QUOTED.sub(lambda m: m.group(1) if m.group(1) is not None else
                      m.group(2) if m.group(2) is not None else "''", text)
    first = re.match(r"[\s(]*([A-Za-z]+)", code)
    if not first or first.group(1).upper() not in ROW_STATEMENTS:
        raise QueryError("read-only SQL is one query that returns rows: SELECT, WITH, SHOW, DESCRIBE, EXPLAIN or "
                         "EXISTS (the session is read-only)")
    if REFUSED_SHOW.match(code):
        raise QueryError("SHOW PROCESSLIST is not allowed here (it shows other sessions' SQL)")
    if re.search(r"\bINTO\s+OUTFILE\b", code, re.I):
        raise QueryError("INTO OUTFILE is not allowed here (it writes a file on the server)")
    for name in re.findall(rf"({NAME})\s*\(", code):
        if name.lower().startswith(INTERNAL_PREFIX):
            raise QueryError(f"{name}() is internal to clipsearch; call clipTextEmbedding(text)")
        if name.lower() in denied:
            raise QueryError(f"{name}() reads files or the network from the server and is not allowed here")
    if re.search(rf"[^\s(),'.]{{{MAX_NAME_CHARS + 1},}}", code):   # a format may repeat a name on every row
        raise QueryError(f"a name of more than {MAX_NAME_CHARS} characters is not allowed here")
    if re.search(r"\{\s*\w+\s*:\s*Identifier\s*\}", code):   # bound after this check: it could name any table
        raise QueryError("Identifier parameters are not allowed here: write table and column names in the SQL")
    paths = [m.group(1) or m.group(2) for m in QUOTED.finditer(text) if "/" in (m.group(1) or m.group(2) or "")]
    if paths:   # the engine's default database also answers for any file by its path (EXISTS says if it is)
        raise QueryError(f"a name with '/' (a file path, such as `{paths[0][:100]}`) is not allowed here")
    for table in SYSTEM_TABLE.findall(code) + SHOW_FROM_SYSTEM.findall(code):
        if table not in SYSTEM_TABLES:
            raise QueryError(f"system.{table} is not readable here (it may hold other sessions' SQL); the system "
                             f"tables that are: {', '.join(sorted(SYSTEM_TABLES))}")
    return text


def output_format(text: str) -> str | None:
    """The FORMAT clause of a formatted query, if it has one."""
    found = FORMAT_CLAUSE.findall(text)
    return found[-1] if found else None
