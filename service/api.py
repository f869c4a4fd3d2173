"""The JSON API: /api/search, /api/label, /api/images/<id>[/similar|/file], /api/columns, /healthz."""
from __future__ import annotations

import base64
import io
import json
import os
import re
import threading
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_file
from PIL import Image, UnidentifiedImageError

from ..collection import Collection
from ..errors import FileChanged, NotFound, QueryError
from ..model import decode
from ..query import filters_from_json, parse_filter
from ..search import SearchResult

api = Blueprint("api", __name__)
QUERY_DECODE_SIZE = 448   # at least this many pixels per side are decoded from a JPEG query image
ID_RE = re.compile(r"^[0-9a-f]{1,64}$")


def collection() -> Collection:
    return current_app.extensions["clipsearch"]


def _decode_upload(data: bytes) -> Image.Image:
    if not data:
        raise QueryError("the uploaded image is empty")
    try:
        image = Image.open(io.BytesIO(data))
        # A JPEG is decoded at a reduced scale (the model sees a few hundred pixels), so a phone's 48
        # megapixels cost little; other formats decode whole, so their limit is far lower.
        limit = current_app.config["MAX_UPLOAD_PIXELS" if image.format != "JPEG" else "MAX_UPLOAD_JPEG_PIXELS"]
        if image.width * image.height > limit:
            raise QueryError(f"the uploaded image is too large ({image.width}x{image.height} pixels; at most "
                             f"{limit // 1_000_000} megapixels{'' if image.format == 'JPEG' else ' unless JPEG'})")
        return decode(image, QUERY_DECODE_SIZE)
    except QueryError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise QueryError("the upload is not an image that can be read") from None
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


def _json_field(value: Any, name: str) -> Any:
    if value is None or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise QueryError(f"{name} must be JSON") from None
    except RecursionError:
        raise QueryError(f"{name} is nested too deeply") from None


def _fields_and_image() -> tuple[Mapping[str, Any], Image.Image | None]:
    """A POST's fields and its decoded image: a JSON object with base64 "image", or a multipart form."""
    if request.mimetype == "application/json":
        try:
            body = request.get_json(silent=True)
        except RecursionError:
            raise QueryError("the JSON body is nested too deeply") from None
        if not isinstance(body, dict):
            raise QueryError("the body must be a JSON object")
        return body, _image_from_base64(body.get("image"))
    upload = request.files.get("image")
    return request.form, _decode_upload(upload.read()) if upload else None


def _search_request() -> dict:
    """The search arguments from a GET query string, a JSON body or a multipart form."""
    if request.method == "GET":
        args = request.args
        filters = [parse_filter(f) for f in args.getlist("filter")]
        weight = args.get("image_weight")
        weights = None
        if weight is not None:
            try:
                weights = {"image": float(weight), "text": 1 - float(weight)}
            except ValueError:
                raise QueryError("image_weight must be a number between 0 and 1") from None
        return {"text": args.get("q"), "image_id": args.get("image_id"), "k": args.get("k", 10),
                "filters": filters, "weights": weights}
    fields, image = _fields_and_image()
    text = fields.get("text")
    if text is not None and not isinstance(text, str):
        raise QueryError("text must be a string")
    image_id = fields.get("image_id")
    if image_id is not None and not isinstance(image_id, str):
        raise QueryError("image_id must be a string")
    weights = _json_field(fields.get("weights"), "weights")
    if weights is not None and not isinstance(weights, dict):
        raise QueryError('weights must be an object like {"image": 0.7, "text": 0.3}')
    return {"text": text, "image": image, "image_id": image_id or None, "k": fields.get("k", 10),
            "filters": filters_from_json(_json_field(fields.get("filters"), "filters")), "weights": weights}


def _response(result: SearchResult) -> Response:
    return jsonify(results=result.rows, took_ms=result.took_ms, kind=result.kind, strategy=result.strategy,
                   sql={"query": result.sql, "params": result.params})


@api.route("/api/search", methods=["GET", "POST"])
def search() -> Response:
    return _response(collection().searcher.search(**_search_request()))


def _check_id(image_id: str) -> str:
    if not ID_RE.match(image_id):
        raise NotFound(f"no image with id {image_id!r}")
    return image_id


@api.get("/api/images/<image_id>")
def image(image_id: str) -> Response:
    return jsonify(collection().get(_check_id(image_id)))


@api.get("/api/images/<image_id>/similar")
def similar(image_id: str) -> Response:
    args = request.args
    result = collection().searcher.search(image_id=_check_id(image_id), k=args.get("k", 10),
                                          filters=[parse_filter(f) for f in args.getlist("filter")])
    return _response(result)


@api.get("/api/images/<image_id>/file")
def image_file(image_id: str) -> Response:
    """The stored image, or with ?size=thumb a cached JPEG thumbnail. Only paths in the table are served."""
    row, data = collection().read_file(_check_id(image_id))  # verified: still the bytes that were loaded
    if request.args.get("size") != "thumb":
        return send_file(io.BytesIO(data), mimetype=_mimetype(row["format"]), max_age=86400,
                         download_name=os.path.basename(row["path"]))
    thumb = current_app.config["THUMB_DIR"] / f"{row['id']}.jpg"
    if not thumb.exists():
        thumb.parent.mkdir(parents=True, exist_ok=True)
        try:
            with Image.open(io.BytesIO(data)) as im:
                small = decode(im, current_app.config["THUMB_SIZE"])
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError):
            raise FileChanged(f"the file of image {image_id} no longer decodes") from None
        small.thumbnail((current_app.config["THUMB_SIZE"],) * 2)
        tmp = thumb.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        small.save(tmp, "JPEG", quality=85)
        os.replace(tmp, thumb)  # atomic: concurrent requests never see half a file
    return send_file(thumb, mimetype="image/jpeg", max_age=86400)


def _mimetype(image_format: str) -> str:
    return Image.MIME.get(image_format.upper(), "application/octet-stream")


@api.post("/api/label")
def label() -> Response:
    """Zero-shot label distribution of one uploaded image.

    JSON {"image": base64, "labels": [...] or "a,b,c", "prompt"} or a multipart form with an image file.
    """
    from ..labels import label_vector
    fields, image = _fields_and_image()
    if image is None:
        raise QueryError("give an image to label")
    model = collection().model
    distribution = label_vector(collection().catalog, model, model.encode_images([image])[0], fields.get("labels"),
                                fields.get("prompt"))
    return jsonify(labels=distribution, model=model.label)


@api.get("/api/duplicates")
def duplicates() -> Response:
    """Groups of near-duplicate images; ?threshold= is the largest cosine distance within a group
    (at most BOUNDED_THRESHOLD here, with the work bounded; the CLI takes wider ones)."""
    from ..duplicates import BOUNDED_THRESHOLD, check_threshold
    threshold = check_threshold(request.args.get("threshold"), BOUNDED_THRESHOLD)
    groups = collection().duplicates(threshold, bounded=True)
    return jsonify(threshold=threshold, groups=groups)


@api.get("/api/columns")
def columns() -> Response:
    """The table's columns, with what a filter form needs: distinct values or a numeric range."""
    return jsonify(columns=collection().catalog.column_summaries())


@api.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok", backend=collection().backend, images=collection().count())
