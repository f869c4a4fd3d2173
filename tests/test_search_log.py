"""Where searches came from, in search_log; images named by the short ids the CLI prints."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

import clipsearch
from clipsearch.service import shapes


def test_search_log_records_origin_and_model_loading(tmp_path, model):
    """Each search's row says where it came from and what it asked; the CLI's row records the model load
    that search paid for."""
    from clipsearch.models.factory import ModelRef
    from clipsearch.service.cli import main
    rng = np.random.default_rng(83)
    manifest = shapes.write_catalogue(tmp_path / "images", [shapes.random_spec(rng) for _ in range(5)], 83)
    with clipsearch.open(tmp_path / "db", model=model) as photos:
        photos.load(manifest)
        photos.search("a red star", k=2)
        some = photos.sql("SELECT id FROM images ORDER BY id LIMIT 1")[0]["id"]
        assert photos.get(some[:12])["id"] == some  # the 12 digits the CLI prints
        assert some not in {r["id"] for r in photos.search(similar=some[:12], k=3).rows}
    assert main(["search", "a blue circle", "--k", "2", "--db", str(tmp_path / "db")], model=ModelRef()) == 0
    with clipsearch.open(tmp_path / "db", model=model) as photos:
        log = photos.sql("SELECT origin, text, model_load_ms, encode_ms FROM search_log ORDER BY time")
    assert [(r["origin"], r["text"]) for r in log] == [("python", "a red star"), ("python", ""),
                                                       ("cli", "a blue circle")]
    assert log[2]["model_load_ms"] > 0   # the CLI loaded its model during this search, and its row says so


class FlakyConnection:
    """Refuses the first `failures` inserts, then keeps what it is given (and sets `written`)."""

    def __init__(self, failures: int):
        self.failures, self.rows, self.written = failures, [], threading.Event()

    def append_search_log(self, rows):   # as Catalog.append_search_log
        if self.failures:
            self.failures -= 1
            raise ConnectionError("store busy")
        self.rows += rows.to_pylist()
        self.written.set()


def test_search_log_keeps_rows_through_failed_writes_and_writes_them_on_close():
    """Rows a failed insert could not write are kept, in order, and close() writes them."""
    from clipsearch.search.log import SearchLog
    connection = FlakyConnection(failures=2)
    log = SearchLog(connection, flush_s=3600)   # no background flush in this test
    for i in range(5):
        log.record("text", "python", f"query {i}", [], 10, ["a"], 1, {"total": 1.0})
    for _ in range(2):
        with pytest.raises(ConnectionError):
            log.flush()
    log.record("text", "python", "query 5", [], 10, ["a"], 1, {"total": 1.0})
    log.close()
    assert [r["text"] for r in connection.rows] == [f"query {i}" for i in range(6)]   # none lost, in order


def test_search_log_is_written_in_the_background():
    """A recorded row reaches the store without flush() or close(): the timer writes it."""
    from clipsearch.search.log import SearchLog
    connection = FlakyConnection(failures=0)
    log = SearchLog(connection, flush_s=0.05)
    log.record("text", "python", "soon", [], 10, [], 0, {})
    assert connection.written.wait(10), "the background flush never wrote the row"
    assert [r["text"] for r in connection.rows] == ["soon"]
    log.close()


def test_search_log_keeps_the_newest_rows_while_the_store_refuses_them():
    """While inserts fail the buffer holds at most max_pending rows: the oldest are dropped and counted, and
    the newest are written once the store takes them."""
    from clipsearch.search.log import SearchLog
    connection = FlakyConnection(failures=1)
    log = SearchLog(connection, flush_s=3600, max_pending=3)   # no background flush
    for i in range(5):
        log.record("text", "python", str(i), [], 10, [], 0, {})
    with pytest.raises(ConnectionError):
        log.flush()
    log.close()
    assert log.dropped == 2 and [r["text"] for r in connection.rows] == ["2", "3", "4"]


def test_many_searches_all_logged_after_close(tmp_path, model):
    """Every search of a session is in search_log once its store is closed."""
    rng = np.random.default_rng(84)
    manifest = shapes.write_catalogue(tmp_path / "images", [shapes.random_spec(rng) for _ in range(5)], 84)
    texts = [f"a red star {i}" for i in range(40)]
    with clipsearch.open(tmp_path / "db", model=model) as photos:
        photos.load(manifest)
        for text in texts:
            photos.search(text, k=1)
    with clipsearch.open(tmp_path / "db", model=model, log_searches=False) as photos:
        logged = [r["text"] for r in photos.sql("SELECT text FROM search_log ORDER BY time, text")]
    assert sorted(logged) == sorted(texts)


def test_a_search_prints_its_results_when_its_log_cannot_be_written(tmp_path, model, cli, monkeypatch, caplog):
    """A full disk: the search_log insert fails, the search still answers (issue 23)."""
    from clipsearch.errors import StoreError
    from clipsearch.store.connection import Connection
    rng = np.random.default_rng(84)
    manifest = shapes.write_catalogue(tmp_path / "images", [shapes.random_spec(rng) for _ in range(3)], 84)
    with clipsearch.open(tmp_path / "db", model=model, log_searches=False) as photos:
        photos.load(manifest)
    insert = Connection.insert

    def full_disk(self, table, rows, counted=True):
        if table == "search_log":
            raise StoreError("Cannot reserve 1.00 MiB, not enough space")
        return insert(self, table, rows, counted)
    monkeypatch.setattr(Connection, "insert", full_disk)
    result = cli("search", "a red star", "--k", "2", "--json", db=tmp_path / "db")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 2
    assert "search_log: 1 rows not written: Cannot reserve" in caplog.text
