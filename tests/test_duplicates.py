"""Near-duplicates: planted groups are found exactly, and hashing never loses a pair the exact join finds."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from clipsearch.errors import QueryError
from clipsearch.images.duplicates import (
    DEFAULT_THRESHOLD,
    MISS_CHANCE,
    SKETCH_BITS,
    duplicate_groups,
    duplicate_pairs,
    lsh_plan,
    miss_chance,
)
from clipsearch.loader.load import load
from clipsearch.service import shapes
from clipsearch.service.app import create_app
from clipsearch.settings import Settings
from clipsearch.store.catalog import Catalog
from tests.conftest import ROOT, write_catalogue

DIM = 128


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _moved(v, distance, rng):
    """A unit vector exactly `distance` (cosine) away from unit vector `v`."""
    side = rng.standard_normal(v.shape)
    side = _unit(side - side @ v * v)
    angle = np.arccos(1 - distance)
    return np.cos(angle) * v + np.sin(angle) * side


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """2,000 vectors in 40 clusters (look-alikes, but none within 1.5 x the threshold), 30 of them with
    1-3 copies moved by up to 0.9 x the threshold; returns (db, expected groups as sets of paths)."""
    rng = np.random.default_rng(3)
    centres = _unit(rng.standard_normal((40, DIM)))
    vectors = []
    while len(vectors) < 2000:  # rejection keeps distinct vectors at least 1.5 x the threshold apart
        v = _unit(centres[len(vectors) % 40] + 0.5 * rng.standard_normal(DIM) / np.sqrt(DIM))
        if not vectors or 1 - np.max(np.array(vectors) @ v) > 1.5 * DEFAULT_THRESHOLD:
            vectors.append(v)
    paths = [f"/photos/{i:05d}.jpg" for i in range(len(vectors))]
    expected = []
    for n, source in enumerate(rng.choice(len(vectors), 30, replace=False)):
        group = {paths[source]}
        for c in range(1 + n % 3):
            vectors.append(_moved(vectors[source], rng.uniform(0, 0.9 * DEFAULT_THRESHOLD), rng))
            paths.append(f"/photos/copy-{source:05d}-{c}.jpg")
            group.add(paths[-1])
        expected.append(frozenset(group))
    db = tmp_path_factory.mktemp("dups") / "db"
    matrix = np.array(vectors, np.float32)
    with Catalog.open(db) as store:
        store.images.insert(pa.table({
            "id": [f"{i:032x}" for i in range(len(paths))], "path": paths, "model": ["clipsearch-shapes"] * len(paths),
            # copies are smaller files, so each group's original must come first
            "width": [640 if "copy" not in p else 320 for p in paths], "height": [480 if "copy" not in p else 240
                                                                                for p in paths],
            "embedding": pa.ListArray.from_arrays(pa.array(np.arange(0, matrix.size + 1, DIM, dtype=np.int32)),
                                                  pa.array(matrix.ravel()))}))
    return db, set(expected)


def _path_sets(groups):
    return {frozenset(row["path"] for row in g["images"]) for g in groups}


def test_every_planted_group_and_nothing_else(planted):
    db, expected = planted
    with Catalog.open(db) as store:
        groups = duplicate_groups(store)
    assert _path_sets(groups) == expected
    assert [len(g["images"]) for g in groups] == sorted((len(g) for g in expected), reverse=True)
    for g in groups:
        assert "copy" not in g["images"][0]["path"]  # the largest image first: the one to keep
        assert 0 <= g["max_distance"] <= DEFAULT_THRESHOLD


def test_hashing_finds_every_pair_an_all_pairs_join_finds(tmp_path, model):
    """On real embeddings of generated images (with re-encoded, resized and cropped copies), the
    candidate step may skip comparisons, never results: compare with the exact self-join file."""
    specs = shapes.balanced_specs(np.random.default_rng(31), 5, dims_range=(96, 320))
    folder = write_catalogue(tmp_path / "images", specs, 31, manifest=None)
    rng = np.random.default_rng(32)
    for i, source in enumerate(sorted(folder.iterdir())[:30]):
        kind = shapes.NEAR_COPY_KINDS[i % 3]
        (folder / f"copy-{source.stem}-{kind}.jpg").write_bytes(shapes.near_copy(source.read_bytes(), kind, rng))
    with Catalog.open(tmp_path / "db") as store:
        assert load(str(folder), store, model, progress=False).loaded == 230
        exact = store.query((ROOT / "sql/queries/near_duplicate_pairs.sql").read_text(), {"max_distance": 0.02})
        pairs = duplicate_pairs(store, 0.02)
    assert len(exact) > 30  # copies and look-alikes both
    assert {(p["id_a"], p["id_b"]) for p in pairs} == {(p["id_a"], p["id_b"]) for p in exact}
    by_pair = {(p["id_a"], p["id_b"]): p["distance"] for p in exact}
    assert all(abs(p["distance"] - by_pair[(p["id_a"], p["id_b"])]) < 1e-5 for p in pairs)  # the file rounds


def test_plan_misses_a_pair_at_the_threshold_rarely():
    for rows in (2, 1000, 100_000, 10_000_000):
        for threshold in (0.005, 0.03, 0.1):
            bits, tables = lsh_plan(rows, threshold)
            assert 8 <= bits <= 32 and 1 <= tables <= 48
            assert miss_chance(threshold, bits, tables) <= MISS_CHANCE
    # the formula against a simulation: sketches of pairs exactly 0.03 apart, tables of random bit subsets
    rng = np.random.default_rng(0)
    bits, tables = 17, 10
    a = _unit(rng.standard_normal((4000, DIM)))
    b = np.array([_moved(v, 0.03, rng) for v in a])
    planes = rng.standard_normal((SKETCH_BITS, DIM))
    differ = (a @ planes.T > 0) != (b @ planes.T > 0)
    subsets = [rng.choice(SKETCH_BITS, bits, replace=False) for _ in range(tables)]
    missed = np.mean([not any(not row[s].any() for s in subsets) for row in differ])
    assert abs(missed - miss_chance(0.03, bits, tables)) < 0.03


def test_bad_thresholds(planted):
    with Catalog.open(planted[0]) as store:
        for bad in ("x", -0.1, 0.9):
            with pytest.raises(QueryError, match="threshold"):
                duplicate_groups(store, bad)


def test_cli_and_http(planted, model, cli):
    db, expected = planted
    # these rows have vectors and no perceptual hashes: the CLIP-distance mode, named (copies is the default)
    out = cli("duplicates", "--mode", "similar", "--json", db=db)
    assert out.returncode == 0, out.stderr
    assert _path_sets(json.loads(out.stdout)) == expected
    text = cli("duplicates", "--mode", "similar", "--threshold", "0.0", db=db)
    assert text.returncode == 0 and "no near-duplicates" in text.stdout
    listing = cli("duplicates", "--mode", "similar", db=db)
    assert listing.returncode == 0 and listing.stdout.count("group ") == len(expected)
    bad = cli("duplicates", "--mode", "similar", "--threshold", "2", db=db)
    assert bad.returncode != 0 and "threshold" in bad.stderr and "Traceback" not in bad.stderr

    app = create_app(Settings.load(db=str(db)), model=model, config={"TESTING": True})
    try:
        client = app.test_client()
        body = client.get("/api/duplicates?mode=similar").get_json()
        assert body["threshold"] == DEFAULT_THRESHOLD and _path_sets(body["groups"]) == expected
        res = client.get("/api/duplicates?mode=similar&threshold=lots")
        assert res.status_code == 400 and "threshold" in res.get_json()["error"]
    finally:
        app.extensions['clipsearch'].close()
