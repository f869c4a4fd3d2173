"""Loader faults: names that are not UTF-8, files changed after loading, manifests pointing outside their
folder, phone photos (HEIC), and mistakes reported before the model loads."""
from __future__ import annotations

import os

import numpy as np
import pytest

from clipsearch.errors import SourceError
from clipsearch.loader.load import load
from clipsearch.service import shapes
from clipsearch.store.catalog import Catalog


@pytest.fixture
def catalog(tmp_path):
    with Catalog.open(tmp_path / "db") as c:
        yield c


def _no_model():
    raise AssertionError("the model must not be loaded for this")


def test_a_name_that_is_not_utf8_is_reported_and_the_rest_loads(tmp_path, catalog, model):
    rng = np.random.default_rng(41)
    folder = shapes.write_catalogue(tmp_path / "imgs", [shapes.random_spec(rng) for _ in range(3)], 41,
                                       manifest=None)
    bad = os.path.join(os.fsencode(folder), b"caf\xe9-\xff.png")  # Latin-1 bytes, as old archives have
    with open(bad, "wb") as f:
        f.write(_png(rng))
    heard = []
    summary = load(str(folder), catalog, model, progress=False, report=lambda p, r: heard.append((p, r)))
    assert (summary.loaded, summary.failed) == (3, 1)
    printable = f"{folder}/caf\\xe9-\\xff.png"
    assert heard == [(printable, "the file name is not valid UTF-8; rename the file")]
    assert catalog.query("SELECT path, reason FROM load_errors") == [{"path": printable, "reason": heard[0][1]}]
    assert catalog.images.count() == 3


def _png(rng) -> bytes:
    spec = shapes.random_spec(rng)
    return shapes.encode(shapes.render(spec, rng), "PNG", rng)


def test_a_changed_file_replaces_its_row(tmp_path, catalog, model):
    rng = np.random.default_rng(42)
    folder = shapes.write_catalogue(tmp_path / "imgs", [shapes.random_spec(rng, "red", "circle"),
                                                           shapes.random_spec(rng, "blue", "star")], 42,
                                       manifest=None)
    first = load(str(folder), catalog, model, progress=False)
    assert first.loaded == 2
    before = {r["path"]: r["id"] for r in catalog.query("SELECT path, id FROM images")}
    target = sorted(before)[0]
    # New content at the same path, and a later modification time, as an editor leaves it
    data = shapes.encode(shapes.render(shapes.random_spec(rng, "green", "square"), rng), "PNG", rng)
    with open(target, "wb") as f:
        f.write(data)
    os.utime(target, ns=(os.stat(target).st_atime_ns, os.stat(target).st_mtime_ns + 5_000_000_000))
    again = load(str(folder), catalog, model, progress=False)
    assert (again.loaded, again.already_present, again.replaced) == (1, 1, 1)
    assert "replaced 1 changed files" in again.line()
    rows = catalog.query("SELECT path, id FROM images FINAL ORDER BY path")
    assert len(rows) == 2 and len({r["path"] for r in rows}) == 2
    assert {r["path"]: r["id"] for r in rows}[target] != before[target]
    # unchanged since: the next run reads nothing
    assert load(str(folder), catalog, model, progress=False).already_present == 2


def test_a_same_size_edit_is_seen_by_its_modification_time(tmp_path, catalog, model):
    rng = np.random.default_rng(43)
    folder = shapes.write_catalogue(tmp_path / "imgs", [shapes.random_spec(rng)], 43, manifest=None)
    load(str(folder), catalog, model, progress=False)
    path = next(folder.iterdir())
    data = bytearray(path.read_bytes())
    old_id = catalog.query("SELECT id FROM images")[0]["id"]
    path.write_bytes(bytes(data))  # identical bytes, new mtime: read again, same id, nothing replaced
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 3_000_000_000))
    same = load(str(folder), catalog, model, progress=False)
    assert (same.loaded, same.already_present, same.replaced) == (0, 1, 0)
    assert catalog.query("SELECT id FROM images FINAL") == [{"id": old_id}]


def test_manifest_paths_outside_the_folder_are_said_and_can_be_refused(tmp_path, catalog, model):
    rng = np.random.default_rng(44)
    outside = shapes.write_catalogue(tmp_path / "elsewhere", [shapes.random_spec(rng)], 44, manifest=None)
    inside = shapes.write_catalogue(tmp_path / "cat", [shapes.random_spec(rng)], 45, manifest=None)
    manifest = inside / "manifest.csv"
    manifest.write_text(f"path,tag\n{next(inside.glob('0*'))}," + "a\n../elsewhere/" +
                        next(outside.glob("0*")).name + ",b\n")
    with pytest.raises(SourceError, match="outside the manifest's folder"):
        load(str(manifest), catalog, _no_model, progress=False, restrict_to_folder=True)
    assert catalog.images.count() == 0
    summary = load(str(manifest), catalog, model, progress=False)
    assert (summary.loaded, summary.outside) == (2, 1)
    assert "1 manifest paths are outside the manifest's folder" in summary.line()
    assert load(str(manifest), catalog, model, progress=False).already_present == 2  # idempotent outside too


def test_heic_photos_load_and_are_found(tmp_path, catalog, model):
    import pillow_heif
    pillow_heif.register_heif_opener()   # to write the test's HEIC files (clipsearch registers it on first read)
    rng = np.random.default_rng(46)
    folder = tmp_path / "phone"
    folder.mkdir()
    specs = [shapes.random_spec(rng, c, s) for c, s in (("red", "circle"), ("blue", "star"), ("green", "cross"))]
    for i, spec in enumerate(specs):
        shapes.render(spec, rng).save(folder / f"IMG_{i}.HEIC", format="HEIF", quality=90)
    summary = load(str(folder), catalog, model, progress=False)
    assert (summary.loaded, summary.failed) == (3, 0)
    assert {r["format"] for r in catalog.query("SELECT format FROM images")} == {"HEIF"}
    from clipsearch.search.searcher import Searcher
    top = Searcher(catalog, lambda: model, log=False).search("a blue star", k=1).rows[0]
    assert top["path"].endswith("IMG_1.HEIC")


@pytest.mark.parametrize("make,message", [
    (lambda d: d / "missing", "no such file or folder"),
    (lambda d: (d / "m.csv").write_text("file,x\na.png,1\n") and d / "m.csv", "needs a 'path' column"),
    (lambda d: (d / "m.csv").write_text("path,bad name\na.png,1\n") and d / "m.csv", "not usable in SQL"),
    (lambda d: (d / "m.csv").write_text("path,width\na.png,1\n") and d / "m.csv", "clashes with a built-in"),
])
def test_source_mistakes_are_reported_before_the_model_loads(tmp_path, catalog, make, message):
    with pytest.raises(SourceError, match=message):
        load(str(make(tmp_path)), catalog, _no_model, progress=False)


def test_two_loads_racing_count_each_image_once(tmp_path, catalog, model, monkeypatch):
    """Two loads of the same files at once (through one service) both find them new and both insert: the
    summaries must add up to the rows stored (each said 'loaded 1436' for a table of 1500)."""
    rng = np.random.default_rng(5)
    folder = shapes.write_catalogue(tmp_path / "imgs", [shapes.random_spec(rng) for _ in range(5)], 5,
                                       manifest=None)
    first = load(str(folder), catalog, model, progress=False, workers=0, batch_size=2)
    assert (first.loaded, first.already_present) == (5, 0)
    # the second load checked before the first one's rows were there; merges held, so both loads' rows stay
    # apart (merged, only the later row would be left and its load could not tell it was second)
    catalog.owner_sql("SYSTEM STOP MERGES images")
    monkeypatch.setattr(catalog.files, "under", lambda root: {})
    monkeypatch.setattr(catalog.images, "existing_ids", lambda ids: set())
    second = load(str(folder), catalog, model, progress=False, workers=0, batch_size=2)
    assert (second.loaded, second.already_present) == (0, 5)
    assert catalog.query("SELECT uniqExact(id) AS n FROM images")[0]["n"] == first.loaded + second.loaded
