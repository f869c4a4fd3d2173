"""Turns on the analyst port (FairShare) and failed-login throttling, in order rather than in time: who
starts, who waits, who is refused."""
from __future__ import annotations

import threading
import time

import pytest

from clipsearch.service.clickhouse_http import ClickHouseError, FairShare, LoginThrottle


def _start(share: FairShare, client: str, address: str) -> threading.Thread:
    thread = threading.Thread(target=share.acquire, args=(client, address), daemon=True)
    thread.start()
    return thread


def _settle(share: FairShare, queued: int) -> None:
    deadline = time.monotonic() + 10
    while len(share.queue) != queued:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _drain(share: FairShare, address: str, waiters: list[threading.Thread]) -> None:
    """Let every waiter run and finish."""
    while share.queue or share.running:
        for client in list(share.running):
            share.release(client, address)
        time.sleep(0.01)
    for waiter in waiters:
        waiter.join(timeout=10)


def test_a_burst_from_one_session_leaves_a_place_for_another_client():
    share = FairShare(total=2, per_client=1, client_waiting=4)
    share.acquire("analyst|notebook", "10.0.0.1")
    waiters = [_start(share, "analyst|notebook", "10.0.0.1") for _ in range(4)]
    _settle(share, 4)
    with pytest.raises(ClickHouseError, match="Too many simultaneous"):   # its fifth waiter
        share.acquire("analyst|notebook", "10.0.0.1")
    share.acquire("analyst|other", "10.0.0.1")   # returns at once: the second place is free
    assert dict(share.running) == {"analyst|notebook": 1, "analyst|other": 1}
    _drain(share, "10.0.0.1", waiters)


def test_the_address_with_fewest_running_goes_first_and_a_full_address_is_refused():
    share = FairShare(total=2, per_client=1, address_waiting=8, client_waiting=4)
    share.acquire("analyst|a0", "10.0.0.1")
    share.acquire("analyst|a1", "10.0.0.1")
    waiters = [_start(share, f"analyst|a{i}", "10.0.0.1") for i in range(2, 10)]
    _settle(share, 8)
    with pytest.raises(ClickHouseError, match="Too many simultaneous"):   # 8 wait from that machine
        share.acquire("analyst|a10", "10.0.0.1")
    other = _start(share, "analyst|b", "10.0.0.2")   # another machine: queued after all of them
    _settle(share, 9)
    share.release("analyst|a0", "10.0.0.1")
    other.join(timeout=10)
    assert not other.is_alive() and share.running["analyst|b"] == 1 and len(share.queue) == 8
    share.release("analyst|b", "10.0.0.2")
    _drain(share, "10.0.0.1", waiters)


def test_failed_logins_block_an_address_for_a_window():
    throttle = LoginThrottle(limit=3, window_s=0.5)
    for _ in range(3):
        assert throttle.blocked_for("10.0.0.1") == 0
        throttle.failed("10.0.0.1")
    assert throttle.blocked_for("10.0.0.1") > 0 and throttle.blocked_for("10.0.0.2") == 0
    time.sleep(0.6)
    assert throttle.blocked_for("10.0.0.1") == 0
