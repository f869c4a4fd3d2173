"""ClickHouse's HTTP interface over the embedded engine, on `serve`'s second port: how the CLI, analysts'
clickhouse-client / clickhouse-connect, Grafana, Superset, pandas and curl reach a served folder while the
service owns it.

It speaks what those clients use: `/ping` and `GET /` (no login, `Ok.`), the SQL in the body or in
`query=`, insert data in any format after `INSERT ... FORMAT name` (clickhouse_wire: request bodies in
gzip, deflate, zstd or lz4 and ClickHouse's own compressed blocks, bounded before and after
decompression), `param_*` values, `database=`, a FORMAT clause or `default_format`, settings in the URL,
external data (multipart files with `<name>_structure`/`_types`/`_format`), compressed responses with
`enable_http_compression=1`, results streamed as the engine makes them, the `X-ClickHouse-Query-Id`,
`-Summary`, `-Format` and `-Timezone` headers, and errors as ClickHouse sends them (the message,
`X-ClickHouse-Exception-Code` and ClickHouse's HTTP status for the code).

The read-write login's requests with a `session_id` run in that session (clickhouse_sessions: one engine
connection per login and session_id, kept until `session_timeout`, one request at a time); every other
request, and every analyst's, runs in a session of its own (a fresh engine connection: a client's database,
settings and temporary state are never another's). Every request authenticates (Basic auth,
`X-ClickHouse-User`/`-Key`, or `user`/`password` in the URL):
- `clipsearch`: read-write, with a password made anew for each run and kept in the folder's serve file
  (readable by its owner only), which is how `clipsearch` commands find the running service;
- `analyst`: read-only, when CLIPSEARCH_ANALYST_PASSWORD is set. The analyst policy (AnalystPolicy, which
  the page's SQL tab uses too) decides it all: its SQL runs as the policy's check formats it, in a session
  with `readonly = 1` (no writes, no setting changes) within the policy's limits, in an output format it
  allows; settings in the URL may only tighten those limits. Its queries take turns (FairShare) so that one
  client's burst cannot hold the port, and guesses at its password are throttled per login, from whatever
  address (LoginThrottle). A request with the `readonly` setting gets the analyst's treatment, whoever
  sends it.

Only requests whose Host is one the port serves are answered (served_hosts: DNS rebinding), and none that a
browser sends for another site's page (cross_site).
"""
from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import re
import secrets
import tempfile
import threading
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Request, Response

from clipsearch.analyst.policy import AnalystPolicy, Refused, setting_value, streams
from clipsearch.analyst.turns import Busy, FairShare, Turn
from clipsearch.errors import QueryError, StoreError, StoreUnavailable
from clipsearch.service import clickhouse_wire as wire
from clipsearch.service.clickhouse_sessions import Lease, Sessions
from clipsearch.service.clickhouse_wire import HTTP_STATUS, ClickHouseError
from clipsearch.store.connection import (
    ANALYST_DEFAULTS,
    IDENTIFIER,
    ROWS_STATEMENT,
    StoreFolder,
    WriteCounter,
    engine_error,
    engine_session,
    quote_identifier,
)
from clipsearch.store.results import one_header

# An INSERT's header as wire.split gives it: where FROM INFILE goes (before a SETTINGS clause).
INSERT_SETTINGS = re.compile(r"^(?P<target>.*?)(?P<settings>\s+SETTINGS\s+.*)?$", re.I | re.S)
FORMAT_RE = re.compile(r"\s+FORMAT\s+(\w+)\s*;?\s*$", re.I)   # the writer's SQL, which is not reformatted
# The writer's insert data (a load's batch is well under 1 MiB). waitress stores a body before the app sees
# the request, login or not, so this is also what one unauthenticated request can make it store.
MAX_BODY_BYTES = 16 * 1024 * 1024
# An INSERT's data after decompression (spooled to a temporary file, not held in memory).
MAX_INSERT_BYTES = 256 * 1024 * 1024
# One of ClickHouse's compressed blocks (decompress=1) is decompressed whole: its size is bounded apart (clients
# send blocks of about 1 MiB; clickhouse-connect sends none, it compresses the HTTP body instead).
MAX_BLOCK_BYTES = 64 * 1024 * 1024
# A result held until its end (wait_end_of_query=1) stays in memory up to this, then goes to a temporary file.
WAIT_BUFFER_BYTES = 8 * 1024 * 1024
TURN_GRACE_S = 5.0   # past its time limit, an analyst query that is still sending gives up its turn
# What a ClickHouse server does by default and chdb does not: 64-bit integers quoted in JSON formats, which
# clients of a server expect (a client asks for plain numbers in the URL, as clipsearch's own does).
PORT_DEFAULTS = {**ANALYST_DEFAULTS, "output_format_json_quote_64bit_integers": 1}
MAX_ANALYST_BODY_BYTES = 1024 * 1024  # an analyst sends SQL only (ClickHouse parses at most 256 KiB of it)
# URL parameters that are the HTTP interface's own, not settings of the query.
TRANSPORT = {"query", "database", "default_format", "user", "password", "query_id", "session_id", "session_timeout",
             "session_check", "compress", "decompress", "enable_http_compression", "http_zlib_compression_level",
             "wait_end_of_query", "buffer_size", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
             "cancel_http_readonly_queries_on_client_close", "quota_key", "role", "client_protocol_version",
             "add_http_cors_header", "http_response_buffer_size", "max_result_rows_to_stream", "readonly"}
CONTENT_TYPES = {"TabSeparated": "text/tab-separated-values", "TSV": "text/tab-separated-values",
                 "CSV": "text/csv", "CSVWithNames": "text/csv", "JSON": "application/json",
                 "JSONCompact": "application/json", "JSONEachRow": "application/x-ndjson",
                 "JSONLines": "application/x-ndjson", "NDJSON": "application/x-ndjson"}
def error_response(message: str, code: int | None = None, status: int | None = None) -> Response:
    if code is None:
        found = re.search(r"Code: (\d+)", message)
        code = int(found.group(1)) if found else 1000
    message = public_message(message[message.find("Code: "):] if "Code: " in message else message)
    status = status or HTTP_STATUS.get(code, 500)
    headers = {"X-ClickHouse-Exception-Code": str(code)}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="clipsearch"'
    return Response(message + "\n", status=status, content_type="text/plain; charset=UTF-8", headers=headers)


# A Python traceback in an engine error (chdb adds the frames of a Python function's exception: "At:" and
# one line per frame, with the server's file paths), and ClickHouse's stack trace.
PYTHON_FRAMES = re.compile(r"\n*\s*At:\n(?:[ \t]+\S.*\(\d+\): .*(?:\n|$))*", re.M)


def public_message(message: str) -> str:
    """An engine error's text as a client may see it: no stack trace, no Python frames (no server paths)."""
    message = PYTHON_FRAMES.sub(" ", message)
    return re.sub(r"\s*Stack trace.*$", "", message, flags=re.S).strip()


def _module(name: str) -> bool:
    """Whether an optional compression module (zstandard) is installed."""
    import importlib.util
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:   # its parent package is missing
        return False


def _compressor(request: Request, args: dict) -> tuple[str, Callable[[bytes], bytes], Callable[[], bytes]] | None:
    """(Content-Encoding, compress, flush) when the client asked for a compressed response in an encoding
    this speaks (gzip, deflate, zstd; ClickHouse also speaks br, xz and lz4: the body then goes plain)."""
    if args.get("enable_http_compression", "0") in ("", "0"):
        return None
    accepted = [e.split(";")[0].strip().lower() for e in request.headers.get("Accept-Encoding", "").split(",")]
    for encoding in accepted:
        if encoding in ("gzip", "deflate"):
            deflater = zlib.compressobj(6, zlib.DEFLATED, 31 if encoding == "gzip" else 15)
            return encoding, deflater.compress, deflater.flush
        if encoding == "zstd" and _module("zstandard"):
            import zstandard
            zstd = zstandard.ZstdCompressor().compressobj()
            return encoding, zstd.compress, zstd.flush
    return None


def _url_settings(requested: dict[str, str]) -> dict[str, int | str]:
    """The settings in a writer's URL, as the session SETs them (names are identifiers, values numbers or
    plain words)."""
    settings = {name: setting_value(name, value) for name, value in requested.items()}
    for name in settings:
        if not IDENTIFIER.match(name):
            raise ClickHouseError(115, f"Unknown setting '{name}'", "UNKNOWN_SETTING")
    return settings


# -- who may talk to the ports: the Host they are asked by, and the site a browser's request comes from. The
# page's Flask app (service/app.py) checks with the same two functions.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARDS = ("0.0.0.0", "::", "")   # listening on every address


def served_hosts(host: str | None, allowed: str | None) -> frozenset[str]:
    """The Host names a service listening on `host` answers to: loopback's, `host`'s and the comma-separated
    names of `allowed` (Settings.allowed_hosts). One listening on every address answers any IP address."""
    names = [*LOOPBACK_NAMES, *(name for name in (allowed or "").split(",") if name.strip())]
    if host is not None:
        names.append(host)
    return frozenset(_host_name(name) or name for name in names)


def _host_name(header: str) -> str | None:
    """The name in a Host header (`name`, `name:port`, `[v6]:port`): lower case, an IP address in its one
    spelling; None when it is no host. (werkzeug's TRUSTED_HOSTS would do this for the page but cannot
    match an IPv6 address: it cuts a trusted name at its first colon.)"""
    value = header.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else (None if rest else "")
    else:
        name, _, port = value.partition(":")
    if not name or port is None or (port and not port.isdigit()):
        return None
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def host_served(header: str | None, served: frozenset[str]) -> bool:
    """Whether a request's Host header names this service (`served`: served_hosts). A page whose own name
    its owner has pointed at this machine (DNS rebinding) arrives with that name, not an address; a request
    without a Host header comes from no browser."""
    if not header:
        return True
    name = _host_name(header)
    if name is None:
        return False
    if name in served:
        return True
    if not served & set(WILDCARDS):
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def cross_site(headers: Any) -> bool:
    """Whether a browser sent this request for another site's page (CSRF). A browser says where a request
    comes from in Sec-Fetch-Site, which no page can set: only `same-origin` and `none` (typed in the address
    bar, a bookmark) are this service's own; a browser too old to send it sends Origin with every POST,
    which must then be this Host. A request with neither (curl, the CLI, every non-browser client) is not
    cross-site. (As Go's net/http CrossOriginProtection decides.)"""
    site = headers.get("Sec-Fetch-Site")
    if site is not None:
        return site.strip().lower() not in ("same-origin", "none")
    origin = headers.get("Origin")
    if origin is None:
        return False
    return urllib.parse.urlsplit(origin.strip()).netloc.lower() != (headers.get("Host") or "").strip().lower()


class LoginThrottle:
    """Guesses at a password are bounded per login, from any number of addresses (loopback alone has 16
    million): a token bucket per login name that holds `burst` tries and refills at `rate` a second. Each
    password check takes a token first, and a right password gives its token back; with none left the
    password is not checked at all, right or wrong, and the answer says when to try again (1/rate s at
    most). So at most burst + rate * t passwords are tried in t seconds, however many requests arrive at
    once, and the right password gets in within 1/rate s of the last wrong one: never a lockout window.
    The price: while someone keeps guessing, the analyst's own logins wait their turn with the guesses.
    The `clipsearch` login (a random 192-bit password) is never throttled, so nobody can lock the CLI out."""

    def __init__(self, rate: float = 10.0, burst: float = 10.0):
        self.rate, self.burst = rate, burst
        self.buckets: dict[str, tuple[float, float]] = {}   # login -> (tokens, when counted)
        self.lock = threading.Lock()

    def _tokens(self, login: str, now: float) -> float:
        tokens, then = self.buckets.get(login, (self.burst, now))
        return min(self.burst, tokens + (now - then) * self.rate)

    def take(self, login: str) -> float:
        """0 when a try at `login`'s password may go ahead (its token taken), else the seconds until one may."""
        with self.lock:
            now = time.monotonic()
            tokens = self._tokens(login, now)
            if tokens < 1:
                return (1 - tokens) / self.rate
            self.buckets[login] = (tokens - 1, now)
            return 0.0

    def give_back(self, login: str) -> None:
        """The try was the right password: it costs nothing."""
        with self.lock:
            now = time.monotonic()
            self.buckets[login] = (min(self.burst, self._tokens(login, now) + 1), now)


@dataclass
class Login:
    name: str
    password: str
    analyst: bool


class ClickHouseHTTP:
    """The WSGI app over the engine whose chdb connection string is `uri` (connection.engine_uri); analysts'
    SQL under `policy` (the served collection's, which its page's SQL tab uses too)."""

    def __init__(self, uri: str, writer_password: str, analyst_password: str | None = None,
                 writer_user: str = "clipsearch", share: FairShare | None = None, writes: WriteCounter | None = None,
                 policy: AnalystPolicy | None = None, folder: StoreFolder | None = None,
                 hosts: frozenset[str] | None = None):
        self.uri = uri
        self.hosts = hosts or served_hosts(None, None)   # the Host names answered (served_hosts)
        self.folder = folder   # the served store's: a folder moved away or unplugged is a 503 before any SQL
        self.writes = writes or WriteCounter()   # the service's own connection's: its caches see these writes
        self.logins = {writer_user: Login(writer_user, writer_password, analyst=False)}
        if analyst_password:
            self.logins["analyst"] = Login("analyst", analyst_password, analyst=True)
        self.share = share or FairShare()
        self.throttle = LoginThrottle()
        self.policy = policy or AnalystPolicy()
        self.sessions = Sessions(lambda settings, database: engine_session(self.uri, settings, database))
        self._timezone: str | None = None

    # -- requests ---------------------------------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        try:
            try:
                response = self.handle(request)
            except Refused as exc:   # the analyst policy's refusals, each with ClickHouse's code for it
                raise ClickHouseError(exc.code, str(exc), exc.name) from None
            except Busy as exc:   # the analysts' turns (shared with the page's SQL tab), as a server says it
                raise ClickHouseError(202, str(exc), "TOO_MANY_SIMULTANEOUS_QUERIES",
                                      retry_after_s=exc.retry_after_s) from None
            except QueryError as exc:   # the statement check's
                raise ClickHouseError(164, str(exc), "READONLY") from None
            except StoreError as exc:   # ClickHouse's parser's own error, met by the check, with its code
                raise self._unavailable(exc) or ClickHouseError(*_code_of(str(exc))) from None
        except ClickHouseError as exc:
            response = error_response(str(exc), exc.code, exc.status)
            if exc.retry_after_s:
                response.headers["Retry-After"] = str(exc.retry_after_s)
        except Exception as exc:  # every engine error goes back the way a server sends it
            gone = self._unavailable(exc)
            response = error_response(str(gone), gone.code, gone.status) if gone else error_response(str(exc))
        response.headers.setdefault("X-ClickHouse-Server-Display-Name", "clipsearch")
        query_id = request.args.get("query_id", "")
        if "X-ClickHouse-Query-Id" not in response.headers and re.fullmatch(r"[\x21-\x7e]{1,256}", query_id):
            response.headers["X-ClickHouse-Query-Id"] = query_id   # ClickHouse names the query in errors too
        return response(environ, start_response)

    def _unavailable(self, exc: BaseException) -> ClickHouseError | None:
        """A store that cannot be reached (connection.engine_error says which errors mean that): 503, with
        the engine's code and a message that names no path; None for the statement's own error."""
        error = exc if isinstance(exc, StoreUnavailable) else engine_error(exc, self.folder)
        if not isinstance(error, StoreUnavailable):
            return None
        code, _, name = _code_of(str(exc))
        return ClickHouseError(*((code, str(error), name) if code != 1000 else (107, str(error), "FILE_DOESNT_EXIST")),
                               status=503)

    def authenticate(self, request: Request) -> Login:
        user, password = request.headers.get("X-ClickHouse-User"), request.headers.get("X-ClickHouse-Key")
        auth = request.headers.get("Authorization", "")
        if user is None and auth.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user = password = None
        if user is None:
            user, password = request.args.get("user", "default"), request.args.get("password", "")
        login = self.logins.get(user or "")
        if login is None:
            raise self._failed(user)
        throttled = login.analyst and bool(password)   # a try at a person's password
        if throttled:
            wait = self.throttle.take(login.name)
            if wait > 0:
                raise ClickHouseError(516, f"too many failed logins as {login.name}: try again in {wait:.1f} s",
                                      "AUTHENTICATION_FAILED", 429)
        if not hmac.compare_digest((password or "").encode(), login.password.encode()):
            raise self._failed(user)
        if throttled:
            self.throttle.give_back(login.name)
        return login

    @staticmethod
    def _failed(user: str | None) -> ClickHouseError:
        return ClickHouseError(516, f"{user}: Authentication failed: password is incorrect, or there is no user "
                                    "with such name", "AUTHENTICATION_FAILED")

    def check_gate(self, request: Request) -> None:
        """Only a Host this port serves, and no request a browser sends for another site's page: before any
        other work, /ping's included."""
        if not host_served(request.headers.get("Host"), self.hosts):
            raise ClickHouseError(497, f"Host {request.headers.get('Host', '')[:100]!r} is not a name this server "
                                       "answers to (add it to CLIPSEARCH_ALLOWED_HOSTS)", "ACCESS_DENIED", 403)
        if cross_site(request.headers):
            raise ClickHouseError(497, "a request from another site's page is refused", "ACCESS_DENIED", 403)

    def handle(self, request: Request) -> Response:
        self.check_gate(request)
        if request.path in ("/ping", "/") and request.method in ("GET", "HEAD") and "query" not in request.args:
            return Response("Ok.\n", content_type="text/html; charset=UTF-8")
        if request.path not in ("/", "/query"):
            raise ClickHouseError(36, f"There is no handle {request.path}", "BAD_ARGUMENTS", 404)
        login = self.authenticate(request)
        if self.folder is not None:
            self.folder.check()
        args = dict(request.args)
        analyst = login.analyst or args.get("readonly", "0") not in ("", "0")  # a client asking for read-only
        if analyst and args.get("readonly", "1") not in ("", "1"):
            raise ClickHouseError(164, "Cannot modify 'readonly' setting in readonly mode", "READONLY")
        limit = MAX_ANALYST_BODY_BYTES if analyst else MAX_BODY_BYTES
        request.max_content_length = limit   # also for a chunked body, which has no Content-Length
        files: dict[str, Any] = {}
        try:
            # clickhouse-connect sends large parameters (and then the query) as form fields in the body, and
            # external data as multipart files; other clients (curl --data) send the SQL itself with a form's
            # content type.
            raw = request.get_data(cache=True, parse_form_data=False)
            if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data") \
                    and ("query" in request.form or request.files):
                args.update(request.form)
                files = dict(request.files)
                raw = b""
        except RequestEntityTooLarge:
            raise ClickHouseError(36, f"the request body is larger than {limit} bytes", "BAD_ARGUMENTS",
                                  413) from None
        _check_query_id(args)
        chunks = wire.decoded([raw] if raw else [], request.headers.get("Content-Encoding"))
        if args.get("decompress", "0") not in ("", "0"):   # ClickHouse's own compressed blocks
            chunks = wire.blocks(chunks, limit if analyst else MAX_BLOCK_BYTES)
        # The query may begin in the URL and go on in the body (ClickHouse joins the two with a newline); an
        # INSERT's data follows its FORMAT clause in either.
        body = wire.split(args.get("query") or "", chunks, limit, limit if analyst else MAX_INSERT_BYTES)
        external = external_tables(files, args)
        params = {k[len("param_"):]: v for k, v in args.items() if k.startswith("param_")}
        requested = {k: v for k, v in args.items() if k not in TRANSPORT and not k.startswith("param_")
                     and k not in external.settings}
        database = args.get("database") or None
        if database is not None and not IDENTIFIER.match(database):
            raise ClickHouseError(81, f"Database {database!r} does not exist", "UNKNOWN_DATABASE")
        try:
            if analyst:
                if body.data is not None:
                    raise ClickHouseError(164, "Cannot execute query in readonly mode (an insert)", "READONLY")
                if external.tables:
                    raise ClickHouseError(164, "external data is not available to analysts", "READONLY")
                return self.analyst_query(request, login, args, body.sql, params, requested, database)
            lease = self.sessions.lease(login.name, args, PORT_DEFAULTS, _url_settings(requested), database)
            try:
                external.create(lease)
            except BaseException:
                lease.close()
                raise
            if body.data is not None:
                return self.insert(args, lease, body, params)
            sql = body.sql
            match = FORMAT_RE.search(sql)
            fmt = match.group(1) if match else args.get("default_format", "TabSeparated")
            command = not ROWS_STATEMENT.match(sql) or _with_insert(sql)
            if command:
                self.writes.note()   # the service's cached table state and answers are read afresh
                fmt = "TabSeparated"
            try:
                return self.respond(request, args, lease, sql, fmt, params, command=command)
            finally:
                if command:   # again once it ran (whole, in respond): a search that began meanwhile keeps nothing
                    self.writes.note()
        finally:
            body.close()

    def analyst_query(self, request: Request, login: Login, args: dict, sql: str, params: dict,
                      requested: dict[str, str], database: str | None) -> Response:
        policy = self.policy
        policy.check_database(database)
        address = request.remote_addr or ""
        # The turn comes first: checking parses the SQL, which a crafted text can make cost a second or more
        turn = self.share.acquire(f"{login.name}|{args.get('session_id') or address}", address)
        try:
            text = policy.settings_as_sent(policy.check_on_engine(self.uri, sql))
            fmt = policy.output_format(text, args.get("default_format", "TabSeparated"))
            settings = policy.port_settings(fmt, text, requested, PORT_DEFAULTS)
            conn = policy.open_engine_session(self.uri, settings, database)
        except BaseException:
            turn.leave()
            raise
        return self.respond(request, args, conn, text, fmt, params, turn,
                            float(settings["max_execution_time"]) + TURN_GRACE_S)

    def respond(self, request: Request, args: dict, conn: Any, sql: str, fmt: str, params: dict,
                turn: Turn | None = None, turn_s: float = 0.0, command: bool = False) -> Response:
        """Run `sql` on `conn` (closed after) and answer with its result, streamed where the format allows:
        errors before the first bytes get ClickHouse's status; after them, ClickHouse's way, the
        exception text at the end of the body between markers (_exception_block). `command`: a statement without
        rows, run whole. An analyst's `turn` ends after `turn_s` even if the client has not read the result by
        then (the query is cancelled), and is left when the answer is sent."""
        stream = None
        summary = _summary(None)
        timer: threading.Timer | None = None
        if turn is not None:
            def expire() -> None:
                turn.end_turn()
                if stream is not None:
                    stream.cancel()
            timer = threading.Timer(turn_s, expire)
            timer.daemon = True
            timer.start()

        def done() -> None:
            if timer is not None:
                timer.cancel()
            if turn is not None:
                turn.leave()
        try:
            if streams(fmt, sql) and not command:
                stream = conn.send_query(sql, fmt, params=params)
                chunks: Iterator[bytes] = one_header((chunk.bytes() for chunk in stream), fmt)
                first = next(chunks, b"")   # the query's own errors surface here, before the status is sent
                if turn is None and args.get("wait_end_of_query", "0") not in ("", "0"):
                    first, chunks = b"", _held(first, chunks)   # ClickHouse's wait_end_of_query: errors first
            else:
                result = conn.query(sql, fmt, params=params)
                first, chunks = (result.bytes() if result is not None else b""), iter(())
                summary = _summary(result)
        except BaseException:
            conn.close()
            done()
            raise
        encoding = _compressor(request, args)

        started = time.monotonic()
        tag = secrets.token_hex(8)   # marks an error after rows (ClickHouse 25.11's X-ClickHouse-Exception-Tag)

        def body() -> Iterator[bytes]:
            compress, flush = (encoding[1], encoding[2]) if encoding else (lambda b: b, lambda: b"")
            try:
                yield compress(first)
                try:
                    for chunk in chunks:
                        if turn is not None and time.monotonic() - started > turn_s:   # its time is up
                            raise ClickHouseError(159, f"Timeout exceeded: sending the result took more than "
                                                       f"{turn_s:g} s", "TIMEOUT_EXCEEDED")
                        yield compress(chunk)
                except Exception as exc:   # ClickHouse's way: the error's text after the rows sent
                    exc = self._unavailable(exc) or exc
                    message = str(exc)[str(exc).find("Code: "):] if "Code: " in str(exc) else str(exc)
                    yield compress(_exception_block(public_message(message), tag))
                yield flush()
            finally:
                if stream is not None:
                    stream.close()
                conn.close()
                done()
        headers = {"X-ClickHouse-Timezone": self.timezone(args), "X-ClickHouse-Query-Id": _query_id(args),
                   "X-ClickHouse-Summary": summary}
        if not command:   # ClickHouse names a format only for a statement that returns rows (clients tell by it)
            headers["X-ClickHouse-Format"] = fmt
            headers["X-ClickHouse-Exception-Tag"] = tag
        if args.get("send_progress_in_http_headers", "0") not in ("", "0"):   # one, at the end of a held result
            headers["X-ClickHouse-Progress"] = summary
        if encoding:
            headers["Content-Encoding"] = encoding[0]
        content_type = CONTENT_TYPES.get(fmt, "text/plain" if fmt.startswith(("Pretty", "Vertical", "Markdown"))
                                         else "application/octet-stream")
        return Response(body(), headers=headers, content_type=f"{content_type}; charset=UTF-8",
                        direct_passthrough=True)

    def insert(self, args: dict, lease: Lease, body: wire.Body, params: dict) -> Response:
        """An INSERT with data: the engine reads the data from the body's file as a server reads it from the
        request (`INSERT ... FROM INFILE`, placed before a SETTINGS clause)."""
        self.writes.note()
        target, settings = INSERT_SETTINGS.match(body.sql).group("target", "settings")   # type: ignore[union-attr]
        assert body.data is not None
        try:
            result = lease.query(f"{target} FROM INFILE '{body.data.name}'{settings or ''} FORMAT {body.format}",
                                 "TabSeparated", params=params)
        finally:
            lease.close()
            self.writes.note()   # again once done: a search that began while it ran keeps nothing
        headers = {"X-ClickHouse-Summary": _summary(result), "X-ClickHouse-Query-Id": _query_id(args),
                   "X-ClickHouse-Timezone": self.timezone(args)}
        return Response(b"", content_type="text/plain; charset=UTF-8", headers=headers)

    def timezone(self, args: dict) -> str:
        """The time zone a result's DateTimes are in, as ClickHouse says it (X-ClickHouse-Timezone): the
        request's session_timezone, else the engine's."""
        if args.get("session_timezone"):
            return str(args["session_timezone"])[:100]
        if self._timezone is None:
            conn = engine_session(self.uri, {}, None)
            try:
                self._timezone = conn.query("SELECT timezone()", "TabSeparated").bytes().decode().strip() or "UTC"
            finally:
                conn.close()
        return self._timezone or "UTC"


class ExternalData:
    """A request's external data (ClickHouse's HTTP interface: a multipart file per table, its columns in the
    URL as `<name>_structure=a UInt32, b String` or `<name>_types=UInt32,String`, its format as
    `<name>_format`, TabSeparated by default): temporary tables the query reads, made on its connection."""

    def __init__(self, tables: list[tuple[str, str, str, Any]], settings: set[str]):
        self.tables, self.settings = tables, settings

    def create(self, lease: Lease) -> None:
        for name, structure, fmt, storage in self.tables:
            lease.query(f"DROP TEMPORARY TABLE IF EXISTS {quote_identifier(name)}")
            lease.query(f"CREATE TEMPORARY TABLE {quote_identifier(name)} ({structure}) ENGINE = Memory")
            # for this request only, as on a server (a session keeps none of them)
            lease.cleanups.append(f"DROP TEMPORARY TABLE IF EXISTS {quote_identifier(name)}")
            with tempfile.NamedTemporaryFile(prefix="clipsearch-external-", suffix=".data") as f:
                storage.save(f)
                f.flush()
                lease.query(f"INSERT INTO {quote_identifier(name)} FROM INFILE '{f.name}' FORMAT {fmt}")


def external_tables(files: dict[str, Any], args: dict[str, str]) -> ExternalData:
    tables, settings = [], set()
    for name, storage in files.items():
        if not IDENTIFIER.match(name):
            raise ClickHouseError(36, f"external table name {name[:100]!r}: use letters, digits and _", "BAD_ARGUMENTS")
        structure, types = args.get(f"{name}_structure"), args.get(f"{name}_types")
        if types and not structure:
            structure = ", ".join(f"_{i} {t.strip()}" for i, t in enumerate(_split_types(types), 1))
        if not structure:
            raise ClickHouseError(36, f"Neither structure nor types have not been provided for external table "
                                      f"{name}. Use fields {name}_structure or {name}_types to do so.",
                                  "BAD_ARGUMENTS")
        if ";" in structure or "--" in structure or "/*" in structure:
            raise ClickHouseError(62, f"the structure of external table {name} is not a column list", "SYNTAX_ERROR")
        fmt = args.get(f"{name}_format") or "TabSeparated"
        if not IDENTIFIER.match(fmt):
            raise ClickHouseError(73, f"Unknown format {fmt[:100]}", "UNKNOWN_FORMAT")
        tables.append((name, structure, fmt, storage))
        settings |= {f"{name}_structure", f"{name}_types", f"{name}_format"}
    return ExternalData(tables, settings)


def _split_types(types: str) -> list[str]:
    """`UInt32,Array(String),Map(String, UInt8)` as its types: commas inside parentheses belong to a type."""
    out, depth, start = [], 0, 0
    for i, c in enumerate(types):
        depth += {"(": 1, ")": -1}.get(c, 0)
        if c == "," and depth == 0:
            out.append(types[start:i])
            start = i + 1
    return [*out, types[start:]]


def _summary(result: Any) -> str:
    """X-ClickHouse-Summary as ClickHouse writes it (every count a string), from a chdb result."""
    def count(name: str) -> str:
        try:
            return str(int(getattr(result, name)()))
        except Exception:
            return "0"
    elapsed = "0"
    try:
        elapsed = str(int(result.elapsed() * 1e9))
    except Exception:
        pass
    return json.dumps({"read_rows": count("rows_read"), "read_bytes": count("bytes_read"),
                       "written_rows": count("rows_written"), "written_bytes": count("bytes_written"),
                       "total_rows_to_read": "0", "result_rows": "0", "result_bytes": "0", "elapsed_ns": elapsed},
                      separators=(",", ":"))


def _with_insert(sql: str) -> bool:
    """`WITH ... INSERT INTO ...`: a command, not rows (the word outside string literals)."""
    return bool(re.match(r"^\s*WITH\b", sql, re.I)) and bool(
        re.search(r"\bINSERT\s+INTO\b", re.sub(r"'(?:[^'\\]|\\.)*'", "''", sql), re.I))


def _held(first: bytes, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The whole result read before its answer starts (a writer's request with wait_end_of_query=1, as
    clickhouse-connect sends for every query it does not stream): an error met on the way is then the answer's
    status, not text after rows. Kept in memory up to WAIT_BUFFER_BYTES, on disk beyond, as ClickHouse does."""
    spool = tempfile.SpooledTemporaryFile(max_size=WAIT_BUFFER_BYTES)
    try:
        spool.write(first)
        for chunk in chunks:
            spool.write(chunk)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise

    def read() -> Iterator[bytes]:
        with spool:
            yield from iter(lambda: spool.read(wire.CHUNK), b"")
    return read()


def _exception_block(message: str, tag: str) -> bytes:
    """An error after rows were sent, as ClickHouse (25.11 on) writes it, so that a client that knows the tag
    (X-ClickHouse-Exception-Tag) tells it from the rows; others see the message after them."""
    text = f"\n{message}\n"
    return f"__exception__\r\n{tag}\r\n{text}{len(text.encode())} {tag}\r\n__exception__\r\n".encode()


def _query_id(args: dict) -> str:
    """The client's query_id (sent back in a header), or a new one."""
    return args.get("query_id") or str(uuid.uuid4())


def _check_query_id(args: dict) -> None:
    """A query_id goes back in a response header: printable ASCII of a sane length only (a CR/LF in it would
    be a header of the sender's making)."""
    query_id = args.get("query_id") or ""
    if len(query_id) > 256 or not re.fullmatch(r"[\x21-\x7e]*", query_id):
        raise ClickHouseError(36, "query_id must be at most 256 printable ASCII characters without spaces",
                              "BAD_ARGUMENTS", 400)


def _code_of(message: str) -> tuple[int, str, str]:
    """(code, message, name) of a ClickHouse error text, for ClickHouseError."""
    found = re.search(r"Code: (\d+)\. DB::Exception: (.*?)(?: \((\w+)\))?\s*$", message.split("\n")[0])
    if not found:
        return 1000, message, "UNKNOWN"
    return int(found.group(1)), found.group(2), found.group(3) or "UNKNOWN"

