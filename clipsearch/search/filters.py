"""Filters as people write them: the operator table (the only place an operator is spelled), the CLI
string form `COL<op>VALUE` and the JSON forms. Binding them to a table's columns is where.py's."""
from __future__ import annotations

import re
from dataclasses import dataclass

from clipsearch.errors import QueryError

NEAR = "near"            # the pseudo-column of `near=LAT,LON,KM`: photos within KM of a place (EXIF GPS)
# Names the search SQL gives its own expressions (aliases, lambda parameters): quoted, with a '$' that no
# column name can hold (quote_identifier takes letters, digits and _), so no manifest column is hidden by one.
LAMBDA = "`$x`"


@dataclass(frozen=True)
class Filter:
    column: str
    op: str
    value: object


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
    # What it stands for where no operator is written (ROLES): a bare JSON value, a facet chip, a form field.
    role: str = ""
    number: str = ""
    text: str = ""
    date: str = ""
    array: str = ""           # an Array column; the value is one element
    numbers: str = ""         # ...with a list of values
    texts: str = ""
    dates: str = ""
    default: str = ""


# The roles an operator can hold, each by at most one operator; GET /api/filters serves them as {role: op}.
ROLES = {
    "value": 'a bare value: JSON {"col": value} (a list: the operator\'s `many`), near=, the page\'s pick lists '
             "and facet chips",
    "null": 'JSON {"col": null}, the page\'s facet chip of an empty value',
    "from": "the page's lower bound of a range",
    "to": "the page's upper bound of a range (a date: to the end of the period it names)",
    "contains": "the page's text box",
}
_IN_TEXTS = f"(lowerUTF8({{col}}) IN arrayMap({LAMBDA} -> lowerUTF8({LAMBDA}), {{v}}))"   # case-insensitive
FILTER_OPERATORS = (
    Operator("=", "equals", "COL=V or A|B (any of them)", many="in", role="value",
             number="{col} = {v}", text="lowerUTF8({col}) = lowerUTF8({v})",
             date="({col} >= {start} AND {col} < {end})"),
    Operator("!=", "differs", "COL!=V or A|B (none of them)", many="not in",
             number="{col} != {v}", text="lowerUTF8({col}) != lowerUTF8({v})",
             date="NOT ({col} >= {start} AND {col} < {end})"),
    Operator(">=", "at least", "COL>=N", role="from", number="{col} >= {v}", text="{col} >= {v}",
             date="{col} >= {start}"),
    Operator("<=", "at most", "COL<=N", role="to", number="{col} <= {v}", text="{col} <= {v}", date="{col} < {end}"),
    Operator(">", "more than", "COL>N", number="{col} > {v}", text="{col} > {v}", date="{col} >= {end}"),
    Operator("<", "less than", "COL<N", number="{col} < {v}", text="{col} < {v}", date="{col} < {start}"),
    Operator("~=", "contains", "COL~=TEXT or A|B (contains)", takes="either", many="~=", role="contains",
             text="positionCaseInsensitiveUTF8({col}, {v}) > 0",
             texts=f"arrayExists({LAMBDA} -> positionCaseInsensitiveUTF8({{col}}, {LAMBDA}) > 0, {{v}})"),
    Operator("in", "any of a list", takes="list", numbers="({col} IN {v})", texts=_IN_TEXTS, dates="{any}"),
    Operator("not in", "none of a list", takes="list", numbers="NOT ({col} IN {v})", texts=f"NOT {_IN_TEXTS}",
             dates="NOT {any}"),
    Operator("has", "holds the value", array="has({col}, {v})"),
    # Text columns without a value hold '' (camera) or NULL (manifest columns): both count as null.
    Operator("is null", "has no value", "'COL is null'", takes="none", role="null",
             default="{col} IS NULL", text="({col} IS NULL OR {col} = '')"),
    Operator("is not null", "has a value", "'COL is not null'", takes="none",
             default="NOT {col} IS NULL", text="NOT ({col} IS NULL OR {col} = '')"),
)
# Read at import by the request models (the OpenAPI enum); the functions below read the table itself.
JSON_OPERATORS = tuple(o.symbol for o in FILTER_OPERATORS)


def operator(symbol: object) -> Operator | None:
    return next((o for o in FILTER_OPERATORS if o.symbol == symbol), None)


def symbols() -> str:
    """Every operator, for an error message."""
    return " ".join(o.symbol for o in FILTER_OPERATORS)


def with_role(role: str) -> Operator:
    """The operator that stands for `role` (one of ROLES)."""
    found = next((o for o in FILTER_OPERATORS if o.role == role), None)
    if found is None:
        raise LookupError(f"no filter operator has the role {role!r}")
    return found


def filter_help() -> str:
    """The CLI string forms, for the CLI's and the API's help."""
    return ", ".join([o.cli for o in FILTER_OPERATORS if o.cli] + [f"{NEAR}{with_role('value').symbol}LAT,LON,KM"])


def operators_json() -> list[dict]:
    """The operators as GET /api/filters serves them: the page parses an address's filters with these."""
    return [{"op": o.symbol, "help": o.help, "cli": o.cli, "takes": o.takes, "many": o.many or None}
            for o in FILTER_OPERATORS]


def roles_json() -> dict[str, str]:
    """{role: operator} as GET /api/filters serves it: which operator the page's fields and chips write."""
    return {o.role: o.symbol for o in FILTER_OPERATORS if o.role}


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


def filters_from_json(spec: object) -> list[Filter]:
    """Filters from a request: CLI strings, [{"column", "op", "value"}], or {"col": value | {op: value}}.

    In the dict form a plain value stands for the "value" role's operator (a list: its `many`) and null for
    the "null" role's:
    {"category": "poster", "price": {">=": 10, "<": 50}, "colour": ["red", "blue"], "tags": {"has": "sale"},
     "taken_at": null, "near": [48.86, 2.35, 10]}
    """
    if spec is None:
        return []
    if isinstance(spec, dict):
        value = with_role("value")
        out = []
        for column, cond in spec.items():
            if isinstance(cond, dict):
                if not cond:
                    raise QueryError(f"empty condition for {column!r}")
                out += [Filter(column, op, v) for op, v in cond.items()]
            elif cond is None:
                out.append(Filter(column, with_role("null").symbol, None))
            else:
                many = isinstance(cond, list) and column != NEAR and value.many
                out.append(Filter(column, many or value.symbol, cond))
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
