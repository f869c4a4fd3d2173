"""Many people searching at once (issue 37): `clipsearch serve` under 16 concurrent clients against the plain
alternative (bench/baseline_server.py: Flask + waitress, 8 threads, an LRU of encoded texts, numpy over every
vector in RAM), the same clients and requests, one after the other in the same run.

The traffic: texts drawn by a Zipf law (p ~ 1/rank) from 5,000 distinct texts (popular searches repeat, most
are rare, as in real logs), k = 10, the API's defaults otherwise (match=both). Two stores: 400 generated
images loaded by the loader, and the same with 200,000 more rows of the search benchmark's vectors (names
and words as the loader makes them) and the HNSW index. clipsearch runs with each of its levers
(LEVERS).
Every answer must be HTTP 200 with k results; anything else counts as an error.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

import clipsearch
from bench.common import ms_stats, search_url, write_images
from bench.search import table_vectors
from clipsearch.loader.load import rows_table
from clipsearch.models.clip import ClipModel
from clipsearch.service import shapes
from clipsearch.store.images import path_words

CLIENTS = 16
DISTINCT_TEXTS = 5000
K = 10
# clipsearch's levers, each run: name -> environment (CLIPSEARCH_SEARCH_CACHE: on = text vectors, rows and
# results reused, texts = text vectors and rows (not answers), off = nothing; CLIPSEARCH_READ_SESSIONS: engine
# sessions for searches)
LEVERS = {"clipsearch": {},
          "clipsearch, results not kept": {"CLIPSEARCH_SEARCH_CACHE": "texts"},
          "clipsearch, nothing kept": {"CLIPSEARCH_SEARCH_CACHE": "off"},
          "clipsearch, one read session": {"CLIPSEARCH_READ_SESSIONS": "1"}}
ADJECTIVES = ("small", "large", "bright", "dark", "old", "new", "shiny", "plain", "tiny", "huge", "pale", "vivid",
              "simple", "busy", "clean", "dusty", "soft", "sharp", "flat", "round", "tall", "short", "wide", "thin",
              "warm")


def texts(count: int = DISTINCT_TEXTS) -> list[str]:
    """`count` distinct query texts of the bundled model's world ("a bright red circle at 12")."""
    base = [shapes.query_text(c, s) for c in shapes.COLOURS for s in shapes.SHAPES]
    out = [f"{b.replace('a ', f'a {a} ', 1)} {n}" for n in range(100) for a in ADJECTIVES for b in base]
    return [*base, *out][:count]


def traffic(count: int, seed: int = 37) -> list[str]:
    """`count` requests' texts, drawn by Zipf (p ~ 1 / rank) from texts()."""
    pool = texts()
    p = 1.0 / np.arange(1, len(pool) + 1)
    rng = np.random.default_rng(seed)
    return [pool[i] for i in rng.choice(len(pool), size=count, p=p / p.sum())]


def wait_up(base: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(base + "/healthz", timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("server did not start")


def drive(base: str, requests: list[str]) -> dict:
    """`requests` sent by CLIENTS threads as fast as answered: searches/s, latency, errors."""
    work: queue.Queue = queue.Queue()
    for text in requests:
        work.put(text)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        while True:
            try:
                text = work.get_nowait()
            except queue.Empty:
                return
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(search_url(base, {"q": text, "k": K}), timeout=120) as res:
                    ok = res.status == 200 and len(json.load(res)["results"]) == K
                    problem = "" if ok else f"{res.status}: wrong count"
            except (OSError, ValueError) as exc:
                problem = str(exc)[:200]
            ms = (time.perf_counter() - start) * 1000
            with lock:
                latencies.append(ms)
                if problem:
                    errors.append(problem)

    # a warm-up search loads the model; it is not counted
    urllib.request.urlopen(search_url(base, {"q": "a red circle", "k": K}), timeout=300).read()
    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"searches": len(latencies), "per_s": round(len(latencies) / wall, 1), **ms_stats(latencies, "search"),
            "errors": len(errors), "error_examples": sorted(set(errors))[:3]}


def served(args: list[str], requests: list[str], env: dict[str, str] | None = None) -> dict:
    """`python -m ARGS... --port N` (a server answering /healthz and /api/search) driven with `requests`."""
    from scripts.screenshot import free_port
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", *args, "--port", str(port)], env=env,
                            cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_up(base, proc)
        return drive(base, requests)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


CLI_SEARCHES = 12   # texts searched one at a time by the CLI and over HTTP while the service runs


def cli_through_service(db: Path, texts: list[str]) -> dict:
    """`clipsearch search TEXT` while `clipsearch serve` holds `db` (the command finds the service and runs its
    statements over its ClickHouse port, the texts embedded by the service's model), against the same texts
    over the service's HTTP API one at a time and against the command's floor (`clipsearch --version`: the
    interpreter and the imports). Each text once per way: no answer is kept between them."""
    from scripts.screenshot import free_port
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "CLICKHOUSE_URL"}
    proc = subprocess.Popen([sys.executable, "-m", "clipsearch.service.cli", "serve", "--db", str(db), "--port",
                             str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cli = [sys.executable, "-m", "clipsearch.service.cli"]
    times: dict[str, list[float]] = {"api": [], "cli": [], "cli_start": []}
    try:
        base = f"http://127.0.0.1:{port}"
        wait_up(base, proc)
        urllib.request.urlopen(search_url(base, {"q": "a red circle", "k": K}), timeout=300).read()
        for i, text in enumerate(texts):
            for way in ("api", "cli", "cli_start"):
                start = time.perf_counter()
                if way == "api":
                    urllib.request.urlopen(search_url(base, {"q": f"{text} {i}", "k": K}), timeout=120).read()
                else:
                    args = ["--version"] if way == "cli_start" else ["search", f"{text} {i} cli", "--db", str(db),
                                                                      "--k", str(K), "--json"]
                    done = subprocess.run([*cli, *args], env=env, capture_output=True, timeout=120)
                    if done.returncode or (way == "cli" and len(json.loads(done.stdout)) != K):
                        raise SystemExit(f"clipsearch {' '.join(args)} failed: {done.stderr.decode()[-500:]}")
                times[way].append((time.perf_counter() - start) * 1000)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return {way: ms_stats(ms, "search") for way, ms in times.items()}


def run_clipsearch(db: Path, requests: list[str], lever: dict[str, str]) -> dict:
    env = {**os.environ, **lever}
    env.pop("CLICKHOUSE_URL", None)
    return served(["clipsearch.service.cli", "serve", "--db", str(db)], requests, env)


def run_baseline(vectors_file: Path, requests: list[str]) -> dict:
    return served(["bench.baseline_server", str(vectors_file)], requests)


def export(db: Path, model: ClipModel, out: Path) -> None:
    """The store's ids, paths and vectors, for the baseline to hold in RAM."""
    with clipsearch.open(db, model=model, log_searches=False) as photos:
        rows = photos.catalog.query("SELECT id, path, embedding FROM images")
    np.savez(out, ids=np.array([r["id"] for r in rows]), paths=np.array([r["path"] for r in rows]),
             vectors=np.array([r["embedding"] for r in rows], dtype=np.float32))


def stores(model: ClipModel, work: Path, images: int, extra_rows: int) -> list[tuple[str, Path]]:
    """(label, db): `images` loaded by the loader; the same plus `extra_rows` rows and the HNSW index."""
    folder = write_images(work / "throughput-images", images)[0].parent
    out = []
    for rows in (0, extra_rows) if extra_rows else (0,):
        db = work / f"db-throughput-{images + rows}"
        shutil.rmtree(db, ignore_errors=True)
        with clipsearch.open(db, model=model, log_searches=False) as photos:
            photos.load(str(folder), progress=False)
        out.append((f"{images + rows}" + (" (HNSW)" if rows else ""), db))
    if extra_rows:
        vectors = table_vectors(model, extra_rows, model.dim)
        with clipsearch.open(out[-1][1], model=model, log_searches=False) as photos:
            for lo in range(0, extra_rows, 25_000):
                meta = []
                for i in range(lo, min(extra_rows, lo + 25_000)):
                    path = f"/library/generated/{i:06d}.jpg"
                    meta.append({"id": f"{i:032x}", "path": path, "width": 256, "height": 256, "format": "JPEG",
                                 "file_size": 0, "taken_at": None, "camera": "", "orientation": 1,
                                 **path_words(path)})
                photos.catalog.images.insert(rows_table(meta, vectors[lo:lo + len(meta)], model.label, {}, {}))
            photos.catalog.owner_sql("OPTIMIZE TABLE images FINAL")
            photos.create_index()
    return out


def run(model: ClipModel, work: Path, images: int = 400, extra_rows: int = 200_000, requests: int = 1600) -> dict:
    sent = traffic(requests)
    out: dict = {"clients": CLIENTS, "distinct_texts": DISTINCT_TEXTS, "requests": requests,
                 "distinct_in_requests": len(set(sent)), "sizes": {}}
    for label, db in stores(model, work, images, extra_rows):
        vectors = work / f"{db.name}.npz"
        export(db, model, vectors)
        size: dict = {"baseline": run_baseline(vectors, sent)}
        for name, lever in LEVERS.items():
            size[name] = run_clipsearch(db, sent, lever)
            size[name]["vs_baseline_per_s"] = round(size[name]["per_s"] / size["baseline"]["per_s"], 2)
            size[name]["vs_baseline_p95"] = round(size[name]["search_p95_ms"] / size["baseline"]["search_p95_ms"], 2)
        out["sizes"][label] = size
        print("throughput", label, json.dumps(size), flush=True)
        out.setdefault("cli", {})[label] = cli_through_service(db, texts()[:CLI_SEARCHES])
        print("cli through the service", label, json.dumps(out["cli"][label]), flush=True)
    return out


def lines(t: dict) -> list[str]:
    out = [f"Many people searching at once: {t['clients']} clients, {t['requests']} searches of texts drawn by Zipf "
           f"from {t['distinct_texts']:,} ({t['distinct_in_requests']} distinct among them), through HTTP, p50 / p95 "
           "ms; the baseline is Flask + waitress (8 threads) + an LRU of 4,096 encoded texts + numpy over every "
           "vector:", "",
           "| rows | server | searches/s | p50 / p95 ms | errors | x baseline's searches/s | x baseline's p95 |",
           "|---|---|---|---|---|---|---|"]
    for size, servers in t["sizes"].items():
        for name, r in servers.items():
            out.append(f"| {size} | {name} | {r['per_s']} | {r['search_p50_ms']} / {r['search_p95_ms']} | "
                       f"{r['errors']} | {r.get('vs_baseline_per_s', 1.0)} | {r.get('vs_baseline_p95', 1.0)} |")
    if t.get("cli"):
        out += ["", f"One search at a time while `clipsearch serve` runs ({CLI_SEARCHES} texts, each once per way), "
                "p50 / p95 ms:", "",
                "| rows | the service's HTTP API | `clipsearch search TEXT` through the service | "
                "`clipsearch --version` (start and imports) |", "|---|---|---|---|"]
        for size, c in t["cli"].items():
            out.append(" | ".join([f"| {size}", *(f"{c[w]['search_p50_ms']} / {c[w]['search_p95_ms']}"
                                                for w in ("api", "cli", "cli_start"))]) + " |")
    return out + [""]
