"""Near-duplicate groups in two modes: "copies", the same picture by perceptual hash (clipsearch/images/copies.py,
the default), and "similar", images whose embeddings lie within a cosine distance of each other (here).

Comparing every pair is quadratic, so ClickHouse first finds candidate pairs by
locality-sensitive hashing: each row gets a 128-bit sketch (the signs of its dot
products with 128 fixed random hyperplanes), and rows that agree on every bit of
one of several random bit subsets ("tables") become candidates. Only candidates
are compared exactly with cosineDistance. Two vectors at angle a disagree on a
bit with chance a/pi, so near copies agree on a whole subset in some table with
a chance that rises quickly with the number of tables; `lsh_plan` picks enough
tables to miss a pair right at the threshold less than once in MISS_CHANCE.
Pairs are joined into groups (connected components, grouping.py): the output is small.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from clipsearch.errors import QueryError, StoreError
from clipsearch.images.grouping import group_pairs
from clipsearch.store.catalog import Catalog

DEFAULT_THRESHOLD = 0.03    # cosine distance (similarity 0.97); tune it per model, see the README
SKETCH_BITS = 128           # a UInt128 per row
MAX_TABLES = 48
MISS_CHANCE = 0.005         # at the threshold itself; closer pairs are missed far less often
BOUNDED_THRESHOLD = 0.1    # over HTTP: wider thresholds group look-alikes by the hundred (2,000 demo rows:
                           # 0.1 takes 1.3 s, 0.5 takes 5.7 s and 3.8 GB)
BOUNDED_SECONDS = 20
BOUNDED_MEMORY = 2_000_000_000
SEED = 20261123             # fixed, so the same table gives the same groups on every run

PAIRS_SQL = """
WITH
sketches AS (
    SELECT cityHash64(id) AS key,
           arraySum(arrayMap((p, i) -> bitShiftLeft(toUInt128(dotProduct(embedding, p) > 0), i),
                             {planes:Array(Array(Float32))}, range({sketch_bits:UInt32}))) AS sketch
    FROM images
    WHERE length(embedding) = {dims:UInt32}
),
candidates AS (
    SELECT DISTINCT pair.1 AS a, pair.2 AS b
    FROM (
        SELECT arrayJoin(arrayFlatten(arrayMap(
                   i -> arrayMap(j -> (least(keys[i], keys[j]), greatest(keys[i], keys[j])),
                                 range(i + 1, length(keys) + 1)),
                   range(1, length(keys) + 1)))) AS pair
        FROM (
            SELECT groupArray(key) AS keys
            FROM sketches ARRAY JOIN {masks:Array(UInt128)} AS mask
            GROUP BY mask, bitAnd(sketch, mask)
            HAVING length(keys) > 1
        )
    )
),
vectors AS (SELECT cityHash64(id) AS key, id, embedding FROM images WHERE length(embedding) = {dims:UInt32})
SELECT least(x.id, y.id) AS id_a, greatest(x.id, y.id) AS id_b, cosineDistance(x.embedding, y.embedding) AS distance
FROM candidates
INNER JOIN vectors AS x ON x.key = candidates.a
INNER JOIN vectors AS y ON y.key = candidates.b
WHERE distance <= {threshold:Float64}
ORDER BY distance, id_a, id_b
"""


def check_threshold(threshold: Any, ceiling: float = 0.5) -> float:
    try:
        threshold = float(DEFAULT_THRESHOLD if threshold is None else threshold)
    except (TypeError, ValueError):
        raise QueryError(f"the threshold must be a number, got {threshold!r}") from None
    if not 0 <= threshold <= ceiling:
        raise QueryError(f"the threshold is a cosine distance between 0 and {ceiling:g}, got {threshold:g}")
    return threshold


def miss_chance(threshold: float, bits: int, tables: int) -> float:
    """Chance that a pair exactly `threshold` apart shares no bucket: its sketches differ in k of the
    SKETCH_BITS bits (binomial), and a table of `bits` random bits misses the pair if it holds any of them."""
    split = math.acos(1 - threshold) / math.pi
    return sum(math.comb(SKETCH_BITS, k) * split ** k * (1 - split) ** (SKETCH_BITS - k)
               * (1 - math.comb(SKETCH_BITS - k, bits) / math.comb(SKETCH_BITS, bits)) ** tables
               for k in range(SKETCH_BITS + 1))


def lsh_plan(rows: int, threshold: float) -> tuple[int, int]:
    """(bits per table, tables): buckets of about one row on uniform data, fewer bits if needed to
    keep the chance of missing a pair at the threshold under MISS_CHANCE with at most MAX_TABLES."""
    for bits in range(min(32, max(8, math.ceil(math.log2(max(rows, 2))))), 3, -1):
        for tables in range(1, MAX_TABLES + 1):
            if miss_chance(threshold, bits, tables) <= MISS_CHANCE:
                return bits, tables
    return 4, MAX_TABLES


def duplicate_pairs(catalog: Catalog, threshold: object = None, bounded: bool = False) -> list[dict]:
    """Pairs {id_a, id_b, distance} of distinct images within `threshold`, closest first.

    `bounded` (for requests from the network): the threshold at most BOUNDED_THRESHOLD, and the statement
    stopped by ClickHouse past BOUNDED_SECONDS or BOUNDED_MEMORY, with a clear error instead of a stall.
    """
    threshold = check_threshold(threshold, BOUNDED_THRESHOLD if bounded else 0.5)
    shape = catalog.query("SELECT count() AS n, max(length(embedding)) AS d FROM images")[0]
    rows, dims = int(shape["n"]), int(shape["d"] or 0)
    if rows < 2 or not dims:
        return []
    bits, tables = lsh_plan(rows, threshold)
    rng = np.random.default_rng(SEED)
    planes = rng.standard_normal((SKETCH_BITS, dims)).astype(np.float32)
    masks = [sum(1 << int(b) for b in rng.choice(SKETCH_BITS, bits, replace=False)) for _ in range(tables)]
    limits = (f"\nSETTINGS max_execution_time = {BOUNDED_SECONDS}, max_memory_usage = {BOUNDED_MEMORY}"
              if bounded else "")
    try:
        return catalog.query(PAIRS_SQL + limits, {"planes": planes.tolist(), "sketch_bits": SKETCH_BITS,
                                                  "masks": masks, "dims": dims, "threshold": threshold})
    except StoreError as exc:
        if bounded and any(code in str(exc) for code in ("TIMEOUT_EXCEEDED", "MEMORY_LIMIT_EXCEEDED")):
            raise QueryError(f"finding near-duplicates within {threshold:g} needs more than this server allows "
                             "a request; use a smaller threshold, or `clipsearch duplicates`") from None
        raise


def duplicate_groups(catalog: Catalog, threshold: object = None, bounded: bool = False) -> list[dict]:
    """Groups of near-duplicates, largest first: {"images": [rows, largest image first], "max_distance"}."""
    pairs = duplicate_pairs(catalog, threshold, bounded)
    return group_pairs(catalog, pairs, keep_first=lambda r: (-r["width"] * r["height"], r["path"]))


MODES = ("copies", "similar")


def check_mode(mode: object, threshold: object = None) -> str:
    """The mode named, or without one "copies", unless the threshold is a fraction between 0 and 1: a cosine
    distance, never a count of bits (so callers written before copies existed keep their meaning)."""
    if mode is None:
        try:
            value = float(threshold)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return MODES[0]
        return "similar" if 0 < value < 1 else MODES[0]
    if mode not in MODES:
        raise QueryError(f"the mode is copies (the same picture, by perceptual hash) or similar (by CLIP distance), "
                         f"got {str(mode)[:40]!r}")
    return str(mode)


def find_duplicates(catalog: Catalog, mode: object = None, threshold: object = None,
                    bounded: bool = False) -> list[dict]:
    """Groups of duplicates in `mode` (see check_mode): "copies" (the same picture: perceptual hashes within
    `threshold` bits) or "similar" (embeddings within cosine distance `threshold`)."""
    if check_mode(mode, threshold) == "copies":
        from clipsearch.images.copies import copy_groups
        return copy_groups(catalog, threshold, bounded)
    return duplicate_groups(catalog, threshold, bounded)
