"""Perceptual hashes: "the same picture", whatever the CLIP model sees.

Two 64-bit hashes per image, computed from its pixels when it is loaded (`clipsearch hashes` fills them
in for images loaded before they existed) and compared in SQL with `bitCount(bitXor(a, b))`:

- `phash`: the picture's layout. pHash as the imagehash library computes it: the image in grey,
  reduced to 32x32, its 2-D DCT, and one bit per coefficient of the 8x8 lowest frequencies: above
  their median or not. Re-encoding, resizing, a format change or a brightness change flip a few of
  the 64 bits at most; unrelated photos differ in about half of them.
- `colour_hash`: the picture's mean colour, thermometer-coded: its luma (0-255 in 10 steps) and two
  colour differences (red - green and yellow - blue, -200..200 in 25 steps each) as runs of ones, so
  the Hamming distance between two is how many steps their colours are apart. pHash sees grey only,
  and on pictures with little detail (one object on a plain background) it says little more than
  where the object is; two such pictures of other colours are told apart by this hash.

The pHash is imagehash's algorithm in numpy, except that Pillow first shrinks the image by whole
factors (`reducing_gap`) before the Lanczos resampling: both hashes then cost about 0.3 ms per image
against about 1 ms for imagehash's pHash alone, and differ from imagehash's pHash by under half a
bit on average (bench/copies.py measures both).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from .catalog import Catalog

HASH_SIZE = 8                  # 8x8 DCT coefficients: 64 bits
THUMB = 32                     # the pHash input: 4 x HASH_SIZE, as imagehash's highfreq_factor=4
HASH_DECODE_SIZE = 64          # JPEGs are decoded at a reduced scale with at least this many pixels per side
LUMA_STEPS, CHROMA_STEPS, CHROMA_RANGE = 10, 25, 200.0
_N = np.arange(THUMB)
_DCT = np.cos(np.pi * np.outer(_N[:HASH_SIZE], 2 * _N + 1) / (2 * THUMB))  # DCT-II rows 0..7 (scale: irrelevant)
_LUMA = np.array([0.299, 0.587, 0.114])                                     # ITU-R 601-2, as Pillow's "L"


def _runs(levels: list[int], widths: list[int]) -> int:
    """Thermometer code: each level as that many ones in a field of its width, fields side by side."""
    out = 0
    for level, width in zip(levels, widths, strict=True):
        out = (out << width) | ((1 << level) - 1)
    return out


def image_hashes(image: Image.Image) -> tuple[int, int]:
    """(phash, colour_hash) of a decoded image, as unsigned 64-bit integers."""
    grey = image.convert("L").resize((THUMB, THUMB), Image.Resampling.LANCZOS, reducing_gap=2.0)
    coefficients = _DCT @ np.asarray(grey, dtype=np.float64) @ _DCT.T
    bits = coefficients > np.median(coefficients)
    phash = int(np.packbits(bits.ravel()).view(">u8")[0])
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    small = rgb.resize((4, 4), Image.Resampling.BOX, reducing_gap=2.0)
    r, g, b = np.asarray(small, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    luma = min(LUMA_STEPS, round(float(_LUMA @ (r, g, b)) / 255 * LUMA_STEPS))
    chroma = [min(CHROMA_STEPS, max(0, round((v + CHROMA_RANGE) / (2 * CHROMA_RANGE) * CHROMA_STEPS)))
              for v in (r - g, (r + g) / 2 - b)]
    return phash, _runs([luma, *chroma], [LUMA_STEPS, CHROMA_STEPS, CHROMA_STEPS])


def file_hashes(data: bytes) -> tuple[int | None, int | None]:
    """The hashes of an image file's bytes, or (None, None) if it cannot be decoded."""
    from .model import decode
    try:
        return image_hashes(decode(Image.open(io.BytesIO(data)), HASH_DECODE_SIZE))
    except Exception:  # any decoder failure: no hash, never an error
        return None, None


def distance(a: int, b: int) -> int:
    """Hamming distance between two hashes: SQL's bitCount(bitXor(a, b))."""
    return (a ^ b).bit_count()


# -- filling in the hashes of images loaded before they existed ---------------------------------
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


def _hash_stored(row: tuple[str, str, int]) -> tuple[str, int | None, int | None, str]:
    """(id, phash, colour_hash, outcome) for a stored image, read only while its file is the one loaded."""
    from .errors import FileChanged, NotFound
    from .files import read_loaded_file
    image_id, path, size = row
    try:
        data = read_loaded_file(path, image_id, size)
    except NotFound:
        return image_id, None, None, "gone"
    except FileChanged:
        return image_id, None, None, "changed"
    phash, colour_hash = file_hashes(data)
    return image_id, phash, colour_hash, "hashed" if phash is not None else "undecodable"


def _ignore_interrupt() -> None:
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it keeps the batches stored


def backfill(catalog: Catalog, batch_size: int = 512, workers: int | None = None,
             progress: bool = False) -> BackfillSummary:
    """Compute the hashes of every image that has none, from its stored file, in batches (one UPDATE each);
    safe to interrupt and to run again: only images still without hashes are read."""
    import multiprocessing
    import os
    import sys
    import time

    from tqdm import tqdm
    start = time.perf_counter()
    rows = [(r["id"], r["path"], int(r["file_size"])) for r in catalog.query(
        "SELECT id, any(path) AS path, any(file_size) AS file_size FROM images WHERE phash IS NULL "
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
            done = [(i, p, c) for i, p, c, _ in results if p is not None and c is not None]
            for _, _, _, outcome in results:
                setattr(summary, outcome, getattr(summary, outcome) + 1)
            if done:
                catalog.set_hashes([i for i, _, _ in done], [p for _, p, _ in done], [c for _, _, c in done])
            bar.update(len(batch))
    finally:
        if pool:
            pool.terminate()
        bar.close()
        summary.seconds = time.perf_counter() - start
    return summary
