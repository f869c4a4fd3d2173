"""Filters: every operator on manifest and built-in columns returns exactly the matching rows.

Hostile input in values and column names changes nothing.
"""
from __future__ import annotations

import operator

import pytest

from clipsearch.errors import QueryError
from clipsearch.search.filters import parse_filter
from clipsearch.search.searcher import Searcher
from tests.conftest import loaded, random_specs

N = 60
CATEGORIES = ["poster", "sticker", "mug"]
OPS = {"=": operator.eq, "!=": operator.ne, ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, model):
    with loaded(tmp_path_factory.mktemp("filters"), random_specs(N, 5), 5, model,
                extra=lambda i: {"category": CATEGORIES[i % 3], "price": round(1.5 * i, 2), "qty": i % 7}) as cat:
        rows = {r["path"].rsplit("/", 1)[1]: r for r in cat.store.query("SELECT * EXCEPT (embedding) FROM images")}
        yield Searcher(cat.store, lambda: model), rows


def _ids(searcher, *filters) -> set[str]:
    return {r["id"] for r in searcher.search("a red circle", k=1000, filters=[parse_filter(f) for f in filters]).rows}


CASES = [("category", "poster"), ("price", "30"), ("qty", "3"), ("width", "100"), ("format", "PNG"),
         ("file_size", "2000")]


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("column,value", CASES)
def test_each_operator_returns_exactly_the_matching_rows(catalogue, column, op, value):
    searcher, rows = catalogue
    numeric = column not in ("category", "format")
    convert = float if numeric else str
    expected = {r["id"] for r in rows.values() if OPS[op](convert(r[column]), convert(value))}
    assert _ids(searcher, f"{column}{op}{value}") == expected


def test_filters_are_anded(catalogue):
    searcher, rows = catalogue
    expected = {r["id"] for r in rows.values() if r["category"] == "mug" and r["price"] > 20 and r["qty"] != 2}
    assert expected and _ids(searcher, "category=mug", "price>20", "qty!=2") == expected


def test_filter_with_spaces_and_k_limit(catalogue):
    searcher, _ = catalogue
    result = searcher.search("a red circle", k=3, filters=[parse_filter("price >= 10")])
    assert len(result.rows) == 3 and all(r["price"] >= 10 for r in result.rows)


def test_unknown_column_lists_known_ones(catalogue):
    searcher, _ = catalogue
    with pytest.raises(QueryError, match=r"unknown column 'colr'.*known columns: id, path.*category.*price"):
        searcher.search("a red circle", filters=[parse_filter("colr=red")])


@pytest.mark.parametrize("expr,message", [("price>cheap", "not a number"), ("embedding=1", "unknown column"),
                                          ("price", "cannot parse filter"), ("=5", "cannot parse filter")])
def test_bad_filters_are_clear_errors(catalogue, expr, message):
    searcher, _ = catalogue
    with pytest.raises(QueryError, match=message):
        searcher.search("a red circle", filters=[parse_filter(expr)])


@pytest.mark.parametrize("expr", [
    "category=poster' OR '1'='1",
    "category=x'); DROP TABLE images; --",
    "category=\\' OR 1=1 --",
    "category=poster\tOR 1=1",
])
def test_injection_in_values_matches_nothing_and_changes_nothing(catalogue, expr):
    searcher, rows = catalogue
    assert _ids(searcher, expr) == set()
    assert searcher.catalog.images.count() == len(rows)


@pytest.mark.parametrize("expr", ["price;DROP TABLE images--=1", "`price`=1", "price) OR (1=1=1",
                                  "category/**/=poster"])
def test_injection_in_column_names_is_rejected(catalogue, expr):
    searcher, rows = catalogue
    with pytest.raises(QueryError):
        searcher.search("a red circle", filters=[parse_filter(expr)])
    assert searcher.catalog.images.count() == len(rows)


def test_k_out_of_range(catalogue):
    searcher, _ = catalogue
    for k in (0, -1, 1001, "ten"):
        with pytest.raises(QueryError, match="k must be"):
            searcher.search("a red circle", k=k)
