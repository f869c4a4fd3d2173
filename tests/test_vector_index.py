"""The optional HNSW index: used when present, exact k rows under filters, new rows found at once."""
from __future__ import annotations

import numpy as np
import pytest
from clipsearch.loader.load import load

from clipsearch import synthetic as shapes
from clipsearch.catalog import Catalog
from clipsearch.errors import QueryError
from clipsearch.query import parse_filter
from clipsearch.search import Searcher

from .conftest import run_cli, write_catalogue


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("hnsw")
    rng = np.random.default_rng(31)
    manifest = write_catalogue(folder / "a", [shapes.random_spec(rng) for _ in range(200)], 31,
                               extra=lambda i: {"price": i})
    store = Catalog.open(folder / "db")
    load(str(manifest), store, model, progress=False)
    exact = {q: [r["id"] for r in Searcher(store, lambda: model, log=False).search(q, k=10).rows]
             for q in ("a red circle", "a blue star", "a white square", "a green cross")}
    store.create_vector_index("bf16", 16, 128)
    yield store, Searcher(store, lambda: model, log=False), exact, folder
    store.close()


def test_search_uses_the_index_with_high_recall(indexed):
    store, searcher, exact, _ = indexed
    assert "vector_similarity('hnsw', 'cosineDistance', 128, 'bf16', 16, 128)" in store.vector_index()["type_full"]
    recalls = []
    for query, expected in exact.items():
        result = searcher.search(query, k=10)
        assert result.strategy == "hnsw" and len(result.rows) == 10
        recalls.append(len(set(expected) & {r["id"] for r in result.rows}) / 10)
        plan = store.text("EXPLAIN indexes = 1 " + result.sql, result.params, "TSV")
        assert "embedding_hnsw" in plan
    assert np.mean(recalls) >= 0.9


def test_filtered_search_returns_exactly_k_matching_rows(indexed):
    _, searcher, _, _ = indexed
    for expr, keep in (("price<7", lambda p: p < 7), ("price>=150", lambda p: p >= 150), ("price<3", lambda p: p < 3)):
        result = searcher.search("a red circle", k=10, filters=[parse_filter(expr)])
        matching = sum(1 for price in range(200) if keep(price))
        assert len(result.rows) == min(10, matching)
        assert all(keep(r["price"]) for r in result.rows)


def test_rows_inserted_after_indexing_are_found(indexed, model):
    store, searcher, _, folder = indexed
    rng = np.random.default_rng(77)
    specs = [shapes.random_spec(rng, "purple", "star") for _ in range(3)]
    manifest = write_catalogue(folder / "b", specs, 77, extra=lambda i: {"price": 1000 + i})
    assert load(str(manifest), store, model, progress=False).loaded == 3
    top = searcher.search("a purple star", k=10).rows
    assert {1000, 1001, 1002} <= {r["price"] for r in top}


def test_bad_quantization_is_refused(indexed):
    store, _, _, _ = indexed
    with pytest.raises(QueryError, match="quantization must be one of"):
        store.create_vector_index("int3")


def test_index_cli(tmp_path):
    empty = run_cli("index", "create", db=tmp_path / "db")
    assert empty.returncode == 1 and "load images first" in empty.stderr
    assert run_cli("index", "status", db=tmp_path / "db").stdout.strip() == \
        "index: none (searches scan every row exactly)"
