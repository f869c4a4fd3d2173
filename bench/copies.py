"""Copies by perceptual hash (`clipsearch duplicates`, mode copies), against known answers and exact scans.

1. quality: generated originals (photo-sized), a look-alike of each (another picture of the same colour
   and shape) and one copy per kind of change (shapes.COPY_KINDS), hashed as the loader hashes them;
   the hash values go into a table and `copy_groups` groups them in SQL at the default threshold. Recall
   per kind of change, precision (look-alikes grouped, and pairs in a group that are not one picture),
   crop recall by how much was cropped, the SQL pairs against an exact all-pairs numpy scan, and the same
   images grouped by the simpler rules clipsearch had before (RULES: the whole picture's pHash alone, then
   with the centre views), from exact all-pairs scans.
2. hashing: the cost of hashing in the loader (loader images/s with and without it on the same files) and
   against the imagehash library's pHash (speed and how many bits ours differs), where imagehash is installed.
3. not caught: changes clipsearch does not look for (mirrors, quarter turns, a 5 degree tilt, crops of 20%
   per side, a frame of 15% of the side, greyscale), on 200 generated pictures: the share grouped with
   their original at the default threshold and the median distance (the closest views whose colour
   layouts agree; none: no such views, or mean colours too far apart).
4. demo catalogue: the 2,000 distinct pictures of `clipsearch demo` (one small shape on a plain, gradient or
   noise background, many under 100 pixels), hashed as the loader hashes them: how many the default rule and
   the rule before (RULES) put in groups, every one of them a false match.
5. scale: `copy_pairs` on 100,000 rows of hash values (each row the hashes of an original of part 1 with a
   quarter of the bits of both grey hashes flipped, 1% of rows planted copies of others with 0 to the
   threshold bits flipped) against an exact all-pairs Hamming scan in numpy over the same values.
"""
from __future__ import annotations

import dataclasses
import io
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps

import clipsearch
from bench import common
from clipsearch.images import copies
from clipsearch.images.decode import decode
from clipsearch.images.grouping import components
from clipsearch.images.hashes import HASH_COLUMNS, HASH_DECODE_SIZE, Hashes, image_hashes
from clipsearch.models.clip import ClipModel
from clipsearch.service import shapes
from clipsearch.store.catalog import Catalog

CROP_BUCKETS = (0.05, 0.075, 0.10)  # recall of crops by the largest share trimmed from a side
SWEEP = (0, 4, 6, 8, 10, 12)         # thresholds the quality run also groups at
VIEWS, VIEW_PAIRS = copies.VIEWS, copies.VIEW_PAIRS
# The rules compared in part 1: (name, view pairs, threshold, whether the colour layouts must agree).
RULES = (("whole pHash (before)", (("whole", "whole"),), 8, False),
         ("whole and centre pHash", VIEW_PAIRS, copies.DEFAULT_DISTANCE, False),
         ("whole and centre pHash + colour layout (default)", VIEW_PAIRS, copies.DEFAULT_DISTANCE, True))

Columns = dict[str, np.ndarray]   # hash column -> one uint64 per image


def hash_file(data: bytes) -> tuple[tuple[int, ...], int, int]:
    """(the hashes, width, height) as the loader computes them (JPEGs decoded at reduced scale)."""
    image = Image.open(io.BytesIO(data))
    width, height = image.size
    return tuple(image_hashes(decode(image, HASH_DECODE_SIZE))), width, height


def insert_hashes(catalog: Catalog, names: list[str], hashes: Columns,
                  width: list[int] | None = None, height: list[int] | None = None,
                  file_size: list[int] | None = None) -> list[str]:
    """Rows with these hash values (no vectors) under ids 0, 1, ... in hex; returns the ids."""
    n = len(names)
    ids = [f"{i:032x}" for i in range(n)]
    for lo in range(0, n, 50_000):
        hi = min(n, lo + 50_000)
        catalog.images.insert(pa.table({
            "id": ids[lo:hi], "path": names[lo:hi], "model": ["bench"] * (hi - lo),
            "width": pa.array((width or [256] * n)[lo:hi], pa.uint32()),
            "height": pa.array((height or [256] * n)[lo:hi], pa.uint32()),
            "file_size": pa.array((file_size or [0] * n)[lo:hi], pa.uint64()),
            **{c: pa.array(hashes[c][lo:hi], pa.uint64()) for c in HASH_COLUMNS}}))
    return ids


def _near(a: np.ndarray, b: np.ndarray, most: int) -> np.ndarray:
    return np.bitwise_count(a[:, None] ^ b[None, :]) <= most


def exact_pairs(hashes: Columns, distance: int, view_pairs: tuple = VIEW_PAIRS, chroma: bool = True,
                chunk: int = 256) -> set[tuple[int, int]]:
    """Every pair (i < j) that is a copy by the rule of near_copy_pairs.sql (with `view_pairs`, each pair and its
    reverse, and the colour layouts or not), by comparing all pairs (numpy, in blocks of rows)."""
    colour = hashes["colour_hash"]
    found: set[tuple[int, int]] = set()
    for lo in range(0, len(colour), chunk):
        block = slice(lo, lo + chunk)
        near = np.zeros((len(colour[block]), len(colour)), bool)
        for one, other in view_pairs:
            (grey_a, chroma_a), (grey_b, chroma_b) = VIEWS[one], VIEWS[other]
            match = _near(hashes[grey_a][block], hashes[grey_b], distance)
            i, j = np.nonzero(match)
            if chroma:  # only where the grey layouts match: few pairs
                far = np.bitwise_count(hashes[chroma_a][block][i] ^ hashes[chroma_b][j]) > copies.CHROMA_DISTANCE
                match[i[far], j[far]] = False
            near |= match
        i, j = np.nonzero(near)
        i += lo
        keep = (j > i) & (np.bitwise_count(colour[i] ^ colour[j]) <= copies.COLOUR_DISTANCE)
        found.update(zip(i[keep].tolist(), j[keep].tolist(), strict=True))
    return found


def _rounded(scores: dict) -> dict:
    return {"recall": {k: round(v, 3) for k, v in scores["recall"].items()},
            "lookalike_precision": round(scores["lookalike_precision"], 4),
            "pair_precision": round(scores["pair_precision"], 3),
            "originals_merged": round(scores["originals_merged"], 3)}


def _groups(pairs: set[tuple[int, int]], names: list[str]) -> list[list[str]]:
    """Pairs of indexes joined into groups of names (connected components)."""
    return [[names[x] for x in members] for members in components(pairs).values()]


def quality(originals: int, work: Path, seed: int = 41) -> tuple[dict, Columns]:
    """Part 1; also returns the originals' hashes for part 3."""
    start = time.perf_counter()
    items, rows = [], []
    for item in shapes.copy_benchmark(originals, seed):
        rows.append((*hash_file(item.data), len(item.data)))
        items.append(dataclasses.replace(item, data=b""))
    generate_s = time.perf_counter() - start
    hashes = {c: np.array([r[0][k] for r in rows], np.uint64) for k, c in enumerate(HASH_COLUMNS)}
    names = [item.name for item in items]
    db = work / "db-copies"
    shutil.rmtree(db, ignore_errors=True)
    with Catalog.open(db) as catalog:
        ids = insert_hashes(catalog, names, hashes, [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])
        start = time.perf_counter()
        groups = copies.copy_groups(catalog)
        sql_s = time.perf_counter() - start
        pairs = copies.copy_pairs(catalog)
        sweep = {t: _rounded(shapes.score_copies(items, [[row["path"] for row in g["images"]]
                                                            for g in copies.copy_groups(catalog, t)]))
                 for t in SWEEP}
    index = {image_id: i for i, image_id in enumerate(ids)}
    found = {(index[p["id_a"]], index[p["id_b"]]) for p in pairs}
    exact = exact_pairs(hashes, copies.DEFAULT_DISTANCE)
    rules = {}
    for name, view_pairs, threshold, chroma in RULES:
        rule_pairs = exact if (view_pairs, threshold, chroma) == (VIEW_PAIRS, copies.DEFAULT_DISTANCE, True) else \
            exact_pairs(hashes, threshold, view_pairs, chroma)
        rules[name] = {"threshold": threshold, **_rounded(shapes.score_copies(items, _groups(rule_pairs, names)))}
    is_original = [item.kind == "original" for item in items]
    original_pairs = sum(1 for i, j in exact if is_original[i] and is_original[j])
    scores = shapes.score_copies(items, [[row["path"] for row in g["images"]] for g in groups])
    group_of = {row["path"]: n for n, g in enumerate(groups) for row in g["images"]}
    original = {item.family: item.name for item in items if item.kind == "original"}
    by_amount = {}
    for kind in ("crop", "border"):
        changed = [item for item in items if item.kind == kind]
        edges = (0.0, *CROP_BUCKETS) if kind == "crop" else (1, 4, 7, 10)
        bucket = {}
        for low, high in zip(edges, edges[1:], strict=False):
            inside = [c for c in changed if low < c.amount <= high or (low == 0 and c.amount == 0)]
            caught = [c.name in group_of and group_of[c.name] == group_of.get(original[c.family]) for c in inside]
            label = f"{low:.1%}-{high:.1%}".replace(".0%", "%") if kind == "crop" else f"{low + 1:.0f}-{high:.0f} px"
            bucket[label] = round(float(np.mean(caught)), 3) if caught else None
        by_amount[kind] = bucket
    keep = [i for i, item in enumerate(items) if item.kind == "original"]
    return ({"originals": originals, "images": len(items), "threshold": copies.DEFAULT_DISTANCE,
             "colour_distance": copies.COLOUR_DISTANCE, "chroma_distance": copies.CHROMA_DISTANCE,
             "generate_and_hash_s": round(generate_s, 1), "sql_s": round(sql_s, 2), "groups": len(groups),
             "recall": {k: round(v, 3) for k, v in scores["recall"].items()},
             "crop_recall_by_largest_side": by_amount["crop"], "border_recall_by_width": by_amount["border"],
             "lookalike_precision": round(scores["lookalike_precision"], 4),
             "pair_precision": round(scores["pair_precision"], 3),
             "pair_precision_per_kind": {k: round(v, 3) for k, v in scores["pair_precision_per_kind"].items()},
             "originals_merged": round(scores["originals_merged"], 3),
             "matching_original_pairs": original_pairs, "original_pairs": originals * (originals - 1) // 2,
             "by_threshold": sweep, "rules": rules,
             "sql_pairs": len(found), "exact_pairs": len(exact),
             "sql_recall_vs_exact": round(len(found & exact) / max(1, len(exact)), 4),
             "sql_pairs_not_exact": len(found - exact)},
            {c: v[keep] for c, v in hashes.items()})


def _framed(image: Image.Image) -> Image.Image:
    return ImageOps.expand(image, round(0.15 * min(image.size)), fill=(255, 255, 255))


def _cropped(image: Image.Image) -> Image.Image:
    width, height = image.size
    return image.crop((round(0.2 * width), round(0.2 * height), round(0.8 * width), round(0.8 * height)))


NOT_CAUGHT = {"mirrored": ImageOps.mirror, "quarter turn": lambda im: im.rotate(90, expand=True),
              "tilted 5 degrees": lambda im: im.rotate(5, Image.Resampling.BILINEAR),
              "cropped 20% per side": _cropped, "white frame of 15% of the side": _framed,
              "greyscale": lambda im: ImageOps.grayscale(im).convert("RGB")}


def not_caught(pictures: int = 200, seed: int = 47) -> dict:
    """Part 3: the share of each change in NOT_CAUGHT that the default rule still groups, and the median grey
    bits between the closest views of copy and original, whatever their colours."""
    rng = np.random.default_rng(seed)
    apart: dict[str, list] = {name: [] for name in NOT_CAUGHT}
    grey: dict[str, list] = {name: [] for name in NOT_CAUGHT}
    for _ in range(pictures):
        _, data = shapes.make_image(rng, dims_range=(200, 640))
        image = decode(Image.open(io.BytesIO(data)))
        original = image_hashes(decode(Image.open(io.BytesIO(data)), HASH_DECODE_SIZE))
        for name, change in NOT_CAUGHT.items():
            buffer = io.BytesIO()
            change(image).save(buffer, "JPEG", quality=90)
            copy = Hashes(*hash_file(buffer.getvalue())[0])
            apart[name].append(copies.copy_distance(original, copy))
            grey[name].append(copies.copy_distance(original, copy, colours=False))
    return {"pictures": pictures, "threshold": copies.DEFAULT_DISTANCE, **{
        name: {"caught": round(sum(d is not None and d <= copies.DEFAULT_DISTANCE for d in apart[name]) / pictures, 3),
               "median_grey_bits": int(np.median(grey[name]))} for name in NOT_CAUGHT}}


def demo_catalogue(work: Path, count: int = 2000) -> dict:
    """Part 3: the demo catalogue's distinct pictures grouped by each rule (every group is a false match)."""
    shapes.make_catalogue(work / "demo-catalogue", count)
    paths = sorted((work / "demo-catalogue" / "images").iterdir())
    rows = [hash_file(path.read_bytes())[0] for path in paths]
    hashes = {c: np.array([r[k] for r in rows], np.uint64) for k, c in enumerate(HASH_COLUMNS)}
    out: dict = {"images": len(paths)}
    for name, view_pairs, threshold, chroma in RULES:
        groups = _groups(exact_pairs(hashes, threshold, view_pairs, chroma), [p.name for p in paths])
        out[name] = {"threshold": threshold, "groups": len(groups), "images_in_groups": sum(map(len, groups))}
    db = work / "db-copies-demo"
    shutil.rmtree(db, ignore_errors=True)
    with Catalog.open(db) as catalog:
        insert_hashes(catalog, [p.name for p in paths], hashes)
        groups = copies.copy_groups(catalog)
    out["sql_groups"] = len(groups)
    out["sql_images_in_groups"] = sum(len(g["images"]) for g in groups)
    return out


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
                loader._hashes = real if label == "with" else (lambda image: None)
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
    out["mean_bits_from_imagehash_phash"] = round(float(np.mean([(a.phash ^ b).bit_count()
                                                                for a, b in zip(ours, theirs, strict=True)])), 3)
    out["same_as_imagehash_phash"] = round(float(np.mean([a.phash == b for a, b in zip(ours, theirs, strict=True)])),
                                           3)
    return out


def _flips(rng: np.random.Generator, rows: int, bits: np.ndarray | float) -> np.ndarray:
    """One uint64 per row with bits set at random: each bit with chance `bits`, or exactly bits[row] of them."""
    if np.isscalar(bits):
        return np.packbits(rng.random((rows, 64)) < bits, axis=1).view(">u8").ravel().astype(np.uint64)
    out = np.zeros(rows, np.uint64)
    for k, count in enumerate(bits):
        for bit in rng.choice(64, int(count), replace=False):
            out[k] |= np.uint64(1) << np.uint64(bit)
    return out


def scale(rows: int, originals: Columns, work: Path, seed: int = 43) -> dict:
    """Part 4: `rows` rows of hash values made from real ones, 1% planted copies; SQL against numpy all pairs.
    The same flips go to a row's two grey hashes, which keeps them as far apart as a real picture's."""
    rng = np.random.default_rng(seed)
    planted = rows // 100
    distinct = rows - planted
    base = rng.integers(0, len(originals["phash"]), distinct)
    sources = rng.choice(distinct, planted, replace=False)
    flips = _flips(rng, distinct, 0.25)
    copy_flips = _flips(rng, planted, rng.integers(0, copies.DEFAULT_DISTANCE + 1, planted))
    values = {}
    for column, hashes in originals.items():
        distinct_values = hashes[base] ^ flips if column in ("phash", "centre_phash") else hashes[base]
        copy_values = distinct_values[sources] ^ (copy_flips if column in ("phash", "centre_phash") else 0)
        values[column] = np.concatenate([distinct_values, copy_values])
    db = work / "db-copies-scale"
    shutil.rmtree(db, ignore_errors=True)
    with Catalog.open(db) as catalog:
        ids = insert_hashes(catalog, [f"/bench/{i:08d}.jpg" for i in range(rows)], values)
        catalog.owner_sql("OPTIMIZE TABLE images FINAL")
        start = time.perf_counter()
        pairs = copies.copy_pairs(catalog, copies.DEFAULT_DISTANCE)
        sql_s = time.perf_counter() - start
    index = {image_id: i for i, image_id in enumerate(ids)}
    found = {(index[p["id_a"]], index[p["id_b"]]) for p in pairs}
    start = time.perf_counter()
    exact = exact_pairs(values, copies.DEFAULT_DISTANCE)
    numpy_s = time.perf_counter() - start
    planted_pairs = {(int(s), distinct + k) for k, s in enumerate(sources)}
    bands, partitions = copies.band_plan(rows * len(copies.VIEWS), copies.DEFAULT_DISTANCE)
    return {"rows": rows, "threshold": copies.DEFAULT_DISTANCE, "bands": bands, "partitions": partitions,
            "sql_s": round(sql_s, 1), "candidate_pairs": int(pairs[0]["compared"]) if pairs else 0,
            "all_pairs": rows * (rows - 1) // 2, "numpy_all_pairs_s": round(numpy_s, 1),
            "exact_pairs": len(exact), "sql_pairs": len(found),
            "recall_vs_exact": round(len(found & exact) / max(1, len(exact)), 4),
            "sql_pairs_not_exact": len(found - exact),
            "planted_pairs": len(planted_pairs), "planted_found": len(planted_pairs & found)}


def run(originals: int, rows: int, model: ClipModel, work: Path, loader_images: int = 500) -> dict:
    start = time.perf_counter()
    result, hashes = quality(originals, work)
    print(result, flush=True)
    out = {"quality": result, "not_caught": not_caught(), "demo_catalogue": demo_catalogue(work)}
    print(out["not_caught"], out["demo_catalogue"], flush=True)
    out["hashing"] = hashing(model, work, loader_images)
    print(out["hashing"], flush=True)
    out["scale"] = scale(rows, hashes, work)
    out["seconds"] = round(time.perf_counter() - start)
    return out
