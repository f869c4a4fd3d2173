"""sql/rebuild_images.sql: how a store made before 128-row granules gets them."""
from __future__ import annotations

import numpy as np
import pytest

import clipsearch
from clipsearch.errors import ClipsearchError
from clipsearch.search.filters import parse_filter
from clipsearch.search.query import Query
from clipsearch.search.statement import QueryVector, Strategy, search_sql
from clipsearch.service import shapes
from clipsearch.sql import read as read_sql
from clipsearch.store.connection import sql_statements
from tests.conftest import granularity


def test_rebuild_images_gives_an_old_store_small_granules(tmp_path, model):
    """sql/rebuild_images.sql on a store made with ClickHouse's default granule (as before 128): every row,
    the vector index and a filter column stay, and searches use both as before."""
    photos = clipsearch.open(tmp_path / "db", model=model, log_searches=False)
    try:
        rng = np.random.default_rng(31)
        vectors = shapes.perturbed(rng.standard_normal((60, 128)).astype(np.float32), 5000, 32)
        script = read_sql("rebuild_images.sql")
        for statement in sql_statements(script.replace("index_granularity = 128", "index_granularity = 8192")):
            photos.catalog.owner_sql(statement)   # the empty table remade as stores used to be
        shapes.insert_vectors(photos.catalog, vectors, model.label)
        photos.create_index("bf16", 16, 64)
        photos.add_filter_column("sel_1")
        assert granularity(photos.catalog, "images") == 8192
        before = photos.sql("SELECT id, embedding, sel_1 FROM images ORDER BY id")
        assert len(before) == 5000
        photos.sql(script, fmt="TSV")   # as `clipsearch sql --file sql/rebuild_images.sql` runs it
        assert granularity(photos.catalog, "images") == 128
        assert photos.sql("SELECT id, embedding, sel_1 FROM images ORDER BY id") == before
        assert photos.sql("SELECT count() AS n FROM system.tables WHERE name = 'images_rebuilt'") == [{"n": 0}]
        state = photos.catalog.state.read()
        assert state.filter_columns == ["sel_1"] and photos.catalog.indexes.vector_index() is not None
        one = [QueryVector(vector=vectors[7].tolist())]
        nearest = [int(i) for i in np.argsort(-(vectors @ vectors[7]))[:10]]
        sql, params = search_sql(Query(k=10), one, Strategy("hnsw", beam=2048))
        assert "embedding_hnsw" in photos.catalog.text("EXPLAIN indexes = 1 " + sql, params, "TSV")   # came along
        found = [int(r["id"], 16) for r in photos.catalog.query(sql, params)]
        assert len(found) == 10 and len(set(found) & set(nearest)) >= 8   # bf16 distances: near ties may swap
        query = Query.check(state.columns, [parse_filter("sel_1=1")], 10)
        rows, _, _, strategy = photos.searcher.rank(state, one, query)
        assert strategy.label == "exact (projection on sel_1)"
        keep = np.flatnonzero([r["sel_1"] == 1 for r in before])
        exact = keep[np.argsort(-(vectors[keep] @ vectors[7]))][:10]
        assert [int(r["id"], 16) for r in rows] == [int(i) for i in exact]

        # A cluster's `images` is a Distributed table (here a Merge table over the rows): refused, nothing changed.
        photos.catalog.owner_sql("RENAME TABLE images TO images_rows")
        photos.catalog.owner_sql("CREATE TABLE images ENGINE = Merge(currentDatabase(), '^images_rows$')")
        with pytest.raises(ClipsearchError, match="not the ReplacingMergeTree table"):
            photos.sql(script, fmt="TSV")
        assert photos.sql("SELECT name, engine FROM system.tables WHERE name LIKE 'images%' ORDER BY name") == [
            {"name": "images", "engine": "Merge"}, {"name": "images_rows", "engine": "ReplacingMergeTree"}]
    finally:
        photos.close()
