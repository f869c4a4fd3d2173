"""What to load: the files of a folder, or the rows of a CSV/JSONL manifest with their metadata."""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..connection import IDENTIFIER
from ..errors import SourceError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
BUILTIN_COLUMNS = {"id", "path", "width", "height", "format", "file_size", "taken_at", "camera", "model",
                   "loaded_at", "embedding", "score"}


@dataclass
class Item:
    path: str                      # stored in the table: absolute path of the file
    metadata: dict = field(default_factory=dict)


@dataclass
class Source:
    items: list[Item]
    column_types: dict[str, str]   # manifest column -> ClickHouse type
    root: str                      # folder all paths start with
    ignored: int = 0               # folder files skipped for not having an image suffix


def read_source(source: str | os.PathLike) -> Source:
    path = Path(source).expanduser()
    if not path.exists():
        raise SourceError(f"{source}: no such file or folder")
    if path.is_dir():
        return _read_folder(path.resolve())
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
        return _from_rows(path.resolve(), rows)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise SourceError(f"{source}:{n}: not valid JSON ({exc.msg})") from None
                    if not isinstance(rows[-1], dict):
                        raise SourceError(f"{source}:{n}: each line must be a JSON object")
        return _from_rows(path.resolve(), rows)
    raise SourceError(f"{source}: give a folder or a .csv / .jsonl manifest")


def _read_folder(root: Path) -> Source:
    items, ignored = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                items.append(Item(os.path.join(dirpath, name)))
            else:
                ignored += 1
    return Source(items, {}, str(root), ignored)


def _from_rows(manifest: Path, rows: list[dict]) -> Source:
    if not rows:
        raise SourceError(f"{manifest}: the manifest has no rows")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    if "path" not in columns:
        raise SourceError(f"{manifest}: the manifest needs a 'path' column (found: {', '.join(columns)})")
    meta_columns = [c for c in columns if c != "path"]
    for c in meta_columns:
        if not IDENTIFIER.match(c):
            raise SourceError(f"{manifest}: column name {c!r} is not usable in SQL; use letters, digits and _")
        if c in BUILTIN_COLUMNS:
            raise SourceError(f"{manifest}: column {c!r} clashes with a built-in column; rename it")
    types = {c: _infer_type([row.get(c) for row in rows]) for c in meta_columns}
    items = []
    for row in rows:
        if not row.get("path"):
            raise SourceError(f"{manifest}: a row has an empty path")
        file_path = (manifest.parent / str(row["path"])).resolve()
        items.append(Item(str(file_path), {c: _convert(row.get(c), types[c]) for c in meta_columns}))
    return Source(items, types, str(manifest.parent))


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _infer_type(values: list) -> str:
    """Int64 or Float64 when every present value is one, else String; all Nullable."""
    present = [v for v in values if not _is_missing(v)]
    if present and all(_parses(v, int) for v in present):
        return "Nullable(Int64)"
    if present and all(_parses(v, float) for v in present):
        return "Nullable(Float64)"
    return "Nullable(String)"


def _parses(value: object, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is int and isinstance(value, float):
        return False
    try:
        kind(value)
        return True
    except (TypeError, ValueError):
        return False


def _convert(value: Any, ch_type: str) -> object:
    if _is_missing(value):
        return None
    if ch_type == "Nullable(Int64)":
        return int(value)
    if ch_type == "Nullable(Float64)":
        return float(value)
    return value if isinstance(value, str) else json.dumps(value)
