"""Building the search SQL: filters and the cosineDistance ranking, values always bound as parameters."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clipsearch.errors import QueryError
from clipsearch.images.hashes import HASH_COLUMNS  # perceptual hashes: compared bitwise, not shown with results
from clipsearch.store.connection import quote_identifier

NEAR = "near"            # the pseudo-column of `near=LAT,LON,KM`: photos within KM of a place (EXIF GPS)
NUMERIC_TYPE = re.compile(r"^(U?Int\d+|Float\d+|Decimal)")
TIME_TYPE = re.compile(r"^(Date|DateTime)")
NOT_FILTERABLE = {"embedding", *HASH_COLUMNS}  # vectors and hashes, not metadata
HIDDEN = ", ".join(("embedding", *HASH_COLUMNS))  # left out of search results
MAX_K = 1000
MAX_K_THRESHOLD = 10_000  # k with a min_score: every match above it, a page at a time
MAX_WINDOW = 10_000       # offset + k: the rows one search ranks to answer a page
MAX_TERMS = 16            # texts, images and stored ids in one query
MAX_FACETS = 8            # columns counted per search
FACET_TOP = 100           # without a min_score, facets count the best FACET_TOP matches
MAX_FACET_VALUES = 50     # values per facet, the most frequent
MAX_IN_VALUES = 1000     # values in one 'in' filter, bound as one array parameter
MAX_FILTERS = 100


@dataclass(frozen=True)
class Filter:
    column: str
    op: str
    value: object


# Names the search SQL gives its own expressions (aliases, lambda parameters): quoted, with a '$' that no
# column name can hold (quote_identifier takes letters, digits and _), so no manifest column is hidden by one.
LAMBDA = "`$x`"


@dataclass(frozen=True)
class Operator:
    """One filter operator. FILTER_OPERATORS is the only list of them: the parser, the SQL, the CLI and API help,
    the OpenAPI enum and the page (GET /api/filters) all read it, so a new operator is one entry (and its test).

    The SQL is a template per kind of column: {col} is the column, {v} the bound value (for a list: one array
    parameter). A date that names a period (2024-06) fills `date` with the period's {start} and {end}; a point in
    time compares like a number. In `dates`, {any} is "the date lies in one of the listed periods". `default`
    serves every kind that has no template of its own; a kind with none at all is a 400 that says so."""
    symbol: str               # {"op": symbol} in JSON; between column and value in the CLI form
    help: str                 # a few words for people: errors, the page, the OpenAPI document
    cli: str = ""             # how the CLI string form writes it ("COL>=N"); "" for JSON-only operators
    takes: str = "one"        # "one" value, a "list" of values, "either", or "none" (`is null`)
    many: str = ""            # the operator a CLI value `A|B` turns it into (`=` -> `in`)
    number: str = ""
    text: str = ""
    date: str = ""
    array: str = ""           # an Array column; the value is one element
    numbers: str = ""         # ...with a list of values
    texts: str = ""
    dates: str = ""
    default: str = ""


_IN_TEXTS = f"(lowerUTF8({{col}}) IN arrayMap({LAMBDA} -> lowerUTF8({LAMBDA}), {{v}}))"   # case-insensitive
FILTER_OPERATORS = (
    Operator("=", "equals", "COL=V or A|B (any of them)", many="in",
             number="{col} = {v}", text="lowerUTF8({col}) = lowerUTF8({v})",
             date="({col} >= {start} AND {col} < {end})"),
    Operator("!=", "differs", "COL!=V or A|B (none of them)", many="not in",
             number="{col} != {v}", text="lowerUTF8({col}) != lowerUTF8({v})",
             date="NOT ({col} >= {start} AND {col} < {end})"),
    Operator(">=", "at least", "COL>=N", number="{col} >= {v}", text="{col} >= {v}", date="{col} >= {start}"),
    Operator("<=", "at most", "COL<=N", number="{col} <= {v}", text="{col} <= {v}", date="{col} < {end}"),
    Operator(">", "more than", "COL>N", number="{col} > {v}", text="{col} > {v}", date="{col} >= {end}"),
    Operator("<", "less than", "COL<N", number="{col} < {v}", text="{col} < {v}", date="{col} < {start}"),
    Operator("~=", "contains", "COL~=TEXT or A|B (contains)", takes="either", many="~=",
             text="positionCaseInsensitiveUTF8({col}, {v}) > 0",
             texts=f"arrayExists({LAMBDA} -> positionCaseInsensitiveUTF8({{col}}, {LAMBDA}) > 0, {{v}})"),
    Operator("in", "any of a list", takes="list", numbers="({col} IN {v})", texts=_IN_TEXTS, dates="{any}"),
    Operator("not in", "none of a list", takes="list", numbers="NOT ({col} IN {v})", texts=f"NOT {_IN_TEXTS}",
             dates="NOT {any}"),
    Operator("has", "holds the value", array="has({col}, {v})"),
    # Text columns without a value hold '' (camera) or NULL (manifest columns): both count as null.
    Operator("is null", "has no value", "'COL is null'", takes="none",
             default="{col} IS NULL", text="({col} IS NULL OR {col} = '')"),
    Operator("is not null", "has a value", "'COL is not null'", takes="none",
             default="NOT {col} IS NULL", text="NOT ({col} IS NULL OR {col} = '')"),
)
# Read at import by the request models (the OpenAPI enum); the functions below read the table itself.
OPERATORS = tuple(o.symbol for o in FILTER_OPERATORS if o.cli and o.takes != "none")  # the CLI's COL<op>VALUE
JSON_OPERATORS = tuple(o.symbol for o in FILTER_OPERATORS)


def operator(symbol: object) -> Operator | None:
    return next((o for o in FILTER_OPERATORS if o.symbol == symbol), None)


def filter_help() -> str:
    """The CLI string forms, for the CLI's and the API's help."""
    return ", ".join([o.cli for o in FILTER_OPERATORS if o.cli] + ["near=LAT,LON,KM"])


def operators_json() -> list[dict]:
    """The operators as GET /api/filters serves them: the page parses an address's filters with these."""
    return [{"op": o.symbol, "help": o.help, "cli": o.cli, "takes": o.takes, "many": o.many or None}
            for o in FILTER_OPERATORS]


def parse_filter(expr: str) -> Filter:
    """A filter in the CLI string form: `COL<op>VALUE` for each operator with a `cli` form (`price>=10`,
    `category=A|B` any of them), `COL is [not] null`, `near=LAT,LON,KM`. The patterns come from the table."""
    forms = [o for o in FILTER_OPERATORS if o.cli]
    infix = [o for o in forms if o.takes != "none"]
    words = [o for o in forms if o.takes == "none"]
    column = "[^" + re.escape("".join({ch for o in infix for ch in o.symbol})) + r"\s]+"   # holds no operator
    nulls = "|".join(r"\s+".join(map(re.escape, o.symbol.split())) for o in words)  # `is  NOT null` too
    null = re.match(rf"^\s*({column})\s+({nulls})\s*$", expr, re.IGNORECASE) if nulls else None
    if null:
        return Filter(null.group(1), " ".join(null.group(2).lower().split()), None)
    ops = "|".join(re.escape(o.symbol) for o in sorted(infix, key=lambda o: -len(o.symbol)))  # `>=` before `>`
    match = re.match(rf"^\s*({column})\s*({ops})\s*(.*?)\s*$", expr, re.DOTALL)
    if not match:
        raise QueryError(f"cannot parse filter {expr!r}: expected COLUMN OP VALUE with OP one of "
                         + " ".join(o.symbol for o in infix) + "".join(f", or COLUMN {o.symbol}" for o in words))
    name, symbol, value = match.groups()
    found = operator(symbol)   # one of `infix`, which the pattern was made of
    many = found.many if found else None
    if "|" in value and many and name != NEAR:
        return Filter(name, many, value.split("|"))
    return Filter(name, symbol, value)


def base_type(ch_type: str) -> str:
    """`LowCardinality(Nullable(String))` -> `String`."""
    while True:
        inner = re.match(r"^(?:Nullable|LowCardinality)\((.*)\)$", ch_type)
        if not inner:
            return ch_type
        ch_type = inner.group(1)


def vector_alias(i: int) -> str:
    return f"`$v{i}`"


NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", re.ASCII)  # not Python's 1_000, nan, inf


def _number(column: str, value: Any) -> float:
    """A filter value for a numeric column: a finite number (NaN and infinities compare as nothing useful and
    are not JSON, so they are refused rather than echoed back in the response)."""
    number = math.nan
    if isinstance(value, str) and NUMBER.fullmatch(value) or isinstance(value, (int, float)) \
            and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:   # an int past the float range
            pass
    if not math.isfinite(number):
        raise QueryError(f"column {column!r} is numeric; {value!r} is not a number (finite, in decimal digits)")
    return number


def check_text(what: str, value: str) -> str:
    """`value` if it is text the store can take: a lone surrogate (JSON's "\\ud800", or a command line's
    undecodable bytes) is not valid Unicode and would fail deep in the database driver."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryError(f"{what} is not valid Unicode text (it holds a lone surrogate, such as \\ud800)") from None
    return value


def _text(column: str, value: Any) -> str:
    """A filter value for a text or date column: one value, as text."""
    if isinstance(value, (dict, list)) or value is None:
        raise QueryError(f"column {column!r} needs a single value, got {value!r}")
    return check_text(f"the value for column {column!r}", str(value))


def _bind_value(column: str, kind: str, value: Any, name: str, params: dict) -> str:
    """Bind one filter value for a column of type `kind`; returns its SQL placeholder."""
    if NUMERIC_TYPE.match(kind):
        params[name] = _number(column, value)
        return f"{{{name}:Float64}}"
    params[name] = _text(column, value)
    if TIME_TYPE.match(kind):
        params[name] = parse_time(column, params[name])[0]
        return f"parseDateTime64BestEffort({{{name}:String}})"
    if kind == "String":
        return f"{{{name}:String}}"
    raise QueryError(f"column {column!r} has type {kind}, which filters do not support")


TIME_PERIODS = (("%Y", "YEAR"), ("%Y-%m", "MONTH"), ("%Y-%m-%d", "DAY"))  # besides ISO 8601 times


def parse_time(column: str, text: str) -> tuple[str, str | None]:
    """A date or time a user typed, checked here so a typo is a clear error, as ISO text for ClickHouse,
    with the period it names: YEAR (2024), MONTH (2024-06), DAY (2024-06-01) or None (a point in time)."""
    text = text.strip()
    for fmt, unit in TIME_PERIODS:
        try:
            return datetime.strptime(text, fmt).isoformat(sep=" "), unit
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(text).isoformat(sep=" "), None
    except ValueError:
        raise QueryError(f"column {column!r} holds dates; {text!r} is not a date: use 2024-06-01, "
                         "2024-06-01 12:30:00, 2024-06 or 2024") from None


KINDS = {"number": "a number", "text": "a text", "date": "a date", "array": "an array"}   # for error messages


def _kind(ch_type: str) -> str:
    """Which of an operator's templates a column (its base type) takes: number, text, date, array, or ""."""
    if NUMERIC_TYPE.match(ch_type):
        return "number"
    if TIME_TYPE.match(ch_type):
        return "date"
    if ch_type == "String":
        return "text"
    return "array" if ch_type.startswith("Array(") else ""


def _template(op: Operator, kind: str, column: str, ch_type: str, many: bool = False) -> str:
    """`op`'s SQL for a column of `kind` (`many`: with a list of values), or a 400 that says what it works on:
    a missing template is a clear error, never a KeyError."""
    template = (getattr(op, kind + "s" if many else kind, "") if kind else "") or op.default
    if template:
        return template
    if not kind:
        raise QueryError(f"column {column!r} has type {ch_type}, which filters do not support")
    if kind == "array":
        ops = " or ".join(repr(o.symbol) for o in FILTER_OPERATORS if o.array)
        raise QueryError(f"column {column!r} is an array: filter it with {ops}")
    kinds = " or ".join(words for k, words in KINDS.items() if getattr(op, k) or getattr(op, k + "s", ""))
    raise QueryError(f"{op.symbol!r} ({op.help}) needs {kinds} column; {column!r} is {ch_type}")


def _condition(column: str, ch_type: str, op: Operator, value: Any, name: str, params: dict) -> str:
    """`column op value` as SQL, from the operator's template for the column's kind, the value bound in `params`:
    numbers compare as numbers, text case-insensitively, dates by the period they name (`taken_at=2024-06` is
    all of June, `taken_at<=2024-06` up to its end)."""
    col = quote_identifier(column)
    kind = _kind(ch_type)
    if op.takes == "none":
        return _template(op, kind, column, ch_type).format(col=col)
    if isinstance(value, list) and op.takes in ("list", "either"):
        return _any_of(column, ch_type, op, value, name, params)
    if op.takes == "list":
        raise QueryError(f"{op.symbol!r} needs a non-empty list of values for {column!r}")
    # Whether the operator works on this kind of column is said before anything about the value.
    template = _template(op, "number" if kind == "date" and not op.date else kind, column, ch_type)
    if isinstance(value, list):
        several = ", ".join(repr(o.symbol) + (f" ({o.many})" if o.many != o.symbol else "")
                            for o in FILTER_OPERATORS if o.many)
        raise QueryError(f"{op.symbol!r} takes one value; several are for {several}")
    if kind == "date":
        params[name], unit = parse_time(column, _text(column, value))
        start = f"parseDateTime64BestEffort({{{name}:String}})"
        if unit is None:   # a point in time compares like a number
            return _template(op, "number", column, ch_type).format(col=col, v=start)
        return _template(op, kind, column, ch_type).format(col=col, start=start, end=f"{start} + INTERVAL 1 {unit}")
    if kind == "array":   # the value is one element, bound as the element's type
        ch_type = base_type(ch_type[len("Array("):-1])
    return template.format(col=col, v=_bind_value(column, ch_type, value, name, params))


def _any_of(column: str, ch_type: str, op: Operator, values: list, name: str, params: dict) -> str:
    """`column` against a list of values, the list bound as ONE array parameter: as a thousand literals OR'ed
    together, five such filters passed max_query_size and a hundred took seconds to parse."""
    kind = _kind(ch_type)
    template = _template(op, kind, column, ch_type, many=True)
    if not values:
        raise QueryError(f"{op.symbol!r} needs a non-empty list of values for {column!r}")
    if len(values) > MAX_IN_VALUES:
        raise QueryError(f"{op.symbol!r} takes at most {MAX_IN_VALUES} values, got {len(values)} for {column!r}")
    col = quote_identifier(column)
    if kind == "number":
        params[name] = [_number(column, v) for v in values]
        return template.format(col=col, v=f"{{{name}:Array(Float64)}}")
    if kind == "text":
        params[name] = [_text(column, v) for v in values]
        return template.format(col=col, v=f"{{{name}:Array(String)}}")
    # A date names its period (2024: the year, 2024-06: the month, 2024-06-01: the day), a time itself.
    periods: dict[str | None, list[str]] = {}
    for value in values:
        start, unit = parse_time(column, _text(column, value))
        periods.setdefault(unit, []).append(start[:{"YEAR": 4, "MONTH": 7, "DAY": 10}[unit]] if unit else start)
    parts = []
    for unit, texts in periods.items():
        key = f"{name}_{(unit or 'time').lower()}"
        params[key] = texts
        if unit is None:
            parts.append(f"{col} IN arrayMap({LAMBDA} -> parseDateTime64BestEffort({LAMBDA}), {{{key}:Array(String)}})")
        else:
            pattern = {"YEAR": "%Y", "MONTH": "%Y-%m", "DAY": "%Y-%m-%d"}[unit]
            parts.append(f"formatDateTime({col}, '{pattern}') IN {{{key}:Array(String)}}")
    return template.format(col=col, any=f"({' OR '.join(parts)})")


def _near(columns: dict[str, str], value: Any, name: str, params: dict) -> str:
    """`near=LAT,LON,KM`: photos taken within KM kilometres of (LAT, LON), by ClickHouse's greatCircleDistance
    over the EXIF GPS columns."""
    if "latitude" not in columns:
        raise QueryError("this table has no latitude/longitude columns")
    if isinstance(value, dict):
        value = [value.get(key) for key in ("lat", "lon", "km")]
    if isinstance(value, str):
        value = value.split(",")
    try:
        lat, lon, km = (float(v) for v in value)
    except (TypeError, ValueError):
        raise QueryError(f"near takes LAT,LON,KM (degrees and kilometres), e.g. near=48.8584,2.2945,5; "
                         f"got {value!r}") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180 and 0 < km <= 20_040):
        raise QueryError("near: latitude -90..90, longitude -180..180, distance above 0 and at most 20040 km")
    params.update({f"{name}_lat": lat, f"{name}_lon": lon, f"{name}_m": km * 1000})
    return (f"greatCircleDistance(longitude, latitude, {{{name}_lon:Float64}}, {{{name}_lat:Float64}}) "
            f"<= {{{name}_m:Float64}}")


def filter_sql(filters: list[Filter], columns: dict[str, str]) -> tuple[list[str], dict]:
    """SQL conditions for `filters` and their bound parameters, checked against the table's columns."""
    conditions: list[str] = []
    params: dict = {}
    if len(filters) > MAX_FILTERS:
        raise QueryError(f"at most {MAX_FILTERS} filters, got {len(filters)}")
    known = [c for c in columns if c not in NOT_FILTERABLE]
    for i, f in enumerate(filters):
        if f.column == NEAR and NEAR not in columns:
            if f.op != "=":
                raise QueryError("near takes '=': near=LAT,LON,KM")
            conditions.append(_near(columns, f.value, f"f{i}", params))
            continue
        if f.column not in known:
            raise QueryError(f"unknown column {f.column!r}; known columns: {', '.join(known)}")
        op = operator(f.op)
        if op is None:
            raise QueryError(f"unknown operator {f.op!r}; use one of {' '.join(o.symbol for o in FILTER_OPERATORS)}")
        conditions.append(_condition(f.column, base_type(columns[f.column]), op, f.value, f"f{i}", params))
    return conditions, params


def check_k(k: Any, maximum: int = MAX_K) -> int:
    """One rule for every caller: an int, or a string of ASCII digits (a query string's "10")."""
    if isinstance(k, str) and re.fullmatch(r"\s*[0-9]{1,9}\s*", k):
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, int):
        raise QueryError(f"k must be an integer, got {k!r}")
    if not 1 <= k <= maximum:
        more = f" (up to {MAX_K_THRESHOLD} with a min_score)" if maximum < MAX_K_THRESHOLD else ""
        raise QueryError(f"k must be between 1 and {maximum}, got {k}{more}")
    return k


@dataclass(frozen=True)
class QueryVector:
    """One part of a query: a vector bound as a parameter, or the stored embedding of `image_id` (with both, the
    vector is that image's, read beforehand for the index: the image is still left out of the results). `image`:
    the vector is an image's, not a text's (the index has a beam of its own for those)."""
    weight: float = 1.0
    vector: tuple | list | None = None
    image_id: str | None = None
    image: bool = False


@dataclass(frozen=True)
class Options:
    """Which of the ranked matches a search returns: the page from `offset` on, only those scoring at least
    `min_score`, ordered by the column `order_by` instead of the score (with a min_score), at most
    `per_limit` per value of the column `per`."""
    offset: int = 0
    min_score: float | None = None
    order_by: str | None = None
    descending: bool = False
    per: str | None = None
    per_limit: int = 1


EVERY = Options()   # the top k by score, as searches always were


def check_whole(name: str, value: Any, low: int, high: int) -> int:
    """An int from `low` to `high`, or a string of ASCII digits (a query string's "10")."""
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,9}\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise QueryError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return value


def _sortable(name: str, column: str | None, columns: dict[str, str]) -> str:
    """A column to order, group or facet by: a known metadata column that holds single values."""
    known = [c for c in columns if c not in NOT_FILTERABLE and not base_type(columns[c]).startswith("Array")]
    if column not in known:
        raise QueryError(f"{name}: unknown column {column!r}; use one of {', '.join(known)}")
    return quote_identifier(column)


def check_options(options: Options, k: Any, columns: dict[str, str]) -> tuple[Options, int]:
    """`options` and `k` checked against each other and the table (k may reach MAX_K_THRESHOLD with a
    min_score; offset + k at most MAX_WINDOW); returns them with numbers from text made numbers."""
    min_score = options.min_score
    if min_score is not None:
        if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not -2 <= min_score <= 2:
            raise QueryError(f"min_score is a similarity, a number from -1 to 1, got {min_score!r}")
        min_score = float(min_score)
    k = check_k(k, MAX_K if min_score is None else MAX_K_THRESHOLD)
    offset = check_whole("offset", options.offset, 0, MAX_WINDOW - 1)
    if offset + k > MAX_WINDOW:
        raise QueryError(f"offset + k is at most {MAX_WINDOW}, got {offset + k}")
    if options.order_by is not None:
        if min_score is None:
            raise QueryError("order_by needs a min_score: it orders the matches above it by a column")
        _sortable("order_by", options.order_by, columns)
    if options.per is not None:
        _sortable("per", options.per, columns)
    per_limit = check_whole("per_limit", options.per_limit, 1, MAX_K)
    return Options(offset, min_score, options.order_by, bool(options.descending), options.per, per_limit), k


STRATEGIES = ("exact", "hnsw")
HNSW_SEARCH_BEAM = 2048   # hnsw_candidate_list_size_for_search (ef at query time) of an index not tuned
HNSW_TIE_MARGIN = 16      # neighbours fetched past a page, so rows tied at its edge sort by id
# An exact ranking reads its rows on two threads from 4,096 rows on (ClickHouse's default: 163,840 rows or
# 24 MB): a filter column's projection hands it one short range, e.g. 10,000 rows for a 1% filter, which
# one thread read 25-35% slower at 1M x 512 (bench/results.md).
CONCURRENT_READ = ("merge_tree_min_rows_for_concurrent_read = 4096, "
                   "merge_tree_min_bytes_for_concurrent_read = 8388608")
# Searches read through ClickHouse's cache of decompressed blocks (the embedded engine sizes it:
# connection.uncompressed_cache_bytes; a server's `uncompressed_cache_size`): the page's rows are a block of
# every column each, and a table small enough keeps its vectors there too (200k x 128: 12 -> 8 ms).
CACHED_READ = "use_uncompressed_cache = 1"
# Index quantizations too coarse to rank by or to show as scores (300k x 512, beam 2048: i8 scores off by up
# to 0.012 and recall@10 0.685, b1 off by up to 160 and 0.057; bf16 within 2e-4). For these ClickHouse fetches
# this many times the window from the index and re-ranks them by the stored Float32 vectors
# (vector_search_with_rescoring): scores exact, recall@10 0.99 for i8 and 0.835 for b1 there (bench/results.md).
RESCORE_FETCH = {"i8": 2, "b1": 64}


def _ranking(columns: dict[str, str], filters: list[Filter], vectors: list[QueryVector]
             ) -> tuple[str, list[str], dict, str, str, list[str]]:
    """The parts every search shares: (WITH definitions, WHERE conditions, params, distance, score, and the
    conditions that leave the images queried by id out of the results)."""
    conditions, params = filter_sql(filters, columns)
    if not 1 <= len(vectors) <= MAX_TERMS:
        raise QueryError(f"a query has 1 to {MAX_TERMS} terms, got {len(vectors)}")
    positive = sum(v.weight for v in vectors if v.weight > 0)
    if positive <= 0 or not all(math.isfinite(v.weight) for v in vectors):
        raise QueryError("weights are finite numbers, and at least one term needs a positive weight")
    defs, terms, exclude = [], [], []
    for i, v in enumerate(vectors):
        if v.image_id is not None:
            exclude.append(f"id != {{v{i}_id:String}}")
            params[f"v{i}_id"] = v.image_id
        if v.image_id is not None and v.vector is None:
            defs.append(f"(SELECT embedding FROM images WHERE id = {{v{i}_id:String}} LIMIT 1) AS {vector_alias(i)}")
        elif v.vector is not None:
            defs.append(f"{{v{i}:Array(Float32)}} AS {vector_alias(i)}")
            params[f"v{i}"] = [float(x) for x in v.vector]
        else:
            raise ValueError("a query vector needs a vector or an image id")
        if len(vectors) == 1:
            terms.append(f"cosineDistance(embedding, {vector_alias(i)})")
        else:
            params[f"w{i}"] = v.weight / positive
            terms.append(f"{{w{i}:Float64}} * cosineDistance(embedding, {vector_alias(i)})")
    distance = " + ".join(terms)
    # weights are shares of the positive ones: score = sum(w * cos) = sum(w) - distance, 1 - distance without
    # negative terms
    base = "1"
    if any(v.weight < 0 for v in vectors):
        params["w_sum"] = sum(v.weight for v in vectors) / positive
        base = "{w_sum:Float64}"
    return "WITH " + ", ".join(defs), conditions, params, distance, f"{base} - ({distance})", exclude


def search_sql(columns: dict[str, str], filters: list[Filter], k: int | str, vectors: list[QueryVector],
               strategy: str = "exact", multiplier: float = 1.0, beam: int | None = None,
               options: Options = EVERY, rescore: int = 0) -> tuple[str, dict]:
    """The one SQL query of a search and its parameters.

    The ranking is a weighted sum of cosine distances to each query vector
    (weights divided by the sum of the positive ones; negative weights push
    away), so a query of several terms is still one ORDER BY in ClickHouse;
    `score` is the matching weighted cosine similarity. Images used as
    queries by id are left out of the results. `options` pages (OFFSET),
    cuts at a score (WHERE score >= min_score), orders by a column and keeps
    at most n rows per value of one (LIMIT n BY).

    Strategies (`Searcher` picks one per query):
    - "exact": rank every matching row by its Float32 vector; ties broken by id.
    - "hnsw": the table's vector_similarity index answers `ORDER BY distance
      LIMIT k OFFSET offset` (approximate), the score cut applied around it. With
      filters the index fetches `multiplier` x (offset + k) neighbours and
      ClickHouse drops those that do not match (postfilter). `rescore` (an
      index of coarse quantization, RESCORE_FETCH) fetches that many times
      more and ranks them by their Float32 vectors.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}")
    options, params_k = check_options(options, k, columns)
    with_, conditions, params, distance, score, exclude = _ranking(columns, filters, vectors)
    params["k"] = params_k
    if strategy != "exact" and (len(vectors) != 1 or vectors[0].vector is None or options.per or options.order_by):
        raise ValueError(f"the {strategy} strategy serves one query vector ordered by score, not a stored id, a mix, "
                         "an order by a column or a per-column limit")
    page = "\nLIMIT {k:UInt32}"
    if options.offset:
        page += " OFFSET {offset:UInt32}"
        params["offset"] = options.offset
    if options.min_score is not None:
        params["min_score"] = options.min_score
    head = f"{with_}\nSELECT * EXCEPT ({HIDDEN}), {score} AS score\nFROM images"
    if strategy == "hnsw":
        # The index serves only `ORDER BY <distance> LIMIT n` exactly: no tie-breaker column, no WHERE on the
        # distance. So it fetches the best offset + k (+ HNSW_TIE_MARGIN, for rows tied at the page's edge,
        # copies of one picture) and the query around it cuts at the score, orders ties by id and takes the
        # page: pages are slices of one ranking while the neighbours fetched fit the search beam. `beam` is the
        # beam that reached the recall target for k = 10 when the index was tuned (Searcher.tune_index); it
        # grows with k and with the neighbours a filter makes it fetch: `multiplier` x as many (ClickHouse
        # accepts 1..1000), of which those that do not match are dropped (postfilter). Projections are off:
        # ClickHouse would prefer a filter column's projection, which has no index. Settings go on the outer
        # query: those of a subquery do not reach the index.
        # The image queried by id is its own nearest neighbour: one more is fetched and it is left out around
        # the index search (inside, it would make the index post-filter as for a filter).
        where = ("\n    WHERE " + "\n      AND ".join(conditions)) if conditions else ""
        params["window"] = params["k"] + options.offset + HNSW_TIE_MARGIN + len(exclude)
        fetch = min(1000.0, (max(1.0, float(multiplier)) if conditions else 1.0) * max(1, rescore))
        wanted = math.ceil(fetch * params["window"])
        beam = math.ceil((beam or HNSW_SEARCH_BEAM) * max(1.0, params["k"] / 10))
        settings = (f"\nSETTINGS hnsw_candidate_list_size_for_search = {max(beam, wanted)}, "
                    f"optimize_use_projections = 0, {CACHED_READ}")
        if conditions:
            settings += ", vector_search_filter_strategy = 'postfilter'"
        if rescore:
            settings += ", vector_search_with_rescoring = 1"
        if conditions or rescore:
            settings += f", vector_search_index_fetch_multiplier = {fetch:g}"
        if conditions or wanted > 1000:
            settings += f", max_limit_for_vector_search_queries = {max(1000, wanted)}"
        inner = f"    {with_}\n    SELECT * EXCEPT ({HIDDEN}), {score} AS score\n    FROM images{where}\n" \
                f"    ORDER BY {distance}\n    LIMIT {{window:UInt32}}"
        outer = exclude + (["score >= {min_score:Float64}"] if options.min_score is not None else [])
        cut = ("\nWHERE " + " AND ".join(outer)) if outer else ""
        return f"SELECT *\nFROM (\n{inner}\n){cut}\nORDER BY score DESC, id{page}{settings}", params
    conditions = exclude + conditions
    if options.min_score is not None:
        conditions.append("score >= {min_score:Float64}")
    where = ("\nWHERE " + "\n  AND ".join(conditions)) if conditions else ""
    order = f"{distance} ASC, id"
    if options.order_by:
        column = quote_identifier(options.order_by)
        order = f"{column} {'DESC' if options.descending else 'ASC'} NULLS LAST, {order}"
    by = ""
    if options.per:
        by = f"\nLIMIT {{per_limit:UInt32}} BY {quote_identifier(options.per)}"
        params["per_limit"] = options.per_limit
    return f"{head}{where}\nORDER BY {order}{by}{page}\nSETTINGS {CONCURRENT_READ}, {CACHED_READ}", params


def check_facets(facets: list[str], columns: dict[str, str]) -> list[str]:
    """The SQL of each facet's value (a date column: its year), for up to MAX_FACETS known columns."""
    if not 1 <= len(facets) <= MAX_FACETS:
        raise QueryError(f"facets: 1 to {MAX_FACETS} columns, got {len(facets)}")
    if len(set(facets)) != len(facets):
        raise QueryError("facets: a column is named twice")
    values = []
    for name in facets:
        column = _sortable("facets", name, columns)
        values.append(f"toString(toYear({column}))" if TIME_TYPE.match(base_type(columns[name]))
                      else f"toString({column})")
    return values


def facet_sql(columns: dict[str, str], filters: list[Filter], vectors: list[QueryVector], facets: list[str],
              top: int | str = FACET_TOP, min_score: float | None = None) -> tuple[str, dict]:
    """Counts of the matches per value of each column in `facets` (a date column: per year), among the
    `top` best or, with `min_score`, among all that score at least that: one GROUP BY over an ARRAY JOIN.
    Answers rows (facet, value, n), at most MAX_FACET_VALUES per facet, the most frequent first."""
    values = check_facets(facets, columns)
    options, top = check_options(Options(min_score=min_score), top, columns)
    with_, conditions, params, distance, score, exclude = _ranking(columns, filters, vectors)
    conditions = exclude + conditions
    params.update(facet_names=list(facets), facet_values=MAX_FACET_VALUES)
    window = ""
    if options.min_score is None:
        window = "\n    ORDER BY " + distance + " ASC, id\n    LIMIT {facet_top:UInt32}"
        params["facet_top"] = top
    else:
        conditions.append("score >= {min_score:Float64}")
        params["min_score"] = options.min_score
    where = ("\n    WHERE " + "\n      AND ".join(conditions)) if conditions else ""
    return (f"SELECT facet, value, count() AS n\nFROM (\n    {with_}\n    SELECT {score} AS score, "
            f"[{', '.join(values)}] AS `$facet_values`\n    FROM images{where}{window}\n)\n"
            "ARRAY JOIN `$facet_values` AS value, {facet_names:Array(String)} AS facet\n"
            "GROUP BY facet, value\nORDER BY facet, n DESC, value\nLIMIT {facet_values:UInt32} BY facet"), params


def filters_from_json(spec: object) -> list[Filter]:
    """Filters from a request: CLI strings, [{"column", "op", "value"}], or {"col": value | {op: value}}.

    In the dict form a plain value means equality, a list "in" and null "is null":
    {"category": "poster", "price": {">=": 10, "<": 50}, "colour": ["red", "blue"], "tags": {"has": "sale"},
     "taken_at": null, "near": [48.86, 2.35, 10]}
    """
    if spec is None:
        return []
    if isinstance(spec, dict):
        out = []
        for column, cond in spec.items():
            if isinstance(cond, dict):
                if not cond:
                    raise QueryError(f"empty condition for {column!r}")
                out += [Filter(column, op, value) for op, value in cond.items()]
            elif cond is None:
                out.append(Filter(column, "is null", None))
            else:
                out.append(Filter(column, "in" if isinstance(cond, list) and column != NEAR else "=", cond))
        return out
    if isinstance(spec, list):
        out = []
        for item in spec:
            if isinstance(item, str):
                out.append(parse_filter(item))
            elif isinstance(item, dict) and {"column", "op"} <= set(item) and (
                    "value" in item or getattr(operator(item["op"]), "takes", "") == "none"):   # `is null`: no value
                out.append(Filter(str(item["column"]), str(item["op"]), item.get("value")))
            else:
                raise QueryError(f"a filter is a string like 'price<10' or {{column, op, value}}, got {item!r}")
        return out
    raise QueryError("filters must be an object or a list")
