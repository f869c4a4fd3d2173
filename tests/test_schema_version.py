"""The schema version (clipsearch/schema.py): a new database records the latest; one made before versions
were recorded is migrated with its rows kept; a current one opens without DDL; a newer one is refused."""
from __future__ import annotations

import pytest

from clipsearch.errors import StoreError
from clipsearch.store import schema
from clipsearch.store.catalog import Catalog
from clipsearch.store.connection import EmbeddedConnection

# What the releases before schema versions made (2026-11): images and search_log without the columns added
# since, and none of the later tables.
FIRST_RELEASE = [
    """CREATE TABLE images (id String, path String, width UInt32, height UInt32, format LowCardinality(String),
       file_size UInt64, taken_at Nullable(DateTime), camera String DEFAULT '', model LowCardinality(String),
       loaded_at DateTime64(3) DEFAULT now64(3), embedding Array(Float32) CODEC(NONE))
       ENGINE = ReplacingMergeTree(loaded_at) ORDER BY id""",
    """CREATE TABLE search_log (time DateTime64(3) DEFAULT now64(3), kind LowCardinality(String), text String,
       filters String, k UInt32, results UInt32, encode_ms Float32, query_ms Float32, total_ms Float32,
       top_ids Array(String)) ENGINE = MergeTree ORDER BY time""",
    "INSERT INTO images (id, path, width, height, format, file_size, model, embedding) "
    "VALUES ('a1', '/p/a.png', 10, 20, 'PNG', 123, 'clipsearch-shapes', [1, 0])",
]


def test_a_new_database_records_the_latest_version_and_reopens_without_ddl(tmp_path, monkeypatch):
    Catalog.open(tmp_path / "db").close()
    ran: list[str] = []
    original = EmbeddedConnection.command
    monkeypatch.setattr(EmbeddedConnection, "command", lambda self, sql, params=None: (ran.append(sql),
                                                                                      original(self, sql, params)))
    with Catalog.open(tmp_path / "db") as catalog:
        assert schema.version(catalog.connection) == schema.latest() >= 1
        assert catalog.query("SELECT count() AS n FROM schema_version") == [{"n": 1}]
    assert ran == []   # nothing but one query


def test_a_database_made_before_versions_is_migrated_with_its_rows(tmp_path):
    connection = EmbeddedConnection(tmp_path / "db")
    for statement in FIRST_RELEASE:
        connection.command(statement)
    assert schema.version(connection) == 0
    connection.close()
    with Catalog.open(tmp_path / "db") as catalog:
        images, log = catalog.images.columns("images"), catalog.images.columns("search_log")
        assert {"modified_at", "phash", "colour_hash", "centre_phash", "chroma_hash", "centre_chroma_hash",
                "latitude", "longitude"} <= set(images)
        assert {"origin", "model_load_ms", "search_id"} <= set(log)
        assert catalog.images.columns("labels") and catalog.images.columns("vector_index_tuning")
        assert catalog.images.columns("search_clicks") and catalog.images.columns("judgments")
        assert catalog.query("SELECT id, path, file_size, phash FROM images") == \
            [{"id": "a1", "path": "/p/a.png", "file_size": 123, "phash": None}]
        # its one path is known to the files table (loader/paths.py), so the row follows that file from now on
        assert catalog.query("SELECT path, id, file_size, present FROM files") == \
            [{"path": "/p/a.png", "id": "a1", "file_size": 123, "present": True}]
        assert "file_size" in catalog.images.columns("load_errors")
        assert [r["version"] for r in catalog.query("SELECT version FROM schema_version ORDER BY version")] == \
            list(range(1, schema.latest() + 1))
        assert schema.version(catalog.connection) == schema.latest()


def test_a_database_from_a_newer_release_is_refused(tmp_path):
    Catalog.open(tmp_path / "db").close()
    connection = EmbeddedConnection(tmp_path / "db")
    connection.command("INSERT INTO schema_version (version, note) VALUES (999, 'from the future')")
    connection.close()
    with pytest.raises(StoreError, match="newer clipsearch"):
        Catalog.open(tmp_path / "db")


def test_a_database_of_an_earlier_version_gets_only_the_later_migrations(tmp_path):
    """A database at version 1 (before the models and embeddings tables) is brought to the latest, keeping
    its records."""
    Catalog.open(tmp_path / "db").close()
    connection = EmbeddedConnection(tmp_path / "db")
    connection.command("DROP TABLE models")
    connection.command("DROP TABLE embeddings")
    connection.command("TRUNCATE TABLE schema_version")
    connection.command("INSERT INTO schema_version (version, note) VALUES (1, 'as release 1 made it')")
    connection.close()
    with Catalog.open(tmp_path / "db") as catalog:
        assert catalog.images.columns("models") and catalog.images.columns("embeddings")
        assert [(r["version"], r["note"]) for r in catalog.query("SELECT version, note FROM schema_version "
                                                                "ORDER BY version")] == \
            [(1, "as release 1 made it"), *schema.migrations()[1:]]
        assert schema.migrations()[1:4] == [(2, "002_models.sql"), (3, "003_embeddings.sql"),
                                            (4, "004_tuning_costs.sql")]


def test_a_tuning_recorded_before_the_cost_columns_still_counts(tmp_path):
    """Migration 004: a store tuned before the image beam and the measured costs keeps its beam, and search
    plans as it did (no costs: the fixed share threshold, one beam)."""
    Catalog.open(tmp_path / "db").close()
    connection = EmbeddedConnection(tmp_path / "db")
    connection.command("DROP TABLE vector_index_tuning")
    connection.command("CREATE TABLE vector_index_tuning (tuned_at DateTime64(3) DEFAULT now64(3), index_type String, "
                       "beam UInt32, recall Float32, target Float32, queries UInt32) "
                       "ENGINE = MergeTree ORDER BY tuned_at")
    connection.command("INSERT INTO vector_index_tuning (index_type, beam, recall, target, queries) "
                       "VALUES ('hnsw', 256, 0.97, 0.95, 20)")
    connection.command("DELETE FROM schema_version WHERE version >= 4")   # as release 3 left it
    connection.close()
    with Catalog.open(tmp_path / "db") as catalog:
        assert {"image_beam", "rows", "exact_ms", "index_ms"} <= set(catalog.images.columns("vector_index_tuning"))
        assert catalog.query("SELECT beam, image_beam, rows, exact_ms, index_ms FROM vector_index_tuning") == \
            [{"beam": 256, "image_beam": 0, "rows": 0, "exact_ms": 0.0, "index_ms": 0.0}]
        assert max(r["version"] for r in catalog.query("SELECT version FROM schema_version")) == schema.latest()


def test_every_column_the_schema_makes_is_a_builtin_column(tmp_path):
    """A manifest column may not take a built-in name, and a path's metadata is the row's other columns: both
    read BUILTIN_COLUMNS, which must name every column schema.sql gives `images`."""
    from clipsearch.loader.sources import BUILTIN_COLUMNS
    with Catalog.open(tmp_path / "db") as catalog:
        assert set(catalog.images.columns()) <= BUILTIN_COLUMNS
