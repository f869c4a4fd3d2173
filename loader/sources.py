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

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif"}
BUILTIN_COLUMNS = {"id", "path", "width", "height", "format", "file_size", "modified_at", "taken_at", "camera",
                   "model", "loaded_at", "embedding", "score", "latitude", "longitude", "near"}


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
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (printable path, reason): never read
    outside: list[str] = field(default_factory=list)   # manifest paths outside the manifest's folder


def read_source(source: str | os.PathLike, restrict_to_folder: bool = False) -> Source:
    """The files to load. With `restrict_to_folder`, a manifest naming a file outside its own folder
    (`../x.jpg`, an absolute path, a link out) is refused: for manifests from others."""
    path = Path(source).expanduser()
    if not path.exists():
        raise SourceError(f"{source}: no such file or folder")
    if path.is_dir():
        return _read_folder(path.resolve())
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
        return _from_rows(path.resolve(), rows, restrict_to_folder)
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
        return _from_rows(path.resolve(), rows, restrict_to_folder)
    raise SourceError(f"{source}: give a folder or a .csv / .jsonl manifest")


def printable(path: str) -> str:
    """A path as text that can be stored and shown: bytes that are not UTF-8 as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _read_folder(root: Path) -> Source:
    if printable(str(root)) != str(root):
        raise SourceError(f"{printable(str(root))}: the folder's name is not valid UTF-8; rename it or load "
                          "it through a manifest in a folder with a UTF-8 name")
    items, ignored, rejected = [], 0, []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                ignored += 1
            elif printable(path) != path:
                # Names from old archives and Samba shares: the table stores text, so such a path could
                # not be stored or served back exactly. Report it instead of guessing an encoding.
                rejected.append((printable(path), "the file name is not valid UTF-8; rename the file"))
            else:
                items.append(Item(path))
    return Source(items, {}, str(root), ignored, rejected)


def _from_rows(manifest: Path, rows: list[dict], restrict_to_folder: bool = False) -> Source:
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
    items, outside = [], []
    folder = manifest.parent
    for row in rows:
        if not row.get("path"):
            raise SourceError(f"{manifest}: a row has an empty path")
        file_path = (folder / str(row["path"])).resolve()
        if not file_path.is_relative_to(folder):
            if restrict_to_folder:
                raise SourceError(f"{manifest}: {row['path']!r} is outside the manifest's folder {folder}; "
                                  "nothing was loaded (without --restrict-to-folder such paths are loaded)")
            outside.append(str(file_path))
        items.append(Item(str(file_path), {c: _convert(row.get(c), types[c]) for c in meta_columns}))
    root = os.path.commonpath([str(folder), *(i.path for i in items)])
    return Source(items, types, root, outside=outside)


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
