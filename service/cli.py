"""The `clipsearch` command line."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any

from clipsearch import __version__
from clipsearch.collection import Collection, open_query_image
from clipsearch.collection import open as open_collection
from clipsearch.errors import ClipsearchError, QueryError
from clipsearch.images.copies import DEFAULT_DISTANCE as COPY_DISTANCE
from clipsearch.images.copies import MAX_DISTANCE as COPY_MAX_DISTANCE
from clipsearch.images.duplicates import DEFAULT_THRESHOLD as DUPLICATE_THRESHOLD
from clipsearch.models.bundled import BUNDLED_LABEL, BUNDLED_NOTE, model_notice
from clipsearch.models.factory import ModelRef
from clipsearch.models.model import ImageTextModel
from clipsearch.search.filters import Filter, filter_help, parse_filter
from clipsearch.search.options import CUTOFFS, FACET_TOP
from clipsearch.search.searcher import weighted
from clipsearch.search.signals import MATCHES
from clipsearch.settings import Settings, SettingsError
from clipsearch.sql import read as read_sql
from clipsearch.store.connection import running_service
from clipsearch.store.indexes import DEFAULT_QUANTIZATION, VECTOR_QUANTIZATIONS

DEMO_DIR = "./demo-catalogue"
EXAMPLE_SEARCHES = [
    ("a red circle", []),
    ("a photo of a yellow star", ["price<20"]),
    ("una cruz azul", ["category=poster"]),
]


def _settings(args: argparse.Namespace) -> Settings:
    hosts = getattr(args, "allowed_host", None)   # serve's and demo's
    return Settings.load(db=args.db, model=args.model, pretrained=args.pretrained,
                         allowed_hosts=",".join(hosts) if hosts else None)


def _open(args: argparse.Namespace, create: bool = False) -> Collection:
    """The configured collection, with the command's one model (loaded on first use). Only the
    commands that add images create a database; the others refuse a folder without one."""
    photos = open_collection(settings=_settings(args), model=args.model_ref, create=create, origin="cli")
    if getattr(args, "func", None) is not cmd_hashes:
        _note_not_read(photos)
    if getattr(args, "func", None) is not cmd_words:
        _note_no_words(photos)
    return photos


@contextlib.contextmanager
def _open_to_add(args: argparse.Namespace) -> Iterator[Collection]:
    """The store for a command that adds images (load, demo), made if need be. A folder this command made
    that holds no image when it ends (an error, Ctrl-C before the first batch, nothing loadable) goes again:
    a failed first command leaves no empty store behind for the next one to take for real."""
    settings = _settings(args)
    folder = None if settings.clickhouse_url else Path(settings.db)
    fresh = folder is not None and not folder.exists()
    photos = None
    try:
        photos = _open(args, create=True)
        yield photos
    finally:
        try:
            empty = fresh and (photos is None or photos.count() == 0)
        except ClipsearchError:
            empty = fresh
        finally:
            if photos is not None:
                photos.close()
        if empty and folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _note_not_read(photos: Collection) -> None:
    """Images loaded by a release before orientation and dates were read may be stored sideways: say so."""
    from clipsearch.loader.backfill import not_read
    try:
        waiting = not_read(photos.catalog)
    except ClipsearchError:   # a store this command is about to be refused on says so itself
        return
    if waiting:
        print(f"note: {waiting} images were loaded before clipsearch read their orientation and dates; "
              "`clipsearch hashes` reads them (phone photos stored sideways are turned upright)", file=sys.stderr)


def _note_no_words(photos: Collection) -> None:
    """Images loaded by a release before images had words are not found by their names or captions: say so."""
    from clipsearch.loader.words import no_words
    try:
        waiting = no_words(photos.catalog)
    except ClipsearchError:
        return
    if waiting:
        print(f"note: {waiting} images were loaded before clipsearch read their words; `clipsearch words` reads "
              "them (so a search finds them by file and folder names, titles and captions)", file=sys.stderr)


def cmd_load(args: argparse.Namespace) -> int:
    from clipsearch.images.labels import check_prompt, parse_labels
    if args.labels:  # check them before a long load, not after
        parse_labels(args.labels)
        check_prompt(args.prompt)
    if args.ocr:   # the extra is there, before a long load
        from clipsearch.images.ocr import engine_label
        engine_label()
    args.model_ref.get()   # a model that cannot load fails here, before a store is made
    with _open_to_add(args) as photos:
        summary = photos.load(args.source, batch_size=args.batch_size, workers=args.workers,
                              progress=not args.quiet, restrict_to_folder=args.restrict_to_folder,
                              follow_links=args.follow_links, text_columns=_text_columns(args.text_columns),
                              ocr=args.ocr)
        print(summary.line())
        if args.ocr:
            from clipsearch.loader.ocr import not_read
            if waiting := not_read(photos.catalog):
                print(f"note: the text of {waiting} stored images is not read yet; `clipsearch ocr` reads it",
                      file=sys.stderr)
        _note_bundled(photos.model_label)
        if summary.loaded == 0 and summary.already_present == 0:
            print("error: nothing could be loaded", file=sys.stderr)
            return 1
        if args.labels:
            _label(photos, args, [])
    return 0


def cmd_reembed(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from clipsearch.models.factory import create_model
    settings = _settings(args)
    if not settings.model:
        raise QueryError("name the model to re-embed with: --model NAME [--pretrained TAG|FILE] "
                         "(or $CLIPSEARCH_MODEL; --model bundled for the bundled one)")
    new = create_model(settings.model, settings.pretrained)
    # The store is opened with its own model (not loaded unless a search needs it): `new` is where it goes.
    with open_collection(settings=replace(settings, model=None, pretrained=None), create=False,
                         origin="cli") as photos:
        photos.check_loaded()
        if not args.keep and photos.model_label != new.label:   # said before a long run, not only after it
            print(f"note: {photos.model_label}'s vectors are dropped when the store switches to {new.label}; "
                  "--keep keeps them (table `embeddings`), to compare the two models in SQL", file=sys.stderr)
        summary = photos.reembed(new, batch_size=args.batch_size, workers=args.workers, keep=args.keep,
                                 drop_missing=args.drop_missing, progress=not args.quiet)
    print(summary.line())
    _note_bundled(new.label)
    return 0 if summary.switched or summary.already_active else 1


def _label(photos: Collection, args: argparse.Namespace, filters: list[Filter]) -> None:
    counts = photos.label(args.labels, args.prompt, args.name, filters)
    print(f"label set {args.name!r}: " + ", ".join(f"{label} {n}" for label, n in counts.items()))


def cmd_label(args: argparse.Namespace) -> int:
    from clipsearch.images.labels import check_prompt, parse_labels
    parse_labels(args.labels)  # mistakes that need no database or model first
    check_prompt(args.prompt)
    filters = [parse_filter(f) for f in args.filter]
    with _open(args) as photos:
        photos.check_loaded()  # a clear error on an empty store
        _label(photos, args, filters)
        _note_bundled(photos.model_label)
    return 0


def _print_results(rows: list[dict], as_json: bool, facets: dict | None = None, model_label: str = "") -> None:
    if as_json:
        # The bundled model's results say so in the JSON too (as the API's `model_notice`): on each row of the
        # array, or beside the results with --facet.
        notice = model_notice(model_label)
        if facets is not None:
            out: Any = {"results": rows, "facets": facets, "model_notice": notice}
        else:
            out = [{**row, "model_notice": notice} for row in rows] if notice else rows
        print(json.dumps(out, ensure_ascii=False, default=str))
        return
    if not rows:
        print("no results")
    skip = {"id", "path", "score", "width", "height", "format", "file_size", "modified_at", "model", "loaded_at",
            "camera", "taken_at", "exif_date", "orientation", "latitude", "longitude", "picture_score", "match",
            "media", "video", "start", "end", "codec", "duration"}
    for rank, row in enumerate(rows, 1):
        extra = "  ".join(f"{k}={v}" for k, v in row.items() if k not in skip and v is not None)
        found = (row.get("match") or {}).get("words") or {}   # which words matched where: name=img,20
        extra += "".join(f"  {field}~{','.join(words)}" for field, words in found.items())
        at = f"  at {_clock(row['start'])}-{_clock(row['end'])}" if row.get("media") == "video" else ""
        print(f"{rank:3d}  {row['score']:.3f}  {row['id'][:12]}  {row['path']}{at}  {extra}".rstrip())
    for name, counts in (facets or {}).items():
        print(f"{name}: " + (", ".join(f"{c['value']} {c['count']}" for c in counts) or "-"))


def _clock(seconds: float | None) -> str:
    """12.5 -> "0:12.5": a moment's time in a video."""
    seconds = float(seconds or 0)
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def _term(kind: str, value: str, weight: float, sign: float = 1.0) -> dict:
    """A --plus/--minus/--image/--similar value as a term: `VALUE` or `VALUE:W` (a file that exists keeps its
    whole name)."""
    name, given = weighted(value)
    if given is not None and not (kind == "image" and os.path.exists(value)):
        value, weight = name, given
    return {kind: open_query_image(value) if kind == "image" else value, "weight": sign * weight}


def _terms(args: argparse.Namespace) -> list[dict]:
    """The query as weighted terms: TEXT (1, or 1 - W with --image-weight W), each --image and --similar (W,
    default 1 or --image-weight), each --plus (W, default 1) and --minus (-W, default -1)."""
    image_weight = 1.0 if args.image_weight is None else args.image_weight
    text_weight = 1.0 if args.image_weight is None else 1 - args.image_weight
    terms = [{"text": args.text, "weight": text_weight}] if args.text is not None else []
    terms += [_term("image", v, image_weight) for v in args.image]
    terms += [_term("image_id", v, image_weight) for v in args.similar]
    terms += [_term("text", v, 1.0) for v in args.plus]
    terms += [_term("text", v, 1.0, -1.0) for v in args.minus]
    return terms


def cmd_search(args: argparse.Namespace) -> int:
    if args.text is None and not (args.image or args.similar or args.plus):
        raise QueryError("give a TEXT, --image FILE or --similar ID (TEXT with one of the others is hybrid)")
    if args.image_weight is not None and not 0 <= args.image_weight <= 1:
        raise QueryError(f"--image-weight is a number from 0 to 1, got {args.image_weight:g}")
    filters = [parse_filter(f) for f in args.filter]
    facets = [name.strip() for item in args.facet for name in item.split(",") if name.strip()]
    per, per_limit = args.per or (None, 1)
    terms = _terms(args)
    with _open(args) as photos:
        try:
            result = photos.search(terms=terms, k=args.k, filters=filters, min_score=args.min_score,
                                   offset=args.offset, order_by=args.order_by, descending=args.desc, per=per,
                                   per_limit=per_limit, moments=args.moments, facets=facets,
                                   facet_top=args.facet_top, match=args.match, cutoff=args.cutoff)
        except QueryError as exc:
            exc.args = (flag_names(str(exc)),)
            raise
        label = photos.model_label
        unsorted = sorted({f.column for f in filters} - set(photos.state().filter_columns)) if args.show_sql else []
    _print_results(result.rows, args.json, result.facets, label)
    _note_bundled(label)
    if args.show_sql:
        print(f"-- {result.strategy}\n-- match {result.match}\n{result.sql}\n"
              f"-- parameters: {json.dumps(_short(result.params))}",
              file=sys.stderr)
        if result.facet_sql:
            print(f"-- facets\n{result.facet_sql['query']}\n-- parameters: "
                  f"{json.dumps(_short(result.facet_sql['params']))}", file=sys.stderr)
        if result.strategy == "exact" and unsorted:   # a selective filter read every granule holding a match
            print(f"-- ranked every row the filters match; if filters on {' or '.join(unsorted)} usually leave few "
                  f"rows, `clipsearch index create --filter-column {unsorted[0]}` keeps a copy of the table sorted "
                  "by it, so they read only those rows", file=sys.stderr)
    if result.next_offset is not None and (args.offset or args.min_score is not None):
        print(f"more: --offset {result.next_offset}", file=sys.stderr)
    return 0


# The searcher's messages name the API's fields (min_score, order_by...); the CLI's name its flags.
FLAG_NAMES = [(r"\ba min_score\b", "--min-score"), (r"\bmin_score\b", "--min-score"), (r"\border_by\b", "--order-by"),
              (r"\bper_limit\b", "--per's N"), (r"\bfacet_top\b", "--facet-top"), (r"^facets:", "--facet:"),
              (r"^per:", "--per:"), (r"\boffset \+ k\b", "--offset + --k"), (r"^offset\b", "--offset"),
              (r"^k must", "--k must"), (r"^match=words", "--match words")]


def flag_names(message: str) -> str:
    """A search error's message in the CLI's words: `order_by needs a min_score` -> `--order-by needs
    --min-score`."""
    for field, flag in FLAG_NAMES:
        message = re.sub(field, flag, message)
    return message


def _short(params: dict) -> dict:
    """Parameters with vectors shortened, for reading."""
    return {k: f"[{len(v)} floats]" if isinstance(v, list) and len(v) > 8 else v for k, v in params.items()}


def cmd_embed(args: argparse.Namespace) -> int:
    if not args.text.strip():
        raise QueryError("empty text")
    settings = _settings(args)
    if not settings.clickhouse_url and running_service(Path(settings.db)):   # the service's model, loaded
        with _open(args) as photos:
            model = photos.model
    else:
        model = args.model_ref.get()
    vector = model.encode_texts([args.text])[0]
    print(json.dumps([round(float(x), 7) for x in vector]))
    _say_model(model.label)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from dataclasses import replace
    settings = _settings(args)
    matches = [m.strip() for item in args.match or ["both"] for m in item.split(",") if m.strip()]
    asked: str | list[str] | None = "all" if args.all_models else None
    if settings.model and not args.all_models:
        asked = [ModelRef(settings.model, settings.pretrained).label if settings.pretrained else settings.model]
    # opened with the store's own model: --model names one of the store's models to evaluate, not one to use
    with open_collection(settings=replace(settings, model=None, pretrained=None), create=False, origin="cli",
                         log_searches=False) as photos:
        label = photos.model_label
        report = photos.evaluate(args.judgments, k=args.k, models=asked, match=matches,
                                 filters=[parse_filter(f) for f in args.filter], cutoff=args.cutoff,
                                 from_clicks=args.from_clicks, since=args.since, save=args.save,
                                 progress=not args.quiet)
    for line, what in report.skipped[:20]:
        print(f"skipped line {line}: {what}", file=sys.stderr)
    if len(report.skipped) > 20:
        print(f"skipped {len(report.skipped) - 20} more judgments naming images that are not stored", file=sys.stderr)
    for query in report.no_relevant:
        print(f"no relevant item stored for the query {query!r}: left out of the averages", file=sys.stderr)
    if args.save:
        print(f"saved {report.saved} judgments in the judgments table (sql/queries/eval_metrics.sql)", file=sys.stderr)
    if args.json:
        print(json.dumps(report.as_json(), ensure_ascii=False))
        _note_bundled(label)
        return 0
    names = ("precision_at_k", "recall_at_k", "ndcg_at_k", "mrr")
    if args.per_query:
        for run in report.runs:
            print(f"{run['model']}  match {run['match']}  (P@{report.k}, R@{report.k}, nDCG@{report.k}, RR, query)")
            for q in run["per_query"]:
                values = "  ".join(f"{q[n]:.3f}" if n in q else "    -" for n in names)
                print(f"  {values}  {q['query']}" + (f"  ({q['error']})" if "error" in q else ""))
    width = max(len(r["model"]) for r in report.runs)
    print(f"{'model':<{width}}  {'match':<8}  P@{report.k:<4} R@{report.k:<4} nDCG@{report.k:<2}  MRR    "
          f"({report.queries} queries)")
    for run in report.runs:
        values = "  ".join("  -  " if run[n] is None else f"{run[n]:.3f}" for n in names)
        print(f"{run['model']:<{width}}  {run['match']:<8}  {values}")
    _note_bundled(label)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    if args.action == "use":
        if not args.name:
            raise QueryError("name the model to use: clipsearch models use LABEL (`clipsearch models` lists them)")
        from dataclasses import replace
        with open_collection(settings=replace(_settings(args), model=None, pretrained=None), create=False,
                             origin="cli") as photos:
            photos.check_loaded()
            summary = photos.use_model(args.name, progress=not args.quiet)
        print(f"the store already uses {summary.model}" if summary.already_active else
              f"the store now uses {summary.model}; {summary.previous}'s vectors kept in `embeddings`"
              if summary.switched else summary.line())
        return 0 if summary.switched or summary.already_active else 1
    if args.name:
        raise QueryError(f"unknown models action {args.name!r}; `clipsearch models use LABEL` switches")
    with _open(args) as photos:
        models = photos.models()
    if args.json:
        print(json.dumps(models))
        return 0
    if not models:
        print("no models recorded yet (loads record theirs)")
    for m in models:
        how = "the bundled model" if not m["name"] else \
            f"--model {m['name']}" + (f" --pretrained {m['pretrained']}" if m["pretrained"] else "")
        state = "active" if m["active"] else "kept" if m["complete"] else "re-embedding" if m["rows"] else \
            "no vectors (re-embed to use it again)"
        print(f"{'*' if m['active'] else ' '} {m['label']}  {state}  {m['rows']} images  dim {m['dim']}  ({how})"
              + (f"  index {m['vector_index']}" if m["vector_index"] else ""))
    return 0


def _say_model(model_label: str) -> None:
    """Which model gave a command's vectors (on stderr, after the answer), and the bundled model's note."""
    print(f"model: {model_label}", file=sys.stderr)
    _note_bundled(model_label)


def _note_bundled(model_label: str) -> None:
    """One line on stderr wherever a user meets the bundled model (after the answer): what it knows, and the
    way out."""
    if model_label == BUNDLED_LABEL:
        print(BUNDLED_NOTE, file=sys.stderr)


def cmd_sql(args: argparse.Namespace) -> int:
    if (args.query is None) == (args.file is None):
        raise QueryError("give the SQL as an argument or with --file, not both")
    sql = args.query if args.file is None else _read_file(args.file)
    params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise QueryError(f"--param takes NAME=VALUE, got {item!r}")
        params[name] = value
    with _open(args) as photos:
        _write_bytes(photos.sql(sql, params, fmt=args.format))
    return 0


def _write_bytes(data: bytes) -> None:
    """Write a command's output byte for byte, as clickhouse-client does (`--format Parquet > out.parquet`)."""
    sys.stdout.flush()
    out = getattr(sys.stdout, "buffer", None)
    if out is None:   # a text-only stream (an embedding program's StringIO): text formats still read right
        sys.stdout.write(data.decode("utf-8", "replace"))
        return
    out.write(data)
    out.flush()


def _read_file(path: str) -> str:
    """A SQL file. `sql/...` that is not here names the file shipped with clipsearch, so the README's
    `--file sql/queries/...` works from an installed wheel too, in any folder."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        parts = PurePath(path).parts
        if isinstance(exc, FileNotFoundError) and len(parts) > 1 and parts[0] == "sql" and ".." not in parts:
            try:
                return read_sql("/".join(parts[1:]))
            except OSError:
                pass
        raise QueryError(f"{path}: {exc.strerror}") from None


def cmd_index(args: argparse.Namespace) -> int:
    import time
    with _open(args) as photos:
        start = time.perf_counter()
        if args.filter_column:   # the projections only; the HNSW index is left as it is
            for column in args.filter_column:
                if args.action == "create":
                    photos.add_filter_column(column)
                    print(f"filter column {column}: built in {time.perf_counter() - start:.1f}s")
                elif args.action == "drop":
                    photos.drop_filter_column(column)
        elif args.action == "create":
            tuned = photos.create_index(args.quantization, args.m, args.ef_construction)
            print(f"built the HNSW index over {photos.count()} images in {time.perf_counter() - start:.1f}s; "
                  f"search beam {tuned['beam']} (recall@10 {tuned['recall']} on {tuned['queries']} sample queries, "
                  f"target {tuned['target']}), for images {tuned['image_beam']} (recall@10 {tuned['image_recall']}); "
                  f"an exact ranking took {tuned['exact_ms']:g} ms, an index search {tuned['index_ms']:g} ms")
        elif args.action == "drop":
            photos.drop_index()
        index, state = photos.index(), photos.state()
        beams = f"search beam {state.beam}" + (f", for images {state.image_beam}" if state.image_beam else "") \
            if state.beam else "search beam not tuned"
        print(f"index: {index['type_full']}, {beams}" if index else "index: none (searches scan every row exactly)")
        print(f"filter columns: {', '.join(state.filter_columns) or 'none'}")
    return 0


def cmd_duplicates(args: argparse.Namespace) -> int:
    from clipsearch.images.copies import check_distance
    from clipsearch.images.duplicates import check_mode, check_threshold
    mode = check_mode(args.mode, args.threshold)
    copies = mode == "copies"
    threshold = check_distance(args.threshold) if copies else check_threshold(args.threshold)
    with _open(args) as photos:
        groups = photos.duplicates(threshold, mode=mode)
        missing = photos.hashes_missing() if copies else 0
        label = photos.model_label
    if missing:
        print(f"note: {missing} images lack perceptual hashes and take no part; `clipsearch hashes` "
              "computes them", file=sys.stderr)
    if not copies:   # near-duplicates are the model's judgement: say whose
        _say_model(label)
    if args.json:
        print(json.dumps(groups, ensure_ascii=False, default=str))
        return 0
    if not groups:
        print(f"no copies within {threshold} hash bits" if copies else
              f"no near-duplicates within cosine distance {threshold}")
    for n, group in enumerate(groups, 1):
        apart = f"{group['max_distance']} hash bits" if copies else f"{group['max_distance']:.4f}"
        print(f"group {n}: {len(group['images'])} images, up to {apart} apart")
        for row in group["images"]:
            print(f"  {row['id'][:12]}  {row['width']}x{row['height']}  {row['format']}  {row['path']}")
    return 0


def cmd_hashes(args: argparse.Namespace) -> int:
    with _open(args) as photos:
        summary = photos.backfill_hashes(batch_size=args.batch_size, workers=args.workers, progress=not args.quiet)
    print(summary.line())
    return 0


def _text_columns(value: str | None) -> list[str] | None:
    return None if value is None else [c.strip() for c in value.split(",") if c.strip()]


def cmd_words(args: argparse.Namespace) -> int:
    with _open(args) as photos:
        summary = photos.backfill_words(batch_size=args.batch_size, workers=args.workers, progress=not args.quiet)
    print(summary.line())
    return 0


def cmd_ocr(args: argparse.Namespace) -> int:
    from clipsearch.images.ocr import engine_label
    from clipsearch.loader.ocr import read_text
    engine_label()   # the extra, before the store is opened
    with _open(args) as photos:
        photos.check_loaded()
        summary = read_text(photos.catalog, batch_size=args.batch_size, workers=args.workers,
                            progress=not args.quiet)
    print(summary.line())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from clipsearch.service.app import serve
    if not args.model_ref.default:
        args.model_ref.get()   # a named model that cannot load fails here, before a store is made
    serve(_settings(args), args.host, args.port, args.threads, model=args.model_ref,
          sql_port=args.sql_port, watch=getattr(args, "watch", ()), watch_interval=args.watch_interval)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from clipsearch.service.shapes import make_catalogue
    if not args.no_serve:
        from clipsearch.service.app import check_port
        check_port(args.host, args.port)  # before minutes of work, not after
    if not args.model_ref.default:
        args.model_ref.get()   # as is a named model that cannot load
    manifest = make_catalogue(args.out, args.images)
    print(f"catalogue: {args.images} images, manifest {manifest}")
    with _open_to_add(args) as photos:
        print(photos.load(manifest, progress=not args.quiet).line())
        for text, filters in EXAMPLE_SEARCHES:
            print(f"\n$ clipsearch search {text!r} --k 5" + "".join(f" --filter '{f}'" for f in filters))
            _print_results(photos.search(text, k=5, filters=filters).rows, False)
        print()
        _say_model(photos.model_label)
    if args.no_serve:
        return 0
    print()
    return cmd_serve(args)


def _common_options() -> argparse.ArgumentParser:
    """What every command takes: where the store is and which model."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", help="embedded database folder (default $CLIPSEARCH_DB or ./clipsearch-data); "
                                     "CLICKHOUSE_URL selects a server instead")
    common.add_argument("--model", help="open_clip model name, or 'bundled' (default: the store's model; the "
                                        "bundled one for a new store)")
    common.add_argument("--pretrained", help="open_clip pretrained tag or weights file "
                                             "(\"random\": random weights, for speed tests only)")
    return common


def _serving_options() -> argparse.ArgumentParser:
    """What `serve` and `demo` take: where to listen, and the watched folders' pace."""
    serving = argparse.ArgumentParser(add_help=False)
    serving.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this host only)")
    serving.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serving.add_argument("--allowed-host", action="append", metavar="NAME",
                         help="a Host name both ports answer to besides 127.0.0.1, localhost, ::1 and --host, e.g. "
                              "the name a proxy or the network gives this machine (repeatable; default "
                              "$CLIPSEARCH_ALLOWED_HOSTS, comma-separated); requests naming any other are refused")
    serving.add_argument("--threads", type=int, default=8, help="request threads (default 8)")
    serving.add_argument("--sql-port", type=int, default=0,
                         help="port of the ClickHouse HTTP interface for clipsearch commands and analysts while "
                              "serving an embedded folder (default 0: any free port, printed at start)")
    serving.add_argument("--watch-interval", type=float, default=10.0, metavar="SECONDS",
                         help="seconds between two passes over the --watch folders (default 10)")
    return serving


def _batch_options(p: argparse.ArgumentParser, batch_help: str, batch_size: int, workers_help: str) -> None:
    """The options of the commands that work through every image in batches (load, reembed, hashes)."""
    p.add_argument("--batch-size", type=int, default=batch_size, help=batch_help)
    p.add_argument("--workers", type=int, help=workers_help)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


ENCODE_BATCH = "images encoded and inserted at a time (default 64)"
DECODERS = "decoding processes (default: CPU count)"


def _add_load(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("load", parents=[common], help="load images from a folder or a CSV/JSONL manifest")
    p.add_argument("source", help="a folder (searched recursively) or a .csv / .jsonl manifest with a path column")
    _batch_options(p, ENCODE_BATCH, 64, DECODERS)
    p.add_argument("--restrict-to-folder", action="store_true",
                   help="refuse a manifest that names files outside its own folder (for manifests from others)")
    p.add_argument("--follow-links", action="store_true",
                   help="load the files that links out of the folder point to (a folder's linked files, a manifest "
                        "row's link out of its folder), stored under those files' paths; refused without it")
    p.add_argument("--text-columns", metavar="A,B",
                   help="the manifest columns whose values are the images' words for a search (default: every text "
                        "column); kept for later loads")
    p.add_argument("--labels", help="also label the images zero-shot (see `clipsearch label`)")
    p.add_argument("--prompt", help="label prompt with {} for the label (default 'a photo of a {}')")
    p.add_argument("--name", default="label", help="label set name (default 'label')")
    p.add_argument("--ocr", action="store_true",
                   help="also read the text in the images (signs, receipts, slides) for searches by word; needs "
                        "pip install 'clipsearch[ocr]'")
    p.set_defaults(func=cmd_load)


def _add_reembed(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("reembed", parents=[common],
                       help="give every stored image another model's vector, then switch the store to that model",
                       description="Re-embed every stored image with the model named by --model/--pretrained "
                                   "while the store keeps serving with its current model, then switch the store "
                                   "to the new one in one step (the service, its SQL port, clipTextEmbedding and "
                                   "later commands follow). Safe to interrupt and run again.")
    _batch_options(p, ENCODE_BATCH, 64, DECODERS)
    p.add_argument("--keep", action="store_true",
                   help="keep the current model's vectors (table `embeddings`), to compare the two in SQL")
    p.add_argument("--drop-missing", action="store_true",
                   help="switch even if some images' files are gone or changed since they were loaded: those "
                        "images leave the store (load them again later). Without it the switch waits")
    p.set_defaults(func=cmd_reembed)


def _add_label(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("label", parents=[common], help="zero-shot label images into the labels table")
    p.add_argument("--labels", required=True, help="comma-separated labels, e.g. circle,square,triangle")
    p.add_argument("--prompt", help="prompt with {} for the label (default 'a photo of a {}')")
    p.add_argument("--name", default="label", help="label set name (default 'label')")
    p.add_argument("--filter", action="append", default=[], metavar="EXPR", help="label only matching images")
    p.set_defaults(func=cmd_label)


def _add_search(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("search", parents=[common], help="search by text, image file or stored image id",
                       description="A query is one or more weighted terms: TEXT, --plus, --minus, --image and "
                                   "--similar (each VALUE or VALUE:WEIGHT, repeatable); the score is their "
                                   "weighted cosine similarity, in one ORDER BY.")
    # what to look for
    p.add_argument("text", nargs="?", help="what to look for, e.g. \"a red car at night\"")
    p.add_argument("--image", action="append", default=[], metavar="FILE[:W]", help="query image file (repeatable)")
    p.add_argument("--similar", action="append", default=[], metavar="ID[:W]",
                   help="images like the stored image ID (repeatable)")
    p.add_argument("--plus", action="append", default=[], metavar="TEXT[:W]",
                   help="also like this text, weight W (default 1)")
    p.add_argument("--minus", action="append", default=[], metavar="TEXT[:W]",
                   help="unlike this text: weight -W (default -1), e.g. --minus red")
    p.add_argument("--image-weight", type=float, metavar="W",
                   help="hybrid TEXT + image: weight of the image similarity, 0..1 (default 0.5)")
    p.add_argument("--match", choices=MATCHES, default="both",
                   help="rank by the pictures, by the words of TEXT (file and folder names, titles, metadata, text "
                        "in the image, labels) or both fused (default; where no image holds a word of TEXT: the "
                        "picture ranking itself)")
    # which results, in what order
    p.add_argument("--k", type=int, default=10,
                   help="how many results (default 10, at most 1000; 10000 with --min-score)")
    p.add_argument("--min-score", type=float, metavar="S", help="only results with a score of at least S")
    p.add_argument("--cutoff", choices=CUTOFFS,
                   help="auto: only the first of the k results that stand out (above the largest gap in the score "
                        "curve, when it is wider than the spread above it)")
    p.add_argument("--offset", type=int, default=0, metavar="N", help="skip the first N results (paging)")
    p.add_argument("--order-by", metavar="COLUMN", help="with --min-score: order the matches by a column")
    p.add_argument("--desc", action="store_true", help="with --order-by: largest (latest) first")
    p.add_argument("--per", nargs=2, metavar=("COLUMN", "N"), help="at most N results per value of COLUMN")
    p.add_argument("--moments", type=int, default=1, metavar="N",
                   help="at most N moments per video, its best (default 1)")
    p.add_argument("--facet", action="append", default=[], metavar="COLUMN",
                   help="count the matches per value of COLUMN (a date column: per year); repeatable or a,b,c")
    p.add_argument("--facet-top", type=int, default=FACET_TOP, metavar="N",
                   help=f"facets count the best N matches (default {FACET_TOP}), or all above --min-score")
    p.add_argument("--filter", action="append", default=[], metavar="EXPR",
                   help=filter_help() + "; text compares ignoring case, 2024-06 means all of June; repeat "
                        "to AND them")
    # how to print them
    p.add_argument("--json", action="store_true",
                   help="print a JSON array instead of lines (with --facet: {results, facets})")
    p.add_argument("--show-sql", action="store_true", help="print the SQL ClickHouse ran (to stderr)")
    p.set_defaults(func=cmd_search)


def _add_embed(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("embed", parents=[common], help="print a text's normalized embedding as JSON")
    p.add_argument("text", help="the text to embed")
    p.set_defaults(func=cmd_embed)


def _add_models(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("models", parents=[common], help="list the models the store's vectors come from; "
                                                        "`models use LABEL` switches to a kept one",
                       description="Without an action: the store's models, their images and which one searches "
                                   "use. `use LABEL`: switch the store to a model whose vectors `reembed --keep` "
                                   "kept, in one atomic step, without embedding again (the same switch as "
                                   "reembed's; the vectors of the model left are kept in turn).")
    p.add_argument("action", nargs="?", choices=["use"], help="use: switch the store to a kept model")
    p.add_argument("name", nargs="?", metavar="LABEL", help="the model to switch to, as `clipsearch models` lists it")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.add_argument("--quiet", action="store_true", help="no progress bar (use)")
    p.set_defaults(func=cmd_models)


def _add_eval(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("eval", parents=[common], help="measure search quality on judged queries",
                       description="Run each query of a judgments file (CSV or JSONL: query, and path, id or filter, "
                                   "with an optional grade 0-3) as `search` does and report precision@k, recall@k, "
                                   "nDCG@k and MRR, per query and averaged. --model names one of the store's models "
                                   "(the active one by default, or a kept one).")
    p.add_argument("judgments", nargs="?",
                   help="a .csv or .jsonl file: query (a text, or an image file), and path, id or filter (conditions "
                        "as --filter takes them, joined by ';'), grade (0-3, default 1)")
    p.add_argument("--from-clicks", action="store_true",
                   help="instead of a file: the results people opened from the page's searches, as judgments")
    p.add_argument("--since", metavar="YYYY-MM-DD", help="with --from-clicks: searches made since this day")
    p.add_argument("--save", action="store_true",
                   help="also store the judgments in the judgments table (sql/queries/eval_metrics.sql scores the "
                        "logged searches against them)")
    p.add_argument("--k", type=int, default=10, help="results scored per query (default 10)")
    p.add_argument("--all-models", action="store_true", help="the active model and every kept one, side by side")
    p.add_argument("--match", action="append", metavar="MODE",
                   help=f"{', '.join(MATCHES)} (default both); repeatable or a,b")
    p.add_argument("--filter", action="append", default=[], metavar="EXPR", help="filter every search, as search does")
    p.add_argument("--cutoff", choices=CUTOFFS,
                   help="search with this cutoff (auto: the results that stand out); precision is then of the "
                        "results returned, however few")
    p.add_argument("--per-query", action="store_true", help="also print each query's metrics")
    p.add_argument("--json", action="store_true", help="print {k, queries, runs: [{model, match, ..., per_query}]}")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)


def _add_sql(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("sql", parents=[common], help="run SQL against the configured store")
    p.add_argument("query", nargs="?", help="the SQL, e.g. \"SELECT count() FROM images\"")
    p.add_argument("--file", help="read the SQL from a file (e.g. sql/queries/*.sql)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="bind {NAME:Type} placeholders, as clickhouse-client's --param_NAME does")
    p.add_argument("--format", default="PrettyCompact", help="ClickHouse output format (default PrettyCompact)")
    p.set_defaults(func=cmd_sql)


def _add_index(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("index", parents=[common], help="add, drop or show the HNSW vector index")
    p.add_argument("action", choices=["create", "drop", "status"], help="build it, remove it, or show it")
    p.add_argument("--quantization", default=DEFAULT_QUANTIZATION, choices=VECTOR_QUANTIZATIONS,
                   help=f"how the index stores vectors (default {DEFAULT_QUANTIZATION})")
    p.add_argument("--m", type=int, default=16, help="HNSW neighbours per node (default 16)")
    p.add_argument("--ef-construction", type=int, default=128, help="HNSW build beam width (default 128)")
    p.add_argument("--filter-column", action="append", default=[], metavar="COL",
                   help="instead of the HNSW index, create or drop a filter column: a copy of the table sorted by "
                        "COL, so selective filters on COL read only the rows they match (repeatable; costs the "
                        "table's size on disk again)")
    p.set_defaults(func=cmd_index)


def _add_duplicates(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("duplicates", parents=[common], help="list groups of copies or near-duplicate images")
    p.add_argument("--mode", choices=["copies", "similar"],
                   help="copies: the same picture (re-encoded, resized, converted), by perceptual hash; "
                        "similar: by CLIP distance (default copies, or similar for a threshold between 0 and 1)")
    p.add_argument("--threshold", type=float, metavar="D",
                   help=f"copies: the most differing hash bits, 0-{COPY_MAX_DISTANCE} (default {COPY_DISTANCE}); "
                        f"similar: the largest cosine distance (default {DUPLICATE_THRESHOLD})")
    p.add_argument("--json", action="store_true", help="print a JSON array instead of lines")
    p.set_defaults(func=cmd_duplicates)


def _add_hashes(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("hashes", parents=[common],
                       help="read again from their files what images loaded by earlier releases lack: perceptual "
                            "hashes (for `duplicates`), orientation (sideways phone photos turned upright: size, "
                            "hashes and vector again) and dates")
    _batch_options(p, "images hashed and stored at a time (default 512)", 512,
                   "hashing processes (default: CPU count, at most 8)")
    p.set_defaults(func=cmd_hashes)


def _add_words(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("words", parents=[common],
                       help="give images loaded by earlier releases their words (file and folder names, manifest "
                            "titles, the photos' captions and keywords), for searches by words")
    _batch_options(p, "images read and stored at a time (default 512)", 512,
                   "reading processes (default: CPU count, at most 8)")
    p.set_defaults(func=cmd_words)


def _add_ocr(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ocr", parents=[common],
                       help="read the text in stored images not read yet (signs, receipts, slides), from their "
                            "files, for searches by word; needs pip install 'clipsearch[ocr]'")
    _batch_options(p, "images read and stored at a time (default 64)", 64,
                   "OCR processes (default: CPU count, at most 8)")
    p.set_defaults(func=cmd_ocr)


def _add_serve(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", parents=[common, _serving_options()], help="serve the web page and the JSON API")
    p.add_argument("--watch", action="append", default=[], metavar="DIR",
                   help="keep this folder loaded: new, changed and removed files are picked up (repeatable)")
    p.set_defaults(func=cmd_serve)


def _add_demo(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[common, _serving_options()],
                       help="offline demo: generate a catalogue, load it, search it, serve it")
    p.add_argument("--out", default=DEMO_DIR, help=f"catalogue folder (default {DEMO_DIR})")
    p.add_argument("--images", type=int, default=2000, help="images in the generated catalogue (default 2000)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-serve", action="store_true", help="stop after the example searches")
    p.set_defaults(func=cmd_demo)


# The commands, in the order `clipsearch --help` lists them.
COMMANDS = (_add_load, _add_reembed, _add_label, _add_search, _add_eval, _add_embed, _add_models, _add_sql, _add_index,
            _add_duplicates, _add_hashes, _add_words, _add_ocr, _add_serve, _add_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipsearch", description="CLIP image search in ClickHouse SQL")
    parser.add_argument("--version", action="version", version=f"clipsearch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    common = _common_options()
    for add in COMMANDS:
        add(sub, common)
    return parser


def main(argv: list[str] | None = None, model: ImageTextModel | ModelRef | None = None) -> int:
    """Run one command; `model` (a loaded model, or a ModelRef) replaces the configured one, for tests."""
    args = build_parser().parse_args(argv)
    try:
        args.model_ref = _model(args, model)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ctrl_c = CtrlC()
    try:
        with ctrl_c:
            return args.func(args)
    except ClipsearchError as exc:
        if not ctrl_c.pressed:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # output piped into `head` and closed early: not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    print("interrupted: whole batches already stored are kept; run the same command again to finish",
          file=sys.stderr)
    return 130


class CtrlC:
    """Notes a Ctrl-C while a command runs. One that lands inside the engine (reading a batch from Python)
    comes back as the engine's error, not as KeyboardInterrupt; the note tells the two apart."""

    def __init__(self) -> None:
        self.pressed = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: object) -> None:
        self.pressed = True
        raise KeyboardInterrupt

    def __enter__(self) -> CtrlC:
        in_main_thread = threading.current_thread() is threading.main_thread()
        if in_main_thread and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _model(args: argparse.Namespace, model: ImageTextModel | ModelRef | None) -> ModelRef:
    """The command's one model: `model` if given, else --model/--pretrained or their environment variables
    (none: the store's own model, else the bundled one)."""
    if isinstance(model, ModelRef):
        return model
    if model is not None:
        return ModelRef(model=model)
    settings = Settings.load(model=args.model, pretrained=args.pretrained)
    return ModelRef(settings.model, settings.pretrained)


if __name__ == "__main__":
    sys.exit(main())
