"""What the HNSW index's quantization does to recall, scores and speed.

The search benchmark's table and queries (bench/search.py: clustered `dim`-d vectors, 20 texts and 20
unseen images), indexed in turn as each quantization `clipsearch index create --quantization` offers,
M 16 and ef_construction 128, no tuning: clipsearch's own ranking SQL (`Searcher.rank`, unfiltered, k=10,
re-ranked by the Float32 vectors where clipsearch rescores, i8 and b1) at three search beams. Recall@10
against numpy's exact top 10; the score error is the largest difference between a row's score and its
exact cosine similarity. i8 and b1 also once without the re-ranking, to show what it is for.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np

import clipsearch
from bench import search
from bench.common import ms_stats
from clipsearch.models.clip import ClipModel
from clipsearch.search.query import Query
from clipsearch.search.statement import QueryVector
from clipsearch.service import shapes
from clipsearch.store.indexes import VECTOR_QUANTIZATIONS

BEAMS = (512, 1024, 2048)


def run(count: int, model: ClipModel, work: Path, dim: int = 512) -> dict:
    """Every quantization on one fresh `count` x `dim` table in work/db-quantization-COUNT-dDIM."""
    db = work / f"db-quantization-{count}-d{dim}"
    shutil.rmtree(db, ignore_errors=True)
    queries = search.query_vectors(model, dim)
    vectors = search.table_vectors(model, count, dim)
    exact = [set(np.argpartition(-(vectors @ q), search.K)[:search.K].tolist()) for q in queries]
    out: dict = {"rows": count, "dim": dim, "queries": len(queries), "runs": []}
    _, m, ef_construction = search.HNSW
    with clipsearch.open(db, model=search.QueryModel(model.label, queries), log_searches=False) as photos:
        shapes.insert_vectors(photos.catalog, vectors, model.label, search.SEED)
        photos.catalog.owner_sql("OPTIMIZE TABLE images FINAL")
        for quantization in VECTOR_QUANTIZATIONS:
            if photos.catalog.indexes.vector_index():
                photos.catalog.indexes.drop_vector_index()
            start = time.perf_counter()
            photos.catalog.indexes.create_vector_index(quantization, m, ef_construction)
            build_s = round(time.perf_counter() - start, 1)
            table = photos.catalog.state.read()
            cases = [(beam, table["rescore"]) for beam in BEAMS]
            if table["rescore"]:   # i8 and b1: once without the re-ranking, at the widest beam, to show why
                cases.append((BEAMS[-1], 0))
            for beam, rescore in cases:
                state = dataclasses.replace(table, beam=beam, rescore=rescore)
                ms, recall, error = [], [], []
                for q, top in zip(queries, exact, strict=True):
                    start = time.perf_counter()
                    rows = photos.searcher.rank(state, [QueryVector(vector=q)], Query(k=search.K))[0]
                    ms.append((time.perf_counter() - start) * 1000)
                    ids = [int(r["id"], 16) for r in rows]
                    recall.append(len(set(ids) & top) / search.K)
                    error.append(float(np.max(np.abs(np.array([r["score"] for r in rows]) - vectors[ids] @ q))))
                row = {"quantization": quantization, "beam": beam, "build_s": build_s, **ms_stats(ms, "sql"),
                       "recall_at_10": round(float(np.mean(recall)), 3), "max_score_error": float(f"{max(error):.2g}"),
                       "rescored": bool(state.rescore)}
                print(row, flush=True)
                out["runs"].append(row)
    return out
