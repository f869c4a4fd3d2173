"""Text in pictures, read into words: a street sign photographed on a trip, a shop receipt, a slide; loaded with
`--ocr`, or read later by `clipsearch ocr` for a library loaded without it; a picture the OCR chokes on is
one recorded error while the others still get their words; and without the extra, a clear message."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib
import pytest
from PIL import Image, ImageDraw, ImageFont

from clipsearch.images import ocr
from clipsearch.store.catalog import Catalog
from tests.conftest import ROOT

FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _engine() -> None:
    pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra is not installed: pip install "
                                                       "'clipsearch[ocr]' (CI installs it with the test extras)")


def _font(size: int, name: str = "DejaVuSans.ttf") -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONTS / name), size)


def sign(path: Path) -> Path:
    """A phone photo (1600x1200 JPEG, so the loader decodes it reduced for the model) of a street sign."""
    image = Image.new("RGB", (1600, 1200), (70, 110, 160))
    draw = ImageDraw.Draw(image)
    draw.rectangle((300, 420, 1300, 700), fill=(245, 245, 235))
    draw.text((360, 480), "LISBON 2019", font=_font(140, "DejaVuSans-Bold.ttf"), fill=(20, 40, 90))
    image.save(path, quality=92)
    return path


def receipt(path: Path) -> Path:
    """A scanned shop receipt (PNG)."""
    image = Image.new("RGB", (600, 800), "white")
    draw = ImageDraw.Draw(image)
    draw.text((60, 80), "CAFE AURORA", font=_font(56, "DejaVuSans-Bold.ttf"), fill="black")
    for n, line in enumerate(["Espresso 2.50", "Croissant 1.60", "TOTAL 4.10"], 1):
        draw.text((60, 80 + 110 * n), line, font=_font(48, "DejaVuSansMono.ttf"), fill="black")
    image.save(path)
    return path


def photo(path: Path, mark: tuple[int, int, int] | None = None) -> Path:
    """A sunset without text; `mark` colours its corner (the fake engines below pick it out by it)."""
    image = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
    ImageDraw.Draw(image).ellipse((250, 150, 390, 290), fill=(250, 190, 60))
    if mark:
        image.paste(mark, (0, 0, 8, 8))
    image.save(path, quality=92)
    return path


def _rows(db: Path) -> dict[str, dict]:
    with Catalog.open(db) as store:
        return {Path(r["path"]).name: r for r in store.query("SELECT path, words_ocr, ocr_engine FROM images")}


def _errors(db: Path) -> list[dict]:
    with Catalog.open(db) as store:
        return store.query("SELECT path, reason FROM load_errors ORDER BY path")


def test_a_sign_and_a_receipt_loaded_with_ocr_are_found_by_their_words(tmp_path, cli):
    _engine()
    folder = tmp_path / "trip"
    folder.mkdir()
    sign(folder / "IMG_2041.jpg"), receipt(folder / "scan.png"), photo(folder / "sunset.jpg")
    result = cli("load", folder, "--ocr", "--workers", "1", "--quiet", db=tmp_path / "db")
    assert result.returncode == 0, result.stderr
    rows = _rows(tmp_path / "db")
    assert {"lisbon", "2019"} <= set(rows["IMG_2041.jpg"]["words_ocr"])
    assert {"cafe", "aurora", "espresso", "croissant", "total"} <= set(rows["scan.png"]["words_ocr"])
    assert rows["sunset.jpg"]["words_ocr"] == []
    engine = f"rapidocr-onnxruntime {__import__('importlib.metadata').metadata.version('rapidocr-onnxruntime')}"
    assert {r["ocr_engine"] for r in rows.values()} == {engine}   # read, text or none
    assert _errors(tmp_path / "db") == []


def test_ocr_reads_a_library_loaded_without_it(tmp_path, cli):
    _engine()
    folder = tmp_path / "receipts"
    folder.mkdir()
    receipt(folder / "scan.png"), sign(folder / "sign.jpg")
    assert cli("load", folder, "--workers", "0", "--quiet", db=tmp_path / "db").returncode == 0
    rows = _rows(tmp_path / "db")
    assert all(r["words_ocr"] == [] and r["ocr_engine"] == "" for r in rows.values())

    result = cli("ocr", "--workers", "1", "--quiet", db=tmp_path / "db")
    assert result.returncode == 0, result.stderr
    assert "read the text of 2 of 2 images" in result.stdout
    rows = _rows(tmp_path / "db")
    assert {"espresso", "total"} <= set(rows["scan.png"]["words_ocr"])
    assert {"lisbon", "2019"} <= set(rows["sign.jpg"]["words_ocr"])
    assert all(r["ocr_engine"].startswith("rapidocr-onnxruntime ") for r in rows.values())
    assert "every image has been read" in cli("ocr", "--quiet", db=tmp_path / "db").stdout


SLOW, CRASH = (255, 0, 0), (0, 255, 0)


def _fussy_text(original):
    """The engine, except that it hangs on a picture with a red corner and crashes (SIGSEGV, as a native
    library would) on one with a green corner."""
    def text(image: Image.Image) -> str:
        corner = image.convert("RGB").getpixel((2, 2))
        if all(abs(a - b) < 40 for a, b in zip(corner, SLOW, strict=True)):
            time.sleep(120)
        if all(abs(a - b) < 40 for a, b in zip(corner, CRASH, strict=True)):
            os.kill(os.getpid(), signal.SIGSEGV)
        return original(image)
    return text


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_picture_the_ocr_hangs_or_crashes_on_is_one_error_and_the_load_goes_on(tmp_path, cli, monkeypatch,
                                                                                   workers):
    _engine()
    monkeypatch.setattr(ocr, "SECONDS", 3.0)
    monkeypatch.setattr(ocr, "text", _fussy_text(ocr.text))
    folder = tmp_path / "mixed"
    folder.mkdir()
    receipt(folder / "scan.png"), photo(folder / "hangs.jpg", SLOW), photo(folder / "crashes.jpg", CRASH)
    start = time.monotonic()
    result = cli("load", folder, "--ocr", "--workers", workers, "--quiet", db=tmp_path / "db")
    assert time.monotonic() - start < 60   # the hanging reading was stopped at its bound, not waited for
    assert result.returncode == 0, result.stderr
    assert "loaded 3" in result.stdout and "the text of 2 images could not be read" in result.stdout
    rows = _rows(tmp_path / "db")
    assert {"espresso", "total"} <= set(rows["scan.png"]["words_ocr"])
    assert rows["hangs.jpg"]["ocr_engine"] == rows["crashes.jpg"]["ocr_engine"] == ""   # `ocr` tries again
    errors = {Path(e["path"]).name: e["reason"] for e in _errors(tmp_path / "db")}
    assert set(errors) == {"hangs.jpg", "crashes.jpg"}
    assert "took longer than 3 s" in errors["hangs.jpg"]
    assert "crashed (signal 11)" in errors["crashes.jpg"]

    again = cli("ocr", "--workers", workers, "--quiet", db=tmp_path / "db")   # still failing: not recorded twice
    assert again.returncode == 0 and "read the text of 0 of 2 images" in again.stdout
    assert len(_errors(tmp_path / "db")) == 2


def test_without_the_extra_ocr_says_how_to_install_it(tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)   # as if not installed
    folder = tmp_path / "trip"
    folder.mkdir()
    receipt(folder / "scan.png")
    for args in (["load", folder, "--ocr"], ["ocr"]):
        result = cli(*args, db=tmp_path / "db")
        assert result.returncode != 0
        assert "pip install 'clipsearch[ocr]'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "db").exists()   # refused before a store was made


@pytest.mark.slow
def test_a_load_without_ocr_never_imports_the_engine(tmp_path):
    folder = tmp_path / "trip"
    folder.mkdir()
    receipt(folder / "scan.png")
    code = ("import sys; from clipsearch.collection import open as o\n"
            f"with o({str(tmp_path / 'db')!r}, create=True) as c: c.load({str(folder)!r}, workers=0)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rapidocr_onnxruntime', 'onnxruntime', "
            "'cv2')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_worker_with_many_files_open_still_reads_text(monkeypatch):
    """A long load or a served store holds many files: past descriptor 1,024 the wait for the OCR's child must
    still work (select() cannot take such a descriptor; poll can)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"this machine allows {hard} open files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    monkeypatch.setattr(ocr, "start", lambda: None)
    monkeypatch.setattr(ocr, "text", lambda image: "OPEN daily")
    held = [open(os.devnull) for _ in range(1100)]
    try:
        assert ocr.read_words(Image.new("RGB", (32, 32))) == ["open", "daily"]
    finally:
        for f in held:
            f.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
