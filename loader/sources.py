"""What to load: the files of a folder, or the rows of a CSV/JSONL manifest with their metadata.

A load does not follow links out of what it was given unless asked (`follow_links`, the CLI's
--follow-links): a link planted in a photo folder must not put a private file's pixels and EXIF (camera, GPS)
on the page. A folder's files are those it holds, found without following links: a folder linked into it
is reported, not walked (it may be a loop, or hold the same files again), and a linked file is refused
(with `follow_links`, the file it points to is loaded under that file's own path). A manifest's rows name
files inside its folder or, written so (`../x.jpg`, an absolute path), outside it; a row that reaches out of
the manifest's folder through a link (a linked file, or a path through a linked folder) is refused unless
`follow_links`, and then loads the file it points to under that file's path: what is stored is always the
file read. `restrict_to_folder` refuses a manifest naming any file outside its folder, links followed or not.
Store folders (clipsearch's own, or any ClickHouse data folder) are never read as photos.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipsearch.errors import SourceError
from clipsearch.images.hashes import HASH_COLUMNS
from clipsearch.images.video import VIDEO_SUFFIXES
from clipsearch.search.values import NUMBER
from clipsearch.store.columns import WORD_COLUMNS
from clipsearch.store.connection import IDENTIFIER, is_store_folder, store_holding

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif"}
BUILTIN_COLUMNS = {"id", "path", "width", "height", "format", "file_size", "modified_at", "taken_at", "exif_date",
                   "camera", "model", "loaded_at", "embedding", "score", "latitude", "longitude", "near",
                   "orientation", "words_version", "ocr_engine", "media", "video", "start", "end", "duration",
                   "codec", "thumbnail", *HASH_COLUMNS, *WORD_COLUMNS}
# (BUILTIN_COLUMNS: every column of sql/schema.sql's images; a test checks)


@dataclass
class Item:
    path: str                      # stored in the table: absolute path of the file
    metadata: dict = field(default_factory=dict)   # column -> value, converted to the column's type
    raw: dict = field(default_factory=dict)        # column -> value as the manifest wrote it


@dataclass
class Source:
    items: list[Item]
    column_types: dict[str, str]   # manifest column -> ClickHouse type
    root: str                      # folder all paths start with
    ignored: int = 0               # folder files skipped for not having an image suffix
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (printable path, reason): never read
    outside: list[str] = field(default_factory=list)   # manifest paths outside the manifest's folder
    store_folders: list[str] = field(default_factory=list)    # sub-folders skipped: clipsearch stores, caches
    linked_folders: list[str] = field(default_factory=list)   # sub-folders that are links: not followed
    followed: list[str] = field(default_factory=list)   # links followed (follow_links): their targets' paths stored
    big_integers: set[str] = field(default_factory=set)   # columns with an integer a Float64 would round

    def retype(self, types: dict[str, str]) -> None:
        """Convert the items' values to `types`: the columns they go into, some wider than the manifest's own
        (an Int64 manifest column into a Float64 column stores floats; numbers into a String one, their text)."""
        changed = {c: t for c, t in types.items() if self.column_types.get(c) != t}
        for item in self.items:
            for c, t in changed.items():
                item.metadata[c] = _convert(item.raw[c], t)
        self.column_types.update(changed)


def read_source(source: str | os.PathLike, restrict_to_folder: bool = False, follow_links: bool = False) -> Source:
    """The files to load. With `restrict_to_folder`, a manifest naming a file outside its own folder
    (`../x.jpg`, an absolute path, a link out) is refused: for manifests from others. With `follow_links`,
    links out of the folder given (a folder's linked files, a manifest row's link out of its folder) load
    the files they point to, under those files' paths; without it they are refused, each a rejected path."""
    path = Path(source).expanduser()
    if not path.exists():
        raise SourceError(f"{source}: no such file or folder")
    if path.is_dir():
        return _read_folder(path.resolve(), follow_links)
    if path.suffix.lower() == ".csv":
        return _from_rows(path.resolve(), *_csv_rows(path), restrict_to_folder, follow_links)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return _from_rows(path.resolve(), *_jsonl_rows(path), restrict_to_folder, follow_links)
    raise SourceError(f"{source}: give a folder or a .csv / .jsonl manifest")


MAX_VALUE_CHARS = 65_536   # one manifest value: metadata, not documents
NOT_UTF8 = "not valid UTF-8 text (save the manifest as UTF-8)"
Rows = list[tuple[int, dict]]   # (line number, row)
Bad = list[tuple[int, str]]     # (line number, reason): one load error each


def _text(path: Path) -> str:
    """The manifest's text; bytes that are not UTF-8 kept as lone surrogates, so only their rows fail."""
    try:
        return path.read_bytes().decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    except OSError as exc:
        raise SourceError(f"{path}: cannot read it ({exc.strerror})") from None


def _csv_rows(path: Path) -> tuple[Rows, Bad]:
    reader = csv.reader(io.StringIO(_text(path), newline=""))
    limit = csv.field_size_limit(2**31 - 1)   # a long field is one bad row (below), not an error of the file
    try:
        header = next(reader, None)
        if header is None:
            return [], []
        if len(set(header)) != len(header):
            twice = sorted({c for c in header if header.count(c) > 1})
            raise SourceError(f"{path}: the header names {', '.join(map(repr, twice))} more than once")
        rows: Rows = []
        bad: Bad = []
        line = reader.line_num + 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:   # a record the csv module refuses: that one alone
                bad.append((line, f"not valid CSV ({exc})"))
                if reader.line_num < line:   # nothing read: stop rather than repeat
                    break
                fields = []
            if len(fields) > len(header):
                bad.append((line, f"{len(fields)} fields, the header has {len(header)}"))
            elif any(fields):   # blank lines are no rows
                rows.append((line, dict(zip(header, fields, strict=False))))
            line = reader.line_num + 1
    finally:
        csv.field_size_limit(limit)
    return rows, bad


def _jsonl_rows(path: Path) -> tuple[Rows, Bad]:
    rows: Rows = []
    bad: Bad = []
    for n, line in enumerate(_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append((n, f"not valid JSON ({exc.msg})"))
        except RecursionError:
            bad.append((n, "nested too deeply"))
        except ValueError as exc:   # e.g. an integer of more than 4,300 digits
            bad.append((n, f"not valid JSON ({exc})"))
        else:
            if isinstance(row, dict):
                rows.append((n, row))
            else:
                bad.append((n, "each line must be a JSON object"))
    return rows, bad


def printable(path: str) -> str:
    """A path as text that can be stored and shown: bytes that are not UTF-8 as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


LINKED_FILE = ("a symbolic link, not followed; load the folder it points into, or load with --follow-links "
               "to load the file it points to (under that file's path)")
LINK_OUT = ("a link out of the manifest's folder, not followed (it may point at a private file); load with "
            "--follow-links to load the file it points to, under that file's path")


def _read_folder(root: Path, follow_links: bool = False) -> Source:
    if printable(str(root)) != str(root):
        raise SourceError(f"{printable(str(root))}: the folder's name is not valid UTF-8; rename it or load "
                          "it through a manifest in a folder with a UTF-8 name")
    store = store_holding(root)
    if store is not None:
        raise SourceError(f"{root}: {'this is' if store == root else f'inside {store},'} a clipsearch store or "
                          "thumbnail cache (or a ClickHouse data folder): its files are not photos")
    src = Source([], {}, str(root))
    seen: set[str] = set()   # a followed link's file may also be in the folder itself, or linked twice
    for dirpath, dirnames, filenames in os.walk(root):
        kept = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            folder = os.path.join(dirpath, name)
            if os.path.islink(folder):   # os.walk would skip it without a word
                src.linked_folders.append(printable(folder))
            elif is_store_folder(folder):
                src.store_folders.append(printable(folder))
            else:
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            if Path(name).suffix.lower() not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                src.ignored += 1
            elif printable(path) != path:
                # Names from old archives and Samba shares: the table stores text, so such a path could
                # not be stored or served back exactly. Report it instead of guessing an encoding.
                src.rejected.append((printable(path), "the file name is not valid UTF-8; rename the file"))
            elif os.path.islink(path):
                target = os.path.realpath(path) if follow_links else None
                if target is None:
                    src.rejected.append((path, LINKED_FILE))
                elif not os.path.isfile(target) or printable(target) != target:
                    src.rejected.append((path, "a symbolic link to no regular file with a UTF-8 name"))
                elif store_holding(Path(target).parent) is not None:
                    src.rejected.append((path, "a symbolic link into a clipsearch store or thumbnail cache"))
                elif target not in seen:
                    seen.add(target)
                    src.followed.append(path)
                    src.items.append(Item(target))
            elif path not in seen:
                seen.add(path)
                src.items.append(Item(path))
    if src.items:   # followed links' files may lie outside the folder
        src.root = os.path.commonpath([str(root), *(i.path for i in src.items)])
    return src


class _BadRow(Exception):
    """A manifest row that cannot be loaded: the message says why."""


def _from_rows(manifest: Path, rows: Rows, bad: Bad, restrict_to_folder: bool = False,
               follow_links: bool = False) -> Source:
    """The manifest's good rows as items; each bad one (and each of `bad`) a rejected `manifest:line`."""
    if not rows and not bad:
        raise SourceError(f"{manifest}: the manifest has no rows")
    columns = list(dict.fromkeys(k for _, row in rows for k in row))
    if rows and "path" not in columns:
        raise SourceError(f"{manifest}: the manifest needs a 'path' column (found: {', '.join(columns)})")
    meta_columns = [c for c in columns if c != "path"]
    for c in meta_columns:
        if not IDENTIFIER.fullmatch(c):
            raise SourceError(f"{manifest}: column name {c!r} is not usable in SQL; use letters, digits and _")
        if c in BUILTIN_COLUMNS:
            raise SourceError(f"{manifest}: column {c!r} clashes with a built-in column; rename it")
    folder = manifest.parent
    stores: dict[Path, Path | None] = {}
    good: dict[Path, tuple[int, dict]] = {}   # file -> (line, values) of its last row
    lines: dict[Path, list[int]] = {}         # file -> the lines of all its rows
    followed: dict[Path, str] = {}            # file reached through a link out of the folder -> the row's path
    for n, row in rows:
        try:
            file_path, linked_out = _row_path(folder, row.get("path"))
            if linked_out and restrict_to_folder:
                raise SourceError(f"{manifest}: line {n} is a link out of the manifest's folder {folder}; "
                                  "nothing was loaded (--restrict-to-folder refuses every file outside it)")
            if linked_out and not follow_links:
                raise _BadRow(LINK_OUT)
            if linked_out:
                followed[file_path] = linked_out
            store = store_holding(file_path.parent, stores)
            if store is not None:
                raise _BadRow(f"the file is inside {store}, a clipsearch store or thumbnail cache (or a "
                              "ClickHouse data folder): its files are not photos")
            good[file_path] = (n, {c: _row_value(row.get(c)) for c in meta_columns})
            lines.setdefault(file_path, []).append(n)
        except _BadRow as exc:
            bad.append((n, str(exc)))
    for file_path, (kept, _) in good.items():   # a later row for a file corrects an earlier one
        bad += [(n, f"names the same file as line {kept}, the last row for it, which is the one loaded")
                for n in lines[file_path][:-1]]
    values = [v for _, v in good.values()]
    types = {c: _infer_type([v[c] for v in values]) for c in meta_columns}
    big = {c for c in meta_columns if any(_inexact_integer(v[c]) for v in values)}
    items, outside = [], []
    for file_path, (_, raw) in good.items():
        if not file_path.is_relative_to(folder):
            if restrict_to_folder:
                raise SourceError(f"{manifest}: {str(file_path)!r} is outside the manifest's folder {folder}; "
                                  "nothing was loaded (without --restrict-to-folder such paths are loaded)")
            outside.append(str(file_path))
        items.append(Item(str(file_path), {c: _convert(raw[c], types[c]) for c in meta_columns}, raw))
    root = os.path.commonpath([str(folder), *(i.path for i in items)])
    rejected = [(f"{printable(str(manifest))}:{n}", f"bad manifest row: {reason}") for n, reason in sorted(bad)]
    return Source(items, types, root, rejected=rejected, outside=outside, big_integers=big,
                  followed=[followed[p] for p in good if p in followed])


def _row_path(folder: Path, value: object) -> tuple[Path, str | None]:
    """The file a row names (links resolved), and the path as named when a link took it out of `folder`:
    the row names a path inside the folder that resolves outside it, or names a link itself (a path written
    outside the folder names that place, folders and all, as a folder load's own folder does)."""
    if _is_missing(value):
        raise _BadRow("the path is empty")
    if not isinstance(value, str):
        raise _BadRow(f"the path must be text, not {type(value).__name__}")
    _row_value(value)
    if "\x00" in value:
        raise _BadRow("the path holds a NUL byte")
    named = Path(os.path.normpath(folder / value))
    try:
        file_path = (folder / value).resolve()
        linked = not file_path.is_relative_to(folder) and (named.is_relative_to(folder) or named.is_symlink())
    except (OSError, ValueError, RuntimeError) as exc:   # too long, a loop of links
        raise _BadRow(f"the path cannot be used ({exc})") from None
    return file_path, printable(str(named)) if linked else None


def _row_value(value: object) -> object:
    """A manifest value as it can be stored: nested JSON as its text, text checked for size and encoding."""
    if isinstance(value, (dict, list)):
        try:
            value = json.dumps(value)   # \u escapes: ASCII whatever it holds
        except RecursionError:
            raise _BadRow("a value is nested too deeply") from None
    if isinstance(value, str):
        if len(value) > MAX_VALUE_CHARS:
            raise _BadRow(f"a value of {len(value)} characters; at most {MAX_VALUE_CHARS}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:   # undecodable bytes, or JSON's lone surrogate "\\ud800"
            raise _BadRow(NOT_UTF8 if "\\udc" in ascii(value) else "a value is not valid Unicode text (a lone "
                          "surrogate such as \\ud800)") from None
    return value


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _infer_type(values: list) -> str:
    """Int64 or Float64 when every present value is one, else String; all Nullable. Integers mixed with
    fractions make Float64 only while each integer is exactly a float64 (12345678901234567 is not):
    else String, which keeps every digit."""
    present = [v for v in values if not _is_missing(v)]
    if present and all(_parses(v, int) for v in present):
        return "Nullable(Int64)"
    if present and all(_parses(v, float) for v in present) and not any(map(_inexact_integer, present)):
        return "Nullable(Float64)"
    return "Nullable(String)"


def _inexact_integer(value: object) -> bool:
    """Whether `value` is an integer (a JSON one, or decimal digits) that a float64 would round."""
    if isinstance(value, str) and INTEGER.fullmatch(value):
        try:
            value = int(value)
        except ValueError:   # more digits than Python converts: no float holds it either
            return True
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    try:
        return float(value) != value
    except OverflowError:
        return True


INT64 = range(-2**63, 2**63)
INTEGER = re.compile(r"\s*[+-]?\d+\s*", re.ASCII)


def _parses(value: object, kind: type) -> bool:
    """Whether `value` is a number of `kind` as manifests write them: a JSON number or decimal digits, an int
    within Int64, a float finite (not Python's 1_000, nan or inf: text, as 2**70 is no Int64)."""
    if isinstance(value, str) and NUMBER.fullmatch(value):
        try:
            value = int(value) if INTEGER.fullmatch(value) else float(value)
        except ValueError:   # more digits than Python converts
            return False
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if kind is int:
        return isinstance(value, int) and value in INT64
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _convert(value: Any, ch_type: str) -> object:
    if _is_missing(value):
        return None
    if ch_type == "Nullable(Int64)":
        return int(value)
    if ch_type == "Nullable(Float64)":
        return float(value)
    return value if isinstance(value, str) else json.dumps(value)
