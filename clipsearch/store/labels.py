"""Label sets (the `labels` table): each image's softmax over one prompt vector per label, computed in SQL
(clipsearch/images/labels.py checks the labels and prompt and encodes the prompts)."""
from __future__ import annotations

from collections.abc import Callable

from clipsearch.store.connection import Connection
from clipsearch.store.words import field_words

LABEL_WORDS_BATCH = 10_000   # images whose words_label one mutation sets (as a manifest's metadata)


def distribution_sql(vector: str) -> str:
    """SQL for the softmax over {prompts} of `vector`'s scaled cosine similarities (Float32 array)."""
    logits = f"arrayMap(p -> {{scale:Float64}} * (1 - cosineDistance({vector}, p)), {{prompts:Array(Array(Float32))}})"
    exps = f"arrayMap(x -> exp(x - arrayMax({logits})), {logits})"
    return f"arrayMap(x -> toFloat32(x / arraySum({exps})), {exps})"


class LabelSets:
    """The `labels` table: one row per image and label set."""

    def __init__(self, connection: Connection):
        self._connection = connection

    def replace(self, name: str, where: str, params: dict) -> dict[str, int]:
        """Label the images matching `where` (a condition on `images`, with its `params`) as label set `name`
        with {labels}, {prompts} (one vector per label), {scale}, {prompt} and {model} of `params`, replacing
        their earlier labels of that set. Returns how many images of the set have each label."""
        params = {**params, "name": name}
        # Lightweight delete first, so a re-run replaces the set for exactly the images it labels.
        self._connection.command("DELETE FROM labels WHERE label_set = {name:String} "
                                 f"AND image_id IN (SELECT id FROM images WHERE {where})", params)
        self._connection.command(
            "INSERT INTO labels (image_id, label_set, label, probability, labels, probabilities, prompt, model) "
            "SELECT id, {name:String}, {labels:Array(String)}[indexOf(probs, arrayMax(probs))], arrayMax(probs), "
            "{labels:Array(String)}, probs, {prompt:String}, {model:String} "
            f"FROM (SELECT id, {distribution_sql('embedding')} AS probs FROM images WHERE {where})", params)
        rows = self._connection.query("SELECT label, count() AS n FROM labels FINAL WHERE label_set = {name:String} "
                                      "GROUP BY label ORDER BY n DESC, label", {"name": name})
        return {r["label"]: int(r["n"]) for r in rows}

    def words_of(self, where: str, params: dict, update: Callable[[list[str], list[list[str]]], None]) -> None:
        """The label words of the images matching `where`: the words of the label each label set gave each,
        label sets in name order, given to `update(ids, words)` a batch at a time (ImageTable.update_columns).
        """
        rows = self._connection.query(
            "SELECT image_id, arrayMap(x -> x.2, arraySort(groupArray((label_set, label)))) AS labels "
            f"FROM labels FINAL WHERE image_id IN (SELECT id FROM images WHERE {where}) "
            "GROUP BY image_id ORDER BY image_id", params)
        for start in range(0, len(rows), LABEL_WORDS_BATCH):
            batch = rows[start:start + LABEL_WORDS_BATCH]
            update([r["image_id"] for r in batch], [field_words(r["labels"]) for r in batch])

    def distribution(self, vector: list[float], prompts: list[list[float]], scale: float) -> list[float]:
        """The label distribution of one image vector, by the same SQL as a label set's."""
        params = {"v": vector, "prompts": prompts, "scale": scale}
        return self._connection.query(f"SELECT {distribution_sql('{v:Array(Float32)}')} AS probs",
                                      params)[0]["probs"]
