"""A search's inputs parsed and checked once against the table's columns: the `Query` the statements are
built from (statement.py) and the planner reads (Searcher.plan)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clipsearch.search.filters import Filter
from clipsearch.search.options import (
    EVERY,
    FACET_TOP,
    MAX_WINDOW,
    Facet,
    Options,
    check_facets,
    check_options,
    check_whole,
)
from clipsearch.search.where import NOWHERE, Where, bind_filters


@dataclass(frozen=True)
class Query:
    """What a search ranks and returns, checked: the filters bound to the table's columns, k, the options,
    the facets and how many of the best matches they count (without a min_score)."""
    where: Where = NOWHERE
    k: int = 10
    options: Options = EVERY
    facets: tuple[Facet, ...] = ()
    facet_top: int = FACET_TOP

    @classmethod
    def check(cls, columns: dict[str, str], filters: Sequence[Filter] = (), k: Any = 10, options: Options = EVERY,
              facets: Sequence[str] = (), facet_top: Any = FACET_TOP) -> Query:
        """The inputs as they come (k and numbers may be a query string's digits) checked against `columns`:
        a QueryError names the first that does not fit."""
        where = bind_filters(filters, columns)
        options, k = check_options(options, k, columns)
        if not facets:
            return cls(where, k, options)
        return cls(where, k, options, check_facets(facets, columns), check_whole("facet_top", facet_top, 1, MAX_WINDOW))
