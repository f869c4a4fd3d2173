"""The analyst login on `serve`'s ClickHouse HTTP port, from outside: what an attacker sends is refused with
no file read, no second statement and no state changed; what analysts' ordinary tools send works
(clickhouse-connect, SQLAlchemy, pandas, curl as ClickHouse's HTTP docs show it, ClickHouse's official
JavaScript client); analysts are isolated from each other and from the CLI."""
from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import clickhouse_connect
import numpy as np
import pytest

import clipsearch
from clipsearch.service import shapes
from clipsearch.sql import query_names, read
from tests.conftest import free_port, start_serve

pytestmark = pytest.mark.slow
PASSWORD = "analyst-port-password"
ROWS = 40


@pytest.fixture(scope="module")
def port(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("analyst-port")
    rng = np.random.default_rng(5)
    manifest = shapes.write_catalogue(folder / "catalogue", [shapes.random_spec(rng) for _ in range(ROWS)], 5,
                                         extra=lambda i: {"price": i, "category": "poster" if i % 2 else "badge"})
    db = folder / "db"
    with clipsearch.open(db, model=model, log_searches=False) as photos:
        photos.load(manifest)
    web_port, sql_port = free_port(), free_port()
    env = {**os.environ, "CLIPSEARCH_ANALYST_PASSWORD": PASSWORD}
    env.pop("CLICKHOUSE_URL", None)
    proc = start_serve(db, web_port, sql_port, env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{sql_port}"
    writer_url = json.loads((db / ".clipsearch.serve").read_text())["url"]
    try:
        yield {"base": base, "db": db, "folder": folder, "writer_url": writer_url, "sql_port": sql_port,
               "web": f"http://127.0.0.1:{web_port}", "proc": proc}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def call(port, sql: str | None = None, user: str = "analyst", password: str = PASSWORD, query: dict | None = None,
         headers: dict | None = None, method: str = "POST", path: str = "/") -> tuple[int, dict, bytes]:
    """One request as curl would send it: SQL in the body, the rest in the URL. (status, headers in lower
    case, body)"""
    url = port["base"] + path + ("?" + urllib.parse.urlencode(query) if query else "")
    request = urllib.request.Request(url, data=sql.encode() if sql is not None else None, method=method,
                                     headers=headers or {})
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def writer(port) -> clickhouse_connect.driver.Client:
    return clickhouse_connect.get_client(dsn=port["writer_url"], autogenerate_session_id=False)


def analyst(port, **kwargs) -> clickhouse_connect.driver.Client:
    return clickhouse_connect.get_client(host="127.0.0.1", port=port["sql_port"], username="analyst",
                                         password=PASSWORD, **kwargs)


def state(port) -> dict:
    client = writer(port)
    try:
        return {"tables": client.query("SHOW TABLES").result_rows,
                "images": client.query("SELECT count() FROM images").result_rows,
                "columns": client.query("SELECT name, type FROM system.columns WHERE database = 'default' "
                                        "ORDER BY table, name").result_rows,
                "functions": client.query("SELECT name FROM system.functions WHERE origin != 'System'").result_rows}
    finally:
        client.close()


# -- what an attacker sends ---------------------------------------------------------------------------
ATTACKS = [
    # escapes: the check once read `\\` as one backslash (a parameter's escape rule) while the engine ran two
    "SELECT 'x\\\\', file('/etc/passwd') AS f -- '",
    "SELECT 'x\\\\' AS a, * FROM file('/etc/passwd', 'LineAsString') -- '",
    "SELECT 'x\\\\' AS a; SELECT file('/etc/passwd') -- '",
    "SELECT 'a\\'' AS a, file('/etc/passwd') AS f",
    "SELECT 'a\\n' AS a,\n\tfile('/etc/passwd') AS f",
    "SELECT 'x\\\\' AS a, 1 INTO OUTFILE '{out}' -- '",
    "SELECT 'x\\\\' AS a, 1 FROM numbers(1) -- '\n; KILL QUERY WHERE 1",
    "SELECT $$x\\$$ AS a, file('/etc/passwd') AS f",
    # comments and quoting
    "SELECT 1 # '\n, file('/etc/passwd') AS f -- '",
    "SELECT /*'*/ file('/etc/passwd') /*'*/ AS f",
    "-- SELECT\nSELECT file('/etc/passwd')",
    "SELECT `file`('/etc/passwd')",
    "SELECT \"file\"('/etc/passwd')",
    "SELECT FILE('/etc/passwd')",
    "SELECT fIlE('/etc/passwd')",
    # unicode
    "SELECT\u00a0file('/etc/passwd')",
    "SELECT file\u200b('/etc/passwd')",
    "SELECT file('/etc/passwd') AS \"f\u0301\"",
    # nesting
    "SELECT * FROM (SELECT * FROM (SELECT file('/etc/passwd') AS f))",
    "WITH x AS (SELECT * FROM file('/etc/passwd', 'LineAsString')) SELECT * FROM x",
    "SELECT * FROM view(SELECT file('/etc/passwd') AS f)",
    "SELECT (SELECT file('/etc/passwd')) AS f",
    "SELECT count() FROM images WHERE path IN (SELECT * FROM file('/etc/passwd', 'LineAsString'))",
    "SELECT * FROM images AS i JOIN file('/etc/passwd', 'LineAsString') AS f ON 1",
    "SELECT arrayMap(x -> file('/etc/passwd'), [1]) AS f",
    "EXPLAIN SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "EXPLAIN PIPELINE SELECT * FROM url('{url}/e', 'LineAsString')",
    "DESCRIBE file('/etc/passwd', 'LineAsString')",
    "DESCRIBE (SELECT * FROM url('{url}/d', 'LineAsString'))",
    # several statements
    "SELECT 1; SELECT concat('SEC', 'OND') AS s",
    "SELECT 1;\nCREATE TABLE pwned (a Int8) ENGINE = Memory",
    "SELECT 1 ; ; DROP TABLE images",
    # table functions in every position
    "SELECT * FROM url('{url}/a', 'LineAsString')",
    "SELECT * FROM s3('{url}/b/c.csv', 'LineAsString')",
    "SELECT * FROM remote('127.0.0.1:9000', system.one)",
    "SELECT * FROM executable('id', 'TSV', 'x String')",
    "SELECT * FROM python('x')",
    "SELECT * FROM merge(system, '^proc')",
    "SELECT * FROM loop(system, processes) LIMIT 1",
    "SELECT * FROM urlCluster('default', '{url}/f', 'LineAsString')",
    "SELECT * FROM numbers(1) WHERE (SELECT count() FROM url('{url}/g', 'LineAsString')) > 0",
    # files named as tables, and tables named by parameters
    "SELECT * FROM `/etc/passwd`",
    "SELECT * FROM default.`/etc/passwd`",
    "SELECT * FROM \"/etc/passwd\"",
    "DESCRIBE `/etc/passwd`",
    "SELECT * FROM `{serve_file}`",
    "SELECT * FROM {{t:Identifier}}",
    # writes, KILL, USE, SET, settings in the SQL
    "INSERT INTO images (id) VALUES ('x')",
    "INSERT INTO FUNCTION file('{out}', 'TSV') SELECT 1",
    "SELECT 1 INTO OUTFILE '{out}'",
    "SELECT 1 INTO OUTFILE '{out}' TRUNCATE AND STDOUT FORMAT CSV",
    "CREATE TABLE pwned (a Int8) ENGINE = Memory",
    "CREATE TEMPORARY TABLE pwned (a Int8)",
    "DROP TABLE images",
    "ALTER TABLE images DELETE WHERE 1",
    "TRUNCATE TABLE images",
    "KILL QUERY WHERE 1",
    "KILL QUERY WHERE 1 SYNC",
    "USE system",
    "SET readonly = 0",
    "SET max_execution_time = 100000",
    "SYSTEM DROP QUERY CACHE",
    "CREATE FUNCTION pwned AS x -> x",
    "SELECT 1 SETTINGS readonly = 0",
    "SELECT 1 SETTINGS max_execution_time = 100000",
    "SELECT 1 SETTINGS max_memory_usage = 0",
    # other sessions' SQL
    "SELECT query FROM system.processes",
    "SELECT * FROM system.user_processes",
    "SHOW PROCESSLIST",
    "SHOW FULL PROCESSLIST",
    "SELECT * FROM system.query_log",
    "SELECT * FROM system.errors",
    "SELECT * FROM `system`.`processes`",
    "SELECT * FROM system . processes",
]


def test_attacks_are_refused_and_change_nothing(port, listener, tmp_path):
    url, seen = listener
    out = tmp_path / "out.txt"
    serve_file = port["db"] / ".clipsearch.serve"
    secret = port["writer_url"].split(":")[2].split("@")[0]   # the clipsearch login's password
    before = state(port)
    for attack in ATTACKS:
        sql = attack.format(url=url, out=out, serve_file=serve_file)
        status, headers, body = call(port, sql, query={"param_t": "system.processes"})
        text = body.decode("utf-8", "replace")
        assert 400 <= status < 600 and status != 500, (sql, status, text)
        assert text.startswith("Code: ") and headers["x-clickhouse-exception-code"] == text[6:].split(".")[0], sql
        assert "root:" not in text and secret not in text and "SECOND" not in text, (sql, text)
    assert state(port) == before
    assert not out.exists() and seen == []
    # a fresh request is in the default database, read-only, with the analyst's limits
    rows = analyst(port).query("SELECT currentDatabase(), getSetting('readonly'), getSetting('max_execution_time')")
    assert rows.result_rows == [("default", 1, 30)]


@pytest.mark.parametrize("query", [
    {"readonly": "0"}, {"max_execution_time": "100000"}, {"max_execution_time": "0"}, {"max_memory_usage": "0"},
    {"max_threads": "64"}, {"allow_ddl": "1"}, {"readonly": "2"}, {"database": "system"},
    {"output_format_json_quote_64bit_integers": "'; DROP TABLE images; --"},
    # found by an outside probe: a presentation setting that writes a file, or lifts a bound on output size;
    # limits whose default is not "none" (larger is looser)
    {"output_format_schema": "/tmp/clipsearch-schema-probe.proto"}, {"format_schema": "/tmp"},
    {"output_format_pretty_max_rows": "100000"}, {"output_format_pretty_max_column_pad_width": "100000"},
    {"input_format_record_errors_file_path": "/tmp/x"}, {"max_block_size": "1000000000"},
    {"max_ast_elements": "999999999999"}, {"max_expanded_ast_elements": "999999999"},
])
def test_settings_in_the_url_may_only_tighten(port, query):
    status, headers, body = call(port, "SELECT count() FROM images", query=query)
    assert status in (400, 403) and headers["x-clickhouse-exception-code"] in ("164", "291", "27"), body
    assert call(port, "SELECT count() FROM images")[2] == f"{ROWS}\n".encode()


@pytest.mark.parametrize("sql", [
    "SELECT 1 AS x FORMAT Protobuf", "SELECT 1 AS x FORMAT ProtobufSingle", "SELECT 1 AS x FORMAT CapnProto",
    "SELECT 1 AS x FORMAT Template",
])
def test_formats_that_use_schema_files_are_refused(port, sql):
    status, headers, body = call(port, sql, query={"output_format_schema": "/tmp/clipsearch-schema-probe.proto"})
    assert status == 403 and headers["x-clickhouse-exception-code"] == "164", body
    status, _, body = call(port, sql)
    assert status == 403 and b"not available to analysts" in body, body
    assert not os.path.exists("/tmp/clipsearch-schema-probe.proto")


def test_a_format_before_its_settings_is_still_held_within_bounds(port):
    """formatQuery keeps FORMAT before a SETTINGS clause that follows it: that format is still the one
    judged (a JSON result is held whole, so its row bound applies)."""
    status, headers, body = call(port, "SELECT number FROM numbers(200000) FORMAT JSON SETTINGS max_threads = 1")
    assert status == 400 and b"TOO_MANY_ROWS_OR_BYTES" in body, body[:300]


@pytest.mark.parametrize("sql", [
    "SELECT repeat(char(1), 600) AS x FROM numbers(99000) FORMAT JSON",   # escapes make 6x the result's bytes
    "SELECT number AS `" + "n" * 2000 + "` FROM numbers(99000) FORMAT JSONEachRow",   # a name on every row
])
def test_outputs_many_times_their_results_size_are_refused(port, sql):
    """Found by a second outside probe: JSON's escapes and a long name repeated on every row wrote hundreds of
    megabytes from a result within the bounds, and took the service past 3 GB."""
    status, headers, body = call(port, sql)
    assert 400 <= status < 500 and headers["x-clickhouse-exception-code"] in ("241", "164"), body[:300]


@pytest.mark.parametrize("query", [{"max_execution_time": "\u00b2"}, {"max_execution_time": "\u0663"},
                                   {"max_result_rows": "99999999999999999999999"}])
def test_a_limit_is_a_plain_number(port, query):
    status, headers, body = call(port, "SELECT 1", query=query)
    assert status == 403 and headers["x-clickhouse-exception-code"] == "164", body


def test_a_text_that_is_costly_to_parse_is_refused_quickly(port):
    status, headers, body = call(port, "SELECT " + "INTERVAL (" * 300)
    assert 400 <= status < 500 and b"backtracking" in body, body[:300]


def test_clip_text_embedding_reads_a_bounded_text(port):
    """CLIP reads 77 tokens: a text of megabytes is cut before the tokenizer and the cache (it ran past every
    time limit and kept gigabytes)."""
    status, _, body = call(port, "SELECT length(clipTextEmbedding(repeat(repeat('a b ', 1000000), 3))) AS n")
    assert (status, body) == (200, b"128\n")


def test_a_request_body_past_the_limit_is_refused_before_it_is_read(port):
    with socket.create_connection(("127.0.0.1", port["sql_port"]), timeout=30) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n" + b"x" * 65536)
        assert sock.recv(100).startswith(b"HTTP/1.1 413") or sock.recv(100).startswith(b"HTTP/1.0 413")


def test_tightened_limits_apply(port):
    status, _, body = call(port, "SELECT count() FROM numbers(10000000000) WHERE sipHash64(number) = 1",
                           query={"max_execution_time": "1"})
    assert status == 408 and b"TIMEOUT_EXCEEDED" in body, body
    status, _, body = call(port, "SELECT number FROM numbers(100) FORMAT JSON", query={"max_result_rows": "10"})
    assert status == 400 and b"TOO_MANY_ROWS_OR_BYTES" in body, body
    # a format held whole has its own bounds; a row format streams instead
    status, _, body = call(port, "SELECT number FROM numbers(200000) FORMAT JSON")
    assert status == 400 and b"TOO_MANY_ROWS_OR_BYTES" in body, body[:300]
    status, _, body = call(port, "SELECT number FROM numbers(200000) FORMAT CSVWithNames")
    assert status == 200 and body.count(b"number") == 1 and body.count(b"\n") == 200001
    # clickhouse-connect checks settings against system.settings, where a read-only session's are all marked
    # readonly, and refuses to send them unless told to
    from clickhouse_connect import common
    common.set_setting("invalid_setting_action", "send")
    try:
        client = analyst(port)
        rows = client.query("SELECT getSetting('max_execution_time') AS t, getSetting('max_result_rows') AS r",
                            settings={"max_execution_time": 5, "max_result_rows": 1000})
        assert rows.result_rows == [(5, 1000)]
        with pytest.raises(Exception, match="Code: 164"):
            client.query("SELECT 1", settings={"max_execution_time": 100})
        client.close()
    finally:
        common.set_setting("invalid_setting_action", "error")


# -- what analysts' tools send ------------------------------------------------------------------------
def test_ping_and_root_answer_without_a_login(port):
    for path in ("/ping", "/"):
        status, _, body = call(port, user=None, method="GET", path=path)
        assert (status, body) == (200, b"Ok.\n")
    assert analyst(port).ping() is True


def test_curl_as_clickhouse_documents_it(port):
    """The examples of ClickHouse's HTTP interface page, with the analyst's credentials."""
    creds = ["-u", f"analyst:{PASSWORD}"]
    base = port["base"]

    def curl(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["curl", "-sS", *args], input=data, capture_output=True, timeout=60)
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    assert curl(f"{base}/ping").stdout == b"Ok.\n"
    assert curl(*creds, f"{base}/?query=SELECT%201").stdout == b"1\n"
    assert curl(*creds, base, "--data-binary", "@-", data=b"SELECT 1").stdout == b"1\n"
    assert curl(*creds, f"{base}/?query=SELECT", "-d", " 1").stdout == b"1\n"   # query split between URL and body
    multi = (b"-- every poster\nSELECT\n\tcount() AS n\nFROM images\t/* tabs, newlines, comments */\n"
             b"WHERE category = 'poster'\n")
    assert curl(*creds, base, "--data-binary", "@-", data=multi).stdout == b"20\n"
    assert curl(*creds, f"{base}/?param_p=10", "--data-binary", "@-",
                data=b"SELECT count() AS n FROM images WHERE price < {p:UInt32} FORMAT JSONEachRow"
                ).stdout == b'{"n":"10"}\n'   # 64-bit integers quoted, as a server does
    zipped = curl(*creds, "-H", "Accept-Encoding: gzip", f"{base}/?enable_http_compression=1", "-D", "-",
                  "--data-binary", "@-", data=b"SELECT number FROM numbers(100000)")
    head, _, payload = zipped.stdout.partition(b"\r\n\r\n")
    assert b"content-encoding: gzip" in head.lower()
    assert gzip.decompress(payload) == "".join(f"{i}\n" for i in range(100000)).encode()
    failed = curl(*creds, "-D", "-", base, "--data-binary", "@-", data=b"SELECT nope FROM images")
    assert b"HTTP/1.1 404" in failed.stdout and b"x-clickhouse-exception-code: 47" in failed.stdout.lower()


def test_clickhouse_connect_query_stream_and_dataframe(port):
    client = analyst(port)
    assert client.query("SELECT count() FROM images WHERE price < {p:UInt32}",
                        parameters={"p": 20}).result_rows == [(20,)]
    total = n = 0
    with client.query_row_block_stream("SELECT number, toString(number) AS s FROM numbers(200000)") as stream:
        for block in stream:
            n += len(block)
            total += sum(row[0] for row in block)
    assert (n, total) == (200000, sum(range(200000)))
    frame = client.query_df("SELECT price, category FROM images WHERE price IS NOT NULL ORDER BY price LIMIT 3")
    assert list(frame["price"]) == [0, 1, 2]
    client.close()


def test_sqlalchemy_table_autoload_select_and_pandas(port):
    import pandas as pd
    import sqlalchemy as sa
    engine = sa.create_engine(f"clickhousedb://analyst:{PASSWORD}@127.0.0.1:{port['sql_port']}/default")
    try:
        images = sa.Table("images", sa.MetaData(), autoload_with=engine)
        assert {"id", "path", "embedding", "price", "category"} <= set(images.columns.keys())
        with engine.connect() as connection:
            rows = connection.execute(sa.select(images.c.category, sa.func.count().label("n"))
                                      .where(images.c.price < 10).group_by(images.c.category)
                                      .order_by(images.c.category)).all()
            assert [tuple(r) for r in rows] == [("badge", 5), ("poster", 5)]
            frame = pd.read_sql_table("images", connection, columns=["id", "price"])
        assert len(frame) == ROWS and sorted(frame["price"]) == list(range(ROWS))
    finally:
        engine.dispose()


def test_every_shipped_query_file_runs_as_it_is(port):
    """sql/queries/*.sql are multi-line, commented and parameterised: as they are, on the analyst port."""
    ran = 0
    for name in query_names():
        text = read(f"queries/{name}")
        if "{" in text:   # parameterised: the page and test_sql run those with values
            continue
        status, _, body = call(port, text)
        assert status == 200, (name, body[:300])
        ran += 1
    assert ran >= 3


def test_official_javascript_client(port, tmp_path):
    """ClickHouse's official client for Node.js, installed from the npm registry."""
    if not shutil.which("npm") or not shutil.which("node"):
        pytest.skip("node and npm are not installed")
    install = subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "@clickhouse/client@1"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    if install.returncode != 0:
        pytest.skip(f"npm could not install @clickhouse/client: {install.stderr.strip()[:200]}")
    script = tmp_path / "query.mjs"
    script.write_text("""
import { createClient } from '@clickhouse/client'
const client = createClient({ url: process.argv[2], username: 'analyst', password: process.argv[3] })
const ping = await client.ping()
const rs = await client.query({
  query: `SELECT category, count() AS n
          FROM images
          WHERE price < {p:UInt32}
          GROUP BY category ORDER BY category`,
  query_params: { p: 10 }, format: 'JSONEachRow',
  clickhouse_settings: { max_execution_time: 5 } })
const rows = await rs.json()
let refused = ''
try { await client.command({ query: 'DROP TABLE images' }) } catch (e) { refused = e.code }
console.log(JSON.stringify({ ping: ping.success, rows, refused }))
await client.close()
""")
    run = subprocess.run(["node", str(script), port["base"], PASSWORD], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"ping": True, "rows": [{"category": "badge", "n": "5"},
                                                              {"category": "poster", "n": "5"}], "refused": "164"}


# -- isolation ----------------------------------------------------------------------------------------
def test_one_analysts_burst_does_not_hold_back_another_or_the_cli(port):
    """20 slow queries from one analyst: some run, the rest wait their turn or are refused at once (a bounded
    queue); a second analyst's query and the CLI's are answered while the burst's queries still run (an
    ordering, not a timing: each of those runs for seconds)."""
    slow = "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) = 0"
    finished: list[tuple[int, float]] = []

    def burst():   # one analyst's session, as a notebook's would be
        status, _, _ = call(port, slow, query={"max_execution_time": "3", "timeout_overflow_mode": "break",
                                               "session_id": "burst"})
        finished.append((status, time.monotonic()))
    threads = [threading.Thread(target=burst) for _ in range(20)]
    for t in threads:
        t.start()
    time.sleep(0.5)   # the burst holds its share and queues the rest
    other = analyst(port)   # another client: its own session_id
    assert other.query("SELECT count() FROM images").result_rows == [(ROWS,)]
    cli = writer(port)
    assert cli.query("SELECT count() FROM images").result_rows == [(ROWS,)]
    answered = time.monotonic()
    for t in threads:
        t.join()
    ran = [when for status, when in finished if status == 200]
    assert ran and answered < min(ran)
    assert {status for status, _ in finished} <= {200, 503}
    other.close()
    cli.close()


def test_idle_connections_do_not_starve_requests(port):
    """200 idle TCP connections to each port (waitress allowed 100 and kept idle ones 120 s): searches and
    queries are still answered."""
    idle = []
    try:
        for target in (port["web"], port["base"]):
            host, _, number = target.rpartition(":")
            idle += [socket.create_connection(("127.0.0.1", int(number))) for _ in range(200)]
        with urllib.request.urlopen(port["web"] + "/api/search?q=a+red+circle&k=3", timeout=20) as response:
            assert len(json.load(response)["results"]) == 3
        assert call(port, "SELECT count() FROM images")[2] == f"{ROWS}\n".encode()
    finally:
        for sock in idle:
            sock.close()


def test_page_sql_tab_shares_the_check_and_bounds_results_by_bytes(port):
    def post(sql: str) -> tuple[int, dict]:
        request = urllib.request.Request(port["web"] + "/api/sql", data=json.dumps({"sql": sql}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)
    assert post("SELECT 'x\\\\', file('/etc/passwd') AS f -- '")[0] == 400
    assert post("SELECT query FROM system.processes")[0] == 400
    status, body = post("SELECT repeat('x', 3000) FROM numbers(100000)")   # 300 MB: over the byte bound
    assert status == 400 and "larger than 64 MiB" in body["error"], body
    status, body = post("SELECT count() AS n\nFROM images\t-- a comment\nWHERE price < 10")
    assert status == 200 and body["rows"] == [[10]], body


def test_engine_refuses_the_network_whatever_the_check_says(port):
    """Defence in depth: the engine's own grants (sql/engine/users.xml) revoke every network source, so even
    the clipsearch login cannot fetch a URL."""
    client = writer(port)
    with pytest.raises(Exception, match="READ ON URL"):
        client.query("SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')")
    grants = "\n".join(r[0] for r in client.query("SHOW GRANTS").result_rows)
    assert "REVOKE URL" in grants and "REVOKE REMOTE" in grants and "REVOKE S3" in grants
    client.close()


def test_a_stray_config_xml_in_the_working_folder_changes_nothing(port, tmp_path):
    """The engine reads the product's configuration, whatever folder a command runs from: a config.xml there
    that names a missing users file broke every command."""
    (tmp_path / "config.xml").write_text("<clickhouse><users_config>missing.xml</users_config>"
                                         "<profiles><default><max_result_rows>1</max_result_rows></default>"
                                         "</profiles></clickhouse>")
    photos = tmp_path / "photos"
    shapes.write_catalogue(photos, [shapes.random_spec(np.random.default_rng(7)) for _ in range(3)], 7,
                              manifest=None)
    env = {k: v for k, v in os.environ.items() if k not in ("CLICKHOUSE_URL", "CLIPSEARCH_DB")}
    for command in (["load", "photos"], ["sql", "SELECT count() AS n FROM images"]):
        run = subprocess.run([sys.executable, "-m", "clipsearch.service.cli", *command], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300, env=env)
        assert run.returncode == 0, run.stderr
    assert "3" in run.stdout and (tmp_path / "clipsearch-data" / ".clipsearch-engine.xml").exists()


def test_failed_logins_are_throttled_per_login(port):
    """Guesses at the analyst password take turns, from whatever address (tests/test_request_gate.py has the
    attack from 1,000 addresses); the right password gets in as soon as they stop."""
    for _ in range(12):   # failures of logins that do not exist count for nothing
        assert call(port, "SELECT 1", user="nobody", password="x")[0] == 401
    assert call(port, "SELECT 1")[0] == 200
    answers = []
    while not answers or answers[-1][0] != 429 and len(answers) < 500:
        answers.append(call(port, "SELECT 1", password="wrong"))
    assert [a[0] for a in answers[:10]] == [401] * 10   # ten at once, then ten a second
    status, headers, body = answers[-1]
    assert status == 429 and headers["x-clickhouse-exception-code"] == "516" and b"too many failed logins" in body
    stopped = time.monotonic()   # the right password waits for the guesses' turn, a tenth of a second at most
    while (status := call(port, "SELECT 1")[0]) == 429 and time.monotonic() - stopped < 1:
        time.sleep(0.02)
    assert status == 200
    # the clipsearch login (a random password, what the CLI uses) is never locked out
    client = writer(port)
    assert client.query("SELECT 1").result_rows == [(1,)]
    client.close()
