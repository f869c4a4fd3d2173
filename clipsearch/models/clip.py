"""open_clip's models: a built-in architecture with its weights, hf-hub:ORG/REPO, or local-dir:PATH (the
bundled model is one), loaded through open_clip.create_model_and_transforms; batched L2-normalized encoders."""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from clipsearch.errors import ModelError
from clipsearch.models.bundled import BUNDLED_MODEL, BUNDLED_NAME
from clipsearch.models.model import RANDOM_WEIGHTS, model_label

_TORCHVISION_OPS = None
# The weights files open_clip looks for in a folder, in its order (open_clip.factory._find_checkpoint_in_dir).
WEIGHTS_NAMES = ["open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
                 "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "pytorch_model.pth",
                 "model.pth"]


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
            _check_weights_given(open_clip, self.name, self.pretrained)
            _check_weights_reachable(open_clip, self.name, self.pretrained)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if threads:
            torch.set_num_threads(threads)
        try:
            with _open_clip_quiet(open_clip):
                model, _, preprocess = open_clip.create_model_and_transforms(
                    self.name, pretrained=self.pretrained, device=self.device,
                    require_pretrained=self.pretrained is not None or self.name.startswith(("local-dir:", "hf-hub:")))
                self.tokenizer = open_clip.get_tokenizer(self.name)
        except Exception as exc:   # a corrupt file, another model's weights, a text file: one line, no traceback
            raise ModelError(_weights_problem(open_clip, self.name, self.pretrained, exc)) from exc
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
        # Pixels made in this process (workers=0: a served folder's watcher) are numpy's read-only view of a
        # PIL image, which torch warns about on the console: a writable copy of those only.
        return self.encode_tensors(torch.stack([to_tensor(np.require(p, requirements="W") if isinstance(
            p, np.ndarray) else p) for p in prepared]))

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


@contextlib.contextmanager
def _open_clip_quiet(open_clip: Any) -> Iterator[None]:
    """open_clip reports through the root logger (`ERROR:root:` and `WARNING:root:` lines on the console); what
    goes wrong clipsearch says in its own one line. Drop open_clip's records while it loads; others pass."""
    root, where = logging.getLogger(), os.path.dirname(open_clip.__file__)

    def others(record: logging.LogRecord) -> bool:
        return not record.pathname.startswith(where)

    # logging.warning() with no handler on the root logger installs a console handler for good: one that
    # does nothing stands in while open_clip runs.
    stand_in = logging.NullHandler() if not root.handlers else None
    root.addFilter(others)
    if stand_in:
        root.addHandler(stand_in)
    try:
        yield
    finally:
        root.removeFilter(others)
        if stand_in:
            root.removeHandler(stand_in)


def _check_weights_given(open_clip: Any, name: str, pretrained: str) -> None:
    """--pretrained is one of the model's tags or a weights file: say which it is not, before open_clip lists
    every tag on the console."""
    if open_clip.get_pretrained_cfg(name, pretrained):
        return
    path = Path(pretrained).expanduser()
    if path.is_file():
        return
    tags = open_clip.list_pretrained_tags_by_model(name)
    known = f"{name}'s tags: {', '.join(tags[:4])}{', ...' if len(tags) > 4 else ''}" if tags else \
        f"{name} has no tags"
    if path.is_dir():
        raise ModelError(f"{path}: a folder, not a weights file (a folder with open_clip_config.json is "
                         f"--model local-dir:{path}); --pretrained takes a file or one of {known}")
    raise ModelError(f"{path}: no such weights file, nor a tag of {name} ({known})")


def _weights_problem(open_clip: Any, name: str, pretrained: str | None, exc: Exception) -> str:
    """One line for a model that did not load: the weights file and what is wrong with it, where it is a file
    clipsearch can name."""
    said = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(":")
    if name.startswith("local-dir:"):
        folder = Path(name.removeprefix("local-dir:"))
        file = _local_weights(folder)
        if file is None and (folder / "open_clip_config.json").is_file():
            return f"{folder}: no weights file in it ({WEIGHTS_NAMES[0]} or {WEIGHTS_NAMES[2]})"
    else:
        file = Path(pretrained).expanduser() if pretrained and Path(pretrained).expanduser().is_file() else None
    if file is None or file.is_dir():
        where = f" (--pretrained {pretrained})" if pretrained else ""
        return f"cannot load model {name}{where}: {said}"
    if file.stat().st_size == 0:
        return f"{file}: an empty file, not weights"
    try:
        state = open_clip.factory.load_state_dict(str(file))
        if not isinstance(state, dict) or not state:
            raise ValueError("no tensors in it")
    except Exception as unread:
        why = (str(unread).strip().splitlines() or [type(unread).__name__])[0]
        return (f"{file}: not a weights file open_clip can read (corrupt, truncated or another format: "
                f"{type(unread).__name__}: {why}); {name} takes an open_clip .safetensors or .bin file")
    return (f"{file}: holds the weights of another model, not of {name} ({said}); use the file made for "
            f"{name}, or name the model those weights are for with --model")


def _local_weights(folder: Path) -> Path | None:
    """The weights file open_clip picks in a local-dir: folder (the same preference)."""
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) + sorted(folder.glob("*.pth"))
    preferred = [f for f in files if f.name in WEIGHTS_NAMES]
    return min(preferred, key=lambda f: WEIGHTS_NAMES.index(f.name)) if preferred else (files[0] if files else None)


def _check_weights_reachable(open_clip: Any, name: str, tag: str) -> None:
    """A pretrained tag's weights come from the network unless cached. Not cached and their host out of
    reach: fail now, saying both ways out, rather than after open_clip's retries (about a minute offline)."""
    if Path(tag).expanduser().is_file():
        return
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg or "file" in cfg:
        return   # a file, or a tag whose weights sit in a file open_clip names itself
    if cfg.get("hf_hub"):
        from huggingface_hub import constants, try_to_load_from_cache
        repo, filename = os.path.split(cfg["hf_hub"])
        names = {filename or "open_clip_pytorch_model.bin", "open_clip_model.safetensors",
                 (filename or "open_clip_pytorch_model.bin").rsplit(".", 1)[0] + ".safetensors"}
        if any(isinstance(try_to_load_from_cache(repo, f), str) for f in names):
            return
        # The file open_clip fetches first: the .safetensors beside a .bin (open_clip.pretrained).
        fetch = "open_clip_model.safetensors" if filename in ("", "open_clip_pytorch_model.bin") else \
            filename.rsplit(".", 1)[0] + ".safetensors" if filename.endswith((".bin", ".pth")) else filename
        host, cache = constants.ENDPOINT, constants.HF_HUB_CACHE
        url = f"{constants.ENDPOINT}/{repo}/resolve/main/{fetch}"
        put = f"put it in a folder here and pass --pretrained /path/to/{fetch}"
        offline = bool(constants.HF_HUB_OFFLINE)
    else:
        url = cfg.get("url", "")
        cached = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if cached.is_file():
            return
        host, cache, offline = url, str(cached.parent), False
        put = f"put it in {cache}/ (then --pretrained {tag} finds it) or pass --pretrained /path/to/{cached.name}"
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
                     f"fetch {url} on a machine with internet, {put}")
