"""Search: encode the query with the model, let ClickHouse rank with one SQL query, log it."""
from __future__ import annotations

import copy
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image

from clipsearch.errors import ClipsearchError, EmptyStore, ModelMismatch, QueryError, StoreError
from clipsearch.models.bundled import BUNDLED_LABEL
from clipsearch.models.model import MAX_QUERY_CHARS, ImageTextModel
from clipsearch.search.cache import RESULT_BYTES, ROW_BYTES, TEXTS_PER_MODEL, Results, Rows, TextVectors, result_ttl
from clipsearch.search.filters import Filter
from clipsearch.search.log import SearchLog
from clipsearch.search.options import EVERY, FACET_TOP, MAX_TERMS, MAX_WINDOW, Options, auto_cutoff
from clipsearch.search.query import Query
from clipsearch.search.signals import (
    FIELDS,
    MATCHES,
    PictureSignal,
    Signal,
    WordSignal,
    fused_sql,
    presence_sql,
    probe_sql,
)
from clipsearch.search.statement import (
    EXACT,
    QueryVector,
    Strategy,
    browse_facet_sql,
    browse_sql,
    count_sql,
    facet_sql,
    rows_sql,
    search_sql,
)
from clipsearch.search.tuning import (
    EXACT_ROWS,
    IMAGE_BEAMS,
    MAX_CACHED_COUNTS,
    MIN_INDEX_SHARE,
    POSTFILTER_SAFETY,
    RECALL_TARGET,
    SAMPLE_ROWS,
    TUNING_BEAMS,
    TUNING_QUERIES,
    TUNING_TEXTS,
    index_fetch,
)
from clipsearch.search.values import check_text
from clipsearch.search.where import Where
from clipsearch.store.catalog import Catalog
from clipsearch.store.connection import Backend
from clipsearch.store.state import TableState
from clipsearch.store.words import query_words

DEFAULT_WEIGHTS = {"image": 0.5, "text": 0.5}
MAX_CACHED_WORDS = 100_000   # words whose presence _words_found keeps
# `images` with a kept model's vectors (Searcher.kept)
KEPT_IMAGES = ("images AS (SELECT i.* REPLACE (e.embedding AS embedding, {kept_model:String} AS model) "
               "FROM images AS i INNER JOIN (SELECT id, any(embedding) AS embedding FROM embeddings "
               "WHERE model = {kept_model:String} GROUP BY id) AS e ON i.id = e.id)")
SWITCH_RETRIES = 1      # a ranking that met another model's table (a reembed's switch) runs once more


@dataclass
class SearchResult:
    rows: list[dict]
    sql: str
    params: dict
    kind: str
    plan: Strategy                                # how it was ranked; `strategy` is its label
    took_ms: dict = field(default_factory=dict)
    facets: dict[str, list[dict]] | None = None   # column -> [{"value", "count"}], the most frequent first
    facet_sql: dict | None = None                 # {"query", "params"} of the facet counts
    next_offset: int | None = None                # the next page's offset, None after the last page
    model: str = ""                               # the model whose vectors ranked it
    match: str = "pictures"                       # the signals that ranked it: pictures, words or both
    k: int = 10                                   # the page size asked for
    search_id: str = ""                           # its search_log row's, for the page's clicks ('' unlogged)

    @property
    def strategy(self) -> str:
        return self.plan.label


def _own_copy(result: SearchResult) -> SearchResult:
    """A kept result for a caller: rows, facets and timings of its own; the statement and its parameters (the
    query vector) shared, as nothing changes them."""
    return replace(result, rows=copy.deepcopy(result.rows), facets=copy.deepcopy(result.facets),
                   took_ms=dict(result.took_ms))


WEIGHTED = re.compile(r"^(.+):(-?(?:\d+(?:\.\d*)?|\.\d+))$", re.DOTALL)


def weighted(value: str) -> tuple[str, float | None]:
    """`VALUE:W` -> (VALUE, W); a value without a numeric suffix -> (value, None). "16:9:1" is "16:9" at 1."""
    match = WEIGHTED.match(value)
    return (match.group(1), float(match.group(2))) if match else (value, None)


@dataclass(frozen=True)
class Term:
    """One term of a query: a text, an image or a stored image's id, with a weight (negative: away from it)."""
    text: str | None = None
    image: Image.Image | None = None
    image_id: str | None = None
    weight: float = 1.0

    def checked(self) -> Term:
        if sum(x is not None for x in (self.text, self.image, self.image_id)) != 1:
            raise QueryError("a term is one of a text, an image or an image id")
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not -1000 <= w <= 1000:
            raise QueryError(f"a term's weight is a number from -1000 to 1000, got {w!r}")
        if self.text is not None:
            text = self.text.strip() if isinstance(self.text, str) else ""
            if not text:
                raise QueryError("a text term is empty")
            if len(text) > MAX_QUERY_CHARS:
                raise QueryError(f"the query text is {len(text)} characters; at most {MAX_QUERY_CHARS}")
            return Term(text=check_text("the query text", text), weight=float(w))
        image_id = None if self.image_id is None else check_text("the image id", str(self.image_id))
        return Term(image=self.image, image_id=image_id, weight=float(w))


class Searcher:
    """Runs searches against `catalog`; `get_model` is called only when a query needs encoding."""

    def __init__(self, catalog: Catalog, get_model: Callable[[], ImageTextModel], log: bool = True,
                 origin: str = "python", cache: str = "on", kept: str | None = None):
        self.catalog = catalog
        self.texts = TextVectors(0 if cache == "off" else TEXTS_PER_MODEL)
        embedded = catalog.connection.backend == Backend.EMBEDDED
        self.results = Results(RESULT_BYTES if cache == "on" else 0, result_ttl(embedded), copier=_own_copy)
        # the page's shown columns by id: with them kept, a ranking reads ids and scores only (_shown); with
        # nothing kept (cache "off"), one statement reads the rows whole, one round trip instead of two
        self.rows = Rows(0 if cache == "off" else ROW_BYTES, result_ttl(embedded))
        self._get_model = get_model
        # `kept`: rank by that model's vectors kept in `embeddings` (reembed --keep) instead of images' own, to
        # compare models on the same searches (clipsearch eval --all-models); exact, since the index is images'
        self.kept = kept
        self.log = SearchLog(catalog) if log else None
        self.origin = origin   # recorded in search_log: http, cli or python
        self._counts: tuple[TableState | None, dict[tuple, tuple[int, int]]] = (None, {})   # _count's, per state
        self._held: tuple[int, dict[str, bool]] = (-1, {})   # _words_held's: (write count, word -> some row holds it)

    def close(self) -> None:
        """Write the search_log rows still buffered."""
        if self.log is not None:
            self.log.close()

    @property
    def model(self) -> ImageTextModel:
        return self._get_model()

    def table_state(self) -> TableState:
        """Columns, models and index of `images`; an error if nothing is loaded yet."""
        state = self.catalog.state.read()
        if not state.models:  # every row names its model, so no model means no rows
            raise EmptyStore("no images loaded yet: run `clipsearch load FOLDER` first")
        if self.kept is not None:
            return replace(state, models=[self.kept], vector_index=False, filter_columns=[])
        return state

    def _query(self, sql: str, params: dict) -> list[dict]:
        """Run one of the search's statements; for a kept model, on `images` with that model's vectors: a
        common table expression named `images` stands for the table in the whole statement, subqueries too."""
        if self.kept is None:
            return self.catalog.query(sql, params)
        body = sql[len("WITH "):] if sql.startswith("WITH ") else f"\n{sql}"
        joiner = ", " if sql.startswith("WITH ") else ""
        return self.catalog.query(f"WITH {KEPT_IMAGES}{joiner}{body}", {**params, "kept_model": self.kept})

    def search(self, text: str | None = None, image: Image.Image | None = None, image_id: str | None = None,
               k: int | str = 10, filters: Sequence[Filter] = (), weights: dict | None = None, *,
               terms: Sequence[Term] = (), options: Options = EVERY, facets: Sequence[str] = (),
               facet_top: int | str = FACET_TOP, match: str = "pictures") -> SearchResult:
        """Rank by text, an image, a stored image id, a weighted mix of an image and a text, or any list of
        weighted `terms` (with those); `options` pages, cuts at a score, orders by a column, diversifies;
        `facets` counts the matches per value of those columns. `match`: rank by the pictures (today's
        ranking), the words of the query's texts (names, titles, metadata, OCR, labels) or both, fused
        (signals.py); a `both` search whose words no row holds is the picture search itself."""
        start = time.perf_counter()
        if match not in MATCHES:
            raise QueryError(f"match is one of {', '.join(MATCHES)}, got {match!r}")
        checked = self._terms(text, image, image_id, weights, terms)
        texts = [term.text for term in checked if term.text is not None and term.weight > 0]
        if match == "words" and not texts:
            raise QueryError("match=words needs a text to look for")
        key = None if any(term.image is not None for term in checked) else (
            tuple((t.text, t.image_id, t.weight) for t in checked), k, repr(list(filters)), options,
            tuple(facets), facet_top, match)
        writes = self.catalog.connection.writes.count   # read first: a write while searching leaves it unkept
        cached = self.results.get(key, writes)
        if cached is not None:
            self.catalog.connection.check_folder()   # a store that went away answers nothing, kept or not
            cached.took_ms = {"model_load": 0.0, "encode": 0.0, "query": 0.0, "cached": True,
                              "total": round((time.perf_counter() - start) * 1000, 2)}
            self._log(cached, checked, filters)
            return cached
        found_words, phrases = query_words(" ".join(texts)) if match != "pictures" else ([], [])
        words = WordSignal(tuple(found_words), tuple(map(tuple, phrases))) if texts and match != "pictures" else None
        for _ in range(SWITCH_RETRIES + 1):
            state = self.table_state()
            # every input checked against the table before the model loads
            query = Query.check(state.columns, filters, k, options, facets, facet_top)
            if not state.videos:   # nothing to group: the statement stays a photo library's
                query = replace(query, options=replace(query.options, moments=0))
            found = [Term(image_id=self.catalog.images.get(term.image_id)["id"], weight=term.weight)  # a unique prefix
                     if term.image_id is not None else term for term in checked]
            t = time.perf_counter()
            model = None
            if any(term.image_id is None for term in found):
                model = self.model  # loads it if this is its first use, timed apart from encoding; one model
                self.catalog.models.check(model.label, state.models)   # for the whole search
            model_load_ms = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            parts = self._vectors(found, model)
            encode_ms = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            try:
                rows, sql, params, strategy, ran = self.rank_by(state, parts, query, words, match)
            except StoreError:
                if self.catalog.connection.writes.count == writes:
                    raise
                # The store was written while this search ran: a switch to a model of another width fails the
                # ranking (vectors of unequal sizes). Once more, with the store as it is now.
                writes = self.catalog.connection.writes.count
                self.catalog.state.forget()
                continue
            if query.options.cutoff == "auto":
                rows = rows[:auto_cutoff([row["score"] for row in rows])]
            query_ms = (time.perf_counter() - t) * 1000
            if model is None or all(row.get("model", model.label) == model.label for row in rows):
                break
            # `clipsearch reembed` switched the store to another model between reading its state and ranking:
            # these rows were ranked by another model's vectors. Once more, with the store's model.
            self.catalog.state.forget()
        else:
            raise ModelMismatch("the store switched to another model during this search; run it again")
        one = found[0]
        kind = "hybrid" if len(found) > 1 else "text" if one.text else "image" if one.image is not None else "similar"
        more = len(rows) == query.k and query.options.offset + len(rows) < MAX_WINDOW and not query.options.cutoff
        result = SearchResult(rows, sql, params, kind, strategy, next_offset=query.options.offset + len(rows)
                              if more else None,
                              model=model.label if model is not None else state.models[0], match=ran, k=query.k)
        if query.facets:
            t = time.perf_counter()
            fsql, fparams = facet_sql(query, parts)
            counts: dict[str, list[dict]] = {f.column: [] for f in query.facets}
            for row in self._query(fsql, fparams):
                counts[row["facet"]].append({"value": row["value"], "count": int(row["n"])})
            result.facets, result.facet_sql = counts, {"query": fsql, "params": fparams}
            result.took_ms["facets"] = round((time.perf_counter() - t) * 1000, 2)
        result.took_ms.update({
            "model_load": round(model_load_ms, 2), "encode": round(encode_ms, 2), "query": round(query_ms, 2),
            "total": round((time.perf_counter() - start) * 1000, 2)})
        self.results.put(key, writes, result)
        self._log(result, found, filters)
        return result

    def _log(self, result: SearchResult, terms: list[Term], filters: Sequence[Filter]) -> None:
        """Each search its own search_log row and id (one answered by a kept result too: its clicks are its own)."""
        if self.log is not None:
            result.search_id = uuid.uuid4().hex
            self.log.record(result.kind, self.origin, next((term.text for term in terms if term.text), None),
                            list(filters), result.k, [r["id"] for r in result.rows], len(result.rows), result.took_ms,
                            result.search_id)

    def browse(self, k: int = 24, filters: Sequence[Filter] = (), offset: int = 0,
               facets: Sequence[str] = ()) -> SearchResult:
        """The library without a query: the images `filters` match, newest first (statement.NEWEST_FIRST), a
        page of `k` from `offset`, with `facets` counted over all of them. No model is needed: rows have no
        score."""
        start = time.perf_counter()
        state = self.table_state()
        query = Query.check(state.columns, filters, k, Options(offset=offset), facets)
        sql, params = browse_sql(query)
        t = time.perf_counter()
        rows = self.catalog.query(sql, params)
        query_ms = (time.perf_counter() - t) * 1000
        for row in rows:
            row["match"] = {"picture_rank": None, "word_rank": None, "words": {}}
        end = query.options.offset + len(rows)
        result = SearchResult(rows, sql, params, "browse", EXACT, model=state.models[0], match="none",
                              next_offset=end if len(rows) == query.k and end < MAX_WINDOW else None)
        if query.facets:
            t = time.perf_counter()
            fsql, fparams = browse_facet_sql(query)
            counts: dict[str, list[dict]] = {f.column: [] for f in query.facets}
            for row in self.catalog.query(fsql, fparams):
                counts[row["facet"]].append({"value": row["value"], "count": int(row["n"])})
            result.facets, result.facet_sql = counts, {"query": fsql, "params": fparams}
            result.took_ms["facets"] = round((time.perf_counter() - t) * 1000, 2)
        result.took_ms.update({"model_load": 0.0, "encode": 0.0, "query": round(query_ms, 2),
                               "total": round((time.perf_counter() - start) * 1000, 2)})
        return result

    @staticmethod
    def _terms(text: str | None, image: Image.Image | None, image_id: str | None, weights: dict | None,
               terms: Sequence[Term]) -> list[Term]:
        """The query's terms, checked: a text, an image or an image id (an image or an id mixed with a text by
        `weights`), then `terms`."""
        text = text.strip() if isinstance(text, str) and text.strip() else None   # checked as a Term below
        if text is None and image is None and image_id is None and not terms:
            raise QueryError("empty query: give a text, an image or an image id")
        if image is not None and image_id is not None:
            raise QueryError("give an image or an image id, not both")
        if len(terms) > MAX_TERMS:
            raise QueryError(f"a query has at most {MAX_TERMS} terms, got {len(terms)}")
        weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        for name, w in weights.items():
            if name not in DEFAULT_WEIGHTS or isinstance(w, bool) or not isinstance(w, (int, float)) \
                    or not 0 <= w < float("inf"):
                raise QueryError(f"weights are non-negative numbers for 'image' and 'text', got {name}={w!r}")
        hybrid = text is not None and (image is not None or image_id is not None)
        query = [Term(image=image, weight=weights["image"] if hybrid else 1.0)] if image is not None else []
        query += [Term(image_id=image_id, weight=weights["image"] if hybrid else 1.0)] if image_id is not None else []
        query += [Term(text=text, weight=weights["text"] if hybrid else 1.0)] if text is not None else []
        query = [t.checked() for t in [*query, *terms]]
        if len(query) > MAX_TERMS:
            raise QueryError(f"a query has 1 to {MAX_TERMS} terms, got {len(query)}")
        if sum(t.weight for t in query if t.weight > 0) <= 0:
            raise QueryError("weights are finite numbers, and at least one term needs a positive weight")
        return query

    def _vectors(self, query: list[Term], model: ImageTextModel | None) -> list[QueryVector]:
        """The terms as query vectors, in order: texts and images encoded by `model` in one batch each."""
        texts = [t.text for t in query if t.text is not None]
        images = [t.image for t in query if t.image is not None]
        encoded = {"text": iter(self.texts.encode(model, texts) if texts and model else []),
                   "image": iter(model.encode_images(images) if images and model else [])}
        return [QueryVector(t.weight, image_id=t.image_id, image=True) if t.image_id is not None else
                QueryVector(t.weight, vector=next(encoded["text" if t.text is not None else "image"]),
                            image=t.text is None)
                for t in query]

    def rank_by(self, state: TableState, parts: list[QueryVector], query: Query, words: WordSignal | None = None,
                match: str = "pictures") -> tuple[list[dict], str, dict, Strategy, str]:
        """Rows ranked by `match`'s signals: (rows, sql, params, strategy of the picture ranking, the match
        that ran). A `both` search whose words no row (under the filters) holds runs the picture search."""
        if words is not None and (match == "words" or self._words_found(words, query, parts)):
            return self._fused(state, parts, query, words, match)
        rows, sql, params, strategy = self.rank(state, parts, query)
        ordered = not query.options.order_by and not query.options.per
        for i, row in enumerate(rows):
            row["picture_score"] = row["score"]
            row["match"] = {"picture_rank": query.options.offset + i + 1 if ordered else None, "word_rank": None,
                            "words": {}}
        return rows, sql, params, strategy, "pictures"

    def _words_found(self, words: WordSignal, query: Query, parts: list[QueryVector]) -> bool:
        """Whether some row (under the filters) holds a word of the query (and its phrases). Unfiltered, it
        is known from which words some row holds, kept per word until the store is written: popular words
        recur across different texts, and a both search then costs no probe."""
        if not words.words:
            return False
        if words.phrases or query.where.conditions or any(v.image_id is not None for v in parts):
            return bool(self._query(*probe_sql(words, query, parts)))
        writes = self.catalog.connection.writes.count   # read first: a write while asking leaves it unkept
        seen, held = self._held
        if seen != writes:
            held = {}
        unknown = [w for w in words.words if w not in held]
        if unknown:
            found = {row["word"] for row in self.catalog.query(*presence_sql(unknown))}
            held = {**held, **{w: w in found for w in unknown}} if len(held) < MAX_CACHED_WORDS else \
                {w: w in found for w in unknown}
            self._held = (writes, held)
        return any(held[w] for w in words.words)

    def _fused(self, state: TableState, parts: list[QueryVector], query: Query, words: WordSignal, match: str
               ) -> tuple[list[dict], str, dict, Strategy, str]:
        """The fused statement of the word signal and, for `both`, the picture signal (its strategy as a
        picture search of the branch's window would have it; exact again where the index came back short)."""
        signals: list[Signal] = [words]
        strategy = EXACT
        if match == "both":
            # planned as the picture search of this page is: a window of 50 would tip the cost planner to an
            # exact scan where the page keeps the index (the window is the index's fetch, tuning.index_fetch)
            strategy = self.plan(state, Query(query.where, query.k, Options(min_score=query.options.min_score,
                                                                             offset=query.options.offset)), parts)
            signals = [PictureSignal(strategy), words]
        sql, params = fused_sql(query, parts, signals, ids_only=self.rows.on)
        rows = self._query(sql, params)
        if strategy.name != "exact" and len(rows) < query.k and query.where.conditions:
            strategy = Strategy("exact", matching=strategy.matching, after=(strategy.name, len(rows)))
            sql, params = fused_sql(query, parts, [PictureSignal(strategy), words], ids_only=self.rows.on)
            rows = self._query(sql, params)
        rows = self._shown(rows, ("picture_score", "score"))
        for row in rows:
            row["match"] = {"picture_rank": row.pop("$picture_rank", None), "word_rank": row.pop("$word_rank"),
                            "words": {}}
            row.pop("$word_score")
            row.pop("$word_share")
            for name in FIELDS:
                found = set(row.pop(f"$words_{name}"))
                if found:   # in the query's order
                    row["match"]["words"][name] = [w for w in words.words if w in found]
        return rows, sql, params, strategy, match

    def rank(self, state: TableState, parts: list[QueryVector], query: Query
             ) -> tuple[list[dict], str, dict, Strategy]:
        """Rows ranked by the weighted distance to `parts`: (rows, sql, params, strategy that ran)."""
        one = parts[0]
        if len(parts) == 1 and one.vector is None:
            # "more like this": planned as an image query; only the index needs the stored vector itself
            strategy = self.plan(state, query, [replace(one, vector=(), image=True)])
            found = self.catalog.query("SELECT embedding FROM images WHERE id = {id:String} LIMIT 1",
                                       {"id": one.image_id}) if strategy.name != "exact" else []
            parts = [replace(one, vector=found[0]["embedding"], image=True)] if found else parts
            strategy = strategy if found else self.plan(state, query, parts)
        else:
            strategy = self.plan(state, query, parts)
        options = query.options
        sql, params = search_sql(query, parts, strategy, ids_only=self.rows.on)
        rows = self._query(sql, params)
        if strategy.name != "exact" and len(rows) < query.k and (
                # Without filters the index returns every neighbour asked for, so only the score cut or the
                # table's end makes a page short; with filters the score cut and too few neighbours fetched
                # look alike.
                bool(query.where.conditions) if options.min_score is not None
                else len(rows) < self._count(state, query.where)[0] - options.offset):
            # The index came back short (the filter dropped too many neighbours): rank the matching
            # rows exactly, so a search always returns k rows when k rows match.
            strategy = Strategy("exact", matching=strategy.matching, after=(strategy.name, len(rows)))
            sql, params = search_sql(query, parts, strategy, ids_only=self.rows.on)
            rows = self._query(sql, params)
        elif strategy.name == "exact":
            column = self._filter_column(state, query.where)
            if column:
                strategy = replace(strategy, projection=column[0])
        return self._shown(rows), sql, params, strategy

    def _shown(self, ranked: list[dict], scores: tuple[str, ...] = ("score",)) -> list[dict]:
        """Rows ranked by id as whole rows: their shown columns (kept ones, the others read by id in one
        statement: rows_sql), then the ranking's `scores` and `$` columns, as one statement selecting both would
        give them. A row deleted since it was ranked is left out. Rows ranked whole (nothing kept) are as they are."""
        if not ranked or not self.rows.on:
            return ranked
        ids = list(dict.fromkeys(row["id"] for row in ranked))
        writes = self.catalog.connection.writes.count   # read first: a write while reading leaves them unkept
        shown = self.rows.get(ids, writes)
        missing = [i for i in ids if i not in shown]
        if missing:
            read = {row["id"]: row for row in self._query(*rows_sql(missing))}   # the newest of an id's last
            self.rows.put(read, writes)
            shown.update(read)
        return [{**shown[row["id"]], **{k: v for k, v in row.items() if k in scores or k[0] == "$"}}
                for row in ranked if row["id"] in shown]

    def plan(self, state: TableState, query: Query, parts: list[QueryVector]) -> Strategy:
        """The strategy for one search, with the rows its filters are estimated to match.

        The index serves a single query vector ordered by score (pages and a score cut included); a mix,
        a stored id, an order by a column or a per-column limit is ranked exactly. With filters,
        their share of rows is counted in SQL on the first SAMPLE_ROWS rows (ids are content hashes, so
        that is a random sample; the whole table when it is smaller): from MIN_INDEX_SHARE up the index
        is used (asked for POSTFILTER_SAFETY / share x the page), below it the matching rows are ranked exactly.
        """
        options = query.options
        if len(parts) != 1 or parts[0].vector is None or not state.vector_index or options.order_by \
                or options.per:
            return Strategy("exact", matching=state.rows)
        matching, seen = self._count(state, query.where, SAMPLE_ROWS)
        share = matching / max(1, seen)
        exact = Strategy("exact", matching=round(share * state.rows))
        column = self._filter_column(state, query.where)
        if share < MIN_INDEX_SHARE or column and column[1] <= EXACT_ROWS:
            return exact
        # The image beam was tuned on stored images asking for their neighbours ("more like this"); an uploaded
        # photo is no nearer the table than a text is (1M x 512: recall 0.948 at the image beam, 0.973 at the
        # text one), so it searches at the text beam
        image = parts[0].image and parts[0].image_id is not None
        if state.exact_ms_per_row and state.index_ms and state.beam:
            exact_ms, index_ms = self.costs(state, share, query.k, options.offset, image)
            if exact_ms < index_ms:
                return exact
        return Strategy("hnsw", POSTFILTER_SAFETY / share, state.image_beam if image and state.image_beam
                        else state.beam, state.rescore, exact.matching)

    @staticmethod
    def costs(state: TableState, share: float, k: int = 10, offset: int = 0, image: bool = False
              ) -> tuple[float, float]:
        """Estimated ms of an exact ranking and of an index search for a page of `k` from `offset` when filters
        match `share` of the rows, from what tune_index measured (scaled to today's rows). An exact ranking
        reads every granule that holds a match: with matches spread at random, 1 - (1 - share) ** rows_per_granule
        of them. The index search costs in proportion to its candidate list (tuning.index_fetch, as search_sql
        asks for it), against the list it had when it was timed (k = 10, unfiltered, at the text beam)."""
        exact_ms = state.exact_ms_per_row * state.rows * (1 - (1 - share) ** state.granule)
        beam = state.image_beam if image and state.image_beam else state.beam
        fetch = index_fetch(k, offset, beam, POSTFILTER_SAFETY / share if share < 1 else 1.0, state.rescore)
        timed = index_fetch(10, 0, state.beam, rescore=state.rescore)
        return exact_ms, state.index_ms * fetch.candidates / timed.candidates

    def tune_index(self, target: float = RECALL_TARGET, queries: int = TUNING_QUERIES) -> dict:
        """Find the smallest HNSW search beams whose recall@10 against the exact ranking reaches `target`, one
        for texts and one for images, on `queries` sample queries each; time an exact ranking and an index
        search for Searcher.plan; record them for later searches. Costs one exact scan per query.

        Text queries are captions (TUNING_TEXTS) encoded by the store's model: CLIP's texts sit apart from
        every image vector, where the graph search is hardest. Without the model (it cannot be loaded here,
        or is not the store's), means of two stored vectors stand in: between neighbourhoods, they err on the
        safe side (0.87 at beam 2048 where the benchmark's texts reached 0.98). Image queries are stored
        vectors asking for their neighbours but themselves, as "more like this" does, which alone uses that
        beam: an uploaded photo searches at the text beam (Searcher.plan)."""
        state = self.catalog.state.read()
        index = self.catalog.indexes.vector_index()
        if index is None or not state.rows:
            raise QueryError("no vector index to tune: run `clipsearch index create` on a loaded store")
        sample = self.catalog.query("SELECT id, embedding FROM images ORDER BY cityHash64(id) LIMIT {n:UInt32}",
                                    {"n": 2 * queries})
        stored = [np.asarray(r["embedding"], dtype=np.float32) for r in sample]
        captions = self._tuning_texts(state, queries)
        texts = captions if captions is not None else (
            [a + b for a, b in zip(stored[::2], stored[1::2], strict=False)] or stored)   # one row: itself
        text = self._tune(state, [[QueryVector(vector=(v / np.linalg.norm(v)).tolist())] for v in texts], target)
        image = self._tune(state, [[QueryVector(vector=r["embedding"], image_id=r["id"], image=True)]
                                   for r in sample[:queries]], target, IMAGE_BEAMS)
        self.catalog.indexes.record_tuning(index["type_full"], text["beam"], text["recall"], target, len(texts),
                                           image["beam"], state.rows, text["exact_ms"], text["index_ms"])
        return {**text, "image_beam": image["beam"], "image_recall": image["recall"], "target": target,
                "queries": len(texts), "text_queries": "stored vectors" if captions is None else "captions"}

    def _tuning_texts(self, state: TableState, queries: int) -> list[np.ndarray] | None:
        """TUNING_TEXTS encoded by the store's model, or None where that model cannot be had here. The bundled
        model knows only coloured shapes: for it, texts of its own world, in Spanish (the benchmark's and the
        tests' queries are English)."""
        texts = list(TUNING_TEXTS)
        try:
            model = self.model
            self.catalog.models.check(model.label, state.models)
            if model.label == BUNDLED_LABEL:
                from clipsearch.models.bundled import COLOURS, SHAPES, query_text
                texts = [query_text(c, s, "es") for c in COLOURS for s in SHAPES][1::2]
            return list(np.asarray(model.encode_texts(texts[:queries]), dtype=np.float32))
        except (ClipsearchError, OSError, RuntimeError, ValueError):
            return None

    def _tune(self, state: TableState, parts: list[list[QueryVector]], target: float,
              beams: tuple[int, ...] = TUNING_BEAMS) -> dict:
        """The smallest of `beams` reaching `target` on `parts`, its recall, and the p50 ms of an exact
        ranking and of an index search at that beam."""
        def run(strategy: Strategy) -> tuple[list[set], float]:
            found, ms = [], []
            for p in parts:
                sql, params = search_sql(Query(k=10), p, strategy)
                start = time.perf_counter()
                found.append({r["id"] for r in self.catalog.query(sql, params)})
                ms.append((time.perf_counter() - start) * 1000)
            return found, float(np.median(ms))
        exact, exact_ms = run(EXACT)
        beam, recall, index_ms = beams[-1], 0.0, 0.0
        for beam in beams:
            found, index_ms = run(Strategy("hnsw", beam=beam, rescore=state.rescore))
            recall = float(np.mean([len(f & e) / max(1, len(e)) for f, e in zip(found, exact, strict=True)]))
            if recall >= target:
                break
        return {"beam": beam, "recall": round(recall, 3), "exact_ms": round(exact_ms, 2),
                "index_ms": round(index_ms, 2)}

    def _filter_column(self, state: TableState, where: Where) -> tuple[str, int] | None:
        """The filter column whose filters leave the fewest rows, with that estimate (None: no filter is on
        a filter column). Estimated like the filters' share, on a sample."""
        best = None
        for column in state.filter_columns:
            on_it = where.on(column)
            if on_it.conditions:
                matching, seen = self._count(state, on_it, SAMPLE_ROWS)
                rows = round(matching / max(1, seen) * state.rows)
                if best is None or rows < best[1]:
                    best = (column, rows)
        return best

    def _count(self, state: TableState, where: Where, limit: int | None = None) -> tuple[int, int]:
        """(rows matching `where`, rows looked at): over the whole table, or its first `limit` rows.
        Remembered for as long as the catalogue's table state is (a write or a second reads it afresh)."""
        if not where.conditions:
            return state.rows, state.rows
        counted_in, counts = self._counts
        if counted_in is not state:
            counts = {}
            self._counts = (state, counts)
        key = (repr(where.filters), limit)
        if key not in counts:
            row = self._query(*count_sql(where, limit))[0]
            if len(counts) >= MAX_CACHED_COUNTS:
                counts.clear()
            counts[key] = int(row["matching"]), int(row["seen"])
        return counts[key]
