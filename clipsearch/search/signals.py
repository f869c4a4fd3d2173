"""Ranking signals and their fusion: one search statement assembled from signals, not a longer `search_sql`.

A signal gives a branch: a SELECT of the matching rows' visible columns, `picture_score` (the cosine, so every
row can say how like the query its picture is) and the signal's own columns, the first its rank (1 = best),
under the same filters as every other branch, each a bounded window. `fused_sql` stacks the branches, gives a
row every branch's columns (a branch it is missing from: that signal's "missing" value) and ranks by weighted
reciprocal-rank fusion, `score = sum_s w_s / (K0 + rank_s)` (a missing rank adds 0), ties by picture score,
then id. The next signal is one more class with a `branch` and its `columns`.

- PictureSignal: today's cosine ranking (`statement.picture_statement`, exact or HNSW as Searcher.plan
  decides), its window the page of a picture search of `window` rows; `min_score` cuts this branch only.
  Its SETTINGS go at the end of the whole statement: those of a subquery do not reach the vector index.
- WordSignal: images.words_* (store/words.py tokens). A row enters when any field holds any query word
  (`hasAnyTokens` over all fields at once: one lookup of their one text index) and every quoted phrase stands
  together in one field (`hasSubstr`). Its score: sum over fields of the field's weight x the distinct query words found
  there (name: words_name or words_prefixes, so `IMG_20` finds IMG_2041.jpg). Rows of equal score share a rank
  (words alone cannot tell them apart: the pictures do, in the fusion), and its term in the fusion is scaled
  by the share of the query's words the row holds: `zephyr` held by a row says all the query says in words,
  `night` held by a row of "red car at night" a third of it. Alone (`match=words`) ties go by id.

What a `both` search does with the page options (the picture search's own meaning is unchanged):
- each branch ranks a window of `branch_window(k, offset)` rows: at least offset + k, at least
  MIN_BRANCH_WINDOW (so a row a little down both rankings can still rise), at most MAX_WINDOW;
- `min_score` cuts the picture branch (a row under it can still come in by its words);
- `order_by` and `per` apply to the fused candidates, as they do to a picture search's matches;
- facets count the picture ranking's matches, as in a picture search.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from clipsearch.search.options import MAX_WINDOW, Options
from clipsearch.search.query import Query
from clipsearch.search.statement import EXACT, QueryVector, Strategy, _ranking, picture_statement
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
NO_RANK = "CAST(NULL AS Nullable(UInt64))"
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
    """One signal's subquery: its SQL, parameters and the SETTINGS it needs on the whole statement."""
    sql: str
    params: dict
    settings: str = ""


class Signal(Protocol):
    @property
    def weight(self) -> float:
        """The signal's share in the fusion."""
        ...

    @property
    def columns(self) -> tuple[tuple[str, str], ...]:
        """(column, its SQL for a row this branch does not have), the rank first."""
        ...

    def branch(self, query: Query, vectors: list[QueryVector], window: int) -> Branch: ...

    def term(self, weight: str) -> str:
        """The signal's term of the fused score for a row, with `weight` (a bound parameter), NULL when the row
        is not in its branch."""
        ...


@dataclass(frozen=True)
class PictureSignal:
    """Today's cosine ranking, by the strategy the planner chose for a picture search of `window` rows."""
    strategy: Strategy = EXACT
    weight: float = PICTURE_WEIGHT

    @property
    def columns(self) -> tuple[tuple[str, str], ...]:
        return (("`$picture_rank`", NO_RANK),)

    def term(self, weight: str) -> str:
        return f"{weight} / ({K0} + `$picture_rank`)"

    def branch(self, query: Query, vectors: list[QueryVector], window: int) -> Branch:
        picture = Query(query.where, window, Options(min_score=query.options.min_score))
        body, settings, params = picture_statement(picture, vectors, self.strategy)
        sql = ("SELECT * EXCEPT (score), score AS picture_score,\n"
               "       toNullable(row_number() OVER (ORDER BY score DESC, id)) AS `$picture_rank`\n"
               f"FROM (\n{indent(body)}\n)")
        return Branch(sql, params, settings)


@dataclass(frozen=True)
class WordSignal:
    """The rows holding the query's words (store.words.query_words), ranked by the words they hold."""
    words: tuple[str, ...]
    phrases: tuple[tuple[str, ...], ...] = ()
    weight: float = WORD_WEIGHT

    @property
    def columns(self) -> tuple[tuple[str, str], ...]:
        return (("`$word_rank`", NO_RANK), ("`$word_score`", "toFloat64(0)"), ("`$word_share`", "toFloat64(0)"),
                *((f"`$words_{field}`", "CAST([] AS Array(String))") for field in FIELDS))

    def term(self, weight: str) -> str:
        return f"{weight} * `$word_share` / ({K0} + `$word_rank`)"

    def condition(self) -> tuple[str, dict]:
        """The rows that hold a query word (and every phrase): one lookup of the text index."""
        if not self.words:
            return "0", {}
        params: dict = {"query_words": list(self.words)}
        parts = [f"hasAnyTokens({WORDS_ANY}, {{query_words:Array(String)}})"]
        for i, phrase in enumerate(self.phrases):
            params[f"phrase{i}"] = list(phrase)
            parts.append("(" + " OR ".join(f"hasSubstr({column}, {{phrase{i}:Array(String)}})"
                                           for columns in FIELDS.values() for column in columns[:1]) + ")")
        return " AND ".join(parts), params

    def branch(self, query: Query, vectors: list[QueryVector], window: int) -> Branch:
        with_, conditions, params, distance, score, exclude = _ranking(query.where, vectors)
        found, word_params = self.condition()
        params.update(word_params, words_window=window)
        where = "\n      AND ".join([*exclude, *conditions, found])
        matched = ",\n           ".join(
            f"arrayIntersect({{query_words:Array(String)}}, {self._tokens(columns)}) AS `$words_{field}`"
            if self.words else f"CAST([] AS Array(String)) AS `$words_{field}`"
            for field, columns in FIELDS.items())
        word_score = " + ".join(f"{FIELD_WEIGHTS[field]} * length(`$words_{field}`)" for field in FIELDS)
        held = ", ".join(f"`$words_{field}`" for field in FIELDS)
        share = f"length(arrayDistinct(arrayConcat({held}))) / {max(1, len(self.words))}"
        # The window keeps the rows of the best word scores, the best pictures among equal ones: the rows the
        # fusion can raise
        inner = (f"{with_}\nSELECT * EXCEPT ({HIDDEN}), {score} AS picture_score,\n"
                 f"       {matched},\n       toFloat64({word_score}) AS `$word_score`,\n"
                 f"       toFloat64({share}) AS `$word_share`\n"
                 f"FROM images\nWHERE {where}\nORDER BY `$word_score` DESC, {distance} ASC, id\n"
                 "LIMIT {words_window:UInt32}")
        sql = ("SELECT *, toNullable(toUInt64(dense_rank() OVER (ORDER BY `$word_score` DESC))) AS `$word_rank`\n"
               f"FROM (\n{indent(inner)}\n)")
        return Branch(sql, params)

    @staticmethod
    def _tokens(columns: tuple[str, ...]) -> str:
        return columns[0] if len(columns) == 1 else f"arrayConcat({', '.join(columns)})"


def probe_sql(signal: WordSignal, query: Query, vectors: list[QueryVector]) -> tuple[str, dict]:
    """Whether any row under the filters holds the query's words: index lookups, LIMIT 1."""
    found, params = signal.condition()
    params.update(query.where.params)
    exclude = []
    for i, v in enumerate(vectors):
        if v.image_id is not None:
            exclude.append(f"id != {{v{i}_id:String}}")
            params[f"v{i}_id"] = v.image_id
    return f"SELECT 1 AS found FROM images WHERE {' AND '.join([*exclude, *query.where.conditions, found])} " \
           "LIMIT 1", params


def fused_sql(query: Query, vectors: list[QueryVector], signals: list[Signal]) -> tuple[str, dict]:
    """One statement ranking by every signal in `signals`, fused by weighted reciprocal rank: the page of
    `query` (k, offset, order_by, per) over the fused candidates. Columns `$picture_rank`, `$word_rank`,
    `$word_score`, `$words_<field>` explain each row; `picture_score` is the cosine, `score` the fused score."""
    options = query.options
    window = branch_window(query.k, options.offset)
    branches = [signal.branch(query, vectors, window) for signal in signals]
    extras = [column for signal in signals for column in signal.columns]
    names = ", ".join(name for name, _ in extras)
    parts, params, settings = [], {}, []
    for signal, branch in zip(signals, branches, strict=True):
        own = {name for name, _ in signal.columns}
        columns = ", ".join(name if name in own else f"{missing} AS {name}" for name, missing in extras)
        parts.append(f"SELECT * EXCEPT ({', '.join(own)}), {columns}\nFROM (\n{indent(branch.sql)}\n)")
        params.update(branch.params)
        settings += [branch.settings] if branch.settings else []
    merged = ",\n       ".join(f"max({name}) OVER (PARTITION BY id) AS {name}" for name, _ in extras)
    for i, signal in enumerate(signals):
        params[f"fusion_w{i}"] = float(signal.weight)
    fused = " + ".join(f"coalesce({signal.term(f'{{fusion_w{i}:Float64}}')}, 0)" for i, signal in enumerate(signals))
    union = "\n    UNION ALL\n".join(indent(part, "        ") for part in parts)
    # ties by the pictures where they are a signal: words alone cannot tell equal rows apart
    pictures = any(isinstance(signal, PictureSignal) for signal in signals)
    order = "score DESC, picture_score DESC, id" if pictures else "score DESC, id"
    if options.order_by:
        order = f"{quote_identifier(options.order_by)} {'DESC' if options.descending else 'ASC'} NULLS LAST, {order}"
    by = ""
    if options.per:
        by = f"\nLIMIT {{per_limit:UInt32}} BY {quote_identifier(options.per)}"
        params["per_limit"] = options.per_limit
    params.update(page_k=query.k, page_offset=options.offset)
    sql = (f"SELECT *, {fused} AS score\nFROM (\n    SELECT * EXCEPT ({names}),\n       {merged}\n"
           f"    FROM (\n{union}\n    )\n    LIMIT 1 BY id\n)\nORDER BY {order}{by}\n"
           "LIMIT {page_k:UInt32} OFFSET {page_offset:UInt32}")
    return sql + (f"\nSETTINGS {', '.join(settings)}" if settings else ""), params
