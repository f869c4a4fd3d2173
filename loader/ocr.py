"""`clipsearch ocr`: the text in images already stored that was not read yet (`ocr_engine` = ''), read from
their files while they are still the files loaded, in the loader's worker processes, and stored a batch at a
time with one update of the batch's rows. An image whose text cannot be read (timed out, the OCR crashed) is
one row in load_errors and the run goes on; it stays unread, so a later run tries it again."""
from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from clipsearch.errors import FileChanged, NotFound
from clipsearch.images import ocr
from clipsearch.images.decode import decode, read_image
from clipsearch.images.files import read_loaded_file
from clipsearch.loader import pipeline
from clipsearch.store.catalog import Catalog
from clipsearch.store.images import StoredFile

# SQL: the images whose text was not read yet (a video's moments are not read: only their thumbnails are kept)
NOT_READ = "ocr_engine = '' AND media = 'image'"
MAX_WORKERS = 8


@dataclass
class OcrSummary:
    todo: int = 0         # images whose text was not read when it started
    read: int = 0
    failed: int = 0       # timed out or crashed (load_errors)
    gone: int = 0         # file no longer at its path
    changed: int = 0      # file no longer the one loaded
    undecodable: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        if not self.todo:
            return "the text of every image has been read"
        text = f"read the text of {self.read} of {self.todo} images ({self.seconds:.1f}s)"
        left = [f"{n} {what}" for n, what in ((self.failed, "timed out or failed (see load_errors)"),
                                              (self.gone, "files gone"),
                                              (self.changed, "files changed since they were loaded"),
                                              (self.undecodable, "files that no longer decode")) if n]
        return text + (f"; not read: {', '.join(left)}" if left else "")


def not_read(catalog: Catalog) -> int:
    """How many stored images have no text read yet."""
    return int(catalog.query(f"SELECT count() AS n FROM images WHERE {NOT_READ}")[0]["n"])


def _read_stored(row: StoredFile) -> dict:
    """{"id", "path", and "words" or "error" (a failed reading) or "outcome" (the file is not readable)}."""
    out: dict = {"id": row.id, "path": row.path}
    try:
        data = read_loaded_file(row.path, row.id, row.file_size)
    except NotFound:
        return {**out, "outcome": "gone"}
    except FileChanged:
        return {**out, "outcome": "changed"}
    try:
        image = decode(read_image(io.BytesIO(data)), ocr.MIN_SIDE)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return {**out, "outcome": "undecodable"}
    try:
        return {**out, "words": ocr.read_words(image)}
    except ocr.OcrFailed as exc:
        return {**out, "error": str(exc)}


def read_text(catalog: Catalog, batch_size: int = 64, workers: int | None = None,
              progress: bool = False) -> OcrSummary:
    """Read the text of every stored image whose text was not read yet; OcrMissing without the extra."""
    label = ocr.engine_label()
    start = time.perf_counter()
    rows = catalog.images.files(NOT_READ, order_by="path")
    summary = OcrSummary(todo=len(rows))
    bar = pipeline.progress_bar(len(rows), "reading text", progress)

    def store(results: list[dict]) -> None:
        done = [r for r in results if "words" in r]
        if done:
            catalog.images.update_columns([r["id"] for r in done], {
                "words_ocr": ("Array(String)", [r["words"] for r in done]),
                "ocr_engine": ("String", [label] * len(done))})
        summary.read += len(done)
        failed = [(r["path"], r["error"]) for r in results if "error" in r]
        if failed:
            catalog.images.record_errors(failed)
        summary.failed += len(failed)
        for r in results:
            outcome = r.get("outcome")
            if outcome:
                setattr(summary, outcome, getattr(summary, outcome) + 1)

    try:
        pipeline.run(rows, _read_stored, store, batch_size=batch_size,
                     workers=min(os.cpu_count() or 1, MAX_WORKERS) if workers is None else workers,
                     setup=ocr.start, bar=bar)
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
    return summary
