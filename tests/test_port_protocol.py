"""The ClickHouse HTTP port as ClickHouse's own clients use it (issue 40): request bodies in every encoding
ClickHouse reads and its own compressed blocks, insert data after FORMAT in the body or after `query=`,
bounds before and after decompression, the response headers, sessions (`session_id`, `session_timeout`,
`session_check`, SESSION_IS_LOCKED), external data; and that none of it reaches the analyst login."""
from __future__ import annotations

import datetime
import gzip
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib

import clickhouse_connect
import lz4.block
import lz4.frame
import pytest
from clickhouse_connect.driver.external import ExternalData
from waitress import create_server

from clipsearch.service import clickhouse_wire as wire
from clipsearch.service.clickhouse_http import ClickHouseHTTP
from clipsearch.store.connection import engine_uri

pytestmark = pytest.mark.slow
WRITER, ANALYST = ("clipsearch", "writer-pw"), ("analyst", "analyst-pw")


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    db = tmp_path_factory.mktemp("port-protocol") / "db"
    app = ClickHouseHTTP(engine_uri(str(db)), writer_password=WRITER[1], analyst_password=ANALYST[1])
    server = create_server(app, host="127.0.0.1", port=0, threads=6, asyncore_use_poll=True)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.effective_port}"
    client = connect(base)
    client.command("CREATE TABLE t (a UInt32, s String, d DateTime, f Array(Float32)) ENGINE = MergeTree ORDER BY a")
    try:
        yield base
    finally:
        app.sessions.close()
        server.close()


def connect(base: str, login: tuple[str, str] = WRITER, **kwargs) -> clickhouse_connect.driver.Client:
    port = int(base.rsplit(":", 1)[1])
    return clickhouse_connect.get_client(host="127.0.0.1", port=port, username=login[0], password=login[1], **kwargs)


def call(base: str, body: bytes | None = None, login: tuple[str, str] = WRITER, headers: dict | None = None,
         **query: str) -> tuple[int, dict, bytes]:
    url = f"{base}/?" + urllib.parse.urlencode({"user": login[0], "password": login[1], **query})
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def rows(base: str, where: str) -> list:
    return connect(base).query(f"SELECT a, s FROM t WHERE {where} ORDER BY a").result_rows


# -- request bodies -------------------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [True, "lz4", "zstd", "gzip", False])
def test_clickhouse_connect_inserts_with_each_compression(port, compress):
    # True is clickhouse-connect's default: lz4 frames, one per block, Native data after the INSERT in the body
    base = 10_000 * (1 + [True, "lz4", "zstd", "gzip", False].index(compress))
    client = connect(port, compress=compress)
    data = [[base + i, f"s{i}", datetime.datetime(2024, 1, 2), [0.5, float(i)]] for i in range(2000)]
    summary = client.insert("t", data, column_names=["a", "s", "d", "f"])
    assert summary.written_rows == 2000
    found = client.query(f"SELECT count(), sum(a - {base}), max(s), sum(f[2]) FROM t "
                         f"WHERE a >= {base} AND a < {base + 10_000}").result_rows
    assert found == [(2000, 1999000, "s999", 1999000.0)]


def test_row_binary_native_csv_in_the_body_or_after_query_in_the_url(port):
    native = connect(port).raw_query("SELECT toUInt32(100 + number) AS a, toString(number) AS s, "
                                     "toDateTime(0) AS d, [1.0]::Array(Float32) AS f FROM numbers(3)", fmt="Native")
    row_binary = connect(port).raw_query("SELECT toUInt32(200 + number) AS a, toString(number) AS s FROM numbers(2)",
                                         fmt="RowBinary")
    assert call(port, b"INSERT INTO t FORMAT Native\n" + native)[0] == 200
    status, headers, _ = call(port, row_binary, query="INSERT INTO t (a, s) FORMAT RowBinary")
    assert status == 200 and json.loads(headers["x-clickhouse-summary"])["written_rows"] == "2"
    assert call(port, gzip.compress(b"INSERT INTO t (s, a) FORMAT CSV\nx,300\ny,301\n"),
                headers={"Content-Encoding": "gzip"})[0] == 200
    assert call(port, zlib.compress(b"(400, 'v')"), query="INSERT INTO t (a, s) VALUES",
                headers={"Content-Encoding": "deflate"})[0] == 200
    assert rows(port, "a BETWEEN 100 AND 400") == [(100, "0"), (101, "1"), (102, "2"), (200, "0"), (201, "1"),
                                                   (300, "x"), (301, "y"), (400, "v")]


def clickhouse_block(data: bytes) -> bytes:
    """One of ClickHouse's compressed blocks (lz4), as `decompress=1` reads them."""
    payload = lz4.block.compress(data, store_size=False)
    header = bytes([0x82]) + (len(payload) + 9).to_bytes(4, "little") + len(data).to_bytes(4, "little")
    return b"\0" * 16 + header + payload


def test_clickhouse_compressed_blocks(port):
    body = clickhouse_block(b"INSERT INTO t (a, s) FORMAT TSV\n500\tp\n") + clickhouse_block(b"501\tq\n")
    assert call(port, body, decompress="1")[0] == 200
    assert rows(port, "a BETWEEN 500 AND 501") == [(500, "p"), (501, "q")]
    status, _, message = call(port, body[:-3], decompress="1")
    assert status == 400 and b"ends inside a compressed block" in message
    status, _, message = call(port, b"\0" * 16 + b"\x33" + b"\0" * 20, decompress="1")
    assert status == 400 and b"CANNOT_DECOMPRESS" in message
    # a block that says it holds more than a block may is refused before anything is allocated for it
    huge = b"\0" * 16 + bytes([0x82]) + (9 + 4).to_bytes(4, "little") + (2**30).to_bytes(4, "little") + b"\0" * 4
    assert call(port, huge, decompress="1")[0] == 413


def test_bombs_garbage_and_unknown_encodings_are_refused_before_the_engine(port):
    from backports import zstd
    before = rows(port, "1")
    bomb = zstd.compress(b"INSERT INTO t (a, s) FORMAT CSV\n" + b"1,x\n" * (80 * 2**20))   # 320 MiB in 30 KB
    assert len(bomb) < 100_000
    status, headers, message = call(port, bomb, headers={"Content-Encoding": "zstd"})
    assert status == 413 and headers["x-clickhouse-exception-code"] == "36", message
    assert b"larger than 268435456 bytes" in message
    assert call(port, b"\x1f\x8b garbage", headers={"Content-Encoding": "gzip"})[:1] == (400,)
    assert call(port, lz4.frame.compress(b"SELECT 1")[:-6], headers={"Content-Encoding": "lz4"})[0] == 400
    status, _, message = call(port, b"SELECT 1", headers={"Content-Encoding": "br"})
    assert status == 415 and b"gzip, deflate, zstd, lz4" in message
    assert rows(port, "1") == before
    # an analyst's SQL is bounded at 1 MiB after decompression too
    status, _, _ = call(port, gzip.compress(b"SELECT 1 " + b" " * 2**21), login=ANALYST,
                        headers={"Content-Encoding": "gzip"})
    assert status == 413
    # compressed SQL is read as SQL
    assert call(port, lz4.frame.compress(b"SELECT 41 + 1"), headers={"Content-Encoding": "lz4"})[2] == b"42\n"


def test_with_insert_runs_as_a_command(port):
    assert call(port, b"WITH 600 AS x INSERT INTO t (a, s) SELECT x, 'w'")[0] == 200
    assert rows(port, "a = 600") == [(600, "w")]
    # with data after FORMAT, and a query parameter in the header
    assert call(port, b"WITH {v:UInt32} AS x INSERT INTO t (s, a) FORMAT TSV\nw2\t601\n", param_v="7")[0] == 200
    assert rows(port, "a = 601") == [(601, "w2")]


# -- headers ---------------------------------------------------------------------------------------------
def test_query_id_summary_format_and_timezone_headers(port):
    status, headers, body = call(port, b"SELECT count() FROM numbers(10)", query_id="my-query-1",
                                 default_format="JSONEachRow", session_timezone="Asia/Tokyo")
    assert status == 200 and body == b'{"count()":"10"}\n'
    assert headers["x-clickhouse-query-id"] == "my-query-1"
    assert headers["x-clickhouse-format"] == "JSONEachRow"
    assert headers["x-clickhouse-timezone"] == "Asia/Tokyo"
    assert set(json.loads(headers["x-clickhouse-summary"])) >= {"read_rows", "written_rows", "elapsed_ns"}
    status, headers, _ = call(port, b"SELECT count() FROM numbers(10) FORMAT JSON", query_id="q2")
    assert json.loads(headers["x-clickhouse-summary"])["read_rows"].isdigit()
    status, headers, _ = call(port, b"SELECT nonsense(", query_id="q3")
    assert status == 400 and headers["x-clickhouse-query-id"] == "q3"
    result = connect(port).query("SELECT 1")
    assert result.query_id and result.summary["query_id"] == result.query_id
    # a statement that returns no rows names no format: clickhouse-connect then answers with the summary
    status, headers, _ = call(port, b"CREATE TABLE IF NOT EXISTS nothing (a Int8) ENGINE = Memory", query_id="q4")
    assert status == 200 and "x-clickhouse-format" not in headers and headers["x-clickhouse-query-id"] == "q4"
    assert "query_id" in connect(port).query("SET max_threads = 1").first_item
    assert connect(port).command("SELECT 13 WHERE 0") == ""


# -- sessions -------------------------------------------------------------------------------------------
def test_a_session_keeps_temporary_tables_settings_and_database_for_its_client_only(port):
    one = connect(port, session_id="session-one")
    one.command("CREATE TEMPORARY TABLE tmp (x Int32)")
    one.command("INSERT INTO tmp VALUES (1), (2)")
    one.command("SET max_threads = 3")
    one.command("CREATE DATABASE IF NOT EXISTS other")
    assert one.query("SELECT sum(x), getSetting('max_threads') FROM tmp").result_rows == [(3, 3)]
    # a URL setting holds for its request only; SET holds for the session
    assert one.query("SELECT getSetting('max_threads')", settings={"max_threads": 2}).result_rows == [(2,)]
    assert one.query("SELECT getSetting('max_threads')").result_rows == [(3,)]
    assert call(port, b"USE other", session_id="session-two")[0] == 200
    assert call(port, b"SELECT currentDatabase()", session_id="session-two")[2] == b"other\n"
    assert call(port, b"SELECT currentDatabase()", session_id="session-two", database="default")[2] == b"default\n"
    assert call(port, b"SELECT currentDatabase()", session_id="session-two")[2] == b"other\n"
    # a SET or USE in the SQL holds for the session even when the request named its own database and settings
    assert call(port, b"USE default", session_id="session-two", database="other")[0] == 200
    assert call(port, b"SET max_threads = 5", session_id="session-two", max_threads="2")[0] == 200
    assert call(port, b"SELECT currentDatabase(), getSetting('max_threads')", session_id="session-two")[2] == \
        b"default\t5\n"
    # nobody else sees the session's table: no session, another session, another login with the same id
    for query in ({}, {"session_id": "session-three"}):
        status, _, message = call(port, b"SELECT * FROM tmp", **query)
        assert status == 404 and b"UNKNOWN_TABLE" in message, message
    status, _, message = call(port, b"SELECT * FROM tmp", login=ANALYST, session_id="session-one")
    assert status in (403, 404) and b"1\n2" not in message


def test_session_check_and_timeout(port):
    status, headers, message = call(port, b"SELECT 1", session_id="never-made", session_check="1")
    assert status == 404 and headers["x-clickhouse-exception-code"] == "372", message
    assert call(port, b"CREATE TEMPORARY TABLE tmp2 (x Int8)", session_id="short", session_timeout="1")[0] == 200
    assert call(port, b"EXISTS TEMPORARY TABLE tmp2", session_id="short", session_check="1",
                session_timeout="1")[2] == b"1\n"
    time.sleep(1.6)
    assert call(port, b"SELECT 1", session_id="short", session_check="1")[0] == 404
    status, _, message = call(port, b"SELECT 1", session_id="long", session_timeout="3601")
    assert status == 400 and b"INVALID_SESSION_TIMEOUT" in message


def test_one_request_at_a_time_per_session(port):
    slow = threading.Thread(target=call, args=(port, b"SELECT sleep(1.5)"), kwargs={"session_id": "busy"})
    slow.start()
    time.sleep(0.5)
    status, headers, message = call(port, b"SELECT 1", session_id="busy")
    slow.join()
    assert status == 423 and headers["x-clickhouse-exception-code"] == "373", message
    assert b"SESSION_IS_LOCKED" in message
    assert call(port, b"SELECT 1", session_id="busy")[2] == b"1\n"   # free again


# -- external data --------------------------------------------------------------------------------------
def test_external_data_with_structure_or_types(port):
    client = connect(port)
    movies = ExternalData(file_name="movies.csv", data=b"Heat,1995\nAlien,1979\n", fmt="CSV",
                          structure=["name String", "year UInt16"])
    assert client.query("SELECT name FROM movies ORDER BY year", external_data=movies).result_rows == [
        ("Alien",), ("Heat",)]
    empty = ExternalData(file_name="empty.csv", data=b"", structure="name String")
    assert client.query("SELECT * FROM empty", external_data=empty).result_rows == []
    # in a session too, and the session keeps no external table after its request
    session = connect(port, session_id="external")
    assert session.query("SELECT count() FROM movies", external_data=movies).result_rows == [(2,)]
    assert session.query("EXISTS TEMPORARY TABLE movies").result_rows == [(0,)]
    typed = ExternalData(file_name="pairs", data=b"1\t[2,3]\n", types="UInt8,Array(UInt8)")
    assert client.query("SELECT _1, _2 FROM pairs", external_data=typed).result_rows == [(1, [2, 3])]
    bad = ExternalData(file_name="evil", data=b"1\n", structure="x UInt8) ENGINE = Memory; DROP TABLE t --")
    with pytest.raises(Exception, match="not a column list|SYNTAX_ERROR"):
        client.query("SELECT * FROM evil", external_data=bad)
    # an analyst gets none of it
    with pytest.raises(Exception, match="not available to analysts"):
        connect(port, ANALYST).query("SELECT * FROM movies", external_data=movies)


def test_analysts_still_cannot_insert_in_any_encoding(port):
    before = rows(port, "1")
    for body, headers in ((b"INSERT INTO t (a, s) FORMAT CSV\n9,x\n", {}),
                          (lz4.frame.compress(b"INSERT INTO t (a, s) FORMAT CSV\n9,x\n"), {"Content-Encoding": "lz4"}),
                          (gzip.compress(b"INSERT INTO t (a, s) VALUES (9, 'x')"), {"Content-Encoding": "gzip"})):
        status, _, message = call(port, body, login=ANALYST, headers=headers)
        assert status == 403 and b"READONLY" in message, message
    assert rows(port, "1") == before


def test_wire_split_unit():
    body = wire.split("", [b"INSERT INTO t FORMAT RowBinary \r\n\x00\x01"], 100, 100)
    body.data.seek(0)
    assert (body.sql, body.format, body.data.read()) == ("INSERT INTO t", "RowBinary", b"\x00\x01")
    body.close()
    assert wire.split("", [b"INSERT INTO t VALUES ('FORMAT x')"], 100, 100).data is None
    # quoted names may be any word (the images table has a column named format)
    body = wire.split("INSERT INTO `images` (`id`, `format`) FORMAT Arrow", [b"\xff"], 100, 100)
    assert (body.sql, body.format) == ("INSERT INTO `images` (`id`, `format`)", "Arrow")
    body.close()
    body = wire.split("", [b"WITH (SELECT 1) AS x INSERT INTO t FORMAT CSV\n1"], 100, 100)
    assert (body.sql, body.format) == ("WITH (SELECT 1) AS x INSERT INTO t", "CSV")
    body.close()
    assert wire.split("SELECT 1", [], 100, 100).sql == "SELECT 1"
    assert wire.split("SELECT", [b" 1"], 100, 100).sql == "SELECT\n 1"
    with pytest.raises(wire.ClickHouseError, match="not valid UTF-8"):
        wire.split("", [b"SELECT \xff"], 100, 100)


# -- reflection -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("login", [WRITER, ANALYST])
def test_the_system_tables_clients_reflect_on(port, login):
    client = connect(port, login)
    assert ("t", "MergeTree") in client.query("SELECT name, engine FROM system.tables "
                                              "WHERE database = currentDatabase()").result_rows
    assert client.query("SELECT name, type FROM system.columns WHERE database = 'default' AND table = 't' "
                        "ORDER BY position").result_rows == [("a", "UInt32"), ("s", "String"), ("d", "DateTime"),
                                                             ("f", "Array(Float32)")]
    assert ("default",) in client.query("SELECT name FROM system.databases").result_rows
    assert client.query("SELECT count() FROM system.functions WHERE name = 'cosineDistance'").result_rows == [(1,)]
    assert client.query("SELECT count() FROM system.settings WHERE name = 'max_threads'").result_rows == [(1,)]
    from sqlalchemy import create_engine, inspect
    engine = create_engine(f"clickhousedb://{login[0]}:{login[1]}@{port.split('//')[1]}/default")
    assert "t" in inspect(engine).get_table_names()
    assert [c["name"] for c in inspect(engine).get_columns("t")] == ["a", "s", "d", "f"]


def test_the_writer_creates_and_drops_in_a_database_of_its_own(port):
    client = connect(port)
    client.command("CREATE DATABASE IF NOT EXISTS own_db")
    client.database = "own_db"
    client.command("CREATE TABLE x (a Int8) ENGINE = MergeTree ORDER BY a")
    client.insert("x", [[1], [2]], column_names=["a"])
    assert client.query("SHOW TABLES").result_rows == [("x",)]
    assert client.query("SELECT sum(a) FROM x").result_rows == [(3,)]
    client.command("DROP TABLE x")
    client.database = "default"
    client.command("DROP DATABASE own_db")
    assert ("own_db",) not in client.query("SELECT name FROM system.databases").result_rows


def test_an_error_after_rows_is_marked_as_clickhouse_marks_it(port):
    from clickhouse_connect.driver.exceptions import StreamFailureError
    client = connect(port)
    rows_seen = []
    with pytest.raises(StreamFailureError, match="FUNCTION_THROW_IF_VALUE_IS_NON_ZERO"):
        with client.query_rows_stream("SELECT number, throwIf(number = 300000) FROM numbers(500000)",
                                      settings={"max_block_size": 100}) as stream:
            for row in stream:
                rows_seen.append(row)
    assert 0 < len(rows_seen) <= 300000
    # curl sees the rows, then the message between the markers named in X-ClickHouse-Exception-Tag
    status, headers, body = call(port, b"SELECT number, throwIf(number = 300000) FROM numbers(500000)",
                                 max_block_size="100")
    tag = headers["x-clickhouse-exception-tag"]
    assert status == 200 and body.startswith(b"0\t0\n")
    assert f"__exception__\r\n{tag}\r\n".encode() in body and body.endswith(f" {tag}\r\n__exception__\r\n".encode())
    assert b"FUNCTION_THROW_IF_VALUE_IS_NON_ZERO" in body
    # with wait_end_of_query=1 the result is read to its end first: the error is the answer's status
    status, headers, body = call(port, b"SELECT number, throwIf(number = 300000) FROM numbers(500000)",
                                 max_block_size="100", wait_end_of_query="1")
    assert status == 400 and body.startswith(b"Code: 395.") and headers["x-clickhouse-exception-code"] == "395"
    status, _, body = call(port, b"SELECT number FROM numbers(300000)", max_block_size="100",
                           wait_end_of_query="1")
    assert status == 200 and body == b"".join(b"%d\n" % i for i in range(300000))
    assert connect(port).raw_query("SELECT count() FROM numbers(10)") == b"10\n"
