"""Decoding image files into the pixels a person sees: the formats clipsearch reads, JPEGs decoded at a
reduced scale, EXIF orientation applied, high-bit-depth and float pixels scaled to 8 bits, transparency
composited on white, and (for a model) extreme aspect ratios cut to what the model keeps.

`decode` is the one place files become pixels: the loader, reembed, `clipsearch hashes`, thumbnails and
query images all go through it, so a phone photo stored sideways with an orientation tag is upright for the
hashes, the embedding, the thumbnail and the stored width and height alike. `metadata_text` is the text a
photo carries about itself (captions, titles, keywords), read from the same opened file.
"""
from __future__ import annotations

import functools
import html
import io
import re
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np
import pillow_heif
from PIL import Image, ImageFile, IptcImagePlugin

# The formats clipsearch reads, and the only ones Pillow is let to open: an EPS, PDF, PSD ... (uploaded, or
# named .jpg in a folder) is "not an image" and never reaches a decoder nobody asked for (EPS: Ghostscript).
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF")
FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP, TIFF or HEIC/HEIF"

ORIENTATION_TAG = 0x0112   # EXIF Orientation: 1 upright, 2-8 the mirrorings and rotations a viewer undoes
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
# Transparent pixels are shown on white: what a browser, a file manager and most viewers put behind a
# transparent picture, and what exporting one to JPEG gives, so the thumbnail, the hashes and the embedding
# match what the person saw (and a cutout's JPEG export is found as its copy). Black hid dark drawings.
BACKGROUND = (255, 255, 255)
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
# A model that resizes the short side and keeps the centre square never sees more than this many short
# sides of the long one, and at least MARGIN pixels beyond it each side (an upscaling filter's reach): the
# margin keeps resampling at the square's edges as it was; see fit_for_model.
KEPT_ASPECT = 2
MARGIN = 4
# Formats whose Pillow decoder turns the pixels by their orientation itself (and reports the turned size):
# TIFF. HEIC's decoder applies the file's own rotation and reports orientation 1.
TURNED_BY_DECODER = ("TIFF",)


def open_image(source: str | bytes | bytearray | BinaryIO, min_size: int | None = None) -> Image.Image:
    """Decode an image file (path, file object or bytes) to upright 8-bit RGB; see `decode`."""
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


def orientation(image: Image.Image) -> int:
    """The image's EXIF orientation, 1 to 8; 1 (upright) when it has none or a broken or unknown one."""
    try:
        value = int(image.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # EXIF is optional metadata: a broken block leaves the pixels as stored
        return 1
    return value if value in _TRANSPOSE else 1


def turned_by_clipsearch(image: Image.Image) -> bool:
    """Whether `decode` turns this opened image (its orientation is not 1 and its decoder does not turn it):
    what releases before orientation was applied stored sideways or mirrored."""
    return image.format not in TURNED_BY_DECODER and orientation(image) != 1


def upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened image as it is shown, its orientation applied (5 to 8 turn it a quarter)."""
    width, height = image.size
    return (height, width) if turned_by_clipsearch(image) and orientation(image) >= 5 else (width, height)


def decode(image: Image.Image, min_size: int | None = None) -> Image.Image:
    """Load an opened image as upright 8-bit RGB, as a viewer shows it.

    With `min_size`, a JPEG is decoded at the smallest DCT scale that still gives at least that many pixels
    per side (PIL's draft mode): the model resizes to its input size anyway, and this makes decoding several
    times faster. The draft is asked for before the orientation is applied (a square, so either way round).
    Raises PIL/OS errors for files that are not images.
    """
    turn = _TRANSPOSE.get(orientation(image)) if turned_by_clipsearch(image) else None
    if min_size and image.format == "JPEG":
        image.draft("RGB", (min_size, min_size))
    image.load()
    rgb = _rgb(image)
    return rgb.transpose(turn) if turn is not None else rgb


def _rgb(image: Image.Image) -> Image.Image:
    """A loaded image as 8-bit RGB: more bits scaled down, transparency on BACKGROUND."""
    if image.mode.startswith("I") or image.mode == "F":
        return _eight_bit(image).convert("RGB")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def _eight_bit(image: Image.Image) -> Image.Image:
    """A grey image of 16 or 32-bit integers or of floats as 8-bit grey, scaled as a viewer would: 16-bit
    samples by their bit depth (65535 is white; 12-bit data in 16 bits then looks dark, as in a viewer),
    32-bit integers by the smallest of 8 and 16 bits that holds them, else by their range; floats from 0..1
    when they lie within it, else by their range. Clipping instead made most such images one colour, so
    different pictures hashed alike."""
    values = np.asarray(image).astype(np.float64)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if image.mode == "F":
        scale_low, scale_high = (0.0, 1.0) if low >= 0 and high <= 1 else (low, high)
    elif image.mode.startswith("I;16") or (low >= 0 and 255 < high <= 65535):
        scale_low, scale_high = 0.0, 65535.0
    elif low >= 0 and high <= 255:
        scale_low, scale_high = 0.0, 255.0
    else:
        scale_low, scale_high = low, high
    span = scale_high - scale_low
    scaled = (values - scale_low) * (255 / span) if span > 0 else np.zeros_like(values)
    return Image.fromarray(np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).round().astype(np.uint8), "L")


def extreme_aspect(image: Image.Image) -> bool:
    """Whether the long side is more than KEPT_ASPECT times the short one (a stripe, a long panorama)."""
    return max(image.size) > KEPT_ASPECT * min(image.size)


def fit_for_model(image: Image.Image, transform: Callable[[Image.Image], Any]) -> Image.Image:
    """The decoded image cut, for a model whose preprocessing (`transform`) scales the short side to its
    input size and keeps the centre square (open_clip's CLIPs), to the centre KEPT_ASPECT short sides of its
    long side (and at least MARGIN pixels beyond the square each side): what the model keeps, with a margin,
    so its input is the same to within resampling, but its resize no longer makes a 1x20000 stripe
    224x4,480,000 pixels (3 GB). Other images, and models that see the whole picture (squashed or padded:
    their fixed output bounds the memory already), get it as it is."""
    if not extreme_aspect(image) or not _keeps_centre_only(transform):
        return image
    width, height = image.size
    short = min(width, height)
    long_side = max(width, height)
    kept = max(KEPT_ASPECT * short, short + 2 * MARGIN)
    if kept >= long_side:
        return image
    kept += (long_side - kept) % 2          # an even cut each side: the centre stays where the model puts it
    start = (long_side - kept) // 2
    box = (start, 0, start + kept, height) if width > height else (0, start, width, start + kept)
    return image.crop(box)


def _keeps_centre_only(transform: Callable[[Image.Image], Any]) -> bool:
    """Whether `transform` drops everything beyond the centre KEPT_ASPECT short sides of a tall image: a
    small grey one with red ends, whose output shows no red."""
    probe = Image.new("RGB", (16, 16 * (KEPT_ASPECT + 2)), (255, 0, 0))
    probe.paste((128, 128, 128), (0, 16, 16, 16 * (KEPT_ASPECT + 1)))
    out = transform(probe)
    pixels = np.asarray(out.convert("RGB") if isinstance(out, Image.Image) else out, dtype=np.float64)
    if pixels.ndim == 3 and pixels.shape[0] == 3 and pixels.shape[-1] != 3:   # channels first (a tensor)
        pixels = np.moveaxis(pixels, 0, -1)
    if pixels.ndim != 3 or not pixels.size:
        return False
    red = pixels[..., 0] - pixels[..., 1]
    return float(red.max()) < 0.25 * (float(np.ptp(pixels)) or 1.0)


# The text a photo carries about itself, as cameras, phones, Lightroom, Windows and shops' tools write it.
DESCRIPTION_TAG = 0x010E                      # EXIF ImageDescription (IFD0)
XP_TAGS = (0x9C9B, 0x9C9C, 0x9C9E, 0x9C9F)    # Windows XPTitle, XPComment, XPKeywords, XPSubject: UTF-16LE
EXIF_IFD, USER_COMMENT = 0x8769, 0x9286       # UserComment: an 8-byte charset name, then the text
IPTC_TEXT = ((2, 5), (2, 120), (2, 25))       # IPTC object name, caption, keywords
XMP_FIELDS = ("title", "description", "subject")   # dc:* of the XMP packet
MAX_XMP_BYTES = 1 << 20                       # an XMP packet read at most this far (some carry thumbnails)
MAX_META_CHARS = 65_536                       # one text kept at most this long
_XMP_FIELD = {name: re.compile(rf"<dc:{name}\b[^>]*>(.*?)</dc:{name}>", re.S) for name in XMP_FIELDS}
_XMP_ITEM = re.compile(r"<rdf:li\b[^>]*>([^<]*)</rdf:li>")


def metadata_text(image: Image.Image) -> list[str]:
    """The captions, titles and keywords an opened image holds (EXIF, IPTC, XMP), each text once, in that
    order. Metadata is optional: a broken block gives nothing and never fails the image."""
    texts: list[str] = []
    for read in (_exif_text, _iptc_text, _xmp_text):
        try:
            texts += read(image)
        except Exception:  # a broken block of one kind leaves the others
            continue
    kept = dict.fromkeys(t.strip()[:MAX_META_CHARS] for t in texts)
    return [t for t in kept if t]


def _exif_text(image: Image.Image) -> list[str]:
    exif = image.getexif()
    texts = [_text(exif.get(DESCRIPTION_TAG))]
    texts += [_text(exif.get(tag), "utf-16-le") for tag in XP_TAGS]
    texts.append(_user_comment(exif.get_ifd(EXIF_IFD).get(USER_COMMENT), getattr(exif, "endian", None) or "<"))
    return texts


def _user_comment(value: object, endian: str) -> str:
    """EXIF UserComment: its first 8 bytes name the charset (ASCII, UNICODE: UTF-16, JIS, or zeros: undefined,
    read as UTF-8). Writers disagree on UNICODE's byte order (the file's, or little-endian always): the
    zero high bytes of Latin text tell which, else the file's order."""
    if isinstance(value, str):
        return value
    if not isinstance(value, bytes):
        return ""
    code, body = value[:8].rstrip(b"\x00 ").upper(), value[8:]
    if code == b"UNICODE":
        even, odd = body[0::2].count(0), body[1::2].count(0)
        big = even > odd or (even == odd and endian == ">")
        return body.decode("utf-16-be" if big else "utf-16-le", "replace").strip("\x00 ")
    return _text(body, "shift_jis" if code == b"JIS" else "utf-8")


def _text(value: object, encoding: str = "utf-8") -> str:
    """An EXIF or IPTC value as text: bytes (or a tuple of byte values) decoded, NULs dropped."""
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        value = bytes(v & 0xFF for v in value)
    if isinstance(value, bytes):
        value = value.decode(encoding, "replace") if encoding != "utf-8" else _utf8_or_latin1(value)
    return value.replace("\x00", " ").strip() if isinstance(value, str) else ""


def _utf8_or_latin1(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:   # older cameras and IPTC writers: Latin-1
        return data.decode("latin-1")


def _iptc_text(image: Image.Image) -> list[str]:
    if not isinstance(image, ImageFile.ImageFile):
        return []
    info = IptcImagePlugin.getiptcinfo(image) or {}
    texts = []
    for key in IPTC_TEXT:
        value = info.get(key)
        texts += [_text(v) for v in (value if isinstance(value, list) else [value])]
    return texts


def _xmp_text(image: Image.Image) -> list[str]:
    """dc:title, dc:description and dc:subject of the XMP packet (JPEG/WebP `xmp`, PNG iTXt, TIFF tag 700),
    found by pattern rather than by an XML parser: the packet comes from the file, and only its rdf:li
    texts are wanted."""
    packet = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    if packet is None and hasattr(image, "tag_v2"):
        packet = image.tag_v2.get(700)
    if not packet:
        return []
    if isinstance(packet, str):
        packet = packet[:MAX_XMP_BYTES]
    else:
        packet = _utf8_or_latin1(bytes(packet[:MAX_XMP_BYTES]))
    return [html.unescape(item) for name in XMP_FIELDS for field in _XMP_FIELD[name].findall(packet)
            for item in _XMP_ITEM.findall(field)]
