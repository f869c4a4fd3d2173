"""Filters bound to a table's columns (`bind_filters`), checked once into a `Where`: one SQL condition per
filter from the operator table's template for the column's kind, every value a bound parameter."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from clipsearch.errors import QueryError
from clipsearch.search import filters
from clipsearch.search.filters import LAMBDA, NEAR, Filter, Operator
from clipsearch.search.values import (
    KINDS,
    Period,
    column_kind,
    number,
    parse_time,
    text,
)
from clipsearch.store.columns import NOT_FILTERABLE, NUMERIC_TYPE, TIME_TYPE, base_type
from clipsearch.store.connection import quote_identifier

MAX_IN_VALUES = 1000     # values in one 'in' filter, bound as one array parameter
MAX_FILTERS = 100


@dataclass(frozen=True)
class Where:
    """Filters checked against a table's columns: each one's SQL condition and the parameters it binds.
    Every statement on the filtered rows reads this one value: the search, its facets, the counts, labels."""
    filters: tuple[Filter, ...] = ()
    conditions: tuple[str, ...] = ()
    bound: tuple[dict, ...] = ()     # each condition's parameters (names f0_..., f1_..., by the filter's place)
    params: dict = field(default_factory=dict, compare=False)   # all of them

    @property
    def sql(self) -> str:
        """The conditions as one, for a WHERE clause: "1" without filters."""
        return " AND ".join(self.conditions) or "1"

    def on(self, column: str) -> Where:
        """The filters on `column` only."""
        keep = [i for i, f in enumerate(self.filters) if f.column == column]
        return _where([self.filters[i] for i in keep], [self.conditions[i] for i in keep],
                      [self.bound[i] for i in keep])


NOWHERE = Where()   # no filters


def _where(filters: Sequence[Filter], conditions: Sequence[str], bound: Sequence[dict]) -> Where:
    return Where(tuple(filters), tuple(conditions), tuple(bound), {k: v for b in bound for k, v in b.items()})


def bind_filters(given: Sequence[Filter], columns: dict[str, str]) -> Where:
    """`given` checked against the table's `columns` (a typo'd column, a bad value, an operator the column's
    kind has no SQL for: a QueryError that says so) and bound as SQL conditions with parameters."""
    if len(given) > MAX_FILTERS:
        raise QueryError(f"at most {MAX_FILTERS} filters, got {len(given)}")
    known = [c for c in columns if c not in NOT_FILTERABLE]
    conditions, bound = [], []
    for i, f in enumerate(given):
        params: dict = {}
        if f.column == NEAR and NEAR not in columns:
            near = filters.with_role("value").symbol
            if f.op != near:
                raise QueryError(f"near takes '{near}': near{near}LAT,LON,KM")
            conditions.append(_near(columns, f.value, f"f{i}", params))
        else:
            if f.column not in known:
                raise QueryError(f"unknown column {f.column!r}; known columns: {', '.join(known)}")
            op = filters.operator(f.op)
            if op is None:
                raise QueryError(f"unknown operator {f.op!r}; use one of {filters.symbols()}")
            conditions.append(_condition(f.column, base_type(columns[f.column]), op, f.value, f"f{i}", params))
        bound.append(params)
    return _where(given, conditions, bound)


def _template(op: Operator, kind: str, column: str, ch_type: str, many: bool = False) -> str:
    """`op`'s SQL for a column of `kind` (`many`: with a list of values), or a 400 that says what it works on:
    a missing template is a clear error, never a KeyError."""
    template = (getattr(op, kind + "s" if many else kind, "") if kind else "") or op.default
    if template:
        return template
    if not kind:
        raise QueryError(f"column {column!r} has type {ch_type}, which filters do not support")
    if kind == "array":
        ops = " or ".join(repr(o.symbol) for o in filters.FILTER_OPERATORS if o.array)
        raise QueryError(f"column {column!r} is an array: filter it with {ops}")
    kinds = " or ".join(words for k, words in KINDS.items() if getattr(op, k) or getattr(op, k + "s", ""))
    raise QueryError(f"{op.symbol!r} ({op.help}) needs {kinds} column; {column!r} is {ch_type}")


def _bind_value(column: str, kind: str, value: Any, name: str, params: dict) -> str:
    """Bind one filter value for a column of type `kind`; returns its SQL placeholder."""
    if NUMERIC_TYPE.match(kind):
        params[name] = number(column, value)
        return f"{{{name}:Float64}}"
    params[name] = text(column, value)
    if TIME_TYPE.match(kind):
        params[name] = parse_time(column, params[name])[0]
        return f"parseDateTime64BestEffort({{{name}:String}})"
    if kind == "String":
        return f"{{{name}:String}}"
    raise QueryError(f"column {column!r} has type {kind}, which filters do not support")


def _condition(column: str, ch_type: str, op: Operator, value: Any, name: str, params: dict) -> str:
    """`column op value` as SQL, from the operator's template for the column's kind, the value bound in `params`:
    numbers compare as numbers, text case-insensitively, dates by the period they name (`taken_at=2024-06` is
    all of June, `taken_at<=2024-06` up to its end)."""
    col = quote_identifier(column)
    kind = column_kind(ch_type)
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
                            for o in filters.FILTER_OPERATORS if o.many)
        raise QueryError(f"{op.symbol!r} takes one value; several are for {several}")
    if kind == "date":
        params[name], period = parse_time(column, text(column, value))
        start = f"parseDateTime64BestEffort({{{name}:String}})"
        if period is None:   # a point in time compares like a number
            return _template(op, "number", column, ch_type).format(col=col, v=start)
        return _template(op, kind, column, ch_type).format(col=col, start=start,
                                                           end=f"{start} + INTERVAL 1 {period.unit}")
    if kind == "array":   # the value is one element, bound as the element's type
        ch_type = base_type(ch_type[len("Array("):-1])
    return template.format(col=col, v=_bind_value(column, ch_type, value, name, params))


def _any_of(column: str, ch_type: str, op: Operator, values: list, name: str, params: dict) -> str:
    """`column` against a list of values, the list bound as ONE array parameter: as a thousand literals OR'ed
    together, five such filters passed max_query_size and a hundred took seconds to parse."""
    kind = column_kind(ch_type)
    template = _template(op, kind, column, ch_type, many=True)
    if not values:
        raise QueryError(f"{op.symbol!r} needs a non-empty list of values for {column!r}")
    if len(values) > MAX_IN_VALUES:
        raise QueryError(f"{op.symbol!r} takes at most {MAX_IN_VALUES} values, got {len(values)} for {column!r}")
    col = quote_identifier(column)
    if kind == "number":
        params[name] = [number(column, v) for v in values]
        return template.format(col=col, v=f"{{{name}:Array(Float64)}}")
    if kind == "text":
        params[name] = [text(column, v) for v in values]
        return template.format(col=col, v=f"{{{name}:Array(String)}}")
    # A date names its period (2024: the year, 2024-06: the month, 2024-06-01: the day), a time itself: each
    # compared as the column's date written the period's way (formatDateTime), the times as they are.
    periods: dict[Period | None, list[str]] = {}
    for value in values:
        start, period = parse_time(column, text(column, value))
        periods.setdefault(period, []).append(start[:period.chars] if period else start)
    parts = []
    for period, texts in periods.items():
        key = f"{name}_{(period.unit if period else 'time').lower()}"
        params[key] = texts
        if period is None:
            parts.append(f"{col} IN arrayMap({LAMBDA} -> parseDateTime64BestEffort({LAMBDA}), {{{key}:Array(String)}})")
        else:
            parts.append(f"formatDateTime({col}, '{period.format}') IN {{{key}:Array(String)}}")
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
