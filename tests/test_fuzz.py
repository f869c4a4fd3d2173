"""No input gives a 5xx: schemathesis generates requests from /api/openapi.json (valid ones and ones
that break the schema) against the real app over a loaded catalogue, and every answer must be JSON
for errors, never a server error."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from clipsearch.service import shapes
from clipsearch.service.app import create_app
from clipsearch.settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(71)
    manifest = shapes.write_catalogue(folder / "images", [shapes.random_spec(rng) for _ in range(30)], 71,
                                         extra=lambda i: {"category": ("poster", "badge")[i % 2], "price": i, "v0": i})
    app = create_app(Settings(db=str(folder / "db")), model=model, config={"TESTING": True})
    app.extensions["clipsearch"].load(manifest)
    yield app
    app.extensions["clipsearch"].close()


OPERATIONS = ["GET /api/search", "POST /api/search", "GET /api/library", "GET /api/images/{image_id}",
              "GET /api/images/{image_id}/similar", "GET /api/images/{image_id}/file", "POST /api/click",
              "POST /api/label", "GET /api/duplicates", "GET /api/columns", "GET /api/filters", "POST /api/sql",
              "GET /api/queries", "GET /healthz"]


@pytest.fixture(scope="module")
def operations(app):
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    return {op.label: op for op in (result.ok() for result in schema.get_all_operations())}


# Nothing to break the schema of:
NO_INPUT = {"GET /api/columns", "GET /api/filters", "GET /api/queries", "GET /healthz"}


@pytest.mark.parametrize("label,mode", [(label, GenerationMode.POSITIVE) for label in OPERATIONS] +
                         [(label, GenerationMode.NEGATIVE) for label in OPERATIONS if label not in NO_INPUT])
def test_no_input_is_a_server_error(operations, label, mode):
    @given(case=operations[label].as_strategy(generation_mode=mode))
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call()
        assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
        if response.status_code >= 400:
            assert set(response.json()) == {"error"} and response.json()["error"], response.text[:500]
    fuzz()


def _eps() -> str:
    """An EPS file, base64: a format Pillow knows (through Ghostscript) that clipsearch does not read."""
    from PIL import Image
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, format="EPS")
    return base64.b64encode(out.getvalue()).decode()


MANY = [f"c{i}" for i in range(1000)]
HOSTILE = [   # issue 23's inputs: (operation, Case fields)
    ("GET /api/search", {"query": {"q": "x", "filter": "price<nan"}}),
    ("GET /api/search", {"query": {"q": "x", "filter": ["price<1e309", "price>-inf", "price<1_000"]}}),
    ("POST /api/search", {"body": '{"text": "x", "filters": {"price": {"<": NaN}}}'}),   # JSON text as sent
    ("POST /api/search", {"body": '{"text": "x", "filters": {"price": [1, Infinity]}, "min_score": NaN}'}),
    ("POST /api/search", {"body": {"text": "x", "filters": {"category": "\ud800"}}}),
    ("POST /api/search", {"body": {"text": "\udfff", "facets": ["v0"], "filters": {"v0": {">=": 3}}}}),
    ("POST /api/search", {"body": {"text": "x", "filters": [{"column": "category", "op": "in", "value": MANY}] * 100}}),
    ("POST /api/search", {"body": {"text": "x", "filters": {"price": {"not in": list(range(1000))}}}}),
    ("POST /api/search", {"body": {"image": _eps()}}),
    ("POST /api/label", {"body": {"image": _eps(), "labels": ["a", "b"]}}),
    ("GET /api/images/{image_id}", {"path_parameters": {"image_id": "ab\n"}}),
    ("GET /api/images/{image_id}/file", {"path_parameters": {"image_id": "ab\n"}}),
]


@pytest.mark.parametrize("label,fields", HOSTILE, ids=[f"{label} {i}" for i, (label, _) in enumerate(HOSTILE)])
def test_hostile_examples_are_answered_in_strict_json(app, operations, label, fields):
    if isinstance(fields.get("body"), str):   # NaN and Infinity: not JSON, so no client of schemathesis sends them
        method, path = label.split()
        response = app.test_client().open(path, method=method, data=fields["body"], content_type="application/json")
        status, text = response.status_code, response.get_data(as_text=True)
    else:
        fields = {**fields, "media_type": "application/json"} if "body" in fields else fields
        response = operations[label].Case(**fields).call()
        status, text = response.status_code, response.text
    assert status < 500, text[:500]
    body = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {text[:300]}"))
    if status >= 400:
        assert set(body) == {"error"} and body["error"] and "pybind" not in body["error"], body


def test_the_document_describes_every_route(app, operations):
    assert sorted(operations) == sorted(OPERATIONS)
    document = app.test_client().get("/api/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    documented = {(path.replace("{image_id}", "<image_id>"), method.upper())
                  for path, item in document["paths"].items() for method in item}
    routes = {(rule.rule, method) for rule in app.url_map.iter_rules() for method in rule.methods
              if method not in ("HEAD", "OPTIONS") and rule.rule.startswith(("/api/", "/healthz"))
              and rule.endpoint != "api.openapi"}
    assert routes == documented
