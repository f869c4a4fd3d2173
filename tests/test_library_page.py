"""The library without a query (GET /api/library, the page before a search) and the bundled model's notice
wherever its results are shown."""
from __future__ import annotations

import os
import re
import threading
from datetime import datetime

import numpy as np
import pytest

from clipsearch.models.bundled import MODEL_NOTICE
from clipsearch.service import shapes
from clipsearch.service.app import create_app
from clipsearch.settings import Settings

N = 7


@pytest.fixture(scope="module")
def app(tmp_path_factory, model):
    """N images, the i-th file modified in year 2000 + i (so the newest is the last), posters and badges."""
    folder = tmp_path_factory.mktemp("library")
    rng = np.random.default_rng(5)
    manifest = shapes.write_catalogue(folder / "images", [shapes.random_spec(rng) for _ in range(N)], 5,
                                      extra=lambda i: {"category": ("poster", "badge")[i % 2]})
    files = sorted(p for p in (folder / "images").iterdir() if p.suffix != manifest.suffix)
    assert len(files) == N
    for i, image in enumerate(files):
        stamp = datetime(2000 + i, 6, 15, 12).timestamp()
        os.utime(image, (stamp, stamp))
    app = create_app(Settings(db=str(folder / "db")), model=model, config={"TESTING": True})
    app.extensions["clipsearch"].load(manifest)
    app.config["FILES"] = [str(f) for f in files]
    yield app
    app.extensions["clipsearch"].close()


def test_the_library_newest_first_paged_with_facets(app):
    client = app.test_client()
    newest = list(reversed(app.config["FILES"]))
    first = client.get("/api/library?k=4&facet=category").get_json()
    assert [r["path"] for r in first["results"]] == newest[:4]
    assert all(r["score"] is None for r in first["results"]) and first["kind"] == "browse"
    assert first["next_offset"] == 4 and first["match"] == "none"
    assert first["facets"] == {"category": [{"value": "poster", "count": 4}, {"value": "badge", "count": 3}]}
    assert first["model_notice"] == MODEL_NOTICE and first["model"] == "clipsearch-shapes"
    second = client.get("/api/library?k=4&offset=4").get_json()
    assert [r["path"] for r in second["results"]] == newest[4:] and second["next_offset"] is None
    posters = client.get("/api/library?filter=category=poster&facet=category").get_json()
    assert [r["path"] for r in posters["results"]] == newest[::2]   # files 6, 4, 2, 0 are posters
    assert posters["facets"] == {"category": [{"value": "poster", "count": 4}]}
    for bad, says in (("k=0", "k must be between 1 and 1000"), ("filter=nope=1", "nope"),
                      ("facet=nope", "unknown column 'nope'")):
        res = client.get(f"/api/library?{bad}")
        assert res.status_code == 400 and says in res.get_json()["error"], res.get_json()


def test_the_bundled_models_results_carry_its_notice(app):
    client = app.test_client()
    assert client.get("/api/search?q=a+cat").get_json()["model_notice"] == MODEL_NOTICE
    image_id = client.get("/api/library?k=1").get_json()["results"][0]["id"]
    assert client.get(f"/api/images/{image_id}/similar").get_json()["model_notice"] == MODEL_NOTICE
    similar = client.get("/api/duplicates?mode=similar").get_json()
    assert similar["model_notice"] == MODEL_NOTICE and similar["model"] == "clipsearch-shapes"
    assert "model_notice" not in client.get("/api/duplicates").get_json()   # copies: by hashes, not the model
    assert client.get("/healthz").get_json()["model_notice"] == MODEL_NOTICE


@pytest.mark.slow
def test_the_page_opens_on_the_library_with_the_notice(app):
    from scripts.screenshot import find_chromium, render
    if not find_chromium():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from waitress.server import create_server
    server = create_server(app, host="127.0.0.1", port=0, threads=4, asyncore_use_poll=True)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        dom = render(f"http://127.0.0.1:{server.effective_port}/", None)
    finally:
        server.close()
    cards = re.findall(r'class="card".*?</button>', dom, re.S)
    assert len(cards) == N and "Your library, newest first: 7 images" in dom
    dates = re.findall(r'<div class="date">(\d{4})-', dom)
    assert dates == [str(2000 + i) for i in reversed(range(N))]
    assert re.search(r'<div id="model-notice" role="note">Searches here use the bundled model', dom)
    assert '<span class="facet-name">category</span>' in dom
