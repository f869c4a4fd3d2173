"""Analysts' turns (FairShare: the port's and the page's SQL tab's), in order rather than in time: who
starts, who waits, who is refused. (Failed-login throttling: tests/test_request_gate.py.)"""
from __future__ import annotations

import threading
import time

import pytest

from clipsearch.analyst.turns import Busy, FairShare, Turn


def _start(share: FairShare, client: str, address: str, turns: list[Turn], door: str = "port") -> threading.Thread:
    thread = threading.Thread(target=lambda: turns.append(share.acquire(client, address, door)), daemon=True)
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
    with pytest.raises(Busy, match="Too many simultaneous"):   # its fifth waiter
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
    with pytest.raises(Busy, match="Too many simultaneous"):   # 8 in the port from that machine
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
    with pytest.raises(Busy, match="Waited"):   # the one place is taken
        share.acquire("analyst|other", "10.0.0.2", wait_s=0.2)
    stalled.end_turn()   # its time is up
    nxt = share.acquire("analyst|other", "10.0.0.2")
    assert share.inside == {"10.0.0.1": 1, "10.0.0.2": 1}   # the stalled request is still in the port
    stalled.leave()
    stalled.leave()   # once only
    nxt.leave()
    assert not share.inside and not share.running



def test_each_door_holds_at_most_its_own_threads():
    """The page's SQL tab (8 page threads, 2 kept for searches) and the port share the turns, but a burst on
    the page is refused at its own door's bound while port analysts still queue, and the reverse."""
    share = FairShare(total=1, per_client=1, address_requests=20, client_waiting=20, doors={"port": 3, "page": 2})
    running = share.acquire("analyst|a", "10.0.0.1")   # the port's analyst holds the one turn
    turns: list[Turn] = []
    waiters = [_start(share, f"page|{i}", f"10.0.1.{i}", turns, "page") for i in range(2)]
    _settle(share, 2)
    with pytest.raises(Busy, match="Too many simultaneous"):   # a third page request: not even a thread
        share.acquire("page|9", "10.0.1.9", "page")
    port_waiter = _start(share, "analyst|b", "10.0.0.2", turns)   # the port's door is not the page's
    _settle(share, 3)
    running.leave()
    _drain(turns, [*waiters, port_waiter])
    assert share.through == {} and share.inside == {} and share.most == 1
