"""While `clipsearch serve` owns an embedded folder, everyone else works through it: the CLI (same results
as without a service), loads, analysts over ClickHouse's HTTP interface (read-only, refusals proven), and
watched folders."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import clickhouse_connect
import numpy as np
import pytest

import clipsearch
from clipsearch.service import shapes
from clipsearch.service.cli import main
from tests.conftest import free_port, wait_until

pytestmark = pytest.mark.slow
ANALYST_PASSWORD = "analyst-test-password"


@pytest.fixture(scope="module")
def served(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("served")
    rng = np.random.default_rng(91)
    manifest = shapes.write_catalogue(folder / "catalogue", [shapes.random_spec(rng) for _ in range(40)], 91,
                                         extra=lambda i: {"price": i})
    watched = folder / "watched"
    shapes.write_catalogue(watched, [shapes.random_spec(rng, "red", "circle")], 92, manifest=None)
    db = folder / "db"
    with clipsearch.open(db, model=model, log_searches=False) as photos:   # what the CLI answers without a service
        photos.load(manifest)
        expected = photos.search("a green square", k=10, filters=["price>=10"]).rows
    port, sql_port = free_port(), free_port()
    env = {**os.environ, "CLIPSEARCH_ANALYST_PASSWORD": ANALYST_PASSWORD}
    env.pop("CLICKHOUSE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "clipsearch.service.cli", "serve", "--db", str(db), "--port",
                             str(port), "--sql-port", str(sql_port), "--watch", str(watched), "--watch-interval",
                             "0.5"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return json.load(urllib.request.urlopen(base + "/healthz"))["images"] >= 41
        except OSError:
            return False
    searched_last: list[str] = []   # the texts of test_searches_just_before_shutdown_reach_search_log
    try:
        wait_until(up)
        yield {"db": db, "base": base, "sql_port": sql_port, "expected": expected, "watched": watched,
               "folder": folder, "proc": proc, "searched_last": searched_last}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert not (db / ".clipsearch.serve").exists()  # the service cleans up after itself
    with clipsearch.open(db, model=model, log_searches=False) as photos:   # buffered log rows written at exit
        logged = {r["text"] for r in photos.sql("SELECT text FROM search_log WHERE origin = 'http'")}
    assert set(searched_last) <= logged


def _search(base: str, q: str) -> list[dict]:
    """The picture ranking (files loaded without a manifest have no title words to fuse)."""
    url = f"{base}/api/search?q={q.replace(' ', '+')}&k=100&match=pictures"
    return json.load(urllib.request.urlopen(url))["results"]


def test_cli_through_the_service_gives_the_same_results(served, model, capsys):
    assert main(["search", "a green square", "--k", "10", "--filter", "price>=10", "--json", "--db",
                 str(served["db"])], model=model) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [r["id"] for r in served["expected"]]
    np.testing.assert_allclose([r["score"] for r in rows], [r["score"] for r in served["expected"]], atol=1e-6)
    assert main(["sql", "SELECT count() AS n FROM images WHERE price IS NOT NULL", "--format", "JSONEachRow",
                 "--db", str(served["db"])], model=model) == 0
    assert json.loads(capsys.readouterr().out) == {"n": 40}


def test_commands_through_the_service_use_its_model(served):
    """search, embed and label through a running service embed their texts with the service's model: the
    command's process never imports torch (seconds, and a gigabyte), and ranks exactly as the service."""
    code = ("import sys, json\nfrom clipsearch.service.cli import main\n"
            "code = main(sys.argv[1:])\nprint(json.dumps({'torch': 'torch' in sys.modules}), file=sys.stderr)\n"
            "sys.exit(code)\n")
    env = {k: v for k, v in os.environ.items() if k != "CLICKHOUSE_URL"}
    for args in (["search", "a green square", "--k", "10", "--filter", "price>=10", "--json"],
                 ["embed", "a green square"], ["label", "--labels", "circle,square", "--name", "shape"]):
        run = subprocess.run([sys.executable, "-c", code, *args, "--db", str(served["db"])], capture_output=True,
                             text=True, env=env, timeout=120)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stderr.strip().splitlines()[-1]) == {"torch": False}, (args, run.stderr)
        if args[0] == "search":
            assert [r["id"] for r in json.loads(run.stdout)] == [r["id"] for r in served["expected"]]


def test_load_while_serving_is_found_at_once(served, model, capsys):
    rng = np.random.default_rng(93)
    new = shapes.write_catalogue(served["folder"] / "new", [shapes.random_spec(rng, "purple", "star")
                                                               for _ in range(6)], 93, manifest=None)
    assert main(["load", str(new), "--quiet", "--db", str(served["db"])], model=model) == 0
    assert "loaded 6, already present 0, failed 0" in capsys.readouterr().out
    top = _search(served["base"], "a purple star")[:10]
    assert {str(p) for p in new.iterdir()} <= {r["path"] for r in top}
    assert main(["load", str(new), "--quiet", "--db", str(served["db"])], model=model) == 0  # idempotent
    assert "loaded 0, already present 6" in capsys.readouterr().out


@pytest.fixture(scope="module")
def analyst(served):
    client = clickhouse_connect.get_client(host="127.0.0.1", port=served["sql_port"], username="analyst",
                                           password=ANALYST_PASSWORD)
    yield client
    client.close()


def test_analyst_reads(analyst):
    assert analyst.query("SELECT count() FROM images WHERE price < 20").result_rows == [(20,)]
    frame = analyst.query_df("SELECT id, price FROM images WHERE price IS NOT NULL ORDER BY price LIMIT 3")
    assert list(frame["price"]) == [0, 1, 2]


@pytest.mark.parametrize("sql", [
    "INSERT INTO load_errors (path, reason) VALUES ('x', 'y')",
    "DROP TABLE images",
    "ALTER TABLE images DELETE WHERE 1",
    "CREATE TABLE stolen (a String) ENGINE = Memory",
    "SET readonly = 0",
    "SELECT 1 SETTINGS max_execution_time = 100000",
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')",
    "SELECT * FROM s3('http://127.0.0.1:9/bucket/x.csv', 'CSV', 'a String')",
    "SELECT * FROM remote('127.0.0.1:9000', system.one)",
    "SELECT * FROM executable('cat /etc/passwd', 'TSV', 'a String')",
])
def test_analyst_refusals(analyst, served, sql):
    with pytest.raises(Exception, match=r"Code: (164|396)"):
        analyst.query(sql)
    # chdb handed the partial output of a query that failed mid-result to the session's next query; now each
    # request has a session of its own
    assert analyst.query("SELECT 'next' AS x").result_rows == [("next",)]
    assert json.load(urllib.request.urlopen(served["base"] + "/healthz"))["images"] >= 41


def test_no_anonymous_or_wrong_password(served):
    for url in (f"http://127.0.0.1:{served['sql_port']}/?query=SELECT+1",
                f"http://127.0.0.1:{served['sql_port']}/?query=SELECT+1&user=analyst&password=wrong"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url)
        assert info.value.code == 401


@pytest.mark.parametrize("request_bytes,status", [
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 270_000 + b"\r\n\r\n", 431),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
])
def test_requests_the_server_refuses_before_the_app_are_json(served, request_bytes, status):
    """waitress answers these itself, before Flask: in JSON like every other error of the API."""
    port = int(served["base"].rsplit(":", 1)[1])
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(request_bytes)
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:   # the server answers and closes before reading the rest
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == str(status).encode() and b"Content-Type: application/json" in head
    assert json.loads(body)["error"]


def test_serve_file_is_the_owners_alone(served):
    info = served["db"] / ".clipsearch.serve"
    assert oct(info.stat().st_mode & 0o777) == "0o600"


def test_watched_folder_follows_its_files(served):
    watched = served["watched"]
    first = next(watched.iterdir())
    rng = np.random.default_rng(94)
    added = watched / "added.png"
    added.write_bytes(shapes.encode(shapes.render(shapes.random_spec(rng, "orange", "triangle"), rng),
                                       "PNG", rng))
    wait_until(lambda: any(r["path"] == str(added) for r in _search(served["base"], "an orange triangle")))
    first.write_bytes(shapes.encode(shapes.render(shapes.random_spec(rng, "white", "cross"), rng), "PNG",
                                       rng))   # changed in place: a red circle no more
    os.utime(first, ns=(time.time_ns(), time.time_ns() + 2_000_000_000))
    wait_until(lambda: _search(served["base"], "a white cross")[0]["path"] == str(first))
    assert sum(r["path"] == str(first) for r in _search(served["base"], "a red circle")) == 1  # one row, the new
    added.unlink()
    wait_until(lambda: all(r["path"] != str(added) for r in _search(served["base"], "an orange triangle")))


def test_sqlalchemy_dialect_and_pandas(served):
    """The dialect Superset uses (clickhousedb://) and pandas.read_sql, as the analyst."""
    import pandas as pd
    import sqlalchemy as sa
    engine = sa.create_engine(f"clickhousedb://analyst:{ANALYST_PASSWORD}@127.0.0.1:{served['sql_port']}/default")
    try:
        with engine.connect() as connection:
            frame = pd.read_sql("SELECT count() AS n, min(price) AS low FROM images WHERE price IS NOT NULL",
                                connection)
        assert frame.to_dict("records") == [{"n": 40, "low": 0}]
        assert {"images", "labels", "load_errors", "search_log"} <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize("sql", [
    "SELECT file('/etc/passwd')",
    "SELECT 1 INTO OUTFILE '/tmp/clipsearch-outfile-test.txt'",
    "DESCRIBE url('http://127.0.0.1:9/x.csv', 'CSVWithNames')",
    "KILL QUERY WHERE 1",
    "SELECT 1; DROP TABLE images",
])
def test_analyst_cannot_reach_files_or_network_through_readonly_gaps(analyst, sql):
    """readonly=1 alone lets these through on the embedded engine; the statement check does not."""
    with pytest.raises(Exception, match=r"Code: (164|62)"):  # 62: more than one statement
        analyst.query(sql)
    assert not os.path.exists("/tmp/clipsearch-outfile-test.txt")


def test_a_read_only_client_gets_the_read_only_session(served):
    """clickhouse-connect sends readonly=1 (clipsearch's own analyst_sql on a server does): honoured."""
    url = (served["db"] / ".clipsearch.serve").read_text()
    client = clickhouse_connect.get_client(dsn=json.loads(url)["url"], settings={"readonly": 1})
    try:
        with pytest.raises(Exception, match=r"Code: 164"):
            client.command("CREATE TABLE sneaky (a String) ENGINE = Memory")
        assert client.query("SELECT count() FROM images").result_rows[0][0] >= 41
    finally:
        client.close()


def test_searches_just_before_shutdown_reach_search_log(served):
    """Searches right before SIGTERM: their search_log rows are still buffered, and the fixture's exit checks
    that a clean shutdown wrote them."""
    for i in range(5):
        assert _search(served["base"], f"a red circle {i}")
        served["searched_last"].append(f"a red circle {i}")
