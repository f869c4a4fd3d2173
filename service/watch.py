"""`serve --watch DIR`: keep served folders in step with the files in them.

Polling, not inotify (watchdog): it works the same on network shares and bind mounts, where change
events often never arrive, and a pass costs little because the loader skips every file whose path,
size and modification time are stored. Each pass loads new and changed files (in this process: forking
a threaded server is unwise) and deletes the rows of files that are gone.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from clipsearch.collection import Collection
from clipsearch.errors import ClipsearchError

DEFAULT_INTERVAL = 10.0   # seconds between passes


def sync_folder(collection: Collection, folder: Path) -> tuple[int, int, int]:
    """One pass over `folder`: (loaded, replaced, removed)."""
    root = str(folder.resolve())
    loaded = replaced = 0
    if any(True for _ in _image_files(folder)):
        summary = collection.load(root, workers=0, progress=False, report=lambda path, reason: None)
        loaded, replaced = summary.loaded, summary.replaced
    removed = len(collection.forget_missing(root + os.sep))
    return loaded, replaced, removed


def _image_files(folder: Path) -> Iterator[str]:
    from clipsearch.loader.sources import IMAGE_SUFFIXES
    for dirpath, _, names in os.walk(folder):
        for name in names:
            if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."):
                yield os.path.join(dirpath, name)


class Watcher(threading.Thread):
    """A daemon thread that syncs `folders` every `interval` seconds until `stop()`."""

    def __init__(self, collection: Collection, folders: list[Path], interval: float = DEFAULT_INTERVAL,
                 say: Callable[[str], None] = print):
        super().__init__(name="clipsearch-watch", daemon=True)
        self.collection, self.folders, self.interval, self.say = collection, folders, interval, say
        self._stop_event = threading.Event()
        self.passes = 0

    def run(self) -> None:
        while not self._stop_event.is_set():
            for folder in self.folders:
                try:
                    loaded, replaced, removed = sync_folder(self.collection, folder)
                except ClipsearchError as exc:
                    self.say(f"watch {folder}: {exc}")
                    continue
                if loaded or replaced or removed:
                    self.say(f"watch {folder}: loaded {loaded}, replaced {replaced}, removed {removed}")
            self.passes += 1
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()

