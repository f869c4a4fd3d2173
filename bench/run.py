"""Benchmarks, each against a baseline measured in the same run.

    python bench/run.py [--images 3000] [--vectors 100000,1000000] [--duplicates 20000,100000]
                        [--skip-vit] [--only loader,service,search,duplicates]

1. Loader throughput (decode in workers + encode + insert) against the
   model's raw encode speed on the same images, already decoded: the bundled
   model, and ViT-B-32 with random weights as a stand-in for a real CLIP.
2. `clipsearch serve` under 16 concurrent clients against the same searches
   in-process.
3. Search over clustered 512-d vectors: the exact cosineDistance scan and
   the HNSW index against numpy brute force on the same vectors (latency,
   recall@10, index build time).
4. The near-duplicate scan on clustered vectors with planted copies: time,
   planted pairs found, and recall against an exact all-pairs numpy scan.

Writes bench/results.json and bench/results.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clipsearch.loader.load import load

from clipsearch import synthetic as shapes
from clipsearch.catalog import Catalog
from clipsearch.model import ClipModel, open_image
from clipsearch.query import QueryVector, parse_filter, search_sql
from clipsearch.search import POSTFILTER_SAFETY, Searcher

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dataset import SELECTIVITY, encode_generated, insert, perturbed, selectivity_columns  # noqa: E402

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"


def make_images(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(2024)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        spec, data = shapes.make_image(rng, dims_range=(200, 640))
        path = folder / f"{i:06d}.{'jpg' if spec.image_format == 'JPEG' else 'png'}"
        path.write_bytes(data)
        paths.append(path)
    return paths


def bench_loader(model: ClipModel, paths: list[Path], label: str, db: Path) -> dict:
    import torch
    start = time.perf_counter()
    tensors = torch.stack([model.image_tensor(open_image(p, model.image_size)) for p in paths])
    decode = len(paths) / (time.perf_counter() - start)
    model.encode_tensors(tensors[:64])  # warm up
    start = time.perf_counter()
    for i in range(0, len(tensors), 64):
        model.encode_tensors(tensors[i:i + 64])
    raw = len(paths) / (time.perf_counter() - start)
    shutil.rmtree(db, ignore_errors=True)
    with Catalog.open(db) as store:
        start = time.perf_counter()
        summary = load(str(paths[0].parent), store, model, progress=False)
        wall = time.perf_counter() - start
    assert summary.loaded == len(paths), summary.line()
    loader = len(paths) / wall
    return {"model": label, "images": len(paths), "raw_encode_images_per_s": round(raw, 1),
            "decode_one_process_images_per_s": round(decode, 1),
            "loader_images_per_s": round(loader, 1), "loader_vs_raw": round(loader / raw, 3)}


def bench_service(db: Path, clients: int = 16, per_client: int = 50) -> dict:
    """`clipsearch serve` on loopback under concurrent clients, against the same searches in-process."""
    import urllib.parse
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    sys.path.insert(0, str(HERE.parent / "scripts"))
    from screenshot import free_port, start_server

    queries = [f"a {c} {s}" for c in shapes.COLOURS for s in shapes.SHAPES]
    work = [queries[(i * 7 + j) % len(queries)] for i in range(clients) for j in range(per_client)]
    port = free_port()
    server = start_server(str(db), port)

    def fetch(q):
        t = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/search?" + urllib.parse.urlencode(
                {"q": q, "k": 10}), timeout=120) as res:
            ok = res.status == 200 and len(json.load(res)["results"]) == 10
        return ok, (time.perf_counter() - t) * 1000

    try:
        fetch(queries[0])
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            out = list(pool.map(fetch, work))
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies = [ms for _, ms in out]
    model = ClipModel()
    with Catalog.open(db) as store:
        searcher = Searcher(store, lambda: model)
        searcher.search(queries[0])
        start = time.perf_counter()
        for q in work:
            searcher.search(q, k=10)
        in_process = time.perf_counter() - start
    return {"clients": clients, "searches": len(work), "errors": sum(not ok for ok, _ in out),
            "http_searches_per_s": round(len(work) / wall, 1), "http_p50_ms": round(float(np.median(latencies)), 1),
            "http_p95_ms": round(float(np.percentile(latencies, 95)), 1),
            "in_process_searches_per_s": round(len(work) / in_process, 1),
            "in_process_ms_per_search": round(in_process / len(work) * 1000, 2)}


def clustered_vectors(count: int, dim: int, seed: int = 7) -> np.ndarray:
    """Unit vectors in 1,000 clusters of varied spread: CLIP embeddings are clustered, not uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    spread = rng.uniform(0.3, 0.8, 1000).astype(np.float32)
    vectors = np.empty((count, dim), np.float32)
    for lo in range(0, count, 100_000):
        hi = min(count, lo + 100_000)
        which = rng.integers(0, 1000, hi - lo)
        block = centres[which] + spread[which, None] * rng.standard_normal((hi - lo, dim), dtype=np.float32)
        vectors[lo:hi] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return vectors


FILTERS = {"none": None, "50%": "sel_50", "10%": "sel_10", "1%": "sel_1", "0.1%": "sel_0_1"}


def _query_vectors(model: ClipModel) -> np.ndarray:
    """20 text queries ("a red circle", ...) and 20 images none of the rows were made from."""
    texts = [shapes.query_text(c, s) for c in shapes.COLOURS for s in shapes.SHAPES][::2]
    return np.concatenate([model.encode_texts(texts), encode_generated(model, 20, seed=999)])


def _measure(searcher, state: dict, vectors: np.ndarray, mask, queries: np.ndarray, strategy: str | None,
             multiplier: float = 1.0) -> dict:
    """p50/p95 of one strategy (None: the one the service picks) against numpy brute force over all
    vectors with the same filter, recall@10 against numpy's exact top-10, and k-row completeness."""
    filters = [parse_filter(f"{mask}=1")] if mask else []
    keep = None if mask is None else state["masks"][mask]
    sql_ms, numpy_ms, recall, complete, ran = [], [], [], [], set()
    for q in queries:
        parts = [QueryVector(vector=q)]
        start = time.perf_counter()
        if strategy is None:
            rows, _, _, name = searcher.rank(state, parts, filters, 10)
        else:
            sql, params = search_sql(state["columns"], filters, 10, parts, strategy, multiplier)
            rows, name = searcher.store.query(sql, params), strategy
        sql_ms.append((time.perf_counter() - start) * 1000)
        ran.add(name.split(" (")[0] if strategy is None else name)
        start = time.perf_counter()
        scores = vectors @ q
        if keep is not None:
            scores[~keep] = -np.inf
        top = np.argpartition(-scores, 10)[:10]
        numpy_ms.append((time.perf_counter() - start) * 1000)
        recall.append(len({r["id"] for r in rows} & {f"{i:032x}" for i in top}) / 10)
        complete.append(len(rows) == 10)
    return {"sql_p50_ms": round(float(np.median(sql_ms)), 1), "sql_p95_ms": round(float(np.percentile(sql_ms, 95)), 1),
            "numpy_p50_ms": round(float(np.median(numpy_ms)), 1), "recall_at_10": round(float(np.mean(recall)), 3),
            "k_rows_share": float(np.mean(complete)), "ran": "+".join(sorted(ran))}


def bench_search(count: int, model: ClipModel) -> dict:
    """Strategies side by side on the catalogue-like table of bench/dataset.py, per filter selectivity."""
    db = WORK / f"db-search-{count}"
    shutil.rmtree(db, ignore_errors=True)
    queries = _query_vectors(model)
    out = {"rows": count, "dim": model.encode_texts(["x"]).shape[1], "cases": []}
    with Catalog.open(db) as store:
        vectors = perturbed(encode_generated(model, 4000, 5), count, 6)  # what fill(store, model, count) makes
        start = time.perf_counter()
        insert(store, vectors, model.label)
        out["insert_rows_per_s"] = round(count / (time.perf_counter() - start))
        store.command("OPTIMIZE TABLE images FINAL")
        columns = selectivity_columns(count, 5 + 2)
        masks = {name: columns[name].astype(bool) for name in SELECTIVITY}
        searcher = Searcher(store, lambda: model, log=False)

        def run_all(label: str, strategy: str | None, multiplier_for=None):
            state = {**store.search_state(), "masks": masks}
            for filt, mask in FILTERS.items():
                share = 1.0 if mask is None else SELECTIVITY[mask]
                multiplier = multiplier_for(share) if multiplier_for else 1.0
                case = {"strategy": label, "filter": filt,
                        **_measure(searcher, state, vectors, mask, queries, strategy, multiplier)}
                out["cases"].append(case)
                print(case, flush=True)

        run_all("exact (Float32 scan)", "exact")
        start = time.perf_counter()
        store.add_rerank_column()
        out["rerank_column_s"] = round(time.perf_counter() - start, 1)
        run_all("rerank (QBit 8-bit scan + exact)", "rerank")
        store.command("ALTER TABLE images DROP COLUMN embedding_qbit")
        start = time.perf_counter()
        store.create_vector_index("bf16", 16, 128)
        out["hnsw_build_s"] = round(time.perf_counter() - start, 1)
        run_all("hnsw (bf16, M=16, ef_construction=128)", "hnsw", lambda share: POSTFILTER_SAFETY / share)
        run_all("default (service's choice)", None)
        out["maintenance"] = _index_maintenance(store, model, count)
    return out


def _index_maintenance(store, model: ClipModel, count: int, new: int = 10_000) -> dict:
    """Insert rows into the indexed table: time against the unindexed rate, the merge that folds them
    into the big part (rebuilding its index), and whether a new row is found at once."""
    added = perturbed(encode_generated(model, 400, 77), new, 78)
    start = time.perf_counter()
    insert(store, added, model.label, 77, count)
    insert_s = time.perf_counter() - start
    state = store.search_state()
    rows, _, _, strategy = Searcher(store, lambda: model, log=False).rank(state, [QueryVector(vector=added[0])], [], 1)
    found = bool(rows) and rows[0]["id"] == f"{count:032x}"
    start = time.perf_counter()
    store.command("OPTIMIZE TABLE images FINAL")
    merge_s = time.perf_counter() - start
    return {"new_rows": new, "insert_with_index_rows_per_s": round(new / insert_s), "new_row_found_at_once": found,
            "found_by": strategy, "merge_with_index_s": round(merge_s, 1)}


def plot_search(runs: list[dict], out: Path) -> None:
    """p50 latency against rows, one line per strategy, one panel per filter; numpy dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(FILTERS), figsize=(4 * len(FILTERS), 3.6), sharey=True)
    rows = [r["rows"] for r in runs]
    for ax, filt in zip(axes, FILTERS):
        for strategy in dict.fromkeys(c["strategy"] for c in runs[0]["cases"]):
            p50 = [next(c["sql_p50_ms"] for c in r["cases"] if c["strategy"] == strategy and c["filter"] == filt)
                   for r in runs]
            ax.plot(rows, p50, marker="o", label=strategy.split(" (")[0])
        numpy_p50 = [next(c["numpy_p50_ms"] for c in r["cases"] if c["filter"] == filt) for r in runs]
        ax.plot(rows, numpy_p50, "k--", marker="x", label="numpy brute force")
        ax.set(xscale="log", yscale="log", title=f"filter: {filt}", xlabel="rows")
    axes[0].set_ylabel("p50 latency, top-10 (ms)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def _peak_kib(pid: int) -> int:
    """A live process's peak resident memory so far (VmHWM), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return 0


def bench_memory(db: Path, searches: int = 40, images: int = 300) -> dict:
    """Peak RSS of `clipsearch serve` answering searches and of `clipsearch load` adding images, on `db`."""
    import subprocess
    import urllib.parse
    import urllib.request
    sys.path.insert(0, str(HERE.parent / "scripts"))
    from screenshot import free_port, start_server
    with Catalog.open(db) as store:
        rows, dims = store.query("SELECT count() AS n, max(length(embedding)) AS d FROM images")[0].values()
    port = free_port()
    server = start_server(str(db), port)
    try:
        for i in range(searches):
            q = shapes.query_text(list(shapes.COLOURS)[i % 8], shapes.SHAPES[i % 5])
            filt = [[], ["sel_10=1"], ["sel_0_1=1"]][i % 3]
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/search?" + urllib.parse.urlencode(
                {"q": q, "k": 10, "filter": filt}, doseq=True), timeout=300).read()
        serve_kib = _peak_kib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    paths = make_images(WORK / "images-memory", 2 * images)
    folder = WORK / "images-memory-cli"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for p in paths[:images]:
        shutil.copy(p, folder / p.name)
    loading = subprocess.Popen([sys.executable, "-m", "clipsearch.service.cli", "load", str(folder), "--db", str(db), "--quiet"],
                               cwd=HERE.parent)
    load_kib = 0
    while loading.poll() is None:  # the loader's own high-water mark (its decoding workers are other processes)
        load_kib = max(load_kib, _peak_kib(loading.pid))
        time.sleep(0.05)
    out = {"rows": int(rows), "searches": searches, "serve_mib": round(serve_kib / 1024),
           "loaded": images, "load_mib": round(load_kib / 1024), "load_exit": loading.returncode,
           "vectors_mib": round(int(rows) * int(dims) * 4 / 2**20)}
    # What Python itself holds (the rest of the resident memory is the ClickHouse engine in the process):
    # the same searches and another load, in this process, under tracemalloc.
    import tracemalloc
    folder = WORK / "images-memory-traced"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for p in paths[images:]:
        shutil.copy(p, folder / p.name)
    model = ClipModel()
    with Catalog.open(db) as store:
        searcher = Searcher(store, lambda: model, log=False)
        tracemalloc.start()
        for i in range(searches):
            q = shapes.query_text(list(shapes.COLOURS)[i % 8], shapes.SHAPES[i % 5])
            searcher.search(q, k=10, filters=[parse_filter(f) for f in [[], ["sel_10=1"], ["sel_0_1=1"]][i % 3]])
        out["serve_python_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.reset_peak()
        load(str(folder), store, model, progress=False)
        out["load_python_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
    return out


def bench_duplicates(count: int, dim: int = 512, exact_limit: int = 100_000) -> dict:
    """The near-duplicate scan (LSH candidates + exact check in SQL) on clustered vectors with 1% planted
    copies, against an exact all-pairs numpy scan where that fits in time."""
    from clipsearch.duplicates import DEFAULT_THRESHOLD, duplicate_pairs, lsh_plan
    rng = np.random.default_rng(11)
    base = clustered_vectors(count - count // 100, dim)
    sources = rng.choice(len(base), count // 100, replace=False)
    # Copies moved by up to the threshold, like re-encodes and small crops.
    noise = rng.standard_normal((len(sources), dim), dtype=np.float32)
    noise -= np.sum(noise * base[sources], axis=1, keepdims=True) * base[sources]
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    angle = np.arccos(1 - rng.uniform(0, DEFAULT_THRESHOLD, (len(sources), 1))).astype(np.float32)
    copies = np.cos(angle) * base[sources] + np.sin(angle) * noise
    vectors = np.concatenate([base, copies])
    ids = [f"{i:032x}" for i in range(len(vectors))]
    planted = {(ids[s], ids[len(base) + k]) for k, s in enumerate(sources)}
    db = WORK / "db-duplicates"
    shutil.rmtree(db, ignore_errors=True)
    with Catalog.open(db) as store:
        insert(store, vectors, "bench")
        store.command("OPTIMIZE TABLE images FINAL")
        start = time.perf_counter()
        pairs = duplicate_pairs(store, DEFAULT_THRESHOLD)
        sql_s = time.perf_counter() - start
    found = {(p["id_a"], p["id_b"]) for p in pairs}
    out = {"rows": count, "dim": dim, "threshold": DEFAULT_THRESHOLD, "bits_tables": lsh_plan(count, DEFAULT_THRESHOLD),
           "sql_s": round(sql_s, 1), "planted_pairs": len(planted), "planted_found": len(planted & found),
           "pairs_found": len(found)}
    if count <= exact_limit:
        start = time.perf_counter()
        exact = set()
        for lo in range(0, count, 2000):
            close = np.argwhere(vectors[lo:lo + 2000] @ vectors.T >= 1 - DEFAULT_THRESHOLD)
            exact |= {(ids[lo + i], ids[j]) for i, j in close if lo + i < j}
        out.update(numpy_all_pairs_s=round(time.perf_counter() - start, 1), exact_pairs=len(exact),
                   recall=round(len(exact & found) / max(1, len(exact)), 4))
    return out


def bundled_copy_distances(model: ClipModel, count: int = 400) -> dict:
    """How far the bundled model moves re-encoded, resized and cropped copies, against how close it places
    distinct look-alikes: why near-duplicates need a real CLIP model."""
    rng = np.random.default_rng(31)
    specs = shapes.balanced_specs(rng, count // 40, dims_range=(96, 320))
    files = [shapes.encode(shapes.render(s, rng), s.image_format, rng) for s in specs]

    def encode(data):
        return model.encode_images([open_image(f, model.image_size) for f in data])
    originals = encode(files)
    sims = originals @ originals.T
    np.fill_diagonal(sims, -1)
    nearest = 1 - sims.max(axis=1)
    out = {"images": count, "distinct_nearest_min": round(float(nearest.min()), 4),
           "distinct_nearest_p5": round(float(np.percentile(nearest, 5)), 4),
           "distinct_nearest_median": round(float(np.median(nearest)), 4)}
    for kind in shapes.NEAR_COPY_KINDS:
        moved = 1 - np.sum(encode([shapes.near_copy(f, kind, rng) for f in files]) * originals, axis=1)
        out[kind] = {"median": round(float(np.median(moved)), 4), "p95": round(float(np.percentile(moved, 95)), 4),
                     "max": round(float(moved.max()), 4)}
    return out


def to_markdown(results: dict) -> str:
    lines = [f"Machine: {results['machine']}; {results['date']}", "",
             "| model | images | raw encode (img/s) | decode + preprocess, 1 process (img/s) | loader (img/s) "
             "| loader / raw |", "|---|---|---|---|---|---|"]
    for r in results["loader"]:
        lines.append(f"| {r['model']} | {r['images']} | {r['raw_encode_images_per_s']} | "
                     f"{r['decode_one_process_images_per_s']} | {r['loader_images_per_s']} | "
                     f"{r['loader_vs_raw']:.0%} |")
    for run in (r for r in results.get("search", []) if "cases" in r):  # older runs had another shape
        lines += ["", f"Search over {run['rows']:,} x {run['dim']} vectors (bench/dataset.py; insert "
                      f"{run['insert_rows_per_s']:,} rows/s; QBit column {run['rerank_column_s']} s; "
                      f"HNSW build {run['hnsw_build_s']} s), 40 queries, k=10:", "",
                  "| strategy | filter | SQL p50 / p95 (ms) | numpy p50 (ms) | recall@10 | k rows | ran |",
                  "|---|---|---|---|---|---|---|"]
        for c in run["cases"]:
            lines.append(f"| {c['strategy']} | {c['filter']} | {c['sql_p50_ms']} / {c['sql_p95_ms']} | "
                         f"{c['numpy_p50_ms']} | {c['recall_at_10']} | {c['k_rows_share']:.0%} | {c['ran']} |")
        m = run["maintenance"]
        lines += ["", f"Index maintenance: {m['new_rows']:,} new rows inserted into the indexed table at "
                      f"{m['insert_with_index_rows_per_s']:,} rows/s (unindexed: {run['insert_rows_per_s']:,}); "
                      f"a new row found at once: {m['new_row_found_at_once']} ({m['found_by']}); "
                      f"merging them into the indexed part: {m['merge_with_index_s']} s."]
    if results.get("memory"):
        mem = results["memory"]
        lines += ["", f"Peak resident memory with {mem['rows']:,} rows: `clipsearch serve` {mem['serve_mib']} MiB "
                      f"after {mem['searches']} searches; `clipsearch load` of {mem['loaded']} images "
                      f"{mem['load_mib']} MiB (the vectors alone would be {mem['vectors_mib']} MiB). Of that, Python "
                      f"objects peak at {mem.get('serve_python_peak_mib', '-')} MiB for the searches and "
                      f"{mem.get('load_python_peak_mib', '-')} MiB for a load (tracemalloc); the rest is the "
                      "ClickHouse engine running inside the process."]
    if results.get("duplicates"):
        lines += ["", "| near-duplicate scan: rows x dim | threshold | LSH bits x tables | SQL (s) | planted pairs "
                  "found | numpy all-pairs (s) | recall vs all pairs |", "|---|---|---|---|---|---|---|"]
        for d in results["duplicates"]:
            lines.append(f"| {d['rows']} x {d['dim']} | {d['threshold']} | {d['bits_tables'][0]} x "
                         f"{d['bits_tables'][1]} | {d['sql_s']} | {d['planted_found']} / {d['planted_pairs']} | "
                         f"{d.get('numpy_all_pairs_s', '-')} | {d.get('recall', '-')} |")
    if results.get("bundled_copies"):
        b = results["bundled_copies"]
        lines += ["", f"Bundled model, {b['images']} generated images and a copy of each: distance to the nearest "
                      f"distinct image min {b['distinct_nearest_min']}, 5th percentile {b['distinct_nearest_p5']}, "
                      f"median {b['distinct_nearest_median']}; distance a copy moves (median / p95 / max): "
                      + "; ".join(f"{k} {b[k]['median']} / {b[k]['p95']} / {b[k]['max']}"
                                  for k in shapes.NEAR_COPY_KINDS) + "."]
    v = results["service"]
    lines += ["", f"| `clipsearch serve`, {v['clients']} clients x {v['searches'] // v['clients']} searches | "
              "searches/s | p50 (ms) | p95 (ms) | errors | same searches in-process (searches/s, ms each) |",
              "|---|---|---|---|---|---|",
              f"| {results['loader'][0]['images']} images, k=10 | {v['http_searches_per_s']} | {v['http_p50_ms']} | "
              f"{v['http_p95_ms']} | {v['errors']} | {v['in_process_searches_per_s']}, "
              f"{v['in_process_ms_per_search']} |"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--vit-images", type=int, default=256)
    parser.add_argument("--vectors", default="100000",
                        help="table sizes for the search benchmark, comma-separated (e.g. 100000,1000000)")
    parser.add_argument("--duplicates", default="20000,100000", help="table sizes for the near-duplicate scan")
    parser.add_argument("--skip-vit", action="store_true", help="skip the ViT-B-32 (random weights) loader run")
    parser.add_argument("--only", help="run only these sections (loader,service,search,memory,duplicates) and keep "
                                       "the others' results from the last run")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else {"loader", "service", "search", "memory", "duplicates"}
    WORK.mkdir(exist_ok=True)
    previous = HERE / "results.json"
    results = json.loads(previous.read_text()) if args.only and previous.exists() else {}
    results.update(machine=f"{platform.machine()}, {os.cpu_count()} CPUs, {'GPU' if _cuda() else 'no GPU'}",
                   date=time.strftime("%Y-%m-%d"))
    if "loader" in only or "service" in only:
        paths = make_images(WORK / "images", args.images)
    if "loader" in only:
        results["loader"] = [bench_loader(ClipModel(), paths, "clipsearch-shapes (bundled)", WORK / "db-bundled")]
        print(results["loader"][-1], flush=True)
        if not args.skip_vit:
            vit_paths = make_images(WORK / "images-vit", args.vit_images)
            results["loader"].append(bench_loader(ClipModel("ViT-B-32"), vit_paths, "ViT-B-32 (random weights)",
                                                  WORK / "db-vit"))
            print(results["loader"][-1], flush=True)
    if "service" in only:
        if not (WORK / "db-bundled").exists():
            bench_loader(ClipModel(), paths, "clipsearch-shapes (bundled)", WORK / "db-bundled")
        results["service"] = bench_service(WORK / "db-bundled")
        print(results["service"], flush=True)
    if "search" in only:
        results["search"] = [bench_search(int(n), ClipModel()) for n in args.vectors.split(",")]
        plot_search(results["search"], HERE / "search.png")
    if "memory" in only:
        results["memory"] = bench_memory(WORK / f"db-search-{args.vectors.split(',')[-1]}")
        print(results["memory"], flush=True)
    if "duplicates" in only:
        results["duplicates"] = []
        for count in (int(n) for n in args.duplicates.split(",")):
            results["duplicates"].append(bench_duplicates(count))
            print(results["duplicates"][-1], flush=True)
        results["bundled_copies"] = bundled_copy_distances(ClipModel())
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (HERE / "results.md").write_text(to_markdown(results))
    print(to_markdown(results))
    return 0


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
