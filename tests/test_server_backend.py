"""The server backend: clickhouse-connect over HTTP gives the same rows and rankings as the embedded store.

With CLICKHOUSE_URL set these tests run against that ClickHouse server.
Without it they run against tests/clickhouse_http.py, a test-only HTTP
endpoint over the embedded engine, so the clickhouse-connect code path
(HTTP transport, server-side parameter binding, Arrow inserts, error
responses) runs in CI too.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid

import clickhouse_connect
import numpy as np
import pytest

from clipsearch.errors import StoreError
from clipsearch.loader.load import load
from clipsearch.search.filters import parse_filter
from clipsearch.search.searcher import Searcher
from clipsearch.settings import Settings
from clipsearch.store.catalog import Catalog
from tests.conftest import ROOT, random_specs, write_catalogue


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    """A ClickHouse HTTP URL with a fresh database: the real server if given, else the test endpoint."""
    url = os.environ.get("CLICKHOUSE_URL")
    proc = None
    if not url:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "tests.clickhouse_http", "--db",
                                 str(tmp_path_factory.mktemp("chserver")), "--port", str(port)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://default:@127.0.0.1:{port}/default"
        for _ in range(100):
            try:
                clickhouse_connect.get_client(dsn=url).close()
                break
            except Exception:
                time.sleep(0.2)
    base = url.rstrip("/").rsplit("/", 1)[0] if url.count("/") > 2 else url
    database = f"clipsearch_test_{uuid.uuid4().hex[:8]}"
    admin = clickhouse_connect.get_client(dsn=url)
    admin.command(f"CREATE DATABASE {database}")
    yield f"{base}/{database}"
    admin.command(f"DROP DATABASE IF EXISTS {database}")
    admin.close()
    if proc:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server-cat")
    manifest = write_catalogue(folder / "imgs", random_specs(60, 3), 3,
                               extra=lambda i: {"price": i, "tag": f"t{i % 3}"})
    (folder / "imgs" / "broken.jpg").write_text("not an image")
    with open(manifest, "a") as f:
        f.write("broken.jpg,red,circle,1,t0\n")
    return manifest


@pytest.fixture(scope="module")
def stores(server_url, catalogue, model, tmp_path_factory):
    server = Catalog.open(Settings(clickhouse_url=server_url))
    embedded = Catalog.open(tmp_path_factory.mktemp("server-embedded") / "db")
    summaries = [load(str(catalogue), s, model, progress=False) for s in (server, embedded)]
    yield server, embedded, summaries
    embedded.close()
    server.close()


def test_loads_are_identical(stores):
    server, embedded, summaries = stores
    assert [(s.loaded, s.failed) for s in summaries] == [(60, 1), (60, 1)]
    sql = ("SELECT id, path, width, height, format, file_size, taken_at, camera, model, price, tag, embedding "
           "FROM images ORDER BY id")
    assert server.query(sql) == embedded.query(sql)
    assert [r["reason"].split(";")[0] for r in server.query("SELECT reason FROM load_errors")] == \
        ["not an image (unknown or unsupported format"]
    assert server.images.columns() == embedded.images.columns()


def test_rankings_and_filters_are_identical(stores, model):
    server, embedded, _ = stores
    searchers = [Searcher(s, lambda: model) for s in (server, embedded)]
    for text, filters in [("a blue circle", []), ("a red star", ["price>=20", "tag!=t1"]), ("a white cross", [])]:
        results = [s.search(text, k=10, filters=[parse_filter(f) for f in filters]).rows for s in searchers]
        assert [r["id"] for r in results[0]] == [r["id"] for r in results[1]]
        np.testing.assert_allclose([r["score"] for r in results[0]], [r["score"] for r in results[1]], atol=1e-6)
    first = server.query("SELECT id FROM images ORDER BY id LIMIT 1")[0]["id"]
    similar = [[r["id"] for r in s.search(image_id=first, k=5).rows] for s in searchers]
    assert similar[0] == similar[1]
    for s in searchers:
        s.close()   # writes the buffered search_log rows
    assert server.query("SELECT count() AS n FROM search_log")[0]["n"] == 4


def test_duplicate_pairs_are_identical(stores):
    """The hashing SQL binds 128 hyperplanes and UInt128 masks: the same pairs through clickhouse-connect."""
    from clipsearch.images.duplicates import duplicate_pairs
    server, embedded, _ = stores
    pairs = [duplicate_pairs(s, 0.06) for s in (server, embedded)]  # look-alikes pair up at 0.06
    assert pairs[0] and [(p["id_a"], p["id_b"]) for p in pairs[0]] == [(p["id_a"], p["id_b"]) for p in pairs[1]]


def test_reload_through_the_server_is_idempotent(stores, catalogue, model):
    server, _, _ = stores
    again = load(str(catalogue), server, model, progress=False)
    assert (again.loaded, again.already_present) == (0, 60)
    assert server.query("SELECT count() AS n, uniqExact(id) AS u FROM images")[0] == {"n": 60, "u": 60}


def test_hostile_values_are_bound_not_executed(stores, model):
    server, _, _ = stores
    rows = Searcher(server, lambda: model).search("a red star", k=100, filters=[
        parse_filter("tag=t0' OR '1'='1"), parse_filter("tag!=\\'; DROP TABLE images; --")]).rows
    assert rows == [] and server.images.count() == 60


def test_server_errors_are_clean_messages(stores):
    server, _, _ = stores
    with pytest.raises(StoreError) as info:
        server.query("SELECT nope FROM images")
    assert str(info.value).startswith("Code: 47. DB::Exception: Unknown expression identifier `nope`")


def test_cli_uses_clickhouse_url(stores, server_url, cli):
    result = cli("search", "a green square", "--k", "3", "--json", env={"CLICKHOUSE_URL": server_url})
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 3


def test_cli_sql_binary_formats_over_a_server(stores, server_url, cli):
    """`clipsearch sql --format Parquet|Arrow` through clickhouse-connect: the bytes as the server sent them."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    sql = "SELECT id, embedding FROM images ORDER BY id LIMIT 5"
    env = {"CLICKHOUSE_URL": server_url}
    ids = [json.loads(line)["id"] for line in cli("sql", sql, "--format", "JSONEachRow", env=env).stdout.splitlines()]
    parquet = cli("sql", sql, "--format", "Parquet", env=env)
    assert parquet.returncode == 0, parquet.stderr
    assert pq.read_table(pa.BufferReader(parquet.stdout_bytes)).column("id").to_pylist() == ids
    arrow = cli("sql", sql, "--format", "ArrowStream", env=env).stdout_bytes
    assert pa.ipc.open_stream(pa.BufferReader(arrow)).read_all().column("id").to_pylist() == ids
    assert len(ids) == 5


def test_the_pages_sql_tab_on_a_server(server_url, stores):
    """The page's SQL tab over a server (here the product's own ClickHouse HTTP endpoint): clipsearch's
    read-only client sends its own limits and readonly=1, which the server accepts; results stream; an
    error met mid-result is a 400 with ClickHouse's message."""
    from clipsearch.service.app import create_app
    app = create_app(Settings(clickhouse_url=server_url))
    try:
        client = app.test_client()
        ok = client.post("/api/sql", json={"sql": "SELECT number, toString(number) AS s FROM numbers(3)"})
        assert ok.status_code == 200 and ok.get_json()["rows"] == [[0, "0"], [1, "1"], [2, "2"]], ok.get_json()
        refused = client.post("/api/sql", json={"sql": "SELECT file('/etc/passwd')"})
        assert refused.status_code == 400 and "file()" in refused.get_json()["error"]
        too_many = client.post("/api/sql", json={"sql": "SELECT number FROM numbers(200000)"})
        assert too_many.status_code == 400 and too_many.get_json()["error"].startswith("Code: 396.")
    finally:
        app.extensions["clipsearch"].close()


def test_the_library_is_the_same_on_a_server(server_url, stores, model):
    """GET /api/library (the page before a search) through clickhouse-connect: the embedded store's pages."""
    from clipsearch.service.app import create_app
    _, embedded, _ = stores
    app = create_app(Settings(clickhouse_url=server_url), model=model)
    try:
        body = app.test_client().get("/api/library?k=7&offset=3&facet=tag&filter=price>=10").get_json()
    finally:
        app.extensions["clipsearch"].close()
    here = Searcher(embedded, lambda: model, log=False).browse(7, [parse_filter("price>=10")], 3, ["tag"])
    assert [r["path"] for r in body["results"]] == [r["path"] for r in here.rows] and len(here.rows) == 7
    assert body["facets"] == here.facets and body["next_offset"] == here.next_offset == 10
    assert sum(c["count"] for c in here.facets["tag"]) == 50


def test_reembed_on_a_server_and_its_text_function_follows(server_url, catalogue, model):
    """`reembed` on a server store (its own database here): the switch is an EXCHANGE TABLES there too, and
    the server's clipTextEmbedding script reads the store's new model through CLICKHOUSE_URL."""
    import clipsearch
    base = server_url.rsplit("/", 1)[0]
    database = f"clipsearch_reembed_{uuid.uuid4().hex[:8]}"
    admin = clickhouse_connect.get_client(dsn=server_url)
    admin.command(f"CREATE DATABASE {database}")
    url = f"{base}/{database}"
    try:
        with clipsearch.open(url=url, model=model, log_searches=False) as photos:
            photos.load(catalogue, workers=0)
            summary = photos.reembed("ViT-B-32", "random", workers=0)
            assert summary.switched and summary.embedded == 60 and photos.count() == 60
            assert photos.sql("SELECT model, length(any(embedding)) AS d FROM images GROUP BY model") == \
                [{"model": "ViT-B-32:random", "d": 512}]
            result = photos.search("a green square", k=10)
            assert result.model == "ViT-B-32:random" and len(result.rows) == 10
        script = ROOT / "sql" / "udf" / "clip_text_embedding.py"
        env = {**os.environ, "CLICKHOUSE_URL": url}
        env.pop("CLIPSEARCH_MODEL", None)
        out = subprocess.run([sys.executable, str(script)], input="a red circle\n", capture_output=True, text=True,
                             cwd=ROOT, env=env, timeout=300, check=True).stdout
        assert len(json.loads(out)) == 512   # the bundled model's would be 128
    finally:
        admin.command(f"DROP DATABASE IF EXISTS {database}")
        admin.close()


def test_a_server_store_defines_clip_text_embedding_once(server_url):
    """Opening a store on a server defines clipTextEmbedding over the executable function (server functions are
    global: the same for every store); a later open finds it so and writes nothing (a user without the CREATE
    FUNCTION privilege opens a store the admin set up); a server that refuses it still opens the store."""
    from clipsearch.store.catalog import SERVER_EMBEDDING_FUNCTION
    catalog = Catalog.open(Settings(clickhouse_url=server_url))
    connection = catalog.connection
    try:
        defined = connection.query("SELECT create_query FROM system.functions WHERE name = 'clipTextEmbedding'")[0]
        # the query's start and its limit, read in the query
        assert f"{SERVER_EMBEDDING_FUNCTION}(text, toString(toUnixTimestamp64Micro(now64(6))), toString(" \
            "getSetting('max_execution_time')))" in defined["create_query"]
        writes = connection.writes.count
        Catalog(connection)
        assert connection.writes.count == writes
        # without the executable function installed, a call fails naming it
        with pytest.raises(StoreError, match=SERVER_EMBEDDING_FUNCTION):
            connection.query("SELECT clipTextEmbedding('a red circle')")
        connection.command("CREATE OR REPLACE FUNCTION clipTextEmbedding AS (text) -> [0.5]")   # someone else's
        command = connection.command

        def no_privilege(sql: str, params: dict | None = None) -> None:
            if sql.startswith("CREATE OR REPLACE FUNCTION"):
                raise StoreError("Code: 497. DB::Exception: Not enough privileges. (ACCESS_DENIED)")
            command(sql, params)
        connection.command = no_privilege   # type: ignore[method-assign]
        Catalog(connection)   # opens
        assert connection.query("SELECT clipTextEmbedding('x') AS v")[0]["v"] == [0.5]   # left as it was
    finally:
        connection.command = command   # type: ignore[method-assign]
        connection.command("DROP FUNCTION IF EXISTS clipTextEmbedding")
        connection.close()
