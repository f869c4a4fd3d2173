"""Label sets (the `labels` table): each image's softmax over one prompt vector per label, computed in SQL
(clipsearch/images/labels.py checks the labels and prompt and encodes the prompts)."""
from __future__ import annotations

from clipsearch.store.connection import Connection


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

    def distribution(self, vector: list[float], prompts: list[list[float]], scale: float) -> list[float]:
        """The label distribution of one image vector, by the same SQL as a label set's."""
        params = {"v": vector, "prompts": prompts, "scale": scale}
        return self._connection.query(f"SELECT {distribution_sql('{v:Array(Float32)}')} AS probs",
                                      params)[0]["probs"]
