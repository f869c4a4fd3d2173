"""Loading videos: moments stored per second and seconds of video loaded per second, at 720p on this
machine's cores, against the same files only decoded by PyAV in one process (the floor every video reader
pays: every frame decoded, nothing converted or kept).

The videos are of the bundled model's world (shapes.write_video): `scenes` scenes of a few seconds each at
30 fps, H.264 in MP4, so each has cuts to find and stretches to sample every few seconds.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import clipsearch
from clipsearch.models.clip import ClipModel
from clipsearch.service import shapes

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle", "star", "cross")


def write_videos(folder: Path, count: int, seconds: float, size: tuple[int, int] = (1280, 720), fps: int = 30,
                 scene_s: float = 5.0) -> list[Path]:
    """`count` videos of `seconds` each, a new shape every `scene_s` seconds (kept between runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"video{i:03d}.mp4"
        if not path.exists():
            scenes = [(COLOURS[(i + j) % len(COLOURS)], SHAPES[(i * 3 + j) % len(SHAPES)], scene_s)
                      for j in range(max(1, round(seconds / scene_s)))]
            shapes.write_video(path, scenes, size=size, fps=fps, seed=i)
        paths.append(path)
    return paths


def decode_only(paths: list[Path]) -> tuple[int, float]:
    """(frames, seconds) for PyAV to decode every frame of `paths` in this process."""
    import av
    frames, start = 0, time.perf_counter()
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames += sum(1 for _ in container.decode(stream))
    return frames, time.perf_counter() - start


def run(model: ClipModel, work: Path, count: int = 6, seconds: float = 60.0) -> dict:
    """Load `count` 720p videos of `seconds` each into a fresh store; the decode-only baseline on the same
    files first."""
    paths = write_videos(work / "videos-720p", count, seconds)
    frames, decode_s = decode_only(paths)
    db = work / "db-videos"
    shutil.rmtree(db, ignore_errors=True)
    with clipsearch.open(db, model=model, log_searches=False) as photos:
        start = time.perf_counter()
        summary = photos.load(paths[0].parent)
        wall = time.perf_counter() - start
        video_s = float(photos.sql("SELECT sum(d) AS s FROM (SELECT any(duration) AS d FROM images "
                                   "WHERE media = 'video' GROUP BY video)")[0]["s"])
    assert summary.loaded == count and not summary.failed, summary.line()
    return {"videos": count, "resolution": "1280x720", "video_seconds": round(video_s, 1), "frames": frames,
            "decode_only_frames_per_s": round(frames / decode_s, 1),
            "decode_only_video_s_per_s": round(video_s / decode_s, 2),
            "loader_moments": summary.moments, "loader_moments_per_s": round(summary.moments / wall, 1),
            "loader_frames_per_s": round(frames / wall, 1), "loader_video_s_per_s": round(video_s / wall, 2),
            "loader_vs_decode_only": round(decode_s / wall, 3)}
