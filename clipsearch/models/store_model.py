"""The store's model: the model a collection embeds its queries with, following the store's vectors."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from clipsearch.models.factory import ModelRef
from clipsearch.models.model import ImageTextModel
from clipsearch.models.sql_functions import ServiceModel

if TYPE_CHECKING:
    from clipsearch.store.catalog import Catalog


class StoreModel:
    """The model to use on a store, chosen once when the store is opened, then following it.

    Chosen: the model asked for; with none asked for, the one the store's vectors come from (as recorded in
    `models` when they were loaded), so a user who forgot --model gets it, not a mismatch error. Through a
    running `serve` on the folder, its model when it is the one to use (and not one handed in): texts are
    embedded there (ServiceModel), so a command starts no model of its own.

    Following: while it is the store's model (or the store is empty), a switch by `clipsearch reembed` (from
    this process or another) is followed: the next call gives the new model, loaded as recorded, so what holds
    a StoreModel (the service, its ClickHouse port, clipTextEmbedding) never ranks one model's query against
    another's vectors. A model other than the store's does not follow: its searches say so (ModelMismatch).
    Reading the store's model costs nothing between writes (catalog.state)."""

    def __init__(self, catalog: Catalog, asked: ModelRef):
        self._catalog = catalog
        self.on_change: Callable[[ImageTextModel], object] | None = None   # told of each switch, with the model
        stored = catalog.models.active()
        ref = asked
        if asked.default and len(stored) == 1 and stored[0] != asked.label:
            ref = self._recorded(stored[0]) or asked   # none recorded: loaded before models were
        self.follows = stored in ([], [ref.label])   # True from a switch this collection makes (use) on
        served = (catalog.connection.service or {}).get("model")
        if served and not ref.handed_in and ref.label == served["label"]:
            # a command's short life: the served model as it is (the service itself follows)
            ref, self.follows = ModelRef(model=ServiceModel(catalog.connection, served, ref)), False
        self._ref = ref   # replaced whole by a switch

    @property
    def label(self) -> str:
        """The label of the model in use, known without loading it."""
        return self._ref.label

    def __call__(self) -> ImageTextModel:
        self.refresh()
        return self._ref.get()

    def refresh(self) -> None:
        """Follow the store to its model, if it switched."""
        if not self.follows:
            return
        active = self._catalog.state.read().models
        if len(active) == 1 and active[0] != self.label:
            ref = self._recorded(active[0])
            if ref is not None:
                self.use(ref)

    def use(self, ref: ModelRef) -> None:
        """Use `ref`'s model from now on (the store has switched to it), and follow the store; the previous
        model is let go."""
        self._ref, self.follows = ref, True
        if self.on_change is not None:
            self.on_change(ref.get())

    def for_label(self, label: str) -> ImageTextModel | None:
        """The model whose vectors are stored under `label` ('': the store is empty), if it is the one in use.
        Reads nothing: for clipTextEmbedding, which runs inside a query."""
        ref = self._ref
        return ref.get() if not label or ref.label == label else None

    def _recorded(self, label: str) -> ModelRef | None:
        """The model stored under `label`, as recorded in `models` (the bundled one with no name); None if it is
        not recorded (loaded before models were) or not as that label."""
        record = next((r for r in self._catalog.models.records() if r["label"] == label), None)
        if record is None:
            return None
        ref = ModelRef(record["name"] or None, record["pretrained"] or None)
        return ref if ref.label == label else None
