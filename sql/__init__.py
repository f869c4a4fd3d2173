"""The SQL files shipped with clipsearch (schema, analyst queries, UDF, cluster DDL), read as package data."""
from __future__ import annotations

from importlib.resources import files


def read(name: str) -> str:
    """The text of a shipped SQL file, e.g. read("schema.sql") or read("queries/embedding_coverage.sql")."""
    return files(__name__).joinpath(name).read_text(encoding="utf-8")


def dashboard() -> list[dict]:
    """The dashboard's panels (dashboard.json): the page's Dashboard tab and the compose Grafana draw them."""
    import json
    return list(json.loads(read("dashboard.json"))["panels"])


def query_names() -> list[str]:
    """The analyst queries in queries/, by file name."""
    return sorted(p.name for p in files(__name__).joinpath("queries").iterdir() if p.name.endswith(".sql"))
