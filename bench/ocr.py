"""OCR accuracy (`load --ocr`, `clipsearch ocr`): text drawn into generated 640x480 pictures, read as the
loader reads it (clipsearch.images.ocr.read_words: one onnxruntime thread, a forked child per image), in
every combination of font (DejaVu Sans, Serif, Mono from matplotlib), size (14, 24, 48 px), rotation (0, 5,
15, 90 degrees) and background (plain white; a photograph with white lettering outlined in black). Each
picture holds one line of three words (a place, a word, a year, drawn from fixed lists); the share of those
words found among the words read, per dimension and overall, and the seconds per image."""
from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path

import matplotlib
from PIL import Image, ImageDraw, ImageFont

from clipsearch.images import ocr
from clipsearch.store.words import words

FONTS = {"sans": "DejaVuSans.ttf", "serif": "DejaVuSerif.ttf", "mono": "DejaVuSansMono.ttf"}
SIZES = (14, 24, 48)
ROTATIONS = (0, 5, 15, 90)
BACKGROUNDS = ("plain", "photo")
PLACES = ["Lisbon", "Harbour", "Market", "Station", "Museum", "Garden", "Bakery", "Library", "Theatre"]
NOUNS = ["exit", "open", "sale", "coffee", "tickets", "platform", "menu", "welcome", "closed"]
DATA = Path(matplotlib.get_data_path())


def picture(text: str, font: str, size: int, rotation: int, background: str) -> Image.Image:
    """`text` drawn in the middle of a 640x480 picture, turned `rotation` degrees."""
    face = ImageFont.truetype(str(DATA / "fonts" / "ttf" / FONTS[font]), size)
    photo = background == "photo"
    left, top, right, bottom = face.getbbox(text, stroke_width=2 if photo else 0)
    layer = Image.new("RGBA", (right - left + 8, bottom - top + 8), (0, 0, 0, 0))
    ImageDraw.Draw(layer).text((4 - left, 4 - top), text, font=face, fill="white" if photo else "black",
                               stroke_width=2 if photo else 0, stroke_fill="black")
    layer = layer.rotate(rotation, expand=True, resample=Image.Resampling.BICUBIC)
    canvas = (Image.open(DATA / "sample_data" / "grace_hopper.jpg").convert("RGB").resize((640, 480)) if photo
              else Image.new("RGB", (640, 480), "white"))
    canvas.paste(layer, ((640 - layer.width) // 2, (480 - layer.height) // 2), layer)
    return canvas


def run() -> dict:
    ocr.start()
    cases = list(itertools.product(FONTS, SIZES, ROTATIONS, BACKGROUNDS))
    found: dict[str, dict[str, list[float]]] = {k: {} for k in ("font", "size", "rotation", "background")}
    seconds, shares = [], []
    for n, (font, size, rotation, background) in enumerate(cases):
        text = f"{PLACES[n % len(PLACES)]} {NOUNS[n * 5 % len(NOUNS)]} {1990 + n % 35}"
        image = picture(text, font, size, rotation, background)
        start = time.perf_counter()
        try:
            read = set(ocr.read_words(image))
        except ocr.OcrFailed:
            read = set()
        seconds.append(time.perf_counter() - start)
        wanted = words(text)
        share = sum(w in read for w in wanted) / len(wanted)
        shares.append(share)
        for key, value in zip(found, (font, size, rotation, background), strict=True):
            found[key].setdefault(str(value), []).append(share)
    return {"images": len(cases), "words_found": round(statistics.mean(shares), 3),
            "by": {k: {v: round(statistics.mean(s), 3) for v, s in d.items()} for k, d in found.items()},
            "seconds_per_image_p50": round(statistics.median(seconds), 3),
            "seconds_per_image_max": round(max(seconds), 3), "engine": ocr.engine_label()}
