"""A newcomer's first hour: the demo in an empty folder with the default relative store shows its pictures
in a real browser; the bundled model says what it knows; a real model that cannot be fetched fails fast,
says both ways out and leaves nothing behind."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from clipsearch.models.bundled import BUNDLED_NOTE
from scripts.screenshot import find_chromium, free_port, render
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.slow


def photo_like(folder, count: int, seed: int) -> None:
    """Smooth random colour fields with noise: nothing like the bundled model's coloured shapes."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        coarse = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
        image = Image.fromarray(coarse).resize((320, 240), Image.BICUBIC)
        noisy = np.clip(np.asarray(image, np.int16) + rng.normal(0, 12, (240, 320, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"photo{i:02d}.jpg", quality=90)


def test_the_demo_in_an_empty_folder_shows_its_pictures(tmp_path):
    """The README's first command, as written, from an empty folder: the default store is relative
    (./clipsearch-data); the page's thumbnails must arrive (naturalWidth > 0 in Chromium), not only its HTML."""
    if not find_chromium():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("CLICKHOUSE_URL", "CLIPSEARCH_DB")}
    demo = subprocess.Popen([sys.executable, "-m", "clipsearch.service.cli", "demo", "--images", "200", "--quiet",
                             "--port", str(port)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2))["images"]:
                    break
            except OSError:
                pass
            assert demo.poll() is None and time.monotonic() < deadline, demo.stdout.read() if demo.stdout else ""
            time.sleep(0.5)
        dom = render(f"http://127.0.0.1:{port}/?q=a+red+circle&k=12", None)
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=60)
    shown = re.findall(r'<img loading="lazy" src="/api/images/[0-9a-f]+/file\?size=thumb"[^>]*data-shown="(\w+)"',
                       dom)
    assert len(shown) >= 8 and set(shown) == {"yes"}, shown
    assert (tmp_path / "clipsearch-data" / "thumbs").is_dir()   # where the thumbnails went: the store's folder


def test_the_bundled_model_says_what_it_knows(tmp_path):
    photo_like(tmp_path / "photos", 6, 4)
    db = tmp_path / "db"
    for args in (["load", tmp_path / "photos", "--quiet"], ["search", "a cat", "--k", "3"],
                 ["label", "--labels", "cat,dog"]):
        result = run_cli(*args, db=db)
        assert result.returncode == 0, result.stderr
        assert BUNDLED_NOTE in result.stderr and "--pretrained /path/to/" in BUNDLED_NOTE
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:20])
    assert "knows only coloured shapes" in first_screen and "--pretrained /path/to/" in first_screen


def test_a_real_model_that_cannot_be_fetched_fails_fast_and_leaves_nothing(tmp_path):
    photo_like(tmp_path / "photos", 2, 5)
    db = tmp_path / "db"
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path / "hf-cache"), "HF_HUB_OFFLINE": "0"}
    result = run_cli("load", tmp_path / "photos", "--model", "ViT-B-32", "--pretrained", "laion2b_s34b_b79k",
                     db=db, env=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the weights of ViT-B-32 (laion2b_s34b_b79k)"), lines
    assert "--pretrained laion2b_s34b_b79k downloads them once" in lines[0] and "--pretrained /path/to" in lines[0]
    # the one file to fetch for this tag, and where it goes
    assert "fetch http://127.0.0.1:9/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/open_clip_model.safetensors" \
        in lines[0] and lines[0].endswith("--pretrained /path/to/open_clip_model.safetensors")
    assert str(tmp_path / "hf-cache") in lines[0]
    assert not db.exists()   # nothing made on disk


def test_nothing_but_clipsearch_on_the_console(tmp_path):
    """A load in this process (--workers 0, as a served folder's watcher loads) and a search by image: no
    third-party warning (torchvision's non-writable array, open_clip's `WARNING:root:`) reaches the console."""
    photo_like(tmp_path / "photos", 3, 6)
    db = tmp_path / "db"
    for args in (["load", tmp_path / "photos", "--quiet", "--workers", "0"],
                 ["search", "--image", next((tmp_path / "photos").iterdir()), "--k", "2"]):
        result = run_cli(*args, db=db)
        assert result.returncode == 0, result.stderr
        assert result.stderr.splitlines() == [BUNDLED_NOTE], result.stderr
