"""The server backend (clickhouse-connect): same SQL, same rows as the embedded store.

Runs only against a real ClickHouse server named by CLICKHOUSE_URL.
"""
from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

from loader.load import load
from service import shapes
from service.search import Searcher
from service.store import EmbeddedStore, ServerStore

from .conftest import write_catalogue

URL = os.environ.get("CLICKHOUSE_URL")
pytestmark = pytest.mark.skipif(not URL, reason="set CLICKHOUSE_URL=http://user:pass@host:8123 to test a real "
                                                "ClickHouse server")


def test_server_and_embedded_give_the_same_ranking(tmp_path, model):
    import clickhouse_connect
    database = f"clipsearch_test_{uuid.uuid4().hex[:8]}"
    admin = clickhouse_connect.get_client(dsn=URL)
    admin.command(f"CREATE DATABASE {database}")
    try:
        rng = np.random.default_rng(3)
        manifest = write_catalogue(tmp_path / "imgs", [shapes.random_spec(rng) for _ in range(40)], 3,
                                   extra=lambda i: {"price": i})
        base = URL.rstrip("/").rsplit("/", 1)[0] if URL.count("/") > 2 else URL
        server = ServerStore(f"{base}/{database}")
        assert load(str(manifest), server, model, progress=False).loaded == 40
        embedded = EmbeddedStore(tmp_path / "db")
        load(str(manifest), embedded, model, progress=False)
        ranked = [[r["id"] for r in Searcher(s, lambda: model).search("a blue circle", k=10).rows]
                  for s in (server, embedded)]
        embedded.close()
        assert ranked[0] == ranked[1]
    finally:
        admin.command(f"DROP DATABASE IF EXISTS {database}")
