"""Turns on the analyst port (FairShare), in order rather than in time: who starts, who waits, who is
refused. (Failed-login throttling: tests/test_request_gate.py.)"""
from __future__ import annotations

import threading
import time

import pytest

from clipsearch.service.clickhouse_http import ClickHouseError, FairShare, Turn


def _start(share: FairShare, client: str, address: str, turns: list[Turn]) -> threading.Thread:
    thread = threading.Thread(target=lambda: turns.append(share.acquire(client, address)), daemon=True)
    thread.start()
    return thread


def _settle(share: FairShare, queued: int) -> None:
    deadline = time.monotonic() + 10
    while len(share.queue) != queued:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _drain(turns: list[Turn], waiters: list[threading.Thread]) -> None:
    """Let every waiter run and finish."""
    while any(w.is_alive() for w in waiters) or turns:
        while turns:
            turns.pop().leave()
        time.sleep(0.01)


def test_a_burst_from_one_session_leaves_a_place_for_another_client():
    share = FairShare(total=2, per_client=1, client_waiting=4)
    turns = [share.acquire("analyst|notebook", "10.0.0.1")]
    waiters = [_start(share, "analyst|notebook", "10.0.0.1", turns) for _ in range(4)]
    _settle(share, 4)
    with pytest.raises(ClickHouseError, match="Too many simultaneous"):   # its fifth waiter
        share.acquire("analyst|notebook", "10.0.0.1")
    other = share.acquire("analyst|other", "10.0.0.1")   # returns at once: the second place is free
    assert dict(share.running) == {"analyst|notebook": 1, "analyst|other": 1}
    other.leave()
    _drain(turns, waiters)
    assert not share.running and not share.inside and not share.queue


def test_the_address_with_fewest_running_goes_first_and_a_full_address_is_refused():
    share = FairShare(total=2, per_client=1, address_requests=8, client_waiting=4)
    first = [share.acquire("analyst|a0", "10.0.0.1"), share.acquire("analyst|a1", "10.0.0.1")]
    turns: list[Turn] = []
    waiters = [_start(share, f"analyst|a{i}", "10.0.0.1", turns) for i in range(2, 8)]
    _settle(share, 6)
    with pytest.raises(ClickHouseError, match="Too many simultaneous"):   # 8 in the port from that machine
        share.acquire("analyst|a9", "10.0.0.1")
    mine: list[Turn] = []
    other = _start(share, "analyst|b", "10.0.0.2", mine)   # another machine: queued after all of them
    _settle(share, 7)
    first[0].leave()
    other.join(timeout=10)
    assert not other.is_alive() and share.running["analyst|b"] == 1 and len(share.queue) == 6
    mine[0].leave()
    first[1].leave()
    _drain(turns, waiters)


def test_a_turn_ends_when_its_time_is_up_though_its_answer_is_still_being_sent():
    """A client that stops reading keeps its request (a thread) but not its turn."""
    share = FairShare(total=1, per_client=1, address_requests=2)
    stalled = share.acquire("analyst|slow-reader", "10.0.0.1")
    with pytest.raises(ClickHouseError, match="Waited"):   # the one place is taken
        share.wait_s = 0.2
        share.acquire("analyst|other", "10.0.0.2")
    share.wait_s = 10
    stalled.end_turn()   # its time is up
    nxt = share.acquire("analyst|other", "10.0.0.2")
    assert share.inside == {"10.0.0.1": 1, "10.0.0.2": 1}   # the stalled request is still in the port
    stalled.leave()
    stalled.leave()   # once only
    nxt.leave()
    assert not share.inside and not share.running

