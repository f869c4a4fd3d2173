"""Where searches came from, in search_log; images named by the short ids the CLI prints."""
from __future__ import annotations

import numpy as np

import clipsearch
from clipsearch import synthetic


def test_search_log_records_origin_and_model_loading(tmp_path, model):
    from clipsearch.model import LazyModel
    from clipsearch.service.cli import main
    rng = np.random.default_rng(83)
    manifest = synthetic.write_catalogue(tmp_path / "images", [synthetic.random_spec(rng) for _ in range(5)], 83)
    with clipsearch.open(tmp_path / "db", model=model) as photos:
        photos.load(manifest)
        photos.search("a red star", k=2)
        some = photos.sql("SELECT id FROM images ORDER BY id LIMIT 1")[0]["id"]
        assert photos.get(some[:12])["id"] == some  # the 12 digits the CLI prints
        assert some not in {r["id"] for r in photos.search(similar=some[:12], k=3).rows}
    assert main(["search", "a blue circle", "--k", "2", "--db", str(tmp_path / "db")], model=LazyModel()) == 0
    with clipsearch.open(tmp_path / "db", model=model) as photos:
        log = photos.sql("SELECT origin, text, model_load_ms, encode_ms FROM search_log ORDER BY time")
    assert [(r["origin"], r["text"]) for r in log] == [("python", "a red star"), ("python", ""),
                                                       ("cli", "a blue circle")]
    assert log[0]["model_load_ms"] < 50 < log[2]["model_load_ms"]  # the CLI loaded its model for this search
