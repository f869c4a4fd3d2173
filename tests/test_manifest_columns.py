"""A manifest's columns as a shop's spreadsheet grows: a thousand columns at once, prices that get cents and
later text, order numbers of 17 digits, a row pasted twice."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import clipsearch
from clipsearch.loader.sources import read_source
from tests.conftest import random_specs, write_catalogue


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    """Six product photos, 00000.jpg/png ... 00005."""
    return write_catalogue(tmp_path_factory.mktemp("shop"), random_specs(6, 71), 71, manifest=None)


def photos(shop: Path) -> list[str]:
    return sorted(p.name for p in shop.iterdir() if p.suffix in (".png", ".jpg"))


def csv_manifest(shop: Path, name: str, header: str, rows: list[str]) -> Path:
    path = shop / name
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return path


def column_types(db) -> dict[str, str]:
    return db.catalog.images.columns()


def test_a_spreadsheet_of_a_thousand_columns_is_a_handful_of_writes(shop, tmp_path, model):
    """It took 95 s with one ALTER per column; the time itself is measured by bench, not asserted here."""
    names = [f"attribute_{i}" for i in range(1000)]
    manifest = csv_manifest(shop, "wide.csv", ",".join(["path", *names]),
                            [",".join([photos(shop)[0], *(str(i) for i in range(999)), "blue"])])
    with clipsearch.open(tmp_path / "db", model=model, log_searches=False) as db:
        writes = db.catalog.connection.writes.count
        assert db.load(manifest, workers=0).loaded == 1
        assert db.catalog.connection.writes.count - writes < 10   # one ALTER for all the columns, not one each
        types = column_types(db)
        assert [types[n] for n in names] == ["Nullable(Int64)"] * 999 + ["Nullable(String)"]
        row = db.sql("SELECT attribute_0, attribute_998, attribute_999 FROM images")[0]
        assert row == {"attribute_0": 0, "attribute_998": 998, "attribute_999": "blue"}
        # the page's filter form reads every column's range or values: one query, not a thousand
        reads: list[str] = []
        connection = db.catalog.connection
        original, original_read = connection.query, connection.read
        connection.query = lambda sql, params=None: (reads.append(sql), original(sql, params))[1]
        connection.read = lambda sql, params=None: (reads.append(sql), original_read(sql, params))[1]
        summaries = {c["name"]: c for c in db.column_summaries()}
        del connection.query, connection.read
        assert len(reads) == 2   # the columns, then every range and value list at once
        assert summaries["attribute_998"]["min"] == summaries["attribute_998"]["max"] == 998
        assert summaries["attribute_999"]["values"] == ["blue"]


def test_prices_that_get_cents_then_text_widen_the_column_and_keep_its_filter_column_and_index(shop, tmp_path,
                                                                                                model):
    one, two, three, four = photos(shop)[:4]
    with clipsearch.open(tmp_path / "db", model=model, log_searches=False) as db:
        db.load(csv_manifest(shop, "march.csv", "path,price", [f"{one},12", f"{two},30"]), workers=0)
        db.add_filter_column("price")
        db.create_index()
        assert column_types(db)["price"] == "Nullable(Int64)"

        summary = db.load(csv_manifest(shop, "april.csv", "path,price", [f"{three},2.5"]), workers=0)
        assert (summary.loaded, summary.failed) == (1, 0)
        assert "widened manifest columns to hold the new values: price Int64 -> Float64" in summary.line()
        assert column_types(db)["price"] == "Nullable(Float64)"
        assert [r["price"] for r in db.sql("SELECT price FROM images ORDER BY path")] == [12.0, 30.0, 2.5]
        assert {r["path"] for r in db.search("a product", k=5, filters=["price<3"]).rows} == {str(shop / three)}

        summary = db.load(csv_manifest(shop, "may.csv", "path,price", [f"{four},Sold Out"]), workers=0)
        assert "price Float64 -> String" in summary.line()
        assert [r["price"] for r in db.sql("SELECT price FROM images ORDER BY path")] == ["12", "30", "2.5",
                                                                                          "Sold Out"]
        assert db.catalog.indexes.filter_columns() == ["price"]
        key = db.sql("SELECT sorting_key FROM system.projections WHERE table = 'images' AND name = 'filter_price'")
        assert key == [{"sorting_key": ["lowerUTF8(price)"]}]   # as text filters compare: case-insensitive
        found = db.search("a product", k=5, filters=["price=sold out"])
        assert [r["path"] for r in found.rows] == [str(shop / four)]
        assert db.catalog.indexes.vector_index() is not None


def test_a_column_is_never_narrowed(shop, tmp_path, model):
    one, two, three, four = photos(shop)[:4]
    with clipsearch.open(tmp_path / "db", model=model, log_searches=False) as db:
        db.load(csv_manifest(shop, "first.csv", "path,weight,sku", [f"{one},1.5,A-1"]), workers=0)
        summary = db.load(csv_manifest(shop, "later.csv", "path,weight,sku", [f"{two},2,007", f"{three},,2.50"]),
                          workers=0)
        assert "widened" not in summary.line()
        assert column_types(db)["weight"] == "Nullable(Float64)" and column_types(db)["sku"] == "Nullable(String)"
        rows = db.sql("SELECT weight, sku FROM images ORDER BY path")
        assert rows == [{"weight": 1.5, "sku": "A-1"}, {"weight": 2.0, "sku": "007"}, {"weight": None, "sku": "2.50"}]
        # JSON numbers into a text column: their text
        (shop / "later.jsonl").write_text(json.dumps({"path": four, "sku": 12.0, "weight": 3}) + "\n")
        db.load(shop / "later.jsonl", workers=0)
        assert db.sql("SELECT weight, sku FROM images WHERE path = {p:String}", {"p": str(shop / four)}) == [
            {"weight": 3.0, "sku": "12.0"}]


BIG = 12345678901234567   # an order number: 17 digits, not a float64 (which would store ...568)


def test_order_numbers_keep_every_digit(shop, tmp_path, model):
    one, two, three, four, five = photos(shop)[:5]
    mixed = shop / "mixed.jsonl"
    mixed.write_text(json.dumps({"path": one, "order": BIG}) + "\n" + json.dumps({"path": two, "order": 2.5}) + "\n")
    assert read_source(mixed).column_types == {"order": "Nullable(String)"}
    with clipsearch.open(tmp_path / "db", model=model, log_searches=False) as db:
        db.load(mixed, workers=0)
        assert [r["order"] for r in db.sql("SELECT `order` FROM images ORDER BY path")] == [str(BIG), "2.5"]

    with clipsearch.open(tmp_path / "db2", model=model, log_searches=False) as db:
        db.load(csv_manifest(shop, "orders.csv", "path,order,total", [f"{one},{BIG},3"]), workers=0)
        assert column_types(db)["order"] == "Nullable(Int64)"
        # cents for an Int64 column that holds 17 digits: String, not a Float64 that would round them
        summary = db.load(csv_manifest(shop, "refunds.csv", "path,order,total", [f"{two},2.5,{BIG}"]), workers=0)
        assert "order Int64 -> String" in summary.line()
        assert column_types(db)["order"] == "Nullable(String)"
        assert column_types(db)["total"] == "Nullable(Int64)"
        db.load(csv_manifest(shop, "notes.csv", "path,total", [f"{three},0.5"]), workers=0)
        assert column_types(db)["total"] == "Nullable(String)"   # it holds BIG: no Float64
        db.load(csv_manifest(shop, "weights.csv", "path,weight", [f"{five},0.25"]), workers=0)
        db.load(csv_manifest(shop, "weights2.csv", "path,weight", [f"{four},{BIG}"]), workers=0)
        assert column_types(db)["weight"] == "Nullable(String)"   # a Float64 column given BIG
        rows = db.sql("SELECT `order`, total, weight FROM images ORDER BY path")
        assert [(r["order"], r["total"], r["weight"]) for r in rows] == [
            (str(BIG), "3", None), ("2.5", str(BIG), None), (None, "0.5", None), (None, None, str(BIG)),
            (None, None, "0.25")]


@pytest.mark.parametrize("values,kind", [
    ([BIG, 2.5], "Nullable(String)"), ([2**53, 2.5], "Nullable(Float64)"), ([BIG, 3], "Nullable(Int64)"),
    ([str(BIG), "2.5"], "Nullable(String)"), ([2**70, 1.5], "Nullable(Float64)"),
])
def test_integers_mixed_with_fractions_make_float64_only_when_exact(shop, values, kind):
    manifest = shop / "types.jsonl"
    manifest.write_text("".join(json.dumps({"path": p, "n": v}) + "\n" for p, v in zip(photos(shop), values,
                                                                                           strict=False)))
    assert read_source(manifest).column_types == {"n": kind}


def test_a_row_pasted_twice_is_reported_and_the_last_one_loaded(shop, tmp_path, model):
    one, two = photos(shop)[:2]
    manifest = csv_manifest(shop, "pasted.csv", "path,price", [f"{one},10", f"{two},20", f"./{one},11"])
    with clipsearch.open(tmp_path / "db", model=model, log_searches=False) as db:
        summary = db.load(manifest, workers=0)
        assert (summary.loaded, summary.failed) == (2, 1)
        assert summary.errors == [(f"{manifest}:2", "bad manifest row: names the same file as line 4, the last "
                                                    "row for it, which is the one loaded")]
        assert db.sql("SELECT price FROM images WHERE path = {p:String}", {"p": str(shop / one)}) == [{"price": 11}]
