"""Train the bundled CLIP model from scratch on generated shape images.

    python scripts/train_bundled_model.py [--steps N] [--out clipsearch/models/bundled_model]

Reproducible: fixed seeds for data, initialisation and batches; runs on
2 CPU cores in about 25 minutes. Writes the weights (float16 safetensors)
and metrics.json with the held-out retrieval figures next to the config.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clipsearch.images.decode import open_image
from clipsearch.models.bundled import BUNDLED_MODEL_DIR
from clipsearch.models.clip import import_open_clip
from clipsearch.service import shapes

TRAIN_SEED, EVAL_SEED = 1, 12345
_preprocess = None


def _init_worker(config: dict):
    global _preprocess
    open_clip = import_open_clip()
    pp = config["preprocess_cfg"]
    size = config["model_cfg"]["vision_cfg"]["image_size"]
    _preprocess = open_clip.image_transform(size, is_train=False, resize_mode=pp["resize_mode"],
                                            interpolation=pp["interpolation"])


def _make_examples(args):
    """Render `count` images from `seed`: preprocessed pixels, captions and attributes."""
    seed, count, size = args
    rng = np.random.default_rng(seed)
    pixels, examples = [], []
    for _ in range(count):
        spec, data = shapes.make_image(rng)
        pixels.append(_preprocess(open_image(data, size)).numpy().astype(np.float16))
        caps = [shapes.caption(spec, rng, lang) for lang in ("en", "es")]
        examples.append({"image": {"colour": spec.colour, "shape": spec.shape, "bg_colour": spec.bg_colour},
                         "captions": caps})
    return np.stack(pixels), examples


def make_dataset(config: dict, count: int, seed: int, workers: int = 2):
    size = config["model_cfg"]["vision_cfg"]["image_size"]
    chunk = 500
    jobs = [(seed * 1_000_003 + i, min(chunk, count - i * chunk), size) for i in range(math.ceil(count / chunk))]
    with Pool(workers, initializer=_init_worker, initargs=(config,)) as pool:
        parts = pool.map(_make_examples, jobs)
    return np.concatenate([p for p, _ in parts]), [e for _, ex in parts for e in ex]


def agreement(image_attrs: list[dict], caption_attrs: list[dict]):
    """1 where the image has every attribute the caption asserts."""
    import torch
    m = np.ones((len(image_attrs), len(caption_attrs)), np.float32)
    for key in ("colour", "shape", "bg_colour"):
        img = np.array([a[key] or "" for a in image_attrs])
        for j, cap in enumerate(caption_attrs):
            if key in cap:
                m[:, j] *= img == cap[key]
    return torch.from_numpy(m)


def evaluate(model, tokenizer, config: dict, per_class: int = 20) -> dict:
    """Held-out retrieval figures on a balanced set drawn from a different seed."""
    import torch
    rng = np.random.default_rng(EVAL_SEED)
    specs = shapes.balanced_specs(rng, per_class)
    _init_worker(config)
    size = config["model_cfg"]["vision_cfg"]["image_size"]
    x = torch.from_numpy(np.stack([
        _preprocess(open_image(shapes.encode(shapes.render(s, rng), s.image_format, rng), size)).numpy()
        for s in specs]))
    model.eval()
    with torch.inference_mode():
        img = model.encode_image(x, normalize=True).numpy()
        labels = np.array([f"{s.colour} {s.shape}" for s in specs])
        figures = {"eval_images": len(specs), "eval_seed": EVAL_SEED}
        for lang in ("en", "es"):
            classes = [(c, s) for c in shapes.COLOURS for s in shapes.SHAPES]
            txt = model.encode_text(tokenizer([shapes.query_text(c, s, lang) for c, s in classes]),
                                    normalize=True).numpy()
            top10 = np.argsort(-(txt @ img.T), axis=1)[:, :10]
            figures[f"text_precision_at_10_{lang}"] = float(np.mean(
                [np.mean(labels[top10[i]] == f"{c} {s}") for i, (c, s) in enumerate(classes)]))
        sims = img @ img.T
        np.fill_diagonal(sims, -np.inf)
        top5 = np.argsort(-sims, axis=1)[:, :5]
        figures["image_top5_same_class"] = float(np.mean(labels[top5] == labels[:, None]))
    model.train()
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=60000, help="training images generated once")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=BUNDLED_MODEL_DIR)
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file
    open_clip = import_open_clip()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    config = json.loads((args.out / "open_clip_config.json").read_text())
    model = open_clip.model.CLIP(**config["model_cfg"])
    tokenizer = open_clip.get_tokenizer("local-dir:" + str(args.out))

    t0 = time.time()
    pixels, examples = make_dataset(config, args.images, TRAIN_SEED)
    print(f"generated {len(examples)} training images in {time.time() - t0:.0f}s", flush=True)
    pixels = torch.from_numpy(pixels)
    tokens = {lang: tokenizer([ex["captions"][k][0] for ex in examples]) for k, lang in enumerate(("en", "es"))}

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))
    warmup = 100
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 *
                                              (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    gen = torch.Generator().manual_seed(2)
    model.train()
    t0 = time.time()
    for step in range(args.steps):
        idx = torch.randint(0, len(examples), (args.batch_size,), generator=gen)
        lang = torch.randint(0, 2, (args.batch_size,), generator=gen)
        text = torch.where(lang[:, None] == 0, tokens["en"][idx], tokens["es"][idx])
        cap_attrs = [examples[i]["captions"][lang_i][1] for i, lang_i in zip(idx.tolist(), lang.tolist(), strict=True)]
        target = agreement([examples[i]["image"] for i in idx.tolist()], cap_attrs)
        img_f = model.encode_image(pixels[idx].float(), normalize=True)
        txt_f = model.encode_text(text, normalize=True)
        logits = model.logit_scale.exp() * img_f @ txt_f.T
        # Every image a caption agrees with is a positive, so soft targets over each row and column.
        loss = (F.cross_entropy(logits, target / target.sum(1, keepdim=True)) +
                F.cross_entropy(logits.T, (target / target.sum(0, keepdim=True)).T)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d} loss {loss.item():.3f} scale {model.logit_scale.exp().item():.1f} "
                  f"{time.time() - t0:.0f}s", flush=True)
    train_s = time.time() - t0

    figures = evaluate(model, tokenizer, config)
    figures.update(steps=args.steps, batch_size=args.batch_size, train_images=args.images,
                   train_seconds=round(train_s), threads=args.threads)
    print(json.dumps(figures, indent=2))
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out / "open_clip_model.safetensors"))
    (args.out / "metrics.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
