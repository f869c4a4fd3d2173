"""ClickHouse's HTTP interface over the embedded engine, on `serve`'s second port: how the CLI, analysts'
clickhouse-client / clickhouse-connect, Grafana, Superset and pandas reach a served folder while the
service owns it.

It speaks what those clients use: the SQL in the body (or `query=` with insert data in the body),
`param_*` values, `database=`, a FORMAT clause or `default_format`, compressed bodies, and errors as
ClickHouse sends them (HTTP 500 with the message and `X-ClickHouse-Exception-Code`). Per-query settings
in the URL are ignored: each user's session has its own, fixed at start.

Every request authenticates (Basic auth, `X-ClickHouse-User`/`-Key`, or `user`/`password` in the URL):
- `clipsearch`: read-write, with a password made anew for each run and kept in the folder's serve file
  (readable by its owner only), which is how `clipsearch` commands find the running service;
- `analyst`: read-only (`readonly = 1`: no writes, no setting changes; and clipsearch.readonly's check of
  each statement: one query that returns rows, no INTO OUTFILE, no file() and no table function that
  reads files or the network) within ANALYST_LIMITS, when CLIPSEARCH_ANALYST_PASSWORD is set. A request
  with the `readonly` setting gets the same session, whoever sends it.
"""
from __future__ import annotations

import base64
import gzip
import hmac
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.wrappers import Request, Response

from .. import readonly
from ..connection import ANALYST_DEFAULTS, ANALYST_LIMITS, IDENTIFIER, ROWS_STATEMENT, WRITES
from ..errors import QueryError

FORMAT_RE = re.compile(r"\s+FORMAT\s+(\w+)\s*;?\s*$", re.I)
INSERT_RE = re.compile(r"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+(\w+)\s*$", re.I | re.S)
MAX_BODY_BYTES = 512 * 1024 * 1024


def _decompress(data: bytes, encoding: str | None) -> bytes:
    if not encoding:
        return data
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "lz4":
        import lz4.frame
        return lz4.frame.decompress(data)
    if encoding == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().decompress(data)
    raise ValueError(f"Code: 1. DB::Exception: unsupported Content-Encoding {encoding}")


class Session:
    """One chdb session on the served folder, one statement at a time."""

    def __init__(self, path: str, settings: dict[str, Any]):
        import chdb
        self.conn = chdb.connect(path)
        self.lock = threading.Lock()
        self.database = "default"
        for name, value in settings.items():
            self.conn.query(f"SET {name} = {value!r}" if isinstance(value, str) else f"SET {name} = {value}")

    def run(self, sql: str, fmt: str, params: dict[str, str], database: str | None = None) -> bytes:
        with self.lock:
            if database and database != self.database:  # the session's current database, per request
                if not IDENTIFIER.match(database):
                    raise ValueError(f"Code: 81. DB::Exception: Database {database!r} does not exist. "
                                     "(UNKNOWN_DATABASE)")
                self.conn.query(f"USE `{database}`")
                self.database = database
            try:
                result = self.conn.query(sql, fmt, params=params)
            except Exception:
                self.conn.query("SELECT 1")   # takes the partial output chdb keeps for the next query
                raise
            return result.bytes() if result is not None else b""

    def close(self) -> None:
        with self.lock:
            self.conn.close()


class ClickHouseHTTP:
    """The WSGI app: `users` maps a user name to (password, its Session)."""

    def __init__(self, path: str, writer_password: str, analyst_password: str | None = None,
                 writer_user: str = "clipsearch"):
        self.read_only = Session(path, {**ANALYST_DEFAULTS, **ANALYST_LIMITS, "readonly": 1})
        self.users: dict[str, tuple[str, Session]] = {
            writer_user: (writer_password, Session(path, ANALYST_DEFAULTS))}
        if analyst_password:
            self.users["analyst"] = (analyst_password, self.read_only)
        self._denied: set[str] | None = None

    def _rows(self, sql: str, params: dict) -> list[dict]:
        text = self.read_only.run(sql, "JSONEachRow", {k: str(v) for k, v in params.items()}).decode()
        return [json.loads(line) for line in text.splitlines() if line]

    def check_read_only(self, sql: str) -> None:
        """clipsearch.readonly's check: readonly=1 alone lets file(), INTO OUTFILE and DESCRIBE url() through."""
        if self._denied is None:
            self._denied = readonly.denied_functions(self._rows)
        try:
            readonly.check(self._rows, sql, self._denied)
        except QueryError as exc:
            raise ValueError(f"Code: 164. DB::Exception: {exc}. (READONLY)") from None

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self.handle(request)
        except Exception as exc:  # every engine error goes back the way a server sends it
            message = str(exc)
            code = re.search(r"Code: (\d+)", message)
            response = Response(message + "\n", status=500, content_type="text/plain; charset=UTF-8",
                                headers={"X-ClickHouse-Exception-Code": code.group(1) if code else "1000"})
        return response(environ, start_response)

    def authenticate(self, request: Request) -> Session | None:
        user, password = request.headers.get("X-ClickHouse-User"), request.headers.get("X-ClickHouse-Key")
        auth = request.headers.get("Authorization", "")
        if user is None and auth.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
        if user is None:
            user, password = request.args.get("user"), request.args.get("password")
        known = self.users.get(user or "")
        if known is None or not hmac.compare_digest((password or "").encode(), known[0].encode()):
            return None
        return known[1]

    def handle(self, request: Request) -> Response:
        session = self.authenticate(request)
        if session is None:
            return Response("Code: 516. DB::Exception: Authentication failed: password is incorrect, or there is "
                            "no user with such name. (AUTHENTICATION_FAILED)\n", status=401,
                            headers={"X-ClickHouse-Exception-Code": "516",
                                     "WWW-Authenticate": 'Basic realm="clipsearch"'})
        if (request.content_length or 0) > MAX_BODY_BYTES:
            raise ValueError("Code: 1. DB::Exception: request body too large")
        # clickhouse-connect sends large parameters (and then the query) as form fields in the body; other
        # clients (curl --data) send the SQL itself with a form's content type.
        raw = request.get_data(cache=True, parse_form_data=False)
        form = request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data") \
            and "query" in request.form
        args = {**request.args, **request.form} if form else dict(request.args)
        body = b"" if form else _decompress(raw, request.headers.get("Content-Encoding"))
        params = {k[len("param_"):]: v for k, v in args.items() if k.startswith("param_")}
        sql, data = (args["query"], body) if args.get("query") else (body.decode(), b"")
        if args.get("readonly", "0") not in ("", "0"):
            session = self.read_only   # a client that asks for read-only gets it (clipsearch's analyst_sql does)
        database = args.get("database")
        if data:
            return self.insert(session, sql, data, database)
        match = FORMAT_RE.search(sql)
        fmt = match.group(1) if match else args.get("default_format", "TabSeparated")
        sql = FORMAT_RE.sub("", sql) if match else sql
        if session is self.read_only:
            self.check_read_only(sql)
        elif not ROWS_STATEMENT.match(sql):
            WRITES.note()   # the service's cached table state is refreshed on its next search
        payload = session.run(sql, fmt if ROWS_STATEMENT.match(sql) else "TabSeparated", params, database)
        return Response(payload, headers={"X-ClickHouse-Format": fmt, "X-ClickHouse-Timezone": "UTC",
                                          "X-ClickHouse-Summary": '{"read_rows":"0"}'})

    def insert(self, session: Session, sql: str, data: bytes, database: str | None) -> Response:
        match = INSERT_RE.match(sql)
        if not match:
            raise ValueError("Code: 62. DB::Exception: expected INSERT INTO ... FORMAT <format> with data")
        WRITES.note()
        fd, path = tempfile.mkstemp(suffix=".data")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            # file() reads the temporary file on the engine's side; a read-only session refuses it, and so
            # refuses the insert, as it should.
            session.run(f"{match.group(1)} SELECT * FROM file('{path}', '{match.group(2)}')", "TabSeparated", {},
                        database)
        finally:
            os.unlink(path)
        return Response(b"", headers={"X-ClickHouse-Summary": '{"written_rows":"0"}'})

    def close(self) -> None:
        for session in {id(s): s for s in [self.read_only, *(s for _, s in self.users.values())]}.values():
            session.close()
