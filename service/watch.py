"""`serve --watch DIR`: keep served folders in step with the files in them.

Polling, not inotify (watchdog): it works the same on network shares and bind mounts, where change
events often never arrive, and a pass costs little because the loader skips every file whose path,
size and modification time are stored, and every bad file that has not changed since it failed. Each
pass loads new and changed files (in this process: forking a threaded server is unwise) and notes the
files that are gone. A folder that cannot be reached (a share that dropped out, an unplugged disk, an
empty mount point) is offline: nothing under it is removed, and metadata is never lost (loader/paths.py).
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clipsearch.collection import Collection
from clipsearch.errors import ClipsearchError, NoImages
from clipsearch.loader.paths import reachable

DEFAULT_INTERVAL = 10.0   # seconds between passes


@dataclass
class Pass:
    """One pass over a watched folder."""
    offline: bool = False
    loaded: int = 0
    replaced: int = 0
    removed: int = 0      # paths whose files are gone

    def line(self) -> str:
        return f"loaded {self.loaded}, replaced {self.replaced}, removed {self.removed}"


def sync_folder(collection: Collection, folder: Path) -> Pass:
    """One pass over `folder`."""
    root = str(folder.resolve())
    if not reachable(root):
        return Pass(offline=True)
    result = Pass()
    try:
        summary = collection.load(root, workers=0, progress=False, report=lambda path, reason: None,
                                  retry_failed=False)
        result.loaded, result.replaced = summary.loaded, summary.replaced
    except NoImages:   # nothing to load yet (or only a store's own files); there may be files gone
        pass
    forgotten = collection.forget_missing(root + os.sep)
    result.offline, result.removed = forgotten.offline, len(forgotten.paths)
    return result


class Watcher(threading.Thread):
    """A daemon thread that syncs `folders` every `interval` seconds until `stop()`."""

    def __init__(self, collection: Collection, folders: list[Path], interval: float = DEFAULT_INTERVAL,
                 say: Callable[[str], None] = print):
        super().__init__(name="clipsearch-watch", daemon=True)
        self.collection, self.folders, self.interval, self.say = collection, folders, interval, say
        self._stop_event = threading.Event()
        self._offline: set[Path] = set()
        self.passes = 0

    def run(self) -> None:
        while not self._stop_event.is_set():
            for folder in self.folders:
                try:
                    result = sync_folder(self.collection, folder)
                except ClipsearchError as exc:
                    self.say(f"watch {folder}: {exc}")
                    continue
                self._note(folder, result)
            self.passes += 1
            self._stop_event.wait(self.interval)

    def _note(self, folder: Path, result: Pass) -> None:
        """Say what a pass changed, and when a folder goes offline or comes back (once, not every pass)."""
        if result.offline and folder not in self._offline:
            self._offline.add(folder)
            self.say(f"watch {folder}: offline (cannot be reached, or empty); nothing is removed until it is back")
        elif not result.offline and folder in self._offline:
            self._offline.discard(folder)
            self.say(f"watch {folder}: back online")
        if result.loaded or result.replaced or result.removed:
            self.say(f"watch {folder}: {result.line()}")

    def stop(self) -> None:
        self._stop_event.set()
