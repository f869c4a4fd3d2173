"""Issue 36: `clipsearch eval` measures search quality on judged queries. The metrics against values worked out
by hand; judgments files read or refused with one clear line; and whole runs on a catalogue of the bundled
model's world with known answers (5 red circles, 5 blue squares, 5 yellow stars), where a perfect query scores 1
and a query whose relevant images are of another shape scores 0."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import clipsearch
from clipsearch.errors import QueryError
from clipsearch.search import metrics
from clipsearch.search.evaluation import read_judgments
from tests.conftest import random_specs, write_catalogue

LOG2 = math.log2


# -- the arithmetic ---------------------------------------------------------------------------
def test_metrics_against_hand_computed_values():
    gains = [0, 2, 0, 1, 3]   # grades of the results in order; 3 relevant among them, 4 relevant in all
    assert metrics.precision_at_k(gains, 5) == 3 / 5
    assert metrics.precision_at_k(gains, 2) == 1 / 2
    assert metrics.precision_at_k([1], 10) == 1 / 10          # a short list counts its empty places
    assert metrics.recall_at_k(gains, 4, 5) == 3 / 4
    assert metrics.recall_at_k(gains, 4, 3) == 1 / 4
    assert metrics.recall_at_k(gains, 0, 5) == 0.0
    assert metrics.reciprocal_rank(gains) == 1 / 2
    assert metrics.reciprocal_rank([0, 0, 0]) == 0.0
    assert metrics.reciprocal_rank([1]) == 1.0
    dcg = 3 / LOG2(3) + 1 / LOG2(5) + 7 / LOG2(6)              # (2^g - 1) / log2(rank + 1)
    ideal = 7 / LOG2(2) + 3 / LOG2(3) + 1 / LOG2(4) + 1 / LOG2(5)   # the four relevant grades 3, 2, 1, 1
    assert metrics.ndcg_at_k(gains, [1, 3, 1, 2], 5) == pytest.approx(dcg / ideal)
    assert metrics.ndcg_at_k([3, 2, 1], [1, 2, 3], 3) == pytest.approx(1.0)   # the best order
    assert metrics.ndcg_at_k([1, 2, 3], [1, 2, 3], 3) < 1.0
    assert metrics.ndcg_at_k([0, 0], [1], 2) == 0.0
    assert metrics.scores([1, 1], 2, [1, 1], 2) == {"precision_at_k": 1.0, "recall_at_k": 1.0, "ndcg_at_k": 1.0,
                                                    "mrr": 1.0}


# -- reading judgments ------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "text", "message"), [
    ("empty.csv", "", "no judgments"),
    ("header.csv", "query,path\n", "no judgments"),
    ("blank.jsonl", "\n\n", "no judgments"),
    ("cols.csv", "query,path,score\nred,a.jpg,1\n", "unknown column score; judgments have query, path, id, grade"),
    ("noquery.csv", "path,grade\na.jpg,1\n", "no query column"),
    ("grade.csv", "query,path,grade\nred,a.jpg,1\nred,b.jpg,4\n", "grade.csv:3: grade is a whole number from 0 to 3, "
                                                                   "got '4'"),
    ("half.csv", "query,path,grade\nred,a.jpg,1.5\n", "grade is a whole number from 0 to 3"),
    ("neg.jsonl", '{"query": "red", "id": "ab", "grade": -1}\n', "grade is a whole number from 0 to 3"),
    ("two.csv", "query,path,id\nred,a.jpg,abc\n", "names one of path, id or filter, got path, id"),
    ("none.csv", "query,path\nred,\n", "got none"),
    ("noq.csv", "query,path\n,a.jpg\n", "noq.csv:2: no query"),
    ("list.jsonl", "[1, 2]\n", "not a JSON object"),
    ("bad.jsonl", "{nope\n", "bad.jsonl:1: not a JSON object"),
    ("filter.csv", "query,filter\nred,no operator\n", "filter.csv:2:"),
    ("judgments.txt", "query,path\nred,a.jpg\n", "a .csv or .jsonl file"),
    ("twofilters.csv", "query,filter\nred,colour=red\nred,shape=circle\n", "has a filter already (line 2)"),
])
def test_bad_judgments_are_one_clear_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(QueryError, match=None) as caught:
        read_judgments(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_judgments_group_by_query_and_resolve_paths_beside_the_file(tmp_path):
    (tmp_path / "q.png").write_bytes(b"not read here")
    path = tmp_path / "j.jsonl"
    path.write_text('{"query": "red", "path": "a.jpg"}\n{"query": "red", "path": "a.jpg", "grade": 3}\n'
                    '{"query": "q.png", "filter": "colour=red; shape=circle", "grade": "2"}\n'
                    '{"query": "blue", "id": "abc", "grade": 0}\n')
    red, image, blue = read_judgments(path)
    assert red.grades == {("path", str(tmp_path / "a.jpg")): 3} and red.image is None and red.line == 1
    assert image.image == str(tmp_path / "q.png") and image.filter == ("colour=red; shape=circle", 2, 3)
    assert blue.grades == {("id", "abc"): 0}


# -- on a store -------------------------------------------------------------------------------
SHAPES = [("red", "circle"), ("blue", "square"), ("yellow", "star")]


@pytest.fixture(scope="module")
def shop(tmp_path_factory, model):
    """15 images, 5 of each of SHAPES (shown large), and their paths by (colour, shape)."""
    folder = tmp_path_factory.mktemp("eval")
    specs = [s for colour, shape in SHAPES for s in random_specs(5, 36, colour=colour, shape=shape,
                                                                 size_range=(0.5, 0.8), dims_range=(96, 160))]
    manifest = write_catalogue(folder / "imgs", specs, 36, extra=lambda i: {"category": "poster" if i < 5 else "badge"})
    with clipsearch.open(folder / "db", model=model, log_searches=False) as photos:
        photos.load(manifest, workers=0)
    paths = {pair: [str(manifest.parent / f"{i:05d}.{'jpg' if s.image_format == 'JPEG' else 'png'}")
                    for i, s in enumerate(specs) if (s.colour, s.shape) == pair] for pair in SHAPES}
    return folder / "db", paths, folder


def _write(folder, name, rows):
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_scores_known_answers(shop):
    db, paths, folder = shop
    judgments = _write(folder, "known.jsonl", [
        *({"query": "a red circle", "path": p} for p in paths["red", "circle"]),          # perfect: 1 everywhere
        *({"query": "a blue square", "path": p} for p in paths["yellow", "star"]),        # the wrong shape: 0
        {"query": "a yellow star", "filter": "colour=yellow;shape=star"},                 # by filter: perfect
        {"query": "a yellow star", "path": str(folder / "not-there.jpg")},                # not stored: skipped
        {"query": "a purple cross", "path": str(folder / "gone.jpg")},                    # nothing relevant left
        {"query": paths["red", "circle"][0], "filter": "category=poster"},               # an image query
    ])
    with clipsearch.open(db, log_searches=False) as photos:
        report = photos.evaluate(judgments, k=5, match="pictures")
    assert report.skipped == [(12, f"path {folder / 'not-there.jpg'} (query 'a yellow star'): not stored"),
                              (13, f"path {folder / 'gone.jpg'} (query 'a purple cross'): not stored")]
    assert report.no_relevant == ["a purple cross"]
    doc = report.as_json()
    assert list(doc) == ["k", "queries", "runs"] and doc["k"] == 5 and doc["queries"] == 5
    (run,) = doc["runs"]
    assert list(run) == ["model", "match", "precision_at_k", "recall_at_k", "ndcg_at_k", "mrr", "per_query"]
    assert run["model"] == "clipsearch-shapes" and run["match"] == "pictures"
    per = {q["query"]: q for q in run["per_query"]}
    perfect = {"relevant": 5, "returned": 5, "precision_at_k": 1.0, "recall_at_k": 1.0, "ndcg_at_k": 1.0, "mrr": 1.0}
    assert per["a red circle"] == {"query": "a red circle", **perfect}
    assert per["a yellow star"] == {"query": "a yellow star", **perfect}
    assert per[paths["red", "circle"][0]] == {"query": paths["red", "circle"][0], **perfect}
    assert per["a blue square"] == {"query": "a blue square", "relevant": 5, "returned": 5, "precision_at_k": 0.0,
                                    "recall_at_k": 0.0, "ndcg_at_k": 0.0, "mrr": 0.0}
    assert per["a purple cross"] == {"query": "a purple cross", "relevant": 0, "returned": None,
                                     "error": "no relevant item is stored for this query"}
    assert run["precision_at_k"] == run["recall_at_k"] == run["ndcg_at_k"] == run["mrr"] == 0.75   # 3 of 4


def test_grades_and_k_beyond_the_relevant(shop):
    """k=10 over 5 relevant: P@10 is 0.5 at best; a grade 0 judgment takes an image out of the filter's set."""
    db, paths, folder = shop
    rows = [{"query": "a red circle", "filter": "colour=red", "grade": 2},
            {"query": "a red circle", "path": paths["red", "circle"][0], "grade": 0}]
    with clipsearch.open(db, log_searches=False) as photos:
        (run,) = photos.evaluate(_write(folder, "graded.jsonl", rows), k=10, match="pictures").as_json()["runs"]
        ranked = [r["id"] for r in photos.search("a red circle", k=10, match="pictures").rows]
        first = paths["red", "circle"][0]
        excluded = photos.sql("SELECT id FROM images WHERE path = {p:String}", {"p": first})[0]["id"]
        red = {r["id"] for r in photos.sql("SELECT id FROM images WHERE colour = 'red'")}
    (q,) = run["per_query"]
    gains = [2 if i in red and i != excluded else 0 for i in ranked]
    assert q["relevant"] == 4 and q["precision_at_k"] == 0.4 and q["recall_at_k"] == 1.0
    assert q["ndcg_at_k"] == round(metrics.ndcg_at_k(gains, [2, 2, 2, 2], 10), 4) and q["mrr"] == \
        round(metrics.reciprocal_rank(gains), 4)


def test_eval_command_table_json_and_match_modes(shop, cli):
    db, paths, folder = shop
    judgments = folder / "cli.csv"
    judgments.write_text("query,path,grade\n" + "".join(f"a red circle,{p},1\n" for p in paths["red", "circle"])
                         + f"a red circle,{folder / 'x.jpg'},1\n")
    out = cli("eval", judgments, "--k", "5", "--match", "pictures,words", "--match", "both", "--json", db=db)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [(r["model"], r["match"]) for r in doc["runs"]] == [("clipsearch-shapes", m)
                                                               for m in ("pictures", "words", "both")]
    assert all(r["precision_at_k"] == 1.0 for r in doc["runs"])   # the manifest's colour and shape are words
    assert f"skipped line 7: path {folder / 'x.jpg'} (query 'a red circle'): not stored" in out.stderr
    table = cli("eval", judgments, "--k", "5", "--quiet", "--per-query", db=db)
    assert table.returncode == 0
    assert "clipsearch-shapes  both      1.000  1.000  1.000  1.000" in table.stdout
    assert "(1 queries)" in table.stdout
    bad = cli("eval", folder / "missing.csv", db=db)
    assert bad.returncode != 0 and bad.stderr.strip().endswith("No such file or directory")
    (folder / "bad.csv").write_text("query,path,grade\nred,a.jpg,7\n")
    bad = cli("eval", folder / "bad.csv", db=db)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [
        f"error: {folder / 'bad.csv'}:2: grade is a whole number from 0 to 3, got '7'"]
    unknown = cli("eval", judgments, "--model", "ViT-B-32", db=db)
    assert unknown.returncode != 0 and "neither the store's model nor a kept one" in unknown.stderr


def test_a_hundred_thousand_judgments(shop):
    """100,000 rows, most naming files that are not stored: looked up in bulk, each reported, the rest scored."""
    db, paths, folder = shop
    path = folder / "many.csv"
    rows = ["query,path"] + [f"a red circle,{p}" for p in paths["red", "circle"]]
    rows += [f"query {i % 50},{folder}/missing-{i}.jpg" for i in range(100_000 - 5)]
    path.write_text("\n".join(rows) + "\n")
    with clipsearch.open(db, log_searches=False) as photos:
        report = photos.evaluate(path, k=5, match="pictures")
    assert len(report.skipped) == 100_000 - 5 and len(report.no_relevant) == 50
    assert report.runs[0]["precision_at_k"] == 1.0 and report.queries == 51


def test_searches_are_checked_as_search_checks_them(shop):
    db, paths, folder = shop
    judgments = _write(folder, "one.jsonl", [{"query": "a red circle", "path": paths["red", "circle"][0]}])
    with clipsearch.open(db, log_searches=False) as photos:
        with pytest.raises(QueryError, match="unknown column 'nope'"):
            photos.evaluate(judgments, filters=["nope=1"])
        with pytest.raises(QueryError, match="match is one of"):
            photos.evaluate(judgments, match="colours")
        with pytest.raises(QueryError, match="k must be between 1 and 1000"):
            photos.evaluate(judgments, k=0)
        filtered = photos.evaluate(judgments, k=5, filters=["category=badge"], match="pictures").as_json()
    assert filtered["runs"][0]["per_query"][0]["recall_at_k"] == 0.0   # the red circles are posters



# -- choosing a model with evidence -----------------------------------------------------------
class Swapped:
    """The bundled model with 'red' and 'blue' swapped in the texts it reads: worse on exactly those queries."""

    def __new__(cls, name, pretrained):
        from clipsearch.models.clip import ClipModel

        class SwappedClip(ClipModel):
            def encode_texts(self, texts):
                return super().encode_texts([t.replace("red", "BLUE").replace("blue", "red").replace("BLUE", "blue")
                                             for t in texts])
        return SwappedClip()


@pytest.fixture
def swapped():
    from clipsearch.models.factory import FAMILIES, register_family
    register_family("swapped", Swapped)
    yield "swapped:v1:random"
    FAMILIES.pop("swapped", None)


@pytest.mark.slow
def test_reembed_keep_eval_all_models_then_use(tmp_path, model, swapped, cli):
    """The README's loop: reembed --keep, eval --all-models (the kept model wins), models use (switched back
    without embedding again, the other kept in turn), eval again."""
    specs = [s for colour, shape in SHAPES for s in random_specs(5, 37, colour=colour, shape=shape,
                                                                 size_range=(0.5, 0.8), dims_range=(96, 160))]
    manifest = write_catalogue(tmp_path / "imgs", specs, 37)
    with clipsearch.open(tmp_path / "db", model=model, log_searches=False) as photos:
        photos.load(manifest, workers=0)
        assert photos.reembed("swapped:v1", workers=0, keep=True).switched
    judgments = tmp_path / "j.csv"
    judgments.write_text("query,filter\na red circle,colour=red\na blue square,colour=blue\n")
    out = cli("eval", judgments, "--k", "5", "--all-models", "--match", "pictures", "--json", db=tmp_path / "db")
    assert out.returncode == 0, out.stderr
    scores = {r["model"]: r["precision_at_k"] for r in json.loads(out.stdout)["runs"]}
    assert scores == {swapped: 0.0, "clipsearch-shapes": 1.0}   # active first, then the kept one
    table = cli("eval", judgments, "--k", "5", "--model", "bundled", "--match", "pictures", "--quiet",
                db=tmp_path / "db")
    assert "clipsearch-shapes  pictures  1.000  1.000  1.000  1.000" in table.stdout, table

    used = cli("models", "use", "clipsearch-shapes", "--quiet", db=tmp_path / "db")
    assert used.returncode == 0, used.stderr
    assert used.stdout.strip() == f"the store now uses clipsearch-shapes; {swapped}'s vectors kept in `embeddings`"
    listed = json.loads(cli("models", "--json", db=tmp_path / "db").stdout)
    assert {m["label"]: (m["active"], m["rows"], m["complete"]) for m in listed} == \
        {"clipsearch-shapes": (True, 15, True), swapped: (False, 15, True)}
    again = cli("eval", judgments, "--k", "5", "--match", "pictures", "--json", db=tmp_path / "db")
    assert [(r["model"], r["precision_at_k"]) for r in json.loads(again.stdout)["runs"]] == [("clipsearch-shapes", 1.0)]
    with clipsearch.open(tmp_path / "db", log_searches=False) as photos:   # every row the bundled model's again
        assert photos.sql("SELECT model, count() AS n FROM images GROUP BY model") == \
            [{"model": "clipsearch-shapes", "n": 15}]
        found = photos.search("a red circle", k=5, match="pictures").rows
        assert sorted(Path(r["path"]).stem for r in found) == ["00000", "00001", "00002", "00003", "00004"]
    same = cli("models", "use", "clipsearch-shapes", db=tmp_path / "db")
    assert same.returncode == 0 and same.stdout.strip() == "the store already uses clipsearch-shapes"
    back = cli("models", "use", swapped, "--quiet", db=tmp_path / "db")
    assert back.returncode == 0 and f"now uses {swapped}" in back.stdout
    unknown = cli("models", "use", "ViT-L-14", db=tmp_path / "db")
    assert unknown.returncode != 0 and unknown.stderr.startswith("error: no model 'ViT-L-14' in this store")
    bare = cli("models", "use", db=tmp_path / "db")
    assert bare.returncode != 0 and "name the model to use" in bare.stderr


# -- confident matches only -------------------------------------------------------------------
def test_auto_cutoff_keeps_what_stands_out():
    from clipsearch.search.options import auto_cutoff
    assert auto_cutoff([0.572, 0.570, 0.567, 0.559, 0.363, 0.294, 0.289]) == 4   # four apart from the rest
    circles = [0.586, 0.582, 0.580, 0.577, 0.569, 0.568, 0.568, 0.567, 0.566, 0.566, 0.564, 0.564, 0.564, 0.562,
               0.559, 0.559, 0.558, 0.556, 0.546, 0.534]   # "a circle" on 71 shapes, 50 of them circles
    assert auto_cutoff(circles) == 20                        # no gap stands out
    assert auto_cutoff([0.574, 0.561, 0.461, 0.328, 0.309]) == 3    # the gap (.133) is wider than .574 - .461
    assert auto_cutoff([0.6, 0.45, 0.3, 0.1]) == 4    # the widest gap (.2) is narrower than the spread above it (.3)
    assert auto_cutoff([0.6, 0.4, 0.39, 0.2]) == 1    # the first gap is the widest: one result stands out
    assert auto_cutoff([0.9, 0.1]) == 1 and auto_cutoff([0.5]) == 1 and auto_cutoff([]) == 0
    assert auto_cutoff([0.5, 0.5, 0.5]) == 3


def test_cutoff_auto_in_search_eval_and_the_api(shop, cli):
    db, paths, folder = shop
    red = sorted(paths["red", "circle"])
    with clipsearch.open(db, log_searches=False) as photos:
        cut = photos.search("a red circle", k=15, match="pictures", cutoff="auto")
        assert sorted(r["path"] for r in cut.rows) == red and cut.next_offset is None
        assert len(photos.search("a red circle", k=15, match="pictures").rows) == 15
        assert sorted(r["path"] for r in photos.search("a red circle", k=15, cutoff="auto").rows) == red  # fused too
        for bad, message in ((dict(cutoff="best"), "cutoff is auto, got 'best'"),
                             (dict(cutoff="auto", offset=5), "it takes no offset or order_by")):
            with pytest.raises(QueryError, match=message):
                photos.search("a red circle", **bad)
    judgments = folder / "cut.csv"
    judgments.write_text("query,filter\na red circle,colour=red\na yellow star,shape=star\n")
    plain = json.loads(cli("eval", judgments, "--k", "15", "--match", "pictures", "--json", db=db).stdout)
    cut_doc = json.loads(cli("eval", judgments, "--k", "15", "--match", "pictures", "--cutoff", "auto", "--json",
                             db=db).stdout)
    assert (plain["runs"][0]["precision_at_k"], plain["runs"][0]["recall_at_k"]) == (0.3333, 1.0)
    assert (cut_doc["runs"][0]["precision_at_k"], cut_doc["runs"][0]["recall_at_k"]) == (1.0, 1.0)
    assert [q["returned"] for q in cut_doc["runs"][0]["per_query"]] == [5, 5]

    from clipsearch.service.app import create_app
    from clipsearch.settings import Settings
    app = create_app(Settings.load(db=str(db)), config={"TESTING": True})
    try:
        client = app.test_client()
        answer = client.get("/api/search?q=a+red+circle&k=15&match=pictures&cutoff=auto")
        assert answer.status_code == 200 and sorted(r["path"] for r in answer.get_json()["results"]) == red
        bad = client.get("/api/search?q=a+red+circle&cutoff=sometimes")
        assert bad.status_code == 400 and "cutoff" in bad.get_json()["error"]
        bad = client.get("/api/search?q=a+red+circle&cutoff=auto&offset=10")
        assert bad.status_code == 400 and "takes no offset" in bad.get_json()["error"]
    finally:
        app.extensions["clipsearch"].close()


# -- clicks as judgments, and the metrics in SQL -----------------------------------------------
def test_clicks_become_judgments_and_the_dashboard_counts_them(tmp_path, model):
    from clipsearch.service.app import create_app
    from clipsearch.settings import Settings
    from clipsearch.sql import read as read_sql
    specs = [s for colour, shape in SHAPES for s in random_specs(5, 38, colour=colour, shape=shape,
                                                                 size_range=(0.5, 0.8), dims_range=(96, 160))]
    manifest = write_catalogue(tmp_path / "imgs", specs, 38)
    app = create_app(Settings.load(db=str(tmp_path / "db")), model=model, config={"TESTING": True})
    photos = app.extensions["clipsearch"]
    try:
        photos.load(manifest, workers=0)
        client = app.test_client()

        def search(text):
            answer = client.post("/api/search", json={"text": text, "k": 5, "match": "pictures"}).get_json()
            assert len(answer["search_id"]) == 32
            return answer

        red, star, again = search("a red circle"), search("a yellow star"), search("a red circle")
        search("a blue square")
        search("a blue square")
        assert [r["id"] for r in again["results"]] == [r["id"] for r in red["results"]]
        for answer, ranks in ((red, (1, 2, 3)), (star, (1, 2)), (red, (1,)), (again, (1,))):   # twice: one grade 2
            for rank in ranks:
                done = client.post("/api/click", json={"search_id": answer["search_id"], "rank": rank,
                                                       "image_id": answer["results"][rank - 1]["id"]})
                assert done.status_code == 200 and done.get_json() == {"recorded": True}
        one = {"search_id": red["search_id"], "image_id": red["results"][0]["id"], "rank": 1}
        for body, message in (({**one, "rank": 0}, "rank must be a whole number from 1"),
                              ({**one, "search_id": "x" * 32}, "search_id is the 32 hex digits"),
                              ({**one, "image_id": "../etc"}, "image_id is an image's id"),
                              ({"search_id": red["search_id"]}, "image_id is required")):
            bad = client.post("/api/click", json=body)
            assert bad.status_code == 400 and message in bad.get_json()["error"], bad.get_json()
        assert client.post("/api/click", data="search_id=1").status_code == 400
        other_site = client.post("/api/click", json=one, headers={"Sec-Fetch-Site": "cross-site"})
        assert other_site.status_code == 403
        photos.searcher.log.flush()
        assert photos.sql("SELECT count() AS n FROM search_clicks") == [{"n": 7}]

        (hour,) = photos.sql(read_sql("queries/search_clicks_per_hour.sql"))
        assert (hour["searches"], hour["opened"], hour["click_through"]) == (5, 3, 0.6)
        assert [(r["text"], r["searches"]) for r in photos.sql(read_sql("queries/search_log_never_opened.sql"))] \
            == [("a blue square", 2)]

        report = photos.evaluate(from_clicks=True, k=5, match="pictures")
        per = {q["query"]: q for q in report.as_json()["runs"][0]["per_query"]}
        assert report.queries == 2 and set(per) == {"a red circle", "a yellow star"}
        # 3 red circles opened (the first by two searches: grade 2), all in the top 5 again
        assert (per["a red circle"]["relevant"], per["a red circle"]["precision_at_k"],
                per["a red circle"]["recall_at_k"]) == (3, 0.6, 1.0)
        assert (per["a yellow star"]["relevant"], per["a yellow star"]["recall_at_k"]) == (2, 1.0)
        with pytest.raises(QueryError, match="no results opened from the page's searches since 2999-01-01"):
            photos.evaluate(from_clicks=True, since="2999-01-01")
        with pytest.raises(QueryError, match="--since is a day, YYYY-MM-DD"):
            photos.evaluate(from_clicks=True, since="yesterday")

        # the judgments saved, and the logged searches scored against them in SQL as metrics.py scores them
        saved = photos.evaluate(from_clicks=True, k=5, match="pictures", save=True)
        assert saved.saved == 5
        grades = {r["image_id"]: r["grade"] for r in photos.sql("SELECT image_id, grade FROM judgments FINAL "
                                                                 "WHERE query = 'a red circle'")}
        assert sorted(grades.values()) == [1, 1, 2]
        logged = photos.sql("SELECT text, top_ids FROM search_log WHERE text IN ('a red circle', 'a yellow star')")
        judged = {q: {r["image_id"]: r["grade"] for r in photos.sql(
            "SELECT image_id, grade FROM judgments FINAL WHERE query = {q:String}", {"q": q})} for q in per}
        expected = []
        for row in logged:
            gains = [judged[row["text"]].get(i, 0) for i in row["top_ids"]]
            ideal = sorted(judged[row["text"]].values(), reverse=True)
            expected.append(metrics.scores(gains, len(ideal), ideal, 5))
        (day,) = photos.sql(read_sql("queries/eval_metrics.sql"))
        assert day["searches"] == 3 and day["queries"] == 2
        for name in ("precision_at_k", "recall_at_k", "ndcg_at_k", "mrr"):
            assert day[name] == pytest.approx(sum(e[name] for e in expected) / len(expected), abs=1e-4), name
    finally:
        photos.close()


def test_judgments_by_id_or_a_unique_prefix(shop):
    db, paths, folder = shop
    with clipsearch.open(db, log_searches=False) as photos:
        ids = [r["id"] for r in photos.sql("SELECT id FROM images WHERE colour = 'blue' ORDER BY id")]
        rows = [{"query": "a blue square", "id": i if n % 2 else i[:12].upper()} for n, i in enumerate(ids)]
        rows.append({"query": "a blue square", "id": "f" * 32})
        judgments = _write(folder, "ids.jsonl", rows)
        report = photos.evaluate(judgments, k=5, match="pictures")
    assert report.skipped == [(6, f"id {'f' * 32} (query 'a blue square'): not stored")]
    (q,) = report.runs[0]["per_query"]
    assert (q["relevant"], q["precision_at_k"], q["recall_at_k"]) == (5, 1.0, 1.0)
