"""The optional HNSW index: used when present, exact k rows under filters, new rows found at once."""
from __future__ import annotations

import json

import numpy as np
import pytest

from clipsearch.errors import QueryError
from clipsearch.loader.load import load
from clipsearch.search.filters import parse_filter
from clipsearch.search.searcher import Searcher
from clipsearch.store.catalog import Catalog
from tests.conftest import loaded, random_specs, write_catalogue


@pytest.fixture(scope="module")
def index_db(tmp_path_factory, model):
    """200 images with the HNSW index, and the exact top 10 of four queries from before it was built.

    The store is closed again: the tests open it one at a time (`indexed`), so the CLI test, which
    opens a store of its own in this process, never meets it open."""
    with loaded(tmp_path_factory.mktemp("hnsw"), random_specs(200, 31), 31, model, images="a",
                extra=lambda i: {"price": i}) as catalogue:
        exact = {q: [r["id"] for r in Searcher(catalogue.store, lambda: model, log=False).search(q, k=10).rows]
                 for q in ("a red circle", "a blue star", "a white square", "a green cross")}
        catalogue.store.indexes.create_vector_index("bf16", 16, 128)
    return catalogue.db, exact


@pytest.fixture
def indexed(index_db, model):
    db, exact = index_db
    with Catalog.open(db) as store:
        yield store, Searcher(store, lambda: model, log=False), exact, db.parent


def test_search_uses_the_index_with_high_recall(indexed):
    store, searcher, exact, _ = indexed
    index_type = store.indexes.vector_index()["type_full"]
    assert "vector_similarity('hnsw', 'cosineDistance', 128, 'bf16', 16, 128)" in index_type
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
    specs = random_specs(3, 77, colour="purple", shape="star")
    manifest = write_catalogue(folder / "b", specs, 77, extra=lambda i: {"price": 1000 + i})
    assert load(str(manifest), store, model, progress=False).loaded == 3
    top = searcher.search("a purple star", k=10).rows
    assert {1000, 1001, 1002} <= {r["price"] for r in top}


def test_bad_quantization_is_refused(indexed):
    store, _, _, _ = indexed
    with pytest.raises(QueryError, match="quantization must be one of"):
        store.indexes.create_vector_index("int3")


def test_index_cli(tmp_path, cli):
    Catalog.open(tmp_path / "db").close()  # a database without images (a folder without one: test_hardening)
    empty = cli("index", "create", db=tmp_path / "db")
    assert empty.returncode == 1 and "load images first" in empty.stderr
    assert cli("index", "status", db=tmp_path / "db").stdout.strip() == \
        "index: none (searches scan every row exactly)\nfilter columns: none"


def test_index_cli_filter_columns_and_tuning(tmp_path, cli, model):
    with loaded(tmp_path, random_specs(40, 78), 78, model, extra=lambda i: {"price": i, "shelf": f"s{i % 4}"}):
        pass
    db = tmp_path / "db"
    made = cli("index", "create", "--filter-column", "shelf", "--filter-column", "price", db=db)
    assert made.returncode == 0 and "filter columns: price, shelf" in made.stdout
    bad = cli("index", "create", "--filter-column", "nope", db=db)
    assert bad.returncode != 0 and "unknown filter column 'nope'" in bad.stderr and "shelf" in bad.stderr
    found = cli("search", "a red circle", "--filter", "shelf=s1", "--json", db=db)
    assert found.returncode == 0 and {r["shelf"] for r in json.loads(found.stdout)} == {"s1"}
    assert "--filter-column" not in cli("search", "a red circle", "--filter", "shelf=s1", "--show-sql", db=db).stderr
    hinted = cli("search", "a red circle", "--filter", "height>0", "--show-sql", db=db).stderr
    assert "-- exact\n" in hinted and "`clipsearch index create --filter-column height`" in hinted
    assert cli("index", "drop", "--filter-column", "price", db=db).stdout.endswith("filter columns: shelf\n")
    built = cli("index", "create", db=db)
    assert built.returncode == 0 and "search beam" in built.stdout and "target 0.95" in built.stdout
    assert "for images " in built.stdout and "an exact ranking took " in built.stdout
    status = cli("index", "status", db=db).stdout
    assert "vector_similarity" in status and "search beam " in status and "not tuned" not in status
    image_beam = int(cli("sql", "SELECT image_beam FROM vector_index_tuning", "--format", "TSV", db=db).stdout)
    assert f"for images {image_beam}" in status
    assert "'cosineDistance', 128, 'bf16', 16, 128)" in status   # the default quantization
