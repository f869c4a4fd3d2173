"""Search strategies side by side on a catalogue-like table, per filter selectivity.

The table is what `python -m bench.dataset` makes (`clipsearch.synthetic`): the bundled model's
embeddings of 4,000 generated images, each repeated with a small perturbation, and columns sel_50,
sel_10, sel_1, sel_0_1 set on exactly that share of rows. Each strategy (the exact Float32 scan, the
HNSW index, the service's own choice) against numpy brute force over the same vectors in RAM with
the same filter: latency, recall@10 against numpy's exact top-10, and whether k rows came back. Then
the index's upkeep: inserting into the indexed table and merging the new rows in.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import clipsearch
from clipsearch import synthetic
from clipsearch.collection import Collection
from clipsearch.model import ClipModel
from clipsearch.query import QueryVector, parse_filter, search_sql
from clipsearch.search import POSTFILTER_SAFETY

from .common import ms_stats

FILTERS = {"none": None, "50%": "sel_50", "10%": "sel_10", "1%": "sel_1", "0.1%": "sel_0_1"}
K = 10
BASES, SEED = 4000, 5          # synthetic.fill's defaults: base images and seed
HNSW = ("bf16", 16, 128)       # quantization, M, ef_construction


def query_vectors(model: ClipModel) -> np.ndarray:
    """20 text queries ("a red circle", ...) and 20 images none of the rows were made from."""
    texts = [synthetic.query_text(c, s) for c in synthetic.COLOURS for s in synthetic.SHAPES][::2]
    return np.concatenate([model.encode_texts(texts), synthetic.encode_generated(model, 20, seed=999)])


def stored_masks(photos: Collection, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Which rows each sel_* column marks, by row number (ids are row numbers in hex); checked against
    the table on the rarest column."""
    masks = {name: columns[name].astype(bool) for name in synthetic.SELECTIVITY}
    stored = {r["id"] for r in photos.catalog.query("SELECT id FROM images WHERE sel_0_1 = 1")}
    assert stored == {f"{i:032x}" for i in np.flatnonzero(masks["sel_0_1"])}, "sel_0_1 differs from the table"
    return masks


def measure(photos: Collection, state: dict, vectors: np.ndarray, column: str | None, keep: np.ndarray | None,
            queries: np.ndarray, strategy: str | None, multiplier: float = 1.0) -> dict:
    """p50/p95 of one strategy (None: the one the service picks) against numpy brute force over all
    vectors with the same filter, recall@10 against numpy's exact top-10, and k-row completeness."""
    filters = [parse_filter(f"{column}=1")] if column else []
    sql_ms, numpy_ms, recall, complete, ran = [], [], [], [], set()
    for q in queries:
        parts = [QueryVector(vector=q)]
        start = time.perf_counter()
        if strategy is None:
            rows, _, _, name = photos.searcher.rank(state, parts, filters, K)
            name = name.split(" (")[0]
        else:
            sql, params = search_sql(state["columns"], filters, K, parts, strategy, multiplier)
            rows, name = photos.catalog.query(sql, params), strategy
        sql_ms.append((time.perf_counter() - start) * 1000)
        ran.add(name)
        start = time.perf_counter()
        scores = vectors @ q
        if keep is not None:
            scores[~keep] = -np.inf
        top = np.argpartition(-scores, K)[:K]
        numpy_ms.append((time.perf_counter() - start) * 1000)
        recall.append(len({r["id"] for r in rows} & {f"{i:032x}" for i in top}) / K)
        complete.append(len(rows) == K)
    return {**ms_stats(sql_ms, "sql"), "numpy_p50_ms": round(float(np.median(numpy_ms)), 1),
            "recall_at_10": round(float(np.mean(recall)), 3), "k_rows_share": float(np.mean(complete)),
            "ran": "+".join(sorted(ran))}


def run(count: int, model: ClipModel, work: Path) -> dict:
    """Every strategy and filter on a fresh `count`-row table in work/db-search-COUNT (kept for the
    memory benchmark)."""
    db = work / f"db-search-{count}"
    shutil.rmtree(db, ignore_errors=True)
    queries = query_vectors(model)
    out: dict = {"rows": count, "dim": int(queries.shape[1]), "cases": []}
    with clipsearch.open(db, model=model, log_searches=False) as photos:
        # synthetic.fill(catalog, model, count), with the insert timed on its own
        vectors = synthetic.perturbed(synthetic.encode_generated(model, BASES, SEED), count, SEED + 1)
        start = time.perf_counter()
        columns = synthetic.insert_vectors(photos.catalog, vectors, model.label, SEED)
        out["insert_rows_per_s"] = round(count / (time.perf_counter() - start))
        photos.catalog.command("OPTIMIZE TABLE images FINAL")
        masks = stored_masks(photos, columns)

        def run_all(label: str, strategy: str | None, multiplier_for: Callable[[float], float] | None = None
                    ) -> None:
            state = photos.catalog.search_state()
            for filt, column in FILTERS.items():
                share = 1.0 if column is None else synthetic.SELECTIVITY[column]
                multiplier = multiplier_for(share) if multiplier_for else 1.0
                case = {"strategy": label, "filter": filt,
                        **measure(photos, state, vectors, column, masks.get(column), queries, strategy, multiplier)}
                out["cases"].append(case)
                print(case, flush=True)

        run_all("exact (Float32 scan)", "exact")
        start = time.perf_counter()
        photos.create_index(*HNSW)
        out["hnsw_build_s"] = round(time.perf_counter() - start, 1)
        run_all("hnsw ({}, M={}, ef_construction={})".format(*HNSW), "hnsw", lambda share: POSTFILTER_SAFETY / share)
        run_all("default (service's choice)", None)
        out["maintenance"] = index_maintenance(photos, model, count)
    return out


def index_maintenance(photos: Collection, model: ClipModel, count: int, new: int = 10_000) -> dict:
    """Insert rows into the indexed table: time against the unindexed rate, the merge that folds them
    into the big part (rebuilding its index), and whether a new row is found at once."""
    added = synthetic.perturbed(synthetic.encode_generated(model, 400, 77), new, 78)
    start = time.perf_counter()
    synthetic.insert_vectors(photos.catalog, added, model.label, 77, count)
    insert_s = time.perf_counter() - start
    state = photos.catalog.search_state()
    rows, _, _, strategy = photos.searcher.rank(state, [QueryVector(vector=added[0])], [], 1)
    found = bool(rows) and rows[0]["id"] == f"{count:032x}"
    start = time.perf_counter()
    photos.catalog.command("OPTIMIZE TABLE images FINAL")
    merge_s = time.perf_counter() - start
    return {"new_rows": new, "insert_with_index_rows_per_s": round(new / insert_s), "new_row_found_at_once": found,
            "found_by": strategy, "merge_with_index_s": round(merge_s, 1)}
