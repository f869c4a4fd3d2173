"""The offline demo catalogue: generated shape images with a product-style manifest."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from . import shapes

CATEGORIES = ("sticker", "poster", "badge", "magnet")
EXAMPLE_SEARCHES = [
    ("a red circle", []),
    ("a photo of a yellow star", ["price<20"]),
    ("una cruz azul", ["category=poster"]),
]


def make_catalogue(out: str | Path, count: int = 2000, seed: int = 7) -> Path:
    """Write `count` images and `manifest.csv` (path, category, price) under `out`; same seed, same files."""
    out = Path(out)
    manifest = out / "manifest.csv"
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        spec, data = shapes.make_image(rng)
        name = f"images/{i:06d}-{spec.colour}-{spec.shape}.{'jpg' if spec.image_format == 'JPEG' else 'png'}"
        path = out / name
        if not path.exists() or path.stat().st_size != len(data):
            path.write_bytes(data)
        rows.append({"path": name, "category": CATEGORIES[int(rng.integers(len(CATEGORIES)))],
                     "price": round(float(rng.uniform(1, 100)), 2)})
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "category", "price"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest
