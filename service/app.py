"""The Flask application factory.

    create_app(Settings.load(db="./clipsearch-data"))    # or clickhouse_url=..., model=...

One collection per app (the embedded engine serialises its statements; a server
client is shared by threads), one model loaded on first use or injected.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request
from flask.json.provider import DefaultJSONProvider
from flask.typing import ResponseReturnValue
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from clipsearch.analyst.turns import Busy
from clipsearch.collection import Collection
from clipsearch.collection import open as open_collection
from clipsearch.errors import ClipsearchError
from clipsearch.models.bundled import BUNDLED_LABEL, BUNDLED_NOTE
from clipsearch.models.factory import ModelRef
from clipsearch.models.model import ImageTextModel
from clipsearch.service.api import api
from clipsearch.service.clickhouse_http import cross_site, host_served, served_hosts
from clipsearch.service.watch import Watcher
from clipsearch.service.web import web
from clipsearch.settings import Settings
from clipsearch.store.connection import announce_service, engine_uri, redact, running_service, unavailable_os

# The page loads only its own script and style; images may come from the API or a dropped file (blob:/data:).
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
                           "frame-ancestors 'none'; form-action 'self'")
# What a request from another site's page (cross_site) may still do: GET or HEAD what writes nothing (the
# page itself, an image, the filter form's data). Everything else is refused, searches included: each one is
# written to search_log, and a dashboard of them must not be anyone on the web's to fill.
CROSS_SITE_READS = {"web.index", "static", "web.static", "api.image", "api.image_file", "api.columns", "api.filters",
                    "api.openapi", "api.healthz"}


def flask_config(settings: Settings) -> dict[str, Any]:
    """The Flask config keys that Flask and the API read, from their one home, Settings."""
    return {"MAX_CONTENT_LENGTH": settings.max_upload_bytes, "MAX_UPLOAD_PIXELS": settings.max_upload_pixels,
            "MAX_UPLOAD_JPEG_PIXELS": settings.max_upload_jpeg_pixels, "THUMB_SIZE": settings.thumb_size,
            # the Host names answered; `serve` adds the address it listens on
            "SERVED_HOSTS": served_hosts(None, settings.allowed_hosts)}


class StrictJSON(DefaultJSONProvider):
    """JSON that strict parsers accept: a NaN or an infinity (a value stored before manifests refused them)
    is written as null, never as a bare NaN."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        try:
            return super().dumps(obj, allow_nan=False, **kwargs)
        except ValueError:
            return super().dumps(_finite(obj), allow_nan=False, **kwargs)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def create_app(settings: Settings | None = None, model: ImageTextModel | ModelRef | None = None,
               config: dict | None = None,
               collection: Collection | None = None) -> Flask:
    """The app over `collection`, or over the one `settings` (default: the environment's) name.

    `model` is a loaded model (tests inject theirs) or a ModelRef; by default the configured model
    (else the store's own) loads on the first request that needs it. `config` overrides what the
    collection's Settings give (flask_config).
    """
    app = Flask(__name__)
    app.json = StrictJSON(app)
    if collection is None:
        settings = settings or Settings.load()
        _check_rate_limit(settings.rate_limit)  # before opening anything
        collection = open_collection(settings=settings, model=model, origin="http")
    app.config.update(flask_config(collection.settings))
    app.config.update(config or {})
    app.config["THUMB_DIR"] = collection.settings.thumbs_dir
    app.extensions["clipsearch"] = collection
    app.register_blueprint(api)
    app.register_blueprint(web)
    _register_errors(app)
    _gate(app)   # before the rate limit: a refused request counts for nothing
    _limit_rate(app, collection.settings.rate_limit)

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response
    return app


def _gate(app: Flask) -> None:
    """Before any work: a Host this service serves (DNS rebinding), and from another site's page only
    CROSS_SITE_READS (the checks the ClickHouse port makes too: clickhouse_http.host_served, cross_site)."""
    @app.before_request
    def gate() -> ResponseReturnValue | None:
        if not host_served(request.headers.get("Host"), app.config["SERVED_HOSTS"]):
            return jsonify(error=f"Host {request.headers.get('Host', '')[:100]!r} is not a name this service "
                                 "answers to (add it to CLIPSEARCH_ALLOWED_HOSTS)"), 403
        if cross_site(request.headers) and not (request.method in ("GET", "HEAD")
                                                and request.endpoint in CROSS_SITE_READS):
            return jsonify(error="a request from another site's page may not do this"), 403
        return None


def _check_rate_limit(limit: str | None) -> None:
    from limits import parse_many
    try:
        if limit:
            parse_many(limit)
    except ValueError:
        raise ClipsearchError(f"CLIPSEARCH_RATE_LIMIT {limit!r} is not a rate limit like '60/minute'") from None


def _limit_rate(app: Flask, limit: str | None) -> None:
    """Requests per client address on the API (flask-limiter, in memory: per process), when configured."""
    if not limit:
        return
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address
    _check_rate_limit(limit)
    Limiter(get_remote_address, app=app, default_limits=[limit], storage_uri="memory://",
            default_limits_exempt_when=lambda: not request.path.startswith("/api/"))


def _register_errors(app: Flask) -> None:
    """Every error is JSON with a message; user mistakes are 4xx, never a stack trace."""
    @app.errorhandler(ClipsearchError)
    def user_error(exc: ClipsearchError) -> ResponseReturnValue:
        if exc.http_status == 503 and exc.__cause__ is not None:   # the engine's own words, paths and all:
            logging.getLogger("clipsearch").warning("%s: %s", exc, exc.__cause__)   # for the log, not the client
        response = jsonify(error=str(exc))
        if isinstance(exc, Busy):   # every analysts' turn taken: it passes shortly
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response, exc.http_status

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge) -> ResponseReturnValue:
        return jsonify(error=f"request too large: the limit is {app.config['MAX_CONTENT_LENGTH']} bytes"), 413

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        if exc.code == 429:
            return jsonify(error=f"too many requests: the limit is {exc.description}; try again later"), 429
        return jsonify(error=exc.description or exc.name), exc.code or 500

    @app.errorhandler(Exception)
    def internal(exc: Exception) -> ResponseReturnValue:
        collection: Collection = app.extensions["clipsearch"]
        gone = unavailable_os(exc, collection.settings.db, app.config["THUMB_DIR"]) \
            if isinstance(exc, OSError) else None   # e.g. a thumbnail written on a read-only or full disk
        if gone is not None:
            logging.getLogger("clipsearch").warning("%s: %s", gone, exc)
            return jsonify(error=str(gone)), gone.http_status
        logging.getLogger("clipsearch").exception("unhandled error")
        return jsonify(error="internal error; see the server log"), 500


class JSONErrorTask(ErrorTask):
    """waitress answers the requests it refuses itself, before the app (431 headers too large, 400 a bad
    request line or header, 413 a body too large): in JSON, as the page's API answers every error."""

    def execute(self) -> None:
        error = self.request.error
        body = json.dumps({"error": f"{error.reason}: {error.body}".strip(": ")}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JSONErrorChannel(HTTPChannel):
    error_task_class = JSONErrorTask


def check_port(host: str, port: int) -> None:
    """Refuse early, with a clear message, an address the server could not listen on."""
    if not 0 < port < 65536:
        raise ClipsearchError(f"--port must be between 1 and 65535, got {port}")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise ClipsearchError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; "
                              "choose another with --port (or --host)") from None


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, threads: int = 8,
          model: ImageTextModel | ModelRef | None = None, sql_port: int = 0, watch: Sequence[str] = (),
          watch_interval: float = 10.0) -> None:
    """Serve the page and the JSON API with waitress (threads share the one collection).

    On an embedded folder the service is its one owner: it also answers ClickHouse's HTTP interface on
    `sql_port` (0: any free port; the `clipsearch` commands run through it while it serves; analysts
    connect as `analyst` with CLIPSEARCH_ANALYST_PASSWORD) and keeps the `watch` folders loaded.
    """
    from waitress.server import create_server
    check_port(host, port)
    embedded = not settings.clickhouse_url
    if embedded:
        held_by = running_service(Path(settings.db))
        if held_by:
            raise ClipsearchError(f"{Path(settings.db).resolve()} is already served ({redact(held_by)}); "
                                  "stop that service first")
        if sql_port:
            check_port(host, sql_port)  # 0 picks a free one
    folders = [Path(folder).expanduser() for folder in watch]
    for folder in folders:
        if not folder.is_dir():
            raise ClipsearchError(f"--watch {folder}: no such folder")
    app = create_app(settings, model)
    app.config["SERVED_HOSTS"] = hosts = served_hosts(host, settings.allowed_hosts)
    collection: Collection = app.extensions["clipsearch"]
    _ = collection.model  # load the model now rather than during the first request
    stack = contextlib.ExitStack()
    with stack:
        _follow_store_model(stack, collection)
        if embedded:
            _serve_sql(stack, collection, host, sql_port, hosts)
        if folders:
            watcher = Watcher(collection, folders, watch_interval, say=lambda line: print(line, flush=True))
            watcher.start()
            stack.callback(watcher.stop)
            print(f"clipsearch: watching {', '.join(map(str, folders))} every {watch_interval:g}s", flush=True)
        print(f"clipsearch: serving on http://{host}:{port}/ ({collection.backend} store, model "
              f"{collection.model_label})", flush=True)
        if collection.model_label == BUNDLED_LABEL:   # the page says it too, above its results
            print(BUNDLED_NOTE, flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # clean up on `kill` as on Ctrl-C
        # poll(), not select(): the engine keeps many descriptors open. Idle connections hold no thread but
        # count towards waitress's connection limit (100 by default): allow 1,000 and drop the idle after 10 s.
        server = create_server(app, host=host, port=port, threads=threads, ident="clipsearch",
                               asyncore_use_poll=True, connection_limit=1000, channel_timeout=10)
        server.channel_class = JSONErrorChannel
        server.run()
        collection.close()


def _follow_store_model(stack: contextlib.ExitStack, collection: Collection, every_s: float = 1.0) -> None:
    """Follow the store to the model `clipsearch reembed` switches it to, within `every_s`, also when no
    search comes to notice (clipTextEmbedding() on the ClickHouse port cannot load a model itself)."""
    stop = threading.Event()

    def follow() -> None:
        while not stop.wait(every_s):
            try:
                collection.refresh_model()
            except Exception:   # the store busy or briefly unreadable: the next second tries again
                pass
    threading.Thread(target=follow, name="clipsearch-model", daemon=True).start()
    stack.callback(stop.set)


def _serve_sql(stack: contextlib.ExitStack, collection: Collection, host: str, sql_port: int,
               hosts: frozenset[str]) -> None:
    """ClickHouse's HTTP interface on `sql_port`, and the serve file that lets `clipsearch` commands in."""
    from waitress.server import create_server

    from clipsearch.service.clickhouse_http import MAX_BODY_BYTES, ClickHouseHTTP
    folder = Path(collection.settings.db).resolve()
    collection.enable_text_embedding()  # clipTextEmbedding() for every session, the model loaded on first use
    password = secrets.token_urlsafe(24)
    analyst = collection.settings.analyst_password
    # One analyst policy for the port and the page's SQL tab: one check, one set of limits, one cache, one
    # set of turns
    sql_app = ClickHouseHTTP(engine_uri(folder), password, analyst, writes=collection.writes,
                             policy=collection.analyst_policy, share=collection.analyst_turns,
                             folder=collection.catalog.connection.folder, hosts=hosts)
    # Threads beyond what analysts may hold (clipsearch.analyst.turns.DOORS: 18 requests at once), so the
    # CLI, loads and the page's own requests always find one; idle connections are dropped after 10 s and up
    # to 1,000 are kept, so idle clients cannot take every place either.
    server = create_server(sql_app, host=host, port=sql_port, threads=24, ident="clipsearch-sql",
                           asyncore_use_poll=True, connection_limit=1000, channel_timeout=10,
                           max_request_body_size=MAX_BODY_BYTES)   # waitress stores up to 1 GiB before the app
    threading.Thread(target=server.run, name="clipsearch-sql", daemon=True).start()
    stack.callback(server.close)
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://clipsearch:{password}@{local}:{server.effective_port}/default"

    def announce(model: ImageTextModel) -> Path:   # again whenever the store switches model (reembed)
        return announce_service(folder, url, {"label": model.label, "dim": model.dim,
                                              "logit_scale": model.logit_scale})
    serve_file = announce(collection.model)
    collection.on_model_change(announce)
    stack.callback(_remove, serve_file)
    analyst_note = "read-only, password from" if analyst else "off; to turn it on set"
    print(f"clipsearch: ClickHouse HTTP interface on http://{host}:{server.effective_port}/ "
          f"(user analyst: {analyst_note} CLIPSEARCH_ANALYST_PASSWORD)", flush=True)


def _remove(path: Path) -> None:
    """Remove the serve file on the way out; a store folder moved away, unplugged or read-only by then keeps
    it (a serve file whose lock nobody holds is taken for a stopped service's)."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
