"""The image-text model interface: what clipsearch asks of every model (open_clip's CLIPs, the bundled one,
a family's), and nothing more."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from clipsearch.models.bundled import BUNDLED_LABEL, BUNDLED_MODEL, BUNDLED_NAME

MAX_QUERY_CHARS = 2000  # CLIP reads 77 tokens; longer texts only cost tokenizing and log space
RANDOM_WEIGHTS = "random"   # --pretrained random: a built-in architecture with random weights, said on purpose


@runtime_checkable
class ImageTextModel(Protocol):
    """What clipsearch needs of a model: every family (open_clip's CLIPs, the bundled model, a registered
    one) provides this, and nothing else is asked of it.

    `name` and `pretrained` are how to make it again (clipsearch.models.factory.create_model(name, pretrained),
    recorded in the store's `models` table; `pretrained` None: random weights); `label` is the name its
    vectors are stored under (model_label). A family's factory need not set these three:
    create_model does, by one rule for every family.

    `prepare` returns a picklable function from a decoded PIL image to what `encode_prepared` takes; the
    loader runs it in its worker processes (Pillow work only: resize, crop), so it must not touch the
    model. Vectors are float32, L2-normalized, `dim` wide."""

    name: str
    pretrained: str | None
    label: str
    dim: int
    logit_scale: float  # the softmax temperature of zero-shot labels

    @property
    def image_size(self) -> int:   # the side the model sees: the loader decodes large JPEGs at a reduced scale
        ...

    def encode_texts(self, texts: list[str]) -> np.ndarray: ...

    def encode_images(self, images: list[Image.Image]) -> np.ndarray: ...

    def prepare(self) -> Callable[[Image.Image], Any]: ...

    def encode_prepared(self, prepared: list[Any]) -> np.ndarray: ...


def model_label(name: str | None, pretrained: str | None) -> str:
    """The name a model's vectors are stored under. The bundled model is named by its folder, which differs
    per checkout; it gets a stable name."""
    if not name or name in (BUNDLED_MODEL, BUNDLED_NAME):
        return BUNDLED_LABEL
    return f"{name}:{Path(pretrained).name if pretrained and pretrained != RANDOM_WEIGHTS else 'random'}"
