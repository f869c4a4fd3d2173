"""What searches reuse (search/cache.py): each text encoded once per model, and a whole result until the store
is written, never a stale answer."""
from __future__ import annotations

import threading
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest

import clipsearch
from clipsearch.models.clip import ClipModel
from clipsearch.search.cache import Results, Rows
from clipsearch.search.filters import parse_filter
from clipsearch.search.query import Query
from clipsearch.search.statement import QueryVector, search_sql
from clipsearch.service import shapes
from clipsearch.settings import Settings
from tests.conftest import random_specs


def ranked(result) -> list[tuple[str, float]]:
    return [(r["id"], round(r["score"], 6)) for r in result.rows]


def test_a_repeated_search_is_reused_until_the_store_is_written(tmp_path, model):
    manifest = shapes.write_catalogue(tmp_path / "a", random_specs(30, 61), 61)
    more = shapes.write_catalogue(tmp_path / "b", [shapes.ShapeSpec("red", "circle", "plain", "white", 0.6, 224, 224,
                                                                    "PNG")], 62)
    encode = ClipModel.encode_texts
    with clipsearch.open(tmp_path / "db", model=model) as photos, \
            mock.patch.object(ClipModel, "encode_texts", autospec=True, side_effect=encode) as encoded:
        photos.load(manifest)
        first = photos.search("a red circle", k=5)
        again = photos.search("a red circle", k=5)
        assert again.took_ms["cached"] and not first.took_ms.get("cached")
        assert ranked(again) == ranked(first) and again.sql == first.sql
        again.rows[0]["score"] = -1.0                       # what a caller does to its copy stays there
        assert ranked(photos.search("a red circle", k=5)) == ranked(first)
        other = photos.search("a red circle", k=3)          # another page: ranked again, the text not encoded
        assert not other.took_ms.get("cached") and ranked(other) == ranked(first)[:3]
        assert sum(len(call.args[1]) for call in encoded.call_args_list) == 1

        photos.load(more)                                   # a write: the next answer is the store's
        after = photos.search("a red circle", k=5)
        assert not after.took_ms.get("cached") and ranked(after) != ranked(first)
        new_id = photos.sql("SELECT id FROM images WHERE path LIKE '%/b/%'")[0]["id"]
        assert new_id in [r["id"] for r in after.rows]
        photos.sql("DELETE FROM images WHERE id = {id:String}", {"id": new_id})   # the owner's SQL writes too
        assert new_id not in [r["id"] for r in photos.search("a red circle", k=5).rows]
        assert ranked(photos.search("a red circle", k=5)) == ranked(first)
    with clipsearch.open(tmp_path / "db", model=model) as photos:
        assert photos.sql("SELECT count() AS n FROM search_log WHERE text = 'a red circle'")[0]["n"] == 7   # reused too


def test_searches_while_the_store_is_written_are_never_stale(tmp_path, model):
    """One thread loads, labels and deletes; another searches in a loop. Every answer (reused or not) equals
    a search by a collection that reuses nothing, run at the same moment (no write between the two)."""
    manifest = shapes.write_catalogue(tmp_path / "a", random_specs(20, 71), 71)
    batches = [shapes.write_catalogue(tmp_path / f"b{i}", random_specs(4, 72 + i), 72 + i) for i in range(4)]
    texts = ["a red circle", "a blue star", "a green square"]
    with clipsearch.open(tmp_path / "db", model=model) as photos:
        photos.load(manifest)
        plain = clipsearch.Collection(photos.catalog, photos._model, Settings(search_cache="off"),
                                      log_searches=False)
        moment = threading.Lock()   # held around each write, and around each answer and its check
        done = threading.Event()

        def write() -> None:
            try:
                for i, batch in enumerate(batches):
                    with moment:
                        photos.load(batch)
                    with moment:
                        photos.label(["red", "blue", "green"], name=f"colour{i}")
                    with moment:
                        photos.sql("DELETE FROM images WHERE id IN (SELECT id FROM images ORDER BY id LIMIT 1)")
            finally:
                done.set()

        writer = threading.Thread(target=write)
        writer.start()
        checked = reused = 0
        while not done.is_set() or checked < 30:
            text = texts[checked % len(texts)]
            with moment:
                answer = photos.search(text, k=5, match="both")
                truth = plain.search(text, k=5, match="both")
            assert ranked(answer) == ranked(truth), (text, checked)
            assert answer.rows == truth.rows, (text, checked)   # every column: a label run adds one to each row
            checked += 1
            reused += bool(answer.took_ms.get("cached"))
        writer.join()
        assert reused > 0 and checked > reused


def test_a_kept_result_expires_with_a_write_or_its_time():
    now = [100.0]
    results = Results(ttl_s=1.0, clock=lambda: now[0])
    results.put(("q",), 7, SimpleNamespace(rows=[{"id": "a"}]))
    assert results.get(("q",), 7) == SimpleNamespace(rows=[{"id": "a"}])
    assert results.get(("q",), 8) is None           # written since
    now[0] += 1.5
    assert results.get(("q",), 7) is None           # another client of a server may have written
    results.put(None, 7, SimpleNamespace(rows=[]))              # an uploaded image's search: never kept
    assert results.get(None, 7) is None
    off = Results(0)
    off.put(("q",), 1, SimpleNamespace(rows=[]))
    assert off.get(("q",), 1) is None


def test_kept_rows_expire_with_a_write_or_their_time_and_are_the_callers_own():
    now = [100.0]
    rows = Rows(ttl_s=1.0, clock=lambda: now[0])
    rows.put({"a": {"id": "a", "tags": ["x"]}, "b": {"id": "b", "tags": []}}, 7)
    got = rows.get(["a", "b", "c"], 7)
    assert got == {"a": {"id": "a", "tags": ["x"]}, "b": {"id": "b", "tags": []}}
    got["a"]["tags"].append("changed")                 # a caller's change stays in its copy
    assert rows.get(["a"], 7) == {"a": {"id": "a", "tags": ["x"]}}
    assert rows.get(["a"], 8) == {}                    # written since
    now[0] += 1.5
    assert rows.get(["a"], 7) == {}                    # another client of a server may have written
    off = Rows(0)
    off.put({"a": {"id": "a"}}, 1)
    assert off.get(["a"], 1) == {}


def test_a_page_is_ranked_by_ids_and_its_rows_read_by_id_as_one_statement_would_give_them(tmp_path, model):
    """The ranking reads ids and scores; the page's columns are read by id (or kept) and come back as the
    single statement with every column gives them, also after a write adds a column to every row."""
    manifest = shapes.write_catalogue(tmp_path / "a", random_specs(30, 81), 81)
    with clipsearch.open(tmp_path / "db", model=model) as photos:
        photos.load(manifest)
        searcher = photos.searcher
        for text in ("a red circle", "a blue star"):
            result = photos.search(text, k=6, match="pictures")
            assert "EXCEPT" not in result.sql and "SELECT id, " in result.sql
            vector = photos.model.encode_texts([text])[0].tolist()
            whole = photos.catalog.query(*search_sql(Query(k=6), [QueryVector(vector=vector)]))
            assert [{k: v for k, v in r.items() if k not in ("picture_score", "match")} for r in result.rows] == whole
        writes = photos.catalog.connection.writes.count
        assert set(searcher.rows.get([r["id"] for r in result.rows], writes)) == {r["id"] for r in result.rows}
        photos.sql("ALTER TABLE images ADD COLUMN note String DEFAULT 'added'")   # as a manifest's new column
        again = photos.search("a blue star", k=6, match="pictures")
        assert [r["id"] for r in again.rows] == [r["id"] for r in result.rows]
        assert all(r["note"] == "added" for r in again.rows)


def test_text_vectors_are_per_model(model):
    from clipsearch.search.cache import TextVectors
    vectors = TextVectors(2)
    a = vectors.encode(model, ["a red circle", "a blue star", "a red circle"])
    assert np.allclose(a[0], a[2]) and np.allclose(a, model.encode_texts(["a red circle", "a blue star",
                                                                          "a red circle"]), atol=1e-6)
    other = ClipModel()
    with mock.patch.object(other, "encode_texts", wraps=other.encode_texts) as encoded:
        vectors.encode(other, ["a red circle"])
        vectors.encode(other, ["a red circle"])
    assert encoded.call_count == 1


def test_which_words_some_row_holds_is_kept_until_a_write(tmp_path, model):
    """A both search asks whether any row holds its words; unfiltered, the answer per word is kept until the
    store is written, so a new text of known words asks the engine nothing before ranking."""
    first = shapes.write_catalogue(tmp_path / "a", random_specs(12, 81), 81, extra=lambda i: {"title": "plain"})
    later = shapes.write_catalogue(tmp_path / "b", random_specs(2, 82), 82, extra=lambda i: {"title": "zephyr"})
    with clipsearch.open(tmp_path / "db", model=model) as photos:
        photos.load(first)
        statements: list[str] = []
        run = photos.catalog.query

        def counted(sql, params=None):
            statements.append(sql)
            return run(sql, params)

        with mock.patch.object(photos.catalog, "query", side_effect=counted):
            assert photos.search("zephyr red", k=3).match == "both"            # 'red': a colour column's word
            assert photos.search("zephyr", k=3).match == "pictures"            # held by no row: the picture search
            asked = sum("AS word FROM images" in s for s in statements)
            assert asked == 1                                                    # both words at once, then kept
            photos.search("red zephyr plain", k=3)
            assert sum("AS word FROM images" in s for s in statements) == asked + 1   # 'plain' only
            photos.search("plain zephyr", k=4)
            assert sum("AS word FROM images" in s for s in statements) == asked + 1   # none asked
            filtered = photos.search("zephyr", k=3, filters=[parse_filter("shape=circle")])
            assert filtered.match == "pictures"                                  # under filters: asked again
            photos.load(later)
            found = photos.search("zephyr", k=3)                               # a write: asked again
        assert found.match == "both" and found.rows[0]["match"]["words"] == {"title": ["zephyr"]}


def test_searches_from_many_threads_run_on_a_few_engine_sessions_and_answer_as_one_at_a_time(tmp_path, model):
    from concurrent.futures import ThreadPoolExecutor

    from clipsearch.store.connection import READ_SESSIONS
    manifest = shapes.write_catalogue(tmp_path / "a", random_specs(40, 91), 91)
    texts = [shapes.query_text(c, s) for c in shapes.COLOURS for s in shapes.SHAPES]
    with clipsearch.open(tmp_path / "db", model=model, settings=Settings(db=str(tmp_path / "db"),
                                                                          search_cache="off")) as photos:
        photos.load(manifest)
        alone = {t: ranked(photos.search(t, k=5, match="both")) for t in texts}
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda t: (t, ranked(photos.search(t, k=5, match="both"))), texts * 3))
        assert all(answer == alone[t] for t, answer in together)
        assert 1 <= photos.catalog.connection._reader_count <= READ_SESSIONS


def test_more_like_this_reads_the_stored_vector_only_for_the_index(tmp_path, model):
    manifest = shapes.write_catalogue(tmp_path / "a", random_specs(30, 95), 95)
    with clipsearch.open(tmp_path / "db", model=model, log_searches=False) as photos:
        photos.load(manifest)
        some = photos.sql("SELECT id FROM images ORDER BY id LIMIT 1")[0]["id"]
        statements: list[str] = []
        run = photos.catalog.query

        def counted(sql, params=None):
            statements.append(sql)
            return run(sql, params)

        photos.create_index()
        with mock.patch.object(photos.catalog, "query", side_effect=counted), \
                mock.patch.object(photos.searcher, "costs", return_value=(1.0, 10.0)):   # an exact scan is cheaper
            exact = photos.search(similar=some, k=5)
        ranking = [s for s in statements if "WHERE id IN {ids:Array(String)}" not in s]   # not the page's rows by id
        assert exact.strategy == "exact" and len(ranking) == 1   # the ranking alone, its vector read inside it
        statements.clear()
        with mock.patch.object(photos.catalog, "query", side_effect=counted), \
                mock.patch.object(photos.searcher, "costs", return_value=(10.0, 1.0)):   # the index is cheaper
            indexed = photos.search(similar=some, k=4)   # another page: not the kept result
        assert indexed.strategy == "hnsw" and any("SELECT embedding" in s for s in statements)
        assert [r["id"] for r in indexed.rows] == [r["id"] for r in exact.rows][:4] and some not in indexed.rows


def test_texts_that_arrive_while_one_is_encoded_are_encoded_together(model):
    """Searches from several threads: each text is encoded once, the ones that waited in one batch, and every
    vector is the one encoding it alone gives."""
    from concurrent.futures import ThreadPoolExecutor

    from clipsearch.search.cache import TextVectors
    texts = [shapes.query_text(c, s) for c in shapes.COLOURS for s in shapes.SHAPES]
    alone = {t: v for t, v in zip(texts, model.encode_texts(texts), strict=True)}
    batches: list[list[str]] = []
    gate = threading.Event()
    encode = ClipModel.encode_texts

    def slow(self, batch):
        batches.append(list(batch))
        gate.wait(5)    # the first pass holds the others back until all have arrived
        return encode(self, batch)

    vectors = TextVectors()
    with mock.patch.object(ClipModel, "encode_texts", autospec=True, side_effect=slow), \
            ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(vectors.encode, model, [t]) for t in texts[:8]]
        threading.Timer(0.5, gate.set).start()
        got = [f.result()[0] for f in futures]
        again = [vectors.encode(model, [t])[0] for t in texts[:8]]
    assert sorted(t for b in batches for t in b) == sorted(texts[:8])    # each once
    assert len(batches) == 2 and len(batches[0]) == 1                       # the first, then all who waited
    for t, v, w in zip(texts[:8], got, again, strict=True):
        assert np.allclose(v, alone[t], atol=1e-5) and np.array_equal(v, w)


def test_a_ranking_that_fails_while_the_store_is_written_runs_once_more(tmp_path, model):
    """A switch to a model of another width fails a ranking begun before it (vectors of unequal sizes): the
    search runs again with the store as it is; the same error without a write in between is the user's."""
    from clipsearch.errors import StoreError
    manifest = shapes.write_catalogue(tmp_path / "a", random_specs(10, 97), 97)
    with clipsearch.open(tmp_path / "db", model=model, log_searches=False) as photos:
        photos.load(manifest)
        rank_by = photos.searcher.rank_by
        calls = []

        def switched_once(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                photos.catalog.connection.writes.note()   # the switch, while this search ran
                raise StoreError("Array arguments for function arrayCosineDistance must have equal sizes")
            return rank_by(*args, **kwargs)

        with mock.patch.object(photos.searcher, "rank_by", side_effect=switched_once):
            assert len(photos.search("a red circle", k=3).rows) == 3 and len(calls) == 2
        with mock.patch.object(photos.searcher, "rank_by", side_effect=StoreError("a real error")), \
                pytest.raises(StoreError, match="a real error"):
            photos.search("a blue star", k=3)
