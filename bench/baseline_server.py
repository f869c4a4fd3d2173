"""The plain alternative a user could write in an afternoon (issue 37's baseline): Flask under waitress with 8
threads, the text encoded by the same model (an LRU cache of 4,096 texts), every vector ranked by numpy in RAM.

    python -m bench.baseline_server VECTORS.npz --port PORT
VECTORS.npz holds `ids`, `paths` and `vectors` (float32, L2-normalized), as bench/throughput.py exports them.
"""
from __future__ import annotations

import functools
import sys
import threading

import numpy as np
from flask import Flask, jsonify, request
from waitress import serve

from clipsearch.models.clip import ClipModel


def app(vectors_file: str) -> Flask:
    data = np.load(vectors_file)
    ids, paths, matrix = data["ids"], data["paths"], np.ascontiguousarray(data["vectors"], dtype=np.float32)
    model = ClipModel()
    lock = threading.Lock()   # one encode at a time, as one model object serves every thread

    @functools.lru_cache(maxsize=4096)
    def encode(text: str) -> np.ndarray:
        with lock:
            return model.encode_texts([text])[0]

    web = Flask(__name__)

    @web.get("/api/search")
    def search():  # type: ignore[no-untyped-def]
        k = int(request.args.get("k", 10))
        scores = matrix @ encode(request.args["q"])
        top = np.argpartition(-scores, k)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return jsonify(results=[{"id": str(ids[i]), "path": str(paths[i]), "score": float(scores[i])} for i in top])

    @web.get("/healthz")
    def healthz():  # type: ignore[no-untyped-def]
        return "ok"

    return web


if __name__ == "__main__":
    serve(app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[sys.argv.index("--port") + 1]), threads=8,
          _quiet=True)
