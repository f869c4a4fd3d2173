"""The JSON API: /api/search, /api/library, /api/click, /api/label, /api/images/<id>[/similar|/file], /api/columns,
/api/filters, /api/sql, /api/queries, /healthz."""
from __future__ import annotations

import base64
import io
import itertools
import os
import re
import threading
import urllib.parse

from flask import Blueprint, Response, current_app, jsonify, request, send_file
from PIL import Image, UnidentifiedImageError
from werkzeug.wsgi import wrap_file

from clipsearch.collection import Collection
from clipsearch.errors import ClipsearchError, FileChanged, NotFound, QueryError
from clipsearch.images.decode import FORMAT_NAMES, decode, read_image
from clipsearch.models.bundled import model_notice
from clipsearch.search.filters import filters_from_json, operators_json, parse_filter, roles_json
from clipsearch.search.searcher import SearchResult, Term, weighted
from clipsearch.service import console
from clipsearch.service.openapi import openapi_document
from clipsearch.service.requests import (
    ClickBody,
    DuplicatesQuery,
    FileQuery,
    LabelBody,
    LibraryQuery,
    M,
    SearchBody,
    SearchQuery,
    SimilarQuery,
    SqlBody,
    parse,
)
from clipsearch.store.connection import mark_store_folder, private_folder

api = Blueprint("api", __name__)
QUERY_DECODE_SIZE = 448   # at least this many pixels per side are decoded from a JPEG query image
THUMB_SUFFIX = ".upright.jpg"   # a cached thumbnail's file name: the image's id and this
ID_RE = re.compile(r"[0-9a-f]{1,64}")   # fullmatch: `$` would let a trailing newline through
PAGE_REQUESTS = itertools.count()   # numbers the SQL tab's requests (each its own analysts' client)
PAGE_WAIT_S = 10.0   # how long a SQL-tab query waits for an analysts' turn (it holds one of the page's 8 threads)


def collection() -> Collection:
    return current_app.extensions["clipsearch"]


def _decode_upload(data: bytes) -> Image.Image:
    if not data:
        raise QueryError("the uploaded image is empty")
    try:
        image = read_image(io.BytesIO(data))
        # A JPEG is decoded at a reduced scale (the model sees a few hundred pixels), so a phone's 48
        # megapixels cost little; other formats decode whole, so their limit is far lower.
        limit = current_app.config["MAX_UPLOAD_PIXELS" if image.format != "JPEG" else "MAX_UPLOAD_JPEG_PIXELS"]
        if image.width * image.height > limit:
            raise QueryError(f"the uploaded image is too large ({image.width}x{image.height} pixels; at most "
                             f"{limit // 1_000_000} megapixels{'' if image.format == 'JPEG' else ' unless JPEG'})")
        # upright, as the stored images are; a stripe is cut to what the model keeps where it is encoded
        # (Collection._fit), before the model's resize could make a 1x20000 PNG gigabytes
        return decode(image, QUERY_DECODE_SIZE)
    except QueryError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise QueryError(f"the upload is not an image in a format clipsearch reads ({FORMAT_NAMES})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise QueryError(f"the uploaded image cannot be decoded: {exc}") from None


def _image_from_base64(value: object) -> Image.Image | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise QueryError("image must be a base64 string")
    try:
        data = base64.b64decode(value.split(",")[-1], validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise QueryError("image is not valid base64") from None
    return _decode_upload(data)


def _args(model: type[M]) -> M:
    """The query string as `model` (list fields take every repeat of their name)."""
    lists = {name for name, f in model.model_fields.items() if getattr(f.annotation, "__origin__", None) is list}
    return parse(model, {key: request.args.getlist(key) if key in lists else request.args.get(key)
                         for key in request.args})


def _json_object() -> dict:
    """The request's JSON body, which must be an object."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        raise QueryError("the JSON body is nested too deeply") from None
    if not isinstance(body, dict):
        raise QueryError("the body must be a JSON object")
    return body


def _body(model: type[M]) -> tuple[M, Image.Image | None]:
    """A POST as `model` and its decoded image: a JSON object with a base64 "image", or a multipart
    form with an image file."""
    if request.mimetype == "application/json":
        body = _json_object()
        fields = parse(model, body)
        return fields, _image_from_base64(body.get("image"))
    upload = request.files.get("image")
    fields = parse(model, {key: value for key, value in request.form.items() if key != "image"})
    return fields, _decode_upload(upload.read()) if upload else None


def _search_request() -> dict:
    """The search arguments from a GET query string, a JSON body or a multipart form."""
    if request.method in ("GET", "HEAD"):   # HEAD answers what GET would, without the body
        query = _args(SearchQuery)
        weights = None if query.image_weight is None else {"image": query.image_weight,
                                                           "text": 1 - query.image_weight}
        terms = [Term(text=text, weight=1.0 if weight is None else weight)
                 for text, weight in map(weighted, query.term)]
        return {"text": query.q, "image_id": query.image_id, "filters": [parse_filter(f) for f in query.filter],
                "weights": weights, "terms": terms, "facets": query.facet, "match": query.match, **query.options()}
    body, image = _body(SearchBody)
    terms = [Term(t.text, _image_from_base64(t.image), t.image_id, t.weight) for t in body.terms]
    return {"text": body.text, "image": image, "image_id": body.image_id or None,
            "filters": filters_from_json(body.filters), "weights": body.weights, "terms": terms,
            "facets": body.facets, "match": body.match, **body.options()}


def _response(result: SearchResult) -> Response:
    extra = {} if result.facets is None else {"facets": result.facets, "facets_sql": result.facet_sql}
    return jsonify(results=result.rows, took_ms=result.took_ms, kind=result.kind, strategy=result.strategy,
                   model=result.model, model_notice=model_notice(result.model), match=result.match,
                   sql={"query": result.sql, "params": result.params},
                   next_offset=result.next_offset, search_id=result.search_id, **extra)


@api.route("/api/search", methods=["GET", "POST"])
def search() -> Response:
    return _response(collection().run_search(**_search_request()))


@api.post("/api/click")
def click() -> Response:
    """The page notes which result a person opened from which search: JSON {"search_id" (the search's
    answer's), "image_id", "rank" (from 1)}, into search_clicks. JSON only, and never from another site's page
    (app.py), so no one else's page can write it."""
    if request.mimetype != "application/json":
        raise QueryError("send the click as a JSON object (Content-Type: application/json)")
    body = parse(ClickBody, _json_object())
    collection().record_click(body.search_id, body.image_id, body.rank)
    return jsonify(recorded=True)


def _check_id(image_id: str) -> str:
    if not ID_RE.fullmatch(image_id):
        raise NotFound(f"no image with id {image_id!r}")
    return image_id


@api.get("/api/images/<image_id>")
def image(image_id: str) -> Response:
    return jsonify(collection().get(_check_id(image_id)))


@api.get("/api/library")
def library() -> Response:
    """The library without a query (the page before a search): newest first, a page at a time, with facets."""
    query = _args(LibraryQuery)
    return _response(collection().browse(query.k, [parse_filter(f) for f in query.filter], query.offset,
                                         query.facet))


@api.get("/api/images/<image_id>/similar")
def similar(image_id: str) -> Response:
    query = _args(SimilarQuery)
    result = collection().run_search(image_id=_check_id(image_id), filters=[parse_filter(f) for f in query.filter],
                                     facets=query.facet, **query.options())
    return _response(result)


@api.get("/api/images/<image_id>/file")
def image_file(image_id: str) -> Response:
    """The stored image, or with ?size=thumb a cached JPEG thumbnail. Only paths in the table are served.
    A video moment's is its video (HTTP ranges, so players seek), or its frame's stored thumbnail."""
    row = collection().get(_check_id(image_id))
    if row.get("media") == "video":
        return _video_file(row, _args(FileQuery).size == "thumb")
    row, data = collection().read_file(row["id"])  # verified: still the bytes that were loaded
    if _args(FileQuery).size != "thumb":
        response = send_file(io.BytesIO(data), mimetype=_mimetype(row["format"]), max_age=86400)
        response.headers["Content-Disposition"] = _disposition(os.path.basename(row["path"]))
        return response
    # Named for the upright pixels: thumbnails cached by earlier releases ({id}.jpg) were sideways for
    # photos with an orientation tag, so they are never served again and go when this one is made.
    thumb = current_app.config["THUMB_DIR"] / f"{row['id']}{THUMB_SUFFIX}"
    if not thumb.exists():
        private_folder(thumb.parent)   # thumbnails of private photos: for their owner alone (0700)
        mark_store_folder(thumb.parent)   # a load of the folder holding the cache never reads it as photos
        thumb.with_name(f"{row['id']}.jpg").unlink(missing_ok=True)
        try:
            with read_image(io.BytesIO(data)) as im:
                small = decode(im, current_app.config["THUMB_SIZE"])
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError):
            raise FileChanged(f"the file of image {image_id} no longer decodes") from None
        small.thumbnail((current_app.config["THUMB_SIZE"],) * 2)
        tmp = thumb.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        small.save(tmp, "JPEG", quality=85)
        os.replace(tmp, thumb)  # atomic: concurrent requests never see half a file
    return send_file(thumb, mimetype="image/jpeg", max_age=86400)


VIDEO_TYPES = {"MP4": "video/mp4", "M4V": "video/mp4", "MOV": "video/quicktime", "WEBM": "video/webm",
               "MKV": "video/x-matroska", "AVI": "video/x-msvideo"}


def _video_file(row: dict, thumb: bool) -> Response:
    """A video moment's thumbnail, or its video a range at a time (206 Partial Content for a Range request):
    read from the open file as sent, never whole into memory."""
    if thumb:
        return send_file(io.BytesIO(collection().thumbnail(row["id"])), mimetype="image/jpeg", max_age=86400)
    f = collection().open_video(row)   # verified: still the file loaded, by size and time
    size = os.fstat(f.fileno()).st_size
    response = Response(wrap_file(request.environ, f), mimetype=VIDEO_TYPES.get(row["format"], "video/mp4"),
                        direct_passthrough=True)
    response.headers["Content-Disposition"] = _disposition(os.path.basename(row["path"]))
    response.set_etag(row["video"])
    response.cache_control.max_age = 86400
    response.make_conditional(request.environ, accept_ranges=True, complete_length=size)   # 206 for a Range
    return response


def _mimetype(image_format: str) -> str:
    Image.init()   # every plugin's types: only those imported so far are known before (TIFF was not)
    return {"MPO": "image/jpeg"}.get(image_format.upper()) or Image.MIME.get(image_format.upper(),
                                                                             "application/octet-stream")


def _disposition(name: str) -> str:
    """`inline` with the file's name: as ASCII in `filename` and exactly, percent-encoded, in RFC 5987's
    `filename*`. A name may hold a newline or a quote, which a header value cannot."""
    plain = re.sub(r'[^\x20-\x7e]|["\\]', "_", name)
    return f"inline; filename=\"{plain}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"


@api.post("/api/label")
def label() -> Response:
    """Zero-shot label distribution of one uploaded image.

    JSON {"image": base64, "labels": [...] or "a,b,c", "prompt"} or a multipart form with an image file.
    """
    fields, image = _body(LabelBody)
    if image is None:
        raise QueryError("give an image to label")
    distribution = collection().label_image(image, fields.labels, fields.prompt)
    label = collection().model_label
    return jsonify(labels=distribution, model=label, model_notice=model_notice(label))


@api.get("/api/duplicates")
def duplicates() -> Response:
    """Groups of copies (?mode=copies, the default: perceptual hashes within ?threshold= bits) or of
    near-duplicates (?mode=similar: embeddings within ?threshold= cosine distance), with the threshold and
    the work bounded here (the CLI takes wider ones)."""
    query = _args(DuplicatesQuery)
    groups = collection().duplicates(query.threshold, bounded=True, mode=query.mode)
    by_model = {"model": (label := collection().model_label), "model_notice": model_notice(label)} \
        if query.mode == "similar" else {}   # copies are found by their pixels' hashes, not by the model
    return jsonify(mode=query.mode, threshold=query.threshold, groups=groups, **by_model)


@api.get("/api/columns")
def columns() -> Response:
    """The table's columns, with what a filter form needs: distinct values or a numeric range."""
    return jsonify(columns=collection().column_summaries())


@api.get("/api/filters")
def filters() -> Response:
    """The filter operators, from the one table in search/filters.py: the page reads an address's filters with
    them rather than keeping a copy, and writes its fields' and chips' filters with the operators of `roles`."""
    return jsonify(operators=operators_json(), roles=roles_json())


@api.post("/api/sql")
def sql() -> Response:
    """Run one read-only query (the page's SQL tab and dashboards): JSON {"sql", "params", "format",
    "max_rows"}; answers {columns, rows, row_count, truncated, elapsed_ms, rows_read}, or with
    "format": "csv" the whole result as a CSV download. JSON only, so another site's form cannot post it. The
    tab's queries take turns with the ClickHouse port's analysts (Collection.analyst_turns), its check
    included: when none comes free in PAGE_WAIT_S, 429 {"error": "... try again shortly"} with Retry-After."""
    if request.mimetype != "application/json":
        raise QueryError("send the SQL as a JSON object (Content-Type: application/json)")
    body = parse(SqlBody, _json_object())
    address = request.remote_addr or ""
    # The page has no logins or sessions: each request is a client of its own, and the turns go first to the
    # address with fewest running
    client = f"page|{address}|{next(PAGE_REQUESTS)}"
    with collection().analyst_turns.acquire(client, address, door="page", wait_s=PAGE_WAIT_S):
        if body.format == "csv":
            return Response(console.csv(collection(), body.sql, body.params), mimetype="text/csv",
                            headers={"Content-Disposition": 'attachment; filename="query.csv"'})
        return jsonify(console.run(collection(), body.sql, body.params, body.max_rows))


@api.get("/api/queries")
def queries() -> Response:
    """The analyst queries shipped in sql/queries: [{name, sql, description, params: [{name, type}]}], and
    the dashboard's panels drawn from them (sql/dashboard.json): a panel that needs a column this catalogue
    lacks (a category without a manifest) gives way to its `instead`."""
    from clipsearch.sql import dashboard
    columns = {r["name"] for r in collection().sql(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'images'")}
    panels = [p["instead"] if "instead" in p and not set(p.get("needs", ())) <= columns else p for p in dashboard()]
    return jsonify(queries=console.shipped_queries(), dashboard=panels)


@api.get("/api/openapi.json")
def openapi() -> Response:
    """This API's OpenAPI 3.1 description, generated from the request models."""
    return jsonify(openapi_document())


@api.get("/healthz")
def healthz() -> Response | tuple[Response, int]:
    """ok while the store answers a read of its images' data; else 503 with the reason (its folder moved or
    unplugged, its files unreadable, the server down), which clears by itself when the store is back."""
    photos = collection()
    try:
        photos.catalog.connection.check_reads()
        images = photos.count()
    except ClipsearchError as exc:
        return jsonify(status="unavailable", error=str(exc), backend=photos.backend, model=photos.model_label,
                       model_notice=model_notice(photos.model_label)), 503
    return jsonify(status="ok", backend=photos.backend, images=images, model=photos.model_label,
                   model_notice=model_notice(photos.model_label))
