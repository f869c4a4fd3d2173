"""Words and pictures in one ranking (issue 35): quality, speed at 200,000 rows, and the loader's cost of words.

- quality: `shapes.words_catalogue` (product pictures whose titles name a product line, never a colour or
  shape) at `count` products, loaded with the bundled model; P@10 per query group (words / pictures / mixed)
  for match=pictures, words and both. Then partial file-name matches: generated pictures named like a
  camera's (lisbon/IMG_1900.jpg .. porto/IMG_2199.jpg), queries such as `IMG_20` and `lisb`.
- speed: a `rows` x `dim` table of the search benchmark's vectors (bench/search.py) whose rows have words:
  a name (`/library/<place>/IMG_<n>.jpg`) and a title of 3-6 words, both drawn from a 5,000-word vocabulary
  with a Zipf spread (the commonest words in ~40% of rows, most in a handful), made by store.words (as the
  loader makes them) and inserted by the store's insert (rows_table) in blocks. 15 query texts, one word
  each: 5 rare (in 3-30 rows), 5 common (in ~10% of rows), 5 absent from every row; each text's picture
  side is one of the search benchmark's text vectors. `match=pictures` against `match=both`, the same
  texts, interleaved, unfiltered and under a 10% filter, first exact (no index), then with the HNSW index.
  Then where a `both` search's time goes for the common words: the probe, the words branch alone, the
  rows the words select with and without the picture distance, and EXPLAIN indexes = 1.
- loading: the loader on `loader_images` generated photo-size images with words as on main against the
  same load with the word functions stubbed out (no name, title or metadata words), interleaved.
"""
from __future__ import annotations

import os
import shutil
import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import numpy as np

import clipsearch
from bench import common
from bench.search import HNSW, QueryModel, query_vectors, table_vectors
from clipsearch.loader import load as loader_module
from clipsearch.loader.load import rows_table
from clipsearch.models.clip import ClipModel
from clipsearch.search.filters import parse_filter
from clipsearch.search.query import Query
from clipsearch.search.signals import WordSignal, probe_sql
from clipsearch.search.statement import QueryVector
from clipsearch.service import shapes
from clipsearch.store.images import path_words

K = 10
MATCHES = ("pictures", "words", "both")
VOCABULARY, ZIPF = 5000, 1.0
PLACES = 300                 # folder names: the vocabulary's first words by another Zipf draw
GROUP = 5                    # queries per group (rare, common, absent)
REPEATS = 3                  # rounds of every query, match and filter
FILTERS = {"none": None, "10%": "sel_10"}
BLOCK = 25_000


# -- quality ------------------------------------------------------------------------------------------------
NAMED = 300     # camera-named pictures: lisbon/IMG_1900 .. IMG_2049, porto/IMG_2050 .. IMG_2199
NAME_QUERIES = ("IMG_20", "IMG_204", "IMG_2041", "lisbon", "lisb", "porto IMG_21")


def precision(photos: clipsearch.Collection, queries: list[tuple[str, set[str]]], match: str) -> float:
    return round(float(np.mean([shapes.precision_at([Path(r["path"]).name for r in
                                                     photos.search(text, k=K, match=match).rows], relevant)
                                for text, relevant in queries])), 3)


def named_relevant(query: str, names: dict[str, str]) -> set[str]:
    """The files (by name) a name query asks for: every word a prefix of the file's folder or name words."""
    wanted = query.lower().replace("_", " ").split()
    return {name for name, folder in names.items()
            if all(any(token.startswith(w) for token in (folder, *name.lower().rsplit(".", 1)[0].split("_")))
                   for w in wanted)}


def quality(model: ClipModel, work: Path, count: int) -> dict:
    folder = work / "words-quality"
    shutil.rmtree(folder, ignore_errors=True)
    catalogue = shapes.words_catalogue(folder / "shop", count=count)
    out: dict = {"products": count, "queries": {g: len(q) for g, q in catalogue.groups.items()}}
    with clipsearch.open(folder / "db", model=model, log_searches=False) as photos:
        start = time.perf_counter()
        photos.load(catalogue.manifest)
        out["load_s"] = round(time.perf_counter() - start, 1)
        out["p_at_10"] = {match: {group: precision(photos, queries, match)
                                  for group, queries in catalogue.groups.items()} for match in MATCHES}
    # partial file-name matches
    paths = common.write_images(folder / "named-src", NAMED, seed=35)
    names: dict[str, str] = {}
    for i, path in enumerate(paths):
        place = "lisbon" if i < NAMED // 2 else "porto"
        target = folder / "named" / place / f"IMG_{1900 + i}{path.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
        names[target.name] = place
    queries = [(q, named_relevant(q, names)) for q in NAME_QUERIES]
    with clipsearch.open(folder / "db-named", model=model, log_searches=False) as photos:
        photos.load(folder / "named")
        out["names"] = {q: {"relevant": len(rel), **{m: precision(photos, [(q, rel)], m) for m in MATCHES}}
                        for q, rel in queries}
    print("words quality", out, flush=True)
    return out


# -- speed -------------------------------------------------------------------------------------------------
def vocabulary(rng: np.random.Generator, count: int) -> list[str]:
    """`count` distinct made-up words of 2-3 consonant-vowel syllables (letters only: one token each)."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    out: dict[str, None] = {}
    while len(out) < count:
        out.setdefault("".join(rng.choice(syllables, int(rng.integers(2, 4)))))
    return list(out)


def zipf_draw(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** ZIPF
    return rng.choice(n, size=size, p=p / p.sum())


def worded_rows(rows: int, seed: int = 35) -> tuple[list[dict], dict[str, dict], dict[str, int]]:
    """(rows for rows_table with words_name/words_prefixes, metadata path -> {title, sel_*}, document frequency
    of each vocabulary word): the names and titles of `rows` images."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary(rng, VOCABULARY)
    lengths = rng.integers(3, 7, rows)
    drawn = zipf_draw(rng, VOCABULARY, int(lengths.sum()))
    places = zipf_draw(rng, PLACES, rows)
    selective = shapes.selectivity_columns(rows, seed)
    meta, metadata, frequency = [], {}, np.zeros(VOCABULARY, np.int64)
    at = 0
    for i in range(rows):
        title_ids = drawn[at:at + lengths[i]]
        at += lengths[i]
        path = f"/library/{vocab[places[i]]}/{'IMG' if i % 2 else 'DSC'}_{i:06d}.jpg"
        meta.append({"id": f"{i:032x}", "path": path, "width": 256, "height": 256, "format": "JPEG",
                     "file_size": 0, "taken_at": None, "camera": "", "orientation": 1, **path_words(path)})
        metadata[path] = {"title": " ".join(vocab[j].title() for j in title_ids),
                          **{c: int(v[i]) for c, v in selective.items()}}
        frequency[np.unique(np.append(title_ids, places[i]))] += 1
    return meta, metadata, dict(zip(vocab, frequency.tolist(), strict=True))


def pick_queries(frequency: dict[str, int], rows: int, rng: np.random.Generator) -> dict[str, list[str]]:
    """GROUP words per group: rare (in 3-30 rows), common (nearest 10% of rows), absent (in no row)."""
    rare = sorted(w for w, n in frequency.items() if 3 <= n <= 30)
    common_ = sorted(frequency, key=lambda w: abs(frequency[w] - rows / 10))[:GROUP]
    absent = [w + "xq" for w in sorted(frequency)[:GROUP]]   # 'xq' ends no syllable: in no name, title or prefix
    return {"rare": [str(w) for w in rng.choice(rare, GROUP, replace=False)], "common": common_, "absent": absent}


class WordQueryModel(QueryModel):
    """Encodes each benchmark query text as its own text vector of the search benchmark (`lookup`)."""

    def __init__(self, label: str, queries: np.ndarray, model: ClipModel, lookup: dict[str, int]):
        super().__init__(label, queries, model)
        self.lookup = lookup

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if all(t in self.lookup for t in texts):
            return self.queries[[self.lookup[t] for t in texts]]
        return super().encode_texts(texts)


def speed(model: ClipModel, work: Path, rows: int, dim: int) -> dict:
    db = work / f"db-words-{rows}-d{dim}"
    shutil.rmtree(db, ignore_errors=True)
    start = time.perf_counter()
    meta, metadata, frequency = worded_rows(rows)
    words_s = time.perf_counter() - start
    groups = pick_queries(frequency, rows, np.random.default_rng(36))
    texts = [w for g in groups.values() for w in g]
    vectors = query_vectors(model, dim)[:20]     # the search benchmark's 20 text queries
    fake = WordQueryModel(model.label, vectors, model, {t: i % len(vectors) for i, t in enumerate(texts)})
    out: dict = {"rows": rows, "dim": dim, "k": K, "vocabulary": VOCABULARY,
                 "queries": {g: {w: frequency.get(w, 0) for w in ws} for g, ws in groups.items()},
                 "notes": {"words_made_s": round(words_s, 1)}}
    table = table_vectors(model, rows, dim)
    types = {"title": "Nullable(String)", **{c: "Nullable(Int64)" for c in shapes.SELECTIVITY}}
    # every round ranks again: answers are not kept (CLIPSEARCH_SEARCH_CACHE=texts), or rounds 2 and 3 would
    # time the kept answers
    with mock.patch.dict(os.environ, {"CLIPSEARCH_SEARCH_CACHE": "texts"}), \
            clipsearch.open(db, model=fake, log_searches=False) as photos:
        start = time.perf_counter()
        photos.catalog.images.add_columns(types)
        for lo in range(0, rows, BLOCK):
            photos.catalog.images.insert(rows_table(meta[lo:lo + BLOCK], table[lo:lo + BLOCK], model.label,
                                                    metadata, types, text_columns=["title"]))
        out["notes"]["insert_rows_per_s"] = round(rows / (time.perf_counter() - start))
        photos.catalog.owner_sql("OPTIMIZE TABLE images FINAL")
        held = photos.catalog.query(f"SELECT count() AS n FROM images WHERE {FOUND}", {"w": groups["absent"]})
        assert int(held[0]["n"]) == 0, "an absent query word is held by some row"
        out["exact"] = timings(photos, groups)
        out["exact_costs"] = costs(photos, groups, vectors, fake)
        start = time.perf_counter()
        photos.create_index(*HNSW)
        out["notes"]["hnsw_build_and_tune_s"] = round(time.perf_counter() - start, 1)
        out["hnsw"] = timings(photos, groups)
        out["hnsw_costs"] = costs(photos, groups, vectors, fake)
    print("words speed", out, flush=True)
    return out


def timings(photos: clipsearch.Collection, groups: dict[str, list[str]]) -> dict:
    """p50/p95 ms (Searcher.search less encoding) per filter, group and match, interleaved rounds; the share
    of `both` searches that ran fused (a word found) and the strategies of the picture side."""
    times: dict = {}
    ran: dict = {}
    for _ in range(REPEATS):
        for filt, column in FILTERS.items():
            filters = [parse_filter(f"{column}=1")] if column else []
            for group, texts in groups.items():
                for text in texts:
                    for match in ("pictures", "both"):
                        result = photos.searcher.search(text, k=K, filters=filters, match=match)
                        ms = result.took_ms["total"] - result.took_ms["encode"] - result.took_ms["model_load"]
                        times.setdefault((filt, group, match), []).append(ms)
                        times.setdefault((filt, "all", match), []).append(ms)
                        ran.setdefault((filt, group, match), set()).add(f"{result.match}: {result.strategy}")
    out: dict = {}
    for (filt, group, match), ms in times.items():
        out.setdefault(filt, {}).setdefault(group, {})[match] = {
            **common.ms_stats(ms, "search"), **({"ran": sorted(ran[filt, group, match])} if group != "all" else {})}
    for filt in out:
        for by in out[filt].values():
            by["both_vs_pictures_p50"] = round(by["both"]["search_p50_ms"] / by["pictures"]["search_p50_ms"], 2)
    print("words timings", out, flush=True)
    return out


FOUND = " OR ".join(f"hasAnyTokens({c}, {{w:Array(String)}})" for c in
                   ("words_name", "words_prefixes", "words_title", "words_meta", "words_ocr", "words_label"))
PART_SQL = {   # each over the rows holding the query word {w}, unfiltered
    "SELECT 1": "SELECT 1",
    "count the rows holding the word (index only)": f"SELECT count() FROM images WHERE {FOUND}",
    "the word's rows by word score, top 50 (no picture distance)":
        f"SELECT id, length(arrayIntersect({{w:Array(String)}}, words_title)) AS s FROM images WHERE {FOUND} "
        "ORDER BY s DESC, id LIMIT 50",
    "the word's rows by picture distance, top 50 (as the words branch orders ties)":
        f"SELECT id FROM images WHERE {FOUND} ORDER BY cosineDistance(embedding, {{q:Array(Float32)}}), id LIMIT 50",
}


def costs(photos: clipsearch.Collection, groups: dict[str, list[str]], vectors: np.ndarray,
          fake: WordQueryModel) -> dict:
    """Where a `both` search of a rare and of a common word spends its time, unfiltered: p50 ms of each part
    over the group's texts, and EXPLAIN indexes = 1 of the fused statement for the group's first word."""
    catalog = photos.catalog
    query = Query.check(photos.searcher.table_state().columns, [], K)
    out: dict = {}
    for group in ("rare", "common"):
        parts_ms: dict[str, list[float]] = {}

        def add(name: str, start: float) -> None:
            parts_ms.setdefault(name, []).append((time.perf_counter() - start) * 1000)   # noqa: B023

        explain: list[str] = []
        for _ in range(REPEATS):
            for text in groups[group]:
                q = vectors[fake.lookup[text]]
                params = {"w": [text], "q": q.tolist()}
                start = time.perf_counter()
                catalog.query(*probe_sql(WordSignal((text,)), query, [QueryVector(vector=q)]))
                add("the probe (LIMIT 1)", start)
                for name, sql in PART_SQL.items():
                    start = time.perf_counter()
                    catalog.query(sql, {p: v for p, v in params.items() if "{" + p + ":" in sql})
                    add(name, start)
                for match in ("pictures", "words", "both"):
                    result = photos.searcher.search(text, k=K, match=match)
                    parts_ms.setdefault(f"Searcher.search match={match}", []).append(
                        result.took_ms["total"] - result.took_ms["encode"] - result.took_ms["model_load"])
                    start = time.perf_counter()
                    catalog.query(result.sql, result.params)
                    add(f"its statement alone (match={match})", start)
                    start = time.perf_counter()   # parsing and planning it, nothing read
                    catalog.query("EXPLAIN PLAN " + result.sql, result.params)
                    add(f"planning its statement only (EXPLAIN PLAN, match={match})", start)
                if not explain:
                    plan = catalog.query("EXPLAIN indexes = 1 " + result.sql, result.params)
                    explain = [" ".join(str(line).replace("│", "").replace("└──", "").split()) for row in plan
                               for line in row.values() if any(k in str(line) for k in ("Name:", "Granules:"))]
        out[group] = {name: round(float(np.median(ms)), 1) for name, ms in parts_ms.items()}
        out[group]["rows holding each word"] = {
            t: int(catalog.query(f"SELECT count() AS n FROM images WHERE {FOUND}", {"w": [t]})[0]["n"])
            for t in groups[group]}
        out[group]["explain_fused_index_lines"] = explain
    print("words costs", out, flush=True)
    return out


# -- loading -----------------------------------------------------------------------------------------------
def no_words() -> mock._patch:
    """The loader with its word functions stubbed out: no name, title or metadata words (before issue 35)."""
    return mock.patch.multiple(loader_module, metadata_text=lambda image: [],
                               path_words=lambda path: {"words_name": [], "words_prefixes": []},
                               title_words=lambda values, columns: [])


def loading(model: ClipModel, work: Path, images: int, rounds: int = 2) -> dict:
    paths = common.write_images(work / "words-loader-images", images)
    rates: dict[str, list[float]] = {"with words (main)": [], "word functions stubbed out": []}
    for _ in range(rounds):
        for name in rates:
            db = work / "db-words-loader"
            shutil.rmtree(db, ignore_errors=True)
            with (no_words() if "stubbed" in name else nullcontext()), \
                    clipsearch.open(db, model=model, log_searches=False) as photos:
                start = time.perf_counter()
                summary = photos.load(paths[0].parent, batch_size=64)
                rates[name].append(len(paths) / (time.perf_counter() - start))
            assert summary.loaded == len(paths), summary.line()
    out = {"images": images, "rounds": rounds,
           "images_per_s": {name: [round(r, 1) for r in rs] for name, rs in rates.items()}}
    med = {name: statistics.median(rs) for name, rs in rates.items()}
    out["with_vs_without_words"] = round(med["with words (main)"] / med["word functions stubbed out"], 3)
    print("words loading", out, flush=True)
    return out


def run(model: ClipModel, work: Path, count: int, rows: int, dim: int, loader_images: int) -> dict:
    return {"quality": quality(model, work, count), "speed": speed(model, work, rows, dim),
            "loading": loading(model, work, loader_images)}


def lines(w: dict) -> list[str]:
    """results.md's words section."""
    q, s, lo = w["quality"], w["speed"], w["loading"]
    out = ["", f"Words and pictures (issue 35): P@10 on `shapes.words_catalogue` of {q['products']} products "
               f"(queries per group {q['queries']}):", "", "| match | " + " | ".join(q["p_at_10"]["both"]) + " |",
           "|---|" + "---|" * len(q["p_at_10"]["both"])]
    out += [f"| {m} | " + " | ".join(str(v) for v in by.values()) + " |" for m, by in q["p_at_10"].items()]
    out += ["", "| file-name query | relevant | " + " | ".join(MATCHES) + " |", "|---|---|---|---|---|"]
    out += [f"| `{name}` | {r['relevant']} | " + " | ".join(str(r[m]) for m in MATCHES) + " |"
            for name, r in q["names"].items()]
    out += ["", f"Search at {s['rows']:,} x {s['dim']} with words, p50 / p95 ms, `both` against `pictures`:", "",
            "| index | filter | group | pictures | both | both / pictures (p50) |", "|---|---|---|---|---|---|"]
    for phase in ("exact", "hnsw"):
        for filt, groups in s[phase].items():
            for group, by in groups.items():
                p, b = by["pictures"], by["both"]
                out.append(f"| {phase} | {filt} | {group} | {p['search_p50_ms']} / {p['search_p95_ms']} | "
                           f"{b['search_p50_ms']} / {b['search_p95_ms']} | {by['both_vs_pictures_p50']} |")
    for phase in ("exact", "hnsw"):
        by = s[f"{phase}_costs"]
        out += ["", f"Where a `both` search's time goes ({phase}, unfiltered), p50 ms:", "",
                "| part | rare words | common words |", "|---|---|---|"]
        out += [f"| {name} | {ms} | {by['common'][name]} |" for name, ms in by["rare"].items() if isinstance(ms, float)]
    out += ["", f"Loading {lo['images']} images, images/s per round: " +
            "; ".join(f"{name} {rates}" for name, rates in lo["images_per_s"].items()) +
            f" (with / without words: {lo['with_vs_without_words']})"]
    return out
