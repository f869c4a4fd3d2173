"""The loader: idempotent re-loads, bad files reported and skipped, interrupted loads finished by a re-run.

The interrupted load is a real process (it is sent SIGINT or SIGKILL); everything else runs in this one.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from clipsearch.errors import SourceError, StoreError
from clipsearch.loader.load import load
from tests.conftest import ROOT, random_specs, write_catalogue


def test_reload_is_idempotent_and_content_addressed(tmp_path, store, model):
    folder = write_catalogue(tmp_path / "imgs", random_specs(30, 11), 11, manifest=None)
    first = load(str(folder), store, model, progress=False)
    assert (first.loaded, first.already_present, first.failed) == (30, 0, 0)
    second = load(str(folder), store, model, progress=False)
    assert (second.loaded, second.already_present) == (0, 30)
    # The same bytes under a new name are the same image.
    shutil.copy(sorted(folder.iterdir())[3], folder / "copy-of-an-image.png")
    third = load(str(folder), store, model, progress=False)
    assert (third.loaded, third.already_present) == (0, 31)
    counts = store.query("SELECT count() AS n, uniqExact(id) AS ids, uniqExact(path) AS paths FROM images")[0]
    assert counts == {"n": 30, "ids": 30, "paths": 30}


def test_folder_load_records_file_facts(tmp_path, store, model):
    folder = tmp_path / "imgs"
    folder.mkdir()
    img = Image.new("RGB", (120, 80), (200, 30, 30))
    exif = Image.Exif()
    exif[271], exif[272] = "Canon", "EOS 5D"
    exif.get_ifd(0x8769)[36867] = "2021:06:01 12:30:45"
    img.save(folder / "withexif.jpg", exif=exif)
    (folder / "nested").mkdir()
    Image.new("RGB", (50, 60), (0, 0, 255)).save(folder / "nested" / "plain.png")
    (folder / "notes.txt").write_text("not an image, ignored by suffix")
    summary = load(str(folder), store, model, progress=False)
    assert (summary.loaded, summary.ignored) == (2, 1)
    rows = {r["path"].rsplit("/", 1)[1]: r for r in store.query(
        "SELECT path, width, height, format, file_size, toString(taken_at) AS taken_at, camera, model FROM images")}
    assert rows["withexif.jpg"]["taken_at"] == "2021-06-01 12:30:45"
    assert rows["withexif.jpg"]["camera"] == "Canon EOS 5D"
    assert (rows["plain.png"]["width"], rows["plain.png"]["height"], rows["plain.png"]["format"]) == (50, 60, "PNG")
    assert rows["plain.png"]["taken_at"] is None and rows["plain.png"]["camera"] == ""
    assert rows["plain.png"]["file_size"] == (folder / "nested" / "plain.png").stat().st_size
    assert rows["plain.png"]["model"] == "clipsearch-shapes"


def _bad_files(folder):
    good = io.BytesIO()
    Image.new("RGB", (64, 64), (0, 200, 0)).save(good, "JPEG")
    data = good.getvalue()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "text.jpg").write_text("hello, I am not a JPEG")
    (folder / "noise.png").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)))
    big = io.BytesIO()
    Image.new("RGB", (3000, 3000), (1, 2, 3)).save(big, "PNG")
    (folder / "huge-pixels.png").write_bytes(big.getvalue())
    (folder / "huge-file.png").write_bytes(data + b"\0" * 300_000)  # a valid image in a too-large file
    return {"empty.jpg": "empty file", "truncated.jpg": "cannot decode", "text.jpg": "not an image",
            "noise.png": "not an image", "huge-pixels.png": "image too large", "huge-file.png": "file too large"}


def test_bad_files_are_reported_recorded_and_skipped(tmp_path, store, model):
    folder = write_catalogue(tmp_path / "imgs", random_specs(5, 11), 3, manifest=None)
    expected = _bad_files(folder)
    reported = {}
    summary = load(str(folder), store, model, progress=False, max_file_bytes=200_000, max_pixels=4_000_000,
                   report=lambda p, e: reported.setdefault(p.rsplit("/", 1)[1], e))
    assert (summary.loaded, summary.failed) == (5, len(expected))
    for name, reason in expected.items():
        assert reason in reported[name], (name, reported[name])
    recorded = {r["path"].rsplit("/", 1)[1]: r["reason"] for r in store.query("SELECT path, reason FROM load_errors")}
    assert recorded == reported
    assert store.images.count() == 5


def test_manifest_jsonl_metadata_and_missing_files(tmp_path, store, model):
    specs = random_specs(6, 2)
    manifest = write_catalogue(tmp_path / "m", specs, 2, manifest="items.jsonl",
                               extra=lambda i: {"price": i * 2.5, "sku": f"S{i}", "stock": i})
    with open(manifest, "a") as f:
        f.write(json.dumps({"path": "missing.jpg", "price": 1.0, "sku": "gone", "stock": 0}) + "\n")
    summary = load(str(manifest), store, model, progress=False)
    assert (summary.loaded, summary.failed) == (6, 1)
    assert summary.errors[0][1] == "no such file"
    columns = store.images.columns()
    assert (columns["price"], columns["sku"], columns["stock"]) == \
        ("Nullable(Float64)", "Nullable(String)", "Nullable(Int64)")
    rows = store.query("SELECT sku, price, stock, colour FROM images ORDER BY stock")
    assert rows == [{"sku": f"S{i}", "price": i * 2.5, "stock": i, "colour": specs[i].colour} for i in range(6)]


@pytest.mark.parametrize("content,message", [
    ("colour,shape\nred,circle\n", "needs a 'path' column"),
    ("path,bad name\na.jpg,1\n", "not usable in SQL"),
    ("path,width\na.jpg,1\n", "clashes with a built-in column"),
])
def test_bad_manifests_are_refused_before_loading(tmp_path, store, model, content, message):
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(SourceError, match=message):
        load(str(tmp_path / "m.csv"), store, model, progress=False)


def test_cli_exit_codes_for_bad_sources(tmp_path, cli):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "x.jpg").write_text("not an image")
    result = cli("load", str(folder), "--quiet", db=tmp_path / "db")
    assert result.returncode == 1
    assert "x.jpg: not an image" in result.stderr and "nothing could be loaded" in result.stderr
    assert "Traceback" not in result.stderr
    result = cli("load", str(tmp_path / "nope"), db=tmp_path / "db")
    assert result.returncode == 1 and result.stderr.strip() == f"error: {tmp_path / 'nope'}: no such file or folder"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_load_then_rerun_gives_one_row_per_image(tmp_path, sig, cli):
    n = 600
    folder = write_catalogue(tmp_path / "imgs", random_specs(n, 21), 21, manifest=None)
    db = tmp_path / "db"
    # A shell runs background jobs with SIGINT ignored, and children inherit that: restore Ctrl-C.
    proc = subprocess.Popen([sys.executable, "-m", "clipsearch.service.cli", "load", str(folder), "--db", str(db),
                             "--batch-size", "16"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # Wait until some batches are in, then interrupt mid-load.
    buffer = ""
    while proc.poll() is None:
        buffer += proc.stderr.read(1)
        counts = [int(x.split("/")[0]) for x in buffer.replace("\r", "\n").split("| ")[1:] if "/" in x[:8]]
        if counts and counts[-1] >= 64:
            break
    assert proc.poll() is None, "the load finished before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    if sig == signal.SIGINT:
        assert "interrupted" in err and "Traceback" not in err
    # The re-run is an ordinary command: in this process, once the interrupted one has exited.
    rerun = cli("load", str(folder), "--quiet", db=db)
    assert rerun.returncode == 0, rerun.stderr
    check = cli("sql", "SELECT count(), uniqExact(id), uniqExact(path) FROM images", "--format", "CSV", db=db)
    assert check.stdout.strip() == f"{n},{n},{n}"


def test_ctrl_c_that_the_engine_reports_as_its_error_is_still_an_interrupt(monkeypatch, capsys):
    """A Ctrl-C that lands while the engine reads a batch from Python comes back as the engine's error
    ("KeyboardInterrupt: <EMPTY MESSAGE>"), not as KeyboardInterrupt: the command still says "interrupted"."""
    from clipsearch.service import cli as cli_module

    def engine_reading_a_batch(args):
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt as exc:
            raise StoreError("KeyboardInterrupt: <EMPTY MESSAGE>") from exc
        return 0

    # Ctrl-C as in a terminal, even where pytest runs with SIGINT ignored (a shell's background job)
    started_with = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        previous = signal.getsignal(signal.SIGINT)
        monkeypatch.setattr(cli_module, "cmd_models", engine_reading_a_batch)
        assert cli_module.main(["models"]) == 130
        assert "interrupted" in capsys.readouterr().err
        assert signal.getsignal(signal.SIGINT) is previous
    finally:
        signal.signal(signal.SIGINT, started_with)
