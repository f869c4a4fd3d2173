"""Bulk loading: decode in worker processes, encode in batches, insert into `images`.

Safe to re-run: files already stored (same path, size and modification time)
are not even read, and a file whose content is already stored under any path is
skipped by its content id. A file that changed since it was loaded is read again
and its old row goes. Each batch is one INSERT, so an interrupted load keeps whole
batches and the next run loads the rest.
"""
from __future__ import annotations

import errno
import io
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

from clipsearch.errors import SourceError, StoreError
from clipsearch.images.decode import FORMAT_NAMES, decode, fit_for_model, orientation, read_image, upright_size
from clipsearch.images.files import MAX_FILE_BYTES, content_id
from clipsearch.images.hashes import HASH_COLUMNS, Hashes, image_hashes
from clipsearch.loader import pipeline
from clipsearch.loader.sources import Source, read_source
from clipsearch.models.model import ImageTextModel
from clipsearch.store.catalog import Catalog

MAX_PIXELS = 100_000_000


@dataclass
class LoadSummary:
    found: int = 0
    loaded: int = 0
    already_present: int = 0
    failed: int = 0
    ignored: int = 0
    replaced: int = 0
    outside: int = 0
    seconds: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.loaded / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        text = (f"loaded {self.loaded}, already present {self.already_present}, failed {self.failed} "
                f"({self.images_per_second:.1f} images/s, {self.seconds:.1f}s)")
        if self.replaced:
            text += f"; replaced {self.replaced} changed files"
        if self.ignored:
            text += f"; ignored {self.ignored} files without an image suffix"
        if self.outside:
            text += (f"; {self.outside} manifest paths are outside the manifest's folder "
                     "(--restrict-to-folder refuses such manifests)")
        return text


# -- worker side ----------------------------------------------------------------------------
_worker: dict = {}


def _setup_worker(pil_transform: Callable, min_size: int, max_bytes: int, max_pixels: int) -> None:
    _worker.update(transform=pil_transform, min_size=min_size, max_bytes=max_bytes, max_pixels=max_pixels)


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


def _read(path: str) -> tuple[bytes, os.stat_result] | str:
    """The bytes of the regular file at `path` and its stat, or why not. Opened without blocking (a FIFO or
    a device put in the file's place never hangs the read) and, unless the path was a link when looked at,
    without following one put there since; what was opened is then checked by fstat, not by a name that
    may have changed meanwhile."""
    try:
        link = os.path.islink(path)
    except ValueError:   # a NUL in the name
        return "no such file"
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if link else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "replaced by a link while it was read"
        return f"cannot read: {exc.strerror}"
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):   # a folder, a device or a pipe (which would block the read)
            return "not a regular file"
        if info.st_size == 0:
            return "empty file"
        if info.st_size > _worker["max_bytes"]:
            return f"file too large ({info.st_size} bytes > {_worker['max_bytes']})"
        data = f.read(info.st_size + 1)
    if len(data) != info.st_size:
        return "the file changed while it was read"
    return data, info


def prepare(path: str) -> dict:
    """Read, hash, check and decode one file; returns its row data or the reason it failed."""
    read = _read(path)
    if isinstance(read, str):
        return {"path": path, "error": read}
    data, info = read
    try:
        image = read_image(io.BytesIO(data))
        if image.width * image.height > _worker["max_pixels"]:
            return {"path": path, "error": f"image too large ({image.width}x{image.height} pixels > "
                                          f"{_worker['max_pixels']})"}
        width, height = upright_size(image)   # as shown: a phone photo's orientation applied
        fmt = image.format or ""
        turn = orientation(image)
        exif = _exif(image)
        decoded = decode(image, _worker["min_size"])
        hashes = _hashes(decoded)
        pixels = np.asarray(_worker["transform"](fit_for_model(decoded, _worker["transform"])))
    except UnidentifiedImageError:
        return {"path": path, "error": f"not an image (unknown or unsupported format; clipsearch reads {FORMAT_NAMES})"}
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return {"path": path, "error": f"cannot decode: {exc}"}
    return {"path": path, "id": content_id(data), "width": width, "height": height, "format": fmt,
            "file_size": info.st_size, "modified_at": datetime.fromtimestamp(info.st_mtime_ns // 1_000_000 / 1000),
            **exif._asdict(), "hashes": hashes, "orientation": turn, "pixels": pixels}


def _hashes(image: Image.Image) -> Hashes | None:
    """The perceptual hashes of the decoded image, before the model's resize; None if they cannot be
    computed: missing hashes are NULLs, never a failed load."""
    try:
        return image_hashes(image)
    except Exception:
        return None


# -- parent side ----------------------------------------------------------------------------
def _new_columns(catalog: Catalog, source: Source) -> dict[str, str]:
    """The manifest's columns the table lacks; an error for one it has with another type."""
    existing = catalog.images.columns()
    for name, ch_type in source.column_types.items():
        if name in existing and existing[name] != ch_type:
            raise SourceError(f"manifest column {name!r} looks like {ch_type}, but the table already has it "
                              f"as {existing[name]}")
    return {n: t for n, t in source.column_types.items() if n not in existing}


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
                column_types: dict[str, str], loaded_at_ms: int | None = None) -> pa.Table:
    """The rows as the `images` table's columns; `loaded_at_ms` (ms since the epoch) is their loaded_at,
    else the store's clock sets it."""
    import pyarrow as pa
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
    }
    arrow_types = {"Nullable(Int64)": pa.int64(), "Nullable(Float64)": pa.float64(), "Nullable(String)": pa.string()}
    for name, ch_type in column_types.items():
        columns[name] = pa.array([metadata[r["path"]].get(name) for r in rows], arrow_types[ch_type])
    if loaded_at_ms is not None:
        columns["loaded_at"] = pa.array([loaded_at_ms] * len(rows), pa.timestamp("ms"))
    return pa.table(columns)


def _record_errors(catalog: Catalog, results: list[dict], summary: LoadSummary,
                   report: Callable[[str, str], None]) -> None:
    errors = [(r["path"], r["error"]) for r in results if "error" in r]
    if errors:
        catalog.images.record_errors(errors)
        summary.errors += errors
        summary.failed += len(errors)
        for path, reason in errors:
            report(path, reason)


def _new_images(catalog: Catalog, results: list[dict]) -> list[dict]:
    """The decoded images whose content is neither stored nor earlier in this batch."""
    seen = catalog.images.existing_ids([r["id"] for r in results if "id" in r])
    new = []
    for r in results:
        if "id" in r and r["id"] not in seen:
            seen.add(r["id"])
            new.append(r)
    return new


def load(source: str, catalog: Catalog, model: ImageTextModel | Callable[[], ImageTextModel], batch_size: int = 64,
         workers: int | None = None, max_file_bytes: int = MAX_FILE_BYTES, max_pixels: int = MAX_PIXELS,
         progress: bool = True, report: Callable[[str, str], None] | None = None,
         restrict_to_folder: bool = False) -> LoadSummary:
    """Load every image of `source` that is not stored yet. `report(path, reason)` hears each failure.

    `model` is a model (clipsearch.models.model.ImageTextModel) or a function returning one: it is loaded only
    after the source and the manifest's columns have been checked, so a mistake there is reported at once.
    """
    start = time.perf_counter()
    src = read_source(source, restrict_to_folder)
    summary = LoadSummary(found=len(src.items), ignored=src.ignored, outside=len(src.outside))
    new_columns = _new_columns(catalog, src)
    if not src.items and not src.rejected:
        raise SourceError(f"{source}: no image files found")
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
    metadata = {item.path: item.metadata for item in src.items}

    known = catalog.images.known_files(src.root)
    todo = [item.path for item in src.items if not _unchanged(item.path, known.get(item.path))]
    summary.already_present = len(src.items) - len(todo)
    bar.update(summary.already_present)
    stamp = 0   # each batch's loaded_at, ms since the epoch, increasing

    def store(results: list[dict]) -> None:
        nonlocal stamp
        _record_errors(catalog, results, summary, report)
        good = _new_images(catalog, results)
        summary.already_present += sum(1 for r in results if "id" in r) - len(good)
        if good:
            vectors = clip.encode_prepared([r["pixels"] for r in good])
            stamp = max(stamp + 1, time.time_ns() // 1_000_000)
            try:
                catalog.images.insert(rows_table(good, vectors, clip.label, metadata, src.column_types, stamp))
            except StoreError:   # refused (e.g. by another vector length's index): if `reembed` switched the
                catalog.models.check_batch(clip.label, [r["id"] for r in good])   # store, say that instead
                raise
            catalog.models.check_batch(clip.label, [r["id"] for r in good])
            # Two loads of the same files at once (e.g. through one service) both find them new and both
            # insert (the rows collapse into one): the first to store an image loaded it, and for the
            # other it was already present, so the summaries add up to what the table holds.
            earlier = catalog.images.stored_before([r["id"] for r in good], stamp)
            summary.loaded += len(good) - len(earlier)
            summary.already_present += len(earlier)
        # A stored path read again gave new content: its old row goes (the new content is stored now).
        replaced = {r["path"]: r["id"] for r in results if "id" in r and r["path"] in known}
        summary.replaced += catalog.images.forget_replaced(replaced)

    try:
        pipeline.run(todo, prepare, store, batch_size=batch_size,
                     workers=(os.cpu_count() or 1) if workers is None else workers, setup=_setup_worker,
                     setup_args=(clip.prepare(), clip.image_size, max_file_bytes, max_pixels), bar=bar)
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
    return summary
