"""The package's shape: one import package, no import cycles, one error root mapped once."""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

import clipsearch
from clipsearch.errors import ClipsearchError

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clipsearch"   # its service/, loader/ and sql/ are the top-level folders, through symlinks


def _modules() -> dict[str, Path]:
    out = {}
    for folder, _, names in os.walk(PACKAGE, followlinks=True):   # into the symlinked folders too
        for path in (Path(folder) / n for n in names if n.endswith(".py")):
            parts = ("clipsearch",) + path.relative_to(PACKAGE).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `name` imports, at any depth of its code (function-level imports count too)."""
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            module = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target != package:
                found.add(target)
    return found


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [node, nxt]))
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert graph["clipsearch.service.api"] and "clipsearch.service.app" not in graph["clipsearch.service.api"]


def test_every_user_error_has_a_status_and_exit_code():
    errors = [getattr(clipsearch, n) for n in clipsearch.__all__ if n.endswith(("Error", "Mismatch", "Found",
                                                                                "Store", "Unavailable"))]
    assert len(errors) >= 8 and all(issubclass(e, ClipsearchError) for e in errors)
    for error in errors:
        assert 400 <= error.http_status < 600 and error.exit_code != 0
    assert clipsearch.NotFound.http_status == 404 and clipsearch.StoreError.http_status == 400


def test_store_error_maps_to_its_status_over_http_and_in_the_cli(tmp_path, model, capsys):
    """A statement ClickHouse refuses is the same clean message in the CLI (exit 1) and over HTTP (400)."""
    from clipsearch.errors import StoreError
    from clipsearch.service.app import create_app
    from clipsearch.service.cli import main
    from clipsearch.settings import Settings

    clipsearch.open(tmp_path / "db").close()  # a database to refuse the statement in
    assert main(["sql", "SELECT nope", "--db", str(tmp_path / "db")], model=model) == 1
    cli_message = capsys.readouterr().err.strip()
    assert cli_message.startswith("error: Code: 47. DB::Exception: Unknown expression identifier `nope`")
    app = create_app(Settings(db=str(tmp_path / "db")), model=model, config={"TESTING": True})
    try:
        @app.get("/refused")
        def refused():
            app.extensions["clipsearch"].sql("SELECT nope")

        with pytest.raises(StoreError):
            app.extensions["clipsearch"].sql("SELECT nope")
        res = app.test_client().get("/refused")
        assert res.status_code == 400 and "error: " + res.get_json()["error"] == cli_message
    finally:
        app.extensions["clipsearch"].close()


def test_grafana_dashboard_is_written_from_the_page_dashboard():
    """One source of truth: the compose Grafana dashboard is what scripts/grafana_dashboard.py writes from
    sql/dashboard.json, whose every panel names a shipped query file."""
    import json

    from clipsearch.sql import dashboard, query_names
    from scripts.grafana_dashboard import OUT, build
    assert json.loads(OUT.read_text()) == build()
    assert {p["file"] for p in dashboard()} <= set(query_names())
    assert [p["title"] for p in build()["panels"]] == [p["title"] for p in dashboard()]


# The layer rule docs/architecture.md states: each folder imports only folders of the layers below its own,
# never a sibling of its own layer or anything above. Top to bottom:
LAYERS = (
    ("service", "sql.udf"),     # the CLI, the HTTP app and page, the ClickHouse port; the server's UDF script
    ("clipsearch",),            # the package's front door: re-exports the facade
    ("collection",),            # the facade every command and endpoint goes through
    ("loader",),                # folders and manifests into rows; reembed; backfill (one batch pipeline)
    ("images", "analyst"),      # hashes, copies, duplicates, labels | what an analyst's SQL may be
    ("search",),                # a query parsed once, planned, written as one statement, run, logged
    ("models",),                # the image-text model interface, its families, the model inside SQL
    ("store",),                 # the connection (embedded or server), the schema, the tables' statements
    ("sql",),                   # the shipped SQL files (package data)
    ("errors", "settings"),
)


def test_every_import_follows_the_layer_rule():
    from scripts.architecture_graph import folder_graph
    graph = folder_graph()
    layer = {name: i for i, names in enumerate(LAYERS) for name in names}
    assert set(graph) == set(layer), f"folders without a layer, or layers without a folder: {set(graph) ^ set(layer)}"
    wrong = sorted(f"{a} -> {b}" for a in graph for b in graph[a] if layer[b] <= layer[a])
    assert not wrong, "imports against the layer rule (up or sideways): " + ", ".join(wrong)


def test_the_architecture_drawing_is_what_the_code_imports():
    from scripts.architecture_graph import main
    assert main(["--check"]) == 0, "docs/architecture.md's folder graph is stale: python scripts/architecture_graph.py"
