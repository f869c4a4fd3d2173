"""Serving safely: files only while they are the files that were loaded, security headers, rate limits."""
from __future__ import annotations

import os

import numpy as np
import pytest

from clipsearch.errors import ClipsearchError
from clipsearch.service import shapes
from clipsearch.service.app import create_app
from clipsearch.settings import Settings


def test_only_the_loaded_bytes_are_served(tmp_path, model):
    """A file swapped for a link, edited in place or deleted after loading is never served."""
    rng = np.random.default_rng(21)
    folder = shapes.write_catalogue(tmp_path / "images", [shapes.random_spec(rng) for _ in range(4)], 21,
                                       manifest=None)
    app = create_app(Settings(db=str(tmp_path / "db")), model=model, config={"TESTING": True})
    client = app.test_client()
    try:
        app.extensions["clipsearch"].load(folder)
        rows = app.extensions["clipsearch"].sql("SELECT id, path FROM images ORDER BY path")
        linked, edited, deleted, intact = rows
        secret = tmp_path / "secret.txt"
        secret.write_text("not for the web")
        (tmp_path / "images" / "elsewhere").mkdir()
        original = open(linked["path"], "rb").read()
        moved = tmp_path / "images" / "elsewhere" / "copy"
        moved.write_bytes(original)
        os.remove(linked["path"])
        os.symlink(secret, linked["path"])
        data = bytearray(open(edited["path"], "rb").read())
        data[-1] ^= 0xFF
        open(edited["path"], "wb").write(bytes(data))
        os.remove(deleted["path"])
        for row, status in ((linked, 410), (edited, 410), (deleted, 404), (intact, 200)):
            for size in ("", "thumb"):
                res = client.get(f"/api/images/{row['id']}/file", query_string={"size": size} if size else {})
                assert res.status_code == status, (row["path"], size, res.get_json())
                assert b"not for the web" not in res.data
        assert client.get(f"/api/images/{intact['id']}/file").data == open(intact["path"], "rb").read()
        # a link to the very bytes that were loaded is still refused: the link itself was not loaded
        os.remove(linked["path"])
        os.symlink(moved, linked["path"])
        assert client.get(f"/api/images/{linked['id']}/file").status_code == 410
    finally:
        app.extensions["clipsearch"].close()


def test_rate_limit_when_configured_and_security_headers(tmp_path):
    app = create_app(Settings(db=str(tmp_path / "db"), rate_limit="3/minute"), config={"TESTING": True})
    try:
        client = app.test_client()
        assert [client.get("/api/columns").status_code for _ in range(4)] == [200, 200, 200, 429]
        res = client.get("/api/columns")
        assert res.get_json() == {"error": "too many requests: the limit is 3 per 1 minute; try again later"}
        assert client.get("/healthz").status_code == 200  # only the API is limited
        page = client.get("/")
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'self' covers scripts
        assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    finally:
        app.extensions["clipsearch"].close()
    with pytest.raises(ClipsearchError, match="is not a rate limit like '60/minute'"):
        create_app(Settings(db=str(tmp_path / "db"), rate_limit="lots"))
