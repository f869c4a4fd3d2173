"""Perceptual hashes: "the same picture", whatever the CLIP model sees.

Five 64-bit hashes per image, computed from its pixels when it is loaded (`clipsearch hashes` fills them
in for images loaded before they existed) and compared in SQL with `bitCount(bitXor(a, b))`:

- `phash`: the picture's layout in grey. pHash as the imagehash library computes it: the image in grey,
  reduced to 32x32, its 2-D DCT, and one bit per coefficient of the 8x8 lowest frequencies: above
  their median or not. Re-encoding, resizing, a format change or a brightness change flip a few of
  the 64 bits at most; unrelated photos differ in about half of them.
- `colour_hash`: the picture's mean colour, thermometer-coded: its luma (0-255 in 10 steps) and two
  colour differences (red - green and yellow - blue, -200..200 in 25 steps each) as runs of ones, so
  the Hamming distance between two is how many steps their colours are apart.
- `chroma_hash`: where the colours are, like MPEG-7's colour layout descriptor: the 15 lowest non-constant
  DCT frequencies of the two colour differences over the 32x32 picture, each coded in two bits as clearly
  positive (10), clearly negative (01) or neither (00), so that a sign that changes costs 2 and a weak
  coefficient at most 1. pHash sees grey only; on pictures with little detail (one object on a plain
  background, a product shot) it says little more than where the object is, and two such pictures with
  objects of other colours are told apart by this hash. A picture without colour has all zeros, like
  every other one: the hash then keeps nothing apart.
- `centre_phash`, `centre_chroma_hash`: the same two of the central 85% of the picture (CENTRE). A copy
  cropped by up to 10% per side shows about that part of the original, and a frame of a few pixels
  around a copy falls outside it: comparing the centre of one image with the whole or the centre of the
  other is what finds crops and framed copies (copies.py, sql/queries/near_copy_pairs.sql).

The pHash is imagehash's algorithm in numpy, except that Pillow first shrinks the image by whole
factors (`reducing_gap`) before the Lanczos resampling: cheaper (bench/copies.py measures the cost of all
five against imagehash's pHash alone) and within half a bit of imagehash's pHash on average.
"""
from __future__ import annotations

import io
from typing import NamedTuple

import numpy as np
from PIL import Image

from clipsearch.store.columns import HASH_COLUMNS

HASH_SIZE = 8                  # 8x8 DCT coefficients: 64 bits
THUMB = 32                     # the pHash input: 4 x HASH_SIZE, as imagehash's highfreq_factor=4
HASH_DECODE_SIZE = 64          # JPEGs are decoded at a reduced scale with at least this many pixels per side
LUMA_STEPS, CHROMA_STEPS, CHROMA_RANGE = 10, 25, 200.0
CENTRE = 0.85                  # the share of each side that the centre hashes keep (7.5% off each side)
CHROMA_FREQUENCIES = 4         # chroma_hash: the 4x4 lowest DCT frequencies but the constant one, per difference
CHROMA_LEVEL = 1.0             # a chroma DCT coefficient counts as positive or negative beyond this, in 0-255
                               # units per pixel: faint enough for a small coloured object, above JPEG's noise
_N = np.arange(THUMB)
_DCT = np.cos(np.pi * np.outer(_N[:HASH_SIZE], 2 * _N + 1) / (2 * THUMB))  # DCT-II rows 0..7 (scale: irrelevant)
_LUMA = np.array([0.299, 0.587, 0.114])                                     # ITU-R 601-2, as Pillow's "L"


class Hashes(NamedTuple):
    """An image's perceptual hashes, as unsigned 64-bit integers, in the order of their table columns
    (HASH_COLUMNS)."""
    phash: int
    colour_hash: int
    centre_phash: int
    chroma_hash: int
    centre_chroma_hash: int


MISSING = " OR ".join(f"{column} IS NULL" for column in HASH_COLUMNS)  # SQL: a row lacking some hash


def _runs(levels: list[int], widths: list[int]) -> int:
    """Thermometer code: each level as that many ones in a field of its width, fields side by side."""
    out = 0
    for level, width in zip(levels, widths, strict=True):
        out = (out << width) | ((1 << level) - 1)
    return out


def _bits(bits: np.ndarray) -> int:
    """Up to 64 booleans as an unsigned integer, the first the highest bit."""
    return int(np.packbits(np.pad(bits.ravel(), (0, 64 - bits.size))).view(">u8")[0])


def _thumb(image: Image.Image, box: tuple[int, int, int, int], resample: Image.Resampling) -> np.ndarray:
    """The `box` part of an image reduced to THUMB x THUMB pixels."""
    return np.asarray(image.resize((THUMB, THUMB), resample, box=box, reducing_gap=2.0), dtype=np.float64)


def _phash(grey: np.ndarray) -> int:
    coefficients = _DCT @ grey @ _DCT.T
    return _bits(coefficients > np.median(coefficients))


def _chroma_hash(rgb: np.ndarray) -> int:
    low = _DCT[:CHROMA_FREQUENCIES]
    bits = []
    r, g, b = np.moveaxis(rgb, 2, 0)
    for difference in (r - g, (r + g) / 2 - b):
        coefficients = (low @ difference @ low.T).ravel()[1:] / THUMB ** 2   # the mean colour is colour_hash's
        bits.append(np.stack([coefficients > CHROMA_LEVEL, coefficients < -CHROMA_LEVEL], axis=1))
    return _bits(np.concatenate(bits))


def _colour_hash(rgb: np.ndarray) -> int:
    r, g, b = rgb.reshape(-1, 3).mean(axis=0)
    luma = min(LUMA_STEPS, round(float(_LUMA @ (r, g, b)) / 255 * LUMA_STEPS))
    chroma = [min(CHROMA_STEPS, max(0, round((v + CHROMA_RANGE) / (2 * CHROMA_RANGE) * CHROMA_STEPS)))
              for v in (r - g, (r + g) / 2 - b)]
    return _runs([luma, *chroma], [LUMA_STEPS, CHROMA_STEPS, CHROMA_STEPS])


def centre_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The central CENTRE of each side of a picture of that size, as (left, top, right, bottom)."""
    dx, dy = round(width * (1 - CENTRE) / 2), round(height * (1 - CENTRE) / 2)
    return dx, dy, width - dx, height - dy


def image_hashes(image: Image.Image) -> Hashes:
    """The perceptual hashes of a decoded image."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    grey = image.convert("L")
    whole, middle = (0, 0, *image.size), centre_box(*image.size)
    lanczos, box = Image.Resampling.LANCZOS, Image.Resampling.BOX  # pHash's, and for colours: the lowest
    colours, middle_colours = _thumb(rgb, whole, box), _thumb(rgb, middle, box)  # frequencies need no better
    return Hashes(_phash(_thumb(grey, whole, lanczos)), _colour_hash(colours), _phash(_thumb(grey, middle, lanczos)),
                  _chroma_hash(colours), _chroma_hash(middle_colours))


def file_hashes(data: bytes) -> Hashes | None:
    """The hashes of an image file's bytes, or None if it cannot be decoded."""
    from clipsearch.images.decode import decode, read_image
    try:
        return image_hashes(decode(read_image(io.BytesIO(data)), HASH_DECODE_SIZE))
    except Exception:  # any decoder failure: no hash, never an error
        return None


def distance(a: int, b: int) -> int:
    """Hamming distance between two hashes: SQL's bitCount(bitXor(a, b))."""
    return (a ^ b).bit_count()
