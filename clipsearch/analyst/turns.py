"""Analysts' queries take turns: one FairShare per served store, which the ClickHouse port's analysts and the
page's SQL tab share (Collection.analyst_turns), so that neither can take the engine's cores or the other's
threads with a burst."""
from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict

from clipsearch.errors import ClipsearchError

# Requests of each door (where they come in) that may be inside at once, waiting or running: each holds one
# of that server's threads. The port has 24 and keeps 6 for the CLI, loads and the service's own requests; the
# page has 8 (waitress) and keeps 2 for its searches (2 running + 4 waiting also fits a dashboard's panels: a
# browser sends at most 6 at once).
DOORS = {"port": 18, "page": 6}


class Busy(ClipsearchError):
    """Every turn is taken and none came free in time (or too many wait already): try again shortly. The port
    answers it as ClickHouse does (Code 202), the page as 429; both with Retry-After."""
    http_status = 429
    retry_after_s = 2


class FairShare:
    """Analysts' queries take turns. At most `total` run at once and `per_client` of one client; when a place
    is free, the waiting query goes first whose address, then whose client, has fewest running, then the
    one that came first: a second analyst's query starts while a first one's burst waits. A client is a
    port login with its session_id (or address), or a page's address. A query's turn ends when its result is
    sent or its time is up (a client that stops reading keeps its thread, not its turn). Each request holds
    a thread of its door from arrival until its answer is sent: at most `client_waiting` of one client wait,
    and at most `address_requests` of one address and `doors[door]` of a door are inside at once; past that,
    or after the wait the caller gives, Busy."""

    def __init__(self, total: int = 2, per_client: int = 1, address_requests: int = 8, client_waiting: int = 4,
                 doors: dict[str, int] | None = None):
        self.total, self.per_client = total, per_client
        self.address_requests, self.client_waiting = address_requests, client_waiting
        self.doors = dict(doors or DOORS)
        self.running: dict[str, int] = defaultdict(int)        # by client; no entry at 0
        self.running_from: dict[str, int] = defaultdict(int)   # by address; no entry at 0
        self.inside: dict[str, int] = defaultdict(int)         # requests inside, by address; no entry at 0
        self.through: dict[str, int] = defaultdict(int)        # requests inside, by door; no entry at 0
        self.queue: list[tuple[int, str, str]] = []            # (ticket, client, address), in arrival order
        self.most = 0   # the most queries that ran at once (what a test of the bound reads)
        self.tickets = itertools.count()
        self.cond = threading.Condition()

    def now(self) -> int:
        """Queries running now."""
        with self.cond:
            return sum(self.running.values())

    def _next(self) -> tuple[int, str, str] | None:
        """The waiting query to start now, if a place is free."""
        if sum(self.running.values()) >= self.total:
            return None
        ready = [w for w in self.queue if self.running.get(w[1], 0) < self.per_client]
        return min(ready, key=lambda w: (self.running_from.get(w[2], 0), self.running.get(w[1], 0), w[0]),
                   default=None)

    @staticmethod
    def _add(counts: dict[str, int], key: str, n: int) -> None:
        counts[key] += n
        if not counts[key]:
            del counts[key]

    def acquire(self, client: str, address: str, door: str = "port", wait_s: float = 60.0) -> Turn:
        deadline = time.monotonic() + wait_s
        with self.cond:
            if self.through.get(door, 0) >= self.doors[door] or \
                    self.inside.get(address, 0) >= self.address_requests or \
                    sum(w[1] == client for w in self.queue) >= self.client_waiting:
                raise Busy("Too many simultaneous queries from analysts; try again shortly")
            me = (next(self.tickets), client, address)
            self.queue.append(me)
            self._add(self.inside, address, 1)
            self._add(self.through, door, 1)
            try:
                while self._next() != me:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise Busy(f"Waited {wait_s:g} s for a turn: too many simultaneous queries from analysts; "
                                   "try again shortly")
                    self.cond.wait(left)
                self._add(self.running, client, 1)
                self._add(self.running_from, address, 1)
                self.most = max(self.most, sum(self.running.values()))
            except BaseException:
                self._add(self.inside, address, -1)
                self._add(self.through, door, -1)
                raise
            finally:
                self.queue.remove(me)
                self.cond.notify_all()
        return Turn(self, client, address, door)

    def _end(self, turn: Turn, running: bool, inside: bool) -> None:
        with self.cond:
            if running:
                self._add(self.running, turn.client, -1)
                self._add(self.running_from, turn.address, -1)
            if inside:
                self._add(self.inside, turn.address, -1)
                self._add(self.through, turn.door, -1)
            self.cond.notify_all()


class Turn:
    """One analyst query's turn (FairShare.acquire): `end_turn` when its time is up, `leave` when its answer
    has been sent (which ends the turn too); each happens once, whichever thread asks. As a context manager:
    left on the way out."""

    def __init__(self, share: FairShare, client: str, address: str, door: str):
        self.share, self.client, self.address, self.door = share, client, address, door
        self._turn = self._inside = True
        self._lock = threading.Lock()

    def end_turn(self) -> None:
        with self._lock:
            turn, self._turn = self._turn, False
        if turn:
            self.share._end(self, True, False)

    def leave(self) -> None:
        with self._lock:
            turn, inside, self._turn, self._inside = self._turn, self._inside, False, False
        if turn or inside:
            self.share._end(self, turn, inside)

    def __enter__(self) -> Turn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.leave()
