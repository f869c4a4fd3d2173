"""Memory of one stripe: a 1x20000 and a 1x100000 PNG (a few hundred bytes each) through the loader's worker
(`prepare`), the reembed worker (`_prepare_stored`) and the service (POST /api/label: decode, then encode),
with ViT-B-32 and random weights (no download): each case in a fresh process, its peak resident memory
before and after the one image. Before the stripe was cut to what the model keeps, open_clip's resize (short
side to 224) made the 1x20000 one 224x4,480,000 pixels: 1.3 -> 5.5 GB for the service, 4.7 GB per reembed
worker. Not a timed test; from the repository root:

    python -m bench.stripes
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = ("load", "reembed", "service")
SIDES = (20_000, 100_000)
LIMIT_MB = 200


def _peak_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def _one(case: str, side: int, folder: str) -> dict:
    """In this process: the model, then one stripe through `case`; peak RSS growth in MB."""
    import io

    from PIL import Image

    from clipsearch.images.files import MAX_FILE_BYTES, content_id
    from clipsearch.models.clip import ClipModel
    path = Path(folder) / f"stripe-{side}.png"
    Image.new("RGB", (1, side), (90, 140, 200)).save(path)
    model = ClipModel("ViT-B-32", "random")
    model.encode_images([Image.new("RGB", (224, 224))])   # the model's own first-use memory, before the peak
    if case == "load":
        from clipsearch.loader import load
        load._setup_worker(model.prepare(), model.image_size, MAX_FILE_BYTES, load.MAX_PIXELS)
        before = _peak_mb()
        row = load.prepare(str(path))
        model.encode_prepared([row["pixels"]])
    elif case == "reembed":
        from clipsearch.loader import reembed
        from clipsearch.store.images import StoredFile
        data = path.read_bytes()
        reembed._setup_worker(model.prepare(), model.image_size)
        before = _peak_mb()
        row = reembed._prepare_stored(StoredFile(content_id(data), str(path), len(data)))
        model.encode_prepared([row["pixels"]])
    else:
        from clipsearch.service.app import create_app
        from clipsearch.settings import Settings
        app = create_app(Settings.load(db=str(Path(folder) / "db")), model=model, config={"TESTING": True})
        client = app.test_client()
        small = io.BytesIO()
        Image.new("RGB", (64, 64)).save(small, "PNG")
        client.post("/api/label", data={"image": (io.BytesIO(small.getvalue()), "a.png"), "labels": "sky,sea"})
        before = _peak_mb()
        res = client.post("/api/label", data={"image": (io.BytesIO(path.read_bytes()), "stripe.png"),
                                              "labels": "sky,sea"})
        assert res.status_code == 200, res.get_json()
        app.extensions["clipsearch"].close()
    return {"case": case, "side": side, "file_bytes": path.stat().st_size,
            "peak_growth_mb": round(_peak_mb() - before, 1)}


def run() -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory() as folder:
        for case in CASES:
            for side in SIDES:
                done = subprocess.run([sys.executable, "-m", "bench.stripes", case, str(side), folder],
                                      capture_output=True, text=True, check=True)
                out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


if __name__ == "__main__":
    if len(sys.argv) == 4:
        print(json.dumps(_one(sys.argv[1], int(sys.argv[2]), sys.argv[3])))
    else:
        for result in run():
            ok = "ok" if result["peak_growth_mb"] < LIMIT_MB else f"OVER {LIMIT_MB} MB"
            print(f"{result['case']:8} 1x{result['side']:<7} ({result['file_bytes']} bytes): peak RSS "
                  f"+{result['peak_growth_mb']} MB  {ok}")
