"""The `files` table: every path the loader has read, the content (images.id) it held, and the metadata
attached to that path.

Path and content are kept apart. `images` holds one row per content, shown under one of its paths; this
table holds each path, so that
- a copy under a second path stays findable when the first path goes (the image row moves to it),
- a file edited in place keeps its path's metadata (the new content's row gets it),
- a path whose file goes away keeps its metadata (present = false), and gets it back when the file returns.
Rows are versions: the latest per path (by updated_at) is the path's state.
"""
from __future__ import annotations

import json
import time
from typing import Any, NamedTuple

from clipsearch.store.connection import Connection


class FileRecord(NamedTuple):
    id: str
    file_size: int
    mtime_ms: int | None        # the file's modification time in ms when it was read; None: not recorded
    metadata: dict[str, Any]    # manifest column -> value attached to this path
    present: bool               # False: the file was gone at the last look


class FileTable:
    """The `files` table (see the module's doc)."""

    def __init__(self, connection: Connection):
        self._connection = connection
        self._stamp = 0

    def _next_stamp(self) -> int:
        """A version time in ms, increasing within this process: two updates of one path in the same ms
        must still order."""
        self._stamp = max(self._stamp + 1, time.time_ns() // 1_000_000)
        return self._stamp

    def under(self, root: str) -> dict[str, FileRecord]:
        """path -> its latest record, for the paths under the folder `root` (every path when root is '')."""
        return self._records("startsWith(path, {root:String})", {"root": root})

    def _records(self, where: str, params: dict) -> dict[str, FileRecord]:
        rows = self._connection.query("SELECT path, id, file_size, toUnixTimestamp64Milli(modified_at) AS mtime, "
                                      f"metadata, present FROM files FINAL WHERE {where}", params)
        return {r["path"]: FileRecord(r["id"], int(r["file_size"]), None if r["mtime"] is None else int(r["mtime"]),
                                      _metadata(r["metadata"]), bool(r["present"])) for r in rows}

    def under_paths(self, paths: list[str]) -> dict[str, FileRecord]:
        """path -> its latest record, for those of `paths` that have one."""
        return self._records("has({paths:Array(String)}, path)", {"paths": list(paths)}) if paths else {}

    def record(self, records: dict[str, FileRecord]) -> None:
        """Store the new state of each path (path -> record)."""
        import pyarrow as pa
        if not records:
            return
        items = list(records.items())
        stamp = self._next_stamp()
        self._connection.insert("files", pa.table({
            "path": pa.array([p for p, _ in items], pa.string()),
            "id": pa.array([r.id for _, r in items], pa.string()),
            "file_size": pa.array([r.file_size for _, r in items], pa.uint64()),
            "modified_at": pa.array([r.mtime_ms for _, r in items], pa.timestamp("ms")),
            "metadata": pa.array([json.dumps(r.metadata, sort_keys=True) for _, r in items], pa.string()),
            "present": pa.array([r.present for _, r in items], pa.bool_()),
            "updated_at": pa.array([stamp] * len(items), pa.timestamp("ms")),
        }))

    def present_paths(self, ids: list[str]) -> dict[str, list[str]]:
        """id -> the paths (sorted) whose file held that content at the last look, for `ids`."""
        if not ids:
            return {}
        rows = self._connection.query("SELECT id, arraySort(groupArray(path)) AS paths FROM files FINAL "
                                      "WHERE id IN {ids:Array(String)} AND present GROUP BY id", {"ids": list(ids)})
        return {r["id"]: list(r["paths"]) for r in rows}


def _metadata(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
