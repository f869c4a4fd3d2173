"""The measured numbers behind a search's plan and statement: when the HNSW index is used, how wide it
searches and how many neighbours it fetches (`index_fetch`, which the statement writes and the planner
prices), how rows are read, and how the index is tuned. Each measurement is in bench/results.md."""
from __future__ import annotations

import math
from dataclasses import dataclass

HNSW_SEARCH_BEAM = 2048   # hnsw_candidate_list_size_for_search (ef at query time) of an index not tuned
HNSW_TIE_MARGIN = 16      # neighbours fetched past a page, so rows tied at its edge sort by id
MAX_INDEX_FETCH = 1000.0  # ClickHouse's largest vector_search_index_fetch_multiplier
# An exact ranking reads its rows on two threads from 4,096 rows on (ClickHouse's default: 163,840 rows or
# 24 MB): a filter column's projection hands it one short range, e.g. 10,000 rows for a 1% filter, which
# one thread read 25-35% slower at 1M x 512 (bench/results.md).
CONCURRENT_READ = ("merge_tree_min_rows_for_concurrent_read = 4096, "
                   "merge_tree_min_bytes_for_concurrent_read = 8388608")
# Searches read through ClickHouse's cache of decompressed blocks (the embedded engine sizes it:
# connection.uncompressed_cache_bytes; a server's `uncompressed_cache_size`): the page's rows are a block of
# every column each, and a table small enough keeps its vectors there too (200k x 128: 12 -> 8 ms).
CACHED_READ = "use_uncompressed_cache = 1"

# With filters, the HNSW index is asked for POSTFILTER_SAFETY / share x k neighbours (share: the
# fraction of rows the filters match, estimated in SQL first), at most 1000 x k (ClickHouse's largest). Below
# MIN_INDEX_SHARE = 8 / 1000 the matching rows are ranked exactly (between it and 12 / 1000 the fetch is at its
# largest). 12, not 8: measured at 1M x 512 with a 10% filter, 4 reached recall@10 0.948, 8 0.955 in one run and
# 0.948 in another (2026-12-07), 12 0.975 and 0.972-0.973 (+6-10 ms). See bench/README.md (issue 37, 2026-12-07).
POSTFILTER_SAFETY = 12.0
MIN_INDEX_SHARE = 8.0 / MAX_INDEX_FETCH
# A filter on a filter column (Catalog.add_filter_column) that leaves at most EXACT_ROWS rows is ranked
# exactly: ClickHouse reads just those rows from the column's projection, about as fast as an index search
# and exact. See bench/results.md.
EXACT_ROWS = 20_000
SAMPLE_ROWS = 100_000   # rows the filter share is estimated on: a few ms at any table size
MAX_CACHED_COUNTS = 256  # filter shares remembered for one table state

# Index tuning: the beams tried (smallest first) and the recall@10 a search should reach.
TUNING_BEAMS = (16, 32, 64, 128, 256, 512, 1024, 2048)
RECALL_TARGET = 0.95
TUNING_QUERIES = 20
# Stored images find their neighbours more easily than an uploaded photo does (200k x 128: recall 1.0 at beam 16
# where unseen images reached 0.96, and 0.98 at 64, for 0.1 ms more): image beams start at 64.
IMAGE_BEAMS = TUNING_BEAMS[2:]
# What people type: the index is tuned on these, encoded by the store's model (Searcher.tune_index).
TUNING_TEXTS = ("a photo of a dog", "a red car at night", "people on a beach at sunset", "a bottle with a white label",
                "a cat asleep on a sofa", "a city street in the rain", "a bowl of fruit on a table",
                "snowy mountains under a blue sky", "a child playing football", "a plate of food",
                "a bicycle against a wall", "an old building with columns", "flowers in a garden",
                "a laptop on a desk", "a bird on a branch", "a boat on a lake", "a smiling woman",
                "a crowd at a concert", "a forest path in autumn", "a close-up of a shoe")


@dataclass(frozen=True)
class IndexFetch:
    """What one index search asks ClickHouse for: statement.search_sql writes it, Searcher.costs prices it."""
    window: int          # neighbours the query around the index ranks: offset + k, the tie margin, ids left out
    multiplier: float    # vector_search_index_fetch_multiplier: for a filter's postfilter and for rescoring
    wanted: int          # neighbours fetched: multiplier x window
    candidates: int      # hnsw_candidate_list_size_for_search: the beam grown with k, or `wanted` if more


# Where the table holds videos, an index search fetches this many times the page: the nearest neighbours of a
# query are often several moments of one video, of which the page keeps the best (LIMIT n BY video), and a
# page that comes back short is ranked again exactly (Searcher.rank)
MOMENT_FETCH = 4


def index_fetch(k: int, offset: int = 0, beam: int | None = None, postfilter: float = 1.0, rescore: int = 0,
                excluded: int = 0) -> IndexFetch:
    """The index search for a page of `k` from `offset`. `beam` reached the recall target for k = 10 when the
    index was tuned (HNSW_SEARCH_BEAM untuned) and grows with k; a filter makes it fetch `postfilter` x as
    many neighbours, of which those that do not match are dropped; `rescore` (store.indexes.RESCORE_FETCH)
    that many times more, ranked again by their Float32 vectors; `excluded` images queried by id are left
    out around it."""
    window = k + offset + HNSW_TIE_MARGIN + excluded
    multiplier = min(MAX_INDEX_FETCH, max(1.0, float(postfilter)) * max(1, rescore))
    wanted = math.ceil(multiplier * window)
    grown = math.ceil((beam or HNSW_SEARCH_BEAM) * max(1.0, k / 10))
    return IndexFetch(window, multiplier, wanted, max(grown, wanted))
