"""The database's schema version: a new database is made by sql/schema.sql at the latest version; one made
by an earlier release is brought up to it by the numbered files of sql/migrations/, in order, each recorded
in `schema_version` as it is applied. Opening a current database runs one query, not the whole schema.

A migration is `NNN_what.sql` (statements that are safe to run twice: two processes may open an old
database at the same moment); the latest version is the number of the last one. schema.sql's CREATE TABLE
IF NOT EXISTS statements run first in every upgrade, so a new table needs only a version (a file of
comments); a changed table needs its ALTERs.
"""
from __future__ import annotations

import re
from importlib.resources import files

from clipsearch.errors import StoreError
from clipsearch.sql import read as read_sql
from clipsearch.store.connection import Connection, sql_statements


def migrations() -> list[tuple[int, str]]:
    """(version, file name) of sql/migrations/, in order."""
    names = [p.name for p in files("clipsearch.sql").joinpath("migrations").iterdir() if p.name.endswith(".sql")]
    found = sorted((int(m.group(1)), name) for name in names if (m := re.match(r"(\d{3})_\w+\.sql$", name)))
    if [v for v, _ in found] != list(range(1, len(found) + 1)):
        raise StoreError(f"sql/migrations/ must be numbered 001, 002, ... without gaps: {[n for _, n in found]}")
    return found


def latest() -> int:
    return len(migrations())


def version(connection: Connection) -> int | None:
    """The schema version of the database: None if it is empty, 0 if made before versions were recorded."""
    tables = {r["name"] for r in connection.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() "
        "AND name IN ('schema_version', 'images')")}
    if "schema_version" in tables:
        return int(connection.query("SELECT max(version) AS v FROM schema_version")[0]["v"])
    return 0 if "images" in tables else None


def ensure(connection: Connection) -> int:
    """Bring the database to the latest schema (making it if empty); the version it had."""
    had = version(connection)
    target = latest()
    if had == target:
        return had
    if had is not None and had > target:
        raise StoreError(f"this database has schema version {had}, made by a newer clipsearch than this one "
                         f"(which knows up to {target}): upgrade clipsearch")
    for statement in sql_statements(read_sql("schema.sql")):   # every table, IF NOT EXISTS
        connection.command(statement)
    record = "INSERT INTO schema_version (version, note) VALUES ({v:UInt32}, {note:String})"
    if had is None:
        connection.command(record, {"v": target, "note": "made at this version"})
        return 0
    for number, name in migrations()[had:]:
        for statement in sql_statements(read_sql(f"migrations/{name}")):
            connection.command(statement)
        connection.command(record, {"v": number, "note": name})
    return had
