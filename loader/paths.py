"""Paths and contents kept apart: what a load records about each path it reads, and what happens to an image's
row when one of its paths changes or goes.

An image row (one per content) lives as long as some path still holds that content, and is shown under one
of them; metadata belongs to the path it was attached to (clipsearch/store/files.py) and follows the path
through edits and absences. A watched folder that cannot be reached is offline: nothing under it is removed
until it is back and its files are really gone.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clipsearch.store.catalog import Catalog
from clipsearch.store.files import FileRecord
from clipsearch.store.images import OF_CONTENT


@dataclass
class Forgotten:
    """What a look for gone files found under a folder."""
    offline: bool = False                          # the folder itself could not be reached: nothing looked at
    paths: list[str] = field(default_factory=list)  # paths whose files are gone (their metadata is kept)
    moved: int = 0                                 # images now shown under another path that holds them
    removed: int = 0                               # images no path holds any more: their rows went


def reachable(folder: str) -> bool:
    """Whether `folder` can be listed and holds something. A network share that dropped out, an unplugged disk
    or an unmounted mount point (an empty folder) all look like a folder whose files were deleted; none
    of them is a reason to remove anything."""
    try:
        with os.scandir(folder) as entries:
            return next(entries, None) is not None
    except OSError:
        return False


def mtime_ms(modified_at: datetime | None) -> int | None:
    return None if modified_at is None else round(modified_at.timestamp() * 1000)


def release(catalog: Catalog, results: list[dict], known: dict[str, FileRecord]) -> int:
    """Before a batch's new rows go in: the paths read again that now hold other content let go of their former
    content, whose row moves to another path that holds it or goes, so a search never sees a path's old and new
    picture at once. (Should the insert then fail, the path's record still names its former version, so the
    next load reads it again.) Returns how many paths changed."""
    changed = {r["path"]: known[r["path"]].id for r in results
               if "id" in r and r["path"] in known and known[r["path"]].id != r["id"]}
    settle(catalog, sorted(set(changed.values())), leaving=set(changed))
    return len(changed)


def record_read(catalog: Catalog, results: list[dict], attached: dict[str, dict[str, Any]]) -> None:
    """Record the paths read in one batch (results with an id: path, id, file_size, modified_at), each with its
    metadata (`attached`: path -> the path's whole metadata now)."""
    catalog.files.record({r["path"]: FileRecord(r["id"], int(r["file_size"]), mtime_ms(r.get("modified_at")),
                                                attached.get(r["path"], {}), True) for r in results if "id" in r})


def settle(catalog: Catalog, ids: list[str], leaving: set[str] | None = None) -> tuple[int, int]:
    """Make each image row of `ids` agree with the paths that hold its content (less those `leaving` it): shown
    under one of them (moved there if its path no longer does), or gone if none does. Returns (moved,
    removed)."""
    if not ids:
        return 0, 0
    holders = {i: kept for i, paths in catalog.files.present_paths(ids).items()
               if (kept := [p for p in paths if p not in (leaving or ())])}
    orphans = [i for i in ids if i not in holders]
    if orphans:
        catalog.images.delete(OF_CONTENT, {"ids": orphans})   # a video's every moment
    shown = catalog.images.paths_of([i for i in ids if i in holders])
    moves = {i: holders[i][0] for i, paths in shown.items() if not set(paths) & set(holders[i])}
    if moves:
        records = catalog.files.under_paths(list(moves.values()))
        catalog.images.move({i: (p, records[p].mtime_ms) for i, p in moves.items() if p in records})
    return len(moves), len(orphans)


def forget_missing(catalog: Catalog, root: str) -> Forgotten:
    """Note the files under the folder `root` (ending in a separator) that are gone, and settle their
    images' rows; nothing when the folder cannot be reached (see `reachable`)."""
    if not reachable(root):
        return Forgotten(offline=True)
    gone = {p: rec for p, rec in catalog.files.under(root).items() if rec.present and not os.path.lexists(p)}
    catalog.files.record({p: rec._replace(present=False) for p, rec in gone.items()})
    moved, removed = settle(catalog, sorted({rec.id for rec in gone.values()}))
    return Forgotten(paths=sorted(gone), moved=moved, removed=removed)
