"""A model family from outside the package, registered from code (clipsearch.models.factory.register_family) or
installed as a package declaring the entry point group `clipsearch.models`: loading, searching and labelling
work with it through the same factory as open_clip and the bundled model."""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import sysconfig
import textwrap

import numpy as np
import pytest
from PIL import Image

import clipsearch
from clipsearch.models.factory import FAMILIES, create_model, register_family
from clipsearch.models.model import ImageTextModel
from tests.conftest import ROOT, run_cli

COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


def shrink(image: Image.Image) -> np.ndarray:
    """The loader's worker step: Pillow only, picklable."""
    return np.asarray(image.convert("RGB").resize((8, 8)), np.float32)


class MeanColour:
    """A tiny family of this test's own: an image is its mean colour, a text the colour it names."""

    dim, logit_scale, image_size, label = 3, 20.0, 8, ""

    def __init__(self, name: str, pretrained: str | None):
        self.name = name

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        vectors = np.array([next((v for word, v in COLOURS.items() if word in t), (1.0, 1.0, 1.0)) for t in texts],
                           np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def encode_prepared(self, prepared: list[np.ndarray]) -> np.ndarray:
        vectors = np.array([p.reshape(-1, 3).mean(axis=0) + 1e-3 for p in prepared], np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        return self.encode_prepared([shrink(i) for i in images])

    def prepare(self):
        return shrink


@pytest.fixture
def family():
    register_family("meancolour", MeanColour)
    yield
    FAMILIES.pop("meancolour")


def test_a_registered_family_loads_searches_and_labels(family, tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "images"
    folder.mkdir()
    truth = {}
    for i in range(12):
        colour = list(COLOURS)[i % 3]
        pixels = np.clip(np.array(COLOURS[colour]) * 200 + rng.normal(20, 10, (40, 40, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{colour}{i}.png")
        truth[f"{colour}{i}.png"] = colour
    model = create_model("meancolour:v1", None)
    assert isinstance(model, ImageTextModel) and model.label == "meancolour:v1:random"
    with clipsearch.open(tmp_path / "db", model="meancolour:v1", log_searches=False) as photos:
        summary = photos.load(folder, workers=2, progress=False)
        assert summary.loaded == 12
        top = photos.search("something red", k=4).rows
        assert [truth[r["path"].rsplit("/", 1)[1]] for r in top] == ["red"] * 4
        photos.label("red,green,blue", "{}", "colour")
        rows = photos.sql("SELECT i.path AS path, l.label AS label FROM labels AS l FINAL "
                          "JOIN images AS i ON i.id = l.image_id WHERE l.label_set = 'colour'")
        assert len(rows) == 12 and all(truth[r["path"].rsplit("/", 1)[1]] == r["label"] for r in rows)
        assert {r["model"] for r in photos.sql("SELECT DISTINCT model FROM images")} == {"meancolour:v1:random"}


def test_a_family_name_is_a_word_and_not_open_clips_prefixes():
    for bad in ("hf-hub", "local-dir", "Bad Name", ""):
        with pytest.raises(ValueError):
            register_family(bad, MeanColour)


def test_the_store_knows_its_model(family, tmp_path):
    """Loading records how to load the model again: opening the store without a model uses it (no mismatch
    for a user who forgot --model); naming another model is still a clear error."""
    from clipsearch.errors import ModelMismatch
    folder = tmp_path / "images"
    folder.mkdir()
    for i, colour in enumerate(COLOURS):
        Image.new("RGB", (20, 20), tuple(int(255 * c) for c in COLOURS[colour])).save(folder / f"{colour}{i}.png")
    with clipsearch.open(tmp_path / "db", model="meancolour:v1", log_searches=False) as photos:
        photos.load(folder, workers=0, progress=False)
    with clipsearch.open(tmp_path / "db", log_searches=False) as photos:   # no model named
        assert photos.model_label == "meancolour:v1:random"
        assert photos.search("blue", k=1).rows[0]["path"].endswith("blue2.png")
        assert photos.models() == [{"label": "meancolour:v1:random", "name": "meancolour:v1", "pretrained": "random",
                                    "dim": 3, "rows": 3, "active": True, "complete": True, "vector_index": None}]
    with clipsearch.open(tmp_path / "db", model="meancolour:v2", log_searches=False) as photos:
        with pytest.raises(ModelMismatch, match="clipsearch models"):
            photos.search("blue")


def test_a_family_is_found_through_the_entry_point_group(tmp_path, monkeypatch):
    """An installed distribution's entry point in `clipsearch.models` names a family's factory; a broken one is
    a ModelError that says which package declared it."""
    from clipsearch.errors import ModelError
    for name, target in (("declared", "tests.test_model_family:MeanColour"), ("broken", "no_such_module:factory")):
        info = tmp_path / f"{name}_family-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-family\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[clipsearch.models]\n{name} = {target}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        model = create_model("declared:v2", "w.bin")
        assert isinstance(model, MeanColour) and FAMILIES["declared"] is MeanColour
        assert (model.label, model.name, model.pretrained) == ("declared:v2:w.bin", "declared:v2", "w.bin")
        with pytest.raises(ModelError, match="'broken'.*broken-family"):
            create_model("broken:v1", None)
    finally:
        FAMILIES.pop("declared", None)


@pytest.mark.slow
def test_an_installed_family_is_found_through_its_entry_point(tmp_path):
    """A package that declares `[project.entry-points."clipsearch.models"]`, pip-installed into a fresh virtual
    environment, is a family the CLI knows: `load --model FAMILY:NAME`, then commands without --model use it
    (recorded in the store). This process never registered it."""
    package = tmp_path / "family"
    (package / "colourfamily").mkdir(parents=True)
    (package / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "clipsearch-colour-family"
        version = "0.1"

        [project.entry-points."clipsearch.models"]
        colourmean = "colourfamily:MeanColour"

        [tool.setuptools]
        packages = ["colourfamily"]
        """))
    (package / "colourfamily" / "__init__.py").write_text(
        "import numpy as np\nfrom PIL import Image\n\n" + f"COLOURS = {COLOURS!r}\n\n\n"
        + inspect.getsource(shrink) + "\n\n" + inspect.getsource(MeanColour))
    assert "colourmean" not in FAMILIES

    # A venv made from a venv sees the base interpreter's packages, not this one's: a .pth file adds this
    # interpreter's (torch, open_clip, chdb, pip, setuptools), so nothing is downloaded.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (venv / site / "parent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {"PYTHONPATH": str(ROOT), "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1",
           "CLIPSEARCH_MODEL": "", "CLIPSEARCH_PRETRAINED": ""}
    installed = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                                str(package)], capture_output=True, text=True, env={**os.environ, **env})
    assert installed.returncode == 0, installed.stderr

    rng = np.random.default_rng(5)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(9):
        colour = list(COLOURS)[i % 3]
        pixels = np.clip(np.array(COLOURS[colour]) * 200 + rng.normal(20, 10, (24, 24, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{colour}{i}.png")
    cli = [python, "-m", "clipsearch.service.cli"]
    db = tmp_path / "db"
    loaded = run_cli("load", folder, "--model", "colourmean:v1", "--workers", "2", "--quiet", db=db, env=env,
                     command=cli)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.startswith("loaded 9,"), loaded.stdout
    found = run_cli("search", "something green", "--k", "3", "--json", db=db, env=env, command=cli)
    assert found.returncode == 0, found.stderr
    assert [r["path"].rsplit("/", 1)[1][:5] for r in json.loads(found.stdout)] == ["green"] * 3
    models = run_cli("models", "--json", db=db, env=env, command=cli)
    assert [(m["label"], m["name"], m["active"]) for m in json.loads(models.stdout)] == \
        [("colourmean:v1:random", "colourmean:v1", True)]
