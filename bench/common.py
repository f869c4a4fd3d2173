"""What the benchmark jobs share: generated image folders, a running `clipsearch serve`, percentiles."""
from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from clipsearch.service import shapes

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"            # databases and images; git ignores it
PHOTO_SIDES = (200, 640)        # generated images at photo-like sizes, so decoding costs what it costs


def write_images(folder: Path, count: int, seed: int = 2024) -> list[Path]:
    """`count` generated images (JPEG or PNG, 200-640 px) in a fresh `folder`, in file-name order."""
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(seed)
    specs = [shapes.random_spec(rng, dims_range=PHOTO_SIDES) for _ in range(count)]
    shapes.write_catalogue(folder, specs, seed + 1, manifest=None)
    return sorted(folder.iterdir())


@contextlib.contextmanager
def serve(db: Path) -> Iterator[tuple[str, int]]:
    """`clipsearch serve` on `db` on a free loopback port, for the block; yields (base URL, process id)."""
    from scripts.screenshot import free_port, start_server
    port = free_port()
    server = start_server(str(db), port)
    try:
        yield f"http://127.0.0.1:{port}", server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextlib.contextmanager
def serve_with_analysts(db: Path, password: str, log: Path | None = None) -> Iterator[tuple[str, int, dict]]:
    """`clipsearch serve` on `db` with its ClickHouse port and the analyst login (`password`) on, for the
    block; yields (the page's base URL, the SQL port, the environment a command of the block runs with)."""
    from scripts.screenshot import free_port
    port, sql_port = free_port(), free_port()
    env = {**os.environ, "CLIPSEARCH_ANALYST_PASSWORD": password}
    env.pop("CLICKHOUSE_URL", None)
    output = open(log, "w") if log else subprocess.DEVNULL
    server = subprocess.Popen([sys.executable, "-m", "clipsearch.service.cli", "serve", "--db", str(db), "--port",
                               str(port), "--sql-port", str(sql_port)], env=env, stdout=output,
                              stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        yield base, sql_port, env
    finally:
        server.terminate()
        server.wait(timeout=60)
        if log:
            output.close()


def search_url(base: str, params: dict) -> str:
    return f"{base}/api/search?" + urllib.parse.urlencode(params, doseq=True)


def get(url: str, timeout: float = 120) -> http.client.HTTPResponse:
    return urllib.request.urlopen(url, timeout=timeout)


def ms_stats(values: list[float], prefix: str) -> dict:
    """{prefix_p50_ms, prefix_p95_ms} of latencies in milliseconds."""
    return {f"{prefix}_p50_ms": round(float(np.median(values)), 1),
            f"{prefix}_p95_ms": round(float(np.percentile(values, 95)), 1)}
