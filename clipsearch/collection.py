"""A photo collection in ClickHouse: the library API that the CLI and the Flask app are thin layers over.

    import clipsearch
    with clipsearch.open("./clipsearch-data") as photos:
        photos.load("~/photos")
        for hit in photos.search("a red car at night", k=5, filters=["width>=1024"]):
            print(f"{hit['score']:.3f} {hit['path']}")
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from clipsearch.analyst import readonly
from clipsearch.errors import QueryError
from clipsearch.images.files import read_loaded_file
from clipsearch.models.model import (
    BUNDLED_LABEL,
    RANDOM_WEIGHTS,
    ImageTextModel,
    LazyModel,
    ModelSource,
    create_model,
    model_loader,
)
from clipsearch.models.sql_functions import ServiceModel
from clipsearch.search.query import EVERY, FACET_TOP, Filter, Options, filters_from_json
from clipsearch.search.searcher import Searcher, SearchResult, Term
from clipsearch.settings import Settings
from clipsearch.store.catalog import Catalog
from clipsearch.store.connection import Connection, WriteCounter
from clipsearch.store.indexes import DEFAULT_QUANTIZATION
from clipsearch.store.state import TableState

FilterSpec = Any   # ["price<20", ...], [Filter, ...] or {"category": "poster", "price": {"<": 20}}


def as_filters(spec: FilterSpec) -> list[Filter]:
    if spec is None:
        return []
    if isinstance(spec, str):
        spec = [spec]
    if isinstance(spec, (list, tuple)) and all(isinstance(f, Filter) for f in spec):
        return list(spec)
    return filters_from_json(list(spec) if isinstance(spec, tuple) else spec)


def as_terms(spec: Any) -> list[Term]:
    """Terms from Term objects or dicts {"text" | "image" (PIL image or file path) | "image_id", "weight"}."""
    out = []
    for item in spec or ():
        if isinstance(item, dict):
            if not set(item) <= {"text", "image", "image_id", "weight"}:
                raise QueryError(f"a term has a text, an image or an image_id, and a weight; got {sorted(item)}")
            image = item.get("image")
            image = open_query_image(image) if isinstance(image, (str, os.PathLike)) else image
            item = Term(item.get("text"), image, item.get("image_id"), item.get("weight", 1.0))
        if not isinstance(item, Term):
            raise QueryError(f"a term is a dict with text, image or image_id and a weight, got {item!r}")
        out.append(item)
    return out


class Collection:
    """The images of one clipsearch database and the model that embeds their queries."""

    def __init__(self, catalog: Catalog, get_model: Callable[[], ImageTextModel], settings: Settings | None = None,
                 log_searches: bool = True, origin: str = "python"):
        self.catalog = catalog
        self.settings = settings or Settings()
        self.searcher = Searcher(catalog, get_model, log=log_searches, origin=origin)
        self._get_model = get_model
        self._read_only: Connection | None = None
        self._denied: set[str] = set()
        self._text_embedding = False
        self._read_only_lock = threading.Lock()

    @property
    def model(self) -> ImageTextModel:
        """The CLIP model, loaded on first use."""
        return self._get_model()

    @property
    def model_label(self) -> str:
        """The name the model's vectors are stored under, without loading a model not loaded yet."""
        label = getattr(self._get_model, "label", None)
        return label if isinstance(label, str) else self.model.label

    @property
    def backend(self) -> str:
        return self.catalog.backend

    def close(self) -> None:
        self.searcher.close()
        if self._read_only is not None:
            self._read_only.close()
        self.catalog.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- searching --------------------------------------------------------------------------
    def search(self, text: str | None = None, *, image: Any = None, similar: str | None = None, k: int = 10,
               filters: FilterSpec = None, image_weight: float = 0.5, terms: Any = (),
               min_score: float | None = None, offset: int = 0, order_by: str | None = None,
               descending: bool = False, per: str | None = None, per_limit: int = 1,
               facets: Any = (), facet_top: int = FACET_TOP) -> SearchResult:
        """Rank by text, an image (a PIL image or a file path), a stored image id, or text mixed with one of those.

        `terms` adds weighted terms, negative weights pushing away: [{"text": "night", "weight": 0.5},
        {"text": "people", "weight": -1}, {"image": "ref.jpg", "weight": 0.5}, {"image_id": "3f2a9c01", ...}].
        `min_score` keeps the matches at least that similar (k may then reach 10,000), `offset` pages,
        `order_by` (with a min_score) orders them by a column instead, `per`/`per_limit` keeps at most that
        many per value of a column, `facets` counts the matches per value of those columns (in
        `result.facets`, among the best `facet_top` or all above the min_score).

        `result.rows` are dicts with id, path, score (cosine similarity) and the metadata columns, best first;
        `result.sql` and `result.params` are the one query ClickHouse ran.
        """
        if isinstance(image, (str, os.PathLike)):
            image = open_query_image(image)
        if isinstance(image_weight, bool) or not isinstance(image_weight, (int, float)) \
                or not 0 <= image_weight <= 1:
            raise QueryError(f"the image weight is a number from 0 to 1, got {image_weight!r}")
        return self.run_search(text, image, similar, k, as_filters(filters),
                               {"image": image_weight, "text": 1 - image_weight}, terms=as_terms(terms),
                               options=Options(offset, min_score, order_by, descending, per, per_limit),
                               facets=[facets] if isinstance(facets, str) else list(facets), facet_top=facet_top)

    def run_search(self, text: str | None = None, image: Any = None, image_id: str | None = None, k: int | str = 10,
                   filters: Sequence[Filter] = (), weights: dict | None = None, *, terms: Sequence[Term] = (),
                   options: Options | None = None, facets: Sequence[str] = (),
                   facet_top: int | str = FACET_TOP) -> SearchResult:
        """`search` in the shapes the JSON API parses into (Filter and Term objects, the image/text weights,
        the result Options): every input is checked once, by the searcher."""
        return self.searcher.search(text, image, image_id, k, filters, weights, terms=terms,
                                    options=options or EVERY, facets=facets, facet_top=facet_top)

    def state(self) -> TableState:
        """What `images` holds now: columns, models, rows, vector index, its tuned beam, filter columns."""
        return self.catalog.state.read()

    def check_loaded(self) -> None:
        """EmptyStore (a clear error) if no image is loaded yet."""
        self.searcher.table_state()

    def column_summaries(self) -> list[dict]:
        """Each filterable column with what a filter form needs: distinct values or a numeric range."""
        return self.catalog.images.column_summaries()

    def label_image(self, image: Any, labels: list[str] | str, prompt: str | None = None) -> list[dict]:
        """The zero-shot label distribution of one image (a PIL image), without storing anything."""
        from clipsearch.images.labels import label_vector
        return label_vector(self.catalog, self.model, self.model.encode_images([image])[0], labels, prompt)

    def hashes_missing(self) -> int:
        """How many stored images lack the perceptual hashes `duplicates` compares (`clipsearch hashes`)."""
        from clipsearch.images.copies import hashes_missing
        return hashes_missing(self.catalog)

    def forget_missing(self, root: str) -> list[str]:
        """Remove the rows of files under `root` (a folder path ending in a separator) that are gone."""
        return self.catalog.images.forget_missing(root)

    @property
    def writes(self) -> WriteCounter:
        """The counter of this collection's writes: a second writer in the process (the served ClickHouse
        port) notes its own here, so cached table state is refreshed."""
        return self.catalog.connection.writes

    def get(self, image_id: str) -> dict:
        """One stored image's row (without its vector); NotFound if there is none."""
        return self.catalog.images.get(image_id)

    def read_file(self, image_id: str) -> tuple[dict, bytes]:
        """A stored image's row and its file's bytes, only while the file is still the one loaded
        (NotFound if it is gone, FileChanged if it was edited or replaced)."""
        row = self.get(image_id)
        return row, read_loaded_file(row["path"], row["id"], int(row["file_size"]))

    # -- loading and labelling --------------------------------------------------------------
    def load(self, source: str | os.PathLike, *, batch_size: int = 64, workers: int | None = None,
             progress: bool = False, report: Callable[[str, str], None] | None = None,
             restrict_to_folder: bool = False) -> Any:
        """Load a folder (recursively) or a CSV/JSONL manifest; returns a LoadSummary. Safe to re-run.

        With `restrict_to_folder`, a manifest naming files outside its own folder is refused.
        """
        from clipsearch.loader.load import load
        summary = load(str(source), self.catalog, self._get_model, batch_size=batch_size, workers=workers,
                       progress=progress, report=report, restrict_to_folder=restrict_to_folder)
        if summary.loaded:   # how to load this model again: later commands without --model use it
            self._register(self.model)
        return summary

    def _register(self, model: ImageTextModel) -> None:
        """Record how to load `model` again (in the `models` table)."""
        name = getattr(model, "name", None)
        if model.label == BUNDLED_LABEL:
            self.catalog.models.register(model.label, "", "", model.dim)   # its folder differs per install
        elif name:
            pretrained = getattr(model, "pretrained", None) or \
                (RANDOM_WEIGHTS if model.label.endswith(f":{RANDOM_WEIGHTS}") else None)
            self.catalog.models.register(model.label, name, pretrained, model.dim)

    def reembed(self, model: str | ImageTextModel | None, pretrained: str | None = None, *, batch_size: int = 64,
                workers: int | None = None, keep: bool = False, drop_missing: bool = False,
                progress: bool = False) -> Any:
        """Give every stored image the vector of another model (an open_clip name with `pretrained`, a
        FAMILY:NAME, None for the bundled one, or an ImageTextModel) while searches go on with the current one,
        then switch the store to it in one step; returns a ReembedSummary. Safe to interrupt and run again.

        The switch waits until every image has its new vector; with `drop_missing` the images whose files are
        gone or changed are left out of it. With `keep` the current model's vectors stay in the `embeddings`
        table, for comparing the two in SQL (sql/queries/compare_models.sql). Everything using this store
        follows the switch: this collection, a running service, clipTextEmbedding(), later commands."""
        from clipsearch.loader.reembed import reembed
        new = model if isinstance(model, ImageTextModel) else create_model(model, pretrained)
        summary = reembed(self.catalog, new, self._register, batch_size=batch_size, workers=workers, keep=keep,
                          drop_missing=drop_missing, progress=progress)
        if summary.switched or summary.already_active:
            if isinstance(self._get_model, StoreModel):
                self._get_model.use(new)
            else:
                self._get_model = self.searcher._get_model = StoreModel(self.catalog, model_loader(new))
                self._text_embedding = False   # clipTextEmbedding() to be bound to it
            if self.catalog.indexes.vector_index() and (summary.switched or self.catalog.state.read().beam is None):
                self.searcher.tune_index()   # the beam that reaches the recall target for the new vectors
        return summary

    def refresh_model(self) -> None:
        """Follow the store to the model `reembed` switched it to, from another process (a long-running
        process calls this now and then; searches check it themselves)."""
        if isinstance(self._get_model, StoreModel):
            self._get_model.refresh()

    def on_model_change(self, callback: Callable[[ImageTextModel], object]) -> None:
        """Call `callback(model)` when this collection follows the store to another model."""
        if isinstance(self._get_model, StoreModel):
            self._get_model.on_change = callback

    def models(self) -> list[dict]:
        """The models recorded in the store: label, name, pretrained, dim, rows (images with their vectors),
        active (the one searches use: its vectors are images.embedding, under the vector index if there is
        one), and for the others whether their vectors are complete (`reembed` may switch to them)."""
        index = self.catalog.indexes.vector_index()
        total = self.catalog.images.count()
        out = []
        for r in self.catalog.models.records():
            active = r["active_rows"] > 0
            rows = r["active_rows"] if active else r["stored_rows"]
            out.append({"label": r["label"], "name": r["name"], "pretrained": r["pretrained"], "dim": r["dim"],
                        "rows": rows, "active": active, "complete": bool(rows) and rows >= total,
                        "vector_index": index["type_full"] if active and index else None})
        return out

    def label(self, labels: list[str] | str, prompt: str | None = None, name: str = "label",
              filters: FilterSpec = None) -> dict[str, int]:
        """Zero-shot label the images into the `labels` table; returns how many got each label."""
        from clipsearch.images.labels import label_table
        return label_table(self.catalog, self.model, labels, prompt, name, as_filters(filters))

    def duplicates(self, threshold: float | None = None, bounded: bool = False, mode: str | None = None) -> list[dict]:
        """Groups of duplicate images, largest group first, the one to keep first in each. `mode` "copies"
        (the default): the same picture, by perceptual hash (`threshold`: differing bits, default 8);
        "similar" (also the default for a threshold between 0 and 1): by CLIP distance (`threshold`: cosine
        distance, default 0.03). `bounded` caps the threshold and the work, for requests from the network."""
        from clipsearch.images.duplicates import find_duplicates
        return find_duplicates(self.catalog, mode, threshold, bounded)

    def backfill_hashes(self, batch_size: int = 512, workers: int | None = None, progress: bool = False) -> Any:
        """Compute the perceptual hashes of images stored without them (loaded before hashes existed), from
        their files while those are still the ones loaded; returns a BackfillSummary. Safe to re-run."""
        from clipsearch.loader.backfill import backfill
        return backfill(self.catalog, batch_size, workers, progress)

    # -- SQL and the index ------------------------------------------------------------------
    def sql(self, query: str, params: dict | None = None, fmt: str | None = None) -> Any:
        """Run SQL: rows as dicts, or with `fmt` the output as text in that ClickHouse format.

        On the embedded engine, clipTextEmbedding('text') is available in the SQL.
        """
        if not isinstance(query, str) or not query.strip():
            raise QueryError("empty SQL")
        self.enable_text_embedding()
        self.refresh_model()   # clipTextEmbedding() embeds with the store's model, which it cannot load itself
        return self.catalog.owner_sql(query, params, fmt)

    def enable_text_embedding(self) -> None:
        """Make clipTextEmbedding('text') callable in this engine's SQL, from every session (embedded only;
        on a server it is the executable UDF of sql/udf/)."""
        if self.backend == "embedded" and not self._text_embedding:
            from clipsearch.models.sql_functions import register_embedded
            register_embedded(self.catalog, self._get_model)
            self._text_embedding = True  # once per collection: it is a CREATE FUNCTION statement

    def analyst_sql(self, query: str, params: dict | None = None, fmt: str | None = None) -> Any:
        """SQL as an analyst runs it: like `sql`, but in a read-only session that refuses writes, setting
        changes and the table functions that read files or the network, within ANALYST_LIMITS and
        HELD_RESULT_LIMITS (time, memory, result rows and bytes), so one query cannot stall the searches
        beside it."""
        session, checked = self._analyst_session(query)
        return session.query(checked, params) if fmt is None else session.text(checked, params, fmt)

    def analyst_stream(self, query: str, params: dict | None = None,
                       fmt: str = "JSONCompactEachRowWithNamesAndTypes") -> Iterator[bytes]:
        """analyst_sql's result in a row format, as the engine makes it (nothing held whole)."""
        session, checked = self._analyst_session(query)
        return session.stream(checked, params, fmt)

    def _analyst_session(self, query: str) -> tuple[Connection, str]:
        """The read-only session, and the text to run for `query`: clipsearch.analyst.readonly's check returns
        ClickHouse's formatting of it, which is what it judged."""
        if not isinstance(query, str) or not query.strip():
            raise QueryError("empty SQL")
        with self._read_only_lock:
            if self._read_only is None:
                self.enable_text_embedding()  # functions serve every session
                self._read_only = self.catalog.connection.read_only()
                self._denied = readonly.denied_functions(self._read_only.query)
        self.refresh_model()
        return self._read_only, readonly.check(self._read_only.query, query, self._denied)

    def create_index(self, quantization: str = DEFAULT_QUANTIZATION, m: int = 16, ef_construction: int = 128) -> dict:
        """Build ClickHouse's HNSW vector index over the embeddings (minutes per few 100k rows), then tune its
        search beam for the recall target (Searcher.tune_index); returns what the tuning found."""
        self.catalog.indexes.create_vector_index(quantization, m, ef_construction)
        return self.searcher.tune_index()

    def add_filter_column(self, column: str) -> None:
        """Make selective filters on `column` fast: a copy of the table sorted by it (Indexes.add_filter_column)."""
        self.catalog.indexes.add_filter_column(column)

    def drop_filter_column(self, column: str) -> None:
        self.catalog.indexes.drop_filter_column(column)

    def drop_index(self) -> None:
        self.catalog.indexes.drop_vector_index()

    def index(self) -> dict | None:
        """The vector index, if there is one: {name, type_full}."""
        return self.catalog.indexes.vector_index()

    def count(self) -> int:
        return self.catalog.images.count()


def open_query_image(path: str | os.PathLike) -> Any:
    """A query image from a file, with a clear error for a missing or unreadable one."""
    from clipsearch.models.model import open_image
    try:
        return open_image(os.fspath(path))
    except FileNotFoundError:
        raise QueryError(f"{os.fspath(path)}: no such file") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise QueryError(f"{os.fspath(path)}: cannot read image ({exc})") from None


def open(db: str | os.PathLike | None = None, *, url: str | None = None, model: ModelSource = None,  # noqa: A001
         pretrained: str | None = None, settings: Settings | None = None, log_searches: bool = True,
         create: bool = True, origin: str = "python") -> Collection:
    """Open (or create) a collection: the embedded folder `db`, or the ClickHouse server at `url`.

    Unset arguments come from the environment (CLIPSEARCH_DB, CLICKHOUSE_URL, CLIPSEARCH_MODEL,
    CLIPSEARCH_PRETRAINED), then the defaults (./clipsearch-data, the bundled model). `model` may be
    an open_clip model name, a loaded ImageTextModel, or a function returning one (loaded on first use).
    With `create` false, an embedded folder without a database is an error instead of a new database.
    """
    name = model if isinstance(model, str) else None
    settings = settings or Settings.load(db=None if db is None else os.fspath(db), clickhouse_url=url,
                                         model=name, pretrained=pretrained)
    get_model = model_loader(None if isinstance(model, str) else model, settings.model, settings.pretrained)
    catalog = Catalog.open(settings, create)
    try:
        get_model = _service_model(catalog, _store_model(catalog, get_model))
    except BaseException:
        catalog.close()
        raise
    return Collection(catalog, get_model, settings, log_searches, origin)


def _store_model(catalog: Catalog, get_model: Callable[[], ImageTextModel]) -> Callable[[], ImageTextModel]:
    """The model to use on this store: when none was asked for, the one its vectors come from (as recorded
    when they were loaded), so a user who forgot --model gets it, not a mismatch error. Unless another model
    than the store's was asked for, it then follows the store (StoreModel)."""
    stored = catalog.models.active()
    if len(stored) > 1:
        return get_model
    if stored and isinstance(get_model, LazyModel) and get_model.name is None and stored[0] != get_model.label:
        record = next((r for r in catalog.models.records() if r["label"] == stored[0]), None)
        if not record or not record["name"]:   # none recorded (loaded before models were), or the bundled one
            return get_model
        get_model = LazyModel(record["name"], record["pretrained"] or None)
    label = getattr(get_model, "label", None)
    if isinstance(label, str) and stored and label != stored[0]:
        return get_model   # another model than the store's: searches say so (ModelMismatch)
    return StoreModel(catalog, get_model, follows=True if isinstance(label, str) else None)


class StoreModel:
    """The model of the store's vectors, following the store: when `clipsearch reembed` switches it to another
    model (from this process or another), the next call gives that one (loaded as recorded in `models`), so
    what holds a StoreModel (the service, its ClickHouse port, clipTextEmbedding) never ranks one model's
    query against another's vectors. Reading the store's model costs nothing between writes (catalog.state)."""

    def __init__(self, catalog: Catalog, first: Callable[[], ImageTextModel], follows: bool | None = True):
        self._catalog = catalog
        label = getattr(first, "label", None)
        self._current = (label if isinstance(label, str) else None, first)   # (label, source): replaced whole
        # None: a model handed in as a function says its label only once loaded; it follows the store if it
        # is the store's model then (or the store is empty).
        self._follows = follows
        self.on_change: Callable[[ImageTextModel], object] | None = None   # told of each switch, with the model

    @property
    def label(self) -> str:
        label, source = self._current
        if label is None:
            label = source().label
            self._current = (label, source)
        return label

    @property
    def source(self) -> Callable[[], ImageTextModel]:
        """What gives the model in use (a LazyModel, or a model handed in)."""
        return self._current[1]

    def __call__(self) -> ImageTextModel:
        if self._follows is None:
            active = self._catalog.state.read().models
            self._follows = not active or active == [self.label]
        self.refresh()
        return self._current[1]()

    def refresh(self) -> None:
        """Follow the store to its model, if it switched."""
        if not self._follows:
            return
        active = self._catalog.state.read().models
        if len(active) == 1 and active[0] != self.label:
            record = next((r for r in self._catalog.models.records() if r["label"] == active[0]), None)
            if record is not None:
                self.use(LazyModel(record["name"] or None, record["pretrained"] or None), active[0])

    def use(self, model: ImageTextModel | Callable[[], ImageTextModel], label: str | None = None) -> None:
        """Use `model` from now on (the store has switched to it); the previous one is let go."""
        source = model_loader(model)
        self._current, self._follows = (label or _label(source), source), True
        if self.on_change is not None:
            self.on_change(source())

    def for_label(self, label: str) -> ImageTextModel | None:
        """The model whose vectors are stored under `label`, if it is the one in use (reads nothing: for
        clipTextEmbedding, which runs inside a query)."""
        source = self._current[1]
        return source() if self.label == label else None


def _label(get_model: Callable[[], ImageTextModel]) -> str:
    """The label of a model source, loading it only if it does not say."""
    label = getattr(get_model, "label", None)
    return label if isinstance(label, str) else get_model().label


def _service_model(catalog: Catalog, get_model: Callable[[], ImageTextModel]) -> Callable[[], ImageTextModel]:
    """Through a running `serve`, its model (when it is the one to use, and not one handed in): a command embeds
    its texts there instead of loading a model of its own."""
    model = (catalog.connection.service or {}).get("model")
    source = get_model.source if isinstance(get_model, StoreModel) else get_model
    if not model or not isinstance(source, LazyModel) or _label(get_model) != model["label"]:
        return get_model
    served = ServiceModel(catalog.connection, model, get_model)
    return lambda: served
