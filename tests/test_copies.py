"""Copies by perceptual hash: planted copies grouped exactly and look-alikes left apart, the band search
against every pair, the hashes from the loader and from the backfill, the CLI and HTTP modes, and the
generated benchmark at small size."""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from clipsearch.errors import QueryError
from clipsearch.images import copies
from clipsearch.images.copies import (
    CHROMA_DISTANCE,
    COLOUR_DISTANCE,
    DEFAULT_DISTANCE,
    MISS_CHANCE,
    VIEW_PAIRS,
    VIEWS,
    band_miss,
    band_plan,
    band_sizes,
    check_distance,
    copy_distance,
    copy_groups,
    copy_pairs,
)
from clipsearch.images.decode import decode
from clipsearch.images.hashes import HASH_COLUMNS, HASH_DECODE_SIZE, Hashes, distance, file_hashes, image_hashes
from clipsearch.loader.load import load
from clipsearch.service import shapes
from clipsearch.service.app import create_app
from clipsearch.settings import Settings
from clipsearch.store.catalog import Catalog
from tests.conftest import ROOT, random_specs, write_catalogue

PLANTED_KINDS = ("reencode", "resize", "format")
ORIGINALS = 24


def _suffix(image_format: str) -> str:
    return "jpg" if image_format == "JPEG" else "png"


@pytest.fixture(scope="module")
def planted(tmp_path_factory, model):
    """24 generated originals, each with a look-alike (another picture of its colour and shape) and a copy
    re-encoded, resized and converted, loaded by the loader; returns (db, expected groups as sets of names,
    the items)."""
    folder = tmp_path_factory.mktemp("copies")
    images = folder / "images"
    images.mkdir()
    items = list(shapes.copy_benchmark(ORIGINALS, 5, PLANTED_KINDS, dims_range=(160, 400)))
    for item in items:
        (images / f"{item.name}.{_suffix(item.image_format)}").write_bytes(item.data)
    with Catalog.open(folder / "db") as store:
        assert load(str(images), store, model, progress=False).loaded == len(items)
    expected = {frozenset(f"{i.name}.{_suffix(i.image_format)}" for i in items if i.family == family)
                for family in range(ORIGINALS)}
    return folder / "db", expected, items


def _names(groups):
    return {frozenset(row["path"].rsplit("/", 1)[1] for row in g["images"]) for g in groups}


def test_copies_are_grouped_exactly_and_look_alikes_are_not(planted):
    db, expected, _ = planted
    with Catalog.open(db) as store:
        assert store.query("SELECT countIf(phash IS NULL) AS n FROM images")[0]["n"] == 0
        groups = copy_groups(store)
    assert _names(groups) == expected
    for g in groups:
        first = g["images"][0]
        # the one to keep: the most pixels, then the biggest file (a PNG beside its JPEG copy)
        assert all((first["width"] * first["height"], first["file_size"]) >= (r["width"] * r["height"], r["file_size"])
                   for r in g["images"])
        assert 0 <= g["max_distance"] <= DEFAULT_DISTANCE and isinstance(g["max_distance"], int)


def _hashes(row) -> Hashes:
    return Hashes(*(row[c] for c in HASH_COLUMNS))


def _exact(rows, max_distance):
    return {(min(a["id"], b["id"]), max(a["id"], b["id"])) for i, a in enumerate(rows) for b in rows[i + 1:]
            if (d := copy_distance(_hashes(a), _hashes(b))) is not None and d <= max_distance}


@pytest.mark.parametrize("threshold", [0, 4, DEFAULT_DISTANCE, 12])
def test_sql_pairs_are_every_pair_within_the_threshold(planted, threshold):
    """The band search may skip comparisons, never results: against all pairs, in Python."""
    with Catalog.open(planted[0]) as store:
        rows = store.query(f"SELECT id, {', '.join(HASH_COLUMNS)} FROM images")
        pairs = copy_pairs(store, threshold)
    assert {(p["id_a"], p["id_b"]) for p in pairs} == _exact(rows, threshold)
    hashes = {r["id"]: r for r in rows}
    for p in pairs:
        assert p["distance"] == copy_distance(_hashes(hashes[p["id_a"]]), _hashes(hashes[p["id_b"]])) <= threshold
        assert p["colour_distance"] <= COLOUR_DISTANCE


def _flip(value: int, bits, rng) -> int:
    for bit in rng.choice(64, bits, replace=False):
        value ^= 1 << int(bit)
    return value


def test_band_search_on_many_rows_finds_every_pair(tmp_path):
    """3,000 random hash values with 300 planted pairs 0-12 bits apart, a quarter each by whole/whole,
    centre/centre and centre/whole in both directions, one in five with colour layouts too far apart on those
    views: at the default threshold (and at 12, with narrower bands) the SQL finds exactly the pairs an
    all-pairs scan finds."""
    rng = np.random.default_rng(8)
    n = 3000

    def random_hashes():
        return rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    h = {"phash": random_hashes(), "centre_phash": random_hashes(), "chroma_hash": np.zeros(n, np.uint64),
         "centre_chroma_hash": np.zeros(n, np.uint64), "colour_hash": np.zeros(n, np.uint64)}
    for k in range(300):
        one, other = VIEW_PAIRS[k % 4]
        copy = n - 1 - k
        h[VIEWS[other][0]][copy] = _flip(int(h[VIEWS[one][0]][k]), k % 13, rng)
        if k % 5 == 0:
            h[VIEWS[other][1]][copy] = _flip(0, CHROMA_DISTANCE + 2, rng)
    ids = [f"{i:032x}" for i in range(n)]
    with Catalog.open(tmp_path / "db") as store:
        store.images.insert(pa.table({"id": ids, "path": ids, "model": ["test"] * n,
                                      **{c: pa.array(v, pa.uint64()) for c, v in h.items()}}))
        for threshold in (DEFAULT_DISTANCE, 12):
            found = {(p["id_a"], p["id_b"]) for p in copy_pairs(store, threshold)}
            near = np.zeros((n, n), bool)
            for one, other in VIEW_PAIRS:
                (grey_a, chroma_a), (grey_b, chroma_b) = VIEWS[one], VIEWS[other]
                near |= (np.bitwise_count(h[grey_a][:, None] ^ h[grey_b][None, :]) <= threshold) & \
                    (np.bitwise_count(h[chroma_a][:, None] ^ h[chroma_b][None, :]) <= CHROMA_DISTANCE)
            exact = {(ids[i], ids[j]) for i, j in zip(*np.nonzero(np.triu(near | near.T, 1)), strict=True)}
            assert len(exact) >= 0.8 * 300 * (threshold + 1) // 13
            assert found == exact


def test_band_plan_misses_a_pair_at_the_threshold_rarely():
    for rows in (2, 1000, 100_000, 10_000_000):
        for threshold in range(0, 25):
            bands, partitions = band_plan(rows, threshold)
            assert 4 <= bands <= 16 and 1 <= partitions <= 32 and sum(band_sizes(bands)) == 64
            assert band_miss(threshold, bands) ** partitions <= MISS_CHANCE
    assert band_miss(3, 4) == 0  # fewer differing bits than bands: some band is always clean
    # the formula against a simulation: random 10-bit differences, bands of a random shuffle
    rng = np.random.default_rng(0)
    missed = 0
    trials = 20_000
    for _ in range(trials):
        bits = rng.choice(64, 10, replace=False)
        shuffle = rng.permutation(64)
        band_of = np.empty(64, int)
        for j in range(5):
            band_of[shuffle[j * 64 // 5:(j + 1) * 64 // 5]] = j
        missed += len(set(band_of[bits])) == 5
    assert abs(missed / trials - band_miss(10, 5)) < 0.015


def test_the_analysts_file_gives_the_same_pairs(planted, cli):
    db = planted[0]
    bands, partitions = band_plan(100 * len(VIEWS), DEFAULT_DISTANCE)
    out = cli("sql", "--file", ROOT / "sql" / "queries" / "near_copy_pairs.sql", "--format", "JSONEachRow",
              "--param", f"max_distance={DEFAULT_DISTANCE}", "--param", f"max_colour_distance={COLOUR_DISTANCE}",
              "--param", f"max_chroma_distance={CHROMA_DISTANCE}",
              "--param", f"bands={bands}", "--param", f"partitions={partitions}",
              "--param", "max_candidates=100000000", db=db)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    with Catalog.open(db) as store:
        assert {(r["id_a"], r["id_b"]) for r in rows} == {(p["id_a"], p["id_b"]) for p in copy_pairs(store)}
    assert all(r["compared"] >= len(rows) for r in rows)


def test_thresholds():
    assert check_distance(None) == DEFAULT_DISTANCE and check_distance(8.0) == 8 and check_distance("3") == 3
    for bad in ("x", -1, 2.5, 25, math.inf, math.nan, True, [8]):
        with pytest.raises(QueryError, match="threshold"):
            check_distance(bad)
    with pytest.raises(QueryError, match="at most|from 0 to 12"):
        check_distance(13, copies.BOUNDED_DISTANCE)


# -- the hashes -----------------------------------------------------------------------------------
def test_loader_and_backfill_compute_the_same_hashes(planted):
    db, _, items = planted
    with Catalog.open(db) as store:
        stored = {r["path"].rsplit("/", 1)[1].split(".")[0]: tuple(r[c] for c in HASH_COLUMNS)
                  for r in store.query(f"SELECT path, {', '.join(HASH_COLUMNS)} FROM images")}
    for item in items[:20]:
        assert stored[item.name] == file_hashes(item.data)


def test_a_hash_that_fails_is_null_not_a_failed_load(tmp_path, store, model, monkeypatch):
    from clipsearch.loader import load as loader

    def broken(image):
        raise ValueError("no hash today")
    monkeypatch.setattr(loader, "image_hashes", broken)
    folder = write_catalogue(tmp_path / "imgs", random_specs(4, 3), 3, manifest=None)
    summary = load(str(folder), store, model, progress=False, workers=1)  # a forked worker inherits the patch
    assert (summary.loaded, summary.failed) == (4, 0)
    nulls = ", ".join(f"countIf({c} IS NULL) AS {c}" for c in HASH_COLUMNS)
    assert store.query(f"SELECT {nulls} FROM images")[0] == dict.fromkeys(HASH_COLUMNS, 4)
    assert file_hashes(b"not an image") is None


def test_hashes_survive_what_copies_go_through():
    rng = np.random.default_rng(12)
    kept = {kind: [] for kind in ("reencode", "resize", "format", "brightness")}
    for _ in range(20):
        _, data = shapes.make_image(rng, dims_range=(200, 500))
        original = file_hashes(data)
        for kind, outcomes in kept.items():
            copy = file_hashes(shapes.planted_copy(data, kind, rng).data)
            apart = copy_distance(original, copy, (("whole", "whole"),))  # the centre views: for crops and frames
            outcomes.append(apart is not None and apart <= DEFAULT_DISTANCE)
    # pictures with almost no detail (a small shape on a gradient) have fragile hashes: one in 20 here
    assert all(sum(outcomes) >= 18 for outcomes in kept.values()), kept


def test_the_hash_is_imagehash_phash():
    imagehash = pytest.importorskip("imagehash")
    rng = np.random.default_rng(13)
    bits = []
    for _ in range(40):
        _, data = shapes.make_image(rng, dims_range=(200, 640))
        image = decode(Image.open(io.BytesIO(data)), HASH_DECODE_SIZE)
        bits.append(distance(image_hashes(image).phash, int(str(imagehash.phash(image)), 16)))
    assert np.mean(bits) <= 1 and max(bits) <= 6


def _hashes_by_path(store):
    rows = store.query(f"SELECT path, {', '.join(HASH_COLUMNS)} FROM images")
    return {r["path"]: tuple(r[c] for c in HASH_COLUMNS) for r in rows}


@pytest.mark.parametrize("dropped", [HASH_COLUMNS, ("centre_phash", "chroma_hash", "centre_chroma_hash")],
                         ids=["no hashes", "whole-picture hashes only"])
def test_old_databases_get_the_columns_and_the_backfill_fills_them(tmp_path, model, cli, dropped):
    """A database from before the hashes, or from when only phash and colour_hash existed."""
    folder = write_catalogue(tmp_path / "imgs", random_specs(8, 4), 4, manifest=None)
    db = tmp_path / "db"
    with Catalog.open(db) as store:
        assert load(str(folder), store, model, progress=False).loaded == 8
        before = _hashes_by_path(store)
        drops = ", ".join(f"DROP COLUMN {c}" for c in dropped)
        store.owner_sql(f"ALTER TABLE images {drops} SETTINGS mutations_sync = 2")
        store.owner_sql("DROP TABLE schema_version")   # as the releases before schema versions made it
    with Catalog.open(db) as store:  # opening adds them back, empty
        assert all(store.images.columns()[c] == "Nullable(UInt64)" for c in HASH_COLUMNS)
        assert store.query(f"SELECT countIf({dropped[-1]} IS NULL) AS n FROM images")[0]["n"] == 8
    files = sorted(folder.iterdir())
    files[0].unlink()                                    # gone
    files[1].write_bytes(files[2].read_bytes() + b"x")   # changed since it was loaded
    note = cli("duplicates", db=db)
    assert note.returncode == 0 and "8 images lack perceptual hashes" in note.stderr
    first = cli("hashes", "--quiet", db=db)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("hashed 6 of 8 images without hashes")
    assert first.stdout.strip().endswith("left without: 1 files gone, 1 files changed since they were loaded "
                                         "(load them again)")
    with Catalog.open(db) as store:
        after = _hashes_by_path(store)
        assert store.images.count() == 8
    left = (str(files[0]), str(files[1]))
    assert {p: h for p, h in after.items() if p not in left} == {p: before[p] for p in after if p not in left}
    for path in left:  # what was not dropped stays as it was
        assert after[path] == tuple(None if c in dropped else v for c, v in zip(HASH_COLUMNS, before[path],
                                                                                strict=True))
    again = cli("hashes", "--quiet", db=db)  # idempotent: only the two without hashes are tried again
    assert again.returncode == 0 and again.stdout.startswith("hashed 0 of 2 images")
    with Catalog.open(db) as store:
        store.owner_sql(f"DELETE FROM images WHERE {dropped[-1]} IS NULL")
    assert cli("hashes", db=db).stdout.strip() == "every image has its perceptual hashes"


# -- the CLI and HTTP ---------------------------------------------------------------------------
def test_cli_modes_and_errors(planted, cli):
    db, expected, _ = planted
    out = cli("duplicates", "--json", db=db)
    assert out.returncode == 0, out.stderr
    assert _names(json.loads(out.stdout)) == expected
    listing = cli("duplicates", db=db)
    assert listing.returncode == 0 and listing.stdout.count("group ") == len(expected)
    assert "hash bits apart" in listing.stdout and not listing.stderr
    same = cli("duplicates", "--mode", "copies", "--threshold", str(DEFAULT_DISTANCE), "--json", db=db)
    assert json.loads(same.stdout) == json.loads(out.stdout)
    similar = cli("duplicates", "--mode", "similar", "--json", db=db)  # by CLIP distance: other groups
    assert similar.returncode == 0 and all(isinstance(g["max_distance"], float) for g in json.loads(similar.stdout))
    none = cli("duplicates", "--mode", "similar", "--threshold", "0.0", "--json", db=db)
    assert none.returncode == 0 and all(g["max_distance"] == 0 for g in json.loads(none.stdout))
    assert cli("duplicates", "--threshold", "0.03", "--json", db=db).stdout == similar.stdout  # 0 < D < 1: similar
    for args, message in ((["--mode", "pixels"], "invalid choice"), (["--threshold", "2.5"], "whole number"),
                          (["--threshold", "40"], "from 0 to 24"), (["--mode", "similar", "--threshold", "2"],
                                                                     "threshold")):
        bad = cli("duplicates", *args, db=db)
        assert bad.returncode != 0 and message in bad.stderr and "Traceback" not in bad.stderr, (args, bad.stderr)


def test_http_modes_and_bounds(planted, model, monkeypatch):
    db, expected, _ = planted
    app = create_app(Settings.load(db=str(db)), model=model, config={"TESTING": True})
    try:
        client = app.test_client()
        body = client.get("/api/duplicates").get_json()
        assert (body["mode"], body["threshold"]) == ("copies", DEFAULT_DISTANCE) and _names(body["groups"]) == expected
        body = client.get("/api/duplicates?mode=copies&threshold=12").get_json()
        assert body["threshold"] == 12 and sum(len(g["images"]) for g in body["groups"]) >= 4 * ORIGINALS
        similar = client.get("/api/duplicates?mode=similar").get_json()
        assert (similar["mode"], similar["threshold"]) == ("similar", 0.03)
        # a threshold between 0 and 1 is a cosine distance: clients from before copies keep their meaning
        assert client.get("/api/duplicates?threshold=0.03").get_json() == similar
        for query, word in (("mode=pixels", "mode"), ("threshold=13", "threshold"), ("threshold=2.5", "threshold"),
                            ("threshold=lots", "threshold"), ("mode=similar&threshold=0.5", "threshold"),
                            ("threshold=inf", "threshold")):
            res = client.get(f"/api/duplicates?{query}")
            assert res.status_code == 400 and word in res.get_json()["error"], (query, res.get_json())
        monkeypatch.setattr(copies, "BOUNDED_CANDIDATES", 1)  # the work a request may do
        res = client.get("/api/duplicates")
        assert res.status_code == 400 and "candidate pairs" in res.get_json()["error"]
        document = client.get("/api/openapi.json").get_json()
        names = {p["name"] for p in document["paths"]["/api/duplicates"]["get"]["parameters"]}
        assert names == {"mode", "threshold"}
        # the hashes are no search result columns and no filters
        hit = client.get("/api/search?q=a+red+circle&k=3").get_json()["results"][0]
        assert not set(HASH_COLUMNS) & set(hit)
        assert not set(HASH_COLUMNS) & {c["name"] for c in client.get("/api/columns").get_json()["columns"]}
    finally:
        app.extensions["clipsearch"].close()


# -- the generated benchmark at small size ------------------------------------------------------
def _grouped_scores(tmp_path, items, whole_only=False):
    """Hash `items` as the loader does, group them in SQL at the default threshold and score the groups.
    `whole_only`: the centre views hold the whole picture's hashes, as if clipsearch had no centre hashes."""
    values = [file_hashes(item.data)._asdict() for item in items]
    if whole_only:
        for v in values:
            v.update(centre_phash=v["phash"], centre_chroma_hash=v["chroma_hash"])
    n = len(items)
    with Catalog.open(tmp_path / f"db-{whole_only}") as store:
        store.images.insert(pa.table({
            "id": [f"{i:032x}" for i in range(n)], "path": [item.name for item in items], "model": ["test"] * n,
            **{c: pa.array([v[c] for v in values], pa.uint64()) for c in HASH_COLUMNS}}))
        groups = copy_groups(store)
    return shapes.score_copies(items, [[row["path"] for row in g["images"]] for g in groups])


def test_generated_benchmark_recall_and_precision(tmp_path):
    """bench/copies.py at small size: 40 originals, a look-alike of each and a copy per kind of change,
    hashed as the loader hashes them and grouped in SQL at the default threshold."""
    scores = _grouped_scores(tmp_path, list(shapes.copy_benchmark(40, 21, dims_range=(200, 500))))
    for kind in ("reencode", "resize", "format", "brightness"):
        assert scores["recall"][kind] >= 0.95, scores
    assert scores["recall"]["border"] >= 0.9 and scores["recall"]["crop"] >= 0.7, scores
    assert scores["lookalike_precision"] == 1.0 and scores["pair_precision"] >= 0.99, scores


def test_crops_and_borders_are_found_by_the_centre_views(tmp_path):
    """Known answers: 120 originals, each with a look-alike, a crop of 0-10% per side and a 2-10 pixel border,
    grouped at the default threshold. The goal, measured on bench/copies.py's 2,000 originals, is a recall of
    0.8 for both and no look-alike grouped; samples of 120 vary by about 0.05 either way (0.79 and 0.97 on this
    one), so crops need 0.75 here. 3 of the 310 pairs in groups are not one picture. The same images with the
    whole pictures' hashes alone find 0.42 of the crops and 0.75 of the borders: these thresholds need the
    centre views."""
    items = list(shapes.copy_benchmark(120, 33, ("crop", "border"), dims_range=(200, 640)))
    scores = _grouped_scores(tmp_path, items)
    assert scores["recall"]["crop"] >= 0.75 and scores["recall"]["border"] >= 0.9, scores
    assert scores["lookalike_precision"] == 1.0 and scores["pair_precision"] >= 0.98, scores
    whole = _grouped_scores(tmp_path, items, whole_only=True)
    assert whole["recall"]["crop"] < 0.6 and whole["recall"]["border"] < 0.9, whole


def test_hashes_are_held_in_the_order_of_their_columns():
    assert Hashes._fields == HASH_COLUMNS   # the loader inserts a Hashes as the schema's columns, in this order
