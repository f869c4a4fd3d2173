"""Zero-shot labelling in ClickHouse: accuracy on known answers, distributions, re-labelling, CLI and HTTP."""
from __future__ import annotations

import base64

import numpy as np
import pytest

from clipsearch.errors import QueryError
from clipsearch.images.labels import label_table, label_vector
from clipsearch.search.filters import parse_filter
from clipsearch.service import shapes
from clipsearch.store.catalog import Catalog
from tests.conftest import loaded, random_specs, write_catalogue

N = 240


@pytest.fixture(scope="module")
def catalogue_db(tmp_path_factory, model):
    """The store of 240 balanced images, closed again: the tests open it one at a time (`catalogue`),
    so the CLI test, which opens a store of its own in this process, never meets it open."""
    specs = shapes.balanced_specs(np.random.default_rng(55), N // 40)
    with loaded(tmp_path_factory.mktemp("labels"), specs, 55, model, images="imgs",
                extra=lambda i: {"price": i}) as catalogue:
        return catalogue.db


@pytest.fixture
def catalogue(catalogue_db):
    with Catalog.open(catalogue_db) as store:
        yield store, catalogue_db.parent


def _accuracy(store, name, truth_column):
    rows = store.query(f"SELECT l.label AS label, i.{truth_column} AS truth FROM labels AS l FINAL "
                       "JOIN images AS i ON i.id = l.image_id WHERE l.label_set = {name:String}", {"name": name})
    assert len(rows) == N
    return np.mean([r["label"] == r["truth"] for r in rows])


def test_shape_and_colour_accuracy(catalogue, model):
    store, _ = catalogue
    counts = label_table(store, model, ",".join(shapes.SHAPES), "a {}", "shape")
    assert sum(counts.values()) == N
    assert _accuracy(store, "shape", "shape") >= 0.9
    label_table(store, model, list(shapes.COLOURS), "a {} shape", "colour")
    assert _accuracy(store, "colour", "colour") >= 0.9


def test_distributions_sum_to_one_and_name_the_best_label(catalogue, model):
    store, _ = catalogue
    label_table(store, model, "circle,square,triangle,star,cross", "a {}", "shape")
    rows = store.query("SELECT label, probability, labels, probabilities FROM labels FINAL "
                       "WHERE label_set = 'shape'")
    for r in rows:
        assert abs(sum(r["probabilities"]) - 1) < 1e-5
        assert r["labels"] == list(shapes.SHAPES)
        assert r["label"] == r["labels"][int(np.argmax(r["probabilities"]))]
        assert r["probability"] == max(r["probabilities"])


def test_sql_softmax_matches_numpy(catalogue, model):
    store, _ = catalogue
    row = store.query("SELECT embedding FROM images ORDER BY id LIMIT 1")[0]
    got = label_vector(store, model, row["embedding"], ["red", "blue", "green"], "a {} shape")
    prompts = model.encode_texts([f"a {c} shape" for c in ("red", "blue", "green")])
    logits = model.logit_scale * (prompts @ np.array(row["embedding"], np.float32))
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    by_label = {r["label"]: r["probability"] for r in got}
    np.testing.assert_allclose([by_label[c] for c in ("red", "blue", "green")], expected, atol=1e-5)
    assert [r["probability"] for r in got] == sorted((r["probability"] for r in got), reverse=True)


def test_relabelling_replaces_the_set(catalogue, model):
    store, _ = catalogue
    label_table(store, model, "circle,square", "a {}", "two")
    label_table(store, model, "star,cross,triangle", "a {}", "two", [parse_filter("price<40")])
    rows = store.query("SELECT labels, count() AS n FROM labels FINAL WHERE label_set = 'two' GROUP BY labels "
                       "ORDER BY n")
    assert [(r["labels"], r["n"]) for r in rows] == \
        [(["star", "cross", "triangle"], 40), (["circle", "square"], N - 40)]
    assert store.query("SELECT count() AS n FROM labels WHERE label_set = 'two'")[0]["n"] == N  # no stale rows


@pytest.mark.parametrize("labels,prompt,message", [("circle", None, "between 2"), ("a,a", None, "distinct"),
                                                   ("a,b", "no placeholder", "exactly once"), (5, None, "list")])
def test_bad_label_requests(catalogue, model, labels, prompt, message):
    store, _ = catalogue
    with pytest.raises(QueryError, match=message):
        label_table(store, model, labels, prompt, "bad")


def test_label_cli_and_load_option(tmp_path, cli):
    manifest = write_catalogue(tmp_path / "imgs", random_specs(12, 9, shape="star"), 9)
    result = cli("load", str(manifest), "--quiet", "--labels", "circle,star,cross", "--prompt", "a {}",
                 "--name", "shape", db=tmp_path / "db")
    assert result.returncode == 0, result.stderr
    assert "label set 'shape': star 1" in result.stdout  # star with 10+ of 12
    counts = cli("sql", "SELECT label, count() FROM labels FINAL GROUP BY label ORDER BY 2 DESC LIMIT 1",
                 "--format", "CSV", db=tmp_path / "db")
    assert counts.stdout.startswith('"star",') and int(counts.stdout.split(",")[1]) >= 10
    bad = cli("label", "--labels", "one", db=tmp_path / "db")
    assert bad.returncode == 1 and "between 2" in bad.stderr


def test_label_endpoint(catalogue_db, model):
    from clipsearch.service.app import create_app
    from clipsearch.settings import Settings
    app = create_app(Settings.load(db=str(catalogue_db)), model=model)  # the app opens the store itself
    try:
        client = app.test_client()
        data = shapes.make_image(np.random.default_rng(4), "blue", "triangle")[1]
        res = client.post("/api/label", json={"image": base64.b64encode(data).decode(),
                                              "labels": ["circle", "triangle", "star"], "prompt": "a {}"})
        assert res.status_code == 200
        body = res.get_json()
        assert body["labels"][0]["label"] == "triangle"
        assert abs(sum(r["probability"] for r in body["labels"]) - 1) < 1e-5
        assert client.post("/api/label", json={"labels": "a,b"}).status_code == 400
        assert client.post("/api/label", json={"image": base64.b64encode(data).decode(),
                                               "labels": "a"}).get_json()["error"].startswith("give between 2")
    finally:
        app.extensions['clipsearch'].close()
