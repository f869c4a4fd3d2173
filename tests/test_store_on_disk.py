"""The store on disk and what the CLI trusts there, each test written as the attack it stops: another local
user reading the search texts of a store (made now, or by an earlier release), a serve file planted to send
the CLI's login to another listener, and a link in a photo folder or manifest that points at a private
photo, whose pixels and EXIF (camera, GPS) would then be served by the page."""
from __future__ import annotations

import fcntl
import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import clipsearch
from clipsearch.errors import SourceError
from clipsearch.loader.sources import LINK_OUT, LINKED_FILE
from clipsearch.service import shapes
from clipsearch.service.app import create_app
from clipsearch.settings import Settings
from clipsearch.store.connection import LOCK_FILE, SERVE_FILE
from tests.conftest import random_specs, write_catalogue

SEARCH_TEXT = "my sister's wedding dress"


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask a user's shell gives (022: files 0644, folders 0755), as a fresh process starts with."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def _open_to_others(folder: Path) -> list[str]:
    """Every folder and file under `folder` (itself included) that group or others may use."""
    found = []
    for here, dirs, files in os.walk(folder):
        for path in [Path(here)] + [Path(here, name) for name in dirs + files]:
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & 0o077:
                found.append(f"{path.relative_to(folder)} {oct(stat.S_IMODE(mode))}")
    return found


def _search_once(db: Path, model) -> None:
    """A user's search, written to the search log."""
    write_catalogue(db.parent / "photos", random_specs(2, 71), 71, manifest=None)
    with clipsearch.open(db, model=model) as photos_db:
        photos_db.load(db.parent / "photos", workers=0)
        photos_db.search(SEARCH_TEXT, k=1)   # logged when the collection closes
    with clipsearch.open(db, model=model, log_searches=False) as photos_db:
        assert photos_db.sql("SELECT text FROM search_log")[0]["text"] == SEARCH_TEXT


# -- another local user reading the store ----------------------------------------------------------------
def test_a_new_store_and_its_search_log_are_private_to_their_owner(tmp_path, model, usual_umask):
    db = tmp_path / "clipsearch-data"
    _search_once(db, model)
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o700
    assert _open_to_others(db) == []


def test_a_store_made_0755_by_an_earlier_release_is_made_private_when_opened(tmp_path, model, usual_umask):
    db = tmp_path / "clipsearch-data"
    _search_once(db, model)
    notes = db / "my-notes.txt"   # not the store's: a user's own file in the folder they chose, left as it is
    notes.write_text("mine")
    for here, _dirs, files in os.walk(db):   # what an earlier release left: readable by every local user
        os.chmod(here, 0o755)
        for name in files:
            os.chmod(Path(here, name), 0o644)
    assert len(_open_to_others(db)) > 10

    with clipsearch.open(db, model=model) as photos_db:   # the upgrade: opened by this release
        assert photos_db.sql("SELECT text FROM search_log")[0]["text"] == SEARCH_TEXT
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o700
    assert _open_to_others(db) == ["my-notes.txt 0o644"]   # behind the folder's 0700 all the same


def test_a_thumbnail_cache_made_by_an_earlier_release_is_made_private(tmp_path, model, usual_umask):
    db = tmp_path / "clipsearch-data"
    _search_once(db, model)
    cache = tmp_path / "thumbnail-cache"   # CLIPSEARCH_THUMBS outside the store
    cache.mkdir(mode=0o755)
    app = create_app(Settings(db=str(db), thumbs=str(cache)), model=model, config={"TESTING": True})
    try:
        client = app.test_client()
        for row in app.extensions["clipsearch"].sql("SELECT id FROM images"):
            assert client.get(f"/api/images/{row['id']}/file", query_string={"size": "thumb"}).status_code == 200
    finally:
        app.extensions["clipsearch"].close()
    assert len(list(cache.glob("*.jpg"))) == 2
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700


# -- a planted serve file ----------------------------------------------------------------------------------
@pytest.fixture
def planted(tmp_path, listener) -> Iterator[tuple[Path, list[str]]]:
    """A store folder whose serve file names the `listener` (another's, waiting for the login), with its lock
    held as a running service holds it; yields (the folder, the requests the listener got)."""
    url, got = listener
    db = tmp_path / "shared-db"
    db.mkdir(mode=0o700)
    os.chmod(db, 0o700)
    (db / SERVE_FILE).write_text(f'{{"pid": 1, "url": "{url.replace("//", "//default:secret@")}", "model": null}}')
    os.chmod(db / SERVE_FILE, 0o600)
    with open(db / LOCK_FILE, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield db, got


def test_a_private_serve_file_of_this_user_is_used(planted, cli):
    db, got = planted   # the control: the attacks below differ from this in one permission each
    cli("sql", "SELECT 1", db=db)
    assert got, "a trusted serve file sends the command to its service"


@pytest.mark.parametrize("loosen", ["file writable by others", "folder writable by its group", "a link"])
def test_a_planted_serve_file_is_refused_with_a_clear_error(planted, cli, tmp_path, loosen):
    db, got = planted
    if loosen == "file writable by others":
        os.chmod(db / SERVE_FILE, 0o666)
    elif loosen == "folder writable by its group":
        os.chmod(db, 0o770)
    else:   # the serve file a link to one kept elsewhere
        elsewhere = tmp_path / "elsewhere.serve"
        os.replace(db / SERVE_FILE, elsewhere)
        os.symlink(elsewhere, db / SERVE_FILE)
    result = cli("sql", "SELECT 1", db=db)
    assert result.returncode != 0 and f"{db / SERVE_FILE} is not used" in result.stderr, result
    assert not got, "the command's login went to the planted listener"


# -- a link to a private photo -----------------------------------------------------------------------------
@pytest.fixture
def private_photo(tmp_path) -> Path:
    """~/private/passport.jpg: a phone photo with its camera and where it was taken, in a folder of its own."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    picture = Image.open(io.BytesIO(shapes.make_image(np.random.default_rng(5), "red", "square")[1]))
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Phone Maker", "Secret Phone"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (48.0, 51.0, 23.76), "E", (2.0, 21.0, 7.92)
    path = private / "passport.jpg"
    picture.convert("RGB").save(path, "JPEG", exif=exif)
    return path


@pytest.fixture
def shared_photos(tmp_path, private_photo) -> Path:
    """A photo folder others can put files in, with `holiday.jpg` planted as a link to the private photo and
    `trip` as a link to the private folder."""
    photos = write_catalogue(tmp_path / "shared", random_specs(2, 72), 72, manifest=None)
    os.symlink(private_photo, photos / "holiday.jpg")
    os.symlink(private_photo.parent, photos / "trip")
    return photos


def _served(db: Path, model) -> list[dict]:
    with clipsearch.open(db, model=model, log_searches=False) as photos_db:
        return photos_db.sql("SELECT path, camera, latitude FROM images ORDER BY path")


def test_a_folder_load_does_not_follow_a_planted_link(shared_photos, private_photo, tmp_path, model):
    with clipsearch.open(tmp_path / "db", model=model, log_searches=False) as photos_db:
        summary = photos_db.load(shared_photos, workers=0)
    assert summary.errors == [(str(shared_photos / "holiday.jpg"), LINKED_FILE)]
    rows = _served(tmp_path / "db", model)
    assert len(rows) == 2 and not any(r["camera"] or r["latitude"] for r in rows)


def test_a_manifest_row_linking_out_of_its_folder_is_refused(shared_photos, private_photo, tmp_path, model):
    manifest = shared_photos / "album.csv"
    first = next(iter(sorted(shared_photos.glob("00000.*"))))
    manifest.write_text(f"path,album\nholiday.jpg,summer\ntrip/passport.jpg,summer\n{first.name},home\n")
    with clipsearch.open(tmp_path / "db", model=model, log_searches=False) as photos_db:
        summary = photos_db.load(manifest, workers=0)
    assert summary.loaded == 1
    assert sorted(summary.errors) == [(f"{manifest}:2", f"bad manifest row: {LINK_OUT}"),
                                      (f"{manifest}:3", f"bad manifest row: {LINK_OUT}")]
    assert [r["path"] for r in _served(tmp_path / "db", model)] == [str(first)]

    with clipsearch.open(tmp_path / "db2", model=model, log_searches=False) as photos_db, \
            pytest.raises(SourceError, match="link out of the manifest's folder"):   # for manifests from others
        photos_db.load(manifest, restrict_to_folder=True, follow_links=True, workers=0)


def test_a_link_within_the_manifest_folder_still_loads(shared_photos, tmp_path, model):
    first = next(iter(sorted(shared_photos.glob("00000.*"))))
    os.symlink(first.name, shared_photos / f"cover{first.suffix}")   # an album's cover, pointing at its photo
    manifest = shared_photos / "album.csv"
    manifest.write_text(f"path,album\ncover{first.suffix},cover\n")
    with clipsearch.open(tmp_path / "db", model=model, log_searches=False) as photos_db:
        assert photos_db.load(manifest, workers=0).loaded == 1
    assert [r["path"] for r in _served(tmp_path / "db", model)] == [str(first)]


def test_follow_links_loads_the_private_photo_under_its_own_path(shared_photos, private_photo, tmp_path, model,
                                                                 cli):
    manifest = shared_photos / "album.csv"
    manifest.write_text("path,album\nholiday.jpg,summer\n")
    result = cli("load", manifest, "--follow-links", "--quiet", db=tmp_path / "db")   # the user asked
    assert result.returncode == 0, result
    assert f"followed 1 link ({shared_photos / 'holiday.jpg'}): stored under the paths of the files" in result.stdout
    [row] = _served(tmp_path / "db", model)   # stored as what it is: the private file, with its EXIF
    assert row["path"] == os.path.realpath(private_photo) and row["camera"] and row["latitude"]
    folder = cli("load", shared_photos, "--follow-links", "--quiet", db=tmp_path / "db")
    assert folder.returncode == 0 and "followed 1 link" in folder.stdout, folder
    assert len(_served(tmp_path / "db", model)) == 3
