"""A model family registered from outside the package (clipsearch.models.model.register_family): loading,
searching and labelling work with it through the same factory as open_clip and the bundled model."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import clipsearch
from clipsearch.models.factory import FAMILIES, create_model, register_family
from clipsearch.models.model import ImageTextModel

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
