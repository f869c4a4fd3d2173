"""The store's rule: statements that change a table run only in clipsearch/store/; everywhere else reads
through Catalog.query / Catalog.text, which run one reading statement and refuse anything else."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from clipsearch.errors import QueryError
from clipsearch.sql import read as read_sql
from clipsearch.store.catalog import one_read

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = [ROOT / "clipsearch", ROOT / "service", ROOT / "loader"]
STORE = ROOT / "clipsearch" / "store"


@pytest.mark.parametrize("sql", [
    "SELECT 1", "SELECT 1;", "SELECT 1; -- done\n", "SELECT ';' AS semicolon", "-- a; b\nSELECT 1",
    "WITH a AS (SELECT 1 AS x) SELECT x FROM a", "(SELECT 1)", "EXPLAIN indexes = 1 SELECT 1",
    read_sql("queries/near_copy_pairs.sql")])
def test_one_reading_statement_runs(sql):
    assert one_read(sql) == sql


@pytest.mark.parametrize("sql", [
    "DELETE FROM images WHERE 1", "INSERT INTO images SELECT * FROM images", "ALTER TABLE images DELETE WHERE 1",
    "DROP TABLE images", "SELECT 1; DROP TABLE images", "SELECT 1 /* ; */; TRUNCATE TABLE images",
    "SELECT '1;'; DELETE FROM images WHERE 1"])
def test_a_write_or_a_second_statement_is_refused(sql):
    with pytest.raises(QueryError):
        one_read(sql)


def test_only_the_store_writes():
    """No module outside clipsearch/store/ reaches the connection's writing calls; the owner's SQL is run by
    Collection.sql alone (`clipsearch sql`)."""
    holders = {"connection", "_connection", "catalog", "_catalog"}
    found = []
    for folder in LIBRARY:
        for path in folder.rglob("*.py"):
            if STORE in path.resolve().parents:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Attribute) or node.attr not in ("command", "insert", "owner_sql"):
                    continue
                holder = node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", "")
                where = f"{path.relative_to(ROOT)}:{node.lineno}: {holder}.{node.attr}"
                if holder in holders and where != f"clipsearch/collection.py:{node.lineno}: catalog.owner_sql":
                    found.append(where)
    assert found == [], found


@pytest.mark.parametrize("value", ["a\u2028b", "a\u2029b", "a\x85b", "a\x1cb\x1db\x1eb", "line\nbreak"])
def test_rows_holding_line_separators_of_other_kinds_come_back_whole(store, value):
    """JSONEachRow puts one row per "\\n"; Python's splitlines would also cut at U+2028, U+0085 and the
    file/group/record separators inside a value (a fuzzed manifest's title did)."""
    assert store.query("SELECT {v:String} AS v, 2 AS n", {"v": value}) == [{"v": value, "n": 2}]
    assert store.connection.query("SELECT {v:String} AS v", {"v": value}) == [{"v": value}]
