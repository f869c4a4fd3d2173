"""Making models: the one factory (create_model), the families it knows, and ModelRef, a model named now and
loaded on first use.

A model name "FAMILY:REST" is made by the family FAMILY: one registered from code (register_family), or
one an installed package declares in the entry point group `clipsearch.models`:

    [project.entry-points."clipsearch.models"]
    myfamily = "mypackage.models:factory"     # factory(name, pretrained) -> an ImageTextModel

Any other name is open_clip's (its own prefixes hf-hub: and local-dir: included); no name is the bundled model.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Callable
from importlib.metadata import entry_points

from clipsearch.errors import ModelError
from clipsearch.models.model import ImageTextModel, model_label

ENTRY_POINT_GROUP = "clipsearch.models"
OPEN_CLIP_PREFIXES = ("hf-hub", "local-dir")
Family = Callable[[str, str | None], ImageTextModel]   # factory(name, pretrained): name is the whole FAMILY:REST
FAMILIES: dict[str, Family] = {}


def register_family(family: str, factory: Family) -> None:
    """Make `--model FAMILY:NAME` (or CLIPSEARCH_MODEL) create its models with factory(name, pretrained)."""
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", family) or family in OPEN_CLIP_PREFIXES:
        raise ValueError(f"a model family is a lower-case word, not open_clip's prefixes: {family!r}")
    FAMILIES[family] = factory


def family_factory(family: str) -> Family | None:
    """The factory of `family`: registered from code, else declared by an installed package (entry point group
    `clipsearch.models`, loaded once and then registered); None if there is no such family."""
    if family not in FAMILIES and family not in OPEN_CLIP_PREFIXES:
        found = entry_points(group=ENTRY_POINT_GROUP, name=family)
        for entry in found:
            try:
                register_family(family, entry.load())
            except Exception as exc:   # a broken plug-in: say which, not a bare ImportError
                raise ModelError(f"the model family {family!r} (entry point {entry.value!r} of "
                                 f"{entry.dist.name if entry.dist else 'an installed package'}) cannot be loaded: "
                                 f"{exc}") from exc
            break
    return FAMILIES.get(family)


def create_model(name: str | None = None, pretrained: str | None = None) -> ImageTextModel:
    """The one factory: a family's model for FAMILY:NAME, else an open_clip model or the bundled one."""
    factory = family_factory(name.split(":", 1)[0]) if name else None
    if factory is None:
        from clipsearch.models.clip import ClipModel  # torch and open_clip load only when a CLIP does
        return ClipModel(name, pretrained)
    model = factory(name or "", pretrained)
    # One naming rule for every family, and how to make it again (recorded in the store).
    model.label, model.name, model.pretrained = model_label(name, pretrained), name or "", pretrained
    return model


class ModelRef:
    """A model as it is asked for: by name (`--model NAME --pretrained W`, as create_model takes them), made
    on the first `get()`, once, safely from many threads; or one handed in, made already. Its label is known
    at once, without loading anything.

    A ModelRef with no name and no model is the default: a store's own model where it has one, else the
    bundled model."""

    def __init__(self, name: str | None = None, pretrained: str | None = None, *,
                 model: ImageTextModel | None = None):
        self.name, self.pretrained = name, pretrained
        self.label = model.label if model is not None else model_label(name, pretrained)
        self.handed_in = model is not None
        self._model = model
        self._lock = threading.Lock()

    @property
    def default(self) -> bool:
        """Nothing was asked for: neither a name nor a model."""
        return self.name is None and not self.handed_in

    def get(self) -> ImageTextModel:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = create_model(self.name, self.pretrained)
        return self._model

    def __repr__(self) -> str:
        return f"ModelRef({self.label})"
