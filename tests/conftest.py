"""Shared fixtures: the bundled model, generated catalogues with known answers, embedded stores.

chdb opens one database folder per process at a time, so every store
fixture closes its store before the next one opens.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipsearch import synthetic as shapes
from clipsearch.catalog import Catalog
from clipsearch.model import ClipModel

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def model() -> ClipModel:
    return ClipModel()


def write_catalogue(folder: Path, specs: list[shapes.ShapeSpec], seed: int, manifest: str | None = "manifest.csv",
                    extra=None) -> Path:
    """Render `specs` into `folder`; with `manifest`, also write a CSV of path, colour, shape (+ extra(i))."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, spec in enumerate(specs):
        name = f"{i:05d}.{'jpg' if spec.image_format == 'JPEG' else 'png'}"
        (folder / name).write_bytes(shapes.encode(shapes.render(spec, rng), spec.image_format, rng))
        rows.append({"path": name, "colour": spec.colour, "shape": spec.shape, **(extra(i) if extra else {})})
    if manifest is None:
        return folder
    path = folder / manifest
    if manifest.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


@pytest.fixture
def store(tmp_path):
    s = Catalog.open(tmp_path / "db")
    yield s
    s.close()


def run_cli(*args, db=None, env=None, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `clipsearch` command in its own process."""
    full_env = {**os.environ, **(env or {})}
    if db:  # an explicit embedded folder: a CLICKHOUSE_URL in the environment must not win
        full_env.pop("CLICKHOUSE_URL", None)
    cmd = [sys.executable, "-m", "clipsearch.service.cli", *args] + (["--db", str(db)] if db else [])
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=timeout, **kwargs)
