"""Draw the package's folders and their import arrows, from the code, into docs/architecture.md.

    python scripts/architecture_graph.py          # rewrite the drawing between the markers
    python scripts/architecture_graph.py --check  # exit 1 if the drawing is not what the code says

A folder is a subpackage of clipsearch (service, loader, search, ...) or one of the top modules
(collection, errors, settings); an arrow A --> B means some module of A imports some module of B,
at any depth of its code. tests/test_layout.py holds the layer rule these arrows must obey.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clipsearch"   # service/, loader/ and sql/ are the top-level folders, through symlinks
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- folder graph: scripts/architecture_graph.py -->", "<!-- end of folder graph -->"


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name, the symlinked folders included."""
    out = {}
    for folder, _, names in os.walk(PACKAGE, followlinks=True):
        for path in (Path(folder) / n for n in names if n.endswith(".py")):
            parts = ("clipsearch",) + path.relative_to(PACKAGE).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, known: set[str]) -> set[str]:
    """The package modules a file imports (absolute imports only: ruff refuses relative ones)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target:
                found.add(target)
    return found


def folder(module: str) -> str:
    """clipsearch.store.catalog -> store; clipsearch.collection -> collection; clipsearch -> clipsearch;
    clipsearch.sql.udf.* -> sql.udf (the script ClickHouse runs: an entry point, not data)."""
    parts = module.split(".")
    if parts[1:3] == ["sql", "udf"]:
        return "sql.udf"
    return parts[1] if len(parts) > 1 else parts[0]


def folder_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {folder(m): set() for m in mods}
    for name, path in mods.items():
        graph[folder(name)] |= {folder(t) for t in imports(path, set(mods))} - {folder(name)}
    return graph


def node(name: str) -> str:
    return name.replace(".", "_") + f"[{name}]"   # mermaid ids take no dots


def drawing() -> str:
    graph = folder_graph()
    lines = [BEGIN, "```mermaid", "flowchart TD"]
    lines += [f"    {node(a)} --> {node(b)}" for a in sorted(graph) for b in sorted(graph[a])]
    return "\n".join(lines + ["```", END])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether the drawing is current")
    args = parser.parse_args(argv)
    text = DOC.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    current = text[start:end]
    if args.check:
        if current != drawing():
            print(f"{DOC} is out of date: run python scripts/architecture_graph.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text[:start] + drawing() + text[end:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
