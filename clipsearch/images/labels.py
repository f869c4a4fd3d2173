"""Zero-shot labelling: the softmax of CLIP similarities between an image and one prompt per label.

The bulk path runs entirely in ClickHouse (one INSERT ... SELECT over the
images), and a single uploaded image goes through the same SQL expression
(both in clipsearch.store.labels; here: the labels, the prompt and their vectors).
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from clipsearch.errors import QueryError
from clipsearch.models.model import ImageTextModel
from clipsearch.search.filters import Filter
from clipsearch.search.where import bind_filters
from clipsearch.store.catalog import Catalog

DEFAULT_PROMPT = "a photo of a {}"
MAX_LABELS = 1000
MAX_PROMPT_CHARS = 300


def parse_labels(labels: object) -> list[str]:
    """A list of labels, or one comma-separated string of them."""
    if isinstance(labels, str):
        labels = labels.split(",")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise QueryError("labels must be a list of strings or a comma-separated string")
    labels = [x.strip() for x in labels if x.strip()]
    if len(labels) < 2 or len(labels) > MAX_LABELS:
        raise QueryError(f"give between 2 and {MAX_LABELS} labels, got {len(labels)}")
    if len(set(labels)) != len(labels):
        raise QueryError("labels must be distinct")
    return labels


def check_prompt(prompt: str | None) -> str:
    prompt = prompt or DEFAULT_PROMPT
    if not isinstance(prompt, str) or prompt.count("{}") != 1 or len(prompt) > MAX_PROMPT_CHARS:
        raise QueryError(f"the prompt must contain {{}} exactly once, where the label goes ('a photo of a {{}}'), "
                         f"in at most {MAX_PROMPT_CHARS} characters")
    return prompt


def _prompt_params(model: ImageTextModel, labels: list[str], prompt: str) -> dict:
    # replace, not str.format: a prompt's other braces are text, never format fields
    vectors = model.encode_texts([prompt.replace("{}", label) for label in labels])
    return {"prompts": [[float(x) for x in v] for v in vectors], "scale": float(model.logit_scale),
            "labels": labels}


def label_table(catalog: Catalog, model: ImageTextModel, labels: object, prompt: str | None = None, name: str = "label",
                filters: Sequence[Filter] = ()) -> dict[str, int]:
    """Label every image (or the filtered ones) and store the result as label set `name`.

    Returns how many images got each label.
    """
    labels, prompt = parse_labels(labels), check_prompt(prompt)
    if not re.match(r"^[\w.-]{1,64}$", name or ""):
        raise QueryError("the label set name must be 1-64 letters, digits, '_', '-' or '.'")
    catalog.models.check(model.label)
    bound = bind_filters(filters, catalog.images.columns())
    params = dict(bound.params)
    params.update(_prompt_params(model, labels, prompt), prompt=prompt, model=model.label)
    counts = catalog.labels.replace(name, bound.sql, params)
    # the labels the images got are words a search box finds them by (images.words_label)
    catalog.labels.words_of(bound.sql, params, lambda ids, words: catalog.images.update_columns(
        ids, {"words_label": ("Array(String)", words)}))
    return counts


def label_vector(catalog: Catalog, model: ImageTextModel, vector: Sequence[float], labels: object,
                 prompt: str | None = None) -> list[dict]:
    """The label distribution of one image vector, best first, by the same SQL as the bulk path."""
    labels, prompt = parse_labels(labels), check_prompt(prompt)
    params = _prompt_params(model, labels, prompt)
    probs = catalog.labels.distribution([float(x) for x in vector], params["prompts"], params["scale"])
    return sorted(({"label": label, "probability": p} for label, p in zip(labels, probs, strict=True)),
                  key=lambda r: -r["probability"])
