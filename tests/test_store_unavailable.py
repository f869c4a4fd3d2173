"""A store that goes away while it is served: the external disk holding the store is unplugged (its folder
moved away), taken read-only, filled, its permissions changed, or the ClickHouse server stops. Every data
request and /healthz answer 503 with a reason and no path, nothing is written where the folder was, and
the same requests work again once the store is back, without a restart."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from clipsearch.errors import StoreUnavailable
from clipsearch.store.connection import unavailable, unavailable_os
from tests.conftest import ROOT, free_port, loaded, random_specs, wait_until

DISK = "/media/usb/photos-db"   # where the store is, in the engine's messages below (measured on chdb)


# -- what the engine says when the disk fails: one classification -----------------------------------------
@pytest.mark.parametrize(("situation", "message", "reason"), [
    ("the disk unplugged: a part's file is gone",
     f"Code: 107. DB::Exception: Cannot open file {DISK}/store/12d/12d4eabe/all_1_1_1/data.bin: , errno: 2, "
     f"strerror: No such file or directory: (while reading from part {DISK}/store/12d/12d4eabe/all_1_1_1/ in table "
     "default.images (12d4eabe) located on disk default of type local). (FILE_DOESNT_EXIST)", "missing"),
    ("the store's permissions taken away",
     f"Code: 76. DB::Exception: Cannot open file {DISK}/store/12d/12d4eabe/all_1_1_1/data.bin: , errno: 13, "
     "strerror: Permission denied. (CANNOT_OPEN_FILE)", "permissions"),
    ("a load on a disk that went read-only",
     "Code: 1001. DB::Exception: std::__1::filesystem::filesystem_error: filesystem error: in create_directories: "
     f"Read-only file system [\"{DISK}/store/527/52714b3d/tmp_insert_all_2_2_0\"]. (STD_EXCEPTION)", "read-only"),
    ("a load on a full disk", "Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. "
     "(NOT_ENOUGH_SPACE)", "full"),
    ("a load into a folder whose permissions were taken away",
     "Code: 214. DB::ErrnoException: Could not calculate available disk space (statvfs): , errno: 13, "
     "strerror: Permission denied. (CANNOT_STATVFS)", "permissions"),
])
def test_the_engines_errors_when_its_disk_fails_are_503_with_a_reason_and_no_path(situation, message, reason):
    error = unavailable(DatabaseError(message), DISK)
    assert isinstance(error, StoreUnavailable) and error.http_status == 503, situation
    assert reason in str(error) and "/media" not in str(error) and "store/" not in str(error)


def test_a_statements_own_missing_file_is_not_the_store_going_away():
    # the owner's `clipsearch sql` reading a spreadsheet that is not there: their mistake, ClickHouse's words
    own = DatabaseError("Code: 107. DB::Exception: File /home/me/prices.csv doesn't exist. (FILE_DOESNT_EXIST)")
    assert unavailable(own, DISK) is None
    assert unavailable(DatabaseError("Code: 47. DB::Exception: Unknown identifier `nope`. (UNKNOWN_IDENTIFIER)"),
                       None) is None


def test_a_server_that_is_down_or_says_it_is_unavailable():
    down = unavailable(OperationalError("Error HTTPConnectionPool(host='db.lan', port=8123): Max retries exceeded "
                                        "(Caused by NewConnectionError: [Errno 111] Connection refused)"))
    assert down is not None and "does not answer" in str(down) and "db.lan" not in str(down)
    # a served folder's port says why itself (clickhouse-connect raises OperationalError after a 503)
    said = unavailable(OperationalError(
        "Received ClickHouse exception, code: 243, server response: Code: 243. DB::Exception: the store is "
        "unavailable: its disk is full; requests work again once it is back. (NOT_ENOUGH_SPACE) (for url http://x)"))
    assert str(said) == "the store is unavailable: its disk is full; requests work again once it is back"


def test_a_thumbnail_written_on_a_read_only_disk_is_503_not_500():
    read_only = OSError(errno.EROFS, "Read-only file system", f"{DISK}/thumbs/ab12.jpg")
    assert "read-only" in str(unavailable_os(read_only, DISK))
    assert unavailable_os(OSError(errno.EROFS, "Read-only file system", "/elsewhere/x.jpg"), DISK) is None


# -- a served store whose disk is unplugged and plugged in again ---------------------------------------
@pytest.fixture(scope="module")
def app(tmp_path_factory, model):
    from clipsearch.service.app import create_app
    from clipsearch.settings import Settings
    disk = tmp_path_factory.mktemp("usb-disk")
    with loaded(disk, random_specs(24, 33), 33, model) as catalogue:
        assert catalogue.summary.loaded == 24
    app = create_app(Settings.load(db=str(catalogue.db)), model=model, config={"TESTING": True})
    app.config["DISK"] = disk
    yield app
    app.extensions["clipsearch"].close()


@contextlib.contextmanager
def unplugged(db: Path) -> Iterator[Path]:
    """The disk holding `db` unplugged (the folder gone from its path), plugged in again after."""
    away = db.with_name("db-while-unplugged")
    os.rename(db, away)
    try:
        yield away
    finally:
        if db.exists():   # something made the folder anew at the old path: keep it to fail the test
            os.rename(db, db.with_name("db-made-while-unplugged"))
        os.rename(away, db)


def _requests(client, image_id: str) -> dict[str, object]:
    return {
        "search": client.get("/api/search?q=a+red+circle&k=3"),
        "search by post": client.post("/api/search", json={"text": "a red circle", "k": 3}),
        "image": client.get(f"/api/images/{image_id}"),
        "similar": client.get(f"/api/images/{image_id}/similar?k=3"),
        "file": client.get(f"/api/images/{image_id}/file"),
        "thumbnail": client.get(f"/api/images/{image_id}/file?size=thumb"),
        "columns": client.get("/api/columns"),
        "duplicates": client.get("/api/duplicates"),
        "queries": client.get("/api/queries"),
        "sql tab": client.post("/api/sql", json={"sql": "SELECT count(), sum(width) FROM images"}),
        "sql tab csv": client.post("/api/sql", json={"sql": "SELECT id FROM images", "format": "csv"}),
        "healthz": client.get("/healthz"),
    }


def test_unplugged_disk_every_data_request_is_503_without_paths_then_all_work_again(app, model):
    client = app.test_client()
    db = Path(app.extensions["clipsearch"].settings.db)
    before = client.get("/api/search?q=a+red+circle&k=3").get_json()["results"]
    image_id, count = before[0]["id"], client.get("/healthz").get_json()["images"]
    with unplugged(db):
        answers = _requests(client, image_id)
        for name, res in answers.items():
            text = res.get_data(as_text=True)
            assert res.status_code == 503, (name, text)
            assert "the store is unavailable" in res.get_json()["error"], name
            assert str(app.config["DISK"]) not in text and "/store/" not in text and "Traceback" not in text, name
        assert answers["healthz"].get_json()["status"] == "unavailable"
        assert client.get("/").status_code == 200   # the page itself, which then shows the API's errors
        assert not db.exists()   # nothing made anew where the store was
    for name, res in _requests(client, image_id).items():
        assert res.status_code == 200, (name, res.get_data(as_text=True)[:300])
    assert client.get("/api/search?q=a+red+circle&k=3").get_json()["results"] == before
    assert client.get("/healthz").get_json()["images"] == count


def test_a_load_while_unplugged_writes_nothing_where_the_store_was(app, tmp_path):
    from clipsearch.service import shapes
    photos = app.extensions["clipsearch"]
    db = Path(photos.settings.db)
    new = shapes.write_catalogue(tmp_path / "new", random_specs(2, 34), 34, manifest=None)
    before = photos.count()
    with unplugged(db), pytest.raises(StoreUnavailable, match="not where it was opened"):
        photos.load(new, workers=0, progress=False)
    assert not db.with_name("db-made-while-unplugged").exists()
    assert photos.load(new, workers=0, progress=False).loaded == 2   # plugged in again: the same load works
    assert photos.count() == before + 2


def test_another_copy_where_the_store_was_needs_a_restart(app):
    client = app.test_client()
    db = Path(app.extensions["clipsearch"].settings.db)
    with unplugged(db) as away:
        shutil.copytree(away, db, symlinks=True)   # a backup copied back, not the folder the service opened
        res = client.get("/healthz")
        assert res.status_code == 503 and "restart" in res.get_json()["error"]
        assert client.get("/api/search?q=a+star").status_code == 503
        shutil.rmtree(db)
    assert client.get("/healthz").status_code == 200


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not stop root")
def test_permissions_taken_away_then_given_back(app):
    client = app.test_client()
    store = Path(app.extensions["clipsearch"].settings.db) / "store"
    store.chmod(0)
    try:
        res = client.get("/api/search?q=a+star")
        assert res.status_code == 503 and "permissions" in res.get_json()["error"]
        assert client.get("/healthz").status_code == 503
    finally:
        store.chmod(0o755)
    assert client.get("/api/search?q=a+star").status_code == 200


# -- the service and its ClickHouse port, as processes ------------------------------------------------
def _get(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers or {}), timeout=60) as res:
            return res.status, res.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.mark.slow
def test_served_store_unplugged_and_plugged_in_again(tmp_path):
    from clipsearch.service import shapes
    disk = tmp_path / "usb-disk"
    db = disk / "clipsearch-data"
    photos = shapes.write_catalogue(tmp_path / "photos", random_specs(12, 35), 35, manifest=None)
    env = {**os.environ, "CLIPSEARCH_ANALYST_PASSWORD": "analyst-pw"}
    env.pop("CLICKHOUSE_URL", None)
    # loaded by its own process: this module's app holds this process's one engine on another folder
    subprocess.run([sys.executable, "-m", "clipsearch.service.cli", "load", str(photos), "--db", str(db), "--quiet"],
                   env=env, check=True, capture_output=True)
    port, sql_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "clipsearch.service.cli", "serve", "--db", str(db), "--port",
                             str(port), "--sql-port", str(sql_port)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base, analyst = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sql_port}/"
    auth = {"X-ClickHouse-User": "analyst", "X-ClickHouse-Key": "analyst-pw"}
    try:
        wait_until(lambda: _port_open(port) and _get(base + "/healthz")[0] == 200)
        with unplugged(db):
            for url in ("/healthz", "/api/search?q=a+red+circle", "/api/columns"):
                status, body = _get(base + url)
                assert status == 503 and str(disk) not in body and "unavailable" in body, (url, body)
            status, body = _get(analyst, b"SELECT sum(width) FROM images", auth)
            assert status == 503 and str(disk) not in body and body.startswith("Code: "), body
            assert not db.exists()
        assert _get(base + "/healthz")[0] == 200
        assert _get(base + "/api/search?q=a+red+circle")[0] == 200
        status, body = _get(analyst, b"SELECT count() FROM images", auth)
        assert (status, body.strip()) == (200, "12")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def _port_open(port: int) -> bool:
    import socket
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_a_clickhouse_server_that_stops_and_comes_back(tmp_path, model):
    import clipsearch
    from clipsearch.service import shapes
    from clipsearch.service.app import create_app
    from clipsearch.settings import Settings
    port = free_port()
    url = f"http://default:@127.0.0.1:{port}/default"

    def start() -> subprocess.Popen:
        server = subprocess.Popen([sys.executable, "-m", "tests.clickhouse_http", "--db", str(tmp_path / "server"),
                                   "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _port_open(port))
        return server
    server = start()
    try:
        with clipsearch.open(url=url, model=model, log_searches=False) as photos:
            photos.load(shapes.write_catalogue(tmp_path / "photos", random_specs(6, 36), 36, manifest=None))
        app = create_app(Settings.load(clickhouse_url=url), model=model, config={"TESTING": True})
        client = app.test_client()
        assert client.get("/healthz").status_code == 200
        server.terminate()
        server.wait(timeout=30)
        for path in ("/healthz", "/api/search?q=a+red+circle", "/api/images/" + "0" * 32):
            res = client.get(path)
            assert res.status_code == 503 and "does not answer" in res.get_json()["error"], path
            assert str(port) not in res.get_data(as_text=True)
        server = start()
        assert client.get("/healthz").get_json()["images"] == 6
        assert client.get("/api/search?q=a+red+circle").status_code == 200
        app.extensions["clipsearch"].close()
    finally:
        server.terminate()
        server.wait(timeout=30)
