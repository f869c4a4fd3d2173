"""The image files behind the rows: content ids, and reading a stored file back only while it is still
the file that was loaded.

A row's id is the start of the SHA-256 of the file's bytes, so a file is served only if its bytes
still hash to the row's id: a file replaced, edited, or swapped for a symbolic link to something
else after loading (/etc/passwd, another user's photo) is refused, whatever the path now points to.
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
from typing import BinaryIO

from clipsearch.errors import FileChanged, NotFound

MAX_FILE_BYTES = 64 * 1024 * 1024   # larger files are not loaded, so never served either
MAX_VIDEO_BYTES = 16 * 1024 ** 3    # videos: hashed and decoded a piece at a time, served in ranges


def content_id(data: bytes) -> str:
    """The id of a file's content: the first 128 bits of its SHA-256, in hex."""
    return hashlib.sha256(data).hexdigest()[:32]


def read_loaded_file(path: str, image_id: str, size: int) -> bytes:
    """The bytes at `path` if they are still those loaded as `image_id` (`size` bytes), else an error:
    NotFound if the file is gone, FileChanged if something else is there now."""
    try:
        # O_NOFOLLOW: a symbolic link put in the file's place is not followed (ELOOP).
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise NotFound(f"the file of image {image_id} is no longer at {path}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FileChanged(f"the file of image {image_id} was replaced by a link since it was loaded; "
                              "load it again") from None
        raise FileChanged(f"the file of image {image_id} cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size != size or size > MAX_FILE_BYTES:
            raise FileChanged(f"the file of image {image_id} changed since it was loaded; load it again")
        data = f.read(size + 1)
    if len(data) != size or content_id(data) != image_id:
        raise FileChanged(f"the file of image {image_id} changed since it was loaded; load it again")
    return data


def open_loaded_video(path: str, video_id: str, size: int, mtime_ms: int | None) -> BinaryIO:
    """The video file at `path`, open, if it is still the one loaded as `video_id`: hashing gigabytes for each
    range a player asks for is out of the question, so it must be the same regular file (not a link put
    there) of the size and modification time recorded when it was hashed. NotFound or FileChanged if not."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise NotFound(f"the video {video_id} is no longer at {path}") from None
    except OSError as exc:
        raise FileChanged(f"the video {video_id} cannot be read: {exc.strerror}; load it again") from None
    f = os.fdopen(fd, "rb")
    info = os.fstat(f.fileno())
    if not stat.S_ISREG(info.st_mode) or info.st_size != size or (
            mtime_ms is not None and info.st_mtime_ns // 1_000_000 != mtime_ms):
        f.close()
        raise FileChanged(f"the video {video_id} changed since it was loaded; load it again")
    return f
