"""A benchmark table of any size that behaves like a CLIP photo catalogue.

    python bench/dataset.py --rows 1000000 --db bench/work/db-1m

Vectors: the bundled model's embeddings of `bases` generated images (40
colour+shape classes, every background and size), each repeated with a small
random perturbation, so the table has the clusters and near neighbours of real
embeddings rather than uniform noise. Columns `sel_50`, `sel_10`, `sel_1` and
`sel_0_1` are 1 on exactly 50%, 10%, 1% and 0.1% of rows (chosen at random,
independent of the vectors), else 0, so `--filter sel_1=1` has a known
selectivity. Rows go in through the loader's own insert path (`_rows_table`
and `Store.insert`, manifest-style Nullable(Int64) columns).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from loader.load import _rows_table
from service import shapes
from service.model import ClipModel, open_image
from service.store import EmbeddedStore, Store

SELECTIVITY = {"sel_50": 0.5, "sel_10": 0.1, "sel_1": 0.01, "sel_0_1": 0.001}
SPREAD = 0.25      # perturbation norm: an item sits ~0.03 (cosine distance) from its base image
BLOCK = 50_000


def encode_generated(model: ClipModel, count: int, seed: int) -> np.ndarray:
    """Embeddings of `count` generated images (balanced over the 40 classes)."""
    rng = np.random.default_rng(seed)
    specs = shapes.balanced_specs(rng, max(1, count // 40))[:count]
    images = [open_image(shapes.encode(shapes.render(s, rng), s.image_format, rng), model.image_size)
              for s in specs]
    return model.encode_images(images)


def perturbed(bases: np.ndarray, rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dim = bases.shape[1]
    out = bases[rng.integers(0, len(bases), rows)]
    out += SPREAD / np.sqrt(dim) * rng.standard_normal(out.shape, dtype=np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def selectivity_columns(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, share in SELECTIVITY.items():
        col = np.zeros(rows, np.int64)
        col[rng.choice(rows, round(rows * share), replace=False)] = 1
        out[name] = col
    return out


def fill(store: Store, model: ClipModel, rows: int, bases: int = 4000, seed: int = 5, start: int = 0) -> np.ndarray:
    """Insert `rows` rows (ids start..start+rows) and return their vectors, in id order."""
    vectors = perturbed(encode_generated(model, bases, seed), rows, seed + 1)
    insert(store, vectors, model.label, seed, start)
    return vectors


def insert(store: Store, vectors: np.ndarray, model_label: str, seed: int = 5, start: int = 0) -> None:
    rows = len(vectors)
    columns = selectivity_columns(rows, seed + 2 + start)
    types = {name: "Nullable(Int64)" for name in SELECTIVITY}
    store.add_columns(types)
    for lo in range(0, rows, BLOCK):
        hi = min(rows, lo + BLOCK)
        meta = [{"id": f"{start + i:032x}", "path": f"/bench/{start + i:08d}.jpg", "width": 256, "height": 256,
                 "format": "JPEG", "file_size": 0, "taken_at": None, "camera": ""} for i in range(lo, hi)]
        metadata = {m["path"]: {name: int(col[lo + j]) for name, col in columns.items()} for j, m in enumerate(meta)}
        store.insert("images", _rows_table(meta, vectors[lo:hi], model_label, metadata, types))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, required=True, help="embedded database folder (must not exist)")
    args = parser.parse_args(argv)
    if args.db.exists():
        parser.error(f"{args.db} exists; give a new folder")
    start = time.perf_counter()
    with EmbeddedStore(args.db) as store:
        fill(store, ClipModel(), args.rows)
        store.command("OPTIMIZE TABLE images FINAL")
    print(f"{args.rows} rows in {args.db} in {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
