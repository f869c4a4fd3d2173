"""The `clipsearch` command as users run it: search, embed, sql, errors.

Commands run in this process (the `cli` fixture); only the tests about the process itself start one:
a store locked by another process, and the installed console script end to end.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from clipsearch.errors import QueryError
from clipsearch.models.bundled import BUNDLED_NOTE, MODEL_NOTICE
from clipsearch.service.cli import _read_file as read_sql_file
from clipsearch.sql import read as read_sql
from tests.conftest import CONSOLE_SCRIPT, random_specs, run_cli, write_catalogue


@pytest.fixture(scope="module")
def loaded_db(tmp_path_factory, cli):
    folder = tmp_path_factory.mktemp("cli")
    manifest = write_catalogue(folder / "images", random_specs(80, 8), 8, extra=lambda i: {"price": i})
    db = folder / "db"
    result = cli("load", str(manifest), "--quiet", db=db)
    assert result.returncode == 0, result.stderr
    assert "loaded 80, already present 0, failed 0" in result.stdout
    return db, folder


def test_raw_sql_ranking_equals_search(loaded_db, cli):
    db, _ = loaded_db
    searched = json.loads(cli("search", "a green square", "--k", "10", "--json", "--match", "pictures",
                              "--filter", "price>=20", db=db).stdout)
    vector = cli("embed", "a green square").stdout.strip()
    assert len(json.loads(vector)) == 128
    sql = (f"SELECT id, 1 - cosineDistance(embedding, {vector}) AS score FROM images WHERE price >= 20 "
           f"ORDER BY cosineDistance(embedding, {vector}) LIMIT 10")
    raw = [json.loads(line) for line in cli("sql", sql, "--format", "JSONEachRow", db=db).stdout.splitlines()]
    assert [r["id"] for r in raw] == [r["id"] for r in searched]
    np.testing.assert_allclose([r["score"] for r in raw], [r["score"] for r in searched], atol=1e-5)
    assert all(r["price"] >= 20 for r in searched)
    assert {"id", "path", "score", "colour", "shape", "price", "width"} <= set(searched[0])


def test_search_by_stored_id_and_image_file(loaded_db, cli):
    """Searching by the image file finds that image first; by its stored id, the same neighbours without it."""
    db, _ = loaded_db
    first = json.loads(cli("sql", "SELECT id, path FROM images ORDER BY id LIMIT 1", "--format", "JSONEachRow",
                           db=db).stdout)
    similar = json.loads(cli("search", "--similar", first["id"], "--json", "--k", "5", db=db).stdout)
    by_file = json.loads(cli("search", "--image", first["path"], "--json", "--k", "6", db=db).stdout)
    assert by_file[0]["id"] == first["id"] and by_file[0]["score"] > 0.999
    assert [r["id"] for r in similar] == [r["id"] for r in by_file[1:]]


def test_the_bundled_models_answers_say_so(loaded_db, cli):
    """--json carries the API's model_notice (on each row; beside the results with --facet); embed and
    duplicates --mode similar name the model on stderr."""
    db, _ = loaded_db
    rows = json.loads(cli("search", "a cat", "--k", "3", "--json", db=db).stdout)
    assert len(rows) == 3 and all(r["model_notice"] == MODEL_NOTICE and r["model"] == "clipsearch-shapes" for r in rows)
    faceted = json.loads(cli("search", "a cat", "--k", "3", "--json", "--facet", "colour", db=db).stdout)
    assert faceted["model_notice"] == MODEL_NOTICE and len(faceted["results"]) == 3
    embedded = cli("embed", "a cat")
    assert embedded.stderr.splitlines() == ["model: clipsearch-shapes", BUNDLED_NOTE]
    similar = cli("duplicates", "--mode", "similar", db=db)
    assert similar.returncode == 0 and similar.stderr.splitlines()[:2] == ["model: clipsearch-shapes", BUNDLED_NOTE]
    assert "model:" not in cli("duplicates", db=db).stderr   # copies: by the pixels' hashes


@pytest.mark.parametrize("args,message", [
    (["--order-by", "price"], "--order-by needs --min-score: it orders the matches above it by a column"),
    (["--min-score", "5"], "--min-score is a similarity, a number from -1 to 1, got 5.0"),
    (["--k", "5000"], "--k must be between 1 and 1000, got 5000 (up to 10000 with --min-score)"),
    (["--offset", "9999"], "--offset + --k is at most 10000, got 10009"),
    (["--per", "price", "0"], "--per's N must be a whole number from 1 to 1000, got 0"),
    (["--facet", "nope"], "--facet: unknown column 'nope'"),
])
def test_search_mistakes_name_the_cli_flags(loaded_db, cli, args, message):
    db, _ = loaded_db
    result = cli("search", "a red star", *args, db=db)
    assert result.returncode == 1 and result.stderr.startswith(f"error: {message}"), result.stderr


def test_human_output(loaded_db, cli):
    db, _ = loaded_db
    result = cli("search", "a red star", "--k", "3", db=db)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0 and len(lines) == 3
    assert lines[0].split()[0] == "1" and "price=" in lines[0]


@pytest.mark.parametrize("args,message", [
    (["search", "a red star", "--filter", "colr=red"], "error: unknown column 'colr'; known columns: id, path"),
    (["search", "a red star", "--filter", "price>abc"], "error: column 'price' is numeric; 'abc' is not a number"),
    (["search", "--image", "/nonexistent.png"], "error: /nonexistent.png: no such file"),
    (["search", "--similar", "nope"], "error: no image with id 'nope'"),
    (["search"], "error: give a TEXT, --image FILE or --similar ID"),
    (["search", "a red star", "--k", "0"], "error: --k must be between 1 and 1000, got 0"),
    (["sql", "SELECT nope FROM images"], "error: Code: 47. DB::Exception: Unknown expression identifier `nope`"),
])
def test_errors_are_one_clear_line(loaded_db, cli, args, message):
    db, _ = loaded_db
    result = cli(*args, db=db)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_empty_store(tmp_path, cli):
    from clipsearch.store.catalog import Catalog
    Catalog.open(tmp_path / "empty").close()  # a database without images (a folder without one: test_hardening)
    result = cli("search", "a red star", db=tmp_path / "empty")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: no images loaded yet: run `clipsearch load FOLDER` first"


def test_second_process_on_same_db_is_refused(loaded_db):
    """The lock is between processes: this one holds the store, a real second `clipsearch` is refused.
    (Neither command loads the model, so these processes start in well under a second.)"""
    from clipsearch.store.catalog import Catalog
    db, _ = loaded_db
    held = Catalog.open(db)
    try:
        result = run_cli("sql", "SELECT 1", db=db)
        assert result.returncode == 1 and "is in use by process" in result.stderr
    finally:
        held.close()
    assert run_cli("sql", "SELECT 1", db=db).returncode == 0  # free again once the holder closes


def test_sql_files_params_and_text_embedding_function(loaded_db, cli):
    db, _ = loaded_db
    searched = json.loads(cli("search", "a red star", "--k", "5", "--json", db=db).stdout)
    sql = ("SELECT id FROM images ORDER BY cosineDistance(embedding, "
           "(SELECT clipTextEmbedding({text:String}))), id LIMIT 5")
    result = cli("sql", sql, "--param", "text=a red star", "--format", "JSONEachRow", db=db)
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [r["id"] for r in searched]
    coverage = cli("sql", "--file", "sql/queries/embedding_coverage.sql", "--format", "JSONEachRow", db=db)
    assert json.loads(coverage.stdout)["images"] == 80
    bad = cli("sql", "--file", "sql/queries/image_neighbours.sql", db=db)
    assert bad.returncode == 1 and "image_id" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


BINARY_SQL = "SELECT id, width, price, embedding FROM images ORDER BY id"


def test_sql_binary_formats_are_written_byte_for_byte(loaded_db, cli, tmp_path):
    """`clipsearch sql --format Parquet > out.parquet`, as clickhouse-client users do: Parquet and Arrow read
    back by pyarrow, Native by the engine, the same rows as JSON gives."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    db, _ = loaded_db
    rows = [json.loads(line) for line in cli("sql", BINARY_SQL, "--format", "JSONEachRow", db=db).stdout.splitlines()]
    assert len(rows) == 80
    parquet = cli("sql", BINARY_SQL, "--format", "Parquet", db=db)
    assert parquet.returncode == 0 and parquet.stdout_bytes.startswith(b"PAR1")
    table = pq.read_table(pa.BufferReader(parquet.stdout_bytes))
    assert table.column("id").to_pylist() == [r["id"] for r in rows]
    np.testing.assert_allclose(table.column("embedding").to_pylist(), [r["embedding"] for r in rows], rtol=1e-6)
    arrow = cli("sql", BINARY_SQL, "--format", "Arrow", db=db).stdout_bytes
    assert pa.ipc.open_file(pa.BufferReader(arrow)).read_all().column("price").to_pylist() == \
        [r["price"] for r in rows]
    native = tmp_path / "out.native"
    native.write_bytes(cli("sql", BINARY_SQL, "--format", "Native", db=db).stdout_bytes)
    back = cli("sql", f"SELECT id, width FROM file('{native}', 'Native')", "--format", "JSONEachRow", db=db)
    assert [json.loads(line) for line in back.stdout.splitlines()] == \
        [{"id": r["id"], "width": r["width"]} for r in rows]


def test_sql_file_falls_back_to_the_shipped_sql_folder(tmp_path, monkeypatch):
    """`--file sql/...` where no such file is here (an installed wheel, any folder) reads the file clipsearch
    ships; a file that is here wins, and a name shipped nowhere is a clear error."""
    monkeypatch.chdir(tmp_path)
    assert read_sql_file("sql/rebuild_images.sql") == read_sql("rebuild_images.sql")
    assert "FROM images" in read_sql_file("sql/queries/embedding_coverage.sql")
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "schema.sql").write_text("SELECT 'mine'")
    assert read_sql_file("sql/schema.sql") == "SELECT 'mine'"
    for missing in ("sql/queries/nope.sql", "elsewhere/schema.sql", "sql"):
        with pytest.raises(QueryError, match="No such file|Is a directory"):
            read_sql_file(missing)


@pytest.mark.slow
def test_installed_console_script_end_to_end(loaded_db, cli):
    """The real `clipsearch` script the package installs, in its own process: output and exit codes."""
    db, _ = loaded_db
    assert CONSOLE_SCRIPT, "the clipsearch console script is not installed (pip install -e .)"
    result = run_cli("search", "a red star", "--k", "3", "--json", db=db, command=[CONSOLE_SCRIPT])
    assert result.returncode == 0, result.stderr
    in_process = json.loads(cli("search", "a red star", "--k", "3", "--json", db=db).stdout)
    assert [r["id"] for r in json.loads(result.stdout)] == [r["id"] for r in in_process]
    error = run_cli("search", "--similar", "nope", db=db, command=[CONSOLE_SCRIPT])
    assert error.returncode == 1
    assert error.stderr.strip().startswith("error: no image with id 'nope'"), error.stderr
    assert len(error.stderr.strip().splitlines()) == 1
    usage = run_cli("search", "--k", "ten", db=db, command=[CONSOLE_SCRIPT])
    assert usage.returncode == 2 and "invalid int value: 'ten'" in usage.stderr
