"""Path identity and content identity kept apart, as real photo libraries need: a spreadsheet of prices added
after the folder, a photo retouched in place, the same photo in two albums, a network share that drops out,
a photo taken out and put back, a bad file in a folder watched for days (loader/paths.py, store/files.py)."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import clipsearch
from clipsearch.service import shapes
from clipsearch.service.watch import sync_folder


@pytest.fixture
def library(tmp_path, model):
    """A photo folder of four pictures (no manifest) and a collection over a fresh store."""
    rng = np.random.default_rng(331)
    folder = shapes.write_catalogue(tmp_path / "photos", [shapes.random_spec(rng) for _ in range(4)], 331,
                                    manifest=None)
    with clipsearch.open(tmp_path / "db", model=model) as photos:
        yield folder, photos


def _files(folder) -> list[str]:
    return sorted(str(p) for p in folder.iterdir() if p.suffix in (".png", ".jpg"))


def _sheet(folder, rows: dict[str, tuple[int, str]]) -> str:
    """A price list as a spreadsheet exports it: file name, price, category."""
    path = folder / "prices.csv"
    path.write_text("path,price,category\n" + "".join(f"{os.path.basename(p)},{price},{cat}\n"
                                                    for p, (price, cat) in rows.items()))
    return str(path)


def _column(photos, column: str) -> dict[str, object]:
    return {r["path"]: r[column] for r in photos.sql(f"SELECT path, {column} FROM images FINAL")}


def _edit(path: str, rng) -> None:
    """New pixels at the same path with a later time, as a photo editor saves a retouched picture."""
    with open(path, "wb") as f:
        f.write(shapes.encode(shapes.render(shapes.random_spec(rng, "green", "star"), rng), "PNG", rng))
    info = os.stat(path)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 5_000_000_000))


def test_a_spreadsheet_added_after_the_folder_attaches_its_columns(library):
    folder, photos = library
    assert photos.load(folder).loaded == 4
    files = _files(folder)
    sheet = _sheet(folder, {files[0]: (120, "shoes"), files[1]: (80, "bags"), files[2]: (95, "shoes")})
    summary = photos.load(sheet)
    assert (summary.loaded, summary.already_present, summary.attached) == (0, 3, 3)
    assert "attached the manifest's columns to 3 files already stored" in summary.line()
    assert _column(photos, "price") == {files[0]: 120, files[1]: 80, files[2]: 95, files[3]: None}
    found = photos.search("a photo", filters=["category=shoes"], k=10)
    assert sorted(r["path"] for r in found.rows) == [files[0], files[2]]
    # the spreadsheet corrected and loaded again, with category a filter column (a sorted copy of the
    # table): the new values replace the old, the others stay, and the filter finds the new ones
    photos.catalog.indexes.add_filter_column("category")
    sheet = _sheet(folder, {files[0]: (110, "shoes"), files[1]: (80, "shoes"), files[2]: (95, "shoes")})
    assert photos.load(sheet).attached == 2
    assert _column(photos, "price") == {files[0]: 110, files[1]: 80, files[2]: 95, files[3]: None}
    found = photos.search("a photo", filters=["category=shoes"], k=10)
    assert sorted(r["path"] for r in found.rows) == files[:3]
    assert photos.load(sheet).attached == 0   # nothing new: no work


def test_a_photo_retouched_in_place_keeps_its_caption(library):
    folder, photos = library
    files = _files(folder)
    photos.load(_sheet(folder, {f: (10 * i, "sale") for i, f in enumerate(files)}))
    old_id = _column(photos, "id")[files[1]]
    _edit(files[1], np.random.default_rng(5))
    again = photos.load(folder)      # the folder, not the spreadsheet: the caption is the path's
    assert (again.loaded, again.replaced) == (1, 1)
    assert _column(photos, "price")[files[1]] == 10 and _column(photos, "category")[files[1]] == "sale"
    assert _column(photos, "id")[files[1]] != old_id
    assert photos.sql("SELECT count() AS n FROM images FINAL WHERE id = {i:String}", {"i": old_id}) == [{"n": 0}]


def test_the_same_photo_in_two_albums_stays_when_one_album_is_deleted(library):
    folder, photos = library
    files = _files(folder)
    album = folder / "holiday"
    album.mkdir()
    copy = album / os.path.basename(files[0])
    shutil.copyfile(files[0], copy)
    summary = photos.load(folder)
    assert (summary.loaded, summary.already_present) == (4, 1)
    image_id = _column(photos, "id")[files[0]]
    os.remove(files[0])
    forgotten = photos.forget_missing(str(folder) + os.sep)
    assert (forgotten.paths, forgotten.moved, forgotten.removed) == ([files[0]], 1, 0)
    row = photos.get(image_id)
    assert row["path"] == str(copy)
    _, data = photos.read_file(image_id)     # served from the album that still holds it
    assert data == copy.read_bytes()
    os.remove(copy)
    assert photos.forget_missing(str(folder) + os.sep).removed == 1
    assert photos.sql("SELECT count() AS n FROM images FINAL WHERE id = {i:String}", {"i": image_id}) == [{"n": 0}]


def test_a_network_share_that_drops_out_loses_nothing(library, tmp_path):
    folder, photos = library
    files = _files(folder)
    photos.load(_sheet(folder, {f: (i + 1, "stock") for i, f in enumerate(files)}))
    before = photos.sql("SELECT id, path, price, category FROM images FINAL ORDER BY id")
    away = tmp_path / "away"
    folder.rename(away)                 # the share is gone for a few seconds
    assert sync_folder(photos, folder).offline
    folder.mkdir()                      # ... or its mount point is there, empty
    assert sync_folder(photos, folder).offline
    assert photos.sql("SELECT id, path, price, category FROM images FINAL ORDER BY id") == before
    folder.rmdir()
    away.rename(folder)                 # it is back
    back = sync_folder(photos, folder)
    assert (back.offline, back.loaded, back.removed) == (False, 0, 0)
    assert photos.sql("SELECT id, path, price, category FROM images FINAL ORDER BY id") == before
    assert sorted(r["path"] for r in photos.search("a photo", filters=["category=stock"], k=10).rows) == files


def test_a_photo_taken_out_and_put_back_gets_its_metadata_again(library, tmp_path):
    folder, photos = library
    files = _files(folder)
    photos.load(_sheet(folder, {files[2]: (42, "framed")}))
    photos.load(folder)
    kept = tmp_path / "kept.png"
    shutil.move(files[2], kept)
    assert sync_folder(photos, folder).removed == 1
    assert files[2] not in _column(photos, "price")
    shutil.move(kept, files[2])
    assert sync_folder(photos, folder).loaded == 1
    assert _column(photos, "price")[files[2]] == 42 and _column(photos, "category")[files[2]] == "framed"


def test_a_bad_file_in_a_watched_folder_is_recorded_once_per_version(library):
    folder, photos = library
    bad = folder / "scan.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    for _ in range(3):
        sync_folder(photos, folder)
    errors = photos.sql("SELECT path, reason, file_size FROM load_errors")
    assert len(errors) == 1 and errors[0]["path"] == str(bad) and errors[0]["file_size"] == bad.stat().st_size
    # a watch pass does not read it again while it is unchanged; a plain load does (and records nothing new)
    assert photos.load(folder, retry_failed=False).failed_before == 1
    again = photos.load(folder)
    assert (again.failed, again.failed_before) == (1, 0)
    assert photos.sql("SELECT count() AS n FROM load_errors") == [{"n": 1}]
    bad.write_bytes(b"\xff\xd8 still not a jpeg, but another one")   # a new version: recorded
    sync_folder(photos, folder)
    assert photos.sql("SELECT count() AS n FROM load_errors") == [{"n": 2}]
