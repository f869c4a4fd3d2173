"""The port's session registry (service/clickhouse_sessions.py) on stand-in connections: keyed by login and id,
one request at a time, closed after its timeout, at most MAX_SESSIONS per login, and a request's URL settings
and database undone after it unless its own SQL changed them."""
from __future__ import annotations

import json
import time

import pytest

from clipsearch.service import clickhouse_sessions as sessions
from clipsearch.service.clickhouse_wire import ClickHouseError


class FakeConnection:
    """Records what it runs; answers the state query from its own SET/USE."""

    def __init__(self) -> None:
        self.closed, self.ran = False, []
        self.state = {"$db": "default", "max_threads": "8"}

    def query(self, sql: str, fmt: str = "TabSeparated", params: dict | None = None):
        self.ran.append(sql)
        if sql.startswith("USE "):
            self.state["$db"] = sql[4:].strip("`")
        elif sql.startswith("SET "):
            name, _, value = sql[4:].partition(" = ")
            self.state[name] = value.strip("'")

        class Result:
            def bytes(inner) -> bytes:
                return json.dumps(self.state).encode()
        return Result()

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def registry():
    made: list[FakeConnection] = []

    def connect(settings, database):
        made.append(FakeConnection())
        return made[-1]
    return sessions.Sessions(connect), made


def test_sessions_are_per_login_and_id_and_locked_while_used(registry):
    reg, made = registry
    first = reg.lease("writer", {"session_id": "s"}, {}, {}, None)
    with pytest.raises(ClickHouseError, match="SESSION_IS_LOCKED"):
        reg.lease("writer", {"session_id": "s"}, {}, {}, None)
    other = reg.lease("someone", {"session_id": "s"}, {}, {}, None)   # another login: another session
    assert other.conn is not first.conn
    first.close()
    again = reg.lease("writer", {"session_id": "s"}, {}, {}, None)
    assert again.conn is first.conn and not first.conn.closed
    again.close()
    other.close()
    plain = reg.lease("writer", {}, {}, {}, None)   # no session: a connection of its own, closed after
    plain.close()
    assert made[-1].closed


def test_sessions_time_out_and_session_check(registry):
    reg, made = registry
    reg.lease("writer", {"session_id": "t", "session_timeout": "0"}, {}, {}, None).close()
    time.sleep(0.01)
    with pytest.raises(ClickHouseError, match="SESSION_NOT_FOUND"):
        reg.lease("writer", {"session_id": "t", "session_check": "1"}, {}, {}, None)
    assert made[0].closed
    with pytest.raises(ClickHouseError, match="INVALID_SESSION_TIMEOUT"):
        reg.lease("writer", {"session_id": "u", "session_timeout": "99999"}, {}, {}, None)
    with pytest.raises(ClickHouseError, match="session_id"):
        reg.lease("writer", {"session_id": "a b"}, {}, {}, None)


def test_at_most_max_sessions_per_login(registry, monkeypatch):
    monkeypatch.setattr(sessions, "MAX_SESSIONS", 2)
    reg, made = registry
    for name in ("a", "b", "c"):
        reg.lease("writer", {"session_id": name}, {}, {}, None).close()
    assert [c.closed for c in made] == [True, False, False]   # the longest idle one went
    busy = [reg.lease("writer", {"session_id": n}, {}, {}, None) for n in ("b", "c")]
    with pytest.raises(ClickHouseError, match="TOO_MANY"):
        reg.lease("writer", {"session_id": "d"}, {}, {}, None)
    for lease in busy:
        lease.close()


def test_url_settings_and_database_hold_for_their_request_only(registry):
    reg, made = registry
    lease = reg.lease("writer", {"session_id": "s"}, {}, {"max_threads": 2}, "other")
    assert lease.conn.state == {"$db": "other", "max_threads": "2"}
    lease.close()
    assert made[0].state == {"$db": "default", "max_threads": "8"}
    # the request's own SET wins over its URL setting
    lease = reg.lease("writer", {"session_id": "s"}, {}, {"max_threads": 2}, None)
    lease.conn.query("SET max_threads = 5")
    lease.close()
    assert made[0].state["max_threads"] == "5"
