"""A photo collection in ClickHouse: the library API that the CLI and the Flask app are thin layers over.

    import clipsearch
    with clipsearch.open("./clipsearch-data") as photos:
        photos.load("~/photos")
        for hit in photos.search("a red car at night", k=5, filters=["width>=1024"]):
            print(f"{hit['score']:.3f} {hit['path']}")
"""
from __future__ import annotations

import dataclasses
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from clipsearch.analyst.policy import AnalystPolicy
from clipsearch.analyst.turns import FairShare
from clipsearch.errors import QueryError
from clipsearch.images.decode import extreme_aspect, fit_for_model
from clipsearch.images.files import open_loaded_video, read_loaded_file
from clipsearch.loader.paths import Forgotten
from clipsearch.models.bundled import BUNDLED_LABEL
from clipsearch.models.factory import ModelRef, create_model
from clipsearch.models.model import RANDOM_WEIGHTS, ImageTextModel
from clipsearch.models.store_model import StoreModel
from clipsearch.search.filters import Filter, filters_from_json
from clipsearch.search.options import EVERY, FACET_TOP, MAX_K, Options, check_whole
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

    def __init__(self, catalog: Catalog, model: StoreModel, settings: Settings | None = None,
                 log_searches: bool = True, origin: str = "python"):
        self.catalog = catalog
        self.settings = settings or Settings()
        self.searcher = Searcher(catalog, model, log=log_searches, origin=origin, cache=self.settings.search_cache)
        self._model = model
        self.analyst_policy = AnalystPolicy()   # the page's SQL tab's, and the served port's (`serve` hands it on)
        self.analyst_turns = FairShare()        # their queries' turns, shared the same way
        self._analyst_sessions: tuple[Connection, Connection] | None = None   # (the check's, the queries')
        self._text_embedding = False
        self._analyst_lock = threading.Lock()

    @property
    def model(self) -> ImageTextModel:
        """The CLIP model, loaded on first use."""
        return self._model()

    @property
    def model_label(self) -> str:
        """The name the model's vectors are stored under, without loading a model not loaded yet."""
        return self._model.label

    @property
    def backend(self) -> str:
        return self.catalog.backend

    def close(self) -> None:
        self.searcher.close()
        for session in self._analyst_sessions or ():
            session.close()
        self.catalog.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- searching --------------------------------------------------------------------------
    def search(self, text: str | None = None, *, image: Any = None, similar: str | None = None, k: int = 10,
               filters: FilterSpec = None, image_weight: float = 0.5, terms: Any = (),
               min_score: float | None = None, offset: int = 0, order_by: str | None = None,
               descending: bool = False, per: str | None = None, per_limit: int = 1, moments: int = 1,
               facets: Any = (), facet_top: int = FACET_TOP, match: str = "both",
               cutoff: str | None = None) -> SearchResult:
        """Rank by text, an image (a PIL image or a file path), a stored image id, or text mixed with one of those.

        `terms` adds weighted terms, negative weights pushing away: [{"text": "night", "weight": 0.5},
        {"text": "people", "weight": -1}, {"image": "ref.jpg", "weight": 0.5}, {"image_id": "3f2a9c01", ...}].
        `min_score` keeps the matches at least that similar (k may then reach 10,000), `offset` pages,
        `order_by` (with a min_score) orders them by a column instead, `per`/`per_limit` keeps at most that
        many per value of a column, `moments` is how many moments of one video may come back (its best;
        a video's rows have media "video", its id in `video`, `start` and `end` in seconds), `facets` counts
        the matches per value of those columns (in `result.facets`, among the best `facet_top` or all above
        the min_score). `match`: "pictures" ranks by
        the pictures alone, "words" by the words of the text (file and folder names, titles, metadata, text read
        in the image, labels), "both" fuses the two (where no image holds a word of the text: the picture
        ranking itself); each row's `match` says its picture and word ranks and which words matched where.

        `result.rows` are dicts with id, path, score (cosine similarity) and the metadata columns, best first;
        `result.sql` and `result.params` are the one query ClickHouse ran. `cutoff="auto"` returns only the
        first of the k results that stand out (above the largest gap in the score curve: options.auto_cutoff).
        """
        if isinstance(image, (str, os.PathLike)):
            image = open_query_image(image)
        moments = check_whole("moments", moments, 1, MAX_K)
        if isinstance(image_weight, bool) or not isinstance(image_weight, (int, float)) \
                or not 0 <= image_weight <= 1:
            raise QueryError(f"the image weight is a number from 0 to 1, got {image_weight!r}")
        return self.run_search(text, image, similar, k, as_filters(filters),
                               {"image": image_weight, "text": 1 - image_weight}, terms=as_terms(terms),
                               options=Options(offset, min_score, order_by, descending, per, per_limit, cutoff=cutoff,
                                               moments=moments),
                               facets=[facets] if isinstance(facets, str) else list(facets), facet_top=facet_top,
                               match=match)

    def run_search(self, text: str | None = None, image: Any = None, image_id: str | None = None, k: int | str = 10,
                   filters: Sequence[Filter] = (), weights: dict | None = None, *, terms: Sequence[Term] = (),
                   options: Options | None = None, facets: Sequence[str] = (),
                   facet_top: int | str = FACET_TOP, match: str = "both") -> SearchResult:
        """`search` in the shapes the JSON API parses into (Filter and Term objects, the image/text weights,
        the result Options): every input is checked once, by the searcher."""
        image = self._fit(image)
        terms = [dataclasses.replace(t, image=self._fit(t.image)) if t.image is not None else t for t in terms]
        return self.searcher.search(text, image, image_id, k, filters, weights, terms=terms,
                                    options=options or EVERY, facets=facets, facet_top=facet_top, match=match)

    def record_click(self, search_id: str, image_id: str, rank: int) -> None:
        """Note that a person opened the result `image_id` (at `rank`, from 1) of the search `search_id` (the
        SearchResult's): clicks are judgments (`evaluate(from_clicks=True)`) and the dashboard's click-through."""
        from clipsearch.search.options import MAX_WINDOW, check_whole
        if not isinstance(search_id, str) or not re.fullmatch(r"[0-9a-f]{32}", search_id):
            raise QueryError("search_id is the 32 hex digits a search answered with")
        if not isinstance(image_id, str) or not re.fullmatch(r"[0-9a-f]{6,64}", image_id):
            raise QueryError("image_id is an image's id (hex digits)")
        rank = check_whole("rank", rank, 1, MAX_WINDOW)
        if self.searcher.log is None:
            raise QueryError("this collection keeps no search log, so no clicks either")
        self.searcher.log.record_click(search_id, image_id, rank)

    def browse(self, k: int = 24, filters: FilterSpec = None, offset: int = 0,
               facets: Any = ()) -> SearchResult:
        """The library without a query: the images the filters match, newest first (taken, else the file's
        time, else loaded), a page at a time, with `facets` counted over all of them. Rows have no score."""
        return self.searcher.browse(k, as_filters(filters), offset, list(facets))

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
        return label_vector(self.catalog, self.model, self.model.encode_images([self._fit(image)])[0], labels, prompt)

    def _fit(self, image: Any) -> Any:
        """A query image whose long side is many times its short one (a stripe), cut to what the model keeps:
        the model's own resize would make a 1x20000 PNG gigabytes (images/decode.py: fit_for_model)."""
        if image is None or not extreme_aspect(image):
            return image
        return fit_for_model(image, self.model.prepare())

    def hashes_missing(self) -> int:
        """How many stored images lack the perceptual hashes `duplicates` compares (`clipsearch hashes`)."""
        from clipsearch.images.copies import hashes_missing
        return hashes_missing(self.catalog)

    def forget_missing(self, root: str) -> Forgotten:
        """Note the files under `root` (a folder path ending in a separator) that are gone: an image goes when
        no path holds it any more. Nothing happens while the folder cannot be reached (loader/paths.py)."""
        from clipsearch.loader.paths import forget_missing
        return forget_missing(self.catalog, root)

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

    def open_video(self, row: dict) -> Any:
        """The open file of a video moment's row (`get`), only while its path still holds the video loaded
        (same size and time as its path's record; NotFound or FileChanged if not)."""
        from clipsearch.errors import FileChanged
        record = self.catalog.files.under_paths([row["path"]]).get(row["path"])
        if record is None or record.id != row["video"] or not record.present:
            raise FileChanged(f"the video {row['video']} is no longer at {row['path']}; load it again")
        return open_loaded_video(row["path"], row["video"], record.file_size, record.mtime_ms)

    def thumbnail(self, image_id: str) -> bytes:
        """A video moment's stored thumbnail (JPEG bytes)."""
        import base64
        return base64.b64decode(self.catalog.images.thumbnail(image_id))

    # -- loading and labelling --------------------------------------------------------------
    def load(self, source: str | os.PathLike, *, batch_size: int = 64, workers: int | None = None,
             progress: bool = False, report: Callable[[str, str], None] | None = None,
             restrict_to_folder: bool = False, retry_failed: bool = True, follow_links: bool = False,
             text_columns: list[str] | None = None, ocr: bool = False) -> Any:
        """Load a folder (recursively) or a CSV/JSONL manifest; returns a LoadSummary. Safe to re-run.

        With `restrict_to_folder`, a manifest naming files outside its own folder is refused; with
        `retry_failed=False`, files whose load failed are not read again until they change; with
        `follow_links`, links out of the folder given load the files they point to (else they are refused);
        `text_columns`: the manifest columns that are the images' title words (default: the text ones);
        with `ocr`, the text in the images loaded is read (the `ocr` extra).
        """
        from clipsearch.loader.load import load
        summary = load(str(source), self.catalog, self._model, batch_size=batch_size, workers=workers,
                       progress=progress, report=report, restrict_to_folder=restrict_to_folder,
                       retry_failed=retry_failed, follow_links=follow_links, text_columns=text_columns,
                       ocr=ocr)
        if summary.loaded:   # how to load this model again: later commands without --model use it
            self._register(self.model)
        return summary

    def _register(self, model: ImageTextModel) -> None:
        """Record how to load `model` again (in the `models` table)."""
        if model.label == BUNDLED_LABEL:
            self.catalog.models.register(model.label, "", "", model.dim)   # its folder differs per install
        elif model.name:
            pretrained = model.pretrained or (RANDOM_WEIGHTS if model.label.endswith(f":{RANDOM_WEIGHTS}") else None)
            self.catalog.models.register(model.label, model.name, pretrained, model.dim)

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
        new = create_model(model, pretrained) if model is None or isinstance(model, str) else model
        summary = reembed(self.catalog, new, self._register, batch_size=batch_size, workers=workers, keep=keep,
                          drop_missing=drop_missing, progress=progress)
        if summary.switched or summary.already_active:
            self._model.use(ModelRef(model=new))
            if self.catalog.indexes.vector_index() and (summary.switched or self.catalog.state.read().beam is None):
                self.searcher.tune_index()   # the beam that reaches the recall target for the new vectors
        return summary

    def use_model(self, label: str, *, workers: int | None = None, progress: bool = False) -> Any:
        """Switch the store to a kept model (`reembed(..., keep=True)` kept its vectors) without embedding again:
        the same atomic switch `reembed` makes, keeping the vectors of the model switched from. Images loaded
        since the other model's vectors were kept get theirs now (from their files). Returns a ReembedSummary."""
        models = self.models()
        record = next((m for m in models if label in (m["label"], m["name"])), None)
        if record is None:
            raise QueryError(f"no model {label!r} in this store; `clipsearch models` lists them: "
                             + ", ".join(m["label"] for m in models))
        if not record["active"] and not record["rows"]:
            raise QueryError(f"{record['label']}'s vectors are not kept here; `clipsearch reembed --model "
                             f"{record['name'] or 'bundled'}` embeds them again")
        if not record["active"] and not self.catalog.switch.vectors_missing(record["label"]):
            workers = 0   # nothing to read from files: no worker processes
        return self.reembed(ModelRef(record["name"] or None, record["pretrained"] or None).get(), keep=True,
                            workers=workers, progress=progress)

    def evaluate(self, judgments: str | os.PathLike | None = None, *, k: int = 10,
                 models: Sequence[str] | str | None = None, match: Sequence[str] | str = "both",
                 filters: FilterSpec = None, cutoff: str | None = None, from_clicks: bool = False,
                 since: str | None = None, save: bool = False, progress: bool = False) -> Any:
        """Search quality on a judgments file (search/evaluation.py), or with `from_clicks` on the results people
        opened from the page's searches (since the day `since`): each query searched as `search` does, by each
        model (None: the active one; "all": it and every kept one; or labels) and each match mode, scored at
        `k`; with `cutoff` ("auto") searches return the results that stand out, and precision is of those. With
        `save` the judgments go into the `judgments` table too (sql/queries/eval_metrics.sql scores the logged
        searches against them). Returns a Report (`as_json()`: {k, queries, runs})."""
        from clipsearch.search import evaluation
        from clipsearch.search.options import check_k, check_options
        from clipsearch.search.signals import MATCHES
        from clipsearch.search.where import bind_filters
        k = check_k(k)
        matches = [match] if isinstance(match, str) else list(dict.fromkeys(match))
        for m in matches:
            if m not in MATCHES:
                raise QueryError(f"match is one of {', '.join(MATCHES)}, got {m!r}")
        if (judgments is None) == (not from_clicks):
            raise QueryError("give a judgments file, or take the judgments from the page's clicks (not both)")
        if since is not None and not from_clicks:
            raise QueryError("since is for judgments from clicks: the searches made since that day")
        state = self.searcher.table_state()
        judged = evaluation.clicks_judgments(self.catalog, since) if from_clicks else \
            evaluation.read_judgments(str(judgments))
        bound = as_filters(filters)
        bind_filters(bound, state.columns)   # a mistake in them is the whole run's, not each query's
        options = Options(cutoff=cutoff)
        check_options(options, k, state.columns)
        searchers = {label: Searcher(self.catalog, get, log=False, kept=None if label == self.model_label else label)
                     for label, get in self._models_to_evaluate(models).items()}

        def run(searcher: Searcher, judged: Any, how: str) -> list[dict]:
            image = self._fit(open_query_image(judged.image)) if judged.image else None
            return searcher.search(None if image else judged.query, image, k=k, filters=bound, match=how,
                                   options=options).rows
        return evaluation.evaluate(self.catalog, judged, searchers, matches or ["both"], k, run, state.columns,
                                   progress=progress, cutoff=cutoff is not None,
                                   save_as=("clicks" if from_clicks else os.path.basename(str(judgments))) if save
                                   else None)

    def _models_to_evaluate(self, models: Sequence[str] | str | None) -> dict[str, Callable[[], ImageTextModel]]:
        """label -> how to get the model, for the active model and the kept ones asked for."""
        listed = self.models()
        active = [m["label"] for m in listed if m["active"]] or [self.model_label]
        kept = {m["label"]: m for m in listed if not m["active"] and m["complete"]}
        asked = active + list(kept) if models == "all" else \
            active if not models else [models] if isinstance(models, str) else list(models)
        labels = {m["label"] for m in listed}
        out: dict[str, Callable[[], ImageTextModel]] = {}
        for given in dict.fromkeys(asked):   # a label as `models` lists it, or the name it was loaded with
            label = given if given in labels or given == self.model_label else ModelRef(given).label
            if label == self.model_label:
                out[label] = self._model
            elif label in kept:
                out[label] = ModelRef(kept[label]["name"] or None, kept[label]["pretrained"] or None).get
            else:
                raise QueryError(f"{given} is neither the store's model nor a kept one (`clipsearch models` lists "
                                 f"them; `reembed --keep` keeps the vectors of the model it leaves)")
        return out

    def refresh_model(self) -> None:
        """Follow the store to the model `reembed` switched it to, from another process (a long-running
        process calls this now and then; searches check it themselves)."""
        self._model.refresh()

    def on_model_change(self, callback: Callable[[ImageTextModel], object]) -> None:
        """Call `callback(model)` when this collection follows the store to another model."""
        self._model.on_change = callback

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
        """Read again from their files (while those are still the ones loaded) what older rows lack: the
        orientation and dates (a photo stored sideways gets its size, hashes and vector again, upright, by the
        store's model) and the perceptual hashes; returns a BackfillSummary. Safe to re-run."""
        from clipsearch.loader.backfill import backfill
        return backfill(self.catalog, batch_size, workers, progress, model=self._model)

    def backfill_words(self, batch_size: int = 512, workers: int | None = None, progress: bool = False) -> Any:
        """Give images loaded before images had words their words (names, titles, their files' metadata);
        returns a WordsSummary. Safe to re-run."""
        from clipsearch.loader.words import backfill_words
        return backfill_words(self.catalog, batch_size, workers, progress)

    # -- SQL and the index ------------------------------------------------------------------
    def sql(self, query: str, params: dict | None = None, fmt: str | None = None) -> Any:
        """Run SQL: rows as dicts, or with `fmt` the output in that ClickHouse format as bytes, byte for byte
        (text formats are UTF-8; Parquet, Arrow, Native... are binary).

        On the embedded engine, clipTextEmbedding('text') is available in the SQL.
        """
        if not isinstance(query, str) or not query.strip():
            raise QueryError("empty SQL")
        self.enable_text_embedding()
        self.refresh_model()   # clipTextEmbedding() embeds with the store's model, which it cannot load itself
        return self.catalog.owner_sql(query, params, fmt)

    def enable_text_embedding(self) -> None:
        """Make clipTextEmbedding('text') callable in this engine's SQL, from every session (embedded only;
        on a server, Catalog.define_server_text_embedding defines it when the store opens)."""
        if self.backend == "embedded" and not self._text_embedding:
            from clipsearch.models.sql_functions import register_embedded
            register_embedded(self.catalog, self._model.for_label)
            self._text_embedding = True  # once per collection: it is a CREATE FUNCTION statement

    def analyst_sql(self, query: str, params: dict | None = None, fmt: str | None = None) -> Any:
        """SQL as an analyst runs it: like `sql`, but checked and run in a read-only session that refuses
        writes, setting changes and the table functions that read files or the network, within the analyst
        policy's limits (time, memory, the parser's work, result rows and bytes: AnalystPolicy), so one query
        cannot stall the searches beside it. The result's format is `fmt`, never a FORMAT clause in the SQL."""
        session, checked = self._analyst_session(query)
        return session.query(checked, params) if fmt is None else session.text(checked, params, fmt)

    def analyst_stream(self, query: str, params: dict | None = None,
                       fmt: str = "JSONCompactEachRowWithNamesAndTypes") -> Iterator[bytes]:
        """analyst_sql's result in a row format, as the engine makes it (nothing held whole)."""
        session, checked = self._analyst_session(query)
        return session.stream(checked, params, fmt)

    def _analyst_session(self, query: str) -> tuple[Connection, str]:
        """The read-only session to run `query` on, and the text to run: the analyst policy's check returns
        ClickHouse's formatting of it, which is what it judged."""
        if not isinstance(query, str) or not query.strip():
            raise QueryError("empty SQL")
        with self._analyst_lock:
            if self._analyst_sessions is None:
                self.enable_text_embedding()  # functions serve every session
                self._analyst_sessions = self.analyst_policy.open_page_sessions(self.catalog.connection)
        checker, session = self._analyst_sessions
        self.refresh_model()
        text = self.analyst_policy.check_on(checker, query)
        self.analyst_policy.refuse_format_clause(text)
        return session, text

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
    from clipsearch.images.decode import open_image
    try:
        return open_image(os.fspath(path))
    except FileNotFoundError:
        raise QueryError(f"{os.fspath(path)}: no such file") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise QueryError(f"{os.fspath(path)}: cannot read image ({exc})") from None


def open(db: str | os.PathLike | None = None, *, url: str | None = None,  # noqa: A001
         model: str | ImageTextModel | ModelRef | None = None, pretrained: str | None = None,
         settings: Settings | None = None, log_searches: bool = True, create: bool = True,
         origin: str = "python") -> Collection:
    """Open (or create) a collection: the embedded folder `db`, or the ClickHouse server at `url`.

    Unset arguments come from the environment (CLIPSEARCH_DB, CLICKHOUSE_URL, CLIPSEARCH_MODEL,
    CLIPSEARCH_PRETRAINED), then the defaults (./clipsearch-data, the store's own model, else the bundled
    one). `model` may be a model name (open_clip's, or FAMILY:NAME), a loaded ImageTextModel, or a ModelRef
    (loaded on first use). With `create` false, an embedded folder without a database is an error instead
    of a new database.
    """
    name = model if isinstance(model, str) else None
    settings = settings or Settings.load(db=None if db is None else os.fspath(db), clickhouse_url=url,
                                         model=name, pretrained=pretrained)
    if isinstance(model, ModelRef):
        asked = model
    elif model is None or isinstance(model, str):
        asked = ModelRef(settings.model, settings.pretrained)
    elif hasattr(model, "encode_texts"):
        asked = ModelRef(model=model)
    else:   # a function returning a model, as open() once took: ModelRef is the lazy one now
        raise TypeError(f"model is a name, a loaded model or a ModelRef, not {model!r}")
    catalog = Catalog.open(settings, create)
    try:
        store_model = StoreModel(catalog, asked)
    except BaseException:
        catalog.close()
        raise
    return Collection(catalog, store_model, settings, log_searches, origin)
