"""What a load reads from a real library's folders: never a store's own files (the photo folder that holds
./clipsearch-data and its thumbnails, a copy of an old store), and links either refused with a clear reason
(a folder walk) or resolved to the file served and re-embedded later (a manifest)."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
from pathlib import Path

import pytest

import clipsearch
from clipsearch.errors import SourceError
from clipsearch.images.files import read_loaded_file
from clipsearch.loader.sources import LINKED_FILE, read_source
from clipsearch.models.clip import ClipModel
from clipsearch.models.factory import FAMILIES, register_family
from clipsearch.service.app import create_app
from clipsearch.service.cli import main as cli_main
from clipsearch.settings import Settings
from clipsearch.store.connection import ENGINE_CONFIG, LOCK_FILE, STORE_MARKER, mark_store_folder
from tests.conftest import environment, random_specs, working_directory, write_catalogue


def _load_here(folder: Path, model) -> str:
    """`clipsearch load .` run in `folder` (so the store is its ./clipsearch-data); the summary it prints."""
    out = io.StringIO()
    with working_directory(folder), environment({"CLICKHOUSE_URL": None, "CLIPSEARCH_DB": None}), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert cli_main(["load", ".", "--quiet"], model=model) == 0
    return out.getvalue()


def _view_thumbnails(settings: Settings, model) -> None:
    """Open the page's grid: every image's thumbnail is made and cached."""
    app = create_app(settings, model=model, config={"TESTING": True})
    try:
        client = app.test_client()
        for row in app.extensions["clipsearch"].sql("SELECT id FROM images"):
            assert client.get(f"/api/images/{row['id']}/file", query_string={"size": "thumb"}).status_code == 200
    finally:
        app.extensions["clipsearch"].close()


@pytest.mark.parametrize("thumbs", [None, "thumbnail-cache"], ids=["store's thumbs", "thumbs in the photos"])
def test_loading_the_photo_folder_that_holds_the_store_skips_the_store(tmp_path, model, thumbs):
    photos = write_catalogue(tmp_path / "Pictures", random_specs(3, 61), 61, manifest=None)
    assert "loaded 3," in _load_here(photos, model)
    store = photos / "clipsearch-data"
    cache = photos / thumbs if thumbs else store / "thumbs"
    _view_thumbnails(Settings(db=str(store), thumbs=str(cache) if thumbs else None), model)
    assert len(list(cache.glob("*.jpg"))) == 3 and (cache / STORE_MARKER).is_file() and (store / STORE_MARKER).is_file()

    again = _load_here(photos, model)   # the next day, from the same folder
    assert "loaded 0, already present 3, failed 0" in again, again
    skipped = "1 store folder" if not thumbs else "2 store folders"
    assert f"skipped {skipped} ({store}" in again and "not photos" in again, again
    with clipsearch.open(store, model=model, log_searches=False) as photos_db:
        paths = [r["path"] for r in photos_db.sql("SELECT path FROM images ORDER BY path")]
    assert paths == [str(photos / f"{i:05d}.{ext}") for i, ext in enumerate(_suffixes(photos))]


def _suffixes(folder: Path) -> list[str]:
    return [p.suffix[1:] for p in sorted(folder.glob("0000*"))]


def test_a_copy_of_a_store_from_before_markers_is_skipped(tmp_path, model):
    """A backup of an older store (no marker: only the engine's own folders, and thumbnails) in the photos."""
    photos = write_catalogue(tmp_path / "Pictures", random_specs(2, 62), 62, manifest=None)
    old = tmp_path / "Pictures" / "backup-2024"
    with clipsearch.open(old, model=model, log_searches=False) as photos_db:
        photos_db.load(photos, workers=0)
    (old / "thumbs").mkdir()
    shutil.copy(next(photos.glob("*.png")), old / "thumbs" / "0123456789abcdef0123456789abcdef.jpg")
    for name in (STORE_MARKER, LOCK_FILE, ENGINE_CONFIG):
        (old / name).unlink()
    source = read_source(photos)
    assert source.store_folders == [str(old)]
    assert sorted(Path(i.path).name for i in source.items) == sorted(p.name for p in photos.glob("0000*"))


def test_a_folder_inside_a_store_is_refused(tmp_path):
    cache = tmp_path / "clipsearch-thumbs"
    cache.mkdir()
    (cache / "0123456789abcdef0123456789abcdef.jpg").write_bytes(b"\xff\xd8")
    mark_store_folder(cache)
    for folder in (cache, cache / "sub"):
        folder.mkdir(exist_ok=True)
        with pytest.raises(SourceError, match="thumbnail cache.*not photos"):
            read_source(folder)


def test_a_manifest_row_naming_a_thumbnail_is_refused(tmp_path):
    photos = tmp_path / "shop"
    (photos / "clipsearch-data" / "thumbs").mkdir(parents=True)
    mark_store_folder(photos / "clipsearch-data")
    (photos / "poster.jpg").write_bytes(b"\xff\xd8")
    (photos / "clipsearch-data" / "thumbs" / "0123.jpg").write_bytes(b"\xff\xd8")
    manifest = photos / "products.csv"
    manifest.write_text("path,price\nposter.jpg,12\nclipsearch-data/thumbs/0123.jpg,5\n")
    source = read_source(manifest)
    assert [i.path for i in source.items] == [str(photos / "poster.jpg")]
    [(where, reason)] = source.rejected
    assert where == f"{manifest}:3" and f"inside {photos / 'clipsearch-data'}" in reason and "not photos" in reason


# -- links ------------------------------------------------------------------------------------
@pytest.fixture
def linked_library(tmp_path) -> tuple[Path, Path, Path]:
    """Pictures/ with two photos, a `favourite` link to a photo in archive/ and a `2019` link to the archive
    folder (as `ln -s` makes them); returns (Pictures, archive, the link)."""
    archive = write_catalogue(tmp_path / "archive", random_specs(2, 63), 63, manifest=None)
    photos = write_catalogue(tmp_path / "Pictures", random_specs(2, 64), 64, manifest=None)
    best = sorted(archive.iterdir())[1]
    os.symlink(best, photos / f"favourite{best.suffix}")
    os.symlink(archive, photos / "2019")
    return photos, archive, photos / f"favourite{best.suffix}"


def test_a_folder_walk_refuses_linked_files_and_reports_linked_folders(linked_library, tmp_path, model):
    photos, archive, favourite = linked_library
    with clipsearch.open(tmp_path / "db", model=model, log_searches=False) as photos_db:
        summary = photos_db.load(photos, workers=0)
        assert (summary.loaded, summary.failed) == (2, 1)
        assert summary.errors == [(str(favourite), LINKED_FILE)]
        assert f"did not follow 1 linked folder ({photos / '2019'})" in summary.line(), summary.line()
        # what the reason says to do: the folder it points into loads, and every file is served
        assert photos_db.load(archive, workers=0).loaded == 2
        for row in photos_db.sql("SELECT id, path, file_size FROM images"):
            assert read_loaded_file(row["path"], row["id"], int(row["file_size"])) == Path(row["path"]).read_bytes()


def test_a_manifest_listing_links_loads_the_files_they_point_to_shown_and_re_embedded(linked_library, tmp_path,
                                                                                      model):
    photos, archive, favourite = linked_library
    first = sorted(archive.iterdir())[0]
    manifest = photos / "album.csv"
    manifest.write_text(f"path,album\n{favourite.name},best\n2019/{first.name},summer\n")
    register_family("again", lambda name, pretrained: ClipModel())
    try:
        with clipsearch.open(tmp_path / "db", model=model, log_searches=False) as photos_db:
            refused = photos_db.load(manifest, workers=0)   # links out of the manifest's folder: asked for below
            assert (refused.loaded, refused.failed) == (0, 2)
            assert photos_db.load(manifest, workers=0, follow_links=True).loaded == 2
            rows = photos_db.sql("SELECT id, path, album FROM images ORDER BY album")
            assert [(r["path"], r["album"]) for r in rows] == [(os.path.realpath(favourite), "best"),
                                                               (str(first), "summer")]
            for row in rows:   # shown: what the page's file endpoint reads
                assert photos_db.read_file(row["id"])[1] == Path(row["path"]).read_bytes()
            summary = photos_db.reembed("again:v1", workers=0)
            assert (summary.embedded, summary.missing, summary.switched) == (2, 0, True)
    finally:
        FAMILIES.pop("again", None)
