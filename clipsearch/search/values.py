"""What a column of `images` holds, and the values a filter compares with it: read from what users type
(a query string's text, JSON), checked here so a bad one is a clear 400 and never a database error."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clipsearch.errors import QueryError
from clipsearch.store.columns import NUMERIC_TYPE, TIME_TYPE

KINDS = {"number": "a number", "text": "a text", "date": "a date", "array": "an array"}   # for error messages


def column_kind(ch_type: str) -> str:
    """Which of an operator's templates a column (its base type) takes: number, text, date, array, or ""."""
    if NUMERIC_TYPE.match(ch_type):
        return "number"
    if TIME_TYPE.match(ch_type):
        return "date"
    if ch_type == "String":
        return "text"
    return "array" if ch_type.startswith("Array(") else ""


NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", re.ASCII)  # not Python's 1_000, nan, inf


def number(column: str, value: Any) -> float:
    """A filter value for a numeric column: a finite number (NaN and infinities compare as nothing useful and
    are not JSON, so they are refused rather than echoed back in the response)."""
    found = math.nan
    if isinstance(value, str) and NUMBER.fullmatch(value) or isinstance(value, (int, float)) \
            and not isinstance(value, bool):
        try:
            found = float(value)
        except OverflowError:   # an int past the float range
            pass
    if not math.isfinite(found):
        raise QueryError(f"column {column!r} is numeric; {value!r} is not a number (finite, in decimal digits)")
    return found


def check_text(what: str, value: str) -> str:
    """`value` if it is text the store can take: a lone surrogate (JSON's "\\ud800", or a command line's
    undecodable bytes) is not valid Unicode and would fail deep in the database driver."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryError(f"{what} is not valid Unicode text (it holds a lone surrogate, such as \\ud800)") from None
    return value


def text(column: str, value: Any) -> str:
    """A filter value for a text or date column: one value, as text."""
    if isinstance(value, (dict, list)) or value is None:
        raise QueryError(f"column {column!r} needs a single value, got {value!r}")
    return check_text(f"the value for column {column!r}", str(value))


@dataclass(frozen=True)
class Period:
    """A date that names a whole period (2024, 2024-06, 2024-06-01): how it is written (`format`, for
    strptime and ClickHouse's formatDateTime alike) and the INTERVAL unit that spans it."""
    format: str
    unit: str

    @property
    def chars(self) -> int:
        """The length of a date written this way: 2024 is 4, 2024-06 is 7."""
        return len(datetime(2000, 1, 1).strftime(self.format))


TIME_PERIODS = (Period("%Y", "YEAR"), Period("%Y-%m", "MONTH"), Period("%Y-%m-%d", "DAY"))  # besides ISO times


def parse_time(column: str, value: str) -> tuple[str, Period | None]:
    """A date or time a user typed, checked here so a typo is a clear error, as ISO text for ClickHouse,
    with the period it names (2024: the year, 2024-06: the month, 2024-06-01: the day) or None (a point in
    time)."""
    value = value.strip()
    for period in TIME_PERIODS:
        try:
            return datetime.strptime(value, period.format).isoformat(sep=" "), period
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(value).isoformat(sep=" "), None
    except ValueError:
        raise QueryError(f"column {column!r} holds dates; {value!r} is not a date: use 2024-06-01, "
                         "2024-06-01 12:30:00, 2024-06 or 2024") from None
