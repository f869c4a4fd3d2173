"""CLIP model wrapper: one factory, like open_clip's, and batched L2-normalized encoders."""
from __future__ import annotations

import functools
import os
import re
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable
from urllib.parse import urlparse

import numpy as np
import pillow_heif
from PIL import Image

from clipsearch.errors import ModelError

# The formats clipsearch reads, and the only ones Pillow is let to open: an EPS, PDF, PSD ... (uploaded, or
# named .jpg in a folder) is "not an image" and never reaches a decoder nobody asked for (EPS: Ghostscript).
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF")
FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP, TIFF or HEIC/HEIF"

BUNDLED_MODEL_DIR = Path(__file__).parent / "bundled_model"
BUNDLED_MODEL = f"local-dir:{BUNDLED_MODEL_DIR}"
BUNDLED_NAME = "bundled"   # what --model calls it (e.g. to re-embed with it again)
BUNDLED_LABEL = "clipsearch-shapes"
# Said wherever a user meets the bundled model (load, search, label): what it knows, and the way out.
BUNDLED_NOTE = ("note: the bundled model knows only coloured shapes (8 colours x 5 shapes, in English and Spanish); "
                "for photos use a real CLIP model: --model ViT-B-32 --pretrained laion2b_s34b_b79k (downloaded "
                "once), or --pretrained /path/to/open_clip_model.safetensors offline")
RANDOM_WEIGHTS = "random"
_TORCHVISION_OPS = None


def import_open_clip() -> Any:
    """Import open_clip, working around a CUDA-built torchvision beside a CPU torch.

    open_clip imports torchvision, whose CUDA wheel fails on a CPU-only torch
    with "operator torchvision::nms does not exist". open_clip never calls
    those ops, so declaring their schemas is enough to let the import finish.
    """
    import torch
    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
        global _TORCHVISION_OPS
        _TORCHVISION_OPS = torch.library.Library("torchvision", "DEF")  # definitions live as long as this object
        for op in ("nms", "qnms"):
            _TORCHVISION_OPS.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]  # drop the half-imported package before importing it again
        import torchvision  # noqa: F401
    import open_clip
    return open_clip


@runtime_checkable
class ImageTextModel(Protocol):
    """What clipsearch needs of a model: every family (open_clip's CLIPs, the bundled model, a registered
    one) provides this, and nothing else is asked of it.

    `prepare` returns a picklable function from a decoded PIL image to what `encode_prepared` takes; the
    loader runs it in its worker processes (Pillow work only: resize, crop), so it must not touch the
    model. Vectors are float32, L2-normalized, `dim` wide."""

    label: str          # the name its vectors are stored under (model_label)
    dim: int
    logit_scale: float  # the softmax temperature of zero-shot labels

    @property
    def image_size(self) -> int:   # the side the model sees: the loader decodes large JPEGs at a reduced scale
        ...

    def encode_texts(self, texts: list[str]) -> np.ndarray: ...

    def encode_images(self, images: list[Image.Image]) -> np.ndarray: ...

    def prepare(self) -> Callable[[Image.Image], Any]: ...

    def encode_prepared(self, prepared: list[Any]) -> np.ndarray: ...


class ClipModel:
    """A CLIP model with its image preprocessing and tokenizer.

    `name` and `pretrained` mean what they mean to
    `open_clip.create_model_and_transforms`: a built-in architecture with a
    tag or a local weights file, or `local-dir:PATH` / `hf-hub:ORG/REPO`.
    A built-in architecture without weights has random ones, which search
    nothing: that takes `pretrained="random"`, said on purpose.
    """

    def __init__(self, name: str | None = None, pretrained: str | None = None, device: str | None = None,
                 threads: int | None = None):
        self.name = name if name and name != BUNDLED_NAME else BUNDLED_MODEL
        if self.name == BUNDLED_MODEL and pretrained:
            raise ModelError("the bundled model has its own weights: leave out --pretrained")
        self.pretrained = pretrained or None
        if self.pretrained == RANDOM_WEIGHTS:
            self.pretrained = None
        elif self.pretrained is None and not self.name.startswith(("local-dir:", "hf-hub:")):
            raise ModelError(f"model {self.name!r} needs weights: --pretrained TAG or FILE "
                             f"(--pretrained {RANDOM_WEIGHTS} for random weights, which only tests speed)")
        import torch
        open_clip = import_open_clip()
        known = open_clip.list_models()
        if not self.name.startswith(("local-dir:", "hf-hub:")) and self.name not in known:
            examples = ", ".join(m for m in ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-SO400M-14-SigLIP") if m in known)
            raise ModelError(f"unknown model {self.name!r}: open_clip's names ({examples}, ...; all of them: "
                             "python -c 'import open_clip; print(open_clip.list_models())'), hf-hub:ORG/REPO, "
                             "local-dir:PATH, or 'bundled'")
        if self.pretrained and not self.name.startswith(("local-dir:", "hf-hub:")):
            _check_weights_reachable(open_clip, self.name, self.pretrained)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if threads:
            torch.set_num_threads(threads)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.name, pretrained=self.pretrained, device=self.device)
            self.tokenizer = open_clip.get_tokenizer(self.name)
        except (RuntimeError, ValueError, FileNotFoundError, OSError) as exc:
            raise ModelError(f"cannot load model {self.name!r} (--pretrained {pretrained}): {exc}") from exc
        self.model = model.eval()
        self.preprocess = preprocess
        self.label = model_label(self.name, self.pretrained)
        self.dim = int(model.text_projection.shape[1]) if hasattr(model, "text_projection") and \
            model.text_projection is not None else int(self.encode_texts(["x"]).shape[1])
        self.logit_scale = float(model.logit_scale.detach().exp()) if hasattr(model, "logit_scale") else 100.0

    def image_tensor(self, image: Image.Image) -> Any:
        """Preprocess one decoded image into the model's input tensor."""
        return self.preprocess(image.convert("RGB"))

    def _split_preprocess(self) -> tuple[Callable, Callable]:
        """The preprocessing as (PIL part, tensor part): the steps before torchvision's ToTensor, and from it."""
        from torchvision.transforms import Compose, ToTensor
        steps = list(self.preprocess.transforms)
        cut = next(i for i, t in enumerate(steps) if isinstance(t, ToTensor))
        return Compose(steps[:cut]), Compose(steps[cut:])

    def prepare(self) -> Callable[[Image.Image], Any]:
        """The PIL part of the preprocessing (resize, crop): run in the loader's workers, which never touch torch."""
        return self._split_preprocess()[0]

    def encode_prepared(self, prepared: list[Any]) -> np.ndarray:
        """Encode images that went through `prepare`: the tensor part (to tensor, normalize) runs here."""
        import torch
        to_tensor = self._split_preprocess()[1]
        return self.encode_tensors(torch.stack([to_tensor(p) for p in prepared]))

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def encode_tensors(self, batch: Any) -> np.ndarray:
        """Encode a stacked batch of preprocessed images."""
        import torch
        with torch.inference_mode():
            feats = self.model.encode_image(batch.to(self.device), normalize=True)
        return feats.float().cpu().numpy()

    def encode_images(self, images: list[Image.Image], batch_size: int = 64) -> np.ndarray:
        import torch
        out = [self.encode_tensors(torch.stack([self.image_tensor(im) for im in images[i:i + batch_size]]))
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def encode_texts(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        import torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[i:i + batch_size]).to(self.device)
                out.append(self.model.encode_text(tokens, normalize=True).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def _check_weights_reachable(open_clip: Any, name: str, tag: str) -> None:
    """A pretrained tag's weights come from the network unless cached. Not cached and their host out of
    reach: fail now, saying both ways out, rather than after open_clip's retries (about a minute offline)."""
    if Path(tag).expanduser().is_file():
        return
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg or "file" in cfg:
        return   # an unknown tag: open_clip's own error names the known ones
    if cfg.get("hf_hub"):
        from huggingface_hub import constants, try_to_load_from_cache
        repo, filename = os.path.split(cfg["hf_hub"])
        names = {filename or "open_clip_pytorch_model.bin", "open_clip_model.safetensors",
                 (filename or "open_clip_pytorch_model.bin").rsplit(".", 1)[0] + ".safetensors"}
        if any(isinstance(try_to_load_from_cache(repo, f), str) for f in names):
            return
        host, cache, page = constants.ENDPOINT, constants.HF_HUB_CACHE, f"{constants.ENDPOINT}/{repo}"
        offline = bool(constants.HF_HUB_OFFLINE)
    else:
        cached = Path("~/.cache/clip").expanduser() / os.path.basename(cfg.get("url", ""))
        if cached.is_file():
            return
        host, cache, page, offline = cfg.get("url", ""), str(cached.parent), cfg.get("url", ""), False
    address = urlparse(host)
    if not offline:
        try:
            socket.create_connection((address.hostname or "", address.port or
                                      (443 if address.scheme == "https" else 80)), timeout=3).close()
            return
        except OSError:
            pass
    raise ModelError(f"the weights of {name} ({tag}) are not in the cache ({cache}) and {address.hostname} cannot "
                     f"be reached. Online, --pretrained {tag} downloads them once into that cache; offline, "
                     f"download the weights file elsewhere ({page}) and pass --pretrained /path/to/that/file")


def model_label(name: str | None, pretrained: str | None) -> str:
    """The name a model's vectors are stored under. The bundled model is named by its folder, which differs
    per checkout; it gets a stable name."""
    if not name or name in (BUNDLED_MODEL, BUNDLED_NAME):
        return BUNDLED_LABEL
    return f"{name}:{Path(pretrained).name if pretrained and pretrained != RANDOM_WEIGHTS else 'random'}"


class LazyModel:
    """Loads `create_model(name, pretrained)` once, on the first call, safely from many threads."""

    def __init__(self, name: str | None = None, pretrained: str | None = None):
        self.name, self.pretrained = name, pretrained
        self.label = model_label(name, pretrained)   # known before loading
        self._model: ImageTextModel | None = None
        self._lock = threading.Lock()

    def __call__(self) -> ImageTextModel:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = create_model(self.name, self.pretrained)
        return self._model


ModelSource = ImageTextModel | Callable[[], ImageTextModel] | None
# Model families by name: a model name "FAMILY:REST" is made by the family registered as FAMILY; any other
# name is open_clip's (its own prefixes hf-hub: and local-dir: included); no name is the bundled model.
Family = Callable[[str, str | None], ImageTextModel]
FAMILIES: dict[str, Family] = {}


def register_family(family: str, factory: Family) -> None:
    """Make `--model FAMILY:NAME` (or CLIPSEARCH_MODEL) create its models with factory(name, pretrained)."""
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", family) or family in ("hf-hub", "local-dir"):
        raise ValueError(f"a model family is a lower-case word, not open_clip's prefixes: {family!r}")
    FAMILIES[family] = factory


def create_model(name: str | None = None, pretrained: str | None = None) -> ImageTextModel:
    """The one factory: the bundled model, a registered family's model, or an open_clip model."""
    family = (name or "").split(":", 1)[0]
    if family in FAMILIES:
        model = FAMILIES[family](name or "", pretrained)
        model.label = model_label(name, pretrained)   # one naming rule for every family
        for attribute, value in (("name", name), ("pretrained", pretrained)):   # how to make it again (recorded
            setattr(model, attribute, value)                                   # in the store)
        return model
    return ClipModel(name, pretrained)


def model_loader(model: ModelSource, name: str | None = None, pretrained: str | None = None
                 ) -> Callable[[], ImageTextModel]:
    """A function giving the model: `model` itself if it is one, a loader as it is, else a LazyModel."""
    if isinstance(model, ImageTextModel):
        return lambda: model
    if model is not None:
        return model
    return LazyModel(name, pretrained)


def open_image(source: str | bytes | bytearray | BinaryIO, min_size: int | None = None) -> Image.Image:
    """Decode an image file (path, file object or bytes) to RGB; see `decode`."""
    import io
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    return decode(read_image(source), min_size)


@functools.cache
def _register_heif() -> None:
    """HEIC/HEIF photos from phones open like any other format: Pillow learns the format once, when the
    first image is read (not when clipsearch is imported)."""
    pillow_heif.register_heif_opener()


def read_image(source: str | BinaryIO) -> Image.Image:
    """Open an image file (not decoded yet) of one of IMAGE_FORMATS; UnidentifiedImageError for any other."""
    _register_heif()
    return Image.open(source, formats=IMAGE_FORMATS)


def decode(image: Image.Image, min_size: int | None = None) -> Image.Image:
    """Load an opened image as RGB.

    With `min_size`, a JPEG is decoded at the smallest DCT scale that still
    gives at least that many pixels per side (PIL's draft mode): the model
    resizes to its input size anyway, and this makes decoding several times
    faster. Raises PIL/OS errors for files that are not images.
    """
    if min_size and image.format == "JPEG":
        image.draft("RGB", (min_size, min_size))
    image.load()
    return image.convert("RGB")
