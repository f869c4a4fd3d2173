"""Videos: the moments of a video file worth a row each, decoded with PyAV (FFmpeg inside its wheel; the
`video` extra).

A moment is a frame kept at a scene change (its small picture differs from the last kept one's by more
than SCENE_CHANGE) or because SAMPLE_EVERY_S passed since the last kept one, and lasts until the next kept
frame. Frames that are nearly one colour (black, white, a fade) are never kept: they say nothing, and two
videos sharing only black frames must not look alike. Bounds, so one file never costs unbounded time or
memory: at most MAX_MOMENTS per video (a long video's regular samples are spread to fit: every
duration / (MAX_MOMENTS / 2) seconds, the other half for scene changes), frames looked at no more than
LOOK_EVERY_S apart, only key frames decoded past KEYFRAMES_ONLY_AFTER_S of video, and at most MAX_DECODE_S
of decoding (the moments found by then are kept). Frames are turned upright by the stream's display matrix.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import IO, Any, NamedTuple

import numpy as np
from PIL import Image

VIDEO_SUFFIXES = {".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi"}
SAMPLE_EVERY_S = 2.0          # a moment at least this often (longer videos: spread over MAX_MOMENTS / 2)
MAX_MOMENTS = 200             # rows per video at most
LOOK_EVERY_S = 0.25           # frames compared for a scene change at most this often
SCENE_CHANGE = 20.0           # mean difference (0-255) of 32x32 colour pictures that makes a new scene
MIN_SCENE_S = 0.5             # two scene-change moments at least this far apart
UNIFORM_STD = 8.0             # a frame whose every channel spreads less than this is one colour: skipped
FRAME_SIDE = 640             # a kept frame is scaled (by FFmpeg) to at most this long a side: what a model, a
                              # thumbnail and the hashes need, so a 4K video's moments cost what a phone's do
KEYFRAMES_ONLY_AFTER_S = 600  # longer videos decode only key frames (seconds apart in phone videos)
MAX_DECODE_S = 120.0          # decoding one video stops after this long, keeping what it found
VIDEO_MISSING = "videos need PyAV: pip install 'clipsearch[video]'"
# The demuxers FFmpeg may use: a file is read as one of these or refused (a JPEG or a playlist named .mp4 is
# not a video, and a playlist demuxer would open the files it names)
DEMUXERS = "mov,matroska,webm,avi"
VIDEO_FORMATS = "MP4/MOV, Matroska/WebM or AVI"


class VideoError(ValueError):
    """The file is not a video clipsearch can read (the reason is its message)."""


class VideoInfo(NamedTuple):
    """What the loader keeps of a video's own metadata; None or '' where the container has none."""
    width: int                   # of the upright frames
    height: int
    format: str                  # the container: MP4, MATROSKA, AVI, ...
    codec: str
    duration: float | None       # seconds
    taken_at: datetime | None    # the container's creation time (UTC)
    camera: str
    latitude: float | None
    longitude: float | None
    texts: tuple[str, ...] = ()  # its title, description, comment and keywords tags (the words signal's)


TEXT_TAGS = ("title", "description", "comment", "keywords", "com.apple.quicktime.title",
             "com.apple.quicktime.description", "com.apple.quicktime.keywords")


class Moment(NamedTuple):
    start: float                 # seconds from the video's start
    end: float
    image: Any                   # the frame (upright RGB, at most FRAME_SIDE), or what `keep` made of it


def available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def read_video(file: IO[bytes], max_pixels: int, deadline_s: float = MAX_DECODE_S,
               keep: Callable[[Image.Image], Any] | None = None) -> tuple[VideoInfo, list[Moment]]:
    """The video's metadata and its moments (module docstring); VideoError if it cannot be read or has no
    frame worth keeping. `keep(frame)` turns each kept frame into what the moment holds as it is decoded
    (the loader: the model's pixels, a thumbnail and hashes), so no frame outlives its turn."""
    try:
        import av
    except ImportError:
        raise VideoError(VIDEO_MISSING) from None
    try:
        container = av.open(file, mode="r", metadata_errors="ignore", container_options={"format_whitelist": DEMUXERS})
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise VideoError(f"not a video in a format clipsearch reads ({VIDEO_FORMATS}): {_reason(exc)}") from None
    with container:
        if not container.streams.video:
            raise VideoError("no video stream (an audio file?)")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise VideoError("the video stream has no frame size")
        if width * height > max_pixels:
            raise VideoError(f"video too large ({width}x{height} pixels > {max_pixels})")
        duration = _duration(container, stream)
        try:
            moments, turned = _moments(container, stream, duration, deadline_s, keep or (lambda image: image))
        except (av.FFmpegError, ValueError, OSError, MemoryError) as exc:
            raise VideoError(f"cannot decode: {_reason(exc)}") from None
        if not moments:
            raise VideoError("no frame could be decoded (truncated, or every frame one colour)")
        if duration is None or duration < moments[-1].start:
            duration = moments[-1].end
        upright = (height, width) if turned else (width, height)
        info = VideoInfo(upright[0], upright[1], (container.format.name or "").split(",")[0].upper(),
                         stream.codec_context.name or "", duration, *_metadata(container.metadata, stream.metadata),
                         tuple(str(v)[:65_536] for k, v in container.metadata.items() if k.lower() in TEXT_TAGS))
    return info, moments


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _duration(container: Any, stream: Any) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return None


def _signature(frame: Any) -> np.ndarray:
    """A 32x32 colour picture of the frame, to compare scenes and spot one-colour frames cheaply."""
    return frame.reformat(width=32, height=32, format="rgb24").to_ndarray().astype(np.float32)


def _uniform(signature: np.ndarray) -> bool:
    """Nearly one colour: every channel's spread is small (black, white, a fade, a plain title card)."""
    return float(signature.reshape(-1, 3).std(axis=0).max()) < UNIFORM_STD


def _moments(container: Any, stream: Any, duration: float | None, deadline_s: float,
             keep: Callable[[Image.Image], Any]) -> tuple[list[Moment], bool]:
    """The moments, and whether the frames are turned a quarter (the upright size is the stream's swapped)."""
    if duration and duration > KEYFRAMES_ONLY_AFTER_S:
        stream.codec_context.skip_frame = "NONKEY"
    every = max(SAMPLE_EVERY_S, (duration or 0) / (MAX_MOMENTS / 2))
    deadline = time.monotonic() + deadline_s
    starts: list[float] = []
    images: list[Any] = []
    turned = False
    scenes = 0
    last_look = last_sig = None
    t = 0.0
    for frame in container.decode(stream):
        t = float(frame.time) if frame.time is not None else t
        if last_look is not None and t - last_look < LOOK_EVERY_S:
            continue
        if starts and time.monotonic() > deadline:   # out of time: the moments found so far, at least one
            break
        last_look = t
        sig = _signature(frame)
        if _uniform(sig):
            continue
        since = t - starts[-1] if starts else None
        regular = since is None or since >= every
        scene = (not regular and last_sig is not None and since is not None and since >= MIN_SCENE_S
                 and scenes < MAX_MOMENTS // 2 and float(np.abs(sig - last_sig).mean()) > SCENE_CHANGE)
        if not (regular or scene):
            continue
        scenes += scene
        starts.append(t)
        scale = min(1.0, FRAME_SIDE / max(frame.width, frame.height))
        small = frame.to_image(width=max(1, round(frame.width * scale)), height=max(1, round(frame.height * scale)))
        turn = _turn(frame)
        turned = turn in (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270)
        images.append(keep(small.transpose(turn) if turn is not None else small))
        last_sig = sig
        if len(starts) >= MAX_MOMENTS:
            break
    if not starts:
        return [], False
    end = max(t, duration or 0.0, starts[-1])
    ends = starts[1:] + [end]
    return [Moment(round(s, 3), round(max(e, s), 3), im) for s, e, im in zip(starts, ends, images, strict=True)], turned


_TURN = {90: Image.Transpose.ROTATE_90, -90: Image.Transpose.ROTATE_270, 270: Image.Transpose.ROTATE_270,
         180: Image.Transpose.ROTATE_180, -180: Image.Transpose.ROTATE_180}


def _turn(frame: Any) -> Image.Transpose | None:
    """What turns the frame as a player shows it: the display matrix's rotation (counterclockwise degrees)."""
    try:
        angle = int(round(frame.rotation or 0))
    except (AttributeError, TypeError, ValueError):
        angle = 0
    return _TURN.get(angle)


def _metadata(tags: dict, stream_tags: dict) -> tuple[datetime | None, str, float | None, float | None]:
    """(taken_at, camera, latitude, longitude) from the container's tags (QuickTime's and Android's)."""
    tags = {k.lower(): str(v) for k, v in {**stream_tags, **tags}.items()}
    taken = None
    created = tags.get("com.apple.quicktime.creationdate") or tags.get("creation_time") or ""
    try:
        taken = datetime.fromisoformat(created.replace("Z", "+00:00"))
        taken = taken.astimezone(timezone.utc).replace(tzinfo=None) if taken.tzinfo else taken
        if not 1900 <= taken.year <= 2299 or taken.year == 1904 and taken.month == 1 and taken.day == 1:
            taken = None   # 1904-01-01: QuickTime's zero date, no date at all
    except ValueError:
        taken = None
    camera = " ".join(v.strip() for v in (tags.get("com.apple.quicktime.make") or tags.get("make", ""),
                                          tags.get("com.apple.quicktime.model") or tags.get("model", "")) if v).strip()
    lat, lon = _iso6709(tags.get("com.apple.quicktime.location.iso6709") or tags.get("location", ""))
    return taken, camera, lat, lon


def _iso6709(text: str) -> tuple[float | None, float | None]:
    """Latitude and longitude of an ISO 6709 position as phones write it ("+37.3318-122.0312+010.000/")."""
    import re
    match = re.match(r"^([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)", text.strip())
    if not match:
        return None, None
    lat, lon = float(match.group(1)), float(match.group(2))
    return (lat, lon) if -90 <= lat <= 90 and -180 <= lon <= 180 else (None, None)
