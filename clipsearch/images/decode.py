"""Decoding image files: the formats clipsearch reads, and JPEGs decoded at a reduced scale."""
from __future__ import annotations

import functools
import io
from typing import BinaryIO

import pillow_heif
from PIL import Image

# The formats clipsearch reads, and the only ones Pillow is let to open: an EPS, PDF, PSD ... (uploaded, or
# named .jpg in a folder) is "not an image" and never reaches a decoder nobody asked for (EPS: Ghostscript).
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF")
FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP, TIFF or HEIC/HEIF"


def open_image(source: str | bytes | bytearray | BinaryIO, min_size: int | None = None) -> Image.Image:
    """Decode an image file (path, file object or bytes) to RGB; see `decode`."""
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    return decode(read_image(source), min_size)


@functools.cache
def _register_heif() -> None:
    """HEIC/HEIF photos from phones open like any other format: Pillow learns the format once, when the
    first image is read (not when clipsearch is imported)."""
    pillow_heif.register_heif_opener()


def read_image(source: str | BinaryIO) -> Image.Image:
    """Open an image file (not decoded yet) of one of IMAGE_FORMATS; UnidentifiedImageError for any other."""
    _register_heif()
    return Image.open(source, formats=IMAGE_FORMATS)


def decode(image: Image.Image, min_size: int | None = None) -> Image.Image:
    """Load an opened image as RGB.

    With `min_size`, a JPEG is decoded at the smallest DCT scale that still
    gives at least that many pixels per side (PIL's draft mode): the model
    resizes to its input size anyway, and this makes decoding several times
    faster. Raises PIL/OS errors for files that are not images.
    """
    if min_size and image.format == "JPEG":
        image.draft("RGB", (min_size, min_size))
    image.load()
    return image.convert("RGB")
