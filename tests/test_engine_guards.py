"""The engine's own guards, without clipsearch.analyst.readonly's check in front: what ClickHouse itself refuses in a
read-only session of the embedded store (defence in depth), and the check's exactness (what runs is what
it judged)."""
from __future__ import annotations

import pytest

from clipsearch.analyst import readonly
from clipsearch.analyst.policy import AnalystPolicy
from clipsearch.errors import QueryError, StoreError
from clipsearch.store.connection import EmbeddedConnection, uncompressed_cache_bytes


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    writer = EmbeddedConnection(tmp_path_factory.mktemp("guards") / "db")
    writer.command("CREATE TABLE t (a String) ENGINE = MergeTree ORDER BY a")
    writer.command("INSERT INTO t VALUES ('x')")
    reader = writer.read_only(AnalystPolicy().page_settings())
    yield writer, reader
    reader.close()
    writer.close()


@pytest.mark.parametrize("sql", [
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT * FROM `/etc/passwd`",
    "INSERT INTO t VALUES ('y')",
    "CREATE TEMPORARY TABLE tmp (a Int8)",
    "SELECT 1 SETTINGS max_execution_time = 1000",
    "SET readonly = 0",
])
def test_a_read_only_session_refuses_it_without_the_check(sessions, sql):
    _, reader = sessions
    with pytest.raises(StoreError, match="readonly|READONLY|read-only"):
        reader.query(sql)


@pytest.mark.parametrize("sql", [
    "SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')",
    "SELECT * FROM s3('http://127.0.0.1:9/bucket/x.csv', 'LineAsString')",
    "SELECT * FROM remote('127.0.0.1:9000', system.one)",
])
def test_no_session_may_reach_the_network(sessions, sql):
    """The grants of sql/engine/users.xml bind the writable session too."""
    writer, _ = sessions
    with pytest.raises(StoreError, match="Not enough privileges|ACCESS_DENIED"):
        writer.query(sql)


def test_what_runs_is_what_was_checked(sessions):
    """A parameter's value has its escapes decoded (`\\\\` -> `\\`): sent that way, the check once read
    `'x\\\\', file(...) -- '` as one string. Hex-encoded, the parser sees these bytes; the check returns the
    formatted text, which formats to itself, and that text is what runs."""
    _, reader = sessions
    denied = readonly.denied_functions(reader.query)
    sneaky = "SELECT 'x\\\\', file('/etc/passwd') AS f -- '"
    with pytest.raises(QueryError, match=r"file\(\)"):
        readonly.check(reader.query, sneaky, denied)
    text = readonly.check(reader.query, "SELECT 'x\\\\' AS a, 'tab\there' AS b -- c\n", denied)
    assert readonly.formatted(reader.query, text) == text
    assert reader.query(text) == [{"a": "x\\", "b": "tab\there"}]


def test_the_engine_keeps_a_cache_of_decompressed_blocks_for_searches(sessions):
    """chdb's default has none: every search would decompress a block of each shown column per row."""
    writer, _ = sessions
    size = writer.query("SELECT value FROM system.server_settings WHERE name = 'uncompressed_cache_size'")
    assert size == [{"value": str(uncompressed_cache_bytes())}] and 0 < uncompressed_cache_bytes() <= 2 << 30
