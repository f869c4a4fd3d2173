"""The near-duplicate scan, and how far the bundled model moves copies of an image.

1. `duplicate_pairs` (LSH candidates + exact check in SQL) on clustered 512-d vectors with 1% planted
   copies: time, planted pairs found, and recall against an exact all-pairs numpy scan where that
   fits in time.
2. The bundled model on generated images: distance to the nearest distinct image against the
   distance a re-encoded, resized or cropped copy moves (why near-duplicates need a real CLIP).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from clipsearch.images.decode import open_image
from clipsearch.images.duplicates import DEFAULT_THRESHOLD, duplicate_pairs, lsh_plan
from clipsearch.models.clip import ClipModel
from clipsearch.service import shapes
from clipsearch.store.catalog import Catalog


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


def with_copies(count: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` vectors, the last 1% of them copies of others moved by up to the threshold (like
    re-encodes and small crops); and the row each copy was made from."""
    base = clustered_vectors(count - count // 100, dim)
    sources = rng.choice(len(base), count // 100, replace=False)
    noise = rng.standard_normal((len(sources), dim), dtype=np.float32)
    noise -= np.sum(noise * base[sources], axis=1, keepdims=True) * base[sources]
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    angle = np.arccos(1 - rng.uniform(0, DEFAULT_THRESHOLD, (len(sources), 1))).astype(np.float32)
    copies = np.cos(angle) * base[sources] + np.sin(angle) * noise
    return np.concatenate([base, copies]), sources


def run(count: int, work: Path, dim: int = 512, exact_limit: int = 100_000) -> dict:
    """The scan on `count` rows in a fresh work/db-duplicates; the numpy all-pairs scan up to `exact_limit`."""
    vectors, sources = with_copies(count, dim, np.random.default_rng(11))
    ids = [f"{i:032x}" for i in range(len(vectors))]
    first_copy = len(vectors) - len(sources)
    planted = {(ids[s], ids[first_copy + k]) for k, s in enumerate(sources)}
    db = work / "db-duplicates"
    shutil.rmtree(db, ignore_errors=True)
    with Catalog.open(db) as catalog:
        shapes.insert_vectors(catalog, vectors, "bench")
        catalog.owner_sql("OPTIMIZE TABLE images FINAL")
        start = time.perf_counter()
        pairs = duplicate_pairs(catalog, DEFAULT_THRESHOLD)
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

    def encode(data: list[bytes]) -> np.ndarray:
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
