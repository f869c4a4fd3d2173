"""Loader throughput against the model's raw encode speed on the same images.

Baselines from the same run: decoding + preprocessing in one process, and the model encoding
already-preprocessed tensors (its raw speed). The loader decodes in worker processes, encodes and
inserts; `loader / raw` near 100% means the encoder is the bottleneck and the rest hides behind it.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import clipsearch
from clipsearch.images.decode import open_image
from clipsearch.models.clip import ClipModel

BATCH = 64


def run(model: ClipModel, paths: list[Path], label: str, db: Path) -> dict:
    """Load the folder holding `paths` into a fresh `db`; the baselines on the same files."""
    import torch
    start = time.perf_counter()
    tensors = torch.stack([model.image_tensor(open_image(p, model.image_size)) for p in paths])
    decode = len(paths) / (time.perf_counter() - start)
    model.encode_tensors(tensors[:BATCH])  # warm up
    start = time.perf_counter()
    for i in range(0, len(tensors), BATCH):
        model.encode_tensors(tensors[i:i + BATCH])
    raw = len(paths) / (time.perf_counter() - start)
    shutil.rmtree(db, ignore_errors=True)
    with clipsearch.open(db, model=model) as photos:
        start = time.perf_counter()
        summary = photos.load(paths[0].parent, batch_size=BATCH)
        wall = time.perf_counter() - start
    assert summary.loaded == len(paths), summary.line()
    loader = len(paths) / wall
    return {"model": label, "images": len(paths), "raw_encode_images_per_s": round(raw, 1),
            "decode_one_process_images_per_s": round(decode, 1),
            "loader_images_per_s": round(loader, 1), "loader_vs_raw": round(loader / raw, 3)}


def reembed_run(model: ClipModel, raw_images_per_s: float, paths: list[Path], label: str, db: Path) -> dict:
    """A store of `paths` loaded with the bundled model, re-embedded with `model` (clipsearch reembed): the
    re-embedding's images/s against `raw_images_per_s` (the model's raw encode speed, measured by `run` in
    the same run), and the switch's seconds (building images_switch, the exchange, the catch-up)."""
    shutil.rmtree(db, ignore_errors=True)
    with clipsearch.open(db, model=ClipModel(), log_searches=False) as photos:
        photos.load(paths[0].parent, batch_size=BATCH)
        summary = photos.reembed(model, batch_size=BATCH)
    assert summary.switched and summary.embedded == len(paths), summary.line()
    rate = len(paths) / (summary.seconds - summary.switch_seconds)
    return {"model": label, "images": len(paths), "raw_encode_images_per_s": raw_images_per_s,
            "reembed_images_per_s": round(rate, 1), "reembed_vs_raw": round(rate / raw_images_per_s, 3),
            "switch_s": round(summary.switch_seconds, 2)}
