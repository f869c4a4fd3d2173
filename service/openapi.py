"""The OpenAPI 3.1 description of the HTTP API, generated from the request models (requests.py) and
served at /api/openapi.json: what clients and the fuzzing tests read."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from clipsearch import __version__
from clipsearch.search.filters import ROLES
from clipsearch.service.requests import (
    ClickBody,
    DuplicatesQuery,
    FileQuery,
    LabelBody,
    LibraryQuery,
    SearchBody,
    SearchQuery,
    SimilarQuery,
    SqlBody,
)

REF = "#/components/schemas/{model}"
ERROR = {"description": "a mistake in the request, or what it names is missing or changed",
         "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}}
JSON_OBJECT = {"type": "object"}
ID_PARAMETER = {"name": "image_id", "in": "path", "required": True,
                "schema": {"type": "string", "maxLength": 64},
                "description": "the image's id (32 hex digits) or a unique prefix of 6 or more"}
SQL = {"type": "object", "properties": {"query": {"type": "string"}, "params": JSON_OBJECT}}
MATCH = {"type": "object", "description": "why a result matched", "properties": {
    "picture_rank": {"type": ["integer", "null"], "description": "its place in the picture ranking (null: not in it)"},
    "word_rank": {"type": ["integer", "null"], "description": "its place in the words ranking (null: not in it)"},
    "words": {"type": "object", "description": "the query's words found per field: name, title, meta, ocr, label",
              "additionalProperties": {"type": "array", "items": {"type": "string"}}}}}
SEARCH_RESULT = {"type": "object", "required": ["results", "took_ms", "kind", "strategy", "sql", "next_offset"],
                 "properties": {
    "results": {"type": "array", "items": {"type": "object", "required": ["id", "path", "score"], "properties": {
        "id": {"type": "string"}, "path": {"type": "string"},
        "score": {"type": ["number", "null"], "description": "match=both or words: the fused score (comparable "
                                                             "within one search); pictures: the cosine similarity; "
                                                             "null in the library (/api/library)"},
        "picture_score": {"type": "number", "description": "the cosine similarity of the picture to the query"},
        "match": MATCH}}},
    "took_ms": JSON_OBJECT, "kind": {"type": "string"}, "strategy": {"type": "string"}, "sql": SQL,
    "model": {"type": "string", "description": "the label of the model that ranked the pictures"},
    "model_notice": {"type": ["string", "null"], "description": "set when that model cannot be trusted on "
                     "these images (the bundled model, which knows only coloured shapes): show it with the results"},
    "match": {"enum": ["pictures", "words", "both", "none"],
              "description": "the signals that ranked this search (none: the library, newest first)"},
    "next_offset": {"type": ["integer", "null"], "description": "the next page's offset; null after the last page"},
    "facets": {"type": "object", "description": "with facets: column -> [{value, count}], the most frequent first",
               "additionalProperties": {"type": "array", "items": {"type": "object", "properties": {
                   "value": {"type": ["string", "null"]}, "count": {"type": "integer"}}}}},
    "facets_sql": SQL}}
SQL_RESULT = {"type": "object", "required": ["columns", "rows", "row_count", "truncated", "elapsed_ms"], "properties": {
    "columns": {"type": "array", "items": {"type": "object", "required": ["name", "type"], "properties": {
        "name": {"type": "string"}, "type": {"type": "string", "description": "the ClickHouse type"}}}},
    "rows": {"type": "array", "items": {"type": "array"}, "description": "values in column order"},
    "row_count": {"type": "integer"}, "truncated": {"type": "boolean"}, "elapsed_ms": {"type": "number"},
    "rows_read": {"type": "integer"}}}
SHIPPED_QUERIES = {"type": "object", "required": ["queries"], "properties": {"queries": {"type": "array", "items": {
    "type": "object", "required": ["name", "sql", "description", "params"], "properties": {
        "name": {"type": "string"}, "sql": {"type": "string"}, "description": {"type": "string"},
        "params": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "type": {"type": "string"}}}}}}}}}
FILTERS = {"type": "object", "required": ["operators", "roles"], "properties": {
    "operators": {"type": "array", "items": {
        "type": "object", "required": ["op", "help", "cli", "takes", "many"], "properties": {
            "op": {"type": "string"}, "help": {"type": "string"},
            "cli": {"type": "string", "description": "the CLI string form (COL>=N); empty: JSON filters only"},
            "takes": {"enum": ["one", "list", "either", "none"], "description": "one value, a list, either, or none"},
            "many": {"type": ["string", "null"], "description": "the operator a CLI value A|B turns it into"}}}},
    "roles": {"type": "object", "additionalProperties": {"type": "string"},
              "description": "the operator that stands for each role: " + "; ".join(
                  f"{role}: {what}" for role, what in ROLES.items())}}}


def _ok(description: str, schema: dict, media: str = "application/json") -> dict:
    return {"description": description, "content": {media: {"schema": schema}}}


def _query(model: type[BaseModel], defs: dict) -> list[dict]:
    """A query model's fields as OpenAPI parameters (lists repeat the name: ?filter=a&filter=b)."""
    schema = model.model_json_schema(ref_template=REF)
    defs.update(schema.pop("$defs", {}))
    required = set(schema.get("required", []))
    return [{"name": name, "in": "query", "required": name in required, "schema": prop,
             "description": prop.get("description", ""), "style": "form", "explode": True}
            for name, prop in schema["properties"].items()]


def _body(model: type[BaseModel], defs: dict, file_field: str | None = None) -> dict:
    """A JSON body model; with `file_field`, also as a multipart form whose file field is binary and
    whose objects travel as JSON text."""
    schema = model.model_json_schema(ref_template=REF)
    defs.update(schema.pop("$defs", {}))
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if file_field:
        form = {name: ({"type": "string", "format": "binary"} if name == file_field else
                       prop if prop.get("type") in ("string", "integer", "number") else
                       {"type": "string", "description": "JSON text"})
                for name, prop in schema["properties"].items()}
        content["multipart/form-data"] = {"schema": {"type": "object", "properties": form}}
    return {"required": True, "content": content}


def openapi_document() -> dict:
    defs: dict[str, Any] = {"Error": {"type": "object", "required": ["error"],
                                      "properties": {"error": {"type": "string"}}}}
    errors = {"400": ERROR, "404": ERROR, "409": ERROR, "410": ERROR, "413": ERROR, "429": ERROR,
              "503": ERROR}   # the store unavailable (its folder moved or unplugged, a server down), or no model
    search = {"200": _ok("the best matches first, with the SQL that ranked them", SEARCH_RESULT), **errors}
    paths = {
        "/api/search": {
            "get": {"summary": "Search by text, a stored image, or both", "operationId": "searchGet",
                    "parameters": _query(SearchQuery, defs), "responses": search},
            "post": {"summary": "Search by text, an uploaded image, a stored image, or a mix",
                     "operationId": "searchPost", "requestBody": _body(SearchBody, defs, "image"),
                     "responses": search}},
        "/api/library": {
            "get": {"summary": "The library without a query: newest first (taken, else the file's time, else "
                               "loaded), a page at a time; results have no score", "operationId": "library",
                    "parameters": _query(LibraryQuery, defs),
                    "responses": {"200": _ok("a page of the library, newest first", SEARCH_RESULT), **errors}}},
        "/api/images/{image_id}": {
            "get": {"summary": "One image's row (without its vector)", "operationId": "getImage",
                    "parameters": [ID_PARAMETER], "responses": {"200": _ok("the row", JSON_OBJECT), **errors}}},
        "/api/images/{image_id}/similar": {
            "get": {"summary": "Images like a stored one", "operationId": "similarImages",
                    "parameters": [ID_PARAMETER, *_query(SimilarQuery, defs)], "responses": search}},
        "/api/images/{image_id}/file": {
            "get": {"summary": "The image file, only while it is the file that was loaded",
                    "operationId": "imageFile", "parameters": [ID_PARAMETER, *_query(FileQuery, defs)],
                    "responses": {"200": _ok("the file, or a JPEG thumbnail", {"type": "string", "format": "binary"},
                                             "image/*"), **errors}}},
        "/api/click": {
            "post": {"summary": "Note that a person opened a result of a search (the page's click-through)",
                     "operationId": "click", "requestBody": _body(ClickBody, defs),
                     "responses": {"200": _ok("recorded", JSON_OBJECT), **errors}}},
        "/api/label": {
            "post": {"summary": "Zero-shot label distribution of one image", "operationId": "labelImage",
                     "requestBody": _body(LabelBody, defs, "image"),
                     "responses": {"200": _ok("labels, most probable first", JSON_OBJECT), **errors}}},
        "/api/duplicates": {
            "get": {"summary": "Groups of copies (by perceptual hash) or of similar images (by CLIP distance)",
                    "operationId": "duplicates",
                    "parameters": _query(DuplicatesQuery, defs),
                    "responses": {"200": _ok("groups, largest first", JSON_OBJECT), **errors}}},
        "/api/columns": {
            "get": {"summary": "The filterable columns, with their values or ranges", "operationId": "columns",
                    "responses": {"200": _ok("columns", JSON_OBJECT), **errors}}},
        "/api/filters": {
            "get": {"summary": "The filter operators: how each is written and what it takes", "operationId": "filters",
                    "responses": {"200": _ok("the operators", FILTERS), **errors}}},
        "/api/sql": {
            "post": {"summary": "Run one read-only SQL query (the page's SQL tab and dashboards)", "operationId": "sql",
                     "requestBody": _body(SqlBody, defs),
                     "responses": {"200": {"description": "the result; with format csv, a CSV attachment",
                                           "content": {"application/json": {"schema": SQL_RESULT},
                                                       "text/csv": {"schema": {"type": "string"}}}}, **errors}}},
        "/api/queries": {
            "get": {"summary": "The analyst queries shipped in sql/queries", "operationId": "queries",
                    "responses": {"200": _ok("the queries, by file name", SHIPPED_QUERIES), **errors}}},
        "/healthz": {
            "get": {"summary": "Whether the store answers a read of its data: 200 with the backend and image "
                               "count, or 503 with the reason", "operationId": "health",
                    "responses": {"200": _ok("status", JSON_OBJECT), **errors}}},
    }
    return {"openapi": "3.1.0",
            "info": {"title": "clipsearch", "version": __version__,
                     "description": "Natural-language and image search over photos, ranked by ClickHouse in SQL. "
                                    "Every error is {\"error\": message} with a 4xx status, or 503 while the store is "
                                    "unavailable."},
            "paths": paths, "components": {"schemas": defs}}
