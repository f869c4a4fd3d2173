"""Copies of one picture: images whose perceptual hashes (clipsearch/images/hashes.py) differ in a few bits.

Each image is compared whole and by its central 85% (a crop shows about the middle of its original; a frame
falls outside the middle): two images are copies when one view of each, whole/whole, centre/centre or
centre/whole, is within `threshold` bits of grey layout (pHash) and CHROMA_DISTANCE bits of colour layout,
and their mean colours within COLOUR_DISTANCE steps. The colour layout is what keeps pictures with little
detail apart (one object on a plain background: pHash then says little more than where the object is).

The SQL is the analysts' file sql/queries/near_copy_pairs.sql, run as it is. Comparing every pair is
quadratic, so candidates come from bands: each of several fixed shuffles of the 64 bits of a grey hash is cut
into `bands` bands, and two images are compared only if a view of each agrees exactly on one whole band. Two
hashes d bits apart always agree on some band when d < bands (pigeonhole); further apart, the d bits
fall into every band of one shuffle with a chance `band_miss` computes exactly, and independent shuffles
multiply it, so `band_plan` takes enough of them to miss a pair right at the threshold less than once in
MISS_CHANCE (closer pairs far less often). Bands are about log2(views) bits wide, so that each holds
about one view of unrelated pictures. Pairs are joined into groups (grouping.py), like the CLIP-distance ones.
"""
from __future__ import annotations

import math
from itertools import combinations
from typing import Any

from clipsearch.errors import QueryError, StoreError
from clipsearch.images.grouping import group_pairs
from clipsearch.images.hashes import MISSING, Hashes
from clipsearch.sql import read as read_sql
from clipsearch.store.catalog import Catalog

HASH_BITS = 64
# Each view of an image: (its grey layout, its colour layout); the pairs of views compared, one of each image.
VIEWS = {"whole": ("phash", "chroma_hash"), "centre": ("centre_phash", "centre_chroma_hash")}
VIEW_PAIRS = (("whole", "whole"), ("centre", "centre"), ("centre", "whole"), ("whole", "centre"))
DEFAULT_DISTANCE = 10         # grey bits; measured in bench/copies.py (README: what it catches)
COLOUR_DISTANCE = 3           # colour_hash steps: a brightness change of 15% moves 1-3 steps
CHROMA_DISTANCE = 6           # chroma_hash bits (bench/copies.py: tighter loses crops, looser merges pictures)
MAX_DISTANCE = 24             # beyond this, pictures of a plain background with one object all "match"
BOUNDED_DISTANCE = 12         # over HTTP
MISS_CHANCE = 0.001           # a pair exactly at the threshold; closer pairs are missed far less often
MAX_PARTITIONS = 32
MAX_CANDIDATES = 2_000_000_000   # the CLI: as good as no limit
BOUNDED_CANDIDATES = 50_000_000  # over HTTP: candidate pairs compared in one request, about 2 s (bench/copies.py)
BOUNDED_SECONDS = 20
BOUNDED_MEMORY = 2_000_000_000
PAIRS_FILE = "queries/near_copy_pairs.sql"
TOO_MANY = "more candidate pairs than max_candidates"


def copy_distance(a: Hashes, b: Hashes, view_pairs: tuple = VIEW_PAIRS, colours: bool = True) -> int | None:
    """The rule of near_copy_pairs.sql for one pair, in Python: the fewest grey bits between a view of each
    image whose colour layouts agree too, None if none do or the mean colours are too far apart. `colours`
    false: the closest views' grey bits, whatever the colours."""
    if colours and (a.colour_hash ^ b.colour_hash).bit_count() > COLOUR_DISTANCE:
        return None
    grey = [(getattr(a, VIEWS[x][0]) ^ getattr(b, VIEWS[y][0])).bit_count() for x, y in view_pairs
            if not colours or (getattr(a, VIEWS[x][1]) ^ getattr(b, VIEWS[y][1])).bit_count() <= CHROMA_DISTANCE]
    return min(grey, default=None)


def check_distance(threshold: Any, ceiling: int = MAX_DISTANCE) -> int:
    """A threshold in differing grey hash bits: a whole number from 0 to `ceiling` (the default for None)."""
    if threshold is None:
        return DEFAULT_DISTANCE
    if isinstance(threshold, bool):
        raise QueryError(f"the threshold must be a number, got {threshold!r}")
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise QueryError(f"the threshold must be a number, got {threshold!r}") from None
    if not (math.isfinite(value) and value == int(value) and 0 <= value <= ceiling):
        raise QueryError(f"the threshold for copies is a whole number of differing hash bits from 0 to {ceiling}, "
                         f"got {threshold}")
    return int(value)


def band_sizes(bands: int) -> list[int]:
    """The widths of `bands` bands over the 64 bits, as the SQL cuts them."""
    return [(j + 1) * HASH_BITS // bands - j * HASH_BITS // bands for j in range(bands)]


def band_miss(distance: int, bands: int) -> float:
    """Chance that `distance` differing bits, placed at random, leave no band of a shuffle clean
    (inclusion-exclusion over the bands they would have to avoid)."""
    sizes = band_sizes(bands)
    total = math.comb(HASH_BITS, distance)
    clean = 0
    for k in range(1, bands + 1):
        ways = sum(math.comb(HASH_BITS - sum(group), distance) for group in combinations(sizes, k))
        clean += (-1) ** (k + 1) * ways
    return 1 - clean / total


def band_plan(hashes: int, distance: int) -> tuple[int, int]:
    """(bands, partitions) for a band search over `hashes` grey hashes: bands of about log2(hashes) bits (8 to
    16), more and narrower if that is what it takes to miss a pair at `distance` less than once in MISS_CHANCE
    with at most MAX_PARTITIONS shuffles."""
    bits = min(16, max(8, math.ceil(math.log2(max(hashes, 2)))))
    for bands in range(math.ceil(HASH_BITS / bits), 17):
        miss = band_miss(distance, bands)
        if miss == 0:
            return bands, 1
        partitions = math.ceil(math.log(MISS_CHANCE) / math.log(miss))
        if partitions <= MAX_PARTITIONS:
            return bands, partitions
    return 16, MAX_PARTITIONS


def copy_pairs(catalog: Catalog, threshold: object = None, bounded: bool = False) -> list[dict]:
    """Pairs {id_a, id_b, distance, colour_distance} of distinct images that are copies (the module's doc) at
    `threshold` grey bits, closest first; `distance` is that of their closest views. Rows without hashes take
    no part.

    `bounded` (for requests from the network): the threshold at most BOUNDED_DISTANCE, at most
    BOUNDED_CANDIDATES candidate pairs, and the statement stopped past BOUNDED_SECONDS or BOUNDED_MEMORY.
    """
    distance = check_distance(threshold, BOUNDED_DISTANCE if bounded else MAX_DISTANCE)
    rows = int(catalog.query(f"SELECT count() AS n FROM images WHERE NOT ({MISSING})")[0]["n"])
    if rows < 2:
        return []
    bands, partitions = band_plan(rows * len(VIEWS), distance)
    limit = BOUNDED_CANDIDATES if bounded else MAX_CANDIDATES
    settings = (f"\nSETTINGS max_execution_time = {BOUNDED_SECONDS}, max_memory_usage = {BOUNDED_MEMORY}"
                if bounded else "")
    params = {"max_distance": distance, "max_chroma_distance": CHROMA_DISTANCE, "max_colour_distance": COLOUR_DISTANCE,
              "bands": bands, "partitions": partitions, "max_candidates": limit}
    try:
        return catalog.query(read_sql(PAIRS_FILE) + settings, params)
    except StoreError as exc:
        if TOO_MANY in str(exc) or (bounded and any(code in str(exc) for code in
                                                    ("TIMEOUT_EXCEEDED", "MEMORY_LIMIT_EXCEEDED"))):
            where = "a request" if bounded else "one query"
            raise QueryError(f"finding copies within {distance} bits means comparing more than {limit:,} candidate "
                             f"pairs, more than {where} may; use a smaller threshold"
                             + (", or `clipsearch duplicates`" if bounded else "")) from None
        raise


def copy_groups(catalog: Catalog, threshold: object = None, bounded: bool = False) -> list[dict]:
    """Groups of copies, largest group first: {"images": [rows, the largest (highest-resolution, then
    biggest) file first: the one to keep], "max_distance": the most grey bits apart of a grouped pair}."""
    pairs = copy_pairs(catalog, threshold, bounded)
    return group_pairs(catalog, pairs, keep_first=lambda r: (-r["width"] * r["height"], -r["file_size"], r["path"]))


def hashes_missing(catalog: Catalog) -> int:
    """How many images lack perceptual hashes (loaded before they existed, or not decodable)."""
    return int(catalog.query(f"SELECT count() AS n FROM images WHERE ({MISSING}) AND media = 'image'")[0]["n"])
