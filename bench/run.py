"""Benchmarks, each against a baseline measured in the same run.

    python bench/run.py [--images 3000] [--vectors 100000,1000000] [--skip-vit]

1. Loader throughput (decode in workers + encode + insert) against the
   model's raw encode speed on the same images, already decoded: the bundled
   model, and ViT-B-32 with random weights as a stand-in for a real CLIP.
2. `clipsearch serve` under 16 concurrent clients against the same searches
   in-process.
3. Search over clustered 512-d vectors: the exact cosineDistance scan and
   the HNSW index against numpy brute force on the same vectors (latency,
   recall@10, index build time).

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
from loader.load import load
from service import shapes
from service.model import ClipModel, open_image
from service.query import QueryVector, search_sql
from service.store import EmbeddedStore

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
    with EmbeddedStore(db) as store:
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

    from service.search import Searcher
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
    with EmbeddedStore(db) as store:
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


def _timed_queries(store, sql, params, vectors, queries, ids):
    """p50/p95 of the SQL and of numpy brute force on the same queries, and recall@10 of the SQL."""
    sql_ms, numpy_ms, recall = [], [], []
    for q in queries:
        start = time.perf_counter()
        rows = store.query(sql, {**params, "v0": q.tolist()})
        sql_ms.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        scores = vectors @ q
        top = np.argpartition(-scores, 10)[:10]
        top = top[np.argsort(-scores[top])]
        numpy_ms.append((time.perf_counter() - start) * 1000)
        recall.append(len({r["id"] for r in rows} & {ids[i] for i in top}) / 10)
    return {"sql_p50_ms": round(float(np.median(sql_ms)), 1), "sql_p95_ms": round(float(np.percentile(sql_ms, 95)), 1),
            "numpy_p50_ms": round(float(np.median(numpy_ms)), 1),
            "numpy_p95_ms": round(float(np.percentile(numpy_ms, 95)), 1),
            "recall_at_10": round(float(np.mean(recall)), 3)}


def bench_search(count: int, dim: int = 512, queries: int = 30, quantization: str = "bf16") -> list[dict]:
    """Exact cosineDistance scan and the HNSW index against numpy brute force, on the same vectors."""
    import pyarrow as pa
    vectors = clustered_vectors(count, dim)
    rng = np.random.default_rng(8)
    picks = vectors[rng.integers(0, count, queries)] + 0.3 * rng.standard_normal((queries, dim), dtype=np.float32) / 22
    picks /= np.linalg.norm(picks, axis=1, keepdims=True)  # queries near, not on, stored vectors
    ids = [f"{i:032x}" for i in range(count)]
    db = WORK / "db-search"
    shutil.rmtree(db, ignore_errors=True)
    out = []
    with EmbeddedStore(db) as store:
        start = time.perf_counter()
        for lo in range(0, count, 50_000):
            hi = min(count, lo + 50_000)
            block = vectors[lo:hi]
            store.insert("images", pa.table({
                "id": ids[lo:hi], "path": [f"/v/{i}.jpg" for i in range(lo, hi)], "model": ["bench"] * (hi - lo),
                "embedding": pa.ListArray.from_arrays(pa.array(np.arange(0, block.size + 1, dim, dtype=np.int32)),
                                                      pa.array(block.ravel()))}))
        insert_s = time.perf_counter() - start
        store.command("OPTIMIZE TABLE images FINAL")
        columns = store.columns()
        sql, params, strategy = search_sql(columns, [], 10, [QueryVector(vector=[0.0] * dim)])
        out.append({"rows": count, "dim": dim, "strategy": strategy, "build_s": 0.0,
                    "insert_rows_per_s": round(count / insert_s), **_timed_queries(store, sql, params, vectors,
                                                                                    picks, ids)})
        start = time.perf_counter()
        store.create_vector_index(quantization)
        build_s = time.perf_counter() - start
        sql, params, strategy = search_sql(columns, [], 10, [QueryVector(vector=[0.0] * dim)], vector_index=True)
        out.append({"rows": count, "dim": dim, "strategy": f"{strategy} ({quantization}, M=16, ef_construction=128)",
                    "build_s": round(build_s, 1), **_timed_queries(store, sql, params, vectors, picks, ids)})
    return out


def to_markdown(results: dict) -> str:
    lines = [f"Machine: {results['machine']}; {results['date']}", "",
             "| model | images | raw encode (img/s) | decode + preprocess, 1 process (img/s) | loader (img/s) "
             "| loader / raw |", "|---|---|---|---|---|---|"]
    for r in results["loader"]:
        lines.append(f"| {r['model']} | {r['images']} | {r['raw_encode_images_per_s']} | "
                     f"{r['decode_one_process_images_per_s']} | {r['loader_images_per_s']} | "
                     f"{r['loader_vs_raw']:.0%} |")
    lines += ["", "| rows x dim | strategy | index build (s) | SQL top-10 p50 / p95 (ms) | numpy brute force "
              "p50 / p95 (ms) | recall@10 vs numpy |", "|---|---|---|---|---|---|"]
    for s in results["search"]:
        lines.append(f"| {s['rows']} x {s['dim']} | {s['strategy']} | {s['build_s']} | {s['sql_p50_ms']} / "
                     f"{s['sql_p95_ms']} | {s['numpy_p50_ms']} / {s['numpy_p95_ms']} | {s['recall_at_10']} |")
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
    parser.add_argument("--skip-vit", action="store_true", help="skip the ViT-B-32 (random weights) loader run")
    args = parser.parse_args(argv)
    WORK.mkdir(exist_ok=True)
    paths = make_images(WORK / "images", args.images)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {'GPU' if _cuda() else 'no GPU'}",
               "date": time.strftime("%Y-%m-%d"), "loader": []}
    results["loader"].append(bench_loader(ClipModel(), paths, "clipsearch-shapes (bundled)", WORK / "db-bundled"))
    print(results["loader"][-1], flush=True)
    if not args.skip_vit:
        vit_paths = make_images(WORK / "images-vit", args.vit_images)
        results["loader"].append(bench_loader(ClipModel("ViT-B-32"), vit_paths, "ViT-B-32 (random weights)",
                                              WORK / "db-vit"))
        print(results["loader"][-1], flush=True)
    results["service"] = bench_service(WORK / "db-bundled")
    print(results["service"], flush=True)
    results["search"] = []
    for count in (int(n) for n in args.vectors.split(",")):
        results["search"] += bench_search(count)
        print(results["search"][-2:], flush=True)
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (HERE / "results.md").write_text(to_markdown(results))
    print(to_markdown(results))
    return 0


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
