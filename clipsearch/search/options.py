"""Which of the ranked matches a search returns (Options: the page, a score cut, an order, diversity) and
what it counts (facets): their limits and checks against the table's columns."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipsearch.errors import QueryError
from clipsearch.store.columns import NOT_FILTERABLE, TIME_TYPE, base_type
from clipsearch.store.connection import quote_identifier

MAX_K = 1000
MAX_K_THRESHOLD = 10_000  # k with a min_score: every match above it, a page at a time
MAX_WINDOW = 10_000       # offset + k: the rows one search ranks to answer a page
MAX_TERMS = 16            # texts, images and stored ids in one query
MAX_FACETS = 8            # columns counted per search
FACET_TOP = 100           # without a min_score, facets count the best FACET_TOP matches
MAX_FACET_VALUES = 50     # values per facet, the most frequent


@dataclass(frozen=True)
class Options:
    """Which of the ranked matches a search returns: the page from `offset` on, only those scoring at least
    `min_score`, ordered by the column `order_by` instead of the score (with a min_score), at most
    `per_limit` per value of the column `per`, at most `moments` per video (its best ones; 0: every moment, and
    no grouping at all: the searcher sets 0 where the table holds no video, so a photo search's statement is
    as before; the CLI, the API and Collection.search ask for 1 by default)."""
    offset: int = 0
    min_score: float | None = None
    order_by: str | None = None
    descending: bool = False
    per: str | None = None
    per_limit: int = 1
    cutoff: str | None = None   # "auto": only the first results that stand out (auto_cutoff)
    moments: int = 0


CUTOFFS = ("auto",)
EVERY = Options()   # the top k by score, as searches always were


@dataclass(frozen=True)
class Facet:
    """A column whose matches are counted per value, and the SQL of its value (a date column: its year)."""
    column: str
    value: str


def check_whole(name: str, value: Any, low: int, high: int) -> int:
    """An int from `low` to `high`, or a string of ASCII digits (a query string's "10")."""
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,9}\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise QueryError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return value


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


def sortable(name: str, column: str | None, columns: dict[str, str]) -> str:
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
        sortable("order_by", options.order_by, columns)
    if options.per is not None:
        sortable("per", options.per, columns)
    per_limit = check_whole("per_limit", options.per_limit, 1, MAX_K)
    if options.cutoff is not None:
        if options.cutoff not in CUTOFFS:
            raise QueryError(f"cutoff is {' or '.join(CUTOFFS)}, got {options.cutoff!r}")
        if offset or options.order_by:
            raise QueryError("cutoff=auto keeps the best results that stand out: it takes no offset or order_by")
    moments = check_whole("moments", options.moments, 0, MAX_K)
    return Options(offset, min_score, options.order_by, bool(options.descending), options.per, per_limit,
                   options.cutoff, moments), k


def auto_cutoff(scores: Sequence[float]) -> int:
    """How many of a search's results (their scores, best first) stand out: those above the largest gap in the
    score curve, when that gap is wider than the spread of the scores above it (the results kept are nearer
    each other than to the first one left out); else all of them. Relative, so it holds for any model's scale
    and for fused scores; at least one result is kept."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size < 2:
        return int(s.size)
    gaps = s[:-1] - s[1:]
    i = int(np.argmax(gaps))
    return i + 1 if gaps[i] > s[0] - s[i] else int(s.size)


def check_facets(facets: Sequence[str], columns: dict[str, str]) -> tuple[Facet, ...]:
    """Up to MAX_FACETS known columns to count the matches by, each with the SQL of its value."""
    if not 1 <= len(facets) <= MAX_FACETS:
        raise QueryError(f"facets: 1 to {MAX_FACETS} columns, got {len(facets)}")
    if len(set(facets)) != len(facets):
        raise QueryError("facets: a column is named twice")
    out = []
    for name in facets:
        column = sortable("facets", name, columns)
        out.append(Facet(name, f"toString(toYear({column}))" if TIME_TYPE.match(base_type(columns[name]))
                         else f"toString({column})"))
    return tuple(out)
