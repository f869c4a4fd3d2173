"""The queries people ask photo search for, on catalogues with known answers, under the exact scan and
the HNSW index alike: weighted and negative terms, a score threshold, pages, facets, string filters,
date periods, places (EXIF GPS), ordering by a column within the matches, at most N per value."""
from __future__ import annotations

import io
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from clipsearch.errors import QueryError
from clipsearch.loader.load import load
from clipsearch.search.filters import parse_filter
from clipsearch.search.options import MAX_WINDOW, Options
from clipsearch.search.searcher import Searcher, Term
from clipsearch.service import shapes
from clipsearch.store.catalog import Catalog
from tests.conftest import loaded

CIRCLES = [("red", "circle")] * 30 + [(c, "circle") for c in ("blue", "green", "yellow", "purple", "white")
                                      for _ in range(8)]
OTHERS = [("red", "square")] * 10 + [("blue", "star")] * 10 + [("green", "triangle")] * 10
CATEGORIES = ["poster", "Badge", "mug", ""]   # "" is a missing value: NULL
TIES = 4                                      # copies of one picture whose files differ: equal vectors


def _specs() -> list[shapes.ShapeSpec]:
    rng = np.random.default_rng(41)
    return [shapes.random_spec(rng, colour=c, shape=s) for c, s in CIRCLES + OTHERS]


def _tie_copies(folder) -> None:
    """TIES PNG files of one yellow star, each with another text chunk: other ids, the same pixels."""
    folder.mkdir()
    picture = Image.open(io.BytesIO(shapes.make_image(np.random.default_rng(5), "yellow", "star")[1]))
    for i in range(TIES):
        info = PngImagePlugin.PngInfo()
        info.add_text("copy", str(i))
        picture.save(folder / f"tie{i}.png", "PNG", pnginfo=info)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, model):
    """(the database folder, its rows with their embeddings); closed, since the CLI tests open their own."""
    folder = tmp_path_factory.mktemp("queries")
    with loaded(folder, _specs(), 41, model,
                extra=lambda i: {"category": CATEGORIES[i % 4], "price": i}) as cat:
        _tie_copies(folder / "ties")
        assert load(str(folder / "ties"), cat.store, model, progress=False).loaded == TIES
        rows = cat.store.query("SELECT * EXCEPT (phash, colour_hash) FROM images")
    return cat.db, rows


@pytest.fixture
def opened(catalogue, model):
    with Catalog.open(catalogue[0]) as store:
        yield store, Searcher(store, lambda: model, log=False), catalogue[1]


@pytest.fixture(params=["exact", "hnsw"])
def searcher(request, opened):
    """The catalogue's searcher without, then with the HNSW index (f32: the index ranks like the scan)."""
    store, searcher, _ = opened
    if request.param == "hnsw":
        store.indexes.create_vector_index("f32", 16, 128)
    else:
        store.indexes.drop_vector_index()
    searcher.expect = request.param
    return searcher


def _scores(rows, model, terms: list[tuple[str, float]]) -> dict[str, float]:
    """id -> the weighted cosine similarity, in numpy: the weights divided by the sum of the positive ones."""
    matrix = np.array([r["embedding"] for r in rows], np.float32)
    positive = sum(w for _, w in terms if w > 0)
    vectors = model.encode_texts([t for t, _ in terms])
    score = sum(w / positive * (matrix @ v) for (_, w), v in zip(terms, vectors, strict=True))
    return {r["id"]: float(s) for r, s in zip(rows, score, strict=True)}


def _ids(result) -> list[str]:
    return [r["id"] for r in result.rows]


def _ran_as_planned(searcher, result) -> bool:
    """The search ran the way the fixture says (and the index answered it, where there is one)."""
    plan = searcher.catalog.text("EXPLAIN indexes = 1 " + result.sql, result.params, "TSV")
    return result.strategy == searcher.expect and ("embedding_hnsw" in plan) == (searcher.expect == "hnsw")


# -- weighted and negative terms -----------------------------------------------------------------
def test_minus_red_removes_red_circles_from_the_top_10(searcher):
    plain = searcher.search("a circle", k=10).rows
    assert sum(r["colour"] == "red" for r in plain) >= 3 and all(r["shape"] == "circle" for r in plain)
    result = searcher.search("a circle", k=10, terms=[Term(text="red", weight=-1)])
    assert not [r for r in result.rows if r["colour"] == "red"]
    assert sum(r["shape"] == "circle" for r in result.rows) >= 8
    assert result.sql.count("ORDER BY") == 1 and result.params["w1"] == -1.0 and result.strategy == "exact"


def test_weighted_terms_rank_like_numpy(opened, model):
    store, searcher, rows = opened
    terms = [("a circle", 1.0), ("blue", 0.5), ("a star", 0.25), ("green", -0.5)]
    result = searcher.search(terms=[Term(text=t, weight=w) for t, w in terms], k=20)
    expected = _scores(rows, model, terms)
    best = sorted(expected.values(), reverse=True)[:20]
    np.testing.assert_allclose([r["score"] for r in result.rows], best, atol=1e-5)
    for r in result.rows:
        assert abs(r["score"] - expected[r["id"]]) < 1e-5
    assert result.kind == "hybrid" and "{w_sum:Float64}" in result.sql


def test_stored_image_terms_and_the_legacy_hybrid_weights(opened):
    store, searcher, rows = opened
    star = next(r["id"] for r in rows if r["path"].endswith("tie0.png"))
    result = searcher.search(terms=[Term(image_id=star[:10]), Term(text="a yellow star", weight=0.5)], k=5)
    assert star not in _ids(result) and all(r["path"].rsplit("/", 1)[1].startswith("tie") for r in result.rows[:3])
    legacy = searcher.search("a yellow star", image_id=star, k=5, weights={"image": 0.6, "text": 0.4})
    assert (legacy.params["w0"], legacy.params["w1"]) == (0.6, 0.4) and legacy.kind == "hybrid"


# -- threshold, pages, ties --------------------------------------------------------------------------
def test_min_score_returns_every_match_above_it(searcher, catalogue, model):
    _, rows = catalogue
    expected = _scores(rows, model, [("a red circle", 1.0)])
    cut = sorted(expected.values(), reverse=True)[40]  # about 40 rows above it
    result = searcher.search("a red circle", k=5000, options=Options(min_score=cut))
    above = {i for i, s in expected.items() if s >= cut + 1e-5}
    assert above <= set(_ids(result)) and all(r["score"] >= cut for r in result.rows)
    assert len(result.rows) <= len(above) + 2 and result.next_offset is None
    assert _ran_as_planned(searcher, result)
    filtered = searcher.search("a red circle", k=5000, options=Options(min_score=cut),
                               filters=[parse_filter("category=poster")])
    assert {r["id"] for r in filtered.rows} == {r["id"] for r in result.rows if r["category"] == "poster"}


@pytest.mark.parametrize("filters,min_score", [([], None), (["price<60"], None), ([], 0.3), (["price<60"], 0.3)])
def test_pages_are_slices_of_one_ranking(searcher, filters, min_score):
    filters = [parse_filter(f) for f in filters]
    whole = _ids(searcher.search("a green circle", k=50, filters=filters, options=Options(min_score=min_score)))
    pages, offset = [], 0
    while offset is not None and len(pages) < len(whole):
        page = searcher.search("a green circle", k=7, filters=filters, options=Options(offset, min_score))
        pages += _ids(page)
        offset = page.next_offset
    assert pages[:len(whole)] == whole and len(whole) == (50 if min_score is None else len(pages))
    assert searcher.search("a green circle", k=7, filters=filters, options=Options(49, min_score)).next_offset in \
        (None, 56)


def test_ties_are_broken_by_id_across_pages(searcher, catalogue):
    _, rows = catalogue
    ties = sorted(r["id"] for r in rows if "/ties/" in r["path"])
    query = Image.open(next(r["path"] for r in rows if r["path"].endswith("tie0.png")))
    pages = [searcher.search(image=query, k=2, options=Options(offset=o)) for o in (0, 2)]
    assert _ids(pages[0]) + _ids(pages[1]) == ties and _ran_as_planned(searcher, pages[1])


def test_limits_of_the_threshold_and_pages(opened):
    _, searcher, _ = opened
    with pytest.raises(QueryError, match="k must be between 1 and 1000, got 5000 .up to 10000 with a min_score"):
        searcher.search("a circle", k=5000)
    with pytest.raises(QueryError, match=f"offset \\+ k is at most {MAX_WINDOW}"):
        searcher.search("a circle", k=1000, options=Options(offset=9500))
    with pytest.raises(QueryError, match="offset must be a whole number"):
        searcher.search("a circle", options=Options(offset=-1))
    with pytest.raises(QueryError, match="min_score is a similarity"):
        searcher.search("a circle", options=Options(min_score=float("nan")))
    with pytest.raises(QueryError, match="at least one term needs a positive weight"):
        searcher.search(terms=[Term(text="red", weight=-1)])
    with pytest.raises(QueryError, match="at most 16 terms"):
        searcher.search(terms=[Term(text="red")] * 17)


# -- order by a column, at most N per value -------------------------------------------------------------
def test_order_by_a_column_within_the_matches(searcher):
    matches = searcher.search("a red circle", k=5000, options=Options(min_score=0.3))
    by_price = searcher.search("a red circle", k=5000, options=Options(min_score=0.3, order_by="price",
                                                                          descending=True))
    prices = [r["price"] for r in by_price.rows]
    assert set(_ids(by_price)) == set(_ids(matches)) and len(prices) > 10
    assert [p for p in prices if p is not None] == sorted((p for p in prices if p is not None), reverse=True)
    assert prices[-1] is None or None not in prices  # NULLS LAST
    assert "ORDER BY `price` DESC NULLS LAST" in by_price.sql and by_price.strategy == "exact"
    with pytest.raises(QueryError, match="order_by needs a min_score"):
        searcher.search("a red circle", options=Options(order_by="price"))


def test_at_most_n_per_value(searcher):
    whole = searcher.search("a circle", k=1000).rows
    expected, seen = [], Counter()
    for r in whole:  # the ranking, keeping the first two of each category
        seen[r["category"]] += 1
        if seen[r["category"]] <= 2:
            expected.append(r["id"])
    result = searcher.search("a circle", k=6, options=Options(per="category", per_limit=2))
    assert _ids(result) == expected[:6] and "LIMIT {per_limit:UInt32} BY `category`" in result.sql
    assert max(Counter(r["category"] for r in result.rows).values()) == 2
    with pytest.raises(QueryError, match="per: unknown column 'colr'"):
        searcher.search("a circle", options=Options(per="colr"))


# -- facets ----------------------------------------------------------------------------------------------
def test_facets_count_the_top_n_and_everything_above_a_threshold(searcher):
    top = searcher.search("a red circle", k=30, facets=["category", "colour", "format"], facet_top=30)
    assert top.facets["colour"] == [{"value": v, "count": n} for v, n in sorted(
        Counter(r["colour"] for r in top.rows).items(), key=lambda vn: (-vn[1], str(vn[0])))]
    assert sum(c["count"] for c in top.facets["category"]) == 30
    assert {c["value"]: c["count"] for c in top.facets["category"]} == \
        dict(Counter(r["category"] for r in top.rows))
    above = searcher.search("a red circle", k=5, options=Options(min_score=0.3), facets=["shape"])
    everything = searcher.search("a red circle", k=5000, options=Options(min_score=0.3))
    assert {c["value"]: c["count"] for c in above.facets["shape"]} == dict(Counter(r["shape"] for r in everything.rows))
    assert "ARRAY JOIN" in above.facet_sql["query"] and above.facet_sql["params"]["facet_names"] == ["shape"]
    with pytest.raises(QueryError, match="facets: unknown column"):
        searcher.search("a circle", facets=["embedding"])


# -- string filters -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("expr,keep", [
    ("category=BADGE", lambda c: c == "Badge"),
    ("category~=OST", lambda c: c == "poster"),
    ("category~=g|u", lambda c: c in ("Badge", "mug")),
    ("category=poster|mug", lambda c: c in ("poster", "mug")),
    ("category!=poster|MUG", lambda c: c == "Badge"),      # NULL is neither equal nor unequal
    ("category is null", lambda c: c is None),
    ("category IS NOT NULL", lambda c: c is not None),
])
def test_string_filters(searcher, catalogue, expr, keep):
    _, rows = catalogue
    expected = {r["id"] for r in rows if keep(r["category"])}
    assert {r["id"] for r in searcher.search("a circle", k=1000, filters=[parse_filter(expr)]).rows} == expected


def test_camera_without_a_value_is_null(opened):
    _, searcher, rows = opened
    assert len(searcher.search("a circle", k=1000, filters=[parse_filter("camera is null")]).rows) == len(rows)
    with pytest.raises(QueryError, match="'~=' .contains. needs a text column"):
        searcher.search("a circle", filters=[parse_filter("price~=1")])


# -- the CLI and the HTTP API --------------------------------------------------------------------------------
def test_cli(cli, catalogue):
    db = catalogue[0]
    out = cli("search", "a circle", "--minus", "red", "--k", "10", "--json", db=db)
    assert out.returncode == 0 and not [r for r in json.loads(out.stdout) if r["colour"] == "red"]
    out = cli("search", "a circle", "--minus", "red:0.5", "--plus", "blue:0.25", "--show-sql", "--json", db=db)
    assert out.returncode == 0 and "ORDER BY {w0:Float64} * cosineDistance" in out.stderr
    assert '"w1": 0.2, ' in out.stderr and '"w2": -0.4' in out.stderr  # shares of the positive weights
    out = cli("search", "a circle", "--per", "category", "1", "--facet", "category,shape", "--json", db=db)
    body = json.loads(out.stdout)
    assert len(body["results"]) == 4 and set(body["facets"]) == {"category", "shape"}  # 3 categories and NULL
    out = cli("search", "a red circle", "--min-score", "0.3", "--order-by", "price", "--desc", "--k", "3", db=db)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 3 and "more: --offset 3" in out.stderr
    out = cli("search", "a circle", "--filter", "category~=badge", "--filter", "taken_at is null", "--json", db=db)
    assert {r["category"] for r in json.loads(out.stdout)} == {"Badge"}
    for args, message in ((["--order-by", "price"], "--order-by needs --min-score"),   # the CLI's own flags
                          (["--per", "category", "x"], "--per's N must be a whole number"),
                          (["--minus", "red:2", "--image-weight", "2"], "--image-weight is a number from 0 to 1"),
                          (["--facet", "nope"], "--facet: unknown column 'nope'")):
        out = cli("search", "a circle", *args, db=db)
        assert out.returncode == 1 and message in out.stderr and "Traceback" not in out.stderr


def test_http(catalogue, model):
    db = catalogue[0]
    from clipsearch.service.app import create_app
    from clipsearch.settings import Settings
    app = create_app(Settings(db=str(db)), model=model, config={"TESTING": True})
    client = app.test_client()
    try:
        body = client.post("/api/search", json={
            "text": "a circle", "terms": [{"text": "red", "weight": -1}], "k": 10, "facets": ["colour"],
            "filters": {"category": {"~=": "O"}}}).get_json()
        assert len(body["results"]) == 10 and not [r for r in body["results"] if r["colour"] == "red"]
        matching = client.post("/api/search", json={"text": "x", "k": 1000, "filters": ["category~=o"]}).get_json()
        assert body["next_offset"] == 10 and sum(c["count"] for c in body["facets"]["colour"]) == \
            min(100, len(matching["results"])) == 25
        page = client.get("/api/search?q=a+circle&term=red:-1&k=5&offset=5&filter=category~%3Do").get_json()
        assert [r["id"] for r in page["results"]] == [r["id"] for r in body["results"][5:10]]
        above = client.get("/api/search?q=a+red+circle&min_score=0.3&k=2000&order_by=price&desc=true").get_json()
        assert above["next_offset"] is None and len(above["results"]) > 10
        first = above["results"][0]["id"]
        similar = client.get(f"/api/images/{first}/similar?k=3&offset=3&per=category&per_limit=1&facet=shape")
        assert similar.status_code == 200 and len(similar.get_json()["results"]) == 1  # four categories, 3 skipped
        for url, message in (("/api/search?q=x&k=5000", "k must be between 1 and 1000"),
                             ("/api/search?q=x&order_by=price", "order_by needs a min_score"),
                             ("/api/search?q=x&offset=-3", "offset must be a whole number"),
                             ("/api/search?q=x&min_score=abc", "min_score must be a number"),
                             ("/api/search?q=x&facet=embedding", "facets: unknown column"),
                             ("/api/search?q=x&filter=near=1,2", "near takes LAT,LON,KM")):
            res = client.get(url)
            assert res.status_code == 400 and message in res.get_json()["error"], (url, res.get_json())
        res = client.post("/api/search", json={"terms": [{"text": "x", "weight": 1, "colour": "red"}]})
        assert res.status_code == 400 and "terms.colour is not a known field" in res.get_json()["error"]
        document = client.get("/api/openapi.json").get_json()
        names = {p["name"] for p in document["paths"]["/api/search"]["get"]["parameters"]}
        assert {"min_score", "offset", "term", "facet", "per", "per_limit", "order_by", "desc"} <= names
    finally:
        app.extensions["clipsearch"].close()



def test_the_planner_prices_the_index_search_the_statement_writes():
    """Searcher.costs and search_sql read one formula (tuning.index_fetch): the index's cost grows with the
    candidate list the statement asks for, beam grown with k and rescoring included, against the list
    tune_index timed (k = 10, no filter)."""
    import re
    from dataclasses import replace

    from clipsearch.search.query import Query
    from clipsearch.search.statement import QueryVector, Strategy, search_sql
    from clipsearch.search.tuning import POSTFILTER_SAFETY
    from clipsearch.store.state import TableState

    state = TableState(columns={"id": "String", "price": "Float64"}, models=["m"], rows=100_000, vector_index=True,
                       filter_columns=[], beam=64, rescore=2, exact_ms_per_row=1e-4, index_ms=2.0)
    one = [QueryVector(vector=[1.0, 0.0])]

    def candidates(k: int, multiplier: float = 1.0, filters: tuple = ()) -> int:
        query = Query.check(state.columns, [parse_filter(f) for f in filters], k)
        sql, _ = search_sql(query, one, Strategy("hnsw", multiplier, state.beam, state.rescore))
        return int(re.search(r"hnsw_candidate_list_size_for_search = (\d+)", sql).group(1))

    timed = candidates(10)
    for k, share, filters in ((10, 1.0, ()), (50, 1.0, ()), (10, 0.5, ("price<5",)), (100, 0.1, ("price<5",))):
        multiplier = POSTFILTER_SAFETY / share if share < 1 else 1.0
        assert Searcher.costs(state, share, k)[1] == pytest.approx(state.index_ms * candidates(k, multiplier, filters)
                                                                   / timed)
    assert Searcher.costs(state, 1.0, 50)[1] > Searcher.costs(state, 1.0, 10)[1]   # the beam grows with k
    unrescored = replace(state, rescore=0)
    assert Searcher.costs(unrescored, 0.5)[1] != Searcher.costs(state, 0.5)[1]
