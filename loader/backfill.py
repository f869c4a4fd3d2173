"""`clipsearch hashes`: what clipsearch reads from an image's file now but did not when older rows were loaded,
read again from their stored files (only while they are still the files loaded):

- Orientation and dates (rows with `orientation` 0, loaded before either was read): the EXIF orientation is
  recorded, and taken_at read again (earlier releases clamped dates outside 1970-2106; now a date outside
  1900-2299 is NULL with its text in exif_date). A photo clipsearch stored sideways or mirrored (orientation
  2 to 8, in a format whose decoder left it so) gets its width, height, perceptual hashes and vector again
  from the upright pixels, by the store's model, in the same update: until then it is still 0, so an
  interrupted run goes on with it.
- The perceptual hashes (hashes.py) of images loaded before clipsearch computed them all.
"""
from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, UnidentifiedImageError

from clipsearch.errors import FileChanged, NotFound
from clipsearch.images.decode import (
    decode,
    fit_for_model,
    orientation,
    read_image,
    turned_by_clipsearch,
    upright_size,
)
from clipsearch.images.files import read_loaded_file
from clipsearch.images.hashes import MISSING, Hashes, file_hashes, image_hashes
from clipsearch.loader import pipeline
from clipsearch.loader.load import MAX_PIXELS, _exif
from clipsearch.models.model import ImageTextModel
from clipsearch.store.catalog import Catalog
from clipsearch.store.columns import HASH_COLUMNS
from clipsearch.store.images import StoredFile

NOT_READ = "orientation = 0"   # SQL: rows loaded before the orientation and dates were read from their files
UPRIGHT_BATCH = 64             # images re-embedded and updated at a time (each update carries their vectors)


@dataclass
class BackfillSummary:
    missing: int = 0          # images without hashes when it started
    hashed: int = 0
    gone: int = 0             # file no longer at its path
    changed: int = 0          # file no longer the one loaded (its row is left as it is)
    undecodable: int = 0
    not_read: int = 0         # images whose orientation and dates were not read yet when it started
    read: int = 0             # of those: read now
    turned: int = 0           # of those: stored sideways or mirrored before, now upright (hashes and vector too)
    seconds: float = 0.0
    failed_ids: set[str] = field(default_factory=set)   # counted once, whichever part read them

    @property
    def left(self) -> int:
        return self.missing - self.hashed

    def line(self) -> str:
        if not self.missing and not self.not_read:
            return "every image has its perceptual hashes"
        parts = []
        if self.not_read:
            parts.append(f"read the orientation and dates of {self.read} of {self.not_read} images loaded before "
                         f"they were read ({self.turned} turned upright: size, hashes and vector again)")
        if self.missing:
            parts.append(f"hashed {self.hashed} of {self.missing} images without hashes")
        text = "; ".join(parts) + f" ({self.seconds:.1f}s)"
        skipped = [f"{n} {what}" for n, what in ((self.gone, "files gone"),
                                                 (self.changed, "files changed since they were loaded"),
                                                 (self.undecodable, "files that no longer decode")) if n]
        return text + (f"; left without: {', '.join(skipped)} (load them again)" if skipped else "")


def not_read(catalog: Catalog) -> int:
    """How many stored images were loaded before their orientation and dates were read (`clipsearch hashes`)."""
    return int(catalog.query(f"SELECT count() AS n FROM images WHERE {NOT_READ}")[0]["n"])


# -- worker side ----------------------------------------------------------------------------
_worker: dict = {}


def _setup_worker(transform: Callable | None = None, min_size: int = 0) -> None:
    _worker.update(transform=transform, min_size=min_size)


def _stored(row: StoredFile) -> tuple[bytes | None, str]:
    """The stored file's bytes while it is the one loaded, else None and why."""
    try:
        return read_loaded_file(row.path, row.id, row.file_size), ""
    except NotFound:
        return None, "gone"
    except FileChanged:
        return None, "changed"


def _hash_stored(row: StoredFile) -> tuple[str, Hashes | None, str]:
    """(id, hashes, outcome) for a stored image, read only while its file is the one loaded."""
    data, outcome = _stored(row)
    if data is None:
        return row.id, None, outcome
    hashes = file_hashes(data)
    return row.id, hashes, "hashed" if hashes is not None else "undecodable"


def _read_stored(row: StoredFile) -> dict[str, Any]:
    """A stored image's orientation and dates, and, when `_worker` has the model's transform and the image was
    stored turned, its upright size, hashes and the model's input; "turn" says whether it was."""
    data, outcome = _stored(row)
    if data is None:
        return {"id": row.id, "outcome": outcome}
    try:
        image = read_image(io.BytesIO(data))
        exif = _exif(image)
        out: dict[str, Any] = {"id": row.id, "outcome": "read", "orientation": orientation(image),
                               "taken_at": exif.taken_at, "exif_date": exif.exif_date,
                               "turn": turned_by_clipsearch(image)}
        if out["turn"] and _worker.get("transform") is not None:
            if image.width * image.height > MAX_PIXELS:
                raise ValueError("too many pixels")
            out["width"], out["height"] = upright_size(image)
            decoded = decode(image, _worker["min_size"])
            out["hashes"] = image_hashes(decoded)
            out["pixels"] = _worker["transform"](fit_for_model(decoded, _worker["transform"]))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return {"id": row.id, "outcome": "undecodable"}
    return out


# -- parent side ----------------------------------------------------------------------------
def backfill(catalog: Catalog, batch_size: int = 512, workers: int | None = None, progress: bool = False,
             model: Callable[[], ImageTextModel] | None = None) -> BackfillSummary:
    """Read again what older rows lack from their stored files (see the module's text): orientation and dates,
    with a turned image's size, hashes and vector (by `model()`, the store's model, loaded only if some image
    needs it; without one those images are left for a later run), then the hashes of every image that lacks
    any. In batches, one UPDATE each; safe to interrupt and to run again."""
    start = time.perf_counter()
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    workers = workers if workers > 1 else 0   # one worker process is no faster than this one
    summary = BackfillSummary()
    try:
        _read_again(catalog, summary, batch_size, workers, progress, model)
        _hash_missing(catalog, summary, batch_size, workers, progress)
    finally:
        summary.seconds = time.perf_counter() - start
    return summary


def _count(summary: BackfillSummary, image_id: str, outcome: str) -> None:
    if outcome in ("gone", "changed", "undecodable") and image_id not in summary.failed_ids:
        summary.failed_ids.add(image_id)
        setattr(summary, outcome, getattr(summary, outcome) + 1)


def _read_again(catalog: Catalog, summary: BackfillSummary, batch_size: int, workers: int, progress: bool,
                model: Callable[[], ImageTextModel] | None) -> None:
    """Orientation and dates of the rows loaded before they were read; the turned ones upright (a second pass,
    with the model)."""
    rows = catalog.images.files(NOT_READ, order_by="path")
    summary.not_read = len(rows)
    if not rows:
        return
    turned: list[StoredFile] = []
    by_id = {row.id: row for row in rows}

    def record(results: list[dict]) -> None:
        for r in results:
            _count(summary, r["id"], r["outcome"])
        done = [r for r in results if r["outcome"] == "read" and not r["turn"]]
        turned.extend(by_id[r["id"]] for r in results if r["outcome"] == "read" and r["turn"])
        if done:
            catalog.images.update_columns([r["id"] for r in done], _metadata(done))
            summary.read += len(done)

    bar = pipeline.progress_bar(len(rows), "reading orientation and dates", progress)
    try:
        pipeline.run(rows, _read_stored, record, batch_size=batch_size, workers=workers, setup=_setup_worker,
                     bar=bar)
    finally:
        bar.close()
    if turned and model is not None:
        _turn_upright(catalog, summary, turned, model(), workers, progress)


def _metadata(results: list[dict]) -> dict[str, tuple[str, list]]:
    return {"orientation": ("UInt8", [r["orientation"] for r in results]),
            "taken_at": ("Nullable(DateTime64(0))",
                         [r["taken_at"].isoformat(sep=" ") if r["taken_at"] else None for r in results]),
            "exif_date": ("String", [r["exif_date"] for r in results])}


def _turn_upright(catalog: Catalog, summary: BackfillSummary, rows: list[StoredFile], clip: ImageTextModel,
                  workers: int, progress: bool) -> None:
    """Size, hashes and vector again from the upright pixels, with the orientation and dates, in one update per
    batch, for rows whose vector is `clip`'s (the store's)."""
    def store(results: list[dict]) -> None:
        good = [r for r in results if "pixels" in r]
        for r in results:
            if "pixels" not in r:
                _count(summary, r["id"], r["outcome"])
        if not good:
            return
        vectors = clip.encode_prepared([r["pixels"] for r in good])
        columns = {**_metadata(good), "width": ("UInt32", [r["width"] for r in good]),
                   "height": ("UInt32", [r["height"] for r in good]),
                   **{c: ("Nullable(UInt64)", [getattr(r["hashes"], c) for r in good]) for c in HASH_COLUMNS},
                   "embedding": ("Array(Float32)", [v.tolist() for v in vectors])}
        catalog.images.update_columns([r["id"] for r in good], columns, model=clip.label)
        summary.read += len(good)
        summary.turned += len(good)

    bar = pipeline.progress_bar(len(rows), f"turning upright ({clip.label})", progress)
    try:
        pipeline.run(rows, _read_stored, store, batch_size=UPRIGHT_BATCH, workers=workers, setup=_setup_worker,
                     setup_args=(clip.prepare(), clip.image_size), bar=bar)
    finally:
        bar.close()


def _hash_missing(catalog: Catalog, summary: BackfillSummary, batch_size: int, workers: int,
                  progress: bool) -> None:
    """The hashes of every image that lacks any (none at all, or loaded before some of them existed)."""
    # a video's moment without hashes had a frame they could not be computed from: its file is no picture
    rows = catalog.images.files(f"({MISSING}) AND media = 'image'", order_by="path")
    summary.missing = len(rows)
    if not rows:
        return

    def store(results: list[tuple[str, Hashes | None, str]]) -> None:
        for image_id, _, outcome in results:
            if outcome == "hashed":
                summary.hashed += 1
            else:
                _count(summary, image_id, outcome)
        done = {image_id: hashes for image_id, hashes, _ in results if hashes is not None}
        if done:
            catalog.images.set_hashes(done)

    bar = pipeline.progress_bar(len(rows), "hashing", progress)
    try:
        pipeline.run(rows, _hash_stored, store, batch_size=batch_size, workers=workers, bar=bar)
    finally:
        bar.close()

