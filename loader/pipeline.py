"""The batch pipeline of `load`, `reembed` and `hashes`: worker processes read and decode files, the main
process stores their results a batch at a time.

Workers are forked: they start at once with what the parent set up inherited (spawned ones spend seconds
importing torch). That is safe because a worker's function only reads files and runs Pillow and numpy,
never a torch op or the parent's ClickHouse engine. Up to PREFETCH_BATCHES batches are read ahead of the
one being stored, which bounds memory and keeps the workers busy while the main process encodes and
writes. Ctrl-C is the main process's alone: the batches stored so far stay, the workers go, and a run
again goes on from there (each tool finds what is left to do).
"""
from __future__ import annotations

import multiprocessing
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

PREFETCH_BATCHES = 3  # batches decoded ahead of the one being stored


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """The run's tqdm bar on stderr (its `write` prints a line above it)."""
    from tqdm import tqdm
    return tqdm(total=total, unit="img", desc=desc, disable=not enabled, file=sys.stderr)


def _start_worker(setup: Callable[..., None], args: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    setup(*args)


def _nothing(*args: Any) -> None:
    pass


class _InProcess:
    """The pool's calls, run in this process: for `workers=0` (a server's watcher, whose threads make forking
    unwise, and whose files arrive a few at a time)."""

    def map_async(self, fn: Callable, items: list, chunksize: int = 1) -> Any:
        results = [fn(item) for item in items]
        return type("Done", (), {"get": lambda self: results})()

    def terminate(self) -> None:
        pass


def _stop(pool: Any, wait_s: float = 10.0) -> None:
    """Pool.terminate(), waited for at most `wait_s`: after Ctrl-C it has been seen to block for good in
    joining the pool's task thread (stuck on the task queue's lock), and an interrupted run must exit.
    The workers are daemons, so they go with this process either way."""
    stopper = threading.Thread(target=pool.terminate, name="clipsearch-pool-stop", daemon=True)
    stopper.start()
    stopper.join(wait_s)


def batches(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """`items` in lists of `size` (the last one shorter), read from `items` only as they are needed."""
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run(items: Iterable[Item], work: Callable[[Item], Result], store: Callable[[list[Result]], None], *,
        batch_size: int, workers: int, setup: Callable[..., None] = _nothing, setup_args: tuple = (),
        bar: Any = None) -> None:
    """work(item) for every item in `workers` processes (0: here), then store(results) here, a batch at a
    time, in the items' order; `bar` (progress_bar) advances by each batch stored.

    `work` is a module-level function; `setup(*setup_args)` runs first in each worker (and here for
    workers=0) to give it what it needs (e.g. the model's image transform, in a module global). `items`
    is read here, lazily (a generator may read pages from the store)."""
    pool: Any
    if workers:
        context = multiprocessing.get_context("fork")
        pool = context.Pool(workers, initializer=_start_worker, initargs=(setup, setup_args))
    else:
        setup(*setup_args)
        pool = _InProcess()
    try:
        pending: deque = deque()
        queue = batches(items, batch_size)
        chunksize = max(1, batch_size // (max(workers, 1) * 2))
        while True:
            while len(pending) < PREFETCH_BATCHES and (batch := next(queue, None)) is not None:
                pending.append(pool.map_async(work, batch, chunksize))
            if not pending:
                break
            results = pending.popleft().get()
            store(results)
            if bar is not None:
                bar.update(len(results))
    finally:
        _stop(pool)
