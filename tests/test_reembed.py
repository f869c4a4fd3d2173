"""`clipsearch reembed`: a store changes model in place, resumably, atomically, with nothing lost.

Most tests re-embed with "again:v1", a registered family whose model is the bundled one under another label:
its vectors are the old ones, so after the switch every search must give exactly the results it gave before
(each row got its own image's vector back, nothing dropped or mixed; see Ranked for the one allowance).
The served test switches to a real open_clip ViT-B-32 (random weights) while a client searches.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass

import numpy as np
import pytest

import clipsearch
from clipsearch.errors import ModelMismatch, QueryError
from clipsearch.loader import reembed as reembed_module
from clipsearch.models.clip import ClipModel
from clipsearch.models.factory import FAMILIES, register_family
from clipsearch.service import shapes
from clipsearch.sql import read as read_sql
from clipsearch.store.switch import ModelSwitch
from tests.conftest import ROOT, free_port, random_specs, wait_until, write_catalogue

AGAIN = "again:v1:random"   # the label the family's model is stored under
QUERIES = [("a red circle", []), ("a blue square", ["price>=20"]), ("a green star", ["shape=square"])]


@pytest.fixture
def again():
    register_family("again", lambda name, pretrained: ClipModel())
    yield
    FAMILIES.pop("again", None)


@pytest.fixture
def catalogue(tmp_path, model):
    """A store of 48 images (bundled model) with a vector index and a filter column, and its search results."""
    manifest = write_catalogue(tmp_path / "imgs", random_specs(48, 5), 5, extra=lambda i: {"price": i})
    with clipsearch.open(tmp_path / "db", model=model, log_searches=False) as photos:
        photos.load(manifest, workers=0)
        photos.add_filter_column("shape")
        photos.create_index()
        before = {q: _ranked(photos, q, f) for q, f in QUERIES}
    return tmp_path / "db", manifest.parent, before


@dataclass(frozen=True)
class Ranked:
    """A search's top 10 as (id, score to 5 decimals), and the strategy that ranked it."""
    strategy: str
    rows: tuple

    def __eq__(self, other: object) -> bool:
        """The same images in the same order with the same scores; where one ranking came from the bf16 index
        and the other was exact, scores within bf16's bound: each stored component is within 2^-9 of its value
        (relative), so a cosine of unit vectors is within 2^-9 (2e-4 was typical on the bundled model's
        vectors; the test family's reached 4.4e-4). The planner picks between the two by costs tune_index
        measured, and at 48 rows both are a query's fixed cost (8-9 ms), so a loaded machine can tip it
        either way after the switch retunes."""
        if not isinstance(other, Ranked) or [i for i, _ in self.rows] != [i for i, _ in other.rows]:
            return False
        tolerance = 0.0 if self.strategy == other.strategy else 2.0 ** -9
        return all(abs(a - b) <= tolerance + 1e-9 for (_, a), (_, b) in zip(self.rows, other.rows, strict=True))


def _ranked(photos, text, filters):
    result = photos.search(text, k=10, filters=filters)
    return Ranked(result.strategy, tuple((r["id"], round(r["score"], 5)) for r in result.rows))


def test_a_switch_keeps_every_row_and_its_own_vector(catalogue, again):
    db, _, before = catalogue
    with clipsearch.open(db, log_searches=False) as photos:
        summary = photos.reembed("again:v1", workers=0)
        assert (summary.embedded, summary.already, summary.missing, summary.switched) == (48, 0, 0, True)
        assert photos.count() == 48 and photos.state().models == [AGAIN]
        assert {q: _ranked(photos, q, f) for q, f in QUERIES} == before
        assert photos.state().filter_columns == ["shape"] and photos.index() is not None
        assert photos.sql("SELECT count() AS n FROM embeddings")[0]["n"] == 0   # not kept: space freed
        assert {t["name"] for t in photos.sql("SHOW TABLES")} >= {"images", "embeddings"}
        assert "images_switch" not in {t["name"] for t in photos.sql("SHOW TABLES")}
        listed = {m["label"]: (m["active"], m["rows"]) for m in photos.models()}
        assert listed == {"clipsearch-shapes": (False, 0), AGAIN: (True, 48)}
    # A later command without --model uses the store's model; naming the old one is a clear error.
    with clipsearch.open(db, log_searches=False) as photos:
        assert photos.model_label == AGAIN
        assert _ranked(photos, *QUERIES[0]) == before[QUERIES[0][0]]
    with clipsearch.open(db, model=ClipModel(), log_searches=False) as photos:
        with pytest.raises(ModelMismatch, match="clipsearch models"):
            photos.search("a red circle")
    # Running it again has nothing to do.
    with clipsearch.open(db, log_searches=False) as photos:
        again_summary = photos.reembed("again:v1", workers=0)
        assert again_summary.already_active and again_summary.line().startswith("the store already uses")


def test_interrupted_then_resumed(catalogue, again, monkeypatch):
    db, _, before = catalogue
    real_insert = ModelSwitch.insert_vectors
    calls = []

    def insert_then_interrupt(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_insert(self, *args)
    monkeypatch.setattr(ModelSwitch, "insert_vectors", insert_then_interrupt)
    with clipsearch.open(db, log_searches=False) as photos:
        with pytest.raises(KeyboardInterrupt):
            photos.reembed("again:v1", workers=0, batch_size=8)
        assert photos.state().models == ["clipsearch-shapes"]   # still searching with the old model
        assert _ranked(photos, *QUERIES[1]) == before[QUERIES[1][0]]
    monkeypatch.setattr(ModelSwitch, "insert_vectors", real_insert)
    with clipsearch.open(db, log_searches=False) as photos:
        summary = photos.reembed("again:v1", workers=0, batch_size=8)
        assert (summary.already, summary.embedded, summary.switched) == (16, 32, True)
        assert {q: _ranked(photos, q, f) for q, f in QUERIES} == before


def test_interrupted_after_the_exchange_is_finished_by_a_rerun(catalogue, again, monkeypatch):
    db, _, before = catalogue
    monkeypatch.setattr(reembed_module, "_catch_up", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with clipsearch.open(db, log_searches=False) as photos:
        with pytest.raises(KeyboardInterrupt):
            photos.reembed("again:v1", workers=0)
        assert photos.state().models == [AGAIN]   # the switch itself had happened
    monkeypatch.undo()
    with clipsearch.open(db, log_searches=False) as photos:
        photos.reembed("again:v1", workers=0)
        tables = {t["name"] for t in photos.sql("SHOW TABLES")}
        assert "images_switch" not in tables and photos.sql("SELECT count() AS n FROM embeddings")[0]["n"] == 0
        assert {q: _ranked(photos, q, f) for q, f in QUERIES} == before


def test_files_gone_or_changed_hold_the_switch_unless_dropped(catalogue, again):
    db, folder, _ = catalogue
    files = sorted(p for p in folder.iterdir() if p.suffix != ".csv")
    files[0].unlink()
    files[1].write_bytes(files[1].read_bytes() + b"changed")
    with clipsearch.open(db, log_searches=False) as photos:
        summary = photos.reembed("again:v1", workers=0)
        assert (summary.gone, summary.changed, summary.embedded, summary.switched) == (1, 1, 46, False)
        assert "not switched" in summary.line() and "--drop-missing" in summary.line()
        assert photos.state().models == ["clipsearch-shapes"] and photos.count() == 48
        reasons = [r["reason"] for r in photos.sql("SELECT reason FROM load_errors ORDER BY reason")]
        assert reasons == [f"re-embedding with {AGAIN}: file changed since it was loaded",
                           f"re-embedding with {AGAIN}: file gone since it was loaded"]
        summary = photos.reembed("again:v1", workers=0, drop_missing=True)
        assert (summary.already, summary.embedded, summary.switched, summary.dropped) == (46, 0, True, 2)
        assert photos.count() == 46 and photos.state().models == [AGAIN]
        assert not photos.sql("SELECT id FROM images WHERE path IN {p:Array(String)}",
                              {"p": [str(files[0]), str(files[1])]})


def test_kept_vectors_compare_two_models_in_sql(catalogue, again):
    db, _, _ = catalogue
    with clipsearch.open(db, log_searches=False) as photos:
        assert photos.reembed("again:v1", workers=0, keep=True).kept
        assert photos.sql("SELECT model, count() AS n FROM embeddings GROUP BY model") == \
            [{"model": "clipsearch-shapes", "n": 48}]
        image_id = photos.sql("SELECT id FROM images ORDER BY id LIMIT 1")[0]["id"]
        rows = photos.sql(read_sql("queries/compare_models.sql"), {"image_id": image_id,
                                                                    "other_model": "clipsearch-shapes"})
        # The same vectors under two labels: the two lists are one list.
        assert [r["rank"] for r in rows] == list(range(1, 11))
        assert all(r["active_model_id"] == r["other_model_id"] and r["in_other_list"] and r["shared"] == 10
                   for r in rows)
        listed = {m["label"]: (m["active"], m["rows"], m["complete"]) for m in photos.models()}
        assert listed == {"clipsearch-shapes": (False, 48, True), AGAIN: (True, 48, True)}


def test_a_load_racing_the_switch_does_not_mix_models(catalogue, again, tmp_path, model):
    """A batch stored by the old model after the switch is taken out again and the load says so."""
    db, _, _ = catalogue
    with clipsearch.open(db, log_searches=False) as photos:
        photos.reembed("again:v1", workers=0)
        extra = write_catalogue(tmp_path / "late", random_specs(3, 8), 8, manifest=None)
        from clipsearch.loader.load import load
        with pytest.raises(ModelMismatch, match="switched"):
            photos.catalog.models.check = lambda *a: None   # as if the load had started before the switch
            load(str(extra), photos.catalog, model, progress=False, workers=0)
        assert photos.state().models == [AGAIN] and photos.count() == 48


def test_a_load_refused_by_the_new_models_index_says_the_store_switched(catalogue, tmp_path, model):
    """The new model's vectors are another length: the index refuses the old model's batch outright."""
    from tests.test_model_family import MeanColour
    register_family("meancolour", MeanColour)
    try:
        db, _, _ = catalogue
        with clipsearch.open(db, log_searches=False) as photos:
            assert photos.reembed("meancolour:v1", workers=0).switched
            assert "3" in photos.index()["type_full"]
            extra = write_catalogue(tmp_path / "late", random_specs(3, 8), 8, manifest=None)
            from clipsearch.loader.load import load
            photos.catalog.models.check = lambda *a: None   # as if the load had started before the switch
            with pytest.raises(ModelMismatch, match="switched to the model meancolour:v1:random"):
                load(str(extra), photos.catalog, model, progress=False, workers=0)
            assert photos.count() == 48
            listed = {m["label"]: (m["active"], m["rows"], m["complete"]) for m in photos.models()}
            assert listed["clipsearch-shapes"] == (False, 0, False)
    finally:
        FAMILIES.pop("meancolour", None)


def test_bundled_is_a_model_name_everywhere(catalogue, cli):
    db, _, _ = catalogue
    found = cli("search", "a red circle", "--model", "bundled", "--json", db=db)
    assert found.returncode == 0 and len(json.loads(found.stdout)) == 10
    again = cli("reembed", "--model", "bundled", db=db)
    assert again.returncode == 0 and "already uses clipsearch-shapes" in again.stdout
    refused = cli("reembed", "--model", "bundled", "--pretrained", "random", db=db)
    assert refused.returncode == 1 and "leave out --pretrained" in refused.stderr
    unknown = cli("reembed", "--model", "NoSuchModel", "--pretrained", "random", db=db)
    assert unknown.returncode == 1 and "unknown model 'NoSuchModel'" in unknown.stderr
    assert len(unknown.stderr) < 400


def test_a_reembed_without_keep_says_the_old_vectors_go(catalogue, cli):
    from clipsearch.models.factory import FAMILIES, register_family
    from tests.test_model_family import MeanColour
    register_family("meancolour", MeanColour)
    try:
        db, _, _ = catalogue
        result = cli("reembed", "--model", "meancolour:v1", "--pretrained", "random", "--quiet", "--workers", "0",
                     db=db)
        assert result.returncode == 0, result.stderr
        assert result.stderr.startswith("note: clipsearch-shapes's vectors are dropped when the store switches to "
                                        "meancolour:v1:random; --keep keeps them")
        assert result.stdout.strip().endswith("the store now uses meancolour:v1:random; clipsearch-shapes's "
                                              "vectors dropped (--keep keeps them, to compare the two models in SQL)")
    finally:
        FAMILIES.pop("meancolour", None)


def test_reembed_errors_are_clear(tmp_path, cli):
    assert "name the model" in cli("reembed", db=tmp_path / "none").stderr
    result = cli("reembed", "--model", "bundled", db=tmp_path / "none")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert not (tmp_path / "none").exists()   # no empty store made
    with pytest.raises(QueryError):
        with clipsearch.open(tmp_path / "empty", log_searches=False) as photos:
            photos.reembed(None)


@pytest.mark.slow
def test_a_served_store_switches_to_vit_b_32_while_a_client_searches(tmp_path, model):
    rng = np.random.default_rng(17)
    manifest = shapes.write_catalogue(tmp_path / "imgs", [shapes.random_spec(rng) for _ in range(40)], 17,
                                         extra=lambda i: {"price": i})
    db = tmp_path / "db"
    with clipsearch.open(db, model=model, log_searches=False) as photos:
        photos.load(manifest, workers=0)
        photos.add_filter_column("shape")
        photos.create_index()
        circles = photos.sql("SELECT count() AS n FROM images WHERE shape = 'circle'")[0]["n"]
    port, sql_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "CLICKHOUSE_URL"}
    proc = subprocess.Popen([sys.executable, "-m", "clipsearch.service.cli", "serve", "--db", str(db), "--port",
                             str(port), "--sql-port", str(sql_port)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    answers: list[tuple[int, int, str]] = []   # (status, results, model) of each search
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                with urllib.request.urlopen(f"{base}/api/search?q=a+red+circle&k=10&filter=shape%3Dcircle",
                                            timeout=60) as r:
                    body = json.load(r)
                    answers.append((r.status, len(body["results"]), body["model"]))
            except urllib.error.HTTPError as exc:
                answers.append((exc.code, 0, exc.read().decode()[:200]))
            except OSError:
                if answers:   # not up yet is not an answer
                    answers.append((0, 0, "no answer"))
            stop.wait(0.5)
    thread = threading.Thread(target=client)
    try:
        wait_until(lambda: _healthy(base))
        thread.start()
        wait_until(lambda: len(answers) >= 2)
        run = subprocess.run([sys.executable, "-m", "clipsearch.service.cli", "reembed", "--model", "ViT-B-32",
                              "--pretrained", "random", "--quiet", "--db", str(db)], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr
        assert "the store now uses ViT-B-32:random" in run.stdout
        wait_until(lambda: answers[-1][2] == "ViT-B-32:random", timeout=120)
        stop.set()
        thread.join()
        wanted = min(10, circles)
        wrong = [(i, answer) for i, answer in enumerate(answers) if answer[:2] != (200, wanted)]
        assert not wrong, (wanted, len(answers), wrong)
        assert {m for _, _, m in answers} == {"clipsearch-shapes", "ViT-B-32:random"}
        assert _healthy(base)["images"] == 40
        search = subprocess.run([sys.executable, "-m", "clipsearch.service.cli", "search", "a red circle", "--json",
                                 "--db", str(db)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert search.returncode == 0, search.stderr
        assert len(json.loads(search.stdout)) == 10 and {r["model"] for r in json.loads(search.stdout)} == \
            {"ViT-B-32:random"}
        listed = subprocess.run([sys.executable, "-m", "clipsearch.service.cli", "models", "--json", "--db",
                                 str(db)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        active = [m for m in json.loads(listed.stdout) if m["active"]]
        assert [(m["label"], m["dim"], m["rows"]) for m in active] == [("ViT-B-32:random", 512, 40)]
        assert "512" in active[0]["vector_index"]
        # clipTextEmbedding() in SQL follows: the served port's text vectors are the new model's.
        sql = subprocess.run([sys.executable, "-m", "clipsearch.service.cli", "sql",
                              "SELECT length(clipTextEmbedding('a red circle'))", "--format", "TSV", "--db", str(db)],
                             env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert sql.stdout.strip() == "512", sql.stderr
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def _healthy(base: str) -> dict | None:
    try:
        return json.load(urllib.request.urlopen(base + "/healthz", timeout=5))
    except OSError:
        return None
