"""The Flask application factory.

    create_app({"DB": "./clipsearch-data"})   # or CLICKHOUSE_URL in the config or environment

One store per app (the embedded store is in-process and serialises its
queries; a server store is shared by threads), one model loaded on first use.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .query import QueryError
from .search import EmptyStore, NotFound, Searcher
from .store import ModelMismatch, open_store

DEFAULTS = {
    "DB": None,                               # embedded folder; default $CLIPSEARCH_DB or ./clipsearch-data
    "CLICKHOUSE_URL": None,                   # a server instead; default $CLICKHOUSE_URL
    "MODEL": None, "PRETRAINED": None,        # default $CLIPSEARCH_MODEL / $CLIPSEARCH_PRETRAINED / bundled
    "MAX_CONTENT_LENGTH": 10 * 1024 * 1024,   # largest request (an uploaded query image), bytes: 413 above
    "MAX_UPLOAD_PIXELS": 40_000_000,
    "THUMB_SIZE": 256,
    "THUMB_DIR": None,                        # default $CLIPSEARCH_THUMBS, thumbs/ in the embedded folder,
                                              # or ./clipsearch-thumbs
}


class LazyModel:
    """Loads the CLIP model once, on the first request that needs it."""

    def __init__(self, name, pretrained):
        self.name, self.pretrained = name, pretrained
        self._model = None
        self._lock = threading.Lock()

    def __call__(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    from .model import ClipModel
                    self._model = ClipModel(self.name, self.pretrained)
        return self._model


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(DEFAULTS)
    app.config.update(config or {})
    store = open_store(app.config["DB"], app.config["CLICKHOUSE_URL"])
    db_folder = getattr(store, "path", None)
    app.config["THUMB_DIR"] = Path(app.config["THUMB_DIR"] or os.environ.get("CLIPSEARCH_THUMBS") or
                                   (db_folder / "thumbs" if db_folder else "clipsearch-thumbs"))
    app.extensions["clipsearch"] = Searcher(store, LazyModel(app.config["MODEL"], app.config["PRETRAINED"]))

    from .api import api
    from .web import web
    app.register_blueprint(api)
    app.register_blueprint(web)
    _register_errors(app)
    return app


def _register_errors(app: Flask) -> None:
    """Every error is JSON with a message; user mistakes are 4xx, never a stack trace."""
    @app.errorhandler(QueryError)
    def bad_query(exc):
        return jsonify(error=str(exc)), 409 if isinstance(exc, EmptyStore) else 400

    @app.errorhandler(ModelMismatch)
    def wrong_model(exc):
        return jsonify(error=str(exc)), 409

    @app.errorhandler(NotFound)
    def not_found(exc):
        return jsonify(error=str(exc)), 404

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc):
        return jsonify(error=f"request too large: the limit is {app.config['MAX_CONTENT_LENGTH']} bytes"), 413

    @app.errorhandler(HTTPException)
    def http_error(exc):
        return jsonify(error=exc.description or exc.name), exc.code

    @app.errorhandler(Exception)
    def internal(exc):
        logging.getLogger("clipsearch").exception("unhandled error")
        return jsonify(error="internal error; see the server log"), 500


def searcher(app: Flask) -> Searcher:
    return app.extensions["clipsearch"]


def serve(host: str = "127.0.0.1", port: int = 8000, threads: int = 8, config: dict | None = None) -> None:
    """Serve with waitress, a production WSGI server (threads share the one store)."""
    from waitress import serve as waitress_serve
    app = create_app(config)
    searcher(app).model  # load the model now rather than during the first request
    print(f"clipsearch: serving on http://{host}:{port}/ ({searcher(app).store.backend} store)", flush=True)
    waitress_serve(app, host=host, port=port, threads=threads, ident="clipsearch")

