"""Issue 34's attacks on the page's SQL tab: senders looping heavy queries must not take the page's threads
from its searches (the tab's queries take turns: service/console.py Turns), and a parser bomb is refused on
the page as on the analyst port, by the same policy and limits."""
from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest

from clipsearch.service import console, shapes
from clipsearch.service.app import create_app
from clipsearch.settings import Settings
from clipsearch.store.connection import engine_uri
from tests.conftest import wait_until

HEAVY = "SELECT count() FROM numbers(200000000) WHERE cityHash64(number) % 7 = 3"
# 208 bytes of nested INTERVAL (: seconds of parsing without the parser's bounds.
BOMB = ("SELECT " + "INTERVAL (" * 15 + "1 DAY" + ") DAY" * 15)[:208]


@pytest.fixture(scope="module")
def app(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("sqltab")
    rng = np.random.default_rng(34)
    manifest = shapes.write_catalogue(folder / "images", [shapes.random_spec(rng) for _ in range(12)], 34)
    app = create_app(Settings(db=str(folder / "db")), model=model, config={"TESTING": True})
    app.extensions["clipsearch"].load(manifest)
    yield app
    app.extensions["clipsearch"].close()


def test_looping_sql_senders_leave_searches_their_threads(app, monkeypatch):
    """Six senders loop a heavy query on the SQL tab (the page has 8 threads): at most two run at once, the
    rest are told to try again, and a search is answered while the two hold their turns."""
    turns = console.Turns(running=2, waiting=2, wait_s=2.0)
    monkeypatch.setitem(app.extensions, "sql_turns", turns)
    stop = threading.Event()
    answers: Counter[int] = Counter()
    busy: list[str] = []

    def sender() -> None:
        client = app.test_client()
        while not stop.is_set():
            res = client.post("/api/sql", json={"sql": HEAVY})
            answers[res.status_code] += 1
            if res.status_code == 429:
                busy.append(res.get_json()["error"])

    senders = [threading.Thread(target=sender) for _ in range(6)]
    for thread in senders:
        thread.start()
    try:
        wait_until(lambda: turns.now == 2 and busy, timeout=60)
        res = app.test_client().get("/api/search", query_string={"q": "a red circle", "k": 5})
        held_during_search = turns.now
    finally:
        stop.set()
        for thread in senders:
            thread.join()
    assert res.status_code == 200, res.get_json()
    assert res.get_json()["results"]
    assert held_during_search == 2          # the senders still held both turns when the search was answered
    assert turns.most == 2                  # never more than two SQL-tab queries at once
    assert set(answers) <= {200, 429}, answers
    assert all("busy" in message and "try again" in message for message in busy)
    assert turns.now == 0


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


def test_turns_refuse_past_their_bounds():
    """With every turn and waiting place taken, a further SQL-tab request is refused at once (a thread is not
    held), and one that waits gets its turn when one comes free."""
    turns = console.Turns(running=1, waiting=1, wait_s=30.0)
    with turns.turn():
        got = threading.Event()

        def waiter() -> None:
            with turns.turn():
                got.set()
        thread = threading.Thread(target=waiter)
        thread.start()
        wait_until(lambda: turns._inside._value == 0, timeout=10)   # noqa: SLF001 (the waiter is inside)
        with pytest.raises(console.Busy), turns.turn():
            pass
        assert not got.is_set()
    thread.join(timeout=10)
    assert got.is_set() and turns.most == 1
