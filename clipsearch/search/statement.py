"""The statements a search runs, built from a checked `Query`: the ranking (`search_sql`, by the plan's
`Strategy`), the facet counts (`facet_sql`) and the filters' share of rows (`count_sql`). Values are always
bound as parameters."""
from __future__ import annotations

import math
from dataclasses import dataclass

from clipsearch.search import tuning
from clipsearch.search.options import MAX_FACET_VALUES, MAX_TERMS, Options
from clipsearch.search.query import Query
from clipsearch.search.where import Where
from clipsearch.store.columns import HIDDEN
from clipsearch.store.connection import quote_identifier
from clipsearch.store.images import CONTENT

STRATEGIES = ("exact", "hnsw")


@dataclass(frozen=True)
class QueryVector:
    """One part of a query: a vector bound as a parameter, or the stored embedding of `image_id` (with both, the
    vector is that image's, read beforehand for the index: the image is still left out of the results). `image`:
    the vector is an image's, not a text's (the index has a beam of its own for those)."""
    weight: float = 1.0
    vector: tuple | list | None = None
    image_id: str | None = None
    image: bool = False


@dataclass(frozen=True)
class Strategy:
    """How a search is ranked (Searcher.plan's choice, which search_sql writes): `name` "exact" (every matching
    row) or "hnsw" (the vector index at `beam`, fetching `multiplier` x the page under filters and `rescore` x
    for a coarse quantization: tuning.index_fetch). `matching`: the rows the filters were estimated to match.
    An exact ranking may have followed an index search that came back short (`after`: that strategy and the
    rows it returned), or read a filter column's sorted copy (`projection`)."""
    name: str = "exact"
    multiplier: float = 1.0
    beam: int | None = None
    rescore: int = 0
    matching: int | None = None
    after: tuple[str, int] | None = None
    projection: str | None = None

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.name!r}")

    @property
    def label(self) -> str:
        """For people: "hnsw", "exact", "exact (after hnsw returned 3)", "exact (projection on shop)"."""
        if self.projection:
            return f"{self.name} (projection on {self.projection})"
        if self.after:
            return f"{self.name} (after {self.after[0]} returned {self.after[1]})"
        return self.name


EXACT = Strategy()


def vector_alias(i: int) -> str:
    return f"`$v{i}`"


def _ranking(where: Where, vectors: list[QueryVector], videos: bool = False
             ) -> tuple[str, list[str], dict, str, str, list[str]]:
    """The parts every search shares: (WITH definitions, WHERE conditions, params, distance, score, and the
    conditions that leave the images queried by id out of the results: with `videos` (the table holds some),
    a moment's whole video too, whose other moments are like it for being of the same video)."""
    conditions, params = list(where.conditions), dict(where.params)
    if not 1 <= len(vectors) <= MAX_TERMS:
        raise ValueError(f"a query has 1 to {MAX_TERMS} terms, got {len(vectors)}")
    positive = sum(v.weight for v in vectors if v.weight > 0)
    if positive <= 0 or not all(math.isfinite(v.weight) for v in vectors):
        raise ValueError("weights are finite numbers, and at least one term needs a positive weight")
    defs, terms, exclude = [], [], []
    for i, v in enumerate(vectors):
        if v.image_id is not None:
            exclude.append(excluded(i, videos))
            params[f"v{i}_id"] = v.image_id
        if v.image_id is not None and v.vector is None:
            defs.append(f"(SELECT embedding FROM images WHERE id = {{v{i}_id:String}} LIMIT 1) AS {vector_alias(i)}")
        elif v.vector is not None:
            defs.append(f"{{v{i}:Array(Float32)}} AS {vector_alias(i)}")
            params[f"v{i}"] = [float(x) for x in v.vector]
        else:
            raise ValueError("a query vector needs a vector or an image id")
        if len(vectors) == 1:
            terms.append(f"cosineDistance(embedding, {vector_alias(i)})")
        else:
            params[f"w{i}"] = v.weight / positive
            terms.append(f"{{w{i}:Float64}} * cosineDistance(embedding, {vector_alias(i)})")
    distance = " + ".join(terms)
    # weights are shares of the positive ones: score = sum(w * cos) = sum(w) - distance, 1 - distance without
    # negative terms
    base = "1"
    if any(v.weight < 0 for v in vectors):
        params["w_sum"] = sum(v.weight for v in vectors) / positive
        base = "{w_sum:Float64}"
    return "WITH " + ", ".join(defs), conditions, params, distance, f"{base} - ({distance})", exclude


def ordered_page(select: str, order: str, options: Options, params: dict, page: str, outer: str) -> str:
    """`select` ordered by `order`, at most `options.moments` rows per video (a video's best moments: LIMIT BY
    its id) and `options.per_limit` per value of `options.per`, then the `page`. ClickHouse takes one LIMIT BY
    per SELECT, so with both the moments are kept in a subquery and the outer one orders by `outer` (the same
    order in its result columns)."""
    clauses = []
    if options.moments:
        clauses.append(f"LIMIT {{moments:UInt32}} BY {CONTENT}")
        params["moments"] = options.moments
    if options.per:
        clauses.append(f"LIMIT {{per_limit:UInt32}} BY {quote_identifier(options.per)}")
        params["per_limit"] = options.per_limit
    if len(clauses) < 2:
        return f"{select}\nORDER BY {order}{''.join(chr(10) + c for c in clauses)}{page}"
    return (f"SELECT *\nFROM (\n{indent(select)}\n    ORDER BY {order}\n    {clauses[0]}\n)\nORDER BY {outer}\n"
            f"{clauses[1]}{page}")


def indent(sql: str, by: str = "    ") -> str:
    return "\n".join(by + line for line in sql.splitlines())


def excluded(i: int, videos: bool) -> str:
    """The condition leaving out the stored image of query vector `i` (and, with `videos`, its video)."""
    if not videos:
        return f"id != {{v{i}_id:String}}"
    return (f"id != {{v{i}_id:String}} AND (video = '' OR video != "
            f"(SELECT any(video) FROM images WHERE id = {{v{i}_id:String}}))")


def search_sql(query: Query, vectors: list[QueryVector], strategy: Strategy = EXACT, ids_only: bool = False
               ) -> tuple[str, dict]:
    """The one SQL query of a picture search and its parameters: `picture_statement` with its SETTINGS."""
    body, settings, params = picture_statement(query, vectors, strategy, ids_only)
    return f"{body}\nSETTINGS {settings}", params


def ranked_columns(options: Options) -> str:
    """What a ranking that leaves the page's columns to `rows_sql` selects besides the score: the id and the
    columns its page clauses read around it (a moment's video, the order_by and per columns)."""
    names = ["id", *(["video"] if options.moments else []),
             *(quote_identifier(c) for c in (options.order_by, options.per) if c and c not in ("id", "video"))]
    return ", ".join(dict.fromkeys(names))


def rows_sql(ids: list[str]) -> tuple[str, dict]:
    """The shown columns of the rows `ids` (a page ranked by ids and scores alone), oldest load first: where two
    loads left one id twice (ReplacingMergeTree merges them later), the newest is the one a merge keeps. The
    primary key finds each row's granule; one thread reads ten granules faster than two."""
    return (f"SELECT * EXCEPT ({HIDDEN})\nFROM images\nWHERE id IN {{ids:Array(String)}}\nORDER BY loaded_at\n"
            f"SETTINGS max_threads = 1, optimize_use_projections = 0, {tuning.CACHED_READ}", {"ids": list(ids)})


def picture_statement(query: Query, vectors: list[QueryVector], strategy: Strategy = EXACT, ids_only: bool = False
                      ) -> tuple[str, str, dict]:
    """The ranking by pictures as (SELECT, its SETTINGS, parameters): apart, so that a fused statement
    (signals.py) can put the SETTINGS at the end of the whole statement, where the vector index sees them.

    The ranking is a weighted sum of cosine distances to each query vector
    (weights divided by the sum of the positive ones; negative weights push
    away), so a query of several terms is still one ORDER BY in ClickHouse;
    `score` is the matching weighted cosine similarity. Images used as
    queries by id are left out of the results. The query's options page
    (OFFSET), cut at a score (WHERE score >= min_score), order by a column and
    keep at most n rows per value of one (LIMIT n BY). `ids_only`: the rows' shown columns are left out
    (ranked_columns), for `rows_sql` to read for the page alone: an index search reads its whole window of
    neighbours, and every column of a row is a granule read (200k x 128: 16 ms with them, 5 ms without).

    Strategies (`Searcher.plan` picks one per query):
    - "exact": rank every matching row by its Float32 vector; ties broken by id.
    - "hnsw": the table's vector_similarity index answers `ORDER BY distance
      LIMIT k OFFSET offset` (approximate), the score cut applied around it. With
      filters the index fetches `multiplier` x (offset + k) neighbours and
      ClickHouse drops those that do not match (postfilter). `rescore` (an
      index of coarse quantization, RESCORE_FETCH) fetches that many times
      more and ranks them by their Float32 vectors.
    """
    options = query.options
    with_, conditions, params, distance, score, exclude = _ranking(query.where, vectors, bool(query.options.moments))
    shown = ranked_columns(options) if ids_only else f"* EXCEPT ({HIDDEN})"
    params["k"] = query.k
    if strategy.name != "exact" and (len(vectors) != 1 or vectors[0].vector is None or options.per
                                     or options.order_by):
        raise ValueError(f"the {strategy.name} strategy serves one query vector ordered by score, not a stored id, "
                         "a mix, an order by a column or a per-column limit")
    page = "\nLIMIT {k:UInt32}"
    if options.offset:
        page += " OFFSET {offset:UInt32}"
        params["offset"] = options.offset
    if options.min_score is not None:
        params["min_score"] = options.min_score
    if strategy.name == "hnsw":
        # The index serves only `ORDER BY <distance> LIMIT n` exactly: no tie-breaker column, no WHERE on the
        # distance. So it fetches the best offset + k (+ HNSW_TIE_MARGIN, for rows tied at the page's edge,
        # copies of one picture) and the query around it cuts at the score, orders ties by id and takes the
        # page: pages are slices of one ranking while the neighbours fetched fit the search beam, which grows
        # with k and with the neighbours a filter makes it fetch (tuning.index_fetch). ClickHouse drops those
        # that do not match (postfilter). Projections are off: ClickHouse would prefer a filter column's
        # projection, which has no index. Settings go on the outer query: those of a subquery do not reach
        # the index.
        # The image queried by id is its own nearest neighbour: one more is fetched and it is left out around
        # the index search (inside, it would make the index post-filter as for a filter).
        where = ("\n    WHERE " + "\n      AND ".join(conditions)) if conditions else ""
        grow = tuning.MOMENT_FETCH if options.moments else 1   # a video's moments crowd the neighbours
        fetch = tuning.index_fetch(query.k * grow, options.offset * grow, strategy.beam,
                                   strategy.multiplier if conditions else 1.0, strategy.rescore, len(exclude))
        params["window"] = fetch.window
        settings = (f"hnsw_candidate_list_size_for_search = {fetch.candidates}, "
                    f"optimize_use_projections = 0, {tuning.CACHED_READ}")
        if conditions:
            settings += ", vector_search_filter_strategy = 'postfilter'"
        if strategy.rescore:
            settings += ", vector_search_with_rescoring = 1"
        if conditions or strategy.rescore:
            settings += f", vector_search_index_fetch_multiplier = {fetch.multiplier:g}"
        if conditions or fetch.wanted > 1000:
            settings += f", max_limit_for_vector_search_queries = {max(1000, fetch.wanted)}"
        inner = f"    {with_}\n    SELECT {shown}, {score} AS score\n    FROM images{where}\n" \
                f"    ORDER BY {distance}\n    LIMIT {{window:UInt32}}"
        outer = exclude + (["score >= {min_score:Float64}"] if options.min_score is not None else [])
        cut = ("\nWHERE " + " AND ".join(outer)) if outer else ""
        by = ""
        if options.moments:   # a video's best moments of those fetched (a page come back short: Searcher.rank)
            by = f"\nLIMIT {{moments:UInt32}} BY {CONTENT}"
            params["moments"] = options.moments
        return f"SELECT *\nFROM (\n{inner}\n){cut}\nORDER BY score DESC, id{by}{page}", settings, params
    conditions = exclude + conditions
    if options.min_score is not None:
        conditions.append("score >= {min_score:Float64}")
    where = ("\nWHERE " + "\n  AND ".join(conditions)) if conditions else ""
    order, then = f"{distance} ASC, id", "score DESC, id"
    if options.order_by:
        column = f"{quote_identifier(options.order_by)} {'DESC' if options.descending else 'ASC'} NULLS LAST"
        order, then = f"{column}, {order}", f"{column}, {then}"
    head = f"{with_}\nSELECT {shown}, {score} AS score\nFROM images"
    return (ordered_page(f"{head}{where}", order, options, params, page, then),
            f"{tuning.CONCURRENT_READ}, {tuning.CACHED_READ}", params)


def facet_sql(query: Query, vectors: list[QueryVector]) -> tuple[str, dict]:
    """Counts of the matches per value of each of the query's facets (a date column: per year), among the
    `facet_top` best or, with a min_score, among all that score at least that: one GROUP BY over an ARRAY JOIN.
    Answers rows (facet, value, n), at most MAX_FACET_VALUES per facet, the most frequent first; where the table
    holds videos, a video counts once per value, however many of its moments match."""
    with_, conditions, params, distance, score, exclude = _ranking(query.where, vectors, bool(query.options.moments))
    conditions = exclude + conditions
    params.update(facet_names=[f.column for f in query.facets], facet_values=MAX_FACET_VALUES)
    window = ""
    if query.options.min_score is None:
        window = "\n    ORDER BY " + distance + " ASC, id\n    LIMIT {facet_top:UInt32}"
        params["facet_top"] = query.facet_top
    else:
        conditions.append("score >= {min_score:Float64}")
        params["min_score"] = query.options.min_score
    where = ("\n    WHERE " + "\n      AND ".join(conditions)) if conditions else ""
    values = ", ".join(f.value for f in query.facets)
    count, content = "count()", ""
    if query.options.moments:
        count, content = "uniqExact(`$content`)", f", {CONTENT} AS `$content`"
    return (f"SELECT facet, value, {count} AS n\nFROM (\n    {with_}\n    SELECT {score} AS score, "
            f"[{values}] AS `$facet_values`{content}\n    FROM images{where}{window}\n)\n"
            "ARRAY JOIN `$facet_values` AS value, {facet_names:Array(String)} AS facet\n"
            "GROUP BY facet, value\nORDER BY facet, n DESC, value\nLIMIT {facet_values:UInt32} BY facet"), params


# The library with no query, newest first: when the photo was taken, else its file's time, else when it was loaded.
NEWEST_FIRST = "coalesce(taken_at, modified_at, loaded_at) DESC, loaded_at DESC, id"


def browse_sql(query: Query) -> tuple[str, dict]:
    """A page of the images `query`'s filters match, newest first (NEWEST_FIRST); no score."""
    params = {**query.where.params, "k": query.k, "offset": query.options.offset}
    where = f"\nWHERE {query.where.sql}" if query.where.conditions else ""
    return (f"SELECT * EXCEPT ({HIDDEN}), CAST(NULL AS Nullable(Float64)) AS score\nFROM images{where}\n"
            f"ORDER BY {NEWEST_FIRST}\nLIMIT {{k:UInt32}} OFFSET {{offset:UInt32}}\nSETTINGS {tuning.CACHED_READ}",
            params)


def browse_facet_sql(query: Query) -> tuple[str, dict]:
    """Counts per value of each of `query`'s facets over every image its filters match (facet_sql's rows)."""
    params = {**query.where.params, "facet_names": [f.column for f in query.facets],
              "facet_values": MAX_FACET_VALUES}
    where = f"\n    WHERE {query.where.sql}" if query.where.conditions else ""
    values = ", ".join(f.value for f in query.facets)
    return (f"SELECT facet, value, count() AS n\nFROM (\n    SELECT [{values}] AS `$facet_values`\n"
            f"    FROM images{where}\n)\n"
            "ARRAY JOIN `$facet_values` AS value, {facet_names:Array(String)} AS facet\n"
            "GROUP BY facet, value\nORDER BY facet, n DESC, value\nLIMIT {facet_values:UInt32} BY facet"), params


def count_sql(where: Where, limit: int | None = None) -> tuple[str, dict]:
    """(matching, seen): the rows `where` matches and the rows looked at, over the whole table or its first
    `limit` rows (ids are content hashes, so those are a random sample)."""
    source = f"(SELECT * FROM images LIMIT {int(limit)})" if limit else "images"
    return f"SELECT countIf({where.sql}) AS matching, count() AS seen FROM {source}", dict(where.params)
