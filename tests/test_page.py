"""The page in headless Chromium: a search's address restores it (query, filters, k)."""
from __future__ import annotations

import re
import threading

import numpy as np
import pytest

from clipsearch import synthetic
from clipsearch.service.app import create_app
from clipsearch.settings import Settings
from scripts.screenshot import find_chromium, render

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def page_url(tmp_path_factory, model):
    if not find_chromium():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from waitress.server import create_server
    folder = tmp_path_factory.mktemp("page")
    rng = np.random.default_rng(61)
    manifest = synthetic.write_catalogue(folder / "images", [synthetic.random_spec(rng) for _ in range(60)], 61,
                                         extra=lambda i: {"category": ("poster", "badge", "magnet")[i % 3]})
    app = create_app(Settings(db=str(folder / "db")), model=model)
    app.extensions["clipsearch"].load(manifest)
    server = create_server(app, host="127.0.0.1", port=0, threads=4, asyncore_use_poll=True)
    threading.Thread(target=server.run, daemon=True).start()
    yield f"http://127.0.0.1:{server.effective_port}/"
    server.close()
    app.extensions["clipsearch"].close()


def test_an_address_restores_its_search(page_url):
    dom = render(page_url + "?q=a+green+star&k=12&filter=category%3Dposter", None)
    cards = re.findall(r'class="card".*?</button>', dom, re.S)
    assert len(cards) == 12 and all("category: poster" in c for c in cards)  # k and the filter from the address
    assert re.search(r"12 results \(text, exact\)", dom)  # and the text
