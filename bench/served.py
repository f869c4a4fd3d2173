"""Everyone at once on one served folder: search latency while `clipsearch load` adds images through the
running service, and while an analyst runs full scans on the ClickHouse HTTP port, against idle."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import clickhouse_connect

import clipsearch
from bench.common import get, ms_stats, search_url, serve_with_analysts, write_images
from clipsearch.models.clip import ClipModel
from clipsearch.service import shapes

PASSWORD = "bench-analyst"
FULL_SCAN = "SELECT sum(arraySum(embedding)) FROM images"   # reads every vector


def _searches(base: str, stop: threading.Event | None = None, count: int = 60) -> list[float]:
    """Sequential text searches over HTTP: a fixed `count`, or until `stop` is set."""
    queries = [shapes.query_text(c, s) for c in shapes.COLOURS for s in shapes.SHAPES]
    out: list[float] = []
    while (len(out) < count) if stop is None else not stop.is_set():
        t = time.perf_counter()
        with get(search_url(base, {"q": queries[len(out) % len(queries)], "k": 10})) as res:
            assert res.status == 200 and len(json.load(res)["results"]) == 10
        out.append((time.perf_counter() - t) * 1000)
    return out


def run(work: Path, base_images: int = 2000, load_images: int = 10_000) -> dict:
    db = work / "db-served"
    subprocess.run(["rm", "-rf", str(db)], check=True)
    base_paths = write_images(work / "served-base", base_images, seed=31)
    new_folder = work / "served-new"
    write_images(new_folder, load_images, seed=32)
    with clipsearch.open(db, model=ClipModel(), log_searches=False) as photos:
        photos.load(base_paths[0].parent)
    with serve_with_analysts(db, PASSWORD) as (base, sql_port, env):
        _searches(base, count=5)  # warm
        idle = _searches(base)
        start = time.perf_counter()
        loading = subprocess.Popen([sys.executable, "-m", "clipsearch.service.cli", "load", str(new_folder), "--db",
                                    str(db), "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        stop = threading.Event()
        during: list[float] = []
        searcher = threading.Thread(target=lambda: during.extend(_searches(base, stop)))
        searcher.start()
        out, err = loading.communicate()
        load_s = time.perf_counter() - start
        stop.set()
        searcher.join()
        assert loading.returncode == 0, err
        images = json.load(urllib.request.urlopen(base + "/healthz"))["images"]
        analyst = clickhouse_connect.get_client(host="127.0.0.1", port=sql_port, username="analyst",
                                                password=PASSWORD)
        scans: list[float] = []
        stop = threading.Event()

        def scan() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                analyst.query(FULL_SCAN)
                scans.append((time.perf_counter() - t) * 1000)
        scanner = threading.Thread(target=scan)
        scanner.start()
        while not scans:
            time.sleep(0.05)
        during_scan = _searches(base)
        stop.set()
        scanner.join()
        analyst.close()
    idle_stats, load_stats, scan_stats = ms_stats(idle, "idle"), ms_stats(during, "during_load"), \
        ms_stats(during_scan, "during_scan")
    return {"base_images": base_images, "loaded": load_images, "images_after": images, "load_s": round(load_s, 1),
            "load_images_per_s": round(load_images / load_s, 1), "load_summary": out.strip().splitlines()[-1],
            **idle_stats, **load_stats, "searches_during_load": len(during),
            "load_ratio_p50": round(load_stats["during_load_p50_ms"] / idle_stats["idle_p50_ms"], 2),
            **scan_stats, "analyst_scan_p50_ms": ms_stats(scans, "scan")["scan_p50_ms"],
            "scan_ratio_p50": round(scan_stats["during_scan_p50_ms"] / idle_stats["idle_p50_ms"], 2)}
