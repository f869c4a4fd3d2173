"""Copies by perceptual hash (`clipsearch duplicates`, mode copies), against known answers and exact scans.

1. quality: generated originals (photo-sized), a look-alike of each (another picture of the same colour
   and shape) and one copy per kind of change (synthetic.COPY_KINDS), hashed as the loader hashes them;
   the hash values go into a table and `copy_groups` groups them in SQL at the default threshold. Recall
   per kind of change, precision (look-alikes grouped, and pairs in a group that are not one picture),
   crop recall by how much was cropped, and the SQL pairs against an exact all-pairs numpy scan.
2. hashing: the cost of hashing in the loader (loader images/s with and without it on the same files) and
   against the imagehash library's pHash (speed and how many bits ours differs), where imagehash is installed.
3. scale: `copy_pairs` on 100,000 rows of hash values (each row a real hash of part 1 with a quarter of its
   bits flipped, 1% of rows planted copies of others with 0-8 bits flipped) against an exact all-pairs
   Hamming scan in numpy over the same values.
"""
from __future__ import annotations

import dataclasses
import io
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

import clipsearch
from clipsearch import copies, synthetic
from clipsearch.catalog import Catalog
from clipsearch.hashes import HASH_DECODE_SIZE, image_hashes
from clipsearch.model import ClipModel, decode

from . import common

CROP_BUCKETS = (0.05, 0.075, 0.10)  # recall of crops by the largest share trimmed from a side
SWEEP = (0, 4, 6, 8, 10, 12)         # thresholds the quality run also groups at


def hash_file(data: bytes) -> tuple[int, int, int, int]:
    """(phash, colour_hash, width, height) as the loader computes them (JPEGs decoded at reduced scale)."""
    image = Image.open(io.BytesIO(data))
    width, height = image.size
    phash, colour_hash = image_hashes(decode(image, HASH_DECODE_SIZE))
    return phash, colour_hash, width, height


def insert_hashes(catalog: Catalog, names: list[str], phash: np.ndarray, colour: np.ndarray,
                  width: list[int] | None = None, height: list[int] | None = None,
                  file_size: list[int] | None = None) -> list[str]:
    """Rows with these hash values (no vectors) under ids 0, 1, ... in hex; returns the ids."""
    n = len(names)
    ids = [f"{i:032x}" for i in range(n)]
    for lo in range(0, n, 50_000):
        hi = min(n, lo + 50_000)
        catalog.insert_images(pa.table({
            "id": ids[lo:hi], "path": names[lo:hi], "model": ["bench"] * (hi - lo),
            "width": pa.array((width or [256] * n)[lo:hi], pa.uint32()),
            "height": pa.array((height or [256] * n)[lo:hi], pa.uint32()),
            "file_size": pa.array((file_size or [0] * n)[lo:hi], pa.uint64()),
            "phash": pa.array(phash[lo:hi], pa.uint64()), "colour_hash": pa.array(colour[lo:hi], pa.uint64())}))
    return ids


def exact_pairs(phash: np.ndarray, colour: np.ndarray, distance: int, colour_distance: int,
                chunk: int = 128) -> set[tuple[int, int]]:
    """Every pair (i < j) within the thresholds, by comparing all pairs (numpy, in blocks of rows)."""
    found: set[tuple[int, int]] = set()
    for lo in range(0, len(phash), chunk):
        near = np.bitwise_count(phash[lo:lo + chunk, None] ^ phash[None, :]) <= distance
        i, j = np.nonzero(near)
        i += lo
        keep = (j > i) & (np.bitwise_count(colour[i] ^ colour[j]) <= colour_distance)
        found.update(zip(i[keep].tolist(), j[keep].tolist(), strict=True))
    return found


def quality(originals: int, work: Path, seed: int = 41) -> tuple[dict, np.ndarray, np.ndarray]:
    """Part 1; also returns the originals' (phash, colour_hash) for part 3."""
    start = time.perf_counter()
    items, rows = [], []
    for item in synthetic.copy_benchmark(originals, seed):
        rows.append((*hash_file(item.data), len(item.data)))
        items.append(dataclasses.replace(item, data=b""))
    generate_s = time.perf_counter() - start
    phash = np.array([r[0] for r in rows], np.uint64)
    colour = np.array([r[1] for r in rows], np.uint64)
    db = work / "db-copies"
    shutil.rmtree(db, ignore_errors=True)
    with Catalog.open(db) as catalog:
        ids = insert_hashes(catalog, [item.name for item in items], phash, colour, [r[2] for r in rows],
                            [r[3] for r in rows], [r[4] for r in rows])
        start = time.perf_counter()
        groups = copies.copy_groups(catalog)
        sql_s = time.perf_counter() - start
        pairs = copies.copy_pairs(catalog)
        sweep = {}
        for threshold in SWEEP:
            other = synthetic.score_copies(items, [[row["path"] for row in g["images"]]
                                                   for g in copies.copy_groups(catalog, threshold)])
            sweep[threshold] = {"recall": {k: round(v, 3) for k, v in other["recall"].items()},
                                "lookalike_precision": round(other["lookalike_precision"], 4),
                                "pair_precision": round(other["pair_precision"], 3),
                                "originals_merged": round(other["originals_merged"], 3)}
    index = {image_id: i for i, image_id in enumerate(ids)}
    found = {(index[p["id_a"]], index[p["id_b"]]) for p in pairs}
    exact = exact_pairs(phash, colour, copies.DEFAULT_DISTANCE, copies.COLOUR_DISTANCE)
    is_original = [item.kind == "original" for item in items]
    original_pairs = sum(1 for i, j in exact if is_original[i] and is_original[j])
    scores = synthetic.score_copies(items, [[row["path"] for row in g["images"]] for g in groups])
    group_of = {row["path"]: n for n, g in enumerate(groups) for row in g["images"]}
    original = {item.family: item.name for item in items if item.kind == "original"}
    crops = [item for item in items if item.kind == "crop"]
    by_amount = {}
    for low, high in zip((0.0, *CROP_BUCKETS), CROP_BUCKETS, strict=False):
        inside = [c for c in crops if low < c.amount <= high or (low == 0 and c.amount == 0)]
        caught = [c.name in group_of and group_of[c.name] == group_of.get(original[c.family]) for c in inside]
        by_amount[f"{low:.1%}-{high:.1%}".replace(".0%", "%")] = round(float(np.mean(caught)), 3) if caught else None
    return ({"originals": originals, "images": len(items), "threshold": copies.DEFAULT_DISTANCE,
             "colour_distance": copies.COLOUR_DISTANCE, "generate_and_hash_s": round(generate_s, 1),
             "sql_s": round(sql_s, 2), "groups": len(groups),
             "recall": {k: round(v, 3) for k, v in scores["recall"].items()},
             "crop_recall_by_largest_side": by_amount,
             "lookalike_precision": round(scores["lookalike_precision"], 4),
             "pair_precision": round(scores["pair_precision"], 3),
             "pair_precision_per_kind": {k: round(v, 3) for k, v in scores["pair_precision_per_kind"].items()},
             "originals_merged": round(scores["originals_merged"], 3),
             "matching_original_pairs": original_pairs, "original_pairs": originals * (originals - 1) // 2,
             "by_threshold": sweep,
             "sql_pairs": len(found), "exact_pairs": len(exact),
             "sql_recall_vs_exact": round(len(found & exact) / max(1, len(exact)), 4),
             "sql_pairs_not_exact": len(found - exact)},
            phash[[i for i, item in enumerate(items) if item.kind == "original"]],
            colour[[i for i, item in enumerate(items) if item.kind == "original"]])


def hashing(model: ClipModel, work: Path, images: int = 500, rounds: int = 3) -> dict:
    """Part 2: the loader on the same `images` photo-sized files with and without hashing (best of `rounds`
    each, alternating), and our hashes against imagehash's pHash on their decoded pixels."""
    from clipsearch.loader import load as loader
    paths = common.write_images(work / "images-hashing", images, seed=77)
    real = loader._hashes
    speed: dict[str, list[float]] = {"with": [], "without": []}
    try:
        for _ in range(rounds):
            for label in ("without", "with"):
                loader._hashes = real if label == "with" else (lambda image: (None, None))
                db = work / "db-hashing"
                shutil.rmtree(db, ignore_errors=True)
                with clipsearch.open(db, model=model) as photos:
                    summary = photos.load(paths[0].parent, batch_size=64)
                assert summary.loaded == images, summary.line()
                speed[label].append(images / summary.seconds)
    finally:
        loader._hashes = real
    decoded = [decode(Image.open(p), HASH_DECODE_SIZE) for p in paths]
    start = time.perf_counter()
    ours = [image_hashes(im) for im in decoded]
    ours_ms = (time.perf_counter() - start) / len(decoded) * 1000
    out = {"images": images, "loader_without_hashes_images_per_s": round(max(speed["without"]), 1),
           "loader_with_hashes_images_per_s": round(max(speed["with"]), 1),
           "hash_ms_per_image": round(ours_ms, 3), "imagehash_phash_ms_per_image": None,
           "mean_bits_from_imagehash_phash": None}
    try:
        import imagehash
    except ImportError:
        return out
    start = time.perf_counter()
    theirs = [int(str(imagehash.phash(im)), 16) for im in decoded]
    out["imagehash_phash_ms_per_image"] = round((time.perf_counter() - start) / len(decoded) * 1000, 3)
    out["mean_bits_from_imagehash_phash"] = round(float(np.mean([(a[0] ^ b).bit_count()
                                                                for a, b in zip(ours, theirs, strict=True)])), 3)
    out["same_as_imagehash_phash"] = round(float(np.mean([a[0] == b for a, b in zip(ours, theirs, strict=True)])), 3)
    return out


def scale(rows: int, phash: np.ndarray, colour: np.ndarray, work: Path, seed: int = 43) -> dict:
    """Part 3: `rows` hash values made from real ones, 1% planted copies; SQL against numpy all pairs."""
    rng = np.random.default_rng(seed)
    planted = rows // 100
    distinct = rows - planted
    base = rng.integers(0, len(phash), distinct)
    flips = np.packbits(rng.random((distinct, 64)) < 0.25, axis=1).view(">u8").ravel().astype(np.uint64)
    values = phash[base] ^ flips
    colours = colour[base]
    sources = rng.choice(distinct, planted, replace=False)
    copy_flips = np.zeros(planted, np.uint64)
    for k, bits in enumerate(rng.integers(0, copies.DEFAULT_DISTANCE + 1, planted)):
        for bit in rng.choice(64, bits, replace=False):
            copy_flips[k] |= np.uint64(1) << np.uint64(bit)
    values = np.concatenate([values, values[sources] ^ copy_flips])
    colours = np.concatenate([colours, colours[sources]])
    db = work / "db-copies-scale"
    shutil.rmtree(db, ignore_errors=True)
    with Catalog.open(db) as catalog:
        ids = insert_hashes(catalog, [f"/bench/{i:08d}.jpg" for i in range(rows)], values, colours)
        catalog.command("OPTIMIZE TABLE images FINAL")
        start = time.perf_counter()
        pairs = copies.copy_pairs(catalog, copies.DEFAULT_DISTANCE)
        sql_s = time.perf_counter() - start
    index = {image_id: i for i, image_id in enumerate(ids)}
    found = {(index[p["id_a"]], index[p["id_b"]]) for p in pairs}
    start = time.perf_counter()
    exact = exact_pairs(values, colours, copies.DEFAULT_DISTANCE, copies.COLOUR_DISTANCE)
    numpy_s = time.perf_counter() - start
    planted_pairs = {(int(s), distinct + k) for k, s in enumerate(sources)}
    bands, partitions = copies.band_plan(rows, copies.DEFAULT_DISTANCE)
    return {"rows": rows, "threshold": copies.DEFAULT_DISTANCE, "bands": bands, "partitions": partitions,
            "sql_s": round(sql_s, 1), "candidate_pairs": int(pairs[0]["compared"]) if pairs else 0,
            "all_pairs": rows * (rows - 1) // 2, "numpy_all_pairs_s": round(numpy_s, 1),
            "exact_pairs": len(exact), "sql_pairs": len(found),
            "recall_vs_exact": round(len(found & exact) / max(1, len(exact)), 4),
            "sql_pairs_not_exact": len(found - exact),
            "planted_pairs": len(planted_pairs), "planted_found": len(planted_pairs & found)}


def run(originals: int, rows: int, model: ClipModel, work: Path, loader_images: int = 500) -> dict:
    start = time.perf_counter()
    result, phash, colour = quality(originals, work)
    print(result, flush=True)
    out = {"quality": result, "hashing": hashing(model, work, loader_images)}
    print(out["hashing"], flush=True)
    out["scale"] = scale(rows, phash, colour, work)
    out["seconds"] = round(time.perf_counter() - start)
    return out
