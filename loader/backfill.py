"""`clipsearch hashes`: the perceptual hashes (hashes.py) of images loaded before clipsearch computed them all,
read from their stored files."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from clipsearch.errors import FileChanged, NotFound
from clipsearch.images.files import read_loaded_file
from clipsearch.images.hashes import MISSING, Hashes, file_hashes
from clipsearch.loader import pipeline
from clipsearch.store.catalog import Catalog
from clipsearch.store.images import StoredFile


@dataclass
class BackfillSummary:
    missing: int = 0          # images without hashes when it started
    hashed: int = 0
    gone: int = 0             # file no longer at its path
    changed: int = 0          # file no longer the one loaded (its row is left as it is)
    undecodable: int = 0
    seconds: float = 0.0

    @property
    def left(self) -> int:
        return self.missing - self.hashed

    def line(self) -> str:
        if not self.missing:
            return "every image has its perceptual hashes"
        text = f"hashed {self.hashed} of {self.missing} images without hashes ({self.seconds:.1f}s)"
        skipped = [f"{n} {what}" for n, what in ((self.gone, "files gone"),
                                                 (self.changed, "files changed since they were loaded"),
                                                 (self.undecodable, "files that no longer decode")) if n]
        return text + (f"; left without: {', '.join(skipped)} (load them again)" if skipped else "")


def _hash_stored(row: StoredFile) -> tuple[str, Hashes | None, str]:
    """(id, hashes, outcome) for a stored image, read only while its file is the one loaded."""
    image_id, path, size = row
    try:
        data = read_loaded_file(path, image_id, size)
    except NotFound:
        return image_id, None, "gone"
    except FileChanged:
        return image_id, None, "changed"
    hashes = file_hashes(data)
    return image_id, hashes, "hashed" if hashes is not None else "undecodable"


def backfill(catalog: Catalog, batch_size: int = 512, workers: int | None = None,
             progress: bool = False) -> BackfillSummary:
    """Compute the hashes of every image that lacks any (none at all, or loaded before some of them existed),
    from its stored file, in batches (one UPDATE each); safe to interrupt and to run again: only images still
    without hashes are read."""
    start = time.perf_counter()
    rows = catalog.images.files(MISSING, order_by="path")
    summary = BackfillSummary(missing=len(rows))
    if not rows:
        return summary

    def store(results: list[tuple[str, Hashes | None, str]]) -> None:
        for _, _, outcome in results:
            setattr(summary, outcome, getattr(summary, outcome) + 1)
        done = {image_id: hashes for image_id, hashes, _ in results if hashes is not None}
        if done:
            catalog.images.set_hashes(done)

    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    bar = pipeline.progress_bar(len(rows), "hashing", progress)
    try:   # one worker process is no faster than this one
        pipeline.run(rows, _hash_stored, store, batch_size=batch_size, workers=workers if workers > 1 else 0,
                     bar=bar)
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
    return summary
