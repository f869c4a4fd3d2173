"""Ranking signals and their fusion: one search statement assembled from signals, not a longer `search_sql`.

A signal brings candidates (a SELECT of ids under the same filters as every other signal, a bounded window),
computes its columns on every candidate whichever signal brought it, ranks the candidates (1 = best) and adds a
term to the fused score. `fused_sql` reads each candidate once, by id (the primary key), with `picture_score`
(its cosine, so every row says how like the query its picture is) and every signal's columns, then ranks by
weighted reciprocal-rank fusion, `score = sum_s w_s / (K0 + rank_s)` (no rank adds 0), ties by picture score,
then id. Nothing is computed for the rows a common word holds beyond its word score: distances, explanations
and displayed columns are read for the candidates only. The next signal is one more class with a `branch`,
its `columns`, `ranks` and `term`.

- PictureSignal: today's cosine ranking (`statement.picture_statement`, exact or HNSW as Searcher.plan
  decides) of `window` rows; `min_score` cuts its candidates (and a candidate under it has no picture rank).
  Its SETTINGS go at the end of the whole statement: those of a subquery do not reach the vector index.
- WordSignal: images.words_* (store/words.py tokens). A row is a candidate when any field holds any query word
  (`hasAnyTokens` over all fields at once: one lookup of their one text index) and every quoted phrase stands
  together in one field (`hasSubstr`), the best `window` by word score: the sum over fields of the field's
  weight x the distinct query words found there (name: words_name or words_prefixes, so `IMG_20` finds
  IMG_2041.jpg). Rows of equal score share a rank (words alone cannot tell them apart: the pictures do, in the
  fusion), and its term is scaled by the share of the query's words the row holds: `zephyr` held by a row says
  all the query says in words, `night` held by a row of "red car at night" a third of it. Alone
  (`match=words`) ties go by id.

What a `both` search does with the page options (the picture search's own meaning is unchanged):
- each signal brings a window of `branch_window(k, offset)` candidates: at least offset + k, at least
  MIN_BRANCH_WINDOW (so a row a little down both rankings can still rise), at most MAX_WINDOW;
- `min_score` cuts the picture candidates (a row under it can still come in by its words);
- `order_by` and `per` apply to the fused candidates, as they do to a picture search's matches;
- facets count the picture ranking's matches, as in a picture search.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from clipsearch.search import tuning
from clipsearch.search.options import MAX_WINDOW, Options
from clipsearch.search.query import Query
from clipsearch.search.statement import (
    EXACT,
    QueryVector,
    Strategy,
    _ranking,
    excluded,
    ordered_page,
    picture_statement,
    ranked_columns,
)
from clipsearch.store.columns import HIDDEN, WORDS_ANY
from clipsearch.store.connection import quote_identifier

K0 = 60                      # reciprocal-rank fusion's constant: 1 / (K0 + rank)
MIN_BRANCH_WINDOW = 50       # the fewest rows each branch ranks
MATCHES = ("pictures", "words", "both")
# Where a word can be found: the field as results name it -> the columns holding its tokens
FIELDS = {"name": ("words_name", "words_prefixes"), "title": ("words_title",), "meta": ("words_meta",),
          "ocr": ("words_ocr",), "label": ("words_label",)}
# A word in a title or a name says more than one read in the picture (OCR errs) or a zero-shot label
FIELD_WEIGHTS = {"name": 1.0, "title": 1.0, "meta": 1.0, "ocr": 0.7, "label": 0.5}
# The words signal weighs more when a row holds all the query's words: a stored word the person typed (a
# caption, a SKU, a name) is a stronger sign than a picture's similarity, so such a row at the best word score
# comes before the pictures' best that hold none of them (1.5 / (K0 + 1) > 1 / (K0 + 1)); a row holding one
# word of three (1.5 / 3) needs its picture too, and rows with both come first of all.
PICTURE_WEIGHT = 1.0
WORD_WEIGHT = 1.5


def branch_window(k: int, offset: int) -> int:
    return min(MAX_WINDOW, max(offset + k, MIN_BRANCH_WINDOW))


def indent(sql: str, by: str = "    ") -> str:
    return "\n".join(by + line for line in sql.splitlines())


@dataclass(frozen=True)
class Branch:
    """One signal's candidates: a SELECT of ids, its parameters and the SETTINGS it needs on the whole statement."""
    sql: str
    params: dict
    settings: str = ""


class Signal(Protocol):
    """A ranking signal: the candidates it brings (ids, a bounded window), the columns it computes on every
    candidate (whichever signal brought it), its rank first, and its term of the fused score."""

    @property
    def weight(self) -> float:
        """The signal's share in the fusion."""
        ...

    def branch(self, query: Query, vectors: list[QueryVector], window: int) -> Branch: ...

    def columns(self) -> list[str]:
        """SELECT expressions over a candidate row (its picture_score is there), each `... AS name`."""
        ...

    def ranks(self, query: Query) -> list[str]:
        """Window expressions over all candidates, each `... AS name`; the first is the signal's rank."""
        ...

    def term(self, weight: str) -> str:
        """The signal's term of a row's fused score, with `weight` (a bound parameter); NULL adds nothing."""
        ...


@dataclass(frozen=True)
class PictureSignal:
    """Today's cosine ranking, by the strategy the planner chose for a picture search of `window` rows."""
    strategy: Strategy = EXACT
    weight: float = PICTURE_WEIGHT

    def branch(self, query: Query, vectors: list[QueryVector], window: int) -> Branch:
        # a video's best moments only, so that one video's many cannot fill the window
        picture = Query(query.where, window, Options(min_score=query.options.min_score,
                                                     moments=query.options.moments))
        body, settings, params = picture_statement(picture, vectors, self.strategy, ids_only=True)
        return Branch(f"SELECT id FROM (\n{indent(body)}\n)", params, settings)

    def columns(self) -> list[str]:
        return []

    def ranks(self, query: Query) -> list[str]:
        # under a score cut, a candidate below it (brought by another signal) has no picture rank
        rank = "row_number() OVER (ORDER BY picture_score DESC, id)"
        if query.options.min_score is not None:
            rank = f"if(picture_score >= {{min_score:Float64}}, {rank}, NULL)"
        return [f"{rank} AS `$picture_rank`"]

    def term(self, weight: str) -> str:
        return f"{weight} / ({K0} + `$picture_rank`)"


@dataclass(frozen=True)
class WordSignal:
    """The rows holding the query's words (store.words.query_words), ranked by the words they hold."""
    words: tuple[str, ...]
    phrases: tuple[tuple[str, ...], ...] = ()
    weight: float = WORD_WEIGHT

    def condition(self, every: bool = False) -> tuple[str, dict]:
        """The rows that hold a query word (`every`: all of them) and every phrase: one lookup of the text
        index."""
        if not self.words:
            return "0", {}
        params: dict = {"query_words": list(self.words)}
        parts = [f"{'hasAllTokens' if every else 'hasAnyTokens'}({WORDS_ANY}, {{query_words:Array(String)}})"]
        for i, phrase in enumerate(self.phrases):
            params[f"phrase{i}"] = list(phrase)
            parts.append("(" + " OR ".join(f"hasSubstr({column}, {{phrase{i}:Array(String)}})"
                                           for columns in FIELDS.values() for column in columns[:1]) + ")")
        return " AND ".join(parts), params

    def _found(self, field: str) -> str:
        columns = FIELDS[field]
        tokens = columns[0] if len(columns) == 1 else f"arrayConcat({', '.join(columns)})"
        return f"arrayIntersect({{query_words:Array(String)}}, {tokens})" if self.words else "CAST([] AS Array(String))"

    def _score(self, found: dict[str, str]) -> str:
        return "toFloat64(" + " + ".join(f"{FIELD_WEIGHTS[field]} * length({found[field]})" for field in FIELDS) + ")"

    def branch(self, query: Query, vectors: list[QueryVector], window: int) -> Branch:
        # Ids the text index alone decides, in id order: the rows holding every query word, then those holding
        # any (a word in every tenth row would cost a read of all their token lists to score, and the rows a
        # score would pick among equals are the best pictures, which the picture signal brings). Each
        # candidate's word score is computed on it (columns).
        _, conditions, params, _, _, exclude = _ranking(query.where, vectors, bool(query.options.moments))
        params["words_window"] = window
        tiers = []
        for every in ((True, False) if len(self.words) > 1 else (False,)):
            found, word_params = self.condition(every)
            params.update(word_params)
            where = "\n  AND ".join([*exclude, *conditions, found])
            tiers.append(f"SELECT id FROM images\nWHERE {where}\nORDER BY id\nLIMIT {{words_window:UInt32}}")
        return Branch("\nUNION ALL\n".join(tiers), params)

    def columns(self) -> list[str]:
        found = [f"{self._found(field)} AS `$words_{field}`" for field in FIELDS]
        held = ", ".join(f"`$words_{field}`" for field in FIELDS)
        score = self._score({field: f"`$words_{field}`" for field in FIELDS})
        share = f"length(arrayDistinct(arrayConcat({held}))) / {max(1, len(self.words))}"
        return [*found, f"{score} AS `$word_score`", f"toFloat64({share}) AS `$word_share`"]

    def ranks(self, query: Query) -> list[str]:
        # Rows of equal word score share a rank; a row that holds none has none
        return ["if(`$word_score` > 0, toUInt64(dense_rank() OVER (ORDER BY `$word_score` DESC)), NULL) "
                "AS `$word_rank`"]

    def term(self, weight: str) -> str:
        return f"{weight} * `$word_share` / ({K0} + `$word_rank`)"


def probe_sql(signal: WordSignal, query: Query, vectors: list[QueryVector]) -> tuple[str, dict]:
    """Whether any row under the filters holds the query's words: index lookups, LIMIT 1."""
    found, params = signal.condition()
    params.update(query.where.params)
    exclude = []
    for i, v in enumerate(vectors):
        if v.image_id is not None:
            exclude.append(excluded(i, bool(query.options.moments)))
            params[f"v{i}_id"] = v.image_id
    return f"SELECT 1 AS found FROM images WHERE {' AND '.join([*exclude, *query.where.conditions, found])} " \
           "LIMIT 1", params


def presence_sql(words: list[str]) -> tuple[str, dict]:
    """Which of `words` some row holds, unfiltered: one index lookup per word, LIMIT 1 each (the probe's
    answer for every text made of them, kept until a write: Searcher._words_held)."""
    params = {f"w{i}": [word] for i, word in enumerate(words)}
    parts = [f"(SELECT {{w{i}:Array(String)}}[1] AS word FROM images WHERE hasAnyTokens({WORDS_ANY}, "
             f"{{w{i}:Array(String)}}) LIMIT 1)" for i in range(len(words))]
    return "\nUNION ALL\n".join(parts), params


def fused_sql(query: Query, vectors: list[QueryVector], signals: list[Signal], ids_only: bool = False
              ) -> tuple[str, dict]:
    """One statement ranking by every signal in `signals`, fused by weighted reciprocal rank: the page of
    `query` (k, offset, order_by, per) over the candidates the signals bring (ids, each a bounded window).
    Each candidate is read once, by id, and every signal's columns are computed on it whichever brought it:
    `$picture_rank` (among the candidates), `$word_rank`, `$word_score`, `$word_share`, `$words_<field>`
    explain it; `picture_score` is the cosine, `score` the fused score. `ids_only`: the rows' shown columns are
    left out, for statement.rows_sql to read for the page alone (as picture_statement's)."""
    options = query.options
    window = branch_window(query.k, options.offset)
    with_, _, params, _, picture, _ = _ranking(query.where, vectors, bool(query.options.moments))
    branches = [signal.branch(query, vectors, window) for signal in signals]
    # Candidates are read by id, one granule each: the decompressed-block cache halves a words-only search
    # (53 -> 25 ms at 200k rows); a picture branch brings the same setting
    settings = [tuning.CACHED_READ]
    for branch in branches:
        params.update(branch.params)
        settings += [s for s in branch.settings.split(", ") if s and s not in settings]
    candidates = "\n    UNION ALL\n".join(indent(branch.sql, "        ") for branch in branches)
    shown = ranked_columns(options) if ids_only else f"* EXCEPT ({HIDDEN})"
    columns = ",\n           ".join([f"{picture} AS picture_score",
                                      *(c for signal in signals for c in signal.columns())])
    ranks = ",\n       ".join(r for signal in signals for r in signal.ranks(query))
    for i, signal in enumerate(signals):
        params[f"fusion_w{i}"] = float(signal.weight)
    fused = " + ".join(f"coalesce({signal.term(f'{{fusion_w{i}:Float64}}')}, 0)" for i, signal in enumerate(signals))
    # ties by the pictures where they are a signal: words alone cannot tell equal rows apart
    pictures = any(isinstance(signal, PictureSignal) for signal in signals)
    order = "score DESC, picture_score DESC, id" if pictures else "score DESC, id"
    if options.order_by:
        order = f"{quote_identifier(options.order_by)} {'DESC' if options.descending else 'ASC'} NULLS LAST, {order}"
    params.update(page_k=query.k, page_offset=options.offset)
    select = (f"{with_}\nSELECT *, {fused} AS score\nFROM (\n    SELECT *, {ranks}\n    FROM (\n"
              f"        SELECT {shown},\n           {columns}\n        FROM images\n"
              f"        WHERE id IN (\n{candidates}\n        )\n        LIMIT 1 BY id\n    )\n)")
    sql = ordered_page(select, order, options, params, "\nLIMIT {page_k:UInt32} OFFSET {page_offset:UInt32}", order)
    return f"{sql}\nSETTINGS {', '.join(settings)}", params
