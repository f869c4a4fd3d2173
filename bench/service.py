"""`clipsearch serve` on loopback under concurrent clients, against the same searches in-process."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import clipsearch
from bench.common import get, ms_stats, search_url, serve
from clipsearch.models.clip import ClipModel
from clipsearch.service import shapes


def run(db: Path, clients: int = 16, per_client: int = 50) -> dict:
    """Searches per second and latency over HTTP from `clients` threads; the same searches in one process."""
    queries = [shapes.query_text(c, s) for c in shapes.COLOURS for s in shapes.SHAPES]
    work = [queries[(i * 7 + j) % len(queries)] for i in range(clients) for j in range(per_client)]
    with serve(db) as (base, _):
        def fetch(q: str) -> tuple[bool, float]:
            t = time.perf_counter()
            with get(search_url(base, {"q": q, "k": 10})) as res:
                ok = res.status == 200 and len(json.load(res)["results"]) == 10
            return ok, (time.perf_counter() - t) * 1000

        fetch(queries[0])
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            out = list(pool.map(fetch, work))
        wall = time.perf_counter() - start
    with clipsearch.open(db, model=ClipModel()) as photos:  # logs its searches, as the service does
        photos.search(queries[0])
        start = time.perf_counter()
        for q in work:
            photos.search(q, k=10)
        in_process = time.perf_counter() - start
        images = photos.count()
    stats = ms_stats([ms for _, ms in out], "http")
    return {"clients": clients, "searches": len(work), "images": images, "errors": sum(not ok for ok, _ in out),
            "http_searches_per_s": round(len(work) / wall, 1), **stats,
            "in_process_searches_per_s": round(len(work) / in_process, 1),
            "in_process_ms_per_search": round(in_process / len(work) * 1000, 2)}
