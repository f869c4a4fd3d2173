"""The bundled model: a small CLIP trained on coloured shapes (bundled_model/), and the words of its world.

It is an open_clip model like any other (clipsearch.models.clip.ClipModel loads it from its folder); what is
its own is said here: how it is named, and what it knows (8 colours x 5 shapes, in English and Spanish),
which the demo's generator (clipsearch.service.shapes) draws and the index tuning asks it about."""
from __future__ import annotations

from pathlib import Path

BUNDLED_MODEL_DIR = Path(__file__).parent / "bundled_model"
BUNDLED_MODEL = f"local-dir:{BUNDLED_MODEL_DIR}"
BUNDLED_NAME = "bundled"   # what --model calls it (e.g. to re-embed with it again)
BUNDLED_LABEL = "clipsearch-shapes"
# Said wherever a user meets the bundled model (load, search, label): what it knows, and the way out.
BUNDLED_NOTE = ("note: the bundled model knows only coloured shapes (8 colours x 5 shapes, in English and Spanish); "
                "for photos use a real CLIP model: --model ViT-B-32 --pretrained laion2b_s34b_b79k (downloaded "
                "once), or --pretrained /path/to/open_clip_model.safetensors offline")
# The same, where results are shown (the page, the JSON API's `model_notice`, the CLI's --json): its scores on
# anything else (photos) look as confident as on its shapes and mean nothing.
MODEL_NOTICE = ("Searches here use the bundled model, which knows only coloured shapes (8 colours x 5 shapes, in "
                "English and Spanish): on photos its scores mean nothing. For photos load a real CLIP model: "
                "--model ViT-B-32 --pretrained laion2b_s34b_b79k")


def model_notice(label: str) -> str | None:
    """What results from the model labelled `label` must carry: MODEL_NOTICE for the bundled model, else None."""
    return MODEL_NOTICE if label == BUNDLED_LABEL else None


# Its world: the colours (with the RGB the generator draws them in) and the shapes it was trained on.
COLOURS = {
    "red": (210, 30, 30),
    "green": (40, 160, 60),
    "blue": (30, 70, 210),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 20),
    "purple": (130, 40, 170),
    "black": (20, 20, 20),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
# Spanish names; shapes carry their grammatical gender for adjective agreement.
SHAPES_ES = {"circle": ("círculo", "m"), "square": ("cuadrado", "m"), "triangle": ("triángulo", "m"),
             "star": ("estrella", "f"), "cross": ("cruz", "f")}
COLOURS_ES = {"red": ("rojo", "roja"), "green": ("verde", "verde"), "blue": ("azul", "azul"),
              "yellow": ("amarillo", "amarilla"), "orange": ("naranja", "naranja"),
              "purple": ("morado", "morada"), "black": ("negro", "negra"), "white": ("blanco", "blanca")}


def query_text(colour: str, shape: str, lang: str = "en") -> str:
    """The plain query a user types for one colour+shape class."""
    if lang == "es":
        noun, gender = SHAPES_ES[shape]
        article = "un" if gender == "m" else "una"
        return f"{article} {noun} {COLOURS_ES[colour][0 if gender == 'm' else 1]}"
    return f"a {colour} {shape}"
