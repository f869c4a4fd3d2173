"""The page in headless Chromium: a search's address restores it (query, filters, k)."""
from __future__ import annotations

import re
import threading

import numpy as np
import pytest

from clipsearch.service import shapes
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
    manifest = shapes.write_catalogue(folder / "images", [shapes.random_spec(rng) for _ in range(60)], 61,
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
    # the filter and the text from the address; k=12 a page, and the second page loaded too, since the grid's
    # end was in view: every poster (a third of 60)
    assert len(cards) == 20 and all("category: poster" in c for c in cards)
    assert re.search(r"20 results \(text, exact\)", dom)


def test_threshold_terms_facets_and_more_pages_on_scroll(page_url):
    """min_score, a minus term and a chip filter from the address; the grid fills past the first page as its
    end scrolls into view (the window is taller than one page), with facets as clickable chips."""
    dom = render(page_url + "?q=a+star&minus=red&k=12&min_score=0.2&filter=taken_at+is+null&match=pictures", None)
    cards = re.findall(r'class="card".*?</button>', dom, re.S)
    ids = re.findall(r'/api/images/([0-9a-f]{32})/file"', dom)
    scores = [float(s) for s in re.findall(r'class="score"[^>]*>([-0-9.]+)<', dom)]
    assert len(cards) > 12 and len(ids) == len(set(ids)) == len(cards)  # more than one page, none twice
    assert min(scores) >= 0.2 and scores == sorted(scores, reverse=True)
    shown, total = re.search(r"(\d+)(?: of (\d+))? results \(hybrid, exact\)", dom).groups()
    total = int(total or shown)
    categories = re.search(r'<div class="facet"><span class="facet-name">category</span>(.*?)</div>', dom, re.S)
    counts = [int(n) for n in re.findall(r"<b>(\d+)</b>", categories.group(1))]
    assert len(counts) == 3 and sum(counts) == total  # every match above the score counted
    assert 'id="active-filters"><button type="button" class="chip"' in dom and "taken_at is null ×" in dom
