"""The SQL analysts run: every file of sql/queries on a demo catalogue, clipTextEmbedding(), the cluster DDL."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from PIL import Image

from clipsearch.analyst.readonly import INTERNAL_PREFIX
from clipsearch.loader.load import load
from clipsearch.models.sql_functions import register_embedded
from clipsearch.search.filters import parse_filter
from clipsearch.search.searcher import Searcher
from clipsearch.service.shapes import CATEGORIES, make_catalogue
from clipsearch.store.catalog import SERVER_EMBEDDING_FUNCTION, Catalog
from clipsearch.store.connection import sql_statements
from tests.conftest import ROOT, granularity

QUERIES = ROOT / "sql" / "queries"
N = 300


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("sqlq")
    manifest = make_catalogue(folder / "demo", N, seed=3)
    # Plant a near-duplicate: the first image re-encoded as a smaller JPEG.
    first = sorted((folder / "demo" / "images").iterdir())[0]
    copy = Image.open(first).convert("RGB")
    copy = copy.resize((max(8, copy.width * 3 // 4), max(8, copy.height * 3 // 4)))
    buf = io.BytesIO()
    copy.save(buf, "JPEG", quality=80)
    (folder / "demo" / "images" / "zz-copy.jpg").write_bytes(buf.getvalue())
    with open(manifest, "a") as f:
        f.write("images/zz-copy.jpg,poster,1.0\n")
    store = Catalog.open(folder / "db")
    assert load(str(manifest), store, model, progress=False).loaded == N + 1
    register_embedded(store, lambda label: model)
    searcher = Searcher(store, lambda: model)  # logs these searches; the tests compare with a quiet one
    for text, filters in [("a red circle", []), ("a red circle", []), ("a blue star", ["price<50"]),
                          ("a green cross", ["category=nothing-like-this"])]:
        searcher.search(text, k=5, filters=[parse_filter(f) for f in filters])
    searcher.search(image_id=store.query("SELECT id FROM images ORDER BY id LIMIT 1")[0]["id"], k=5)
    searcher.close()   # writes its buffered search_log rows
    yield store, Searcher(store, lambda: model, log=False), first, folder / "demo" / "images" / "zz-copy.jpg"
    store.close()


def run(store, name, **params):
    return store.query((QUERIES / name).read_text(), params)


def test_every_query_file_says_what_it_answers():
    files = sorted(QUERIES.glob("*.sql"))
    assert len(files) >= 9
    for f in files:
        assert f.read_text().startswith("-- ") and "?" in f.read_text().splitlines()[0], f.name


def test_text_search_with_filters(catalogue, model):
    store, searcher, _, _ = catalogue
    rows = run(store, "text_search_with_filters.sql", query_text="a red circle", category="poster", max_price=60)
    assert 0 < len(rows) <= 10
    assert all(r["category"] == "poster" and r["price"] <= 60 for r in rows)
    assert "red-circle" in rows[0]["path"]
    same = searcher.search("a red circle", k=10, filters=[parse_filter("category=poster"), parse_filter("price<=60")])
    assert [r["id"] for r in rows] == [r["id"] for r in same.rows]


def test_image_neighbours_match_more_like_this(catalogue):
    store, searcher, _, _ = catalogue
    image_id = store.query("SELECT id FROM images ORDER BY id LIMIT 1 OFFSET 7")[0]["id"]
    rows = run(store, "image_neighbours.sql", image_id=image_id)
    assert len(rows) == 10 and image_id not in {r["id"] for r in rows}
    assert [r["id"] for r in rows] == [r["id"] for r in searcher.search(image_id=image_id, k=10).rows]


def test_near_duplicate_pairs_find_the_planted_copy_only(catalogue):
    store, _, original, copy = catalogue
    rows = run(store, "near_duplicate_pairs.sql", max_distance=0.005)
    assert [{r["path_a"].rsplit("/", 1)[1], r["path_b"].rsplit("/", 1)[1]} for r in rows] == \
        [{original.name, copy.name}]


def test_neighbours_per_category(catalogue):
    store, searcher, _, _ = catalogue
    rows = run(store, "neighbours_per_category.sql", query_text="a yellow star")
    by_category = {}
    for r in rows:
        by_category.setdefault(r["category"], []).append(r)
    assert sorted(by_category) == sorted(CATEGORIES)
    for category, results in by_category.items():
        same = searcher.search("a yellow star", k=3, filters=[parse_filter(f"category={category}")]).rows
        assert [r["id"] for r in results] == [r["id"] for r in same]
        assert "yellow-star" in results[0]["path"]


def test_search_log_queries(catalogue):
    store, _, _, _ = catalogue
    per_hour = run(store, "search_log_per_hour.sql")
    assert {r["kind"]: r["searches"] for r in per_hour} == {"text": 4, "similar": 1}
    latency = run(store, "search_log_latency.sql")
    assert latency[0]["searches"] == 5 and latency[0]["p95_total_ms"] >= latency[0]["p50_total_ms"] > 0
    top = run(store, "search_log_top_queries.sql")
    assert (top[0]["query"], top[0]["searches"], top[0]["avg_results"]) == ("a red circle", 2, 5)
    zero = run(store, "search_log_zero_results.sql")
    assert [(r["text"], json.loads(r["filters"]), r["times"]) for r in zero] == \
        [("a green cross", [["category", "=", "nothing-like-this"]], 1)]


def test_embedding_coverage(catalogue):
    store, _, _, _ = catalogue
    rows = run(store, "embedding_coverage.sql")
    assert [(r["model"], r["images"], r["missing_vectors"], r["dim_min"], r["dim_max"]) for r in rows] == \
        [("clipsearch-shapes", N + 1, 0, 128, 128)]


def test_clip_text_embedding_in_embedded_sql(catalogue, model):
    store, searcher, _, _ = catalogue
    got = store.query("SELECT clipTextEmbedding('a purple square') AS v")[0]["v"]
    np.testing.assert_allclose(got, model.encode_texts(["a purple square"])[0], atol=1e-6)
    # Usable inline with any WHERE, the way an analyst writes it.
    rows = store.query("SELECT id, path FROM images WHERE price < 30 "
                       "ORDER BY cosineDistance(embedding, clipTextEmbedding('a purple square')), id LIMIT 5")
    same = searcher.search("a purple square", k=5, filters=[parse_filter("price<30")]).rows
    assert [r["id"] for r in rows] == [r["id"] for r in same] and "purple-square" in rows[0]["path"]


UDF_SCRIPT = ROOT / "sql" / "udf" / "clip_text_embedding.py"
UDF_XML = ROOT / "sql" / "udf" / "clip_text_embedding_function.xml"
TIMEOUT_LINE = "Timeout exceeded: clipTextEmbedding ran past the query's time limit (max_execution_time 5 s)\n"


def tsv(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t")


def run_udf(rows: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(UDF_SCRIPT)], input=rows, capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


@pytest.mark.slow
def test_udf_script_speaks_tabseparated(model):
    """The server's executable UDF, fed rows the way ClickHouse sends them (TabSeparated, escaped): the text,
    the query's start in microseconds and its max_execution_time; a query without a limit (0) is never
    stopped, and a line of the text alone (an older config's single argument) is answered too."""
    texts = ["a red circle", "una estrella azul", "tab\there", "back\\slash"]
    now_us = int(time.time() * 1e6)
    rows = [f"{tsv(texts[0])}\t{now_us}\t30", f"{tsv(texts[1])}\t0\t0", tsv(texts[2]), f"{tsv(texts[3])}\t{now_us}\t0"]
    done = run_udf("".join(r + "\n" for r in rows))
    assert done.returncode == 0 and done.stderr == ""
    vectors = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(vectors) == len(texts)
    np.testing.assert_allclose(vectors, model.encode_texts(texts), atol=1e-5)


@pytest.mark.slow
def test_udf_script_stops_a_query_past_its_time_limit(model):
    """`clipTextEmbedding(toString(number)) FROM numbers(25000)` under a 5 s limit: the server checks it between
    blocks only, so the script does, before each row. The rows answered before are kept; the first row past
    the limit ends the process non-zero with one line on stderr, the query's error (no traceback, no path)."""
    now_us, old_us = int(time.time() * 1e6), int((time.time() - 6) * 1e6)
    done = run_udf(f"a red circle\t{now_us}\t5\n1\t{old_us}\t5\n2\t{old_us}\t5\n")
    assert done.returncode != 0
    assert done.stderr == TIMEOUT_LINE
    assert len(done.stdout.splitlines()) == 1   # the row within its limit, answered before


def test_udf_script_refuses_a_row_past_its_limit_before_loading_a_model():
    """The first row of a block already past the limit (the query queued, or the pool's process was busy): refused
    at once, without loading the model; a start that cannot be read is refused too, in one line."""
    done = run_udf(f"a red circle\t{int((time.time() - 60) * 1e6)}\t5\n")
    assert (done.returncode, done.stdout, done.stderr) == (1, "", TIMEOUT_LINE)
    garbled = run_udf("a red circle\tyesterday\t5\n")
    assert garbled.returncode == 1 and garbled.stdout == "" and "Traceback" not in garbled.stderr
    assert garbled.stderr.count("\n") == 1 and "clipTextEmbedding" in garbled.stderr


def test_udf_config_names_the_internal_function_and_fails_queries_with_its_message():
    xml = ElementTree.parse(UDF_XML).getroot().find("function")
    assert xml is not None
    assert xml.findtext("type") == "executable_pool" and xml.findtext("name") == SERVER_EMBEDDING_FUNCTION
    assert SERVER_EMBEDDING_FUNCTION.startswith(INTERNAL_PREFIX)   # analysts cannot call it with a made-up limit
    assert xml.findtext("command") == "clip_text_embedding.py" and xml.findtext("return_type") == "Array(Float32)"
    assert [(a.findtext("name"), a.findtext("type")) for a in xml.findall("argument")] == \
        [("text", "String"), ("started_us", "String"), ("limit_s", "String")]
    # the script's one line on stderr becomes the query's error; its exit code fails the query too
    assert xml.findtext("stderr_reaction") == "throw" and xml.findtext("check_exit_code") == "true"
    assert xml.findtext("format") == "TabSeparated"


# The server's path end to end: ClickHouse's own engine (chdb takes user_scripts_path and the function config
# from udf_path) runs the executable UDF from sql/udf/ under the SQL function the store defines on a server.
SERVER_RUN = """
import chdb, json, sys, time
from chdb import session
from clipsearch.store.catalog import SERVER_TEXT_EMBEDDING
chdb.g_udf_path = sys.argv[1]
engine = session.Session(sys.argv[2])
engine.query("CREATE OR REPLACE FUNCTION clipTextEmbedding AS " + SERVER_TEXT_EMBEDDING)
def run(sql):
    started = time.monotonic()
    try:
        return [str(engine.query(sql, "TSV")).strip(), time.monotonic() - started]
    except Exception as exc:
        return ["error: " + str(exc).split(". (")[0], time.monotonic() - started]
print(json.dumps([run("SELECT clipTextEmbedding('a purple square')"),
    run("SELECT sum(length(clipTextEmbedding(toString(number)))) FROM numbers(25000) SETTINGS max_execution_time = 3"),
    run("SELECT clipsearch_text_embedding('a', toString(toUnixTimestamp64Micro(now64(6)) - 10000000), '5')")]))
"""


@pytest.mark.slow
def test_server_udf_stops_at_the_query_time_limit_end_to_end(model, tmp_path):
    """An analyst's `clipTextEmbedding(toString(number)) FROM numbers(25000)` under a 3 s limit on a server: it
    ends within a second or so of the limit, with a Timeout error, where it ran on for minutes before."""
    scripts = tmp_path / "user_scripts"
    scripts.mkdir()
    (scripts / UDF_XML.name).write_bytes(UDF_XML.read_bytes())
    (scripts / UDF_SCRIPT.name).write_bytes(UDF_SCRIPT.read_bytes())
    (scripts / UDF_SCRIPT.name).chmod(0o755)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}   # its python3
    done = subprocess.run([sys.executable, "-c", SERVER_RUN, str(scripts), str(tmp_path / "engine")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (vector, _), (embed_all, took), (direct, _) = json.loads(done.stdout)
    np.testing.assert_allclose(json.loads(vector), model.encode_texts(["a purple square"])[0], atol=1e-5)
    # Within a row's embedding of the limit, plus at most one model load (the pool's process may start with
    # this query): seconds on a busy machine, where the whole query takes about a minute
    assert "Timeout exceeded" in embed_all and took < 3 + 9, (embed_all, took)
    # the script's own refusal reaches the client as its one line, no traceback
    assert "Timeout exceeded: clipTextEmbedding ran past the query's time limit (max_execution_time 5 s)" in direct
    assert "Traceback" not in direct


def test_cluster_ddl_parses_with_clickhouse(catalogue):
    store, _, _, _ = catalogue
    statements = sql_statements((ROOT / "sql" / "cluster" / "images_cluster.sql").read_text())
    assert len(statements) == 2 * 4   # images, files, load_errors, search_log: local + Distributed
    for statement in statements:
        formatted = store.query("SELECT formatQuery({q:String}) AS f", {"q": statement})[0]["f"]
        assert "ON CLUSTER clipsearch" in formatted
    engines = " ".join(statements)
    assert "Distributed(clipsearch, currentDatabase(), images_local, sipHash64(id))" in engines
    assert "ReplicatedReplacingMergeTree" in engines


def test_cluster_ddl_is_written_from_the_schema():
    """One source of truth: sql/cluster/images_cluster.sql is what scripts/cluster_ddl.py writes from
    sql/schema.sql and sql/migrations/ (run it after changing either)."""
    from scripts.cluster_ddl import OUT, build
    assert OUT.read_text() == build()
    assert "-- 001_columns_before_versions.sql:" in build()   # each migration, for clusters made before it


def test_cluster_tables_have_the_schemas_columns(catalogue):
    """Each local table of the cluster DDL has every column (name and type) of the table it shards, or a
    load or a search log write on a cluster fails."""
    store, _, _, _ = catalogue
    statements = sql_statements((ROOT / "sql" / "cluster" / "images_cluster.sql").read_text())
    for table in ("images", "files", "load_errors", "search_log"):
        create = next(s for s in statements if f"TABLE IF NOT EXISTS {table}_local " in s)
        local = re.sub(r"ENGINE = Replicated\w+\([^)]*\)", "ENGINE = MergeTree",
                       create.replace(" ON CLUSTER clipsearch", "").replace(f"{table}_local", f"cluster_{table}"))
        store.owner_sql(local)
        try:
            manifest = ("category", "price")   # this catalogue's manifest columns, added to `images` at load
            expected = {name: kind for name, kind in store.images.columns(table).items() if name not in manifest}
            assert store.images.columns(f"cluster_{table}") == expected, table
            assert granularity(store, f"cluster_{table}") == granularity(store, table), table
        finally:
            store.owner_sql(f"DROP TABLE cluster_{table}")


def test_images_has_small_granules(catalogue):
    """A search reads one granule of every column per result row: `images` is made with 128-row granules
    (ClickHouse's default is 8,192; see sql/schema.sql and bench/results.md)."""
    store, _, _, _ = catalogue
    assert granularity(store, "images") == 128
    assert granularity(store, "search_log") == 8192
