"""The page's SQL console and dashboards: POST /api/sql (read-only, results equal to Collection.sql, CSV),
GET /api/queries, the dashboard's query files, and the SQL and Dashboard tabs in headless Chromium."""
from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from clipsearch.service import shapes
from clipsearch.service.app import create_app
from clipsearch.settings import Settings
from scripts.screenshot import find_chromium, free_port, render
from tests.conftest import ROOT

QUERIES = ROOT / "sql" / "queries"
N = 60
CATEGORIES = ("poster", "badge", "magnet")
SEARCHES = [("a red circle", []), ("a red circle", []), ("a blue star", ["price<30"]),
            ("a green cross", ["category=nothing-like-this"])]
# What the dashboard draws (service/static/console.js PANELS), each a file of sql/queries.
PANEL_FILES = ["search_log_per_hour.sql", "search_log_latency_per_hour.sql", "search_log_top_queries.sql",
               "search_log_zero_results.sql", "search_clicks_per_hour.sql", "search_log_never_opened.sql",
               "images_per_category.sql", "images_per_format.sql",
               "images_per_month.sql", "load_errors_by_reason.sql"]


@pytest.fixture(scope="module")
def served(tmp_path_factory, model):
    """A loaded catalogue (category, price; files dated in two months), three files that fail to load,
    four searches in search_log; the app over it as a test client and served by waitress."""
    from waitress.server import create_server
    folder = tmp_path_factory.mktemp("console")
    rng = np.random.default_rng(91)
    manifest = shapes.write_catalogue(folder / "images", [shapes.random_spec(rng) for _ in range(N)], 91,
                                         extra=lambda i: {"category": CATEGORIES[i % 3], "price": i})
    images = sorted(p for p in (folder / "images").iterdir() if p.suffix != ".csv")
    for i, path in enumerate(images):  # half taken (by file date) in March 2024, half in January 2025
        stamp = datetime(2024, 3, 15, 12).timestamp() if i % 2 else datetime(2025, 1, 10, 12).timestamp()
        os.utime(path, (stamp, stamp))
    bad = folder / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.png").write_text("not an image\n")
    (bad / "cut.jpg").write_bytes(next(p for p in images if p.suffix == ".jpg").read_bytes()[:300])
    app = create_app(Settings(db=str(folder / "db")), model=model, config={"TESTING": True})
    photos = app.extensions["clipsearch"]
    photos.load(manifest)
    photos.load(bad)
    for text, filters in SEARCHES:
        photos.search(text, k=5, filters=filters)
    photos.searcher.log.flush()   # search_log rows are written in batches, off the search's path
    server = create_server(app, host="127.0.0.1", port=0, threads=4, asyncore_use_poll=True)
    threading.Thread(target=server.run, daemon=True).start()
    yield {"app": app, "client": app.test_client(), "photos": photos, "folder": folder, "images": images,
           "url": f"http://127.0.0.1:{server.effective_port}/"}
    server.close()
    photos.close()


def post(served, **body):
    return served["client"].post("/api/sql", json=body)


def query_file(name: str) -> str:
    return (QUERIES / name).read_text()


# -- POST /api/sql -------------------------------------------------------------------------------
VECTOR_SQL = ("SELECT id, path, category, round(1 - cosineDistance(embedding, clipTextEmbedding('a red circle')), 5) "
              "AS score FROM images WHERE price < 40 ORDER BY score DESC, id LIMIT 7")


@pytest.mark.parametrize("sql,params", [(VECTOR_SQL, None),
                                        ("SELECT category, count() AS n, round(avg(price), 2) AS avg_price, "
                                         "groupArray(2)(format) AS formats FROM images WHERE price >= {lo:Float64} "
                                         "GROUP BY category ORDER BY category", {"lo": 10}),
                                        *[(query_file(name), None) for name in PANEL_FILES],
                                        (query_file("embedding_coverage.sql"), None),
                                        (query_file("load_errors_recent.sql"), None),
                                        (query_file("search_log_latency.sql"), None)])
def test_results_equal_collection_sql(served, sql, params):
    res = post(served, sql=sql, params=params)
    assert res.status_code == 200, res.get_json()
    data = res.get_json()
    expected = served["photos"].sql(sql, params)
    assert expected, "a query with no rows proves little"
    assert [c["name"] for c in data["columns"]] == list(expected[0])
    assert all(c["type"] for c in data["columns"])
    assert data["rows"] == [list(row.values()) for row in expected]  # the same rows, in the same order
    assert data["row_count"] == len(expected) and data["truncated"] is False and data["elapsed_ms"] > 0


def test_the_dashboard_files_answer_their_questions(served):
    def rows(name):
        res = post(served, sql=query_file(name))
        assert res.status_code == 200, res.get_json()
        data = res.get_json()
        return [dict(zip([c["name"] for c in data["columns"]], r, strict=True)) for r in data["rows"]]

    images = served["images"]
    assert {r["category"]: r["images"] for r in rows("images_per_category.sql")} == \
        Counter(CATEGORIES[i % 3] for i in range(N))
    formats = Counter("JPEG" if p.suffix == ".jpg" else "PNG" for p in images)
    per_format = rows("images_per_format.sql")
    assert {r["format"]: r["images"] for r in per_format} == formats
    assert sum(r["megabytes"] for r in per_format) == pytest.approx(sum(p.stat().st_size for p in images) / 1e6,
                                                                    abs=0.11)
    assert [(r["month"], r["images"], r["with_exif_date"]) for r in rows("images_per_month.sql")] == \
        [("2024-03-01", N // 2, 0), ("2025-01-01", N // 2, 0)]
    assert {(r["reason"], r["failures"], r["files"]) for r in rows("load_errors_by_reason.sql")} == \
        {("empty file", 1, 1), ("not an image", 1, 1), ("cannot decode", 1, 1)}
    recent = rows("load_errors_recent.sql")
    assert sorted(Path(r["path"]).name for r in recent) == ["cut.jpg", "empty.jpg", "notes.png"]
    latency = rows("search_log_latency_per_hour.sql")
    assert sum(r["searches"] for r in latency) == len(SEARCHES)
    assert all(r["p95_total_ms"] >= r["p50_total_ms"] > 0 for r in latency)
    for name in ("images_per_category.sql", "images_per_format.sql", "images_per_month.sql",
                 "load_errors_by_reason.sql", "load_errors_recent.sql", "search_log_latency_per_hour.sql"):
        first = query_file(name).splitlines()[0]
        assert first.startswith("-- ") and "?" in first, name


def state(served) -> dict:
    photos = served["photos"]
    return {"tables": photos.sql("SHOW TABLES"), "images": photos.count(),
            "columns": photos.sql("SELECT name, type FROM system.columns WHERE table = 'images' ORDER BY name"),
            "log": photos.sql("SELECT count() AS n FROM search_log"),
            "errors": photos.sql("SELECT count() AS n FROM load_errors")}


def test_writes_files_network_and_settings_are_refused(served, listener, tmp_path):
    url, requests_seen = listener
    outfile = tmp_path / "out.csv"
    before = state(served)
    refused = [
        "INSERT INTO images (id, path) VALUES ('x', 'y')",
        "INSERT INTO search_log (kind, text) SELECT 'text', 'planted'",
        "DROP TABLE images",
        "SELECT 1; DROP TABLE search_log",
        "TRUNCATE TABLE search_log",
        "ALTER TABLE images DELETE WHERE 1",
        "ALTER TABLE images ADD COLUMN planted String",
        "DELETE FROM load_errors WHERE 1",
        "CREATE TABLE planted (x Int8) ENGINE = Memory",
        "OPTIMIZE TABLE images FINAL",
        "SET readonly = 0",
        "SELECT count() FROM images SETTINGS readonly = 0",
        "SELECT count() FROM images SETTINGS max_result_rows = 0",
        "KILL QUERY WHERE 1",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT file('/etc/passwd') AS f",
        "SELECT `file`('/etc/passwd') AS f",
        "SELECT 1 # '\n, file('/etc/passwd') AS f -- '",   # '#' starts a comment: the quote is not a string
        "DESCRIBE file('/etc/passwd', 'LineAsString')",
        f"SELECT 1 AS x INTO OUTFILE '{outfile}'",
        f"SELECT 1 AS x INTO /* */ OUTFILE '{outfile}' AND STDOUT",
        f"SELECT * FROM url('{url}/a.csv', 'CSVWithNames')",
        f"DESCRIBE url('{url}/b.csv', 'CSVWithNames')",      # schema inference would fetch it
        f"DESC s3('{url}/c.csv', 'CSVWithNames')",
        "SELECT * FROM executable('id', 'TSV', 'x String')",
        "SELECT * FROM remote('127.0.0.1', system.one)",
    ]
    for sql in refused:
        for fmt in ("json", "csv"):
            res = post(served, sql=sql, format=fmt)
            assert res.status_code == 400, (sql, fmt, res.data[:300])
            error = res.get_json()["error"]
            assert error and "root:" not in error and "secret_header" not in error, (sql, error)
    assert state(served) == before
    assert not outfile.exists() and requests_seen == []
    # What refuses them: ClickHouse's read-only session, and the console's own check for what that misses
    assert "read-only" in post(served, sql="DROP TABLE images").get_json()["error"]
    assert "readonly mode" in post(served, sql="SELECT 1 SETTINGS readonly = 0").get_json()["error"]
    assert "file()" in post(served, sql="SELECT file('/etc/passwd')").get_json()["error"]
    assert "INTO OUTFILE" in post(served, sql=f"SELECT 1 INTO OUTFILE '{outfile}'").get_json()["error"]


def test_the_sql_tab_runs_under_the_ports_analyst_policy(served):
    """One analyst policy for the page and the ClickHouse port (and one object in a served process): the
    page's sessions have the port's parser bounds, so a crafted text costs the engine little here too."""
    from clipsearch.analyst.policy import AnalystPolicy
    res = post(served, sql="SELECT getSetting('max_parser_depth') AS d, getSetting('max_parser_backtracks') AS b")
    assert res.get_json()["rows"] == [[AnalystPolicy.PARSER_LIMITS["max_parser_depth"],
                                       AnalystPolicy.PARSER_LIMITS["max_parser_backtracks"]]]
    deep = post(served, sql="SELECT " + "(" * 100 + "1" + ")" * 100)
    assert deep.status_code == 400 and "parse depth" in deep.get_json()["error"]


def test_csv_download(served):
    sql = "SELECT path, category, price, width FROM images ORDER BY path"
    res = post(served, sql=sql, format="csv", max_rows=5)  # max_rows is for the JSON answer only
    assert res.status_code == 200 and res.mimetype == "text/csv"
    assert res.headers["Content-Disposition"].startswith("attachment;")
    table = list(csv.reader(io.StringIO(res.get_data(as_text=True))))
    expected = served["photos"].sql(sql)
    assert table[0] == ["path", "category", "price", "width"]
    assert table[1:] == [[r["path"], r["category"], f"{r['price']:g}", str(r["width"])] for r in expected]
    assert len(table) == N + 1


def test_parameters_and_limits(served):
    res = post(served, sql="SELECT {n:UInt32} * 2 AS v, {s:String} AS s, {f:Float64} AS f",
               params={"n": 21, "s": "it's {x:String}", "f": "2.5"})
    assert res.status_code == 200 and res.get_json()["rows"] == [[42, "it's {x:String}", 2.5]]
    res = post(served, sql="SELECT {missing:String} AS v")
    assert res.status_code == 400 and "missing" in res.get_json()["error"]
    res = post(served, sql="SELECT number FROM numbers(50)", max_rows=10)
    data = res.get_json()
    assert data["rows"] == [[i] for i in range(10)] and data["row_count"] == 50 and data["truncated"] is True
    res = post(served, sql="SELECT number FROM system.numbers LIMIT 200000")
    assert res.status_code == 400 and "Limit for result exceeded" in res.get_json()["error"]
    # chdb hands the partial output of a query that failed mid-result to the session's next query
    assert post(served, sql="SELECT 'next' AS x").get_json()["rows"] == [["next"]]
    for body, message in [({"sql": "SELECT 1", "params": {"1x": 1}}, "not letters"),
                          ({"sql": "SELECT 1", "params": {"a": True}}, "string or a number"),
                          ({"sql": "SELECT 1", "params": {"a": [1]}}, "string or a number"),
                          ({"sql": "SELECT 1", "params": {f"p{i}": i for i in range(101)}}, "at most 100"),
                          ({"sql": "SELECT 1", "params": []}, "must be an object"),
                          ({"sql": "SELECT 1 AS " + "x" * 20_000}, "at most 20000"),
                          ({"sql": ""}, "empty SQL"), ({"sql": "  -- nothing\n"}, ""),
                          ({}, "sql is required"), ({"sql": 1}, "sql must be a string"),
                          ({"sql": "SELECT 1", "format": "xml"}, "format"),
                          ({"sql": "SELECT 1", "max_rows": 0}, "max_rows"),
                          ({"sql": "SELECT 1", "colour": 1}, "colour is not a known field"),
                          ({"sql": "SELECT 1 FORMAT CSV"}, "leave out FORMAT")]:
        res = served["client"].post("/api/sql", json=body)
        assert res.status_code == 400 and message in res.get_json()["error"], (body, res.get_json())
    for res in (served["client"].post("/api/sql", data="SELECT 1", content_type="text/plain"),
                served["client"].post("/api/sql", data={"sql": "SELECT 1"}),
                served["client"].post("/api/sql", data="[1]", content_type="application/json"),
                served["client"].get("/api/sql")):
        assert res.status_code in (400, 405) and res.get_json()["error"]


def test_queries_lists_every_shipped_file(served):
    res = served["client"].get("/api/queries")
    assert res.status_code == 200
    queries = res.get_json()["queries"]
    files = sorted(QUERIES.glob("*.sql"))
    assert [q["name"] for q in queries] == [f.name for f in files] and len(files) >= 15
    for q, f in zip(queries, files, strict=True):
        text = f.read_text()
        assert q["sql"] == text
        comment = [line[2:].strip() for line in text.splitlines()[:next(
            i for i, line in enumerate(text.splitlines()) if not line.startswith("--"))]]
        assert q["description"] == " ".join(comment) and "?" in q["description"]
    by_name = {q["name"]: q for q in queries}
    assert by_name["text_search_with_filters.sql"]["params"] == [
        {"name": "query_text", "type": "String"}, {"name": "category", "type": "String"},
        {"name": "max_price", "type": "Float64"}]
    assert by_name["images_per_format.sql"]["params"] == []
    assert set(PANEL_FILES) <= set(by_name)


def test_every_parameterless_shipped_query_runs_in_the_console(served):
    for q in served["client"].get("/api/queries").get_json()["queries"]:
        if not q["params"]:
            res = post(served, sql=q["sql"])
            assert res.status_code == 200, (q["name"], res.get_json())


# -- the page in headless Chromium ------------------------------------------------------------------
def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


def table(dom: str) -> list[list[str]]:
    """The SQL tab's result table, as the text of its cells (the header's name and type as one cell)."""
    found = re.search(r'<table id="sql-table">(.*?)</table>', dom, re.S)
    assert found, "no result table"
    return [[_text(cell) for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", found.group(1), re.S)]


@pytest.fixture(scope="module")
def page(served):
    if not find_chromium():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return served["url"]


@pytest.mark.slow
def test_sql_tab_runs_the_sql_in_its_address_and_escapes_every_value(page):
    sql = ("SELECT format, count() AS images, '<img src=x onerror=alert(1)><b>bold</b>' AS html, NULL AS nothing "
           "FROM images GROUP BY format ORDER BY format")
    dom = render(page + "?" + urllib.parse.urlencode({"tab": "sql", "sql": sql}), None)
    assert 'data-tab="sql"' in dom and re.search(r'id="view-search"[^>]*hidden', dom)
    assert re.search(r'id="tab-link-sql" class="active"', dom)
    rows = table(dom)
    assert rows[0] == ["formatLowCardinality(String)", "imagesUInt64", "htmlString", "nothingNullable(Nothing)"]
    assert [r[0] for r in rows[1:]] == ["JPEG", "PNG"] and all(r[3] == "NULL" for r in rows[1:])
    assert "&lt;img src=x onerror=alert(1)&gt;&lt;b&gt;bold&lt;/b&gt;" in dom  # shown as text
    assert "<b>bold</b>" not in dom and "<img src=\"x\"" not in dom and "onerror=\"" not in dom
    assert re.search(r"2 rows in \d+ ms", dom)


@pytest.mark.slow
def test_sql_tab_lists_the_shipped_queries_and_loads_one(page, served):
    dom = render(page + "?tab=sql&query=images_per_format.sql", None)
    listed = re.findall(r'<button type="button" class="query[^"]*" data-name="([^"]+)"', dom)
    assert listed == sorted(f.name for f in QUERIES.glob("*.sql"))
    assert re.search(r'class="query active" data-name="images_per_format.sql"', dom)
    rows = table(dom)
    assert rows[0] == ["formatString", "imagesUInt64", "megabytesFloat64"] and len(rows) == 3   # a video once
    # A query with a {name:Type} placeholder gets an input for it and waits; with the value in the address it runs.
    dom = render(page + "?tab=sql&query=image_neighbours.sql", None)
    assert re.search(r'<input data-param="image_id" placeholder="String"', dom) and 'id="sql-table"' not in dom
    image_id = served["photos"].sql("SELECT id FROM images ORDER BY id LIMIT 1")[0]["id"]
    dom = render(page + f"?tab=sql&query=image_neighbours.sql&param_image_id={image_id}", None)
    assert len(table(dom)) == 11 and image_id not in "".join(r[0] for r in table(dom)[1:])


@pytest.mark.slow
def test_sql_tab_shows_a_refusal(page):
    dom = render(page + "?" + urllib.parse.urlencode({"tab": "sql", "sql": "DROP TABLE images"}), None)
    assert re.search(r'<span id="sql-status" role="status" class="error">[^<]*read-only', dom)
    assert 'id="sql-table"' not in dom


@pytest.mark.slow
def test_dashboard_draws_a_chart_per_panel(page):
    dom = render(page + "#dashboard", None, (1280, 1600))
    assert 'data-dashboard="ready"' in dom and 'data-chartjs="4.6.1"' in dom
    panels = dict(re.findall(r'<figure class="panel" data-file="([^"]+)" data-state="(\w+)"', dom))
    assert panels == {name: "drawn" for name in PANEL_FILES}
    assert len(re.findall(r"<canvas [^>]*role=\"img\"", dom)) == len(PANEL_FILES)
    assert 'aria-label="Images per format: 2 rows"' in dom and 'aria-label="Load errors by reason: 3 rows"' in dom


@pytest.mark.slow
def test_dashboard_works_on_a_catalogue_without_a_manifest(tmp_path):
    """A table without a `category` column (a folder, no manifest): images per folder instead of per category,
    and every panel draws or says there is nothing yet."""
    if not find_chromium():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    rng = np.random.default_rng(92)
    folder = shapes.write_catalogue(tmp_path / "images", [shapes.random_spec(rng) for _ in range(12)], 92,
                                       manifest=None)
    port = free_port()
    # Its own process: chdb opens one database folder per process, and this module's store is open.
    code = ("import sys\nfrom waitress import serve\nfrom clipsearch.service.app import create_app\n"
            "from clipsearch.settings import Settings\n"
            "app = create_app(Settings(db=sys.argv[1]))\napp.extensions['clipsearch'].load(sys.argv[2])\n"
            "serve(app, host='127.0.0.1', port=int(sys.argv[3]), threads=4)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "db"), str(folder), str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.25)
        dom = render(f"http://127.0.0.1:{port}/?tab=dashboard", None)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    panels = dict(re.findall(r'<figure class="panel" data-file="([^"]+)" data-state="(\w+)"', dom))
    assert panels["images_per_folder.sql"] == panels["images_per_format.sql"] == panels["images_per_month.sql"] \
        == "drawn"
    assert panels["search_log_per_hour.sql"] == panels["load_errors_by_reason.sql"] == "empty"  # nothing yet
    assert "error" not in panels.values() and "could not run" not in dom
    assert sorted(panels) == sorted({*PANEL_FILES, "images_per_folder.sql"} - {"images_per_category.sql"})
