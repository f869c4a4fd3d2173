"""Ranking quality of one query, from the grades of what it returned: precision@k, recall@k, nDCG@k and the
reciprocal rank (MRR is its mean over queries). One place for the arithmetic `clipsearch eval` reports, and
the same definitions as sql/queries/eval_metrics.sql.

`gains` are the grades (0-3; 0 or absent: not relevant) of the results in the order returned; `relevant` is
how many items are relevant (grade >= 1) in all; `ideal` the grades of the relevant items, best first (only
the first k count). nDCG uses the exponential gain 2^grade - 1 and the discount log2(rank + 1)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_GRADE = 3


def _hits(gains: Sequence[float], k: int) -> int:
    return int(np.count_nonzero(np.asarray(gains[:k], dtype=np.float64) > 0))


def precision_at_k(gains: Sequence[float], k: int) -> float:
    """The share of the k places holding a relevant result (a short result list counts its empty places)."""
    return _hits(gains, k) / k if k > 0 else 0.0


def recall_at_k(gains: Sequence[float], relevant: int, k: int) -> float:
    """The share of the relevant items found in the first k results."""
    return _hits(gains, k) / relevant if relevant > 0 else 0.0


def dcg(gains: Sequence[float], k: int) -> float:
    g = np.asarray(gains[:k], dtype=np.float64)
    return float(np.sum((2.0 ** g - 1.0) / np.log2(np.arange(2, g.size + 2))))


def ndcg_at_k(gains: Sequence[float], ideal: Sequence[float], k: int) -> float:
    """The DCG of the first k results over the best DCG the relevant items allow."""
    best = dcg(sorted(ideal, reverse=True), k)
    return dcg(gains, k) / best if best > 0 else 0.0


def reciprocal_rank(gains: Sequence[float]) -> float:
    """1 / the rank of the first relevant result; 0 if none is."""
    found = np.flatnonzero(np.asarray(gains, dtype=np.float64) > 0)
    return 1.0 / (int(found[0]) + 1) if found.size else 0.0


def scores(gains: Sequence[float], relevant: int, ideal: Sequence[float], k: int) -> dict[str, float]:
    """The four metrics of one query, rounded for reports."""
    return {"precision_at_k": round(precision_at_k(gains, k), 4),
            "recall_at_k": round(recall_at_k(gains, relevant, k), 4),
            "ndcg_at_k": round(ndcg_at_k(gains, ideal, k), 4),
            "mrr": round(reciprocal_rank(gains[:k]), 4)}
