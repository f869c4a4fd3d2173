"""Hostile and careless input over HTTP and the CLI: each a 400 or a clear CLI error, never a 500."""
from __future__ import annotations

import base64
import os
import socket
from datetime import datetime

import numpy as np
import pytest

from clipsearch.errors import QueryError
from clipsearch.search.filters import parse_filter
from clipsearch.service import shapes
from clipsearch.service.app import create_app
from clipsearch.service.cli import main
from clipsearch.settings import Settings

DEEP = "[" * 5000 + "]" * 5000


@pytest.fixture(scope="module")
def client(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("hardening")
    rng = np.random.default_rng(12)
    manifest = shapes.write_catalogue(folder / "images", [shapes.random_spec(rng) for _ in range(12)], 12,
                                         extra=lambda i: {"category": "poster" if i % 2 else "badge"})
    for i, image in enumerate(sorted((folder / "images").glob("0*"))):   # modified_at: badges 1999, posters 2001
        stamp = datetime(2001 if i % 2 else 1999, 6, 15, 12).timestamp()
        os.utime(image, (stamp, stamp))
    app = create_app(Settings(db=str(folder / "db")), model=model, config={"TESTING": True})
    app.extensions["clipsearch"].load(manifest)
    yield app.test_client()
    app.extensions["clipsearch"].close()


@pytest.mark.parametrize("method,kwargs,message", [
    ("GET", {"query_string": {"q": "x", "filter": "taken_at>=notadate"}}, "'notadate' is not a date"),
    ("GET", {"query_string": {"q": "x", "filter": "loaded_at<2000-13-45"}}, "'2000-13-45' is not a date"),
    ("POST", {"json": {"text": "x", "filters": {"taken_at": {">=": "notadate"}}}}, "'notadate' is not a date"),
    ("POST", {"json": {"text": "x", "filters": [{"column": "loaded_at", "op": "<", "value": "2000-13-45"}]}},
     "'2000-13-45' is not a date"),
    ("POST", {"json": {"text": "x", "filters": {"category": [str(i) for i in range(20000)]}}},
     "'in' takes at most 1000 values, got 20000"),
    ("POST", {"json": {"text": "x", "filters": [f"category=c{i}" for i in range(101)]}}, "at most 100 filters"),
    ("POST", {"data": '{"text": "x", "filters": ' + DEEP + "}", "content_type": "application/json"},
     "nested too deeply"),
    ("POST", {"data": {"text": "x", "filters": DEEP}}, "filters is nested too deeply"),
    ("GET", {"query_string": {"q": "x", "k": "1.5"}}, "k must be an integer"),
    ("POST", {"json": {"text": "x", "k": 1.9}}, "k must be an integer, got 1.9"),
    ("GET", {"query_string": {"q": "x", "k": "\u0661\u0660"}}, "k must be an integer"),  # Arabic-Indic "10"
    ("GET", {"query_string": {"q": "x" * 100_000}}, "q is 100000 characters; at most 2000"),
    ("POST", {"json": {"text": "x" * 5000}}, "text is 5000 characters; at most 2000"),
])
def test_bad_search_input_is_a_400(client, method, kwargs, message):
    res = client.open("/api/search", method=method, **kwargs)
    assert res.status_code == 400, res.get_json()
    assert message in res.get_json()["error"]


def test_dates_users_type_are_accepted(client):
    """Each way of writing a date filters by it: the posters were modified in 2001, the badges in 1999, so
    on either side of 2000 a search finds exactly one of the two (an ignored filter finds all 12)."""
    for value in ("2000-01-01", "2000-01-01 10:00:00", "2000-01-01T10:00:00", "2000-01", "2000"):
        for op, category in ((">=", "poster"), ("<", "badge")):
            res = client.get("/api/search", query_string={"q": "a red star", "k": "20",
                                                           "filter": f"modified_at{op}{value}"})
            assert res.status_code == 200, res.get_json()
            found = res.get_json()["results"]
            assert len(found) == 6 and {r["category"] for r in found} == {category}, (op, value)


@pytest.mark.parametrize("prompt", ["{} {1}", "{} {", "{} {0.__class__}", "a {} }{"])
def test_label_prompts_with_stray_braces_are_text(client, model, prompt):
    """Only `{}` is replaced by the label; other braces are encoded as the text they are (str.format would
    fail on some and turn `{0.__class__}` into "<class 'str'>")."""
    import io

    from PIL import Image
    data = shapes.make_image(np.random.default_rng(3), "red", "circle")[1]
    labels = ["star", "cross"]   # neither fits the red circle: the split follows the prompt's exact text
    res = client.post("/api/label", json={"image": base64.b64encode(data).decode(), "labels": labels,
                                          "prompt": prompt})
    assert res.status_code == 200, res.get_json()
    image = model.encode_images([Image.open(io.BytesIO(data))])[0]
    logits = model.logit_scale * (model.encode_texts([prompt.replace("{}", label) for label in labels]) @ image)
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    got = {r["label"]: r["probability"] for r in res.get_json()["labels"]}
    np.testing.assert_allclose([got[label] for label in labels], expected, atol=1e-5)


def test_k_is_one_rule_for_get_and_json(client):
    assert len(client.get("/api/search?q=x&k=3").get_json()["results"]) == 3
    assert len(client.post("/api/search", json={"text": "x", "k": 3}).get_json()["results"]) == 3
    assert len(client.post("/api/search", json={"text": "x", "k": "3"}).get_json()["results"]) == 3


def test_serve_on_a_busy_port_is_a_clear_error(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port), "--db", str(tmp_path / "db")]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (f"error: cannot serve on 127.0.0.1:{port}: Address already in use; "
                           "choose another with --port (or --host)")


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("clipsearch ")


def test_every_cli_argument_has_help():
    import argparse

    from clipsearch.service.cli import build_parser
    missing = []

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{prefix} {name}")
            elif action.help is None:
                missing.append(f"{prefix} {action.dest}")
    walk(build_parser(), "clipsearch")
    assert missing == []


@pytest.mark.parametrize("argv,message", [
    (["search", "a red star"], "error: no clipsearch database at {db}; load something first"),
    (["sql", "SELECT 1"], "error: no clipsearch database at {db}; load something first"),
    (["duplicates"], "error: no clipsearch database at {db}; load something first"),
    (["index", "status"], "error: no clipsearch database at {db}; load something first"),
    (["search", "x", "--image-weight", "2", "--similar", "abcdef"],
     "error: --image-weight is a number from 0 to 1, got 2"),
    (["label", "--labels", "one"], "error: give between 2 and 1000 labels, got 1"),
    (["embed", "x", "--model", "ViT-B-32"], "error: model 'ViT-B-32' needs weights: --pretrained TAG or FILE"),
])
def test_cli_mistakes_without_a_database_or_model(tmp_path, capsys, argv, message):
    db = tmp_path / "nothing-here"
    assert main(argv + ["--db", str(db)]) == 1
    assert capsys.readouterr().err.startswith(message.format(db=db))
    assert not db.exists()  # read-only commands create nothing


def test_duplicates_over_http_are_bounded(client, monkeypatch):
    wide = client.get("/api/duplicates", query_string={"threshold": "0.5"})
    assert wide.status_code == 400
    assert wide.get_json()["error"] == "the threshold is a cosine distance between 0 and 0.1, got 0.5"
    assert client.get("/api/duplicates", query_string={"threshold": "0.1"}).status_code == 200
    import clipsearch.images.duplicates
    monkeypatch.setattr(clipsearch.images.duplicates, "BOUNDED_MEMORY", 1000)  # a server far smaller than the work
    starved = client.get("/api/duplicates", query_string={"threshold": "0.1"})
    assert starved.status_code == 400 and "needs more than this server allows a request" in starved.get_json()["error"]


def test_large_query_images_are_refused_or_decoded_reduced(client):
    import io

    from PIL import Image
    png = io.BytesIO()
    Image.new("L", (5000, 4000)).save(png, "PNG")  # 20 megapixels, small as a file
    res = client.post("/api/search", data={"image": (io.BytesIO(png.getvalue()), "big.png")})
    assert res.status_code == 400
    assert res.get_json()["error"] == ("the uploaded image is too large (5000x4000 pixels; at most 16 megapixels "
                                       "unless JPEG)")
    jpeg = io.BytesIO()
    Image.new("RGB", (6000, 4000), (200, 20, 20)).save(jpeg, "JPEG", quality=50)  # 24 megapixels
    res = client.post("/api/search", data={"image": (io.BytesIO(jpeg.getvalue()), "big.jpg"), "k": "3"})
    assert res.status_code == 200 and len(res.get_json()["results"]) == 3


def test_search_mistakes_are_reported_before_the_model_loads(tmp_path, client):
    from clipsearch.search.searcher import Searcher

    def no_model():
        raise AssertionError("the model must not be loaded for this")
    searcher = Searcher(client.application.extensions["clipsearch"].catalog, no_model, log=False)
    for kwargs, message in (({"filters": [parse_filter("colr=red")]}, "unknown column 'colr'"),
                            ({"filters": [parse_filter("taken_at>=x")]}, "'x' is not a date"),
                            ({"k": 0}, "k must be between 1 and 1000")):
        with pytest.raises(QueryError, match=message):
            searcher.search("a red star", **kwargs)
