"""`clipsearch words` (and the next load of a folder): the words of rows loaded before images had words
(`words_version` 0, as migration 007 leaves them): the name's from the stored path, the title's from the
path's metadata, the photo's own metadata's from its file while that is still the one loaded (read in the
batch pipeline's workers, one update per batch).
"""
from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from clipsearch.errors import FileChanged, NotFound
from clipsearch.images.decode import metadata_text, read_image
from clipsearch.images.files import read_loaded_file
from clipsearch.loader import pipeline
from clipsearch.loader.sources import BUILTIN_COLUMNS
from clipsearch.store.catalog import Catalog
from clipsearch.store.images import WORDS_VERSION, StoredFile, path_words, title_words
from clipsearch.store.words import field_words

NO_WORDS = "words_version = 0"  # SQL: rows loaded before images had words


@dataclass
class WordsSummary:
    not_read: int = 0        # images without words when it started
    read: int = 0            # of those: given their words now
    without_meta: int = 0    # of those: their file gone, changed or undecodable (names' and titles' words only)
    seconds: float = 0.0

    def line(self) -> str:
        if not self.not_read:
            return "every image has its words"
        text = f"gave {self.read} of {self.not_read} images loaded before words their words ({self.seconds:.1f}s)"
        if self.without_meta:
            text += (f"; {self.without_meta} files gone, changed or undecodable: their names' and titles' words "
                     "only (load them again for their metadata's)")
        return text


def no_words(catalog: Catalog) -> int:
    """How many stored images were loaded before images had words (`clipsearch words`)."""
    return int(catalog.query(f"SELECT count() AS n FROM images WHERE {NO_WORDS}")[0]["n"])


def _meta_words(row: StoredFile) -> tuple[str, list[str] | None]:
    """(id, the words of the photo's own metadata), None when its file is not the one loaded or no image."""
    try:
        data = read_loaded_file(row.path, row.id, row.file_size)
        return row.id, field_words(metadata_text(read_image(io.BytesIO(data))))
    except (NotFound, FileChanged, UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError):
        return row.id, None


def backfill_words(catalog: Catalog, batch_size: int = 512, workers: int | None = None,
                   progress: bool = False, root: str = "") -> WordsSummary:
    """Give the rows loaded before images had words (words_version 0; with `root`, those under that folder)
    their words, one update per batch: safe to interrupt and to run again."""
    start = time.perf_counter()
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    workers = workers if workers > 1 else 0
    rows = catalog.images.files(f"{NO_WORDS} AND startsWith(images.path, {{root:String}})", "path", {"root": root})
    summary = WordsSummary(not_read=len(rows))
    if not rows:
        return summary
    titled = catalog.images.text_columns()
    by_id = {row.id: row for row in rows}

    def store(results: list[tuple[str, list[str] | None]]) -> None:
        batch = [by_id[image_id] for image_id, _ in results]
        records = catalog.files.under_paths([r.path for r in batch])
        older = [r.id for r in batch if r.path not in records or not records[r.path].metadata]
        from_rows = catalog.images.metadata_of(older, BUILTIN_COLUMNS) if titled else {}
        titles = [title_words(records[r.path].metadata if r.path in records and records[r.path].metadata
                              else from_rows.get(r.id, {}), titled) for r in batch]
        named = [path_words(r.path) for r in batch]
        summary.without_meta += sum(meta is None for _, meta in results)
        catalog.images.update_columns([r.id for r in batch], {
            "words_name": ("Array(String)", [n["words_name"] for n in named]),
            "words_prefixes": ("Array(String)", [n["words_prefixes"] for n in named]),
            "words_title": ("Array(String)", titles),
            "words_meta": ("Array(String)", [meta or [] for _, meta in results]),
            "words_version": ("UInt8", [WORDS_VERSION] * len(batch))})
        summary.read += len(batch)

    bar = pipeline.progress_bar(len(rows), "reading words", progress)
    try:
        pipeline.run(rows, _meta_words, store, batch_size=batch_size, workers=workers, bar=bar)
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
    return summary
