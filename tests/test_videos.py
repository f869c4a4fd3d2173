"""Videos beside photos: moments loaded (scene changes, regular samples, one-colour frames skipped), bad videos
recorded once, loads resumable, searches finding the moment (the best per video), the file route's ranges.
Every video is made here with PyAV from the bundled model's world; none is stored in the repository."""
from __future__ import annotations

import base64
import io
import os
import re
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsearch.images import video as video_module
from clipsearch.loader import load as load_module
from clipsearch.loader.load import load
from clipsearch.loader.paths import forget_missing
from clipsearch.search.options import Options
from clipsearch.search.searcher import Searcher, Term
from clipsearch.service import shapes
from clipsearch.service.app import create_app
from clipsearch.settings import Settings
from clipsearch.store.catalog import Catalog

pytest.importorskip("av")

PHOTOS = 8
BEST = Options(moments=1)   # what the CLI, the API and Collection.search ask for by default
BAD = {"truncated.mp4", "empty.mov", "lies.mp4", "sound.mp4", "black.mkv"}


def _rotated(path: Path) -> Path:
    """Mark an MP4's video track as turned 90 degrees clockwise (its tkhd display matrix), as a phone held
    upright writes it."""
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd") + 4 + 40   # version/flags, times, track id, duration, layer, volume: then the matrix
    data[at:at + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))
    return path


def _library(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(5)
    for i in range(PHOTOS):   # photos of everything but blue stars
        spec, data = shapes.make_image(rng, colour=["red", "green", "yellow"][i % 3], shape=["circle", "square"][i % 2])
        (folder / f"photo{i}.{spec.image_format.lower()}").write_bytes(data)
    shapes.write_video(folder / "star.mp4", [("red", "circle", 3.0), ("blue", "star", 3.0)],
                       metadata={"creation_time": "2024-05-01T12:30:00Z", "location": "+48.8584+002.2945/",
                                 "title": "Zephyr by the lake"})
    shapes.write_video(folder / "intro.webm", [("green", "square", 2.0)], codec="libvpx-vp9", black_s=1.5)
    upright = Image.new("RGB", (160, 120), (210, 30, 30))
    upright.paste((30, 70, 210), (0, 60, 160, 120))   # raw frames: red above blue
    raw = folder / "turned.mp4"
    with __import__("av").open(str(raw), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        frame = __import__("av").VideoFrame.from_image(upright)
        for _ in range(10):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    _rotated(raw)
    star = (folder / "star.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(star[:len(star) // 2])
    (folder / "empty.mov").write_bytes(b"")
    spec, png = shapes.make_image(rng, colour="blue", shape="star")
    (folder / "lies.mp4").write_bytes(png)   # a picture named as a video
    import av
    with av.open(str(folder / "sound.mp4"), mode="w") as container:   # an audio track, no video
        audio = container.add_stream("aac", rate=8000)
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        samples.sample_rate = 8000
        for packet in [*audio.encode(samples), *audio.encode()]:
            container.mux(packet)
    shapes.write_video(folder / "black.mkv", [], black_s=2.0)   # nothing but black
    return folder


@pytest.fixture(scope="module")
def library(tmp_path_factory, model):
    """(the folder, its store's folder, the load's summary); the store is closed between tests (chdb opens one
    at a time, and the API test's app opens its own)."""
    root = tmp_path_factory.mktemp("videos")
    folder = _library(root / "library")
    with Catalog.open(root / "db") as catalog:
        summary = load(str(folder), catalog, model, progress=False, workers=0)
    return folder, root / "db", summary


@pytest.fixture
def catalog(library):
    with Catalog.open(library[1]) as opened:
        yield opened


def _rows(catalog: Catalog, name: str) -> list[dict]:
    return catalog.query("SELECT id, media, video, start, `end`, duration, codec, format, width, height, taken_at, "
                         "latitude, longitude, thumbnail FROM images WHERE endsWith(path, {n:String}) ORDER BY start",
                         {"n": "/" + name})


def test_load_counts_videos_as_files_and_records_each_bad_one_once(library, catalog):
    folder, _, summary = library
    assert summary.loaded == PHOTOS + 3 and summary.failed == len(BAD)
    errors = {r["path"].rsplit("/", 1)[1]: r["reason"] for r in catalog.query("SELECT path, reason FROM load_errors")}
    assert set(errors) == BAD and catalog.query("SELECT count() AS n FROM load_errors")[0]["n"] == len(BAD)
    assert errors["empty.mov"] == "empty file"
    assert errors["sound.mp4"].startswith("no video stream")
    assert errors["lies.mp4"].startswith("not a video in a format clipsearch reads")
    assert errors["black.mkv"].startswith("no frame could be decoded")
    assert errors["truncated.mp4"].startswith(("not a video", "cannot decode", "no frame"))
    assert summary.moments == sum(len(_rows(catalog, n)) for n in ("star.mp4", "intro.webm", "turned.mp4"))


def test_moments_cover_the_video_with_its_metadata(library, catalog):
    rows = _rows(catalog, "star.mp4")
    assert len({r["video"] for r in rows}) == 1 and len({r["id"] for r in rows}) == len(rows) >= 3
    assert {r["media"] for r in rows} == {"video"}
    starts = [r["start"] for r in rows]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert starts[0] < 0.3 and max(gaps) <= video_module.SAMPLE_EVERY_S + 0.3
    assert any(3.0 <= s < 3.3 for s in starts)   # the cut to the star is a moment of its own
    assert [r["end"] for r in rows[:-1]] == starts[1:] and rows[-1]["end"] == pytest.approx(6.0, abs=0.15)
    first = rows[0]
    assert first["duration"] == pytest.approx(6.0, abs=0.15) and first["codec"] == "h264" and first["format"] == "MP4"
    assert (first["width"], first["height"]) == (160, 120)
    assert str(first["taken_at"]).startswith("2024-05-01 12:30:00")
    assert (first["latitude"], first["longitude"]) == (pytest.approx(48.8584), pytest.approx(2.2945))
    assert Image.open(io.BytesIO(base64.b64decode(first["thumbnail"]))).format == "JPEG"
    # black frames are never a moment: the webm's first comes after its 1.5 s of black
    intro = _rows(catalog, "intro.webm")
    assert intro and intro[0]["start"] >= 1.5 and intro[0]["codec"] == "vp9"


def test_rotated_video_is_stored_upright(library, catalog, model):
    rows = _rows(catalog, "turned.mp4")
    assert (rows[0]["width"], rows[0]["height"]) == (120, 160)
    thumb = Image.open(io.BytesIO(base64.b64decode(rows[0]["thumbnail"]))).convert("RGB")
    left, right = thumb.getpixel((10, 80)), thumb.getpixel((thumb.width - 10, 80))
    assert left[2] > 150 > left[0] and right[0] > 150 > right[2]   # turned clockwise: blue left, red right


def test_text_search_finds_the_moment_and_one_per_video(library, catalog, model):
    folder = library[0]
    searcher = Searcher(catalog, lambda: model, log=False)
    result = searcher.search("a blue star", k=5, options=BEST)
    best = result.rows[0]
    assert best["path"] == str(folder / "star.mp4") and best["media"] == "video"
    assert 3.0 <= best["start"] < 6.0 and best["end"] > best["start"]
    assert [r["video"] for r in result.rows].count(best["video"]) == 1   # the best moment per video
    assert {r["media"] for r in result.rows if r["video"] == ""} == {"image"}
    more = searcher.search("a blue star", k=5, options=Options(moments=3)).rows
    assert 2 <= [r["video"] for r in more].count(best["video"]) <= 3
    words = searcher.search("a blue star", k=5, match="both", options=BEST).rows
    named = searcher.search("zephyr", k=5, match="words", options=BEST).rows   # the container's title tag
    assert [r["path"] for r in named] == [best["path"]] and named[0]["match"]["words"] == {"meta": ["zephyr"]}
    every = searcher.search("a blue star", k=5, options=Options(moments=0)).rows   # 0: every moment
    assert [r["video"] for r in every].count(best["video"]) >= 2
    assert words[0]["video"] == best["video"]


def test_image_and_more_like_this_find_moments(library, catalog, model):
    folder = library[0]
    searcher = Searcher(catalog, lambda: model, log=False)
    star = Image.open(io.BytesIO(shapes.make_image(np.random.default_rng(9), "blue", "star")[1]))
    best = searcher.search(image=star, k=3, options=BEST).rows[0]
    assert best["path"] == str(folder / "star.mp4") and 3.0 <= best["start"] < 6.0
    hybrid = searcher.search("a blue star", image=star, k=3, options=BEST).rows[0]
    assert hybrid["id"] == best["id"]
    # weighted terms: a star, and away from the red circle the video opens with
    terms = [Term(text="a star"), Term(text="a red circle", weight=-0.5)]
    assert searcher.search(terms=terms, k=3, options=BEST).rows[0]["id"] == best["id"]
    circle = next(r for r in _rows(catalog, "star.mp4") if r["start"] < 1)
    like = searcher.search(image_id=circle["id"], k=3, options=BEST).rows
    assert circle["id"] not in {r["id"] for r in like} and like[0]["media"] == "image"


def test_filters_on_video_columns(library, catalog, model):
    folder = library[0]
    searcher = Searcher(catalog, lambda: model, log=False)
    from clipsearch.search.filters import parse_filter
    videos = searcher.search("a shape", k=20, filters=[parse_filter("media=video")], options=BEST).rows
    assert {r["path"].rsplit("/", 1)[1] for r in videos} == {"star.mp4", "intro.webm", "turned.mp4"}
    long = searcher.search("a shape", k=20, filters=[parse_filter("duration>=5")], options=BEST).rows
    assert [r["path"] for r in long] == [str(folder / "star.mp4")]
    photos = searcher.search("a shape", k=20, filters=[parse_filter("media=image")], options=BEST).rows
    assert len(photos) == PHOTOS


def test_load_again_and_after_a_kill_stores_each_video_once(model, tmp_path, monkeypatch):
    folder = tmp_path / "lib"
    folder.mkdir()
    shapes.write_video(folder / "first.mp4", [("red", "square", 2.0)])
    with Catalog.open(tmp_path / "db") as catalog:
        assert load(str(folder), catalog, model, progress=False, workers=0).loaded == 1
        again = load(str(folder), catalog, model, progress=False, workers=0)
        assert again.loaded == 0 and again.moments == 0 and again.already_present == 1
        # killed after a video's rows went in, before its path was recorded: the next load finds it stored
        shapes.write_video(folder / "late.mov", [("yellow", "triangle", 2.0), ("green", "cross", 2.0)])
        real = load_module.record_read

        def killed(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(load_module, "record_read", killed)
        with pytest.raises(KeyboardInterrupt):
            load(str(folder), catalog, model, progress=False, workers=0)
        stored = _rows(catalog, "late.mov")
        assert stored
        monkeypatch.setattr(load_module, "record_read", real)
        rerun = load(str(folder), catalog, model, progress=False, workers=0)
        assert rerun.loaded == 0 and rerun.already_present == 2
        assert [r["id"] for r in _rows(catalog, "late.mov")] == [r["id"] for r in stored]
        assert catalog.query("SELECT count() = uniqExact(id) AS once FROM images")[0]["once"]
        # the file's path now recorded: a third load does not even read it
        assert load(str(folder), catalog, model, progress=False, workers=0).already_present == 2
        # a video deleted from the folder: its moments go with it (as a watched folder's pass does)
        (folder / "first.mp4").unlink()
        gone = forget_missing(catalog, str(folder) + os.sep)
        assert gone.paths == [str(folder / "first.mp4")] and gone.removed == 1
        assert _rows(catalog, "first.mp4") == [] and len(_rows(catalog, "late.mov")) == len(stored)


def test_a_video_without_pyav_is_one_clear_error(tmp_path, model, monkeypatch):
    folder = tmp_path / "lib"
    folder.mkdir()
    shapes.write_video(folder / "clip.mp4", [("red", "circle", 1.0)])
    (folder / "photo.png").write_bytes(shapes.make_image(np.random.default_rng(1), "red", "circle")[1])
    monkeypatch.setattr(load_module, "available", lambda: False)
    with Catalog.open(tmp_path / "db") as catalog:
        summary = load(str(folder), catalog, model, progress=False, workers=0)
        assert summary.loaded == 1 and summary.errors == [(str(folder / "clip.mp4"), video_module.VIDEO_MISSING)]


def test_api_search_and_the_video_in_ranges(library, model):
    folder, db, _ = library
    app = create_app(Settings.load(db=str(db)), model=model, config={"TESTING": True})
    try:
        client = app.test_client()
        body = client.get("/api/search?q=a+blue+star&k=5&match=pictures").get_json()
        best = body["results"][0]
        assert best["media"] == "video" and 3 <= best["start"] < 6 and best["path"].endswith("star.mp4")
        assert "LIMIT {moments:UInt32} BY" in body["sql"]["query"] and "thumbnail" not in best
        assert client.get("/api/search?q=a+blue+star&k=5&moments=0").status_code == 400
        two = client.post("/api/search", json={"text": "a blue star", "k": 5, "moments": 2}).get_json()["results"]
        assert [r["video"] for r in two].count(best["video"]) == 2
        star = folder / "star.mp4"
        data, stat = star.read_bytes(), star.stat()
        whole = client.get(f"/api/images/{best['id']}/file")
        assert whole.status_code == 200 and whole.data == data and whole.mimetype == "video/mp4"
        assert whole.headers["Accept-Ranges"] == "bytes"
        part = client.get(f"/api/images/{best['id']}/file", headers={"Range": "bytes=100-299"})
        assert part.status_code == 206 and part.data == data[100:300]
        assert part.headers["Content-Range"] == f"bytes 100-299/{len(data)}"
        tail = client.get(f"/api/images/{best['id']}/file", headers={"Range": f"bytes={len(data) + 5}-"})
        assert tail.status_code == 416
        thumb = client.get(f"/api/images/{best['id']}/file?size=thumb")
        assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.data)).format == "JPEG"
        star.write_bytes(data + b"\0")   # changed since it was loaded: not served
        changed = client.get(f"/api/images/{best['id']}/file")
        assert changed.status_code == 410 and "load it again" in changed.get_json()["error"]
    finally:
        if star.stat().st_size != len(data):
            star.write_bytes(data)
            os.utime(star, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        app.extensions["clipsearch"].close()


@pytest.mark.slow
def test_page_marks_a_moment_and_links_its_second(library, model):
    from waitress.server import create_server

    from scripts.screenshot import find_chromium, render
    if not find_chromium():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    folder, db, _ = library
    app = create_app(Settings.load(db=str(db)), model=model)
    server = create_server(app, host="127.0.0.1", port=0, threads=4, asyncore_use_poll=True)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        dom = render(f"http://127.0.0.1:{server.effective_port}/?q=a+blue+star&k=4", None)
    finally:
        server.close()
        app.extensions["clipsearch"].close()
    cards = re.findall(r'<div class="card".*?</button>', dom, re.S)
    assert 'data-media="video"' in cards[0] and "star.mp4" in cards[0]
    start = float(re.search(r'file#t=([0-9.]+)"', cards[0]).group(1))
    assert 3 <= start < 6 and re.search(r'class="moment"[^>]*>▶ 0:0[3-5]\.\d–0:0[3-6]\.\d', cards[0])
    assert 'data-shown="yes"' in cards[0]   # the moment's frame arrived as its thumbnail


def test_moments_query_file_finds_the_second(catalog, model):
    from clipsearch.models.sql_functions import register_embedded
    from clipsearch.sql import read as read_sql
    register_embedded(catalog, lambda label: model)
    rows = catalog.query(read_sql("queries/video_moments.sql"), {"query_text": "a blue star", "moments": 1})
    assert rows[0]["path"].endswith("/star.mp4") and 3 <= rows[0]["start"] < 6
    assert len({r["video"] for r in rows}) == len(rows) == 3   # each video once, photos never
    formats = {r["format"]: r["images"] for r in catalog.query(read_sql("queries/images_per_format.sql"))}
    assert formats["MP4"] == 2 and formats["WEBM"] == 1   # a video once, not once per moment


def test_reembed_gives_moments_vectors_from_their_frames(library, model, tmp_path):
    import clipsearch
    from clipsearch.models.clip import ClipModel
    from clipsearch.models.factory import FAMILIES, register_family
    folder = tmp_path / "lib"
    shutil.copytree(library[0], folder)
    register_family("again", lambda name, pretrained: ClipModel())
    try:
        with clipsearch.open(tmp_path / "db", model=model, log_searches=False) as photos:
            photos.load(folder, workers=0)
            rows = photos.count()
            # labels label each moment: the star's moments a star, the circle's a circle
            photos.label(["circle", "square", "triangle", "star", "cross"], name="shape", filters=["media=video"])
            labelled = {r["start"]: r["label"] for r in photos.sql(
                "SELECT i.start AS start, l.label AS label FROM labels AS l FINAL "
                "JOIN images AS i ON i.id = l.image_id WHERE endsWith(i.path, '/star.mp4')")}
            assert labelled and {label for start, label in labelled.items() if start < 2.9} == {"circle"}
            assert {label for start, label in labelled.items() if start >= 3} == {"star"}
            # the video's file gone: its moments are re-embedded from their stored frames all the same
            (folder / "star.mp4").rename(tmp_path / "away.mp4")
            summary = photos.reembed("again:v1", workers=0)
            assert (summary.embedded, summary.missing, summary.switched) == (rows, 0, True)
            best = photos.search("a blue star", k=3).rows[0]
            assert best["path"].endswith("/star.mp4") and 3 <= best["start"] < 6 and best["model"] == "again:v1:random"
    finally:
        FAMILIES.pop("again", None)


def test_copies_compare_videos_whole(model, tmp_path):
    from clipsearch.images.duplicates import find_duplicates
    folder = tmp_path / "lib"
    folder.mkdir()
    scenes = [("red", "circle", 3.0), ("blue", "star", 3.0)]
    shapes.write_video(folder / "star.mp4", scenes)
    shapes.write_video(folder / "star-again.webm", scenes, codec="libvpx-vp9")   # the same video, re-encoded
    # two videos that share only their opening title (the same red circle): not copies
    shapes.write_video(folder / "one.mp4", [("red", "circle", 2.0), ("yellow", "triangle", 4.0)], seed=8)
    shapes.write_video(folder / "two.mp4", [("red", "circle", 2.0), ("green", "cross", 4.0)], seed=8)
    with Catalog.open(tmp_path / "db") as catalog:
        assert load(str(folder), catalog, model, progress=False, workers=0).loaded == 4
        opening = catalog.query("SELECT groupArray(phash) AS h FROM images WHERE start = 0 AND "
                                "(endsWith(path, '/one.mp4') OR endsWith(path, '/two.mp4'))")[0]["h"]
        assert len(opening) == 2 and opening[0] == opening[1]   # their first moments are one picture
        for mode in ("copies", "similar"):
            groups = find_duplicates(catalog, mode, None if mode == "copies" else 0.02)
            names = [sorted(r["path"].rsplit("/", 1)[1] for r in g["images"]) for g in groups]
            assert names == [["star-again.webm", "star.mp4"]], mode


def test_vector_index_search_keeps_one_moment_per_video(library, model, tmp_path):
    import clipsearch
    from clipsearch.search.query import Query
    from clipsearch.search.statement import QueryVector, Strategy, search_sql
    with clipsearch.open(tmp_path / "db", model=model, log_searches=False) as photos:
        photos.load(library[0], workers=0)
        photos.create_index()
        vector = model.encode_texts(["a blue star"])[0]
        for moments in (1, 2):
            query = Query(k=5, options=Options(moments=moments))
            sql, params = search_sql(query, [QueryVector(vector=vector)], Strategy("hnsw", beam=256))
            rows = photos.catalog.query(sql, params)
            assert "LIMIT {moments:UInt32} BY if(video = '', id, video)" in sql
            assert rows[0]["path"].endswith("/star.mp4") and 3 <= rows[0]["start"] < 6
            counts = [[r["video"] for r in rows].count(v) for v in {r["video"] for r in rows if r["video"]}]
            assert max(counts) == moments


def _vfr(path: Path, times_ms: list[int]) -> Path:
    """A variable-frame-rate MP4: one frame at each of `times_ms`, the shape changing at the third."""
    from fractions import Fraction

    import av
    rng = np.random.default_rng(4)
    pictures = [shapes.render(shapes.ShapeSpec(c, s, "plain", "white", 0.6, 160, 120, "PNG"), rng)
                for c, s in (("red", "circle"), ("blue", "star"))]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times_ms):
            frame = av.VideoFrame.from_image(pictures[i >= 2])
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _read_video(path: Path, *args, **kwargs):
    with open(path, "rb") as f:
        return video_module.read_video(f, *args, **kwargs)


def test_variable_frame_rate_moments_follow_the_timestamps(tmp_path):
    path = _vfr(tmp_path / "vfr.mp4", [0, 400, 3700, 3800, 9000])
    info, moments = _read_video(path, 10 ** 8)
    assert [m.start for m in moments] == [0.0, 3.7, 9.0]   # the cut at 3.7 s; 9 s is more than 2 s on
    assert [m.end for m in moments][:2] == [3.7, 9.0] and moments[-1].end >= 9.0


def test_bounds_of_one_video(tmp_path, monkeypatch):
    path = shapes.write_video(tmp_path / "long.mp4", [("red", "circle", 5.0), ("green", "square", 5.0),
                                                      ("blue", "star", 5.0), ("yellow", "cross", 5.0)], fps=5)
    # 4 moments at most: regular samples every 20 / (4 / 2) = 10 s, and at most 2 cuts (the third is not kept)
    monkeypatch.setattr(video_module, "MAX_MOMENTS", 4)
    _, moments = _read_video(path, 10 ** 8)
    assert [round(m.start) for m in moments] == [0, 5, 10] and moments[-1].end == pytest.approx(20.0, abs=0.3)
    # out of decoding time: the first moment is kept, and it lasts to the end
    _, hurried = _read_video(path, 10 ** 8, deadline_s=0.0)
    assert [(m.start, m.end) for m in hurried] == [(0.0, pytest.approx(20.0, abs=0.3))]
    with pytest.raises(video_module.VideoError, match=r"video too large \(160x120 pixels > 10000\)"):
        _read_video(path, 10_000)


def test_cli_prints_the_moment(library, cli):
    folder, db, _ = library
    out = cli("search", "a blue star", "--k", "3", "--match", "pictures", db=db)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert f"{folder / 'star.mp4'}  at 0:0" in first and re.search(r" at 0:0[3-5]\.\d-0:0[3-6]\.\d", first)
    bad = cli("search", "a blue star", "--moments", "0", db=db)
    assert bad.returncode != 0 and "moments must be a whole number from 1" in bad.stderr


def test_a_watched_folder_loads_a_video_and_forgets_it(model, tmp_path):
    import clipsearch
    from clipsearch.service.watch import sync_folder
    folder = tmp_path / "lib"
    folder.mkdir()
    shapes.write_video(folder / "clip.mov", [("red", "circle", 2.0), ("blue", "star", 2.0)])
    (folder / "photo.png").write_bytes(shapes.make_image(np.random.default_rng(2), "green", "square")[1])
    with clipsearch.open(tmp_path / "db", model=model, log_searches=False) as photos:
        first = sync_folder(photos, folder)
        assert first.loaded == 2 and photos.count() > 2   # the photo and the video's moments
        assert sync_folder(photos, folder).loaded == 0   # a second pass reads nothing again
        (folder / "clip.mov").unlink()
        gone = sync_folder(photos, folder)
        assert gone.removed == 1 and photos.count() == 1


def test_facets_count_a_video_once(library, catalog, model):
    searcher = Searcher(catalog, lambda: model, log=False)
    facets = searcher.search("a shape", k=5, options=BEST, facets=["media"], facet_top=1000).facets
    assert {f["value"]: f["count"] for f in facets["media"]} == {"image": PHOTOS, "video": 3}
