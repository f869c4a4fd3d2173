"""The bundled model's world: one coloured shape on a background, and catalogues of such images.

The same generator trains the bundled CLIP model, makes the demo catalogue,
and builds the test sets and benchmark images with known answers. Everything is drawn from a numpy
Generator, so a seed fixes every pixel and caption.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

# The words of this world are the bundled model's (what it was trained on); the demo and the tests use them here.
from clipsearch.models.bundled import COLOURS, COLOURS_ES, SHAPES, SHAPES_ES, query_text  # noqa: F401

if TYPE_CHECKING:
    from clipsearch.models.model import ImageTextModel
    from clipsearch.store.catalog import Catalog

BACKGROUNDS = ("plain", "gradient", "noise")

MIN_CONTRAST = 120  # RGB distance between the shape and any background colour


@dataclass(frozen=True)
class ShapeSpec:
    colour: str
    shape: str
    background: str            # plain | gradient | noise
    bg_colour: str | None      # named colour of a plain background, else None
    size: float                # shape extent as a fraction of the shorter side
    width: int
    height: int
    image_format: str          # JPEG | PNG


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int = 20) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in np.clip(np.array(rgb) + rng.integers(-amount, amount + 1, 3), 0, 255))
    return r, g, b


def _far_colour(rng: np.random.Generator, avoid: Any) -> tuple[int, int, int]:
    """A random colour at least MIN_CONTRAST away from `avoid`."""
    while True:
        c = rng.integers(0, 256, 3)
        if np.linalg.norm(c - np.array(avoid)) >= MIN_CONTRAST:
            r, g, b = (int(v) for v in c)
            return r, g, b


def random_spec(rng: np.random.Generator, colour: str | None = None, shape: str | None = None,
                size_range: tuple[float, float] = (0.15, 0.8), dims_range: tuple[int, int] = (48, 320)
                ) -> ShapeSpec:
    colour = colour or str(rng.choice(list(COLOURS)))
    shape = shape or str(rng.choice(SHAPES))
    background = str(rng.choice(BACKGROUNDS))
    bg_colour = None
    if background == "plain":
        choices = [c for c in COLOURS
                   if np.linalg.norm(np.subtract(COLOURS[c], COLOURS[colour])) >= MIN_CONTRAST + 40]
        bg_colour = str(rng.choice(choices))
    side = int(rng.integers(*dims_range))
    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    width, height = (side, max(16, int(side / aspect))) if aspect >= 1 else (max(16, int(side * aspect)), side)
    return ShapeSpec(colour, shape, background, bg_colour, float(rng.uniform(*size_range)),
                     width, height, "JPEG" if rng.random() < 0.6 else "PNG")


def _background(spec: ShapeSpec, rng: np.random.Generator, shape_rgb: np.ndarray) -> Image.Image:
    w, h = spec.width, spec.height
    if spec.background == "plain":
        return Image.new("RGB", (w, h), _jitter(rng, COLOURS[spec.bg_colour or "white"]))
    if spec.background == "gradient":
        a, b = np.array(_far_colour(rng, shape_rgb)), np.array(_far_colour(rng, shape_rgb))
        while np.linalg.norm((a + b) / 2 - shape_rgb) < MIN_CONTRAST:
            b = np.array(_far_colour(rng, shape_rgb))
        t = np.linspace(0, 1, w if rng.random() < 0.5 else h)
        ramp = a[None, :] * (1 - t[:, None]) + b[None, :] * t[:, None]
        pixels = np.broadcast_to(ramp[None, :, :], (h, w, 3)) if len(t) == w else \
            np.broadcast_to(ramp[:, None, :], (h, w, 3))
        return Image.fromarray(pixels.astype(np.uint8))
    base = np.array(_far_colour(rng, shape_rgb), dtype=np.float32)
    noise = rng.normal(0, 28, (h, w, 3)).astype(np.float32)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _outline(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in np.arange(4) * math.pi / 2 + math.pi / 4]
    elif shape == "triangle":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in np.arange(3) * 2 * math.pi / 3 - math.pi / 2]
    elif shape == "star":
        pts = [((r if i % 2 == 0 else 0.42 * r) * math.cos(a), (r if i % 2 == 0 else 0.42 * r) * math.sin(a))
               for i, a in enumerate(np.arange(10) * math.pi / 5 - math.pi / 2)]
    elif shape == "cross":
        a = 0.33 * r
        pts = [(a, r), (a, a), (r, a), (r, -a), (a, -a), (a, -r),
               (-a, -r), (-a, -a), (-r, -a), (-r, a), (-a, a), (-a, r)]
    else:
        raise ValueError(f"no outline for {shape}")
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def render(spec: ShapeSpec, rng: np.random.Generator) -> Image.Image:
    shape_rgb = _jitter(rng, COLOURS[spec.colour])
    img = _background(spec, rng, np.array(shape_rgb))
    r = spec.size * min(spec.width, spec.height) / 2
    cx = rng.uniform(r, spec.width - r)
    cy = rng.uniform(r, spec.height - r)
    draw = ImageDraw.Draw(img)
    if spec.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=shape_rgb)
    else:
        draw.polygon(_outline(spec.shape, cx, cy, r, rng.uniform(0, 2 * math.pi)), fill=shape_rgb)
    return img


def encode(img: Image.Image, image_format: str, rng: np.random.Generator | None = None) -> bytes:
    """The file bytes a camera or export would give: JPEG at a random quality, or PNG."""
    buf = io.BytesIO()
    if image_format == "JPEG":
        quality = int(rng.integers(70, 96)) if rng is not None else 90
        img.save(buf, "JPEG", quality=quality)
    else:
        img.save(buf, "PNG")
    return buf.getvalue()


def caption(spec: ShapeSpec, rng: np.random.Generator, lang: str = "en") -> tuple[str, dict]:
    """A natural caption for `spec` and the attributes it asserts.

    Most captions name colour and shape; some name only one of them or add the
    background. The attributes let training treat every image that agrees
    with a caption as a positive, not just the image it was written for.
    """
    roll = rng.random()
    attrs = {"colour": spec.colour, "shape": spec.shape}
    if roll < 0.06:
        attrs.pop("colour")
    elif roll < 0.12:
        attrs.pop("shape")
    mention_bg = spec.bg_colour is not None and "colour" in attrs and "shape" in attrs and rng.random() < 0.35
    if mention_bg and spec.bg_colour is not None:
        attrs["bg_colour"] = spec.bg_colour
    return (_caption_es if lang == "es" else _caption_en)(spec, attrs, rng), attrs


def _caption_en(spec: ShapeSpec, attrs: dict, rng: np.random.Generator) -> str:
    c, s = attrs.get("colour"), attrs.get("shape")
    if c is None:
        return str(rng.choice([f"a {s}", f"a photo of a {s}", f"{s}", f"a {s} shape"]))
    if s is None:
        return str(rng.choice([f"a {c} shape", f"something {c}", f"a {c} object"]))
    if "bg_colour" in attrs:
        bg = attrs["bg_colour"]
        return str(rng.choice([f"a {c} {s} on a {bg} background", f"{c} {s} on {bg}",
                               f"a photo of a {c} {s} on a {bg} background"]))
    size_word = "small" if spec.size < 0.35 else "big" if spec.size > 0.6 else "medium"
    return str(rng.choice([f"a {c} {s}", f"{c} {s}", f"a photo of a {c} {s}", f"a picture of a {c} {s}",
                           f"an image of a {c} {s}", f"a drawing of a {c} {s}", f"a {size_word} {c} {s}",
                           f"a {c} {s} on a {spec.background} background"]))


def _caption_es(spec: ShapeSpec, attrs: dict, rng: np.random.Generator) -> str:
    c, s = attrs.get("colour"), attrs.get("shape")
    if s is None:
        assert c is not None, "a caption names the colour, the shape or both"
        word = COLOURS_ES[c][1]  # "una forma roja"
        return str(rng.choice([f"una forma {word}", f"algo {COLOURS_ES[c][0]}", f"una figura {word}"]))
    noun, gender = SHAPES_ES[s]
    article = "un" if gender == "m" else "una"
    if c is None:
        return str(rng.choice([f"{article} {noun}", f"una foto de {article} {noun}", noun]))
    adj = COLOURS_ES[c][0 if gender == "m" else 1]
    if "bg_colour" in attrs:
        bg = COLOURS_ES[attrs["bg_colour"]][0]
        return str(rng.choice([f"{article} {noun} {adj} sobre fondo {bg}", f"{noun} {adj} sobre fondo {bg}",
                               f"una foto de {article} {noun} {adj} sobre fondo {bg}"]))
    return str(rng.choice([f"{article} {noun} {adj}", f"{noun} {adj}", f"una foto de {article} {noun} {adj}",
                           f"una imagen de {article} {noun} {adj}", f"un dibujo de {article} {noun} {adj}"]))


def make_image(rng: np.random.Generator, colour: str | None = None, shape: str | None = None,
               **spec_kwargs: Any) -> tuple[ShapeSpec, bytes]:
    """A random image (as file bytes) and its spec."""
    spec = random_spec(rng, colour, shape, **spec_kwargs)
    return spec, encode(render(spec, rng), spec.image_format, rng)


def balanced_specs(rng: np.random.Generator, per_class: int, **spec_kwargs: Any) -> list[ShapeSpec]:
    """`per_class` specs for each of the 40 colour+shape classes, shuffled."""
    specs = [random_spec(rng, c, s, **spec_kwargs) for c in COLOURS for s in SHAPES for _ in range(per_class)]
    return [specs[i] for i in rng.permutation(len(specs))]


NEAR_COPY_KINDS = ("reencode", "resize", "crop")


def near_copy(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """A near-duplicate of an image file, as people make them.

    reencode: saved again as JPEG at quality 50-85; resize: scaled to 50-80%;
    crop: 2-5% trimmed from each side. Resizes and crops are saved as JPEG too.
    """
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    if kind == "resize":
        scale = rng.uniform(0.5, 0.8)
        img = img.resize((max(8, round(w * scale)), max(8, round(h * scale))), Image.Resampling.LANCZOS)
    elif kind == "crop":
        left, top, right, bottom = rng.uniform(0.02, 0.05, 4)
        img = img.crop((round(w * left), round(h * top), w - round(w * right), h - round(h * bottom)))
    elif kind != "reencode":
        raise ValueError(f"unknown near-copy kind {kind!r}; use one of {', '.join(NEAR_COPY_KINDS)}")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(50, 86)))
    return buf.getvalue()


COPY_KINDS = ("reencode", "resize", "crop", "format", "brightness", "border")


class PlantedCopy(NamedTuple):
    data: bytes
    image_format: str          # JPEG | PNG
    amount: float              # how much it changed: quality, scale, largest side cropped, factor, border px


def planted_copy(data: bytes, kind: str, rng: np.random.Generator) -> PlantedCopy:
    """A copy of an image file as the copies benchmark and tests plant them (COPY_KINDS).

    reencode: saved again as JPEG at quality 50-95; resize: scaled to 50-90%; crop: 0-10% trimmed from
    each side; format: PNG saved as JPEG (quality 75-95) or JPEG as PNG; brightness: 5-15% brighter or
    darker; border: a frame of 2-10 pixels in one random colour. Resizes, crops, brightness changes and
    borders keep the file's format (JPEG at quality 80-95).
    """
    source = Image.open(io.BytesIO(data))
    fmt = "PNG" if source.format == "PNG" else "JPEG"
    img = source.convert("RGB")
    w, h = img.size
    if kind == "reencode":
        fmt, amount = "JPEG", float(rng.integers(50, 96))
        return PlantedCopy(_save(img, fmt, int(amount)), fmt, amount)
    if kind == "format":
        fmt = "JPEG" if fmt == "PNG" else "PNG"
        return PlantedCopy(_save(img, fmt, int(rng.integers(75, 96))), fmt, 0.0)
    if kind == "resize":
        amount = float(rng.uniform(0.5, 0.9))
        img = img.resize((max(8, round(w * amount)), max(8, round(h * amount))), Image.Resampling.LANCZOS)
    elif kind == "crop":
        sides = rng.uniform(0, 0.10, 4)
        amount = float(sides.max())
        img = img.crop((round(w * sides[0]), round(h * sides[1]), w - round(w * sides[2]), h - round(h * sides[3])))
    elif kind == "brightness":
        amount = float(1 + rng.choice([-1, 1]) * rng.uniform(0.05, 0.15))
        img = ImageEnhance.Brightness(img).enhance(amount)
    elif kind == "border":
        amount = float(rng.integers(2, 11))
        img = ImageOps.expand(img, int(amount), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    else:
        raise ValueError(f"unknown copy kind {kind!r}; use one of {', '.join(COPY_KINDS)}")
    return PlantedCopy(_save(img, fmt, int(rng.integers(80, 96))), fmt, amount)


def _save(img: Image.Image, image_format: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if image_format == "JPEG":
        img.save(buf, "JPEG", quality=quality)
    else:
        img.save(buf, "PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class CopyItem:
    """One image of a copies benchmark: an original, a copy of one (`kind` in COPY_KINDS), or a look-alike (a
    different picture of the same colour and shape as original `family`)."""
    name: str
    family: int                # the original it is, or is a copy of; a look-alike's own picture: -1 - family
    kind: str                  # original | lookalike | one of COPY_KINDS
    amount: float
    data: bytes
    image_format: str


def copy_benchmark(originals: int, seed: int, kinds: tuple[str, ...] = COPY_KINDS,
                   dims_range: tuple[int, int] = (200, 640)) -> Iterator[CopyItem]:
    """Images with known answers, one original at a time: the original, a look-alike of it, and one copy of it
    per kind in `kinds`. Consume them as they come: a few thousand photo-sized files are a gigabyte."""
    rng = np.random.default_rng(seed)
    for i in range(originals):
        spec, data = make_image(rng, dims_range=dims_range)
        yield CopyItem(f"{i:05d}-original", i, "original", 0.0, data, spec.image_format)
        look, look_data = make_image(rng, spec.colour, spec.shape, dims_range=dims_range)
        yield CopyItem(f"{i:05d}-lookalike", -1 - i, "lookalike", 0.0, look_data, look.image_format)
        for kind in kinds:
            copy = planted_copy(data, kind, rng)
            yield CopyItem(f"{i:05d}-{kind}", i, kind, copy.amount, copy.data, copy.image_format)


def score_copies(items: list[CopyItem], groups: list[list[str]]) -> dict[str, Any]:
    """Recall and precision of `groups` (lists of item names) against the known answers of `items`.

    recall: per kind, the share of copies grouped with their original; lookalikes_grouped: the share of
    look-alikes grouped with the picture they resemble (precision is 1 minus it); pair_precision, overall and
    per kind: of the pairs of images that share a group (those with a copy of that kind), the share that show
    one picture; originals_merged: the share of originals whose group holds another original.
    """
    group_of = {name: g for g, names in enumerate(groups) for name in names}
    by_name = {item.name: item for item in items}
    original = {item.family: item.name for item in items if item.kind == "original"}

    def together(a: str, b: str) -> bool:
        return a in group_of and group_of.get(a) == group_of.get(b)

    kinds = list(dict.fromkeys(item.kind for item in items if item.kind not in ("original", "lookalike")))
    recall = {k: float(np.mean([together(item.name, original[item.family]) for item in items if item.kind == k]))
              for k in kinds}
    looks = [item for item in items if item.kind == "lookalike"]
    grouped_looks = float(np.mean([together(item.name, original[-1 - item.family]) for item in looks])) \
        if looks else 0.0
    pairs = [(by_name[a], by_name[b]) for names in groups for i, a in enumerate(names) for b in names[i + 1:]]
    right = [x.family == y.family for x, y in pairs]
    per_kind = {}
    for k in kinds:
        mine = [x.family == y.family for x, y in pairs if k in (x.kind, y.kind)]
        per_kind[k] = float(np.mean(mine)) if mine else 1.0
    originals_per_group = Counter(group_of[name] for name in original.values() if name in group_of)
    merged = sum(n for n in originals_per_group.values() if n > 1)
    return {"recall": recall, "lookalikes_grouped": grouped_looks, "lookalike_precision": 1 - grouped_looks,
            "pair_precision": float(np.mean(right)) if right else 1.0, "pair_precision_per_kind": per_kind,
            "originals_merged": merged / max(1, len(original)), "grouped_pairs": len(pairs)}


CATEGORIES = ("sticker", "poster", "badge", "magnet")


def make_catalogue(out: str | Path, count: int = 2000, seed: int = 7) -> Path:
    """The demo catalogue: `count` images and `manifest.csv` (path, category, price) under `out`.

    Same seed, same files; files already there with the right size are not written again.
    """
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        spec, data = make_image(rng)
        name = f"images/{i:06d}-{spec.colour}-{spec.shape}.{'jpg' if spec.image_format == 'JPEG' else 'png'}"
        path = out / name
        if not path.exists() or path.stat().st_size != len(data):
            path.write_bytes(data)
        rows.append({"path": name, "category": CATEGORIES[int(rng.integers(len(CATEGORIES)))],
                     "price": round(float(rng.uniform(1, 100)), 2)})
    return _write_manifest(out / "manifest.csv", rows)


def write_catalogue(folder: str | Path, specs: list[ShapeSpec], seed: int, manifest: str | None = "manifest.csv",
                    extra: Callable[[int], dict] | None = None) -> Path:
    """Render `specs` into `folder` as 00000.jpg/png...; with `manifest` (.csv or .jsonl), also write
    path, colour, shape (+ extra(i)) per image and return its path, else return the folder."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, spec in enumerate(specs):
        name = f"{i:05d}.{'jpg' if spec.image_format == 'JPEG' else 'png'}"
        (folder / name).write_bytes(encode(render(spec, rng), spec.image_format, rng))
        rows.append({"path": name, "colour": spec.colour, "shape": spec.shape, **(extra(i) if extra else {})})
    return _write_manifest(folder / manifest, rows) if manifest else folder


def _write_manifest(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


SELECTIVITY = {"sel_50": 0.5, "sel_10": 0.1, "sel_1": 0.01, "sel_0_1": 0.001}
SPREAD = 0.25      # perturbation norm: an item sits ~0.03 (cosine distance) from its base image
BLOCK = 50_000


# -- vector catalogues: tables of any size that behave like a CLIP photo catalogue ---------------
def encode_generated(model: ImageTextModel, count: int, seed: int) -> np.ndarray:
    """Embeddings of `count` generated images (balanced over the 40 classes)."""
    from clipsearch.images.decode import open_image
    rng = np.random.default_rng(seed)
    specs = balanced_specs(rng, max(1, count // 40))[:count]
    images = [open_image(encode(render(s, rng), s.image_format, rng), model.image_size)
              for s in specs]
    return model.encode_images(images)


def perturbed(bases: np.ndarray, rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dim = bases.shape[1]
    out = bases[rng.integers(0, len(bases), rows)]
    out += SPREAD / np.sqrt(dim) * rng.standard_normal(out.shape, dtype=np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def selectivity_columns(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, share in SELECTIVITY.items():
        col = np.zeros(rows, np.int64)
        col[rng.choice(rows, round(rows * share), replace=False)] = 1
        out[name] = col
    return out


def fill(catalog: Catalog, model: ImageTextModel, rows: int, bases: int = 4000, seed: int = 5,
         start: int = 0) -> np.ndarray:
    """Insert `rows` rows (ids start..start+rows) and return their vectors, in id order."""
    vectors = perturbed(encode_generated(model, bases, seed), rows, seed + 1)
    insert_vectors(catalog, vectors, model.label, seed, start)
    return vectors


def insert_vectors(catalog: Catalog, vectors: np.ndarray, model_label: str, seed: int = 5, start: int = 0
                   ) -> dict[str, np.ndarray]:
    """Insert `vectors` as rows start..start+len (ids are row numbers in hex) with the sel_* filter columns;
    returns those columns (0/1 per row)."""
    from clipsearch.loader.load import rows_table
    rows = len(vectors)
    columns = selectivity_columns(rows, seed + 2 + start)
    types = {name: "Nullable(Int64)" for name in SELECTIVITY}
    catalog.images.add_columns(types)
    for lo in range(0, rows, BLOCK):
        hi = min(rows, lo + BLOCK)
        paths = [f"/bench/{start + i:08d}.jpg" for i in range(lo, hi)]
        meta: list[dict] = [{"id": f"{start + lo + j:032x}", "path": path, "width": 256, "height": 256,
                             "format": "JPEG", "file_size": 0, "taken_at": None, "camera": "", "orientation": 1}
                            for j, path in enumerate(paths)]
        metadata = {path: {name: int(col[lo + j]) for name, col in columns.items()} for j, path in enumerate(paths)}
        catalog.images.insert(rows_table(meta, vectors[lo:hi], model_label, metadata, types))
    return columns


# -- a catalogue whose answers need words, pictures or both (issue 35's quality measure) -----------------
PRODUCT_LINES = ("zephyr", "quokka", "marlin", "tundra", "saffron", "nimbus", "orchid", "falcon")
PRODUCT_NOUNS = ("mug", "lamp", "chair", "notebook", "kettle", "scarf", "clock", "vase", "pillow", "bottle")
# The lines whose queries also name a picture: each has PLANTED items of that picture among its own.
MIXED = {"zephyr": ("red", "circle"), "quokka": ("blue", "square"), "marlin": ("yellow", "star"),
         "tundra": ("green", "triangle")}
PICTURES_ONLY = (("purple", "cross"), ("orange", "star"), ("black", "circle"), ("white", "square"))
PLANTED = 10


class QualityCatalogue(NamedTuple):
    manifest: Path
    groups: dict[str, list[tuple[str, set[str]]]]   # group -> [(query, the manifest paths that answer it)]


def words_catalogue(folder: str | Path, count: int = 400, seed: int = 35) -> QualityCatalogue:
    """Shape pictures sold as products: a manifest (path, title, sku, price) whose titles are a product line
    and a noun (`Zephyr mug`), never a colour or shape, so that
    - "words" queries (a product line) can be answered only by the titles,
    - "pictures" queries (`a purple cross`) only by the pictures,
    - "mixed" queries (`zephyr a red circle`) need both: the line has PLANTED items of that picture among
      its ~count/8 others, and the catalogue has ~count/40 more of that picture in other lines.
    Same seed, same files and answers."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    specs = [(random_spec(rng), str(rng.choice(PRODUCT_LINES))) for _ in range(count)]
    specs += [(random_spec(rng, colour, shape), line) for line, (colour, shape) in MIXED.items()
              for _ in range(PLANTED)]
    order = rng.permutation(len(specs))
    rows, picture, line_of = [], {}, {}
    folder.mkdir(parents=True, exist_ok=True)
    for n, i in enumerate(order):
        spec, line = specs[int(i)]
        name = f"{n:05d}.{'jpg' if spec.image_format == 'JPEG' else 'png'}"
        (folder / name).write_bytes(encode(render(spec, rng), spec.image_format, rng))
        rows.append({"path": name, "title": f"{line.title()} {rng.choice(PRODUCT_NOUNS)}",
                     "sku": f"{line[:2].upper()}-{int(rng.integers(1000, 10000))}",
                     "price": round(float(rng.uniform(5, 80)), 2)})
        picture[name], line_of[name] = (spec.colour, spec.shape), line
    groups = {
        "words": [(line, {p for p in line_of if line_of[p] == line}) for line in PRODUCT_LINES if line not in MIXED],
        "pictures": [(query_text(c, s), {p for p in picture if picture[p] == (c, s)}) for c, s in PICTURES_ONLY],
        "mixed": [(f"{line} {query_text(c, s)}", {p for p in picture if picture[p] == (c, s) and line_of[p] == line})
                  for line, (c, s) in MIXED.items()],
    }
    return QualityCatalogue(_write_manifest(folder / "manifest.csv", rows), groups)


def precision_at(ranked: list[str], relevant: set[str], k: int = 10) -> float:
    """Share of the first k results that answer the query, out of the most that could (min(k, relevant))."""
    return sum(p in relevant for p in ranked[:k]) / max(1, min(k, len(relevant)))


def write_video(path: str | Path, scenes: Sequence[tuple[str, str, float]], size: tuple[int, int] = (160, 120),
                fps: int = 10, codec: str = "libx264", seed: int = 3, black_s: float = 0.0,
                metadata: dict[str, str] | None = None) -> Path:
    """A video of this world, made with PyAV (the `video` extra): each scene (colour, shape, seconds) one shape
    on a plain background, after `black_s` seconds of black; `metadata` goes into the container's tags."""
    import av
    rng = np.random.default_rng(seed)
    path = Path(path)
    frames = [(Image.new("RGB", size), black_s)] if black_s else []
    for colour, shape, seconds in scenes:
        bg = "white" if colour != "white" else "black"
        spec = ShapeSpec(colour, shape, "plain", bg, 0.6, size[0], size[1], "PNG")
        frames.append((render(spec, rng), seconds))
    with av.open(str(path), mode="w") as container:
        container.metadata.update(metadata or {})
        stream: Any = container.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for image, seconds in frames:
            frame = av.VideoFrame.from_image(image)
            for _ in range(round(seconds * fps)):
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
