"""The HTTP API and the page: every endpoint, hybrid ranking against numpy, the search log, errors."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsearch.models.bundled import MODEL_NOTICE
from clipsearch.service import shapes
from clipsearch.service.app import create_app
from clipsearch.settings import Settings
from tests.conftest import loaded, random_specs

N = 120


@pytest.fixture(scope="module")
def app(tmp_path_factory, model):
    with loaded(tmp_path_factory.mktemp("api"), random_specs(N, 17), 17, model,
                extra=lambda i: {"category": ["poster", "mug"][i % 2], "price": float(i)}) as catalogue:
        assert catalogue.summary.loaded == N
    app = create_app(Settings.load(db=str(catalogue.db)), model=model,
                     config={"MAX_CONTENT_LENGTH": 2 * 1024 * 1024, "TESTING": True})
    yield app
    app.extensions['clipsearch'].close()


@pytest.fixture
def client(app):
    return app.test_client()


def _png(colour="red", shape="circle", seed=1) -> bytes:
    return shapes.make_image(np.random.default_rng(seed), colour, shape)[1]


def _embeddings(app):
    rows = app.extensions['clipsearch'].catalog.query("SELECT id, embedding FROM images ORDER BY id")
    return [r["id"] for r in rows], np.array([r["embedding"] for r in rows], np.float32)


def test_get_search_with_filters(client):
    res = client.get("/api/search?q=a+red+circle&k=7&filter=price>=30&filter=category=mug&match=pictures")
    assert res.status_code == 200
    body = res.get_json()
    assert len(body["results"]) == 7 and body["kind"] == "text"
    assert all(r["price"] >= 30 and r["category"] == "mug" for r in body["results"])
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert "cosineDistance(embedding, `$v0`)" in body["sql"]["query"]
    assert body["sql"]["params"]["f0"] == 30.0 and body["sql"]["params"]["k"] == 7
    assert set(body["took_ms"]) == {"model_load", "encode", "query", "total"}  # docs/api.md


def test_post_json_filters_in_ranges_and_equality(client, app):
    res = client.post("/api/search", json={"text": "a star", "k": 200, "filters": {
        "price": {">": 10, "<=": 60}, "category": ["poster"], "format": {"!=": "GIF"}}})
    assert res.status_code == 200
    got = {r["id"] for r in res.get_json()["results"]}
    expected = {r["id"] for r in app.extensions['clipsearch'].catalog.query(
        "SELECT id FROM images WHERE price > 10 AND price <= 60 AND category = 'poster'")}
    assert got == expected


def test_image_search_json_and_multipart_agree(client):
    data = _png("green", "triangle")
    a = client.post("/api/search", json={"image": base64.b64encode(data).decode(), "k": 5}).get_json()
    b = client.post("/api/search", data={"image": (io.BytesIO(data), "q.png"), "k": "5"},
                    content_type="multipart/form-data").get_json()
    assert a["kind"] == b["kind"] == "image"
    assert [r["id"] for r in a["results"]] == [r["id"] for r in b["results"]]
    assert len(a["results"]) == 5 and a["results"][0]["colour"] == "green"


def test_hybrid_ranking_is_the_weighted_sum_and_differs_from_both(client, app, model):
    data = _png("yellow", "square", seed=4)
    text, k, w_image = "a blue cross", 10, 0.6
    body = client.post("/api/search", json={"image": base64.b64encode(data).decode(), "text": text, "k": k,
                                            "weights": {"image": w_image, "text": 1 - w_image},
                                            "match": "pictures"}).get_json()
    assert body["kind"] == "hybrid"
    ids, matrix = _embeddings(app)
    q_image = model.encode_images([Image.open(io.BytesIO(data))])[0]
    q_text = model.encode_texts([text])[0]
    combined = w_image * (matrix @ q_image) + (1 - w_image) * (matrix @ q_text)
    expected = [ids[i] for i in np.argsort(-combined, kind="stable")[:k]]
    assert [r["id"] for r in body["results"]] == expected
    np.testing.assert_allclose([r["score"] for r in body["results"]], np.sort(combined)[::-1][:k], atol=1e-5)
    pure_image = [ids[i] for i in np.argsort(-(matrix @ q_image))[:k]]
    pure_text = [ids[i] for i in np.argsort(-(matrix @ q_text))[:k]]
    assert expected != pure_image and expected != pure_text


def test_hybrid_with_stored_image_id(client, app):
    first = app.extensions['clipsearch'].catalog.query("SELECT id FROM images ORDER BY id LIMIT 1")[0]["id"]
    body = client.post("/api/search", json={"image_id": first, "text": "a white star", "k": 5}).get_json()
    assert body["kind"] == "hybrid" and first not in {r["id"] for r in body["results"]}


def test_image_endpoints(client, app):
    row = app.extensions['clipsearch'].catalog.query("SELECT id, path, width FROM images ORDER BY id LIMIT 1")[0]
    meta = client.get(f"/api/images/{row['id']}").get_json()
    assert meta["path"] == row["path"] and "embedding" not in meta
    similar = client.get(f"/api/images/{row['id']}/similar?k=4&filter=price<100").get_json()
    assert len(similar["results"]) == 4 and row["id"] not in {r["id"] for r in similar["results"]}
    assert similar["kind"] == "similar"
    full = client.get(f"/api/images/{row['id']}/file")
    assert full.status_code == 200 and full.data == Path(row["path"]).read_bytes()
    for _ in range(2):  # generated, then served from the cache
        thumb = client.get(f"/api/images/{row['id']}/file?size=thumb")
        assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
        assert max(Image.open(io.BytesIO(thumb.data)).size) <= 256


@pytest.mark.parametrize("url", ["/api/images/../../etc/passwd/file", "/api/images/..%2F..%2Fetc%2Fpasswd/file",
                                 "/api/images/%2Fetc%2Fpasswd/file", "/api/images/0000/file",
                                 "/api/images/ffffffffffffffffffffffffffffffff", "/api/images/x'or'1/similar"])
def test_only_stored_images_are_served(client, url):
    res = client.get(url)
    assert res.status_code == 404 and "error" in res.get_json()


def test_search_log_records_each_search(client, app):
    store, log = app.extensions['clipsearch'].catalog, app.extensions['clipsearch'].searcher.log
    log.flush()   # rows are written off the request path, in batches
    before = store.query("SELECT count() AS n FROM search_log")[0]["n"]
    body = client.get("/api/search?q=a+purple+star&k=3&filter=category=poster").get_json()
    log.flush()
    rows = store.query("SELECT kind, text, filters, k, results, top_ids, total_ms FROM search_log "
                       "ORDER BY time DESC LIMIT 1")
    assert store.query("SELECT count() AS n FROM search_log")[0]["n"] == before + 1
    row = rows[0]
    assert (row["kind"], row["text"], row["k"], row["results"]) == ("text", "a purple star", 3, 3)
    assert json.loads(row["filters"]) == [["category", "=", "poster"]]
    assert row["top_ids"] == [r["id"] for r in body["results"]] and row["total_ms"] > 0


def test_healthz_columns_and_page(client):
    assert client.get("/healthz").get_json() == {"status": "ok", "backend": "embedded", "images": N,
                                                 "model": "clipsearch-shapes", "model_notice": MODEL_NOTICE}
    cols = {c["name"]: c for c in client.get("/api/columns").get_json()["columns"]}
    assert cols["category"]["values"] == ["mug", "poster"]
    assert (cols["price"]["min"], cols["price"]["max"]) == (0, N - 1)
    assert "embedding" not in cols
    page = client.get("/")
    assert page.status_code == 200 and b'id="search-form"' in page.data
    assert client.get("/static/app.js").status_code == 200


@pytest.mark.parametrize("method,url,kwargs,status,message", [
    ("get", "/api/search", {}, 400, "empty query"),
    ("get", "/api/search?q=%20%20", {}, 400, "empty query"),
    ("get", "/api/search?q=x&k=0", {}, 400, "k must be between 1 and 1000"),
    ("get", "/api/search?q=x&k=100000", {}, 400, "k must be between 1 and 1000"),
    ("get", "/api/search?q=x&k=ten", {}, 400, "k must be an integer"),
    ("get", "/api/search?q=x&filter=colr=red", {}, 400, "unknown column 'colr'"),
    ("get", "/api/search?q=x&filter=price>cheap", {}, 400, "not a number"),
    ("get", "/api/search?q=x&image_weight=heavy", {}, 400, "image_weight must be a number"),
    ("post", "/api/search", {"data": "{not json", "content_type": "application/json"}, 400, "JSON object"),
    ("post", "/api/search", {"json": [1, 2]}, 400, "JSON object"),
    ("post", "/api/search", {"json": {"text": 5}}, 400, "text must be a string"),
    ("post", "/api/search", {"json": {"text": "x", "k": True}}, 400, "k must be an integer"),
    ("post", "/api/search", {"json": {"text": "x", "filters": {"price": {"~": 1}}}}, 400, "unknown operator"),
    ("post", "/api/search", {"json": {"text": "x", "filters": {"price": {"in": []}}}}, 400, "non-empty list"),
    ("post", "/api/search", {"json": {"text": "x", "filters": {"category": {"has": "a"}}}}, 400, "array column"),
    ("post", "/api/search", {"json": {"text": "x", "filters": 7}}, 400, "filters must be"),
    ("post", "/api/search", {"json": {"text": "x", "weights": {"image": -1}}}, 400, "non-negative"),
    ("post", "/api/search", {"json": {"text": "x", "image": "data:image/png;base64,@@@"}}, 400, "base64"),
    ("post", "/api/search", {"json": {"image": base64.b64encode(b"hello").decode()}}, 400, "not an image"),
    ("post", "/api/search", {"json": {"image_id": "nope"}}, 404, "no image with id"),
    ("post", "/api/search", {"data": {"image": (io.BytesIO(b"GIF89a-broken"), "x.gif")},
                             "content_type": "multipart/form-data"}, 400, "image"),
    ("post", "/api/search", {"data": {"image": (io.BytesIO(b"\0" * (3 * 1024 * 1024)), "big.png")},
                             "content_type": "multipart/form-data"}, 413, "Large"),
    ("delete", "/api/search", {}, 405, "method"),
    ("get", "/api/nothing-here", {}, 404, "not found"),
])
def test_bad_input_is_a_json_4xx(client, method, url, kwargs, status, message):
    res = getattr(client, method)(url, **kwargs)
    assert res.status_code == status, res.data
    assert message.lower() in res.get_json()["error"].lower()


def test_fuzz_every_endpoint(client):
    """Random hostile input never gives a 5xx, and errors are always JSON with a message."""
    rng = np.random.default_rng(0)
    nasty = ["", " ", "'", '"', "\\", "%00", "\x00", "../../etc/passwd", "' OR 1=1 --", "{q:String}", "𝔘𝔫𝔦",
             "a" * 5000, "-1", "1e309", "NaN", "null", "[]", "{}", "<script>alert(1)</script>", "price>=",
             "=", "price==1", "category=\x00", "k=1&k=2"]
    values = nasty + [None, 0, -5, 1.5, True, [], {}, [1, "a"], {"a": {"b": []}}, 10 ** 30]

    def pick():
        return values[rng.integers(len(values))]

    for _ in range(150):
        s = nasty[rng.integers(len(nasty))]
        responses = [
            client.get("/api/search", query_string={"q": s, "k": pick() if rng.random() < .5 else 3,
                                                    "filter": nasty[rng.integers(len(nasty))]}),
            client.post("/api/search", json={key: pick() for key in ("text", "image", "image_id", "k", "filters",
                                                                     "weights") if rng.random() < 0.6}),
            client.post("/api/search", data=bytes(rng.integers(0, 256, 64, dtype=np.uint8)),
                        content_type="application/json"),
            client.post("/api/search", data={"text": s, "filters": s, "weights": s, "k": s},
                        content_type="multipart/form-data"),
            client.get(f"/api/images/{s}"), client.get(f"/api/images/{s}/similar", query_string={"k": s}),
            client.get(f"/api/images/{s}/file", query_string={"size": s}),
        ]
        for res in responses:
            assert res.status_code < 500, (res.request.path, res.data[:200])
            if res.status_code >= 400:
                assert res.is_json and res.get_json()["error"]
    assert client.application.extensions['clipsearch'].catalog.images.count() == N


@pytest.mark.slow
def test_concurrent_clients_get_the_sequential_results(app):
    """16 clients x 50 searches against a real server on a loopback port: no errors, same answers."""
    import threading
    import urllib.parse
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    from waitress.server import create_server

    server = create_server(app, host="127.0.0.1", port=0, threads=8, asyncore_use_poll=True)
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{server.effective_port}"
    queries = [f"a {c} {s}" for c, s in zip(shapes.COLOURS, shapes.SHAPES * 2, strict=False)]

    def fetch(q):
        url = f"{base}/api/search?" + urllib.parse.urlencode({"q": q, "k": 10, "filter": "price>=5"})
        with urllib.request.urlopen(url, timeout=60) as res:
            assert res.status == 200
            return [r["id"] for r in json.load(res)["results"]]

    try:
        expected = {q: fetch(q) for q in queries}
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: [(q, fetch(q)) for q in
                                               (queries[(i + j) % len(queries)] for j in range(50))], range(16)))
    finally:
        server.close()
    assert sum(len(a) for a in answers) == 16 * 50
    assert all(ids == expected[q] for a in answers for q, ids in a)


@pytest.mark.slow
def test_page_runs_a_search_in_headless_chromium(app, tmp_path):
    """The real page in a real browser: its script calls the API and renders the result grid."""
    import re
    import threading

    from waitress.server import create_server

    from scripts.screenshot import find_chromium, render
    if not find_chromium():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    server = create_server(app, host="127.0.0.1", port=0, threads=4, asyncore_use_poll=True)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        dom = render(f"http://127.0.0.1:{server.effective_port}/?q=a+green+star", tmp_path / "page.png")
    finally:
        server.close()
    assert len(re.findall(r'class="card"', dom)) == 24  # the page's default k
    assert re.search(r"24 results \(text, exact\) in \d+ ms", dom)
    assert '<option>poster</option>' in dom and 'data-col="price"' in dom  # filters built from the columns
    assert Image.open(tmp_path / "page.png").size == (1280, 900)
