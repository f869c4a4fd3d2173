"""Building the search SQL: filters and the cosineDistance ranking, values always bound as parameters."""
from __future__ import annotations

import re
from dataclasses import dataclass

from .store import quote_identifier

OPERATORS = ("!=", ">=", "<=", "=", ">", "<")
FILTER_RE = re.compile(r"^\s*([^!<>=\s]+)\s*(!=|>=|<=|=|>|<)\s*(.*?)\s*$", re.S)
NUMERIC_TYPE = re.compile(r"^(U?Int\d+|Float\d+|Decimal)")
TIME_TYPE = re.compile(r"^(Date|DateTime)")
NOT_FILTERABLE = {"embedding"}
MAX_K = 1000


class QueryError(ValueError):
    """The user's query is invalid (unknown column, wrong value type, bad k)."""


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


def filter_sql(filters: list[Filter], columns: dict[str, str]) -> tuple[list[str], dict]:
    """SQL conditions for `filters` and their bound parameters, checked against the table's columns."""
    conditions, params = [], {}
    known = [c for c in columns if c not in NOT_FILTERABLE]
    for i, f in enumerate(filters):
        if f.column not in known:
            raise QueryError(f"unknown column {f.column!r}; known columns: {', '.join(known)}")
        if f.op not in OPERATORS:
            raise QueryError(f"unknown operator {f.op!r}; use one of {' '.join(OPERATORS)}")
        kind = base_type(columns[f.column])
        name = f"f{i}"
        if NUMERIC_TYPE.match(kind):
            try:
                params[name] = float(f.value)
            except (TypeError, ValueError):
                raise QueryError(f"column {f.column!r} is numeric; {f.value!r} is not a number") from None
            placeholder = f"{{{name}:Float64}}"
        elif TIME_TYPE.match(kind):
            params[name] = str(f.value)
            placeholder = f"parseDateTime64BestEffort({{{name}:String}})"
        elif kind == "String":
            params[name] = str(f.value)
            placeholder = f"{{{name}:String}}"
        else:
            raise QueryError(f"column {f.column!r} has type {kind}, which filters do not support")
        conditions.append(f"{quote_identifier(f.column)} {f.op} {placeholder}")
    return conditions, params


def check_k(k) -> int:
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise QueryError(f"k must be an integer, got {k!r}") from None
    if not 1 <= k <= MAX_K:
        raise QueryError(f"k must be between 1 and {MAX_K}, got {k}")
    return k


def search_sql(columns: dict[str, str], filters: list[Filter], k: int, similar_to: str | None = None
               ) -> tuple[str, dict]:
    """The one SQL query of a search, and its parameters (add `q` unless `similar_to`).

    The query vector is the parameter `q`, or with `similar_to` the stored
    embedding of that image id, which is then left out of the results.
    """
    conditions, params = filter_sql(filters, columns)
    params["k"] = check_k(k)
    if similar_to is not None:
        vector = "(SELECT embedding FROM images WHERE id = {similar_to:String} LIMIT 1)"
        conditions.insert(0, "id != {similar_to:String}")
        params["similar_to"] = similar_to
    else:
        vector = "{q:Array(Float32)}"
    where = ("\nWHERE " + "\n  AND ".join(conditions)) if conditions else ""
    sql = (f"WITH {vector} AS query_vector\n"
           "SELECT * EXCEPT (embedding), 1 - cosineDistance(embedding, query_vector) AS score\n"
           f"FROM images{where}\n"
           "ORDER BY cosineDistance(embedding, query_vector) ASC, id\n"
           "LIMIT {k:UInt32}")
    return sql, params
