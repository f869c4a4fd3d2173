"""Issue 35's quality measure: a product catalogue whose queries need words (a product line no picture
shows), pictures (a colour and shape no title names) or both (a line's pictures of one kind). P@10 of each
group for match=pictures, words and both: both is at least as good as the better single signal in every
group and better than either on the mixed group. (The bench's `words` section reports the same on more.)"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import clipsearch
from clipsearch.service import shapes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shop(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("words-quality")
    catalogue = shapes.words_catalogue(folder / "shop")
    with clipsearch.open(folder / "db", model=model, log_searches=False) as photos:
        photos.load(catalogue.manifest)   # the manifest's title and sku become each product's words
        yield photos, catalogue


def precision(photos, groups: dict, match: str) -> dict[str, float]:
    return {group: float(np.mean([shapes.precision_at([Path(r["path"]).name for r in
                                                       photos.search(text, k=10, match=match).rows], relevant)
                                  for text, relevant in queries]))
            for group, queries in groups.items()}


def test_words_and_pictures_together_rank_best(shop):
    photos, catalogue = shop
    p = {match: precision(photos, catalogue.groups, match) for match in ("pictures", "words", "both")}
    print(p)
    for group in catalogue.groups:
        assert p["both"][group] >= max(p["pictures"][group], p["words"][group]) - 0.05, (group, p)
    assert p["words"]["words"] >= 0.95 and p["pictures"]["pictures"] >= 0.6, p      # each signal does its part
    assert p["both"]["mixed"] >= max(p["pictures"]["mixed"], p["words"]["mixed"]) + 0.2, p
    assert p["words"]["pictures"] == 0   # no title names a colour or shape
