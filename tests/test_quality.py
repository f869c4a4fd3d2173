"""Retrieval quality of the bundled model, measured end to end: loader -> embedded ClickHouse -> SQL ranking.

The held-out set is freshly generated with a seed that training never used:
20 images for each of the 40 colour+shape classes (800 images). Slow: 800 searches by image alone.
"""
from __future__ import annotations

import numpy as np
import pytest

from clipsearch.images.decode import open_image
from clipsearch.search.searcher import Searcher
from clipsearch.service import shapes
from tests.conftest import loaded

pytestmark = pytest.mark.slow

HELD_OUT_SEED = 4242
PER_CLASS = 20
CLASSES = [(c, s) for c in shapes.COLOURS for s in shapes.SHAPES]


@pytest.fixture(scope="module")
def heldout(tmp_path_factory, model):
    specs = shapes.balanced_specs(np.random.default_rng(HELD_OUT_SEED), PER_CLASS)
    with loaded(tmp_path_factory.mktemp("heldout"), specs, HELD_OUT_SEED, model) as heldout:
        assert heldout.summary.loaded == len(specs) and heldout.summary.failed == 0
        yield Searcher(heldout.store, lambda: model)


def _precision_at_10(searcher: Searcher, lang: str) -> float:
    precisions = []
    for colour, shape in CLASSES:
        rows = searcher.search(shapes.query_text(colour, shape, lang), k=10).rows
        assert len(rows) == 10
        precisions.append(np.mean([(r["colour"], r["shape"]) == (colour, shape) for r in rows]))
    return float(np.mean(precisions))


def test_text_query_precision_at_10_english(heldout):
    assert _precision_at_10(heldout, "en") >= 0.9


def test_text_query_precision_at_10_spanish(heldout):
    assert _precision_at_10(heldout, "es") >= 0.9


def test_image_to_image_top5_same_class(heldout):
    ids = heldout.catalog.query("SELECT id, colour, shape FROM images ORDER BY id")
    hits = []
    for row in ids:
        top5 = heldout.search(image_id=row["id"], k=5).rows
        assert row["id"] not in {r["id"] for r in top5}  # the image itself is excluded
        hits += [(r["colour"], r["shape"]) == (row["colour"], row["shape"]) for r in top5]
    assert np.mean(hits) >= 0.9


def test_query_by_image_file_finds_its_class(heldout, tmp_path):
    rng = np.random.default_rng(99)
    hits = []
    for colour, shape in CLASSES[::4]:
        _, data = shapes.make_image(rng, colour, shape)
        (tmp_path / "q.png").write_bytes(data)
        rows = heldout.search(image=open_image(tmp_path / "q.png"), k=5).rows
        hits += [(r["colour"], r["shape"]) == (colour, shape) for r in rows]
    assert np.mean(hits) >= 0.9


def test_scores_are_cosine_similarities_in_rank_order(heldout, model):
    result = heldout.search("a blue star", k=20)
    scores = [r["score"] for r in result.rows]
    assert scores == sorted(scores, reverse=True)
    # Recompute with numpy from the stored vectors: SQL ranking equals brute force.
    stored = heldout.catalog.query("SELECT id, embedding FROM images ORDER BY id")
    matrix = np.array([r["embedding"] for r in stored], np.float32)
    expected = 1 - matrix @ model.encode_texts(["a blue star"])[0]
    top = np.argsort(expected, kind="stable")[:20]
    assert [stored[i]["id"] for i in top] == [r["id"] for r in result.rows]
    np.testing.assert_allclose(scores, 1 - expected[top], atol=1e-5)
