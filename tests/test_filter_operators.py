"""The filter operators have one definition, filters.FILTER_OPERATORS: a new operator is one entry there, and the
parser, the SQL, the help, the OpenAPI enum and the page's list (GET /api/filters) follow it; every operator
on a date column answers or is a 400, never a 500 (the date branch once looked operators up in a fixed dict)."""
from __future__ import annotations

import re

import pytest

from clipsearch.errors import QueryError
from clipsearch.search import filters
from clipsearch.search.filters import FILTER_OPERATORS, Filter, Operator, filter_help, parse_filter
from clipsearch.search.where import bind_filters
from clipsearch.service.app import create_app
from clipsearch.settings import Settings
from tests.conftest import ROOT
from tests.test_places import PLACES, TAKEN, write_photo

# A throwaway operator, registered by a test only: one entry, text columns only.
ENDS = Operator("$=", "ends with", "COL$=TEXT (ends with)", text="endsWith(lowerUTF8({col}), lowerUTF8({v}))")


@pytest.fixture(scope="module")
def client(tmp_path_factory, model):
    """Five photos with EXIF dates (2023-12-31 to 2024-07-01, one without) behind the app."""
    folder = tmp_path_factory.mktemp("operators")
    for i, name in enumerate(PLACES):
        write_photo(folder / "photos" / f"{name}.jpg", i, TAKEN[name], PLACES[name])
    app = create_app(Settings(db=str(folder / "db")), model=model, config={"TESTING": True})
    app.extensions["clipsearch"].load(str(folder / "photos"))
    yield app.test_client()
    app.extensions["clipsearch"].close()


def _names(response) -> set[str]:
    assert response.status_code == 200, response.get_json()
    return {r["path"].rsplit("/", 1)[1].removesuffix(".jpg") for r in response.get_json()["results"]}


def _search(client, *filters):
    return client.post("/api/search", json={"text": "a blue circle", "k": 100, "filters": list(filters)})


def test_a_new_operator_is_one_entry(client, monkeypatch):
    assert "$=" not in client.get("/api/filters").get_data(as_text=True)
    monkeypatch.setattr(filters, "FILTER_OPERATORS", FILTER_OPERATORS + (ENDS,))
    # the parser (the CLI form, and `$` kept out of column names), the help, the served list
    assert parse_filter("path $= PARIS.jpg") == Filter("path", "$=", "PARIS.jpg")
    assert "COL$=TEXT (ends with)" in filter_help()
    served = client.get("/api/filters").get_json()["operators"]
    assert {"op": "$=", "help": "ends with", "cli": "COL$=TEXT (ends with)", "takes": "one", "many": None} in served
    # the SQL, run on a store: through the query string (the CLI form) and a JSON filter
    assert _names(client.get("/api/search", query_string={"q": "a blue circle", "filter": "path$=paris.jpg"})) \
        == {"paris"}
    assert _names(_search(client, {"column": "path", "op": "$=", "value": "YORK.JPG"})) == {"new-york"}
    # a kind it has no SQL for is a 400 that says which it takes, a date column included
    for column, value in (("taken_at", "2024-06"), ("taken_at", "2024-06-01 00:00:00"), ("width", "1")):
        res = _search(client, {"column": column, "op": "$=", "value": value})
        assert res.status_code == 400 and "'$=' (ends with) needs a text column" in res.get_json()["error"]
    with pytest.raises(QueryError, match="takes one value"):
        bind_filters([Filter("path", "$=", ["a", "b"])], {"path": "String"})


# Each value shape a date filter takes: a period, a point in time, a list of periods, none.
DATE_VALUES = ["2024-06", "2024-06-30 23:00:00", ["2024-07", "2023"], None]


@pytest.mark.parametrize("op", FILTER_OPERATORS, ids=lambda o: o.symbol)
def test_every_operator_on_a_date_column_answers_or_is_a_400(client, op):
    for value in DATE_VALUES:
        res = _search(client, {"column": "taken_at", "op": op.symbol, "value": value})
        assert res.status_code in (200, 400), (op.symbol, value, res.get_data(as_text=True)[:300])
        # where the table gives the operator SQL for this shape of date value, it runs
        if op.takes == "none":
            template = op.default
        elif value is None:
            template = ""
        else:
            template = op.dates if isinstance(value, list) else op.date if value == "2024-06" else op.number
        if template:
            assert res.status_code == 200, (op.symbol, value, res.get_json())


@pytest.mark.parametrize("expr,expected", [
    ("taken_at=2024-06", {"paris", "versailles"}), ("taken_at!=2024-06", {"new-york", "sydney"}),
    ("taken_at<=2024-06", {"new-york", "paris", "versailles"}), ("taken_at>2024-06", {"sydney"}),
    ("taken_at=2024-07|2023", {"new-york", "sydney"}), ("taken_at!=2024-07|2023", {"paris", "versailles"}),
    ("taken_at is null", {"nowhere"}), ("taken_at is not null", {"paris", "versailles", "sydney", "new-york"}),
])
def test_date_operators_keep_their_meaning(client, expr, expected):
    assert _names(client.get("/api/search", query_string={"q": "a blue circle", "filter": expr})) == expected


def _op_enums(node):
    """Every `"op": {"enum": [...]}` in an OpenAPI document."""
    if isinstance(node, dict):
        if isinstance(node.get("op"), dict) and "enum" in node["op"]:
            yield node["op"]["enum"]
        node = list(node.values())
    for item in node if isinstance(node, list) else ():
        yield from _op_enums(item)


def test_everything_else_reads_the_table(client):
    symbols = [o.symbol for o in FILTER_OPERATORS]
    assert [o["op"] for o in client.get("/api/filters").get_json()["operators"]] == symbols
    document = client.get("/api/openapi.json").get_json()
    enums = list(_op_enums(document))
    assert enums and all(enum == symbols for enum in enums)
    parameters = {p["name"]: p for p in document["paths"]["/api/search"]["get"]["parameters"]}
    assert filter_help() in parameters["filter"]["description"]
    # the page asks the server (GET /api/filters) and keeps no list or pattern of its own
    page = (ROOT / "service" / "static" / "app.js").read_text()
    assert "/api/filters" in page and not re.search(r"[!<>~]?=\|[!<>~]?=", page)


def test_each_role_is_one_operator_and_the_page_writes_operators_by_role(client):
    """A bare JSON value, a JSON null and the page's fields and chips stand for the operators the table gives
    those roles: the page spells none itself."""
    from clipsearch.search.filters import ROLES, filters_from_json, with_role
    held = [o.role for o in FILTER_OPERATORS if o.role]
    assert sorted(held) == sorted(set(held)) == sorted(ROLES)
    assert client.get("/api/filters").get_json()["roles"] == {role: with_role(role).symbol for role in ROLES}
    assert filters_from_json({"a": 1, "b": [1, 2], "c": None}) == [
        Filter("a", with_role("value").symbol, 1), Filter("b", with_role("value").many, [1, 2]),
        Filter("c", with_role("null").symbol, None)]
    page = (ROOT / "service" / "static" / "app.js").read_text()
    assert "data-role=" in page and not re.search(r'data-op=|op: "', page)
