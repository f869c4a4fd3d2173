"""Analysts' plain SQL stays correct once the HNSW index exists; ambiguous id prefixes."""
from __future__ import annotations

import numpy as np
import pytest

import clipsearch
from clipsearch.errors import NotFound, QueryError
from clipsearch.service import shapes

ROWS = 20_000
FILTERED = ("SELECT id FROM images WHERE sel_0_1 = 1 ORDER BY cosineDistance(embedding, {q:Array(Float32)}) "
            "LIMIT 10")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, model):
    rng = np.random.default_rng(81)
    vectors = shapes.perturbed(rng.standard_normal((200, 128)).astype(np.float32), ROWS, 82)
    photos = clipsearch.open(tmp_path_factory.mktemp("analyst") / "db", model=model, log_searches=False)
    shapes.insert_vectors(photos.catalog, vectors, model.label)
    photos.create_index("bf16", 16, 64)
    yield photos, vectors
    photos.close()


def test_filtered_vector_sql_returns_k_rows_with_the_index(indexed):
    photos, vectors = indexed
    q = {"q": [float(x) for x in vectors[11]]}
    assert photos.sql("SELECT count() AS n FROM images WHERE sel_0_1 = 1") == [{"n": ROWS // 1000}]
    rows = photos.sql(FILTERED, q)
    assert len(rows) == 10
    ids = [int(r["id"], 16) for r in rows]
    keep = np.flatnonzero(photos_mask(photos))
    assert ids == [int(i) for i in keep[np.argsort(-(vectors[keep] @ vectors[11]))][:10]]  # the exact top 10
    # ClickHouse's own default post-filters the index's neighbours: what analysts got before
    assert len(photos.sql(FILTERED + " SETTINGS vector_search_filter_strategy = 'auto'", q)) < 10


def photos_mask(photos: clipsearch.Collection) -> np.ndarray:
    mask = np.zeros(ROWS, bool)
    mask[[int(r["id"], 16) for r in photos.sql("SELECT id FROM images WHERE sel_0_1 = 1")]] = True
    return mask


def test_ids_by_unique_prefix(indexed):
    photos, _ = indexed
    full = f"{12345:032x}"
    assert photos.get(full)["id"] == full
    with pytest.raises(QueryError, match="names several images"):
        photos.get("000000")  # ids here are row numbers in hex: thousands start so
    with pytest.raises(NotFound, match="at least 6 hex digits"):
        photos.get("0000")
    with pytest.raises(NotFound):
        photos.get("ffffff")
