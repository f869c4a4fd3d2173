"""The HTTP API's requests as pydantic models: one place that parses them and, through `openapi.py`,
describes them. A request that does not fit its model is a 400 with a message naming the field."""
from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator

from clipsearch.analyst.policy import AnalystPolicy
from clipsearch.errors import QueryError
from clipsearch.images.copies import BOUNDED_DISTANCE, DEFAULT_DISTANCE, check_distance
from clipsearch.images.duplicates import BOUNDED_THRESHOLD, DEFAULT_THRESHOLD, check_mode, check_threshold
from clipsearch.images.labels import MAX_LABELS, MAX_PROMPT_CHARS
from clipsearch.models.model import MAX_QUERY_CHARS
from clipsearch.search.filters import FILTER_OPERATORS, JSON_OPERATORS, filter_help
from clipsearch.search.options import (
    FACET_TOP,
    MAX_FACETS,
    MAX_K,
    MAX_K_THRESHOLD,
    MAX_TERMS,
    MAX_WINDOW,
    Options,
    check_k,
    check_whole,
)
from clipsearch.search.signals import MATCHES
from clipsearch.search.where import MAX_FILTERS, MAX_IN_VALUES


def _json_text(value: Any) -> Any:
    """A multipart form carries objects as JSON text; decode it (a JSON body passes as it is)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise ValueError("must be JSON") from None
    except RecursionError:
        raise ValueError("is nested too deeply") from None


K = Annotated[int, BeforeValidator(check_k),
              WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10})]
SearchK = Annotated[int, BeforeValidator(lambda k: check_k(k, MAX_K_THRESHOLD)), WithJsonSchema(
    {"type": "integer", "minimum": 1, "maximum": MAX_K_THRESHOLD, "default": 10,
     "description": f"results per page: at most {MAX_K}, or {MAX_K_THRESHOLD} with a min_score"})]


def _whole(name: str, low: int, high: int) -> BeforeValidator:
    """A whole number from `low` to `high` (digits in a query string too), checked as the library checks it."""
    return BeforeValidator(lambda v: check_whole(name, v, low, high))


def _whole_schema(low: int, high: int, default: int, description: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "integer", "minimum": low, "maximum": high, "default": default,
                           "description": description})


Offset = Annotated[int, _whole("offset", 0, MAX_WINDOW - 1), _whole_schema(
    0, MAX_WINDOW - 1, 0, f"skip this many results (paging); offset + k at most {MAX_WINDOW}")]
PerLimit = Annotated[int, _whole("per_limit", 1, MAX_K), _whole_schema(
    1, MAX_K, 1, "with per: at most this many results per value")]
Rank = Annotated[int, _whole("rank", 1, MAX_WINDOW), _whole_schema(1, MAX_WINDOW, 1, "a place in the results")]
Moments = Annotated[int, _whole("moments", 1, MAX_K), _whole_schema(
    1, MAX_K, 1, "at most this many moments (rows) per video, its best")]
FacetTop = Annotated[int, _whole("facet_top", 1, MAX_WINDOW), _whole_schema(
    1, MAX_WINDOW, FACET_TOP, "without min_score, facets count the best this many matches")]
def _no_bool(value: Any) -> Any:
    """pydantic reads true as 1.0; a number field takes numbers only."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


# The constraints belong to the number inside the Optional: on the union they would be applied to None too
MinScore = Annotated[Annotated[float, BeforeValidator(_no_bool), Field(ge=-2, le=2, allow_inf_nan=False)] | None,
                     Field(description="only results at least this similar (a cosine similarity)")]
Column = Annotated[str, Field(max_length=64)]
Text = Annotated[str, Field(max_length=MAX_QUERY_CHARS)]
ImageId = Annotated[str, Field(max_length=64, description="a full id (32 hex digits) or a unique prefix of 6+")]


# Filters, labels and weights are checked by the library itself (against the table's columns, with its own
# messages); the models take them as they come and describe them for the OpenAPI document.
Filters = Annotated[Any, BeforeValidator(_json_text), WithJsonSchema({
    "description": 'CLI strings ["price<20"], [{"column", "op", "value"}], or {"category": "poster", '
                   f'"price": {{">=": 10}}, "colour": ["red", "blue"]}}; at most {MAX_FILTERS} filters and '
                   f"{MAX_IN_VALUES} values in one list; op one of "
                   + ", ".join(f"{o.symbol} ({o.help})" for o in FILTER_OPERATORS),
    "anyOf": [{"type": "array", "maxItems": MAX_FILTERS, "items": {"anyOf": [
                  {"type": "string", "maxLength": 1000},
                  {"type": "object", "required": ["column", "op", "value"], "properties": {
                      "column": {"type": "string"}, "op": {"enum": list(JSON_OPERATORS)}, "value": {}}}]}},
              {"type": "object", "additionalProperties": {}},
              {"type": "null"}]})]
Weights = Annotated[dict[str, Any] | None, BeforeValidator(_json_text), WithJsonSchema({
    "description": "with text and an image: the share of each in the ranking",
    "anyOf": [{"type": "object", "additionalProperties": False, "properties": {
        "image": {"type": "number", "minimum": 0}, "text": {"type": "number", "minimum": 0}}}, {"type": "null"}]})]
Labels = Annotated[Any, WithJsonSchema({
    "description": f"2 to {MAX_LABELS} distinct labels, as a list or one comma-separated string",
    "anyOf": [{"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": MAX_LABELS},
              {"type": "string"}]})]


FILTER_HELP = filter_help()   # the CLI string forms, from the operator table


class Results(BaseModel):
    """What every search shares: how many, which page, the score cut, the order, diversity, facets."""
    k: SearchK = 10
    offset: Offset = 0
    min_score: MinScore = None
    order_by: Column | None = Field(None, description="with min_score: order the matches by this column")
    desc: bool = Field(False, description="with order_by: largest (latest) first")
    per: Column | None = Field(None, description="at most per_limit results per value of this column")
    per_limit: PerLimit = 1
    moments: Moments = 1
    facet_top: FacetTop = FACET_TOP
    cutoff: Literal["auto"] | None = Field(None, description="auto: only the first of the k results that stand "
                                                             "out (above the largest gap in the score curve)")

    def options(self) -> dict:
        """The fields as Searcher.search keyword arguments."""
        return {"k": self.k, "options": Options(self.offset, self.min_score, self.order_by, self.desc, self.per,
                                                self.per_limit, cutoff=self.cutoff, moments=self.moments),
                "facet_top": self.facet_top}


Match = Annotated[Literal[MATCHES], WithJsonSchema({   # type: ignore[valid-type]
    "enum": list(MATCHES), "default": "both",
    "description": "rank by the pictures, by the words of the text (file and folder names, titles, metadata, "
                   "text in the image, labels) or both, fused (where no image holds a word of the text: the "
                   "picture ranking itself); each result's `match` says its ranks and which words matched where"})]


class SearchQuery(Results):
    """GET /api/search"""
    match: Match = "both"
    q: Text | None = Field(None, description="what to look for")
    image_id: ImageId | None = Field(None, description="rank by a stored image (full id or a unique prefix)")
    filter: list[Annotated[str, Field(max_length=1000)]] = Field(
        default_factory=list, max_length=MAX_FILTERS, description=FILTER_HELP)
    image_weight: Annotated[float, BeforeValidator(_no_bool), Field(ge=0, le=1, allow_inf_nan=False)] | None = \
        Field(None, description="with q and image_id: the image's share of the ranking")
    term: list[Annotated[str, Field(max_length=MAX_QUERY_CHARS + 20)]] = Field(
        default_factory=list, max_length=MAX_TERMS, description="more texts, TEXT or TEXT:WEIGHT (negative: unlike it)")
    facet: list[Column] = Field(default_factory=list, max_length=MAX_FACETS,
                                description="count the matches per value of this column (a date column: per year)")


class TermBody(BaseModel):
    """One term of a query: a text, an image (base64) or a stored image's id, and its weight."""
    model_config = ConfigDict(extra="forbid")
    text: Text | None = None
    image: str | None = Field(None, description="base64")
    image_id: ImageId | None = None
    weight: Annotated[float, BeforeValidator(_no_bool)] = Field(1.0, ge=-1000, le=1000, allow_inf_nan=False,
                                                                description="negative: unlike it")


class SearchBody(Results):
    """POST /api/search, as JSON; a multipart form has the same fields with `image` as a file and
    `filters` / `weights` / `terms` / `facets` as JSON text."""
    match: Match = "both"
    text: Text | None = None
    image: str | None = Field(None, description="the query image, base64 (a data: URL is fine)")
    image_id: ImageId | None = None
    filters: Filters = None
    weights: Weights = None
    terms: Annotated[list[TermBody], BeforeValidator(_json_text), Field(max_length=MAX_TERMS)] = Field(
        default_factory=list, description="more terms: [{\"text\": \"night\", \"weight\": 0.5}, "
                                          "{\"text\": \"people\", \"weight\": -1}, {\"image_id\": ...}]")
    facets: Annotated[list[Column], BeforeValidator(_json_text), Field(max_length=MAX_FACETS)] = Field(
        default_factory=list, description="count the matches per value of these columns (a date column: per year)")


class SimilarQuery(Results):
    """GET /api/images/{id}/similar"""
    filter: list[Annotated[str, Field(max_length=1000)]] = Field(default_factory=list, max_length=MAX_FILTERS,
                                                                 description=FILTER_HELP)
    facet: list[Column] = Field(default_factory=list, max_length=MAX_FACETS)


class LibraryQuery(BaseModel):
    """GET /api/library"""
    k: SearchK = 24
    offset: Offset = 0
    filter: list[Annotated[str, Field(max_length=1000)]] = Field(default_factory=list, max_length=MAX_FILTERS,
                                                                 description=FILTER_HELP)
    facet: list[Column] = Field(default_factory=list, max_length=MAX_FACETS,
                                description="count the images per value of this column (a date column: per year)")


class FileQuery(BaseModel):
    """GET /api/images/{id}/file"""
    size: Literal["full", "thumb"] = Field("full", description="thumb: a cached JPEG of at most 256 pixels")


class DuplicatesQuery(BaseModel):
    """GET /api/duplicates"""
    mode: Annotated[Literal["copies", "similar"] | None, WithJsonSchema(
        {"enum": ["copies", "similar"], "default": "copies",
         "description": "copies: the same picture (re-encoded, resized, converted), by perceptual hash; similar: by "
                        "CLIP distance. Without it: copies, or similar for a threshold between 0 and 1"})] = None
    threshold: Annotated[float | None, WithJsonSchema(
        {"type": "number", "minimum": 0, "maximum": BOUNDED_DISTANCE,
         "description": f"copies: the most differing hash bits, a whole number (default {DEFAULT_DISTANCE}, at most "
                        f"{BOUNDED_DISTANCE}); similar: the largest cosine distance within a group (default "
                        f"{DEFAULT_THRESHOLD}, at most {BOUNDED_THRESHOLD})"})] = None

    @model_validator(mode="after")
    def _threshold_of_mode(self) -> DuplicatesQuery:
        self.mode = check_mode(self.mode, self.threshold)  # type: ignore[assignment]
        self.threshold = check_distance(self.threshold, BOUNDED_DISTANCE) if self.mode == "copies" else \
            check_threshold(self.threshold, BOUNDED_THRESHOLD)
        return self


class LabelBody(BaseModel):
    """POST /api/label, as JSON (or a multipart form with `image` as a file)"""
    image: str | None = Field(None, description="the image, base64")
    labels: Labels = None
    prompt: Annotated[str, Field(max_length=MAX_PROMPT_CHARS)] | None = Field(
        None, description="with {} where the label goes; default 'a photo of a {}'")


MAX_SQL_CHARS = 20_000
MAX_SQL_PARAMS = 100
MAX_SQL_PARAM_CHARS = 10_000
MAX_SQL_ROWS: int = AnalystPolicy.HELD_RESULT_LIMITS["max_result_rows"]   # the analyst session's own
SQL_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _sql_params(value: Any) -> dict[str, str | int | float]:
    """{name: string or number}, the values of the SQL's {name:Type} placeholders (bound, never pasted)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("must be an object of name: string or number")
    if len(value) > MAX_SQL_PARAMS:
        raise ValueError(f"is {len(value)} parameters; at most {MAX_SQL_PARAMS}")
    for name, v in value.items():
        if not SQL_PARAM_NAME.match(name):
            raise ValueError(f"has a name {name[:70]!r} that is not letters, digits and _")
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ValueError(f"{name} must be a string or a number")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number")
        if isinstance(v, str) and len(v) > MAX_SQL_PARAM_CHARS:
            raise ValueError(f"{name} is {len(v)} characters; at most {MAX_SQL_PARAM_CHARS}")
    return value


SqlParams = Annotated[Any, BeforeValidator(_sql_params), WithJsonSchema({
    "description": "values for the SQL's {name:Type} placeholders, bound by ClickHouse",
    "anyOf": [{"type": "object", "maxProperties": MAX_SQL_PARAMS,
               "propertyNames": {"pattern": SQL_PARAM_NAME.pattern},
               "additionalProperties": {"anyOf": [{"type": "string", "maxLength": MAX_SQL_PARAM_CHARS},
                                                  {"type": "number"}]}},
              {"type": "null"}]})]


class SqlBody(BaseModel):
    """POST /api/sql, as JSON"""
    model_config = ConfigDict(extra="forbid")
    sql: Annotated[str, Field(max_length=MAX_SQL_CHARS)] = Field(
        description="one read-only query: SELECT, WITH, SHOW, DESCRIBE, EXPLAIN or EXISTS")
    params: SqlParams = None
    format: Literal["json", "csv"] = Field("json", description="csv: the whole result as a CSV download")
    max_rows: Annotated[int, Field(ge=1, le=MAX_SQL_ROWS, strict=True)] = Field(
        1000, description="json: at most this many rows in the answer (row_count says how many there were)")


class ClickBody(BaseModel):
    """POST /api/click, as JSON"""
    model_config = ConfigDict(extra="forbid")
    # the library checks them (Collection.record_click), with its own messages
    search_id: Annotated[str, Field(max_length=64)] = Field(description="the search_id of the search's answer")
    image_id: ImageId = Field(description="the result opened")
    rank: Rank = Field(description="its place in the search's results, from 1")


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Any) -> M:
    """`data` as `model`, or a QueryError whose message names the first field that does not fit."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise QueryError(_message(exc.errors()[0])) from None
    except RecursionError:
        raise QueryError("the request is nested too deeply") from None


def _message(error: Any) -> str:
    field = ".".join(str(part) for part in error["loc"] if not isinstance(part, int)) or "the request"
    kind, text = error["type"], error["msg"]
    if kind == "value_error":
        text = text.removeprefix("Value error, ")  # the library's own message, or _json_text's predicate
        return f"{field} {text}" if text.startswith(("must ", "is ")) else text
    plain = {"string_type": "must be a string", "missing": "is required", "extra_forbidden": "is not a known field",
             "float_type": "must be a number", "float_parsing": "must be a number", "model_type": "must be an object",
             "dict_type": "must be an object", "list_type": "must be a list",
             "string_unicode": "is not valid Unicode text (it holds a lone surrogate, such as \\ud800)"}
    if kind in plain:
        return f"{field} {plain[kind]}"
    if kind == "string_too_long":
        return f"{field} is {len(error['input'])} characters; at most {error['ctx']['max_length']}"
    return f"{field}: {text[:1].lower()}{text[1:]}"
