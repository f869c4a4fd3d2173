"""`clipsearch hashes`: the perceptual hashes (hashes.py) of images loaded before clipsearch computed them all,
read from their stored files."""
from __future__ import annotations

from dataclasses import dataclass

from clipsearch.errors import FileChanged, NotFound
from clipsearch.images.files import read_loaded_file
from clipsearch.images.hashes import MISSING, Hashes, file_hashes
from clipsearch.store.catalog import Catalog


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


def _hash_stored(row: tuple[str, str, int]) -> tuple[str, Hashes | None, str]:
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


def _ignore_interrupt() -> None:
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it keeps the batches stored


def backfill(catalog: Catalog, batch_size: int = 512, workers: int | None = None,
             progress: bool = False) -> BackfillSummary:
    """Compute the hashes of every image that lacks any (none at all, or loaded before some of them existed),
    from its stored file, in batches (one UPDATE each); safe to interrupt and to run again: only images still
    without hashes are read."""
    import multiprocessing
    import os
    import sys
    import time

    from tqdm import tqdm
    start = time.perf_counter()
    rows = [(r["id"], r["path"], int(r["file_size"])) for r in catalog.query(
        f"SELECT id, any(path) AS path, any(file_size) AS file_size FROM images WHERE {MISSING} "
        "GROUP BY id ORDER BY path")]
    summary = BackfillSummary(missing=len(rows))
    if not rows:
        return summary
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    # Forked workers read and decode files only (Pillow and numpy), never the parent's ClickHouse engine.
    pool = multiprocessing.get_context("fork").Pool(workers, initializer=_ignore_interrupt) if workers > 1 else None
    bar = tqdm(total=len(rows), unit="img", desc="hashing", disable=not progress, file=sys.stderr)
    try:
        for lo in range(0, len(rows), batch_size):
            batch = rows[lo:lo + batch_size]
            results = pool.map(_hash_stored, batch, chunksize=8) if pool else [_hash_stored(r) for r in batch]
            done = {image_id: hashes for image_id, hashes, _ in results if hashes is not None}
            for _, _, outcome in results:
                setattr(summary, outcome, getattr(summary, outcome) + 1)
            if done:
                catalog.set_hashes(done)
            bar.update(len(batch))
    finally:
        if pool:
            pool.terminate()
        bar.close()
        summary.seconds = time.perf_counter() - start
    return summary
