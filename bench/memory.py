"""Peak resident memory of `clipsearch serve` answering searches and of `clipsearch load` adding images,
on the search benchmark's largest table; then what Python itself holds for the same work (tracemalloc)."""
from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import clipsearch
from bench.common import HERE, get, search_url, serve, write_images
from clipsearch.loader.load import load
from clipsearch.models.clip import ClipModel
from clipsearch.service import shapes
from clipsearch.store.catalog import Catalog

FILTERS = ([], ["sel_10=1"], ["sel_0_1=1"])   # unfiltered, 10% and 0.1% of rows, in turn


def peak_kib(pid: int) -> int:
    """A live process's peak resident memory so far (VmHWM), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return 0


def searches(count: int) -> list[tuple[str, list[str]]]:
    colours = list(shapes.COLOURS)
    return [(shapes.query_text(colours[i % 8], shapes.SHAPES[i % 5]), FILTERS[i % 3]) for i in range(count)]


def run(db: Path, work: Path, count: int = 40, images: int = 300) -> dict:
    """`count` searches and a load of `images` images into `db` (which keeps them), each twice: in their own
    process (peak RSS) and in this one (Python's peak)."""
    with Catalog.open(db) as catalog:
        rows, dims = catalog.query("SELECT count() AS n, max(length(embedding)) AS d FROM images")[0].values()
    with serve(db) as (base, pid):
        for q, filters in searches(count):
            with get(search_url(base, {"q": q, "k": 10, "filter": filters}), timeout=300) as res:
                res.read()
        serve_kib = peak_kib(pid)
    folder = work / "images-memory-cli"
    write_images(folder, images, seed=2025)
    loading = subprocess.Popen([sys.executable, "-m", "clipsearch.service.cli", "load", str(folder), "--db", str(db),
                                "--quiet"], cwd=HERE.parent)
    load_kib = 0
    while loading.poll() is None:  # the loader's own high-water mark (its decoding workers are other processes)
        load_kib = max(load_kib, peak_kib(loading.pid))
        time.sleep(0.05)
    out = {"rows": int(rows), "searches": count, "serve_mib": round(serve_kib / 1024),
           "loaded": images, "load_mib": round(load_kib / 1024), "load_exit": loading.returncode,
           "vectors_mib": round(int(rows) * int(dims) * 4 / 2**20)}
    # What Python itself holds (the rest of the resident memory is the ClickHouse engine in the process):
    # the same searches and another load, in this process, under tracemalloc.
    folder = work / "images-memory-traced"
    write_images(folder, images, seed=2026)
    with clipsearch.open(db, model=ClipModel(), log_searches=False) as photos:
        tracemalloc.start()
        for q, filters in searches(count):
            photos.search(q, k=10, filters=filters)
        out["serve_python_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.reset_peak()
        load(str(folder), photos.catalog, photos.model, progress=False)  # imported above: the import is not counted
        out["load_python_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
    return out
