"""open_clip's models: a built-in architecture with its weights, hf-hub:ORG/REPO, or local-dir:PATH (the
bundled model is one), loaded through open_clip.create_model_and_transforms; batched L2-normalized encoders."""
from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from clipsearch.errors import ModelError
from clipsearch.models.bundled import BUNDLED_MODEL, BUNDLED_NAME
from clipsearch.models.model import RANDOM_WEIGHTS, model_label

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
