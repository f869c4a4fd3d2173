"""Commands that fail make nothing: weights that do not fit the model are one line naming the file and what is
wrong, exit 1, no store made, nothing of open_clip's own logging on the console; a first load that fails leaves
no store. (No store stays open in this module: the commands open their own.)"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from clipsearch.models.bundled import BUNDLED_MODEL_DIR
from clipsearch.service import shapes
from clipsearch.service.cli import main

BUNDLED_WEIGHTS = BUNDLED_MODEL_DIR / "open_clip_model.safetensors"


def _make(tmp_path, kind):
    """A bad --pretrained value of `kind`, made in tmp_path."""
    if kind == "random bytes":
        path = tmp_path / "random.safetensors"
        path.write_bytes(bytes(range(256)) * 400)
    elif kind == "text file":
        path = tmp_path / "notes.bin"
        path.write_text("these are not weights\n")
    elif kind == "empty file":
        path = tmp_path / "empty.safetensors"
        path.write_bytes(b"")
    elif kind == "another model's":
        path = tmp_path / "shapes.safetensors"
        shutil.copy(BUNDLED_WEIGHTS, path)
    elif kind == "truncated":
        path = tmp_path / "cut.safetensors"
        path.write_bytes(BUNDLED_WEIGHTS.read_bytes()[:100_000])
    elif kind == "missing":
        path = tmp_path / "nowhere" / "open_clip_model.safetensors"
    else:   # a folder
        path = tmp_path / "weights"
        path.mkdir()
    return path


@pytest.mark.parametrize("kind,says", [
    ("random bytes", "not a weights file open_clip can read"),
    ("text file", "not a weights file open_clip can read"),
    ("empty file", "an empty file, not weights"),
    ("truncated", "not a weights file open_clip can read"),
    ("another model's", "holds the weights of another model, not of ViT-B-32"),
    ("missing", "no such weights file, nor a tag of ViT-B-32"),
    ("a folder", "a folder, not a weights file"),
])
def test_bad_weights_are_one_line_and_make_nothing(tmp_path, capfd, kind, says):
    weights = _make(tmp_path, kind)
    (tmp_path / "photos").mkdir()
    db = tmp_path / "db"
    code = main(["load", str(tmp_path / "photos"), "--quiet", "--model", "ViT-B-32", "--pretrained", str(weights),
                 "--db", str(db)])
    out, err = capfd.readouterr()
    assert code == 1 and out == ""
    assert err.splitlines() == [err.strip()] and err.startswith(f"error: {weights}: {says}"), err
    assert not db.exists()


def test_a_local_folder_with_bad_weights(tmp_path, capfd):
    folder = tmp_path / "my-model"
    folder.mkdir()
    shutil.copy(BUNDLED_MODEL_DIR / "open_clip_config.json", folder)
    assert main(["embed", "x", "--model", f"local-dir:{folder}"]) == 1
    assert capfd.readouterr().err == f"error: {folder}: no weights file in it (open_clip_model.safetensors or " \
        "open_clip_pytorch_model.bin)\n"
    (folder / "open_clip_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    assert main(["embed", "x", "--model", f"local-dir:{folder}"]) == 1
    err = capfd.readouterr().err
    assert err.startswith(f"error: {folder / 'open_clip_model.safetensors'}: not a weights file") and \
        len(err.splitlines()) == 1, err


def test_good_weights_by_file_still_load(tmp_path, capfd):
    """The bundled model's own file under another folder's name loads, and open_clip says nothing."""
    folder = tmp_path / "copy"
    shutil.copytree(BUNDLED_MODEL_DIR, folder)
    assert main(["embed", "a red circle", "--model", f"local-dir:{folder}"]) == 0
    out, err = capfd.readouterr()
    assert len(json.loads(out)) == 128 and "root:" not in err


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["demo", "--no-serve", "--images", "5"],
                                     ["reembed"], ["embed", "x"]])
def test_every_command_fails_on_bad_weights_before_making_anything(tmp_path, capfd, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    weights = _make(tmp_path, "random bytes")
    db = tmp_path / "db"
    argv = command + ["--model", "ViT-B-32", "--pretrained", str(weights), "--db", str(db)]
    if command[0] == "demo":
        argv += ["--out", str(tmp_path / "catalogue")]
    assert main(argv) == 1
    err = capfd.readouterr().err
    assert err.startswith(f"error: {weights}: not a weights file") and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [weights.name]   # no store, no catalogue


def test_a_failed_first_command_leaves_no_store(tmp_path, monkeypatch, capsys, model):
    """`clipsearch load /no/such/folder` in an empty folder makes no clipsearch-data for later commands to take
    for a store; a failed load into a store that holds images keeps it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLIPSEARCH_DB", raising=False)
    monkeypatch.delenv("CLICKHOUSE_URL", raising=False)
    (tmp_path / "no-images").mkdir()
    for source, said in (("/no/such/folder", "error: /no/such/folder: no such file or folder"),
                         ("no-images", "error: no-images: no image files found")):
        assert main(["load", source, "--quiet"], model=model) == 1
        assert capsys.readouterr().err.startswith(said)
        assert not (tmp_path / "clipsearch-data").exists()
    for argv in (["models"], ["duplicates"], ["search", "a cat"], ["sql", "SELECT 1"]):
        assert main(argv, model=model) == 1
        assert capsys.readouterr().err.startswith(f"error: no clipsearch database at {tmp_path / 'clipsearch-data'}")
    shapes.write_catalogue(tmp_path / "images", [shapes.random_spec(np.random.default_rng(3)) for _ in range(3)], 3)
    assert main(["load", "images", "--quiet"], model=model) == 0
    assert main(["load", "/no/such/folder", "--quiet"], model=model) == 1
    capsys.readouterr()
    assert main(["sql", "SELECT count() FROM images", "--format", "TSV"], model=model) == 0
    assert capsys.readouterr().out == "3\n"
