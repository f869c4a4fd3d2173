"""Search at real CLIP size: clipsearch beside its peers on one table, per filter selectivity.

The table: the bundled model's embeddings of 4,000 generated images, lifted to `dim` dimensions by a
random orthonormal map (cosine similarities unchanged) and each repeated with a small random perturbation
in `dim` dimensions, so the table is clustered like real CLIP embeddings (ViT-B-32: 512-d) with many near
neighbours; columns sel_10, sel_1, sel_0_1 mark 10%, 1% and 0.1% of rows at random. Queries: 20 texts
and 20 unseen images, lifted the same way.

Every engine answers the same 40 queries, k=10, with the same filter, in interleaved rounds (each query
goes to each engine in turn, so a busy moment of the machine hits them all):
- clipsearch: `Searcher.search` as the service calls it, with a stand-in model that returns the query's
  vector, so its time is everything but encoding (table state, validation, the ranking SQL, the log);
  first without filter columns, then with sel_1 and sel_0_1 declared (`index create --filter-column`);
- its ranking SQL alone (`Searcher.rank`), and an exact scan without any index;
- numpy: brute force over all rows with the filter as a mask, and a gather of the matching rows;
- faiss: a flat inner-product index and HNSW (M 16), both with an IDSelectorBitmap for the filter;
- DuckDB: the same brute-force SQL (`array_cosine_distance` over FLOAT[dim]).
Recall@10 is against numpy's exact top 10 with the filter. faiss and DuckDB come with `pip install -e
'.[bench]'`; an engine that is not installed is skipped and said so.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

import clipsearch
from bench.common import ms_stats
from clipsearch.collection import Collection
from clipsearch.models.clip import ClipModel
from clipsearch.search import tuning
from clipsearch.search.filters import parse_filter
from clipsearch.search.query import Query
from clipsearch.search.searcher import SearchResult
from clipsearch.search.statement import QueryVector
from clipsearch.service import shapes
from clipsearch.store.columns import HIDDEN
from clipsearch.store.state import TableState

FILTERS = {"none": None, "10%": "sel_10", "1%": "sel_1", "0.1%": "sel_0_1"}
FILTER_COLUMNS = ("sel_1", "sel_0_1")   # declared for the second clipsearch run
K = 10
BASES, SEED = 4000, 5
HNSW = ("bf16", 16, 128)       # quantization, M, ef_construction
FAISS_HNSW = (16, 128)         # M, efConstruction (as clipsearch's index)
FAISS_EF_SEARCH = (64, 128, 256, 512, 1024, 2048)   # the smallest reaching recall 0.95 unfiltered is used
EXACT_QUERIES = 8              # the exact scan without an index costs ~0.5 s a query at 1M x 512


def lift(vectors: np.ndarray, dim: int, seed: int = 11) -> np.ndarray:
    """`vectors` in `dim` dimensions by a random orthonormal map: every cosine similarity is kept."""
    if dim == vectors.shape[1]:
        return vectors
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, vectors.shape[1])))
    return (vectors @ q.T).astype(np.float32)


def table_vectors(model: ClipModel, count: int, dim: int) -> np.ndarray:
    """The benchmark's `count` x `dim` table: the bundled model's generated images, lifted and perturbed."""
    return shapes.perturbed(lift(shapes.encode_generated(model, BASES, SEED), dim), count, SEED + 1)


def query_vectors(model: ClipModel, dim: int) -> np.ndarray:
    """20 text queries ("a red circle", ...) and 20 images none of the rows were made from."""
    texts = [shapes.query_text(c, s) for c in shapes.COLOURS for s in shapes.SHAPES][::2]
    queries = lift(np.concatenate([model.encode_texts(texts), shapes.encode_generated(model, 20, seed=999)]), dim)
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


class QueryModel:
    """Stands in for the CLIP model: "encodes" query text `"q<i>"`, or an image whose info["q"] is i, as the
    benchmark's i-th query vector; other texts (the index tuning's) by `model`, lifted to the table's space."""

    def __init__(self, label: str, queries: np.ndarray, model: ClipModel | None = None):
        self.label, self.queries, self.model = label, queries, model

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if self.model is not None and not all(t[:1] == "q" and t[1:].isdigit() for t in texts):
            lifted = lift(self.model.encode_texts(texts), self.queries.shape[1])
            return lifted / np.linalg.norm(lifted, axis=1, keepdims=True)
        return self.queries[[int(t[1:]) for t in texts]]

    def encode_images(self, images: list) -> np.ndarray:
        return self.queries[[int(image.info["q"]) for image in images]]


def query_image(i: int) -> Image.Image:
    """The i-th benchmark query as an image query (QueryModel "encodes" it): image queries use their own beam."""
    image = Image.new("RGB", (1, 1))
    image.info["q"] = i
    return image


TEXT_QUERIES = 20   # query_vectors: 20 texts, then 20 images


def search_query(photos: Collection, i: int, filters: list) -> SearchResult:
    """The i-th query as Searcher.search takes it from the service: a text, or an image."""
    if i < TEXT_QUERIES:
        return photos.searcher.search(f"q{i}", k=K, filters=filters)
    return photos.searcher.search(image=query_image(i), k=K, filters=filters)


def rank_query(photos: Collection, q: np.ndarray, i: int, filters: list, state: TableState | None = None
               ) -> tuple[list[dict], str]:
    """The i-th query through Searcher.rank alone (the ranking SQL): its rows and the strategy's label."""
    state = state or photos.catalog.state.read()
    rows, _, _, plan = photos.searcher.rank(state, [QueryVector(vector=q, image=i >= TEXT_QUERIES)],
                                            Query.check(state.columns, filters, K))
    return rows, plan.label


class Peers:
    """The other engines over the same vectors and filter masks; each `top(name, q, column)` returns row
    numbers. Built once; engines that are not installed are left out (listed in `missing`)."""

    def __init__(self, vectors: np.ndarray, masks: dict[str, np.ndarray], queries: np.ndarray, exact: dict):
        self.vectors, self.masks, self.missing, self.build_s = vectors, masks, [], {}
        self.rows = {c: np.flatnonzero(m) for c, m in masks.items()}
        self.engines: dict[str, Callable[[np.ndarray, str | None], list[int]]] = {
            "numpy brute": self._numpy_brute, "numpy gather": self._numpy_gather}
        try:
            import faiss
            self.flat = faiss.IndexFlatIP(vectors.shape[1])
            self.flat.add(vectors)
            self._bits = {c: np.packbits(m, bitorder="little") for c, m in masks.items()}   # the selectors' memory
            self.bitmaps = {c: faiss.IDSelectorBitmap(len(masks[c]), faiss.swig_ptr(bits))
                            for c, bits in self._bits.items()}
            self.engines["faiss flat"] = self._faiss_flat
            start = time.perf_counter()
            m, ef_construction = FAISS_HNSW
            self.hnsw = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
            self.hnsw.hnsw.efConstruction = ef_construction
            self.hnsw.add(vectors)
            self.build_s["faiss HNSW"] = round(time.perf_counter() - start, 1)
            self.ef_search = FAISS_EF_SEARCH[-1]
            self.engines["faiss HNSW"] = self._faiss_hnsw
            self.faiss = faiss
            self.ef_search = self._tune_faiss_hnsw(queries, exact)
        except ImportError:
            self.missing.append("faiss")
        try:
            import duckdb
            import pyarrow as pa
            self.duck = duckdb.connect()
            dim = vectors.shape[1]
            table = pa.table({"row": np.arange(len(vectors)),
                              "v": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
                              **{c: m.astype(np.int8) for c, m in masks.items()}})
            self.duck.register("source", table)
            self.duck.execute("CREATE TABLE t AS SELECT * FROM source")
            self.duck.unregister("source")
            self.duck_sql = {c: f"SELECT row FROM t {f'WHERE {c} = 1' if c else ''} "
                                f"ORDER BY array_cosine_distance(v, $q::FLOAT[{dim}]) LIMIT {K}"
                             for c in [None, *masks]}
            self.engines["DuckDB SQL"] = self._duckdb
        except ImportError:
            self.missing.append("duckdb")

    def _tune_faiss_hnsw(self, queries: np.ndarray, exact: dict) -> int:
        """faiss HNSW's efSearch for this run: the smallest reaching recall@10 0.95 unfiltered on the queries
        (a fair peer: clipsearch's index is held to that target too)."""
        for ef in FAISS_EF_SEARCH:
            self.ef_search = ef
            recall = np.mean([len(set(self._faiss_hnsw(q, None)) & exact["none", i]) / K
                              for i, q in enumerate(queries)])
            if recall >= 0.95:
                break
        return self.ef_search

    def _numpy_brute(self, q: np.ndarray, column: str | None) -> list[int]:
        scores = self.vectors @ q
        if column:
            scores[~self.masks[column]] = -np.inf
        return np.argpartition(-scores, K)[:K].tolist()

    def _numpy_gather(self, q: np.ndarray, column: str | None) -> list[int]:
        if not column:
            return self._numpy_brute(q, column)
        rows = self.rows[column]
        scores = self.vectors[rows] @ q
        return rows[np.argpartition(-scores, K)[:K]].tolist()

    def _faiss_flat(self, q: np.ndarray, column: str | None) -> list[int]:
        params = self.faiss.SearchParameters(sel=self.bitmaps[column]) if column else None
        return self.flat.search(q[None, :], K, params=params)[1][0].tolist()

    def _faiss_hnsw(self, q: np.ndarray, column: str | None) -> list[int]:
        params = self.faiss.SearchParametersHNSW(efSearch=self.ef_search)
        if column:
            params.sel = self.bitmaps[column]
        return [int(i) for i in self.hnsw.search(q[None, :], K, params=params)[1][0] if i >= 0]

    def _duckdb(self, q: np.ndarray, column: str | None) -> list[int]:
        return [r[0] for r in self.duck.execute(self.duck_sql[column], {"q": q.tolist()}).fetchall()]


def run(count: int, model: ClipModel, work: Path, dim: int = 512, extras: bool = True) -> dict:
    """The comparison on a fresh `count` x `dim` table in work/db-search-COUNT-dDIM; `extras`: also where an
    exact scan's time goes (codecs and QBit copies included) and each lever off in turn."""
    db = work / f"db-search-{count}-d{dim}"
    shutil.rmtree(db, ignore_errors=True)
    queries = query_vectors(model, dim)
    vectors = table_vectors(model, count, dim)
    out: dict = {"rows": count, "dim": dim, "queries": len(queries), "k": K, "engines": {}, "notes": {}}
    fake = QueryModel(model.label, queries, model)
    with clipsearch.open(db, model=fake, log_searches=True) as photos:   # logged, as the service does
        start = time.perf_counter()
        columns = shapes.insert_vectors(photos.catalog, vectors, model.label, SEED)
        out["notes"]["insert_rows_per_s"] = round(count / (time.perf_counter() - start))
        photos.catalog.owner_sql("OPTIMIZE TABLE images FINAL")
        masks = {c: columns[c].astype(bool) for c in FILTERS.values() if c}
        exact = {(f, i): set(np.argpartition(-np.where(masks[c], vectors @ q, -np.inf) if c else -(vectors @ q),
                                             K)[:K].tolist())
                 for f, c in FILTERS.items() for i, q in enumerate(queries)}
        out["engines"]["clipsearch exact scan (no index)"] = measure_clipsearch(
            photos, queries[:EXACT_QUERIES], exact, "rank")
        if extras:
            out["scan"] = scan_costs(photos, vectors, queries[:EXACT_QUERIES])
        start = time.perf_counter()
        tuned = photos.create_index(*HNSW)
        out["notes"]["hnsw_build_and_tune_s"] = round(time.perf_counter() - start, 1)
        out["notes"]["hnsw"] = "{} M={} ef_construction={}".format(*HNSW)
        out["notes"]["tuned"] = tuned
        out["index_costs"] = index_costs(photos, queries, tuned["beam"])
        peers = Peers(vectors, masks, queries, exact)
        out["notes"]["peers_missing"] = peers.missing
        out["notes"]["peers_build_s"] = peers.build_s
        out["notes"]["faiss_hnsw"] = "M={} efConstruction={} efSearch={}".format(*FAISS_HNSW, peers.ef_search)
        measure_all(out, photos, peers, queries, exact, "clipsearch (no filter columns)")
        if extras:
            out["levers"] = lever_costs(photos, peers, queries, exact)
        start = time.perf_counter()
        for column in FILTER_COLUMNS:
            photos.add_filter_column(column)
        out["notes"]["filter_columns_build_s"] = round(time.perf_counter() - start, 1)
        measure_all(out, photos, peers, queries, exact, "clipsearch", with_peers=False)
    return out


def measure_clipsearch(photos: Collection, queries: np.ndarray, exact: dict, how: str,
                       filters: dict | None = None) -> dict:
    """One clipsearch way over every filter: `how` is "search" (Searcher.search less its encoding) or "rank"
    (the ranking SQL alone, exact strategy: the scan without an index)."""
    cases = {}
    for filt, column in (filters or FILTERS).items():
        filters_ = [parse_filter(f"{column}=1")] if column else []
        ms, recall, complete, ran = [], [], [], set()
        for i, q in enumerate(queries):
            if how == "rank":
                start = time.perf_counter()
                rows, strategy = rank_query(photos, q, i, filters_)
                ms.append((time.perf_counter() - start) * 1000)
            else:
                result = search_query(photos, i, filters_)
                rows, strategy = result.rows, result.strategy
                ms.append(result.took_ms["total"] - result.took_ms["encode"] - result.took_ms["model_load"])
            recall.append(len({int(r["id"], 16) for r in rows} & exact[filt, i]) / K)
            complete.append(len(rows) == K)
            ran.add(strategy)
        cases[filt] = {**ms_stats(ms, "sql"), "recall_at_10": round(float(np.mean(recall)), 3),
                       "k_rows_share": float(np.mean(complete)), "ran": " / ".join(sorted(ran))}
    return cases


def measure_all(out: dict, photos: Collection, peers: Peers, queries: np.ndarray, exact: dict, label: str,
                with_peers: bool = True) -> None:
    """clipsearch's search and rank, and (with_peers) every peer, in interleaved rounds per filter."""
    engines = [label, f"{label}: rank() alone"] + (list(peers.engines) if with_peers else [])
    # no row kept from before (index_costs ranked the same queries): each search reads its page's rows unless an
    # earlier query of this round found them; rank() alone follows its search, so its page's rows are kept
    photos.searcher.rows.clear()
    times: dict = {(e, f): [] for e in engines for f in FILTERS}
    found: dict = {(e, f): [] for e in engines for f in FILTERS}
    ran: dict = {f: set() for f in FILTERS}
    for filt, column in FILTERS.items():
        filters = [parse_filter(f"{column}=1")] if column else []
        for i, q in enumerate(queries):
            result = search_query(photos, i, filters)
            times[label, filt].append(result.took_ms["total"] - result.took_ms["encode"]
                                      - result.took_ms["model_load"])
            found[label, filt].append([int(r["id"], 16) for r in result.rows])
            ran[filt].add(result.strategy)
            start = time.perf_counter()
            rows = rank_query(photos, q, i, filters)[0]
            times[f"{label}: rank() alone", filt].append((time.perf_counter() - start) * 1000)
            found[f"{label}: rank() alone", filt].append([int(r["id"], 16) for r in rows])
            for name, top in (peers.engines.items() if with_peers else []):
                start = time.perf_counter()
                ids = top(q, column)
                times[name, filt].append((time.perf_counter() - start) * 1000)
                found[name, filt].append(ids)
    for name in engines:
        out["engines"][name] = {
            filt: {**ms_stats(times[name, filt], "sql"),
                   "recall_at_10": round(float(np.mean([len(set(ids) & exact[filt, i]) / K
                                                        for i, ids in enumerate(found[name, filt])])), 3),
                   "k_rows_share": float(np.mean([len(ids) == K for ids in found[name, filt]])),
                   **({"ran": " / ".join(sorted(ran[filt]))} if name == label else {})}
            for filt in FILTERS}
        print(name, out["engines"][name], flush=True)


LEVER_FILTERS = {"none": None, "1%": "sel_1", "0.1%": "sel_0_1"}


class Tally:
    """Per (variant, filter): the times, the ids found and the strategies that ran, for lever_costs' table."""

    def __init__(self) -> None:
        self.times: dict = {}
        self.found: dict = {}
        self.ran: dict = {}

    def add(self, key: tuple[str, str], ms: float, ids: set, strategy: str) -> None:
        self.times.setdefault(key, []).append(ms)
        self.found.setdefault(key, []).append(ids)
        self.ran.setdefault(key, set()).add(strategy.split(" ")[0])
GRANULE_LEVER_ROWS = 300_000   # above this, copying the table to try another granule costs minutes of index build


def lever_costs(photos: Collection, peers: Peers, queries: np.ndarray, exact: dict) -> dict:
    """Searcher.rank (the ranking SQL) with every lever on, and with each one off in turn: p50 ms and
    recall@10 per filter, all variants (and numpy brute force) in interleaved rounds; then, on tables up to
    GRANULE_LEVER_ROWS, the same on a copy made with ClickHouse's 1,024-row granules."""
    state = photos.catalog.state.read()
    variants: dict[str, tuple[TableState, str]] = {
        "every lever on": (state, tuning.CACHED_READ),
        "one beam for texts and images": (replace(state, image_beam=None), tuning.CACHED_READ),
        "fixed share threshold, no cost planner": (replace(state, exact_ms_per_row=0.0), tuning.CACHED_READ),
        "no block cache (use_uncompressed_cache = 0)": (state, "use_uncompressed_cache = 0")}
    tally = Tally()
    for filt, column in LEVER_FILTERS.items():
        filters = [parse_filter(f"{column}=1")] if column else []
        for i, q in enumerate(queries):
            for name, (variant, cache) in variants.items():
                tuning.CACHED_READ = cache
                try:
                    start = time.perf_counter()
                    rows, strategy = rank_query(photos, q, i, filters, variant)
                    ms = (time.perf_counter() - start) * 1000
                finally:
                    tuning.CACHED_READ = variants["every lever on"][1]
                tally.add((name, filt), ms, {int(r["id"], 16) for r in rows}, strategy)
            start = time.perf_counter()
            ids = peers.engines["numpy brute"](q, column)
            tally.add(("numpy brute force", filt), (time.perf_counter() - start) * 1000, set(ids), "exact")
    if state.rows <= GRANULE_LEVER_ROWS:
        granules_1024(photos, queries, tally)
    out: dict = {}
    for (name, filt), ms_list in tally.times.items():
        recall = np.mean([len(ids & exact[filt, i]) / K for i, ids in enumerate(tally.found[name, filt])])
        out.setdefault(name, {})[filt] = {**ms_stats(ms_list, "sql"), "recall_at_10": round(float(recall), 3),
                                          "ran": " / ".join(sorted(tally.ran[name, filt]))}
    print("levers", out, flush=True)
    return out


def granules_1024(photos: Collection, queries: np.ndarray, tally: Tally) -> None:
    """The ranking SQL on a copy of `images` made with 1,024-row granules (as before 2026-12-05), swapped in
    for the measurement and back."""
    catalog = photos.catalog
    catalog.owner_sql("DROP TABLE IF EXISTS images_g1024")
    catalog.owner_sql("CREATE TABLE images_g1024 AS images ENGINE = ReplacingMergeTree(loaded_at) ORDER BY id "
                    "SETTINGS index_granularity = 1024")
    catalog.owner_sql("INSERT INTO images_g1024 SELECT * FROM images")
    catalog.owner_sql("OPTIMIZE TABLE images_g1024 FINAL")
    catalog.owner_sql("EXCHANGE TABLES images AND images_g1024")
    try:
        catalog.state.forget()
        state = catalog.state.read()
        name = "1,024-row granules (was the default)"
        for filt, column in LEVER_FILTERS.items():
            filters = [parse_filter(f"{column}=1")] if column else []
            for rep in range(2):   # the first round reads the new table from disk
                for i, q in enumerate(queries):
                    start = time.perf_counter()
                    rows, strategy = rank_query(photos, q, i, filters, state)
                    if rep:
                        tally.add((name, filt), (time.perf_counter() - start) * 1000,
                                  {int(r["id"], 16) for r in rows}, strategy)
    finally:
        catalog.owner_sql("EXCHANGE TABLES images AND images_g1024")
        catalog.owner_sql("DROP TABLE images_g1024")
        catalog.state.forget()


def scan_costs(photos: Collection, vectors: np.ndarray, queries: np.ndarray) -> dict:
    """Where an exact scan's time goes (before the index exists): reading the vectors, the distance function,
    the sort; numpy's matrix-vector product over the same vectors beside them. p50 ms over `queries`."""
    sql = {"read the vectors (max(embedding[1]))": "SELECT max(embedding[1]) FROM images",
           "dotProduct over every row": "SELECT max(dotProduct(embedding, {q:Array(Float32)})) FROM images",
           "cosineDistance over every row": "SELECT max(cosineDistance(embedding, {q:Array(Float32)})) FROM images",
           "cosineDistance, 1 thread": "SELECT max(cosineDistance(embedding, {q:Array(Float32)})) FROM images "
                                       "SETTINGS max_threads = 1",
           "top 10 by cosineDistance (exact search)": "SELECT id FROM images ORDER BY cosineDistance(embedding, "
                                                      "{q:Array(Float32)}) LIMIT 10"}
    # Array(BFloat16): half the bytes to read; a copy of the vectors in a side table for the measurement only.
    photos.catalog.owner_sql("CREATE TABLE scan_bf16 ENGINE = MergeTree ORDER BY tuple() AS "
                           "SELECT id, CAST(embedding AS Array(BFloat16)) AS e FROM images")
    sql["cosineDistance over Array(BFloat16) copies"] = ("SELECT max(cosineDistance(e, CAST({q:Array(Float32)} AS "
                                                          "Array(BFloat16)))) FROM scan_bf16")
    out = {}
    for name, statement in sql.items():
        ms = []
        for q in queries:
            start = time.perf_counter()
            photos.catalog.query(statement, {"q": q.tolist()} if "{q:" in statement else None)
            ms.append((time.perf_counter() - start) * 1000)
        out[name] = round(float(np.median(ms)), 1)
    # The exact top 10 re-ranked by the Float32 vectors from the Array(BFloat16) copy's top candidates.
    for fetch in (50, 200):
        rerank = ("SELECT id FROM images WHERE id IN (SELECT id FROM scan_bf16 ORDER BY cosineDistance(e, "
                  f"CAST({{q:Array(Float32)}} AS Array(BFloat16))) LIMIT {fetch}) "
                  f"ORDER BY cosineDistance(embedding, {{q:Array(Float32)}}), id LIMIT {K}")
        ms, recall = [], []
        for q in queries:
            start = time.perf_counter()
            rows = photos.catalog.query(rerank, {"q": q.tolist()})
            ms.append((time.perf_counter() - start) * 1000)
            best = set(np.argpartition(-(vectors @ q), K)[:K].tolist())
            recall.append(len({int(r["id"], 16) for r in rows} & best) / K)
        out[f"top {fetch} of the Array(BFloat16) copy re-ranked by the Float32 vectors (recall "
            f"{np.mean(recall):.3f})"] = round(float(np.median(ms)), 1)
    photos.catalog.owner_sql("DROP TABLE scan_bf16")
    out.update(codec_costs(photos, queries))
    out.update(qbit_costs(photos, vectors, queries))
    ms = []
    for q in queries:
        start = time.perf_counter()
        np.argpartition(-(vectors @ q), K)[:K]
        ms.append((time.perf_counter() - start) * 1000)
    out["numpy vectors @ q + top 10"] = round(float(np.median(ms)), 1)
    return out


CODECS = ("NONE", "LZ4", "ZSTD(1)")


def codec_costs(photos: Collection, queries: np.ndarray) -> dict:
    """The exact top 10, unfiltered and at the 0.1% filter, over copies of the vectors stored with each of
    CODECS (the table's granule; searches' settings), and each copy's size on disk. p50 ms."""
    out = {}
    for codec in CODECS:
        photos.catalog.owner_sql("DROP TABLE IF EXISTS scan_codec")
        photos.catalog.owner_sql(f"CREATE TABLE scan_codec (id String, sel_0_1 Nullable(Int64), embedding "
                               f"Array(Float32) CODEC({codec})) ENGINE = MergeTree ORDER BY id "
                               "SETTINGS index_granularity = 128")
        photos.catalog.owner_sql("INSERT INTO scan_codec SELECT id, sel_0_1, embedding FROM images")
        photos.catalog.owner_sql("OPTIMIZE TABLE scan_codec FINAL")
        size = photos.catalog.query("SELECT sum(data_compressed_bytes) AS b FROM system.columns WHERE "
                                    "database = currentDatabase() AND table = 'scan_codec' AND name = 'embedding'")
        for label, where in (("every row", ""), ("0.1% filter", "WHERE sel_0_1 = 1 ")):
            statement = (f"SELECT id FROM scan_codec {where}ORDER BY cosineDistance(embedding, {{q:Array(Float32)}}), "
                         f"id LIMIT {K} SETTINGS {tuning.CACHED_READ}")
            ms = []
            for rep in range(2):
                for q in queries:
                    start = time.perf_counter()
                    photos.catalog.query(statement, {"q": q.tolist()})
                    if rep:
                        ms.append((time.perf_counter() - start) * 1000)
            out[f"exact top 10, {label}, vectors CODEC({codec}) ({int(size[0]['b']) >> 20} MiB)"] = \
                round(float(np.median(ms)), 1)
    photos.catalog.owner_sql("DROP TABLE scan_codec")
    return out


def qbit_costs(photos: Collection, vectors: np.ndarray, queries: np.ndarray) -> dict:
    """ClickHouse's QBit type (bit planes of the vectors: a search reads only the top `precision` bits of
    each number) in a copy of the vectors, top 10 by L2DistanceTransposed (ranks like cosine distance on
    unit vectors) at 16 and 8 bits, with recall@10 against numpy. Left out where the engine lacks QBit."""
    try:
        photos.catalog.owner_sql(f"CREATE TABLE scan_qbit (id String, v QBit(Float32, {int(vectors.shape[1])})) "
                               "ENGINE = MergeTree ORDER BY id SETTINGS allow_experimental_qbit_type = 1")
    except Exception as error:   # noqa: BLE001 - an engine without QBit: say so in the results
        return {f"QBit not available ({str(error).splitlines()[0][:80]})": 0.0}
    try:
        photos.catalog.owner_sql("INSERT INTO scan_qbit SELECT id, embedding FROM images")
        out = {}
        for bits in (16, 8):
            ms, recall = [], []
            for q in queries:
                start = time.perf_counter()
                rows = photos.catalog.query(f"SELECT id FROM scan_qbit ORDER BY L2DistanceTransposed(v, "
                                            f"{{q:Array(Float32)}}, {bits}) LIMIT {K}", {"q": q.tolist()})
                ms.append((time.perf_counter() - start) * 1000)
                exact = set(np.argpartition(-(vectors @ q), K)[:K].tolist())
                recall.append(len({int(r["id"], 16) for r in rows} & exact) / K)
            out[f"top 10 over a QBit copy, {bits} bits (recall {np.mean(recall):.2f})"] = round(float(np.median(ms)), 1)
        return out
    finally:
        photos.catalog.owner_sql("DROP TABLE scan_qbit")


def index_costs(photos: Collection, queries: np.ndarray, beam: int) -> dict:
    """Where an index search's time goes: the index alone (ids) at ClickHouse's default beam and at the
    tuned one, then with every result column, then clipsearch's whole ranking query. p50 ms."""
    rank = "SELECT {what} FROM images ORDER BY cosineDistance(embedding, {{q:Array(Float32)}}) LIMIT 10"
    sql = {"SELECT 1 (what any query costs)": "SELECT 1",
           f"row positions only (_part_offset: the index search), search beam {beam}": rank.format(
               what="_part_offset") + f" SETTINGS hnsw_candidate_list_size_for_search = {beam}",
           "ids, search beam 256": rank.format(what="id") + " SETTINGS hnsw_candidate_list_size_for_search = 256",
           f"ids, search beam {beam} (tuned)": rank.format(what="id")
           + f" SETTINGS hnsw_candidate_list_size_for_search = {beam}",
           f"every column, search beam {beam}": rank.format(what=f"* EXCEPT ({HIDDEN})")
           + f" SETTINGS hnsw_candidate_list_size_for_search = {beam}"}
    out = {}
    for name, statement in sql.items():
        ms = []
        for q in queries:
            start = time.perf_counter()
            photos.catalog.query(statement, {"q": q.tolist()} if "{q:" in statement else None)
            ms.append((time.perf_counter() - start) * 1000)
        out[name] = round(float(np.median(ms)), 1)
    ms = []
    for q in queries:
        start = time.perf_counter()
        photos.searcher.rank(photos.catalog.state.read(), [QueryVector(vector=q)], Query(k=K))
        ms.append((time.perf_counter() - start) * 1000)
    out["clipsearch's ranking query (Searcher.rank)"] = round(float(np.median(ms)), 1)
    return out
