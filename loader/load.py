"""Bulk loading: decode in worker processes, encode in batches, insert into `images`.

Safe to re-run: files already stored (same path, size and modification time)
are not even read, and a file whose content is already stored under any path is
skipped by its content id. A file that changed since it was loaded is read again
and its old row goes. Each batch is one INSERT, so an interrupted load keeps whole
batches and the next run loads the rest.
"""
from __future__ import annotations

import base64
import errno
import hashlib
import io
import json
import os
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

import numpy as np
import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from clipsearch.errors import NoImages, SourceError, StoreError
from clipsearch.images.decode import (
    FORMAT_NAMES,
    decode,
    fit_for_model,
    metadata_text,
    orientation,
    read_image,
    upright_size,
)
from clipsearch.images.files import MAX_FILE_BYTES, MAX_VIDEO_BYTES, content_id
from clipsearch.images.hashes import HASH_COLUMNS, Hashes, image_hashes
from clipsearch.images.video import VIDEO_MISSING, VIDEO_SUFFIXES, VideoError, available, read_video
from clipsearch.loader import pipeline
from clipsearch.loader.paths import record_read, release
from clipsearch.loader.sources import BUILTIN_COLUMNS, Source, read_source
from clipsearch.loader.words import backfill_words
from clipsearch.models.model import ImageTextModel
from clipsearch.store.catalog import Catalog
from clipsearch.store.columns import base_type
from clipsearch.store.files import FileRecord
from clipsearch.store.images import WORDS_VERSION, path_words, title_words
from clipsearch.store.words import field_words

MAX_PIXELS = 100_000_000
THUMB_SIDE = 320        # a video moment's stored thumbnail (a photo's is made from its file when shown)
ATTACH_BATCH = 10_000   # paths per metadata update (one mutation each)


@dataclass
class LoadSummary:
    found: int = 0
    loaded: int = 0
    moments: int = 0         # rows of the videos loaded (one per moment kept)
    already_present: int = 0
    failed: int = 0
    ignored: int = 0
    replaced: int = 0
    attached: int = 0        # files already stored that a manifest gave new column values
    failed_before: int = 0   # files not read again: unchanged since their load failed
    outside: int = 0
    seconds: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)
    store_folders: list[str] = field(default_factory=list)    # skipped: clipsearch stores, thumbnail caches
    linked_folders: list[str] = field(default_factory=list)   # links to folders, not followed
    followed_links: list[str] = field(default_factory=list)   # links followed (--follow-links)
    widened: list[str] = field(default_factory=list)          # "price Int64 -> Float64": columns widened
    worded: int = 0          # images loaded before images had words, given theirs
    text_not_read: int = 0   # --ocr: images loaded whose text could not be read (timed out, crashed: load_errors)

    @property
    def images_per_second(self) -> float:
        return self.loaded / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        text = (f"loaded {self.loaded}, already present {self.already_present}, failed {self.failed} "
                f"({self.images_per_second:.1f} images/s, {self.seconds:.1f}s)")
        if self.moments:
            text += f"; {self.moments} moments of videos"
        if self.attached:
            text += f"; attached the manifest's columns to {self.attached} files already stored"
        if self.failed_before:
            text += f"; {self.failed_before} files unchanged since they failed (see load_errors)"
        if self.replaced:
            text += f"; replaced {self.replaced} changed files"
        if self.ignored:
            text += f"; ignored {self.ignored} files without an image or video suffix"
        if self.outside:
            text += (f"; {self.outside} manifest paths are outside the manifest's folder "
                     "(--restrict-to-folder refuses such manifests)")
        if self.store_folders:
            text += f"; skipped {_named(self.store_folders)} (clipsearch stores or thumbnail caches: not photos)"
        if self.linked_folders:
            text += (f"; did not follow {_named(self.linked_folders, 'linked folder')} (load the folders they "
                     "point to, or list their files in a manifest)")
        if self.followed_links:
            text += (f"; followed {_named(self.followed_links, 'link')}: stored under the paths of the files "
                     "they point to")
        if self.worded:
            text += f"; gave {self.worded} images loaded before words their words"
        if self.widened:
            text += f"; widened manifest columns to hold the new values: {', '.join(self.widened)}"
        if self.text_not_read:
            text += f"; the text of {self.text_not_read} images could not be read (see load_errors)"
        return text


def _named(paths: list[str], kind: str = "store folder", shown: int = 3) -> str:
    """'2 store folders (a, b)', with at most `shown` of them named."""
    names = ", ".join(paths[:shown]) + (f" and {len(paths) - shown} more" if len(paths) > shown else "")
    return f"{len(paths)} {kind}{'s' if len(paths) != 1 else ''} ({names})"


# -- worker side ----------------------------------------------------------------------------
_worker: dict = {}


def _setup_worker(pil_transform: Callable, min_size: int, max_bytes: int, max_pixels: int, ocr: bool = False) -> None:
    _worker.update(transform=pil_transform, min_size=min_size, max_bytes=max_bytes, max_pixels=max_pixels, ocr=ocr)
    if ocr:   # the OCR engine, once per worker
        from clipsearch.images import ocr as reader
        reader.start()


# What taken_at (DateTime64) holds: a date outside it is NULL there, its EXIF text kept in exif_date.
TAKEN_AT_YEARS = (1900, 2299)


class Exif(NamedTuple):
    """What the loader keeps of an image's EXIF; None or '' where absent."""
    taken_at: datetime | None
    exif_date: str              # the EXIF date as written, when taken_at cannot hold it
    camera: str
    latitude: float | None
    longitude: float | None


def _exif(image: Image.Image) -> Exif:
    """The image's EXIF date, camera and position."""
    try:
        exif = image.getexif()
    except Exception:  # EXIF is optional metadata: a broken block must not fail the image
        return Exif(None, "", "", None, None)
    try:
        raw = exif.get_ifd(0x8769).get(36867) or exif.get(306)  # DateTimeOriginal, else DateTime
        camera = " ".join(str(exif.get(tag, "")).strip("\x00 ") for tag in (271, 272)).strip()  # Make Model
    except Exception:
        raw, camera = None, ""
    taken, written = _taken_at(raw)
    return Exif(taken, written, camera, *_gps(exif))


def _taken_at(raw: object) -> tuple[datetime | None, str]:
    """(taken_at, exif_date) from an EXIF date: the date when taken_at can hold it, else its text (a date
    before 1900 or after 2299, or one that is no date at all; not the all-zero "no date" of unset clocks)."""
    text = str(raw).strip("\x00 ") if raw is not None else ""
    if not text.strip("0: "):
        return None, ""
    try:
        taken = datetime.strptime(text, "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None, text[:64]
    if not TAKEN_AT_YEARS[0] <= taken.year <= TAKEN_AT_YEARS[1]:
        return None, text
    return taken, ""


def _gps(exif: Image.Exif) -> tuple[float | None, float | None]:
    """Latitude and longitude in degrees from the GPS IFD (degrees, minutes, seconds and N/S, E/W), or None."""
    try:
        gps = exif.get_ifd(0x8825)  # GPSInfo
        degrees = [sum(float(part) / 60 ** i for i, part in enumerate(gps[tag])) for tag in (2, 4)]
        lat, lon = (-d if str(gps.get(ref, "")).strip("\x00 ").upper() in ("S", "W") else d
                    for d, ref in zip(degrees, (1, 3), strict=True))
    except Exception:  # no GPS block, or a broken one
        return None, None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):  # also refuses NaN (a 0/0 rational)
        return None, None
    return lat, lon


def _read(path: str) -> tuple[bytes, os.stat_result] | dict:
    """The bytes of the regular file at `path` and its stat, or why not (`_open`)."""
    opened = _open(path)
    if isinstance(opened, dict):
        return opened
    f, info = opened
    with f:
        if info.st_size == 0:
            return {"error": "empty file", **_version(info)}
        if info.st_size > _worker["max_bytes"]:
            return {"error": f"file too large ({info.st_size} bytes > {_worker['max_bytes']})", **_version(info)}
        data = f.read(info.st_size + 1)
    if len(data) != info.st_size:
        return {"error": "the file changed while it was read"}
    return data, info


def _open(path: str) -> tuple[io.BufferedReader, os.stat_result] | dict:
    """The regular file at `path`, open, and its stat, or why not. Opened without blocking (a FIFO or
    a device put in the file's place never hangs the read) and, unless the path was a link when looked at,
    without following one put there since; what was opened is then checked by fstat, not by a name that
    may have changed meanwhile. A failure is {"error": why}, with the file's version (size, time) when it
    is the content's fault (empty, too large), so it is recorded once per version and not read again."""
    try:
        link = os.path.islink(path)
    except ValueError:   # a NUL in the name
        return {"error": "no such file"}
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if link else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return {"error": "no such file"}
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return {"error": "replaced by a link while it was read"}
        return {"error": f"cannot read: {exc.strerror}"}
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):   # a folder (which fdopen refuses), a device or a pipe (which would block)
        os.close(fd)
        return {"error": "not a regular file"}
    return os.fdopen(fd, "rb"), info


def prepare(path: str) -> dict:
    """Read, hash, check and decode one file; returns its row data or the reason it failed (with the file's
    version when the failure is its content's)."""
    if os.path.splitext(path)[1].lower() in VIDEO_SUFFIXES:
        return prepare_video(path)
    read = _read(path)
    if isinstance(read, dict):
        return {"path": path, **read}
    data, info = read
    version = _version(info)
    try:
        image = read_image(io.BytesIO(data))
        if image.width * image.height > _worker["max_pixels"]:
            return {"path": path, "error": f"image too large ({image.width}x{image.height} pixels > "
                                          f"{_worker['max_pixels']})", **version}
        width, height = upright_size(image)   # as shown: a phone photo's orientation applied
        fmt = image.format or ""
        turn = orientation(image)
        exif = _exif(image)
        meta = field_words(metadata_text(image))   # from the file in hand: no second read
        decoded = decode(image, _worker["min_size"])
        hashes = _hashes(decoded)
        pixels = np.asarray(_worker["transform"](fit_for_model(decoded, _worker["transform"])))
    except UnidentifiedImageError:
        return {"path": path, "error": f"not an image (unknown or unsupported format; clipsearch reads {FORMAT_NAMES})",
                **version}
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return {"path": path, "error": f"cannot decode: {exc}", **version}
    return {"path": path, "id": content_id(data), "width": width, "height": height, "format": fmt,
            "file_size": info.st_size, "modified_at": datetime.fromtimestamp(info.st_mtime_ns // 1_000_000 / 1000),
            **exif._asdict(), "hashes": hashes, "orientation": turn, "words_meta": meta, **path_words(path),
            "pixels": pixels, **(read_text(decoded, data, (width, height)) if _worker.get("ocr") else {})}


def prepare_video(path: str) -> dict:
    """Read, hash and decode one video: its row data with one frame per moment kept ("frames": id, start,
    end, pixels, hashes, thumbnail; clipsearch/images/video.py), or the reason it failed."""
    if not available():
        return {"path": path, "error": VIDEO_MISSING}
    opened = _open(path)
    if isinstance(opened, dict):
        return {"path": path, **opened}
    f, info = opened
    version = _version(info)
    with f:
        if info.st_size == 0:
            return {"path": path, "error": "empty file", **version}
        if info.st_size > MAX_VIDEO_BYTES:
            return {"path": path, "error": f"file too large ({info.st_size} bytes > {MAX_VIDEO_BYTES})", **version}
        digest, read = hashlib.sha256(), 0
        while chunk := f.read(1 << 20):   # the id of its bytes, never all of them in memory
            digest.update(chunk)
            read += len(chunk)
        if read != info.st_size:
            return {"path": path, "error": "the file changed while it was read"}
        f.seek(0)
        try:
            video, moments = read_video(f, _worker["max_pixels"], keep=_moment_frame)
        except VideoError as exc:
            return {"path": path, "error": str(exc), **version}
    video_id = digest.hexdigest()[:32]
    frames = [{"id": content_id(f"{video_id}:{m.start:.3f}".encode()), "start": m.start, "end": m.end, **m.image}
              for m in moments]
    return {"path": path, "id": video_id, "media": "video", "frames": frames, "width": video.width,
            "height": video.height, "format": os.path.splitext(path)[1][1:].upper(), "codec": video.codec,
            "duration": video.duration, "file_size": info.st_size,
            "modified_at": datetime.fromtimestamp(info.st_mtime_ns // 1_000_000 / 1000), "taken_at": video.taken_at,
            "exif_date": "", "camera": video.camera, "latitude": video.latitude, "longitude": video.longitude,
            "orientation": 1, "words_meta": field_words(video.texts), **path_words(path)}


def _moment_frame(image: Image.Image) -> dict:
    """What a video's moment keeps of its frame, made as it is decoded: the model's pixels, the perceptual
    hashes and a THUMB_SIDE JPEG (base64: what the page shows and `reembed` re-embeds)."""
    transform = _worker["transform"]
    thumb = image.copy()
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
    jpeg = io.BytesIO()
    thumb.save(jpeg, "JPEG", quality=80)
    return {"pixels": np.asarray(transform(fit_for_model(image, transform))), "hashes": _hashes(image),
            "thumbnail": base64.b64encode(jpeg.getvalue()).decode()}


def moment_rows(results: list[dict]) -> list[dict]:
    """The rows of decoded files: an image's one, a video's one per moment (its frame's id, times, hashes,
    pixels and thumbnail, the video's id in `video`)."""
    rows = []
    for r in results:
        if "frames" not in r:
            rows.append(r)
            continue
        video = {k: v for k, v in r.items() if k != "frames"}
        rows += [{**video, **frame, "video": r["id"]} for frame in r["frames"]]
    return rows


def read_text(decoded: Image.Image, data: bytes, size: tuple[int, int]) -> dict:
    """{"words_ocr": the words of the text in the image} or {"ocr_error": why not}. The loader's pixels
    are read, unless they were decoded reduced for the model (a JPEG's draft): then the bytes already in
    memory are decoded again at a scale the OCR can read."""
    from clipsearch.images import ocr
    try:
        image = decoded if decoded.size == size else decode(read_image(io.BytesIO(data)), ocr.MIN_SIDE)
        return {"words_ocr": ocr.read_words(image)}
    except (ocr.OcrFailed, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return {"ocr_error": str(exc)}


def _version(info: os.stat_result) -> dict:
    return {"file_size": info.st_size, "mtime_ms": info.st_mtime_ns // 1_000_000}


def _hashes(image: Image.Image) -> Hashes | None:
    """The perceptual hashes of the decoded image, before the model's resize; None if they cannot be
    computed: missing hashes are NULLs, never a failed load."""
    try:
        return image_hashes(image)
    except Exception:
        return None


# -- parent side ----------------------------------------------------------------------------
MANIFEST_TYPES = ("Nullable(Int64)", "Nullable(Float64)", "Nullable(String)")   # narrowest first


def _new_columns(catalog: Catalog, source: Source, summary: LoadSummary | None = None) -> dict[str, str]:
    """The manifest's columns the table lacks, and those it has too narrow for the manifest's values, with
    the types to add or widen them to (noted in `summary.widened`); the source's values are converted to
    the types of the columns they go into. A column is never narrowed: a Float64 one given integers stores
    them as floats, a String one given numbers stores their text. Int64 and Float64 meet as Float64 while
    every integer on either side is exactly a float64, else as String."""
    existing = catalog.images.columns()
    types: dict[str, str] = {}
    for name, wanted in source.column_types.items():
        have = existing.get(name, wanted)
        if have not in MANIFEST_TYPES:
            raise SourceError(f"manifest column {name!r} looks like {wanted}, but the table already has it as "
                              f"{have}, which a manifest does not fill; rename the manifest's column")
        kind = max(have, wanted, key=MANIFEST_TYPES.index)
        if kind == "Nullable(Float64)" and "Nullable(Int64)" in (have, wanted) and (
                name in source.big_integers if wanted == "Nullable(Int64)"
                else catalog.images.integers_beyond_float(name)):
            kind = "Nullable(String)"
        types[name] = kind
    source.retype(types)
    widened = {n: t for n, t in types.items() if n in existing and existing[n] != t}
    if summary is not None:
        summary.widened += [f"{n} {base_type(existing[n])} -> {base_type(t)}" for n, t in widened.items()]
    return {n: t for n, t in types.items() if n not in existing or n in widened}


def _manifest_columns(catalog: Catalog) -> list[str]:
    return [c for c, t in catalog.images.columns().items() if c not in BUILTIN_COLUMNS and t in MANIFEST_TYPES]


def _check_text_columns(catalog: Catalog, source: Source, text_columns: list[str] | None) -> None:
    """`--text-columns` must name manifest columns (of this manifest or stored before)."""
    if text_columns is None:
        return
    known = set(source.column_types) | set(_manifest_columns(catalog))
    unknown = [c for c in text_columns if c not in known]
    if unknown:
        raise SourceError(f"--text-columns names {', '.join(map(repr, unknown))}, which "
                          f"{'is' if len(unknown) == 1 else 'are'} not a manifest column "
                          f"(the manifest's columns: {', '.join(sorted(known)) or 'none'})")


def _unchanged(path: str, stored: tuple[int, int | None] | None) -> bool:
    """Whether the file at `path` is the one stored: same size and modification time (ms) as recorded
    (size alone for rows from before the time was recorded)."""
    if stored is None:
        return False
    try:
        info = os.stat(path)
    except OSError:
        return False
    size, mtime_ms = stored
    return info.st_size == size and (mtime_ms is None or info.st_mtime_ns // 1_000_000 == mtime_ms)


def rows_table(rows: list[dict], vectors: np.ndarray, model_label: str, metadata: dict[str, dict],
                column_types: dict[str, str], loaded_at_ms: int | None = None,
                text_columns: list[str] | None = None) -> pa.Table:
    """The rows as the `images` table's columns; `loaded_at_ms` (ms since the epoch) is their loaded_at,
    else the store's clock sets it. Title words come from `text_columns` (ImageTable.text_columns; None:
    the text ones of `column_types`)."""
    import pyarrow as pa
    if text_columns is None:
        text_columns = [c for c, t in column_types.items() if base_type(t) == "String"]
    named = [r if "words_name" in r else path_words(r["path"]) for r in rows]   # the loader's workers made them
    words = pa.list_(pa.string())
    columns = {
        "id": pa.array([r["id"] for r in rows], pa.string()),
        "path": pa.array([r["path"] for r in rows], pa.string()),
        "width": pa.array([r["width"] for r in rows], pa.uint32()),
        "height": pa.array([r["height"] for r in rows], pa.uint32()),
        "format": pa.array([r["format"] for r in rows], pa.string()),
        "file_size": pa.array([r["file_size"] for r in rows], pa.uint64()),
        "modified_at": pa.array([r.get("modified_at") for r in rows], pa.timestamp("ms")),
        "taken_at": pa.array([r["taken_at"] for r in rows], pa.timestamp("s")),
        "exif_date": pa.array([r.get("exif_date", "") for r in rows], pa.string()),
        "orientation": pa.array([r.get("orientation", 0) for r in rows], pa.uint8()),
        "camera": pa.array([r["camera"] for r in rows], pa.string()),
        "latitude": pa.array([r.get("latitude") for r in rows], pa.float64()),
        "longitude": pa.array([r.get("longitude") for r in rows], pa.float64()),
        **{name: pa.array([getattr(r["hashes"], name) if r.get("hashes") else None for r in rows], pa.uint64())
           for name in HASH_COLUMNS},
        "model": pa.array([model_label] * len(rows), pa.string()),
        "embedding": pa.ListArray.from_arrays(
            pa.array(np.arange(0, vectors.size + 1, vectors.shape[1], dtype=np.int32)),
            pa.array(vectors.astype(np.float32).ravel())),
        "words_name": pa.array([n["words_name"] for n in named], words),
        "words_prefixes": pa.array([n["words_prefixes"] for n in named], words),
        "words_title": pa.array([title_words(metadata.get(r["path"], {}), text_columns) for r in rows], words),
        "words_meta": pa.array([r.get("words_meta", []) for r in rows], words),
        "words_version": pa.array([WORDS_VERSION] * len(rows), pa.uint8()),
        "media": pa.array([r.get("media", "image") for r in rows], pa.string()),
        "video": pa.array([r.get("video", "") for r in rows], pa.string()),
        "start": pa.array([r.get("start") for r in rows], pa.float64()),
        "end": pa.array([r.get("end") for r in rows], pa.float64()),
        "duration": pa.array([r.get("duration") for r in rows], pa.float64()),
        "codec": pa.array([r.get("codec", "") for r in rows], pa.string()),
        "thumbnail": pa.array([r.get("thumbnail", "") for r in rows], pa.string()),
    }
    for name, ch_type in column_types.items():
        columns[name] = pa.array([_as_type(metadata[r["path"]].get(name), ch_type) for r in rows],
                                 _arrow_type(ch_type))
    if loaded_at_ms is not None:
        columns["loaded_at"] = pa.array([loaded_at_ms] * len(rows), pa.timestamp("ms"))
    return pa.table(columns)


def _arrow_type(ch_type: str) -> pa.DataType:
    kind = base_type(ch_type)
    return pa.int64() if kind.startswith("Int") else pa.float64() if kind.startswith("Float") else pa.string()


def _as_type(value: object, ch_type: str) -> object:
    """A metadata value as the column's type holds it: a number kept for a text column as its text."""
    kind = base_type(ch_type)
    if value is None or kind.startswith(("Int", "Float")):
        return value
    return value if isinstance(value, str) else json.dumps(value)


def _ocr_label() -> str:
    from clipsearch.images.ocr import engine_label
    return engine_label()


def _with_text(catalog: Catalog, rows: pa.Table, good: list[dict], ocr_label: str, summary: LoadSummary) -> pa.Table:
    """`rows` with the words read in each image and the engine that read them; an image whose text could not
    be read is loaded without (ocr_engine '', so `clipsearch ocr` tries again) and is one row in load_errors."""
    failed = [(r["path"], r["ocr_error"]) for r in good if "ocr_error" in r]
    if failed:
        catalog.images.record_errors(failed)
        summary.text_not_read += len(failed)
    rows = rows.append_column("words_ocr", pa.array([r.get("words_ocr", []) for r in good], pa.list_(pa.string())))
    return rows.append_column("ocr_engine", pa.array([ocr_label if "words_ocr" in r else "" for r in good]))


def _record_errors(catalog: Catalog, results: list[dict], summary: LoadSummary,
                   report: Callable[[str, str], None]) -> None:
    """Record and report the batch's failures; a file version already recorded with the same reason is
    counted as failed, not recorded or reported again (a watched folder's bad file, pass after pass)."""
    failures = [r for r in results if "error" in r]
    if not failures:
        return
    errors = [(r["path"], r["error"]) for r in failures]
    versions = [(r["file_size"], r["mtime_ms"]) if r.get("mtime_ms") is not None else None for r in failures]
    summary.errors += errors
    summary.failed += len(errors)
    for path, reason in catalog.images.record_errors(errors, versions):
        report(path, reason)


_MISSING = object()


def _attach(catalog: Catalog, attach: dict[str, dict], known: dict[str, FileRecord]) -> int:
    """Put a manifest's columns on the rows of files already stored (path -> the manifest's values), and
    keep them as those paths' metadata; returns how many paths got new values."""
    paths = list(attach)
    for start in range(0, len(paths), ATTACH_BATCH):
        chunk = paths[start:start + ATTACH_BATCH]
        values = {known[p].id: attach[p] for p in chunk}
        _set_metadata(catalog, values)
        catalog.files.record({p: known[p]._replace(metadata={**known[p].metadata, **attach[p]}) for p in chunk})
    return len(paths)


def _set_metadata(catalog: Catalog, values: dict[str, dict]) -> None:
    columns = catalog.images.columns()
    catalog.images.set_metadata({i: {c: _as_type(v, columns[c]) for c, v in m.items() if c in columns}
                                 for i, m in values.items()})


def _path_metadata(catalog: Catalog, read: list[dict], known: dict[str, FileRecord],
                   given: dict[str, dict]) -> dict[str, dict]:
    """path -> the metadata of each path read: what was attached to the path before (kept through an edit
    in place and an absence), with the manifest's values now given over it. For a path read before
    paths kept their own metadata, its former content's row supplies it."""
    older = [known[r["path"]].id for r in read if r["path"] in known and not known[r["path"]].metadata]
    from_rows = catalog.images.metadata_of(older, BUILTIN_COLUMNS)
    out = {}
    for r in read:
        record = known.get(r["path"])
        before = (record.metadata or from_rows.get(record.id, {})) if record else {}
        out[r["path"]] = {**before, **given.get(r["path"], {})}
    return out


def _new_images(catalog: Catalog, results: list[dict]) -> list[dict]:
    """The decoded images whose content is neither stored nor earlier in this batch."""
    seen = catalog.images.existing_ids([r["id"] for r in results if "id" in r and "frames" not in r])
    seen |= catalog.images.existing_videos([r["id"] for r in results if "frames" in r])
    new = []
    for r in results:
        if "id" in r and r["id"] not in seen:
            seen.add(r["id"])
            new.append(r)
    return new


def load(source: str, catalog: Catalog, model: ImageTextModel | Callable[[], ImageTextModel], batch_size: int = 64,
         workers: int | None = None, max_file_bytes: int = MAX_FILE_BYTES, max_pixels: int = MAX_PIXELS,
         progress: bool = True, report: Callable[[str, str], None] | None = None,
         restrict_to_folder: bool = False, retry_failed: bool = True, follow_links: bool = False,
         text_columns: list[str] | None = None, ocr: bool = False) -> LoadSummary:
    """Load every image of `source` that is not stored yet. `report(path, reason)` hears each failure.

    `model` is a model (clipsearch.models.model.ImageTextModel) or a function returning one: it is loaded only
    after the source and the manifest's columns have been checked, so a mistake there is reported at once.
    With `retry_failed=False` (a watched folder's passes) a file whose load failed is not read again until it
    changes (size or time). With `follow_links`, links out of `source` load the files they point to
    (clipsearch.loader.sources). `text_columns` names the manifest columns whose values are the images'
    title words (default: every text column; the choice is kept for later loads). With `ocr`, the text in
    each image loaded is read into words_ocr (clipsearch.images.ocr; OcrMissing at once without the extra).
    """
    start = time.perf_counter()
    ocr_label = _ocr_label() if ocr else ""
    src = read_source(source, restrict_to_folder, follow_links)
    summary = LoadSummary(found=len(src.items), ignored=src.ignored, outside=len(src.outside),
                          store_folders=src.store_folders, linked_folders=src.linked_folders,
                          followed_links=src.followed)
    new_columns = _new_columns(catalog, src, summary)
    _check_text_columns(catalog, src, text_columns)
    if not src.items and not src.rejected:
        raise NoImages(f"{source}: no image files found")
    bar = pipeline.progress_bar(len(src.items), "loading", progress)
    report = report or (lambda path, reason: bar.write(f"skipped {path}: {reason}", file=sys.stderr))
    _record_errors(catalog, [{"path": p, "error": e} for p, e in src.rejected], summary, report)
    if not src.items:
        bar.close()
        summary.seconds = time.perf_counter() - start
        return summary
    clip = model if isinstance(model, ImageTextModel) else model()
    catalog.models.check(clip.label)
    catalog.images.add_columns(new_columns)
    if text_columns is not None:
        catalog.images.choose_text_columns(text_columns, _manifest_columns(catalog))
    titled = catalog.images.text_columns()
    metadata = {item.path: item.metadata for item in src.items}

    known = catalog.files.under(src.root)
    failed_before = {} if retry_failed else catalog.images.failed_files(src.root)
    todo, attach = [], {}
    for item in src.items:
        record = known.get(item.path)
        if record and record.present and _unchanged(item.path, (record.file_size, record.mtime_ms)):
            if any(record.metadata.get(c, _MISSING) != v for c, v in item.metadata.items()):
                attach[item.path] = item.metadata   # a manifest given for files already stored
        elif item.path in failed_before and _unchanged(item.path, failed_before[item.path]):
            summary.failed_before += 1
        else:
            todo.append(item.path)
    summary.already_present = len(src.items) - len(todo) - summary.failed_before
    bar.update(summary.already_present + summary.failed_before)
    summary.attached = _attach(catalog, attach, known)
    stamp = 0   # each batch's loaded_at, ms since the epoch, increasing

    def store(results: list[dict]) -> None:
        nonlocal stamp
        _record_errors(catalog, results, summary, report)
        read = [r for r in results if "id" in r]
        attached = _path_metadata(catalog, read, known, metadata)   # before release: it reads former rows
        summary.replaced += release(catalog, read, known)
        good = _new_images(catalog, results)
        summary.already_present += len(read) - len(good)
        if good:
            # A video is all its moments' rows in this one INSERT: a load killed meanwhile stored all or none
            # of them, and the next finds the video stored by its id (`video`) or loads it whole.
            kept = moment_rows(good)
            vectors = np.concatenate([clip.encode_prepared([r["pixels"] for r in kept[i:i + batch_size]])
                                      for i in range(0, len(kept), batch_size)]) if kept else np.zeros((0, 1))
            stamp = max(stamp + 1, time.time_ns() // 1_000_000)
            columns = catalog.images.columns()
            # a path's metadata may name a column dropped since: the others still go in
            types = {c: columns[c] for c in dict.fromkeys(c for r in good for c in attached[r["path"]]) if c in columns}
            rows = rows_table(kept, vectors, clip.label, attached, types, stamp, titled)
            if ocr_label:
                rows = _with_text(catalog, rows, kept, ocr_label, summary)
            try:
                catalog.images.insert(rows)
            except StoreError:   # refused (e.g. by another vector length's index): if `reembed` switched the
                catalog.models.check_batch(clip.label, [r["id"] for r in kept])   # store, say that instead
                raise
            catalog.models.check_batch(clip.label, [r["id"] for r in kept])
            summary.moments += sum(len(r["frames"]) for r in good if "frames" in r)
            # Two loads of the same files at once (e.g. through one service) both find them new and both
            # insert (the rows collapse into one): the first to store an image loaded it, and for the
            # other it was already present, so the summaries add up to what the table holds.
            earlier = catalog.images.stored_before([r["id"] for r in good if "frames" not in r], stamp)
            earlier |= catalog.images.stored_before([r["id"] for r in good if "frames" in r], stamp, videos=True)
            summary.loaded += len(good) - len(earlier)
            summary.already_present += len(earlier)
        # A manifest's columns for content already stored (under this path or another) go on its row.
        new_ids = {r["id"] for r in good}
        given = {r["id"]: metadata[r["path"]] for r in read if r["id"] not in new_ids and metadata[r["path"]]}
        if given:
            _set_metadata(catalog, given)
        record_read(catalog, read, attached)

    workers = (os.cpu_count() or 1) if workers is None else workers
    setup_args = (clip.prepare(), clip.image_size, max_file_bytes, max_pixels, bool(ocr_label))
    videos = [p for p in todo if os.path.splitext(p)[1].lower() in VIDEO_SUFFIXES]
    images = [p for p in todo if os.path.splitext(p)[1].lower() not in VIDEO_SUFFIXES]
    try:
        pipeline.run(images, prepare, store, batch_size=batch_size, workers=workers, setup=_setup_worker,
                     setup_args=setup_args, bar=bar)
        # videos one a batch (one INSERT each): each brings up to MAX_MOMENTS frames' pixels, so a few videos
        # (PREFETCH_BATCHES and the one being stored) are in memory at once
        pipeline.run(videos, prepare, store, batch_size=1, workers=workers, setup=_setup_worker,
                     setup_args=setup_args, bar=bar)
        bar.close()
        # rows of this folder loaded before words (migration 007): their words now, their files read once
        summary.worded = backfill_words(catalog, workers=workers, progress=progress, root=src.root).read
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
    return summary
