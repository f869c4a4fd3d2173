"""One search box, both signals: a shop's catalogue where some products are found only by a word of their title,
SKU or file name, fused with the picture ranking in one statement (clipsearch/search/signals.py).

The words columns are written here from the titles, names and texts below (with store.words, the one
tokenizer), so these tests do not depend on what a load puts there."""
from __future__ import annotations

import csv
import json
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest

import clipsearch
from clipsearch.errors import QueryError
from clipsearch.models.sql_functions import register_embedded
from clipsearch.search.filters import parse_filter
from clipsearch.search.query import Query
from clipsearch.search.searcher import Searcher
from clipsearch.search.signals import (
    K0,
    PICTURE_WEIGHT,
    WORD_WEIGHT,
    PictureSignal,
    WordSignal,
    fused_sql,
    probe_sql,
)
from clipsearch.search.statement import EXACT, QueryVector, Strategy
from clipsearch.service import shapes
from clipsearch.service.app import create_app
from clipsearch.settings import Settings
from clipsearch.store.words import name_words, prefixes, words
from tests.conftest import ROOT

N = 40
SKU_ROW, FIRST_IMG, SECOND_IMG, PHRASE_ROW, SPLIT_ROW, SIGN_ROW, META_ROW = 7, 3, 4, 10, 11, 9, 5


def _name(i: int) -> str:
    return {FIRST_IMG: "IMG_2041.jpg", SECOND_IMG: "camera/IMG_3310.jpg"}.get(i, f"product_{i:04d}.jpg")


def _title(i: int, spec: shapes.ShapeSpec) -> str:
    return {SKU_ROW: "Lisbon tram mug MUG-73310", PHRASE_ROW: "red car poster",
            SPLIT_ROW: "car painted red"}.get(i, f"{spec.colour} {spec.shape} shop print")


@pytest.fixture(scope="module")
def shop(tmp_path_factory, model):
    """A shop's catalogue: product photos, a manifest with titles and categories; words written per row."""
    folder = tmp_path_factory.mktemp("fusion")
    specs = [shapes.random_spec(np.random.default_rng(35 + i)) for i in range(N)]
    images = folder / "images"
    shapes.write_catalogue(images, specs, 35, manifest=None)
    rows = []
    for i, spec in enumerate(specs):
        source = images / f"{i:05d}.{'jpg' if spec.image_format == 'JPEG' else 'png'}"
        target = images / _name(i)
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target.with_suffix(source.suffix))
        rows.append({"path": _name(i).rsplit(".", 1)[0] + source.suffix, "title": _title(i, spec),
                     "category": "poster" if i % 2 else "badge"})
    manifest = images / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "title", "category"])
        writer.writeheader()
        writer.writerows(rows)
    db = folder / "db"
    with clipsearch.open(db, model=model, log_searches=False) as shop:
        shop.load(manifest)
        store = shop.catalog
        for row in store.query("SELECT id, path FROM images"):
            i = next(i for i, r in enumerate(rows) if row["path"].endswith("/" + r["path"]))
            name = name_words(rows[i]["path"])   # as the shop names it, not the test's temporary folders
            store.connection.command(
                "ALTER TABLE images UPDATE words_name = {name:Array(String)}, words_prefixes = {pre:Array(String)}, "
                "words_title = {title:Array(String)}, words_meta = {meta:Array(String)}, "
                "words_ocr = {ocr:Array(String)}, words_label = {label:Array(String)} "
                "WHERE id = {id:String} SETTINGS mutations_sync = 2",
                {"id": row["id"], "name": name, "pre": prefixes(name), "title": words(rows[i]["title"]),
                 "meta": words("sunset over the harbour" if i == META_ROW else ""),
                 "ocr": words("BAKERY open daily" if i == SIGN_ROW else ""),
                 "label": words(specs[i].shape)})
    yield {"db": db, "folder": folder, "rows": rows}


@pytest.fixture
def photos(shop, model):
    with clipsearch.open(shop["db"], model=model, log_searches=False) as photos:
        yield photos


def _id(photos, i: int) -> str:
    stem = _name(i).rsplit(".", 1)[0]
    return photos.catalog.query("SELECT id FROM images WHERE path LIKE {p:String}", {"p": f"%{stem}.%"})[0]["id"]


def _ids(result) -> list[str]:
    return [r["id"] for r in result.rows]


def test_a_sku_finds_the_product_the_picture_ranking_does_not(photos):
    """A shopper pastes the SKU from a receipt: the pictures (coloured shapes) know nothing of it."""
    mug = _id(photos, SKU_ROW)
    pictures = photos.search("MUG-73310", k=5, match="pictures")
    assert mug not in _ids(pictures)
    both = photos.search("MUG-73310", k=5)
    assert both.match == "both" and _ids(both)[0] == mug
    top = both.rows[0]
    assert top["match"]["words"] == {"title": ["mug", "73310"]} and top["match"]["word_rank"] == 1
    assert "`$word_rank`" in both.sql and "hasAnyTokens(arrayConcat(words_name" in both.sql
    # the rest of the page is the picture ranking, in its order
    assert _ids(both)[1:] == [i for i in _ids(pictures) if i != mug][:4]


def test_part_of_a_file_name_finds_the_photo(photos):
    """`IMG_20` finds IMG_2041.jpg before IMG_3310.jpg, which shares only `img`."""
    result = photos.search("IMG_20", k=10, match="words")
    assert _ids(result)[:2] == [_id(photos, FIRST_IMG), _id(photos, SECOND_IMG)]
    assert len(result.rows) == 2
    assert result.rows[0]["match"]["words"] == {"name": ["img", "20"]}
    assert result.rows[1]["match"]["words"] == {"name": ["img"]}
    assert result.rows[0]["match"]["picture_rank"] is None   # a words search ranks by words alone


def test_a_quoted_phrase_must_stand_together(photos):
    loose = photos.search("red car", k=N, match="words")
    assert {_id(photos, PHRASE_ROW), _id(photos, SPLIT_ROW)} <= set(_ids(loose))
    quoted = photos.search('"red car"', k=N, match="words")
    assert _ids(quoted) == [_id(photos, PHRASE_ROW)]


def test_a_query_with_no_stored_word_is_exactly_the_picture_ranking(photos):
    for text in ("zebra xylophone", "the of and", "!!! ???", "a velvet submarine"):
        plain = Searcher(photos.catalog, lambda: photos.model, log=False).search(text, k=12)   # no words feature
        both = photos.search(text, k=12)
        assert both.match == "pictures" and both.sql == plain.sql, text
        assert [(r["id"], r["score"]) for r in both.rows] == [(r["id"], r["score"]) for r in plain.rows]
        assert all(r["picture_score"] == r["score"] and r["match"]["word_rank"] is None for r in both.rows)
        assert [r["match"]["picture_rank"] for r in both.rows] == list(range(1, 13))


def test_filters_apply_to_both_branches(photos):
    """The SKU's product is a poster: among badges it is not found by its words either."""
    badges, posters = [parse_filter("category=badge")], [parse_filter("category=poster")]
    both = photos.search("mug 73310", k=10, filters=badges)
    assert both.match == "pictures"   # the only row with the words is filtered away: nothing to fuse
    words = photos.search("shop print", k=N, match="words", filters=posters)
    assert words.rows and all(r["category"] == "poster" for r in words.rows)
    fused = photos.search("red shop print", k=10, filters=posters)
    assert fused.match == "both" and all(r["category"] == "poster" for r in fused.rows)


def test_explanations_and_scores_of_a_fused_search(photos):
    result = photos.search("red shop print circle", k=15)
    pictures = {r["id"]: r for r in photos.search("red shop print circle", k=N, match="pictures").rows}
    assert result.match == "both"
    for row in result.rows:
        m = row["match"]
        assert row["picture_score"] == pytest.approx(pictures[row["id"]]["score"], abs=1e-6)
        # the words' term is scaled by the share of the query's four words the row holds
        share = len({w for found in m["words"].values() for w in found}) / 4
        expected = sum(w / (K0 + r) for w, r in ((PICTURE_WEIGHT, m["picture_rank"]), (WORD_WEIGHT * share,
                                                                                     m["word_rank"]))
                       if r is not None)
        assert row["score"] == pytest.approx(expected)
        if m["picture_rank"] is not None:
            assert list(pictures).index(row["id"]) + 1 == m["picture_rank"]
        assert set(m["words"]) <= {"name", "title", "meta", "ocr", "label"}
        for field, found in m["words"].items():
            assert found and set(found) <= {"red", "shop", "print", "circle"}, field
        assert bool(m["words"]) == (m["word_rank"] is not None)
    scores = [r["score"] for r in result.rows]
    assert scores == sorted(scores, reverse=True)
    assert any("label" in r["match"]["words"] for r in result.rows)   # "circle" is a label of some


def test_words_from_metadata_and_from_text_in_the_picture(photos):
    sign = photos.search("bakery", k=3)
    assert _ids(sign)[0] == _id(photos, SIGN_ROW) and sign.rows[0]["match"]["words"] == {"ocr": ["bakery"]}
    harbour = photos.search("harbour sunset", k=3)
    assert harbour.rows[0]["match"]["words"] == {"meta": ["harbour", "sunset"]}


def test_pages_options_of_a_fused_search(photos):
    whole = _ids(photos.search("red shop print", k=20))
    assert _ids(photos.search("red shop print", k=10)) + \
        _ids(photos.search("red shop print", k=10, offset=10)) == whole
    per = photos.search("red shop print", k=10, per="category")
    assert sorted(r["category"] for r in per.rows) == ["badge", "poster"]
    ordered = photos.search("red shop print", k=10, min_score=-1, order_by="category", descending=True)
    assert [r["category"] for r in ordered.rows] == sorted((r["category"] for r in ordered.rows), reverse=True)
    cut = photos.search("mug 73310", k=10, min_score=1.5)   # no picture is that similar: words only
    assert _ids(cut) == [_id(photos, SKU_ROW)] and cut.rows[0]["match"]["picture_rank"] is None


def test_bad_input_is_a_normal_answer_or_a_clear_error(photos):
    every = photos.search("shop print", k=5)   # words every generic row holds
    assert len(every.rows) == 5 and every.match == "both"
    for text in ("東京タワー 写真", "مرحبا بالعالم", "mu\u200bg 73310", "...,;:!?", "of the a an"):
        result = photos.search(text, k=5)
        assert len(result.rows) == 5, text
    assert photos.search("mu\u200bg 73310", k=1).rows[0]["id"] == _id(photos, SKU_ROW)
    with pytest.raises(QueryError, match="characters"):
        photos.search(" ".join(["word"] * 10_000), k=5)
    # past MAX_QUERY_WORDS words the rest is ignored
    many = " ".join(f"nonword{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(150)) + " 73310"
    assert photos.search(many, k=5).match == "pictures"
    with pytest.raises(QueryError, match="match is one of"):
        photos.search("mug", match="everything")
    with pytest.raises(QueryError, match="needs a text"):
        photos.search(similar=_id(photos, 1), match="words")
    assert photos.search(similar=_id(photos, 1), k=3).match == "pictures"


def test_the_words_branch_reads_the_text_indexes(photos):
    signal = WordSignal(("mug", "73310"))
    sql, params = probe_sql(signal, Query(), [])
    plan = "\n".join(r["explain"] for r in photos.catalog.query("EXPLAIN indexes = 1 " + sql, params))
    assert "Name: words_any" in plan, plan


def test_the_analysts_query_fuses_the_same_way(photos, model):
    """sql/queries/search_words_and_pictures.sql, as an analyst runs it, with clipTextEmbedding."""
    register_embedded(photos.catalog, lambda label: model)
    sql = (ROOT / "sql" / "queries" / "search_words_and_pictures.sql").read_text()
    rows = photos.catalog.query(sql, {"text": "MUG-73310"})
    assert rows[0]["id"] == _id(photos, SKU_ROW) and list(rows[0]["title_words"]) == ["mug", "73310"]
    fused = photos.search("MUG-73310", k=10)
    assert [r["id"] for r in rows] == _ids(fused)
    assert [r["score"] for r in rows] == pytest.approx([r["score"] for r in fused.rows], abs=1e-5)
    rows = photos.catalog.query(sql, {"text": "red shop print"})
    assert [r["id"] for r in rows] == _ids(photos.search("red shop print", k=10))


@pytest.fixture
def client(shop, model):
    app = create_app(Settings(db=str(shop["db"])), model=model, config={"TESTING": True})
    yield app.test_client()
    app.extensions["clipsearch"].close()


def test_the_http_api_carries_match(client):
    got = client.get("/api/search", query_string={"q": "IMG_20", "k": 3})
    assert got.status_code == 200 and got.json["match"] == "both"
    top = got.json["results"][0]
    assert top["path"].endswith("IMG_2041.jpg") and top["match"]["words"] == {"name": ["img", "20"]}
    assert isinstance(top["picture_score"], float)
    posted = client.post("/api/search", json={"text": "MUG-73310", "k": 2, "match": "words"})
    assert posted.status_code == 200 and posted.json["match"] == "words"
    assert [r["match"]["word_rank"] for r in posted.json["results"]] == [1]
    pictures = client.get("/api/search", query_string={"q": "MUG-73310", "k": 2, "match": "pictures"}).json
    assert pictures["match"] == "pictures" and pictures["results"][0]["match"]["words"] == {}
    bad = client.get("/api/search", query_string={"q": "mug", "match": "everything"})
    assert bad.status_code == 400 and "match" in bad.json["error"]
    for text in (" ".join(["word"] * 10_000), "\u200b\u200b", "東京", "مرحبا", "?!"):
        answer = client.post("/api/search", json={"text": text, "k": 3})
        assert answer.status_code in (200, 400), (text[:20], answer.json)
    document = client.get("/api/openapi.json").json
    parameters = [p["name"] for p in document["paths"]["/api/search"]["get"]["parameters"]]
    assert "match" in parameters


def test_the_cli_prints_the_statement_that_ran(shop, cli):
    out = cli("search", "MUG-73310", "--k", "2", "--json", "--show-sql", db=shop["db"])
    rows = json.loads(out.stdout)
    assert rows[0]["match"]["words"] == {"title": ["mug", "73310"]}
    assert "-- match both" in out.stderr and "hasAnyTokens(arrayConcat(words_name" in out.stderr
    lines = cli("search", "IMG_20", "--k", "1", db=shop["db"]).stdout
    assert "IMG_2041" in lines and "name~img,20" in lines
    plain = cli("search", "IMG_20", "--k", "1", "--match", "pictures", "--show-sql", db=shop["db"])
    assert "-- match pictures" in plain.stderr and "hasAnyTokens" not in plain.stderr


@pytest.mark.slow
def test_the_page_shows_the_words_that_matched(shop, model, tmp_path):
    from scripts.screenshot import find_chromium, render
    if not find_chromium():
        pytest.skip("chromium is not installed")
    from waitress.server import create_server
    app = create_app(Settings(db=str(shop["db"])), model=model)
    server = create_server(app, host="127.0.0.1", port=0, threads=4, asyncore_use_poll=True)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        shot = tmp_path / "page.png" if not os.environ.get("FUSION_SCREENSHOT") else \
            Path(os.environ["FUSION_SCREENSHOT"])
        dom = render(f"http://127.0.0.1:{server.effective_port}/?q=IMG_20&k=12", shot)
        first = re.search(r'class="card".*?</button>', dom, re.S)
        assert first and "IMG_2041" in first.group(0)
        assert re.search(r'<mark class="word"[^>]*>name: img 20</mark>', first.group(0))
        assert re.search(r'<option value="both" selected', dom)
        dom = render(f"http://127.0.0.1:{server.effective_port}/?q=IMG_20&k=12&match=words", None)
        assert len(re.findall(r'class="card"', dom)) == 2
    finally:
        server.close()
        app.extensions["clipsearch"].close()


def test_the_picture_branch_uses_the_vector_index_inside_the_fused_statement(photos):
    """Last in this module: it gives the store a vector index. With the HNSW strategy the picture branch is the
    index search (its SETTINGS at the end of the whole statement) and, every candidate's cosine computed from
    its own vector, ranks as the exact one does here."""
    photos.create_index()
    vector = photos.model.encode_texts(["a red shop print"])[0]
    parts = [QueryVector(vector=[float(x) for x in vector])]
    query = Query(k=10)
    words = WordSignal(("red", "shop", "print"))
    exact_sql, params = fused_sql(query, parts, [PictureSignal(EXACT), words])
    hnsw_sql, hnsw_params = fused_sql(query, parts, [PictureSignal(Strategy("hnsw", beam=256)), words])
    assert "hnsw_candidate_list_size_for_search = " in hnsw_sql.rstrip().splitlines()[-1]
    assert hnsw_sql.rstrip().splitlines()[-1].startswith("SETTINGS use_uncompressed_cache = 1")
    assert photos.catalog.query(hnsw_sql, hnsw_params) == photos.catalog.query(exact_sql, params)
    # the candidates' statements, as the fused one runs them (its SETTINGS): the vector index, the text index
    picture = PictureSignal(Strategy("hnsw", beam=256)).branch(query, parts, 50)
    plan = "\n".join(r["explain"] for r in photos.catalog.query(
        f"EXPLAIN indexes = 1 {picture.sql}\nSETTINGS {picture.settings}", picture.params))
    assert "Name: embedding_hnsw" in plan, plan
    word = words.branch(query, parts, 50)
    plan = "\n".join(r["explain"] for r in photos.catalog.query("EXPLAIN indexes = 1 " + word.sql, word.params))
    assert "Name: words_any" in plan, plan
