"""`clipsearch eval`: how good search is on a team's own queries. A judgments file (CSV or JSONL) says, per
query, what is relevant: stored images by `path` or `id` with a `grade` (0-3, default 1; 0: judged not
relevant), or a `filter` that defines the relevant set (`category=poster`; several conditions joined by `;`).
Each query runs through the Searcher the `search` command uses (same model, filters, match mode), and its
results are scored by metrics.py: precision@k, recall@k, nDCG@k and the reciprocal rank, per query and
averaged over the queries that have a relevant item.

A query is an image query when its text names an image file (relative to the judgments file's folder, or
absolute). Judgments naming images that are not stored are reported and skipped; a query left with no
relevant item is reported and left out of the averages. Everything a file could get wrong is one QueryError
naming the line."""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipsearch.errors import QueryError
from clipsearch.search import metrics
from clipsearch.search.filters import Filter, parse_filter
from clipsearch.search.searcher import Searcher
from clipsearch.search.statement import count_sql
from clipsearch.search.where import Where, bind_filters
from clipsearch.store.catalog import Catalog

COLUMNS = ("query", "path", "id", "grade", "filter")
MAX_JUDGMENTS = 1_000_000   # rows of a judgments file
MAX_QUERIES = 10_000        # distinct queries: each is one search per model and match mode
LOOKUP = 10_000             # paths or ids looked up per statement
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif")


@dataclass
class Judged:
    """One query's judgments: grades by ("path" | "id", value), and at most one filter with its grade."""
    query: str
    line: int                                   # where it first appears
    image: str | None = None                    # the image file, for an image query
    grades: dict[tuple[str, str], int] = field(default_factory=dict)
    lines: dict[tuple[str, str], int] = field(default_factory=dict)   # where each graded item first appears
    filter: tuple[str, int, int] | None = None  # (expression, grade, line)


@dataclass
class Relevant:
    """One query's relevant items resolved against the store: grades by id (0: judged not relevant), and the
    filter's set (its Where, grade and how many it holds beyond the ids judged)."""
    grades: dict[str, int]
    where: Where | None = None
    filter_grade: int = 0
    filter_count: int = 0

    @property
    def count(self) -> int:
        return sum(g > 0 for g in self.grades.values()) + (self.filter_count if self.filter_grade > 0 else 0)

    def ideal(self, k: int) -> list[int]:
        grades = [g for g in self.grades.values() if g > 0]
        grades += [self.filter_grade] * min(k, self.filter_count if self.filter_grade > 0 else 0)
        return sorted(grades, reverse=True)[:k]


@dataclass
class Report:
    """What eval found: `as_json()` is the `--json` document; `skipped` the judgments naming no stored image
    (line, what); `no_relevant` the queries left without a relevant item."""
    k: int
    queries: int
    runs: list[dict]
    skipped: list[tuple[int, str]]
    no_relevant: list[str]
    saved: int = 0    # judgments stored in the `judgments` table

    def as_json(self) -> dict:
        return {"k": self.k, "queries": self.queries, "runs": self.runs}


# -- reading -------------------------------------------------------------------------------------
def _rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line, row) of a CSV or JSONL file, after checking its columns."""
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise QueryError(f"{path}: {exc.strerror}") from None
    with handle:
        if path.suffix.lower() == ".jsonl":
            for line, text in enumerate(handle, 1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except ValueError:
                    raise QueryError(f"{path}:{line}: not a JSON object") from None
                if not isinstance(row, dict):
                    raise QueryError(f"{path}:{line}: not a JSON object")
                _check_columns(path, row)
                yield line, row
            return
        if path.suffix.lower() != ".csv":
            raise QueryError(f"{path}: judgments are a .csv or .jsonl file")
        try:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None:
                return
            _check_columns(path, {name: "" for name in reader.fieldnames})
            for row in reader:
                if None in row:
                    raise QueryError(f"{path}:{reader.line_num}: more fields than the header")
                yield reader.line_num, row
        except (csv.Error, UnicodeDecodeError) as exc:
            raise QueryError(f"{path}: not a readable CSV file ({exc})") from None


def _check_columns(path: Path, row: dict) -> None:
    unknown = [str(c) for c in row if c not in COLUMNS]
    if unknown:
        raise QueryError(f"{path}: unknown column{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                         f"judgments have {', '.join(COLUMNS)}")
    if "query" not in row:
        raise QueryError(f"{path}: no query column; judgments have {', '.join(COLUMNS)}")


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _grade(path: Path, line: int, value: Any) -> int:
    text = _text(value)
    if text == "":
        return 1
    try:
        grade = float(text)
    except ValueError:
        grade = -1.0
    if isinstance(value, bool) or not grade.is_integer() or not 0 <= grade <= metrics.MAX_GRADE:
        raise QueryError(f"{path}:{line}: grade is a whole number from 0 to {metrics.MAX_GRADE}, got {text!r}")
    return int(grade)


def read_judgments(path: str | os.PathLike) -> list[Judged]:
    """The judgments of a CSV or JSONL file, by query in the order they first appear (checked: see the module)."""
    path = Path(path)
    queries: dict[str, Judged] = {}
    rows = 0
    for line, row in _rows(path):
        rows += 1
        if rows > MAX_JUDGMENTS:
            raise QueryError(f"{path}: more than {MAX_JUDGMENTS:,} judgments; split the file")
        query = _text(row.get("query"))
        if not query:
            raise QueryError(f"{path}:{line}: no query")
        given = {c: _text(row.get(c)) for c in ("path", "id", "filter") if _text(row.get(c))}
        if len(given) != 1:
            raise QueryError(f"{path}:{line}: a judgment names one of path, id or filter, got "
                             f"{', '.join(given) or 'none'}")
        grade = _grade(path, line, row.get("grade"))
        judged = queries.get(query)
        if judged is None:
            if len(queries) >= MAX_QUERIES:
                raise QueryError(f"{path}:{line}: more than {MAX_QUERIES:,} queries; split the file")
            judged = queries[query] = Judged(query, line, _query_image(path, query))
        (kind, value), = given.items()
        if kind == "filter":
            if judged.filter is not None and judged.filter[0] != value:
                raise QueryError(f"{path}:{line}: the query {query!r} has a filter already (line "
                                 f"{judged.filter[2]}); join conditions with ';' in one filter")
            parse_conditions(value, f"{path}:{line}")
            judged.filter = (value, grade, line)
        else:
            key = (kind, str(Path(path.parent, value).resolve()) if kind == "path" and not os.path.isabs(value)
                   else value)
            judged.grades[key] = max(grade, judged.grades.get(key, 0))
            judged.lines.setdefault(key, line)
    if not queries:
        raise QueryError(f"{path}: no judgments (a header with query and one of path, id or filter, then a row "
                         "per relevant item)")
    return list(queries.values())


def clicks_judgments(catalog: Catalog, since: str | None = None) -> list[Judged]:
    """Judgments made from the page's clicks (sql/queries/judgments_from_clicks.sql): for each text searched
    since the day `since` (YYYY-MM-DD; None: ever), the results opened from it, graded by how many of its
    searches opened them (1 to 3)."""
    import datetime

    from clipsearch.sql import read as read_sql
    try:
        day = datetime.date.fromisoformat(since) if since else datetime.date(1970, 1, 1)
    except (TypeError, ValueError):
        raise QueryError(f"--since is a day, YYYY-MM-DD, got {since!r}") from None
    rows = catalog.query(read_sql("queries/judgments_from_clicks.sql"), {"since": day.isoformat()})
    queries: dict[str, Judged] = {}
    for line, row in enumerate(rows, 1):
        judged = queries.setdefault(row["query"], Judged(row["query"], line))
        judged.grades["id", row["image_id"]] = int(row["grade"])
        judged.lines["id", row["image_id"]] = line
        if len(queries) > MAX_QUERIES:
            raise QueryError(f"clicks on more than {MAX_QUERIES:,} queries; choose fewer with --since")
    if not queries:
        raise QueryError("no results opened from the page's searches" + (f" since {day}" if since else "")
                         + ": the page records which result a person opens from which search")
    return list(queries.values())


def save(catalog: Catalog, judged: Sequence[Judged], relevant: Sequence[Relevant], source: str) -> int:
    """Store the judgments by image (the grades resolved to stored ids; a filter's set is not written out) in
    the `judgments` table, for sql/queries/eval_metrics.sql. Returns how many rows were written."""
    import pyarrow as pa
    rows = [(j.query, image_id, grade) for j, r in zip(judged, relevant, strict=True)
            for image_id, grade in r.grades.items()]
    if rows:
        queries, ids, grades = zip(*rows, strict=True)
        catalog.append_judgments(pa.table({
            "query": pa.array(queries, pa.string()), "image_id": pa.array(ids, pa.string()),
            "grade": pa.array(grades, pa.uint8()), "source": pa.array([source] * len(rows), pa.string())}))
    return len(rows)


def parse_conditions(expression: str, where: str) -> list[Filter]:
    """A judgment's filter: conditions as `search --filter` takes them, joined by ';'."""
    try:
        return [parse_filter(part.strip()) for part in expression.split(";") if part.strip()]
    except QueryError as exc:
        raise QueryError(f"{where}: {exc}") from None


def _query_image(path: Path, query: str) -> str | None:
    """The image file a query names (relative to the judgments' folder, or absolute), else None: a text."""
    if not query.lower().endswith(IMAGE_SUFFIXES):
        return None
    file = Path(query) if os.path.isabs(query) else path.parent / query
    return str(file) if file.is_file() else None


# -- resolving against the store -----------------------------------------------------------------
def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), LOOKUP):
        yield values[start:start + LOOKUP]


def _stored(catalog: Catalog, kind: str, values: list[str]) -> dict[str, str]:
    """value -> stored id, for the paths (any path that holds an image now) or ids (or unique prefixes) stored."""
    found: dict[str, str] = {}
    for chunk in _chunks(values):
        if kind == "path":
            rows = catalog.query(
                "SELECT path AS value, id FROM files FINAL WHERE present AND has({v:Array(String)}, path) "
                "AND id IN (SELECT id FROM images) UNION ALL SELECT path AS value, id FROM images "
                "WHERE has({v:Array(String)}, path)", {"v": chunk})
        else:
            rows = catalog.query("SELECT value, any(images.id) AS stored, count() AS n FROM images ARRAY JOIN "
                                 "{v:Array(String)} AS value WHERE startsWith(images.id, lower(value)) GROUP BY value "
                                 "HAVING n = 1", {"v": chunk})
            rows = [{"value": r["value"], "id": r["stored"]} for r in rows]
        found.update((r["value"], r["id"]) for r in rows)
    return found


def resolve(catalog: Catalog, judged: Sequence[Judged], columns: dict[str, str], k: int
            ) -> tuple[list[Relevant], list[tuple[int, str]]]:
    """Each query's relevant items by stored id, and the judgments naming nothing stored (line, what)."""
    lookups = {kind: _stored(catalog, kind, sorted({v for j in judged for (c, v) in j.grades if c == kind}))
               for kind in ("path", "id")}
    resolved, skipped = [], []
    for j in judged:
        grades: dict[str, int] = {}
        for (kind, value), grade in j.grades.items():
            image_id = lookups[kind].get(value)
            if image_id is None:
                skipped.append((j.lines[kind, value], f"{kind} {value} (query {j.query!r}): not stored"))
                continue
            grades[image_id] = max(grade, grades.get(image_id, 0))
        relevant = Relevant(grades)
        if j.filter is not None:
            expression, grade, line = j.filter
            try:
                relevant.where = bind_filters(parse_conditions(expression, f"line {line}"), columns)
            except QueryError as exc:
                raise QueryError(f"line {line}: filter {expression!r}: {exc}") from None
            relevant.filter_grade = grade
            relevant.filter_count = _count_beyond(catalog, relevant.where, list(grades))
        resolved.append(relevant)
    return resolved, skipped


def _count_beyond(catalog: Catalog, where: Where, judged_ids: list[str]) -> int:
    """The rows `where` matches that are not among the ids judged one by one (those grades win)."""
    sql, params = count_sql(where)
    if judged_ids:
        sql += " WHERE id NOT IN {judged_ids:Array(String)}"
        params["judged_ids"] = judged_ids
    return int(catalog.query(sql, params)[0]["matching"])


def _in_filter(catalog: Catalog, where: Where, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    rows = catalog.query(f"SELECT id FROM images WHERE id IN {{eval_ids:Array(String)}} AND {where.sql}",
                         {**where.params, "eval_ids": ids})
    return {r["id"] for r in rows}


# -- running -------------------------------------------------------------------------------------
def evaluate(catalog: Catalog, judged: Sequence[Judged], searchers: dict[str, Searcher], matches: Sequence[str],
             k: int, run: Callable[[Searcher, Judged, str], list[dict]], columns: dict[str, str],
             progress: bool = False, cutoff: bool = False, save_as: str | None = None) -> Report:
    """Every query through every searcher (model label -> Searcher) and match mode, scored at `k`. `run` does
    one search; with `cutoff` (an adaptive cut that may return fewer than k) precision is of the set returned.
    With `save_as` the judgments are stored too (`save`), under that source name."""
    from tqdm import tqdm
    relevant, skipped = resolve(catalog, judged, columns, k)
    saved = save(catalog, judged, relevant, save_as) if save_as is not None else 0
    no_relevant = [j.query for j, r in zip(judged, relevant, strict=True) if r.count == 0]
    runs = []
    with tqdm(total=len(judged) * len(searchers) * len(matches), desc="evaluating", unit="search",
              disable=not progress, leave=False) as bar:
        for label, searcher in searchers.items():
            for match in matches:
                per_query: list[dict[str, Any]] = []
                for j, r in zip(judged, relevant, strict=True):
                    bar.update()
                    if r.count == 0:
                        per_query.append({"query": j.query, "relevant": 0, "returned": None,
                                          "error": "no relevant item is stored for this query"})
                        continue
                    try:
                        ids = [row["id"] for row in run(searcher, j, match)][:k]
                    except QueryError as exc:   # e.g. an image query asked to match words: this query only
                        per_query.append({"query": j.query, "relevant": r.count, "returned": None, "error": str(exc)})
                        continue
                    in_filter = _in_filter(catalog, r.where, [i for i in ids if i not in r.grades]) \
                        if r.where is not None else set()
                    gains = [r.grades.get(i, r.filter_grade if i in in_filter else 0) for i in ids]
                    scored = metrics.scores(gains, r.count, r.ideal(k), k)
                    if cutoff:   # what was returned, however few: how many of them are right
                        scored["precision_at_k"] = round(metrics.precision_at_k(gains, max(1, len(ids))), 4)
                    per_query.append({"query": j.query, "relevant": r.count, "returned": len(ids), **scored})
                scored_queries = [q for q in per_query if "error" not in q]
                means = {name: round(sum(q[name] for q in scored_queries) / len(scored_queries), 4)
                         if scored_queries else None for name in ("precision_at_k", "recall_at_k", "ndcg_at_k", "mrr")}
                runs.append({"model": label, "match": match, **means, "per_query": per_query})
    return Report(k, len(judged), runs, skipped, no_relevant, saved)
