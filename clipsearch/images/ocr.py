"""Text read in a picture (OCR: a sign, a receipt, a slide, a label), as the words of `images.words_ocr`.

An optional extra (`pip install 'clipsearch[ocr]'`): rapidocr-onnxruntime, whose wheel carries its ONNX
detection and recognition models, so nothing is downloaded. Only `load --ocr` and `clipsearch ocr` import it.

The engine is made once per process (`start`, in each loader worker) on one onnxruntime thread: the loader's
workers are the parallelism. Each image is read in a child forked from that process, killed at the time
bound: onnxruntime cannot be interrupted inside a run (a signal waits until the run returns, and detection
on one 2000-pixel image takes seconds on one thread), and a native crash on a strange image then ends the
child, not the loader's worker (a dead pool worker would leave its batch waiting for ever). A fork costs
a few hundredths of a second against about half a second for reading an image.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pickle
import select
import signal
import time
from typing import Any

import numpy as np
from PIL import Image

from clipsearch.errors import ClipsearchError
from clipsearch.store.words import words

PACKAGE = "rapidocr-onnxruntime"
INSTALL = "pip install 'clipsearch[ocr]'"
SECONDS = 30.0        # per image: a page of dense text takes about a minute at one thread and is cut here
MIN_SIDE = 1000       # a JPEG is decoded at the smallest scale keeping this many pixels a side (the engine
                      # reads at most 2000 on the long side anyway)


FAULTS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT)


class OcrMissing(ClipsearchError):
    """`--ocr` or `clipsearch ocr` without the extra installed."""


class OcrFailed(Exception):
    """Reading one image's text timed out or crashed: one load error, the rest go on."""


def engine_label() -> str:
    """'rapidocr-onnxruntime 1.4.4': what `ocr_engine` records; OcrMissing if the extra is not installed.
    Imports nothing of the engine (a load without --ocr never does)."""
    try:
        found = importlib.util.find_spec("rapidocr_onnxruntime") is not None
        version = importlib.metadata.version(PACKAGE) if found else ""
    except (ImportError, ValueError, importlib.metadata.PackageNotFoundError):
        found = False
    if not found:
        raise OcrMissing(f"reading the text in images needs the OCR extra: {INSTALL}")
    return f"{PACKAGE} {version}"


_engine: Any = None


def start() -> None:
    """Make this process's engine (once; the loader calls it in each worker): one onnxruntime thread per
    model, and one OpenCV thread."""
    global _engine
    if _engine is None:
        import cv2
        from rapidocr_onnxruntime import RapidOCR
        cv2.setNumThreads(1)
        _engine = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)


def text(image: Image.Image) -> str:
    """The lines of text read in `image` (upright RGB), top to bottom, here and without a time bound."""
    start()
    found, _ = _engine(np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1]))   # it takes BGR
    return "\n".join(line[1] for line in found or [])


def read_words(image: Image.Image, seconds: float | None = None) -> list[str]:
    """The words (clipsearch.store.words) of the text in `image`, read within `seconds` (default SECONDS);
    OcrFailed if it took longer or crashed."""
    return words(_in_child(image, SECONDS if seconds is None else seconds))


def _in_child(image: Image.Image, seconds: float) -> str:
    """text(image) in a forked child, killed after `seconds`."""
    start()   # made here, shared with each child
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: read, send, and leave without running the parent's exit handlers
        os.close(reader)
        for fault in FAULTS:   # a crash ends the child at once: inherited fault handlers (the engine's) wait
            signal.signal(fault, signal.SIG_DFL)   # for threads the fork did not copy
        code = 0
        try:
            payload = pickle.dumps(text(image))
        except BaseException as exc:   # noqa: B036  (anything: it is reported, the child ends either way)
            payload, code = pickle.dumps(OcrFailed(f"text not read: {type(exc).__name__}: {exc}")), 1
        try:
            with os.fdopen(writer, "wb") as out:
                out.write(payload)
        finally:
            os._exit(code)
    os.close(writer)
    chunks: list[bytes] = []
    deadline = time.monotonic() + seconds
    with os.fdopen(reader, "rb", buffering=0) as pipe:
        ready = select.poll()   # not select(): a worker with over 1,024 files open has descriptors it cannot take
        ready.register(pipe, select.POLLIN | select.POLLHUP)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not ready.poll(left * 1000):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise OcrFailed(f"text not read: took longer than {seconds:g} s")
            chunk = pipe.read(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.waitstatus_to_exitcode(status)}"
        raise OcrFailed(f"text not read: the OCR crashed ({how})")
    result = pickle.loads(b"".join(chunks))
    if isinstance(result, OcrFailed):
        raise result
    return str(result)
