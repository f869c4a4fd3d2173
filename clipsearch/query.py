"""Building the search SQL: filters and the cosineDistance ranking, values always bound as parameters."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .connection import quote_identifier
from .errors import QueryError

OPERATORS = ("!=", ">=", "<=", "=", ">", "<")  # the CLI's; JSON filters add "in" and "has"
JSON_OPERATORS = OPERATORS + ("in", "has")
FILTER_RE = re.compile(r"^\s*([^!<>=\s]+)\s*(!=|>=|<=|=|>|<)\s*(.*?)\s*$", re.DOTALL)
NUMERIC_TYPE = re.compile(r"^(U?Int\d+|Float\d+|Decimal)")
TIME_TYPE = re.compile(r"^(Date|DateTime)")
HASH_COLUMNS = ("phash", "colour_hash")  # perceptual hashes: compared bitwise, not shown with results
NOT_FILTERABLE = {"embedding", *HASH_COLUMNS}  # vectors and hashes, not metadata
HIDDEN = ", ".join(("embedding", *HASH_COLUMNS))  # left out of search results
MAX_K = 1000
MAX_IN_VALUES = 1000     # values in one 'in' filter (the embedded engine inlines bound values)
MAX_FILTERS = 100


@dataclass(frozen=True)
class Filter:
    column: str
    op: str
    value: object


def parse_filter(expr: str) -> Filter:
    """`COL=VALUE`, `COL!=VALUE`, `COL>=N`, `COL<=N`, `COL>N`, `COL<N`."""
    match = FILTER_RE.match(expr)
    if not match:
        raise QueryError(f"cannot parse filter {expr!r}: expected COLUMN OP VALUE with OP one of "
                         + " ".join(OPERATORS))
    column, op, value = match.groups()
    return Filter(column, op, value)


def base_type(ch_type: str) -> str:
    """`LowCardinality(Nullable(String))` -> `String`."""
    while True:
        inner = re.match(r"^(?:Nullable|LowCardinality)\((.*)\)$", ch_type)
        if not inner:
            return ch_type
        ch_type = inner.group(1)


def _bind_value(column: str, kind: str, value: Any, name: str, params: dict) -> str:
    """Bind one filter value for a column of type `kind`; returns its SQL placeholder."""
    if NUMERIC_TYPE.match(kind):
        if isinstance(value, bool):
            raise QueryError(f"column {column!r} is numeric; {value!r} is not a number")
        try:
            params[name] = float(value)
        except (TypeError, ValueError):
            raise QueryError(f"column {column!r} is numeric; {value!r} is not a number") from None
        return f"{{{name}:Float64}}"
    if isinstance(value, (dict, list)) or value is None:
        raise QueryError(f"column {column!r} needs a single value, got {value!r}")
    params[name] = str(value)
    if TIME_TYPE.match(kind):
        params[name] = parse_time(column, params[name])
        return f"parseDateTime64BestEffort({{{name}:String}})"
    if kind == "String":
        return f"{{{name}:String}}"
    raise QueryError(f"column {column!r} has type {kind}, which filters do not support")


TIME_FORMATS = ("%Y-%m", "%Y")   # besides ISO 8601 (datetime.fromisoformat)


def parse_time(column: str, text: str) -> str:
    """A date or time a user typed, checked here so a typo is a clear error, as ISO text for ClickHouse."""
    try:
        return datetime.fromisoformat(text.strip()).isoformat(sep=" ")
    except ValueError:
        pass
    for fmt in TIME_FORMATS:
        try:
            return datetime.strptime(text.strip(), fmt).isoformat(sep=" ")
        except ValueError:
            pass
    raise QueryError(f"column {column!r} holds dates; {text!r} is not a date: use 2024-06-01, "
                     "2024-06-01 12:30:00 or 2024-06")


def filter_sql(filters: list[Filter], columns: dict[str, str]) -> tuple[list[str], dict]:
    """SQL conditions for `filters` and their bound parameters, checked against the table's columns."""
    conditions: list[str] = []
    params: dict = {}
    if len(filters) > MAX_FILTERS:
        raise QueryError(f"at most {MAX_FILTERS} filters, got {len(filters)}")
    known = [c for c in columns if c not in NOT_FILTERABLE]
    for i, f in enumerate(filters):
        if f.column not in known:
            raise QueryError(f"unknown column {f.column!r}; known columns: {', '.join(known)}")
        if f.op not in JSON_OPERATORS:
            raise QueryError(f"unknown operator {f.op!r}; use one of {' '.join(JSON_OPERATORS)}")
        kind = base_type(columns[f.column])
        column = quote_identifier(f.column)
        array = re.match(r"^Array\((.*)\)$", kind)
        if f.op == "has":
            if not array:
                raise QueryError(f"'has' needs an array column; {f.column!r} is {kind}")
            placeholder = _bind_value(f.column, base_type(array.group(1)), f.value, f"f{i}", params)
            conditions.append(f"has({column}, {placeholder})")
        elif array:
            raise QueryError(f"column {f.column!r} is an array: filter it with 'has'")
        elif f.op == "in":
            values = f.value if isinstance(f.value, list) else None
            if not values:
                raise QueryError(f"'in' needs a non-empty list of values for {f.column!r}")
            if len(values) > MAX_IN_VALUES:
                raise QueryError(f"'in' takes at most {MAX_IN_VALUES} values, got {len(values)} for {f.column!r}")
            placeholders = [_bind_value(f.column, kind, v, f"f{i}_{j}", params) for j, v in enumerate(values)]
            conditions.append(f"{column} IN ({', '.join(placeholders)})")
        else:
            conditions.append(f"{column} {f.op} {_bind_value(f.column, kind, f.value, f'f{i}', params)}")
    return conditions, params


def check_k(k: Any) -> int:
    """One rule for every caller: an int, or a string of ASCII digits (a query string's "10")."""
    if isinstance(k, str) and re.fullmatch(r"\s*[0-9]{1,9}\s*", k):
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, int):
        raise QueryError(f"k must be an integer, got {k!r}")
    if not 1 <= k <= MAX_K:
        raise QueryError(f"k must be between 1 and {MAX_K}, got {k}")
    return k


@dataclass(frozen=True)
class QueryVector:
    """One part of a query: a vector bound as a parameter, or the stored embedding of `image_id`."""
    weight: float = 1.0
    vector: tuple | list | None = None
    image_id: str | None = None


STRATEGIES = ("exact", "hnsw")
HNSW_SEARCH_BEAM = 2048   # hnsw_candidate_list_size_for_search (ef at query time) of an index not tuned


def search_sql(columns: dict[str, str], filters: list[Filter], k: int | str, vectors: list[QueryVector],
               strategy: str = "exact", multiplier: float = 1.0, beam: int | None = None) -> tuple[str, dict]:
    """The one SQL query of a search and its parameters.

    The ranking is a weighted sum of cosine distances to each query vector
    (weights normalised to sum to 1), so a hybrid image+text query is still
    one ORDER BY in ClickHouse; `score` is the matching weighted cosine
    similarity. Images used as queries by id are left out of the results.

    Strategies (`Searcher` picks one per query):
    - "exact": rank every matching row by its Float32 vector; ties broken by id.
    - "hnsw": the table's vector_similarity index answers `ORDER BY distance
      LIMIT k` (approximate). With filters the index fetches `multiplier` x k
      neighbours and ClickHouse drops those that do not match (postfilter).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}")
    conditions, params = filter_sql(filters, columns)
    params["k"] = check_k(k)
    total = sum(v.weight for v in vectors)
    if not vectors or any(v.weight < 0 for v in vectors) or total <= 0:
        raise QueryError("weights must be non-negative and not all zero")
    if strategy != "exact" and (len(vectors) != 1 or vectors[0].vector is None):
        raise ValueError(f"the {strategy} strategy serves one query vector, not a stored id or a mix")
    defs, terms = [], []
    for i, v in enumerate(vectors):
        if v.image_id is not None:
            defs.append(f"(SELECT embedding FROM images WHERE id = {{v{i}_id:String}} LIMIT 1) AS v{i}")
            conditions.insert(0, f"id != {{v{i}_id:String}}")
            params[f"v{i}_id"] = v.image_id
        elif v.vector is not None:
            defs.append(f"{{v{i}:Array(Float32)}} AS v{i}")
            params[f"v{i}"] = [float(x) for x in v.vector]
        else:
            raise ValueError("a query vector needs a vector or an image id")
        if len(vectors) == 1:
            terms.append(f"cosineDistance(embedding, v{i})")
        else:
            params[f"w{i}"] = v.weight / total
            terms.append(f"{{w{i}:Float64}} * cosineDistance(embedding, v{i})")
    distance = " + ".join(terms)
    where = ("\nWHERE " + "\n  AND ".join(conditions)) if conditions else ""
    head = f"WITH {', '.join(defs)}\nSELECT * EXCEPT ({HIDDEN}), 1 - ({distance}) AS score\nFROM images"
    if strategy == "hnsw":
        # The index serves only `ORDER BY <distance> LIMIT k` exactly: no tie-breaker column.
        # `beam` is the search beam that reached the recall target for k = 10 when the index was tuned
        # (Searcher.tune_index); it grows with k and with the neighbours a filter makes it fetch:
        # `multiplier` x k (ClickHouse accepts 1..1000), of which those that do not match are dropped.
        # Projections are off: ClickHouse would prefer a filter column's projection, which has no index.
        fetch = min(1000.0, max(1.0, float(multiplier))) if conditions else 1.0
        wanted = math.ceil(fetch * params["k"])
        beam = math.ceil((beam or HNSW_SEARCH_BEAM) * max(1.0, params["k"] / 10))
        settings = (f"\nSETTINGS hnsw_candidate_list_size_for_search = {max(beam, wanted)}, "
                    "optimize_use_projections = 0")
        if conditions:
            settings += (f", vector_search_filter_strategy = 'postfilter', vector_search_index_fetch_multiplier = "
                         f"{fetch:g}, max_limit_for_vector_search_queries = {max(1000, wanted)}")
        return f"{head}{where}\nORDER BY {distance}\nLIMIT {{k:UInt32}}{settings}", params
    return f"{head}{where}\nORDER BY {distance} ASC, id\nLIMIT {{k:UInt32}}", params


def filters_from_json(spec: object) -> list[Filter]:
    """Filters from a request: CLI strings, [{"column", "op", "value"}], or {"col": value | {op: value}}.

    In the dict form a plain value means equality and a list means "in":
    {"category": "poster", "price": {">=": 10, "<": 50}, "colour": ["red", "blue"], "tags": {"has": "sale"}}
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
            else:
                out.append(Filter(column, "in" if isinstance(cond, list) else "=", cond))
        return out
    if isinstance(spec, list):
        out = []
        for item in spec:
            if isinstance(item, str):
                out.append(parse_filter(item))
            elif isinstance(item, dict) and {"column", "op", "value"} <= set(item):
                out.append(Filter(str(item["column"]), str(item["op"]), item["value"]))
            else:
                raise QueryError(f"a filter is a string like 'price<10' or {{column, op, value}}, got {item!r}")
        return out
    raise QueryError("filters must be an object or a list")
