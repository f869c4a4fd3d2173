"""`clipsearch reembed`: give every stored image a new model's vector while the store keeps serving with the
model it has, then switch the store to the new model in one step.

1. Vectors. Each stored image's file is read back (only while it is still the file that was loaded: its
   bytes hash to the row's id), decoded in worker processes and encoded by the new model, a batch at a time,
   into the `embeddings` table. Interrupted, a re-run goes on with the images that have no vector yet.
   Files gone or changed since they were loaded are reported and recorded in `load_errors`.
2. Switch. When every image has its vector (or with `drop_missing`, leaving out those that cannot have one),
   `images_switch` is made beside `images`: the same rows, columns and filter columns with the new vectors,
   and the vector index rebuilt for them as the rows go in. `EXCHANGE TABLES` then puts it in the place of
   `images` in one atomic step: every query reads the one table or the other, never a mix.
3. Catch-up. Images loaded during the switch (into the old table, by the old model) get the new model's
   vectors too; then the old table goes (its vectors copied to `embeddings` first with `keep`).

Everything that holds a model follows the switch (clipsearch.models.store_model.StoreModel): the service, its
ClickHouse port, clipTextEmbedding() and every command without --model use the new one from then on.
"""
from __future__ import annotations

import base64
import io
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

from clipsearch.errors import ClipsearchError, FileChanged, NotFound, QueryError
from clipsearch.images.decode import decode, fit_for_model, read_image
from clipsearch.images.files import read_loaded_file
from clipsearch.loader import pipeline
from clipsearch.loader.load import MAX_PIXELS
from clipsearch.models.model import ImageTextModel
from clipsearch.store.catalog import Catalog
from clipsearch.store.images import StoredFile
from clipsearch.store.switch import SWITCH_TABLE

PAGE = 4096   # stored rows read at a time to find those without a vector


@dataclass
class ReembedSummary:
    model: str = ""
    previous: str = ""
    total: int = 0            # images in the store
    embedded: int = 0         # given the new model's vector by this run
    already: int = 0          # had it from an earlier, interrupted run
    gone: int = 0             # file no longer at its path
    changed: int = 0          # file no longer the one loaded
    undecodable: int = 0
    switched: bool = False
    dropped: int = 0          # rows the switch left out (drop_missing)
    kept: bool = False        # the previous model's vectors kept in `embeddings`
    already_active: bool = False  # the store used the model before this run
    seconds: float = 0.0
    switch_seconds: float = 0.0   # of `seconds`: building the switched table, the exchange, the catch-up
    errors: list[tuple[str, str]] = field(default_factory=list)
    failed_ids: set[str] = field(default_factory=set)

    @property
    def missing(self) -> int:
        return self.gone + self.changed + self.undecodable

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        if self.already_active:
            return f"the store already uses {self.model} ({self.total} images)"
        text = (f"re-embedded {self.embedded}, already done {self.already}, failed {self.missing} "
                f"({self.images_per_second:.1f} images/s, {self.seconds:.1f}s)")
        if self.missing:
            text += (f"; without a new vector: {self.gone} files gone, {self.changed} changed since they were "
                     f"loaded, {self.undecodable} no longer decode (listed in load_errors)")
        if self.switched:
            text += f"; the store now uses {self.model}"
            text += (f" (left out {self.dropped} image{'s' if self.dropped != 1 else ''} without a new vector)"
                     if self.dropped else "")
            text += f"; {self.previous}'s vectors kept in `embeddings`" if self.kept else \
                f"; {self.previous}'s vectors dropped (--keep keeps them, to compare the two models in SQL)"
        elif self.missing:
            text += ("; not switched: restore those files, or load them again and re-run, or re-run with "
                     "--drop-missing to switch without those images")
        return text


# -- worker side ----------------------------------------------------------------------------
_worker: dict = {}


def _setup_worker(pil_transform: Callable, min_size: int) -> None:
    _worker.update(transform=pil_transform, min_size=min_size)


def _prepare_stored(row: StoredFile) -> dict:
    """A stored image's pixels for the model, read only while its file is the one loaded, or why not. A video's
    moment is re-embedded from its stored frame (THUMB_SIDE pixels: what models see), not the video again."""
    image_id, path, size, thumbnail = row
    try:
        data = base64.b64decode(thumbnail) if thumbnail else read_loaded_file(path, image_id, size)
    except NotFound:
        return {"id": image_id, "path": path, "outcome": "gone", "error": "file gone since it was loaded"}
    except FileChanged:
        return {"id": image_id, "path": path, "outcome": "changed", "error": "file changed since it was loaded"}
    try:
        image = read_image(io.BytesIO(data))
        if image.size[0] * image.size[1] > MAX_PIXELS:
            raise ValueError("too many pixels")
        decoded = decode(image, _worker["min_size"])   # upright, as the loader stores it
        pixels = _worker["transform"](fit_for_model(decoded, _worker["transform"]))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return {"id": image_id, "path": path, "outcome": "undecodable", "error": f"cannot decode: {exc}"}
    return {"id": image_id, "path": path, "pixels": pixels}


# -- parent side ----------------------------------------------------------------------------
def _pages(catalog: Catalog, model: str) -> Iterator[StoredFile]:
    """The stored images without a vector of `model`, read a page at a time, by id."""
    after = ""
    while page := catalog.switch.without_vectors(model, after, PAGE):
        after = page[-1].id
        yield from page


def _embed(catalog: Catalog, model: ImageTextModel, rows: Iterable[StoredFile], todo: int,
           summary: ReembedSummary, batch_size: int, workers: int, progress: bool) -> None:
    """Give `rows` the model's vectors in `embeddings`, a batch per INSERT; failures are counted and
    recorded. `rows` are read here, in this thread: the workers never touch the engine."""
    bar = pipeline.progress_bar(todo, f"re-embedding ({model.label})", progress)

    def store(results: list[dict]) -> None:
        for r in _store_batch(catalog, model, results, summary):
            if progress:
                bar.write(f"skipped {r['path']}: {r['error']}", file=sys.stderr)
    try:
        pipeline.run(rows, _prepare_stored, store, batch_size=batch_size, workers=workers, setup=_setup_worker,
                     setup_args=(model.prepare(), model.image_size), bar=bar)
    finally:
        bar.close()


def _store_batch(catalog: Catalog, model: ImageTextModel, batch: list[dict], summary: ReembedSummary) -> list[dict]:
    """Store the batch's vectors; returns the images that could not have one (counted and recorded)."""
    good = [r for r in batch if "pixels" in r]
    if good:
        vectors = model.encode_prepared([r["pixels"] for r in good])
        catalog.switch.insert_vectors(model.label, [r["id"] for r in good], vectors)
        summary.embedded += len(good)
    failed = [r for r in batch if "pixels" not in r]
    if failed:
        errors = [(r["path"], f"re-embedding with {model.label}: {r['error']}") for r in failed]
        catalog.images.record_errors(errors)
        summary.errors += errors
        for r in failed:
            summary.failed_ids.add(r["id"])
            setattr(summary, r["outcome"], getattr(summary, r["outcome"]) + 1)
    return failed


def reembed(catalog: Catalog, model: ImageTextModel, register: Callable[[ImageTextModel], None],
            batch_size: int = 64, workers: int | None = None, keep: bool = False, drop_missing: bool = False,
            progress: bool = False) -> ReembedSummary:
    """Give every image of `catalog` the vector of `model`, then switch the store to it (see the module's
    text). `register` records how to load the model again. Safe to interrupt and run again."""
    start = time.perf_counter()
    summary = ReembedSummary(model=model.label, total=catalog.images.count())
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    if catalog.images.engine() == "Distributed":
        raise ClipsearchError("reembed switches one table, and `images` here is a cluster's Distributed table: "
                              "load the images into a new cluster database with the new model instead")
    register(model)
    try:
        active = catalog.models.active()
        if active == [model.label]:
            if catalog.switch.left_model() is not None:   # interrupted after the exchange: finish it
                _catch_up(catalog, model, summary, batch_size, workers, progress)
            catalog.switch.finish(model.label)
            summary.already_active = not summary.embedded
            summary.switched = bool(summary.embedded)
            return summary
        if len(active) != 1:
            raise QueryError("the store has no images yet: load some first" if not active else
                             f"the store holds vectors of several models ({', '.join(active)}); load it again")
        summary.previous = active[0]
        missing = catalog.switch.vectors_missing(model.label)
        summary.already = summary.total - missing
        _embed(catalog, model, _pages(catalog, model.label), missing, summary, batch_size, workers, progress)
        if summary.missing and not drop_missing:
            return summary
        if keep:
            catalog.switch.keep_vectors(summary.previous)
            summary.kept = True
        switch_start = time.perf_counter()
        in_switch = catalog.switch.build(model.label, model.dim)
        if in_switch == 0:
            raise ClipsearchError("no image has a vector of the new model; nothing to switch to")
        catalog.switch.exchange()
        summary.switched = True
        summary.dropped = max(0, summary.total - in_switch)
        _catch_up(catalog, model, summary, batch_size, workers, progress)
        catalog.switch.finish(model.label)
        summary.switch_seconds = time.perf_counter() - switch_start
        return summary
    finally:
        summary.seconds = time.perf_counter() - start


def _catch_up(catalog: Catalog, model: ImageTextModel, summary: ReembedSummary, batch_size: int, workers: int,
              progress: bool) -> None:
    """After the exchange: the images loaded into the old table while the new one was built, and any that a
    load still running with the old model added to the new one, get the new model's vectors."""
    for source in (SWITCH_TABLE, "images"):
        for _ in range(3):   # loads may go on meanwhile; a few passes settle it
            rows = [r for r in catalog.switch.not_caught_up(model.label, source) if r.id not in summary.failed_ids]
            if not rows:
                break
            _embed(catalog, model, rows, len(rows), summary, batch_size, workers, progress)
            catalog.switch.copy(model.label, [r.id for r in rows], source)
