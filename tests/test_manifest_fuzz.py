"""A bad manifest row is one bad row: it becomes one load error naming the manifest's line, the rest loads,
and a re-run finishes. Never a traceback. Hand-written hostile rows, then hypothesis-generated manifests."""
from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipsearch.errors import SourceError
from clipsearch.loader.load import load
from clipsearch.loader.sources import read_source
from clipsearch.store.catalog import Catalog
from tests.conftest import random_specs, write_catalogue

IMAGES = 4


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """IMAGES distinct images, 00000.png/jpg ..., for manifests written beside them."""
    return write_catalogue(tmp_path_factory.mktemp("manifests"), random_specs(IMAGES, 23), 23, manifest=None)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".png", ".jpg"))


def load_once(folder: Path, db: Path, manifest: Path, model) -> tuple:
    """Load `manifest` into the store `db` (twice: a re-run must finish too); (summary, images, load errors)."""
    with Catalog.open(db) as catalog:
        summary = load(str(manifest), catalog, model, progress=False, workers=0, batch_size=2)
        images = catalog.query("SELECT * EXCEPT (embedding) FROM images ORDER BY path")
        errors = catalog.query("SELECT path, reason FROM load_errors ORDER BY path")
        again = load(str(manifest), catalog, model, progress=False, workers=0, batch_size=2)
        assert (again.loaded, again.failed) == (0, summary.failed)
        assert again.already_present == summary.loaded + summary.already_present
    return summary, images, errors


HOSTILE_CSV = [   # (raw bytes of one data line, the reason its load error gives)
    (b"00001.png,2," + b"x" * 10_000_000, "a value of 10000000 characters"),
    (b"00001.png,2,b,extra,fields", "5 fields, the header has 3"),
    (b"00001.png,2,caf\xe9", "not valid UTF-8"),
    (b"0000\x001.png,2,b", "NUL byte"),
    (b",2,b", "the path is empty"),
]


@pytest.mark.parametrize("line,reason", HOSTILE_CSV, ids=["10MB", "ragged", "latin1", "nul", "nopath"])
def test_a_bad_csv_row_is_one_load_error(folder, tmp_path, model, line, reason):
    first, second, third = names(folder)[:3]
    manifest = folder / f"hostile-{tmp_path.name}.csv"
    manifest.write_bytes(b"path,n,note\n" + f"{first},1,a\n".encode() + line + b"\n" + f"{third},3,c\n".encode())
    summary, images, errors = load_once(folder, tmp_path / "db", manifest, model)
    assert (summary.loaded, summary.failed) == (2, 1)
    assert [r["path"] for r in images] == [str(folder / first), str(folder / third)]
    assert [(r["n"], r["note"]) for r in images] == [(1, "a"), (3, "c")]
    assert len(errors) == 1 and errors[0]["path"] == f"{manifest}:3" and reason in errors[0]["reason"], errors
    assert second not in {Path(r["path"]).name for r in images}


HOSTILE_JSONL = [
    ('{"path": "%s", "n": "\\ud800"}', "lone surrogate"),
    ('{"path": "%s", "n": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ('{"path": "%s", "n": ' + "9" * 5000 + "}", "not valid JSON"),
    ('{"path": "%s", "n": 1', "not valid JSON"),
    ('["%s"]', "must be a JSON object"),
    ('{"path": ["%s"]}', "the path must be text"),
]


@pytest.mark.parametrize("line,reason", HOSTILE_JSONL, ids=["surrogate", "deep", "digits", "cut", "array", "path"])
def test_a_bad_jsonl_row_is_one_load_error(folder, tmp_path, model, line, reason):
    first, second, third = names(folder)[:3]
    manifest = folder / f"hostile-{tmp_path.name}.jsonl"
    manifest.write_text(json.dumps({"path": first, "n": 2**70}) + "\n" + line % second + "\n\n" +
                        json.dumps({"path": third, "n": 1.5}) + "\n")
    summary, images, errors = load_once(folder, tmp_path / "db", manifest, model)
    assert (summary.loaded, summary.failed) == (2, 1)
    assert [(Path(r["path"]).name, r["n"]) for r in images] == [(first, 2.0**70), (third, 1.5)]
    assert len(errors) == 1 and errors[0]["path"] == f"{manifest}:2" and reason in errors[0]["reason"], errors


@pytest.mark.parametrize("values,kind", [
    (["1", str(2**63 - 1)], "Nullable(Int64)"), (["1", str(2**63)], "Nullable(Float64)"),
    (["1", "1" + "0" * 400], "Nullable(String)"), (["1", "nan"], "Nullable(String)"),
    (["1", "inf"], "Nullable(String)"), (["1", "1_000"], "Nullable(String)"), (["1", "٣"], "Nullable(String)"),
    (["1.5", "-2e3", ""], "Nullable(Float64)"),
])
def test_only_plain_numbers_make_a_numeric_column(folder, values, kind):
    manifest = folder / "types.csv"
    manifest.write_text("path,n\n" + "".join(f"{name},{v}\n" for name, v in zip(names(folder), values, strict=False)))
    assert read_source(manifest).column_types == {"n": kind}


def test_a_header_naming_a_column_twice_is_refused(folder):
    (folder / "twice.csv").write_text("path,n,n\n00000.png,1,2\n")
    with pytest.raises(SourceError, match="the header names 'n' more than once"):
        read_source(folder / "twice.csv")


# -- generated manifests ----------------------------------------------------------------------
COLUMN = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(lambda c: c not in ("id", "path", "model"))
VALUE = st.one_of(st.none(), st.booleans(), st.integers(-2**80, 2**80), st.floats(), st.text(max_size=30),
                  st.text(st.characters(codec="utf-8"), max_size=5).map(lambda t: t + "\ud800"),
                  st.integers(1, 3000).map(lambda n: "[" * n + "]" * n))
HOSTILE_LINE = st.one_of(   # one physical line, no quote (a quote may rightly join lines in CSV)
    st.text(st.characters(exclude_characters='"\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029'), min_size=1, max_size=40),
    st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b'"', b"").replace(b"\r", b"").replace(b"\n", b"")),
    st.integers(1, 200_000).map(lambda n: "[" * n),
    st.just('{"path": "00000.png", "n": ' + "1" * 6000 + "}"),
)


@st.composite
def manifests(draw) -> tuple[str, bytes, int, set[str]]:
    """(suffix, content, data rows, names of the images good rows point at)."""
    suffix = draw(st.sampled_from([".csv", ".jsonl"]))
    columns = draw(st.lists(COLUMN, max_size=3, unique=True))
    lines: list[bytes] = []
    good: set[str] = set()
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["good", "values", "path", "line"]))
        image = draw(st.sampled_from([f"{i:05d}" for i in range(IMAGES)]))
        row = {"path": image, **{c: draw(VALUE if kind == "values" else st.integers(0, 9)) for c in columns}}
        if kind == "path":
            row["path"] = draw(st.one_of(st.text(max_size=20), st.just("a\x00b"), st.just(".."), st.just("x" * 5000),
                                         st.integers(), st.none(), st.lists(st.integers(), max_size=2)))
        if kind == "line":
            line = draw(HOSTILE_LINE)
            lines.append(line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass"))
            continue
        if kind == "good":
            good.add(image)
        if suffix == ".jsonl":
            lines.append(json.dumps(row).encode())
        else:
            out = io.StringIO()
            csv.writer(out, lineterminator="").writerow(
                [str(v) if v is not None else "" for v in row.values()])
            lines.append(out.getvalue().encode("utf-8", "surrogatepass"))
    header = b"" if suffix == ".jsonl" else ",".join(["path", *columns]).encode() + b"\n"
    return suffix, header + b"\n".join(lines) + b"\n", len(lines), good


RUN = itertools.count()


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(manifest=manifests())
def test_generated_manifests_load_their_good_rows_and_record_the_rest(folder, tmp_path_factory, model, manifest):
    suffix, content, _, good = manifest
    # good rows name images 00000-00003 by name without suffix: give each its real file name
    for name in names(folder):
        content = content.replace(Path(name).stem.encode(), name.encode())
    n = next(RUN)
    path = folder / f"generated-{n}{suffix}"
    path.write_bytes(content)
    db = tmp_path_factory.mktemp("db")
    try:
        summary, images, errors = load_once(folder, db, path, model)
    except SourceError:   # the manifest as a whole: no rows, no path column, a bad header
        return
    stored = {Path(r["path"]).stem for r in images}
    assert good <= stored, (good, stored, errors)
    # each failure is counted; load_errors holds each (path, reason) once, however many rows named it
    assert summary.failed == len(summary.errors) and summary.loaded == len(images)
    assert set(summary.errors) == {(e["path"], e["reason"]) for e in errors} and len(set(summary.errors)) == len(errors)
