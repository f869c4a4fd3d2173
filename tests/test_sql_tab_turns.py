"""Issue 34's attacks on the page's SQL tab: senders looping heavy queries must not take the page's threads
from its searches, nor the engine from the port's analysts (the tab's queries take the analysts' turns:
clipsearch.analyst.turns, one FairShare per store shared with the port), and a parser bomb is refused on
the page as on the analyst port, by the same policy and limits."""
from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest
from werkzeug.test import Client

from clipsearch.analyst.turns import FairShare
from clipsearch.service import api, shapes
from clipsearch.service.app import create_app
from clipsearch.service.clickhouse_http import ClickHouseHTTP
from clipsearch.settings import Settings
from clipsearch.store.connection import engine_uri
from tests.conftest import wait_until

HEAVY = "SELECT count() FROM numbers(200000000) WHERE cityHash64(number) % 7 = 3"
# 208 bytes of nested INTERVAL ( : seconds of parsing without the parser's bounds.
BOMB = ("SELECT " + "INTERVAL (" * 15 + "1 DAY" + ") DAY" * 15)[:208]
ANALYST = "analyst-password"


@pytest.fixture(scope="module")
def app(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("sqltab")
    rng = np.random.default_rng(34)
    manifest = shapes.write_catalogue(folder / "images", [shapes.random_spec(rng) for _ in range(12)], 34)
    app = create_app(Settings(db=str(folder / "db")), model=model, config={"TESTING": True})
    app.extensions["clipsearch"].load(manifest)
    yield app
    app.extensions["clipsearch"].close()


@pytest.fixture
def turns(app, monkeypatch):
    """Fresh turns for the store (so a test's bound is its own), with a short wait on the page."""
    share = FairShare(total=2, doors={"port": 18, "page": 4})
    monkeypatch.setattr(app.extensions["clipsearch"], "analyst_turns", share)
    monkeypatch.setattr(api, "PAGE_WAIT_S", 2.0)
    return share


def _loop(stop: threading.Event, send, answers: Counter, busy: list, timeouts: list) -> threading.Thread:
    def loop() -> None:
        while not stop.is_set():
            res = send()
            answers[res.status_code] += 1
            if res.status_code in (429, 503):
                busy.append(res)
            elif res.status_code in (400, 408):   # past the query's time limit (the page's, the port's status)
                timeouts.append(res)
    thread = threading.Thread(target=loop)
    thread.start()
    return thread


def test_looping_sql_senders_leave_searches_their_threads(app, turns):
    """Six senders loop a heavy query on the SQL tab (the page has 8 threads): at most two run at once, the
    rest are told to try again (429 with Retry-After), and a search is answered while the two hold their
    turns."""
    stop = threading.Event()
    answers: Counter[int] = Counter()
    busy: list = []
    timeouts: list = []
    senders = [_loop(stop, lambda: app.test_client().post("/api/sql", json={"sql": HEAVY}), answers, busy, timeouts)
               for _ in range(6)]
    try:
        wait_until(lambda: turns.now() == 2 and busy, timeout=60)
        res = app.test_client().get("/api/search", query_string={"q": "a red circle", "k": 5})
        held_during_search = turns.now()
    finally:
        stop.set()
        for thread in senders:
            thread.join()
    assert res.status_code == 200, res.get_json()
    assert res.get_json()["results"]
    assert held_during_search == 2          # the senders still held both turns when the search was answered
    assert turns.most == 2                  # never more than two SQL-tab queries at once
    assert set(answers) <= {200, 400, 429}, answers   # 400: a heavy query past its time limit on a busy machine
    assert all("try again" in r.get_json()["error"] and r.headers["Retry-After"] == "2" for r in busy)
    assert all("Timeout exceeded" in r.get_json()["error"] for r in timeouts)
    assert turns.now() == 0 and turns.through == {}


def test_port_analysts_and_the_page_share_one_set_of_turns(app, turns):
    """Two port analysts loop heavy queries: the page's SQL tab waits for a turn like a third analyst (429
    after its wait, not a third query on the engine's cores); with the port quiet, the page runs at once."""
    photos = app.extensions["clipsearch"]
    port = Client(ClickHouseHTTP(engine_uri(photos.settings.db), "writer-password", ANALYST,
                                 policy=photos.analyst_policy, share=photos.analyst_turns))
    stop = threading.Event()
    answers: Counter[int] = Counter()
    busy: list = []
    timeouts: list = []
    analysts = [_loop(stop, lambda i=i: port.post("/", data=HEAVY, auth=("analyst", ANALYST),
                                                  query_string={"session_id": f"notebook-{i}"}), answers, busy,
                      timeouts)
                for i in range(2)]
    try:
        wait_until(lambda: turns.now() == 2, timeout=60)
        page = app.test_client().post("/api/sql", json={"sql": "SELECT 1 AS one"})
        most = turns.most
    finally:
        stop.set()
        for thread in analysts:
            thread.join()
    assert most == 2
    assert page.status_code == 429 and page.headers["Retry-After"] == "2", page.get_json()
    assert set(answers) <= {200, 408}, answers   # the page's request took no analyst's turn
    assert all(b"TIMEOUT_EXCEEDED" in r.data for r in timeouts)
    page = app.test_client().post("/api/sql", json={"sql": "SELECT 1 AS one"})
    assert page.status_code == 200 and page.get_json()["rows"] == [[1]]


def test_a_busy_port_says_so_as_clickhouse_does(app, turns):
    """Past its bounds the port answers ClickHouse's Code 202 (503) with Retry-After, which clients retry."""
    photos = app.extensions["clipsearch"]
    port = Client(ClickHouseHTTP(engine_uri(photos.settings.db), "writer-password", ANALYST,
                                 policy=photos.analyst_policy, share=photos.analyst_turns))
    held = [turns.acquire(f"analyst|{i}", f"10.0.0.{i}") for i in range(2)]
    turns.doors["port"] = 2   # both of the port's places are inside
    try:
        res = port.post("/", data="SELECT 1", auth=("analyst", ANALYST))
    finally:
        for turn in held:
            turn.leave()
    assert res.status_code == 503 and res.headers["X-ClickHouse-Exception-Code"] == "202"
    assert res.headers["Retry-After"] == "2" and b"TOO_MANY_SIMULTANEOUS_QUERIES" in res.data


def test_parser_bomb_refused_on_the_page_as_on_the_port(app):
    """208 bytes of nested INTERVAL ( on the SQL tab: refused by the parser's bound, with the port's message."""
    photos = app.extensions["clipsearch"]
    res = app.test_client().post("/api/sql", json={"sql": BOMB})
    assert res.status_code == 400, res.get_json()
    page = res.get_json()["error"]
    assert "Maximum amount of backtracking (100000)" in page
    with pytest.raises(Exception) as port:
        photos.analyst_policy.check_on_engine(engine_uri(photos.settings.db), BOMB)
    assert page.split("DB::Exception:")[-1][:80] in str(port.value)
