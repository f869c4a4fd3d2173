"""Sessions of ClickHouse's HTTP interface (`session_id`) on the embedded engine, for service/clickhouse_http.py.

A chdb connection is an engine session of its own (its temporary tables, SET settings and current database are
its alone), so a session is one connection kept open between requests, as ClickHouse keeps a session:
- keyed by the login and the client's `session_id`: no client or login reaches another's;
- until `session_timeout` seconds (default 60, at most 3600) after its last request ends;
- `session_check=1` asks for an existing session (Code 372, SESSION_NOT_FOUND, if there is none);
- one request at a time: a second while one runs is Code 373, SESSION_IS_LOCKED;
- at most MAX_SESSIONS per login open at once (then the oldest idle one is closed).
Settings and `database` in a request's URL hold for that request only (ClickHouse's query context); what a
`SET` or `USE` in the SQL changes stays for the session.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from clipsearch.service.clickhouse_wire import ClickHouseError
from clipsearch.store.connection import IDENTIFIER, quote_identifier, set_statement

DEFAULT_TIMEOUT_S = 60
MAX_TIMEOUT_S = 3600
MAX_SESSIONS = 64


class Session:
    def __init__(self, conn: Any, timeout_s: float):
        self.conn, self.timeout_s = conn, timeout_s
        self.expires = time.monotonic() + timeout_s
        self.busy = False


class Lease:
    """A connection for one request: the session's (released, not closed, by close()) with the request's own
    URL settings and database undone, or a connection of its own (closed)."""

    def __init__(self, conn: Any, release: Callable[[], None]):
        self.conn, self._release, self._done = conn, release, False
        self.cleanups: list[str] = []   # statements to run before release (the request's external tables)

    def query(self, sql: str, fmt: str = "TabSeparated", params: dict | None = None) -> Any:
        return self.conn.query(sql, fmt, params=params)

    def send_query(self, sql: str, fmt: str = "TabSeparated", params: dict | None = None) -> Any:
        return self.conn.send_query(sql, fmt, params=params)

    def close(self) -> None:
        if not self._done:
            self._done = True
            try:
                for statement in self.cleanups:
                    self.conn.query(statement)
            finally:
                self._release()


class Sessions:
    """The open sessions of one port; `connect(settings, database)` opens an engine connection."""

    def __init__(self, connect: Callable[[dict[str, Any], str | None], Any]):
        self.connect = connect
        self.open: dict[tuple[str, str], Session] = {}
        self.lock = threading.Lock()

    def lease(self, login: str, args: dict[str, str], defaults: dict[str, Any], settings: dict[str, Any],
              database: str | None) -> Lease:
        """The connection for a request with URL `args`: the session's when it names one, else its own. A new
        session starts with `defaults`; `settings` and `database` are the request's own."""
        session_id = args.get("session_id") or ""
        with self.lock:   # sessions past their timeout are closed by whatever request comes next
            self._expire()
        if not session_id:
            conn = self.connect({**defaults, **settings}, database)
            return Lease(conn, conn.close)
        if len(session_id) > 256 or not re.fullmatch(r"[\x21-\x7e]+", session_id):
            raise ClickHouseError(36, "session_id must be at most 256 printable ASCII characters", "BAD_ARGUMENTS")
        timeout = _timeout(args.get("session_timeout"))
        key = (login, session_id)
        with self.lock:
            session = self.open.get(key)
            if session is None:
                if args.get("session_check", "0") not in ("", "0"):
                    raise ClickHouseError(372, f"Session {session_id} not found", "SESSION_NOT_FOUND")
                if sum(1 for name, _ in self.open if name == login) >= MAX_SESSIONS:
                    self._close_oldest(login)
                session = self.open[key] = Session(None, timeout)
            elif session.busy:
                raise ClickHouseError(373, f"Session {session_id} is locked by a concurrent client",
                                      "SESSION_IS_LOCKED")
            session.busy, session.timeout_s = True, timeout
        try:
            if session.conn is None:
                session.conn = self.connect(defaults, None)
            restore = _apply(session.conn, settings, database)
        except BaseException:
            self._release(key, session)
            raise

        def release() -> None:
            try:
                restore()
            except Exception:   # a session whose state cannot be put back is closed rather than kept wrong
                session.conn.close()
                with self.lock:
                    self.open.pop(key, None)
            self._release(key, session)
        return Lease(session.conn, release)

    def _release(self, key: tuple[str, str], session: Session) -> None:
        with self.lock:
            session.busy = False
            session.expires = time.monotonic() + session.timeout_s
            if session.conn is None:
                self.open.pop(key, None)

    def _expire(self) -> None:
        now = time.monotonic()
        for key, session in list(self.open.items()):
            if not session.busy and session.expires < now:
                self._drop(key)

    def _close_oldest(self, login: str) -> None:
        idle = [(s.expires, key) for key, s in self.open.items() if key[0] == login and not s.busy]
        if not idle:
            raise ClickHouseError(202, f"too many sessions of {login} are running queries",
                                  "TOO_MANY_SIMULTANEOUS_QUERIES")
        self._drop(min(idle)[1])

    def _drop(self, key: tuple[str, str]) -> None:
        session = self.open.pop(key)
        if session.conn is not None:
            session.conn.close()

    def close(self) -> None:
        with self.lock:
            for key in list(self.open):
                self._drop(key)


def _timeout(value: str | None) -> int:
    if value in (None, ""):
        return DEFAULT_TIMEOUT_S
    if not re.fullmatch(r"\d{1,9}", value) or int(value) > MAX_TIMEOUT_S:
        raise ClickHouseError(374, f"Session timeout '{value[:20]}' is larger than max_session_timeout: "
                                   f"{MAX_TIMEOUT_S}", "INVALID_SESSION_TIMEOUT")
    return int(value)


def _apply(conn: Any, settings: dict[str, Any], database: str | None) -> Callable[[], None]:
    """SET a request's URL settings and USE its database on a session's connection; what undoes them after the
    request, except where its own SQL changed them (a `SET` or `USE` in it holds for the session, as on a
    server, where URL settings go to the query's context and SET and USE to the session's)."""
    if not settings and not database:
        return lambda: None
    names = [name for name in settings if IDENTIFIER.match(name)]
    state = ("SELECT currentDatabase() AS `$db`"
             + "".join(f", toString(getSetting('{name}')) AS `{name}`" for name in names))

    def read() -> dict[str, str]:
        return json.loads(conn.query(state, "JSONEachRow").bytes())
    old = read()
    applied: dict[str, str] = dict(old)

    def restore() -> None:
        now = read()
        for name in names:
            if now[name] == applied[name]:
                conn.query(f"SET {name} = {_literal(old[name])}")
        if database and now["$db"] == applied["$db"]:
            conn.query(f"USE {quote_identifier(old['$db'])}")
    try:
        if database:
            conn.query(f"USE {quote_identifier(database)}")
        for name, value in settings.items():
            conn.query(set_statement(name, value))
        applied = read()
    except BaseException:
        restore()
        raise
    return restore


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
