"""Train the testbed GAN and its feature network (reproduces the shipped files).

    python -m bridges.builtin.train_testbed --steps 6000 --seed 0 --out bridges/builtin/weights

Data: ``--images`` testbed images (:mod:`.testbed`, rendered once with
``seed``), scaled to ``[-1, 1]``, NCHW.

Objective (as :mod:`.train` for the digits): the non-saturating GAN loss with
lazy R1 on real images (Mescheder et al. 2018), Adam ``betas = (0, 0.99)``,
the mapping at ``0.1 x`` the learning rate, and an exponential moving average
of the generator (``ema``) as the shipped model, whose BatchNorm statistics are
re-estimated at the end over fresh latents. ``torch.use_deterministic_algorithms``
and ``--threads`` (default 1) make a run repeatable on one machine.

The feature network (``--feature-epochs``, 0 skips it) is a small CNN
(:mod:`jaxfactor.metrics.classifier`, Flax + optax) trained on fresh testbed
images to predict the factors (the shape one-hot, the others scaled to
``[0, 1]``, as sigmoid outputs); its penultimate layer is the in-domain FID
feature extractor of the demo.

Writes into ``--out``: ``testbed_gan.npz`` (float16 weights, no pickle),
``testbed_gan.json`` (provenance and training time), ``testbed_gan_samples.png``
(samples beside real images), ``testbed_features.npz`` and ``testbed_features.json``.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from jaxfactor._io import atomic_write, atomic_write_text

from . import testbed
from .testbed_gan import (
    TESTBED_CONFIG,
    TestbedDiscriminator,
    TestbedGenerator,
    default_testbed_path,
    save_testbed_generator,
)
from .train import _recalibrate_batchnorm, _update_ema, gan_step

__all__ = ["training_images", "feature_targets", "train_testbed", "train_features",
           "color_grid", "main"]


def training_images(n: int, seed: int = 0) -> np.ndarray:
    """``n`` testbed images as the GAN sees them: ``(n, 3, 32, 32)`` float32 in ``[-1, 1]``."""
    images, _ = testbed.testbed_images(n, seed)
    return np.ascontiguousarray(np.moveaxis(images, -1, 1) * 2.0 - 1.0, dtype=np.float32)


def feature_targets(factors: testbed.Factors) -> np.ndarray:
    """Factors ``(N, 7)`` -> targets ``(N, 9)`` in ``[0, 1]``: shape one-hot, then the
    six continuous factors scaled by their :data:`.testbed.FACTOR_RANGES`."""
    v = np.asarray(factors.values, np.float64)
    onehot = np.eye(len(testbed.SHAPES))[v[:, 0].astype(int)]
    cols = [(v[:, j] - lo) / (hi - lo) for j, (lo, hi) in
            ((j, testbed.FACTOR_RANGES[name]) for j, name in enumerate(testbed.FACTOR_NAMES) if j)]
    return np.concatenate([onehot, np.clip(np.stack(cols, axis=1), 0, 1)], axis=1).astype(np.float32)


def color_grid(images: np.ndarray, nrow: int = 10, scale: int = 3) -> np.ndarray:
    """Tile ``(N, 3, H, W)`` images in ``[-1, 1]`` into a ``uint8`` RGB grid, nearest-neighbour upscaled."""
    n, _, h, w = images.shape
    rows = -(-n // nrow)
    grid = np.full((rows * (h + 1) + 1, nrow * (w + 1) + 1, 3), 255, np.uint8)
    pix = np.clip((np.moveaxis(images, 1, -1) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = pix[i]
    return grid.repeat(scale, axis=0).repeat(scale, axis=1)


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    image = Image.fromarray(array)
    atomic_write(path, lambda f: image.save(f, format="PNG"), suffix=".png", fsync=False)


def train_testbed(steps: int = 6000, seed: int = 0, n_images: int = 20000, batch_size: int = 32,
                  lr: float = 2e-3, mapping_lr_mult: float = 0.1, r1_gamma: float = 0.2,
                  r1_every: int = 4, ema: float = 0.998, bn_batches: int = 20,
                  threads: int = 1, log_every: int = 250, max_seconds: float | None = None,
                  preview=None, progress=print) -> tuple[TestbedGenerator, dict]:
    """Train the testbed GAN; return ``(ema generator in eval mode, stats)``.

    Args:
      steps: optimisation steps (one D and one G update each).
      seed: all randomness (data, initialisation, latents).
      n_images: size of the pre-rendered training set.
      batch_size, lr, mapping_lr_mult, r1_gamma, r1_every, ema, bn_batches:
        the optimisation (module docstring).
      threads: torch intra-op threads.
      log_every: steps between log lines.
      max_seconds: stop early when the wall time exceeds this (the steps done
        are recorded).
      preview: optional ``callable(G_ema, step)`` run at every log line
        (e.g. to write a sample grid while training).
    """
    previous = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        return _train(steps, seed, n_images, batch_size, lr, mapping_lr_mult, r1_gamma, r1_every,
                      ema, bn_batches, log_every, max_seconds, preview, progress)
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1])


def _train(steps, seed, n_images, batch_size, lr, mapping_lr_mult, r1_gamma, r1_every, ema,
           bn_batches, log_every, max_seconds, preview, progress):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    data = torch.from_numpy(training_images(n_images, seed))
    render_seconds = time.perf_counter() - t0

    G = TestbedGenerator(**TESTBED_CONFIG)
    D = TestbedDiscriminator()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    betas = (0.0, 0.99)
    opt_g = torch.optim.Adam([
        {"params": G.mapping.parameters(), "lr": lr * mapping_lr_mult},
        {"params": G.synthesis.parameters()},
    ], lr=lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)
    start = time.perf_counter()
    d_run = g_run = 0.0
    step = 0
    for step in range(1, steps + 1):
        real = data[torch.randint(0, n_images, (batch_size,), generator=gen)]
        d_loss, g_loss = gan_step(G, D, opt_g, opt_d, real, gen, do_r1=r1_gamma > 0 and step % r1_every == 0,
                                  r1_weight=0.5 * r1_gamma * r1_every)
        _update_ema(G_ema, G, ema if step >= 200 else 0.0)
        d_run = 0.98 * d_run + 0.02 * d_loss.item()
        g_run = 0.98 * g_run + 0.02 * g_loss.item()
        elapsed = time.perf_counter() - start
        if progress is not None and (step % log_every == 0 or step == steps):
            progress(f"step {step}/{steps}  D {d_run:.3f}  G {g_run:.3f}  {elapsed:.0f}s")
        if preview is not None and step % log_every == 0:
            preview(G_ema, step)
        if max_seconds is not None and elapsed > max_seconds:
            if progress is not None:
                progress(f"stopping at step {step}: {elapsed:.0f}s > --max-seconds {max_seconds:g}")
            break
    _recalibrate_batchnorm(G_ema, bn_batches, 256, gen)
    return G_ema, {"steps": step, "train_seconds": time.perf_counter() - start,
                   "render_seconds": render_seconds, "d_loss": d_run, "g_loss": g_run}


def train_features(epochs: int = 3, seed: int = 0, n_images: int = 4000):
    """Train the testbed feature network; return ``(classifier, stats)``.

    A :class:`jaxfactor.metrics.classifier.AttributeClassifier` on
    ``(N, 32, 32, 3)`` images in ``[-1, 1]`` predicting :func:`feature_targets`;
    ``stats`` holds the held-out shape accuracy and the mean absolute error of
    each continuous factor (in its own unit) on 2000 fresh images.
    """
    from jaxfactor.metrics.classifier import train_attribute_classifier

    images, factors = testbed.testbed_images(n_images, seed + 1000)
    start = time.perf_counter()
    result = train_attribute_classifier(images * 2.0 - 1.0, feature_targets(factors),
                                        conv_features=(16, 32), hidden=64, epochs=epochs,
                                        seed=seed)
    seconds = time.perf_counter() - start
    test_images, test_factors = testbed.testbed_images(2000, seed + 2000)
    pred = np.asarray(result.classifier.predict(test_images * 2.0 - 1.0), np.float64)
    truth = test_factors.values
    stats = {"epochs": epochs, "n_train": n_images, "train_seconds": round(seconds, 1),
             "shape_accuracy": round(float(np.mean(pred[:, :3].argmax(1) == truth[:, 0])), 4)}
    for k, name in enumerate(testbed.FACTOR_NAMES[1:]):
        lo, hi = testbed.FACTOR_RANGES[name]
        stats[f"mae_{name}"] = round(float(np.mean(np.abs(lo + pred[:, 3 + k] * (hi - lo)
                                                          - truth[:, 1 + k]))), 4)
    return result.classifier, stats


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bridges.builtin.train_testbed",
        description="Train the testbed GAN (32x32 RGB, 16384-feature init layer) and its "
                    "feature network; reproduces the shipped files.",
        epilog="example: python -m bridges.builtin.train_testbed --steps 6000 --seed 0")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--out", type=Path, default=default_testbed_path().parent)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=20000, help="pre-rendered training images")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-every", type=int, default=250)
    p.add_argument("--bn-batches", type=int, default=20,
                   help="batches of 256 fresh latents that re-estimate BatchNorm at the end")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop the GAN training after this much wall time")
    p.add_argument("--preview", action="store_true",
                   help="write testbed_gan_preview.png (EMA samples) at every log line")
    p.add_argument("--feature-images", type=int, default=4000,
                   help="rendered training images of the feature network")
    p.add_argument("--feature-epochs", type=int, default=3,
                   help="epochs of the feature network; 0 skips it")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.steps < 0 or args.feature_epochs < 0 or args.batch_size < 2 or args.images < 2:
        print("error: --steps and --feature-epochs must be >= 0, --batch-size and --images >= 2",
              file=sys.stderr)
        return 2
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    common = {
        "seed": args.seed, "torch": torch.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "machine": platform.machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m bridges.builtin.train_testbed " + " ".join(
            sys.argv[1:] if argv is None else argv)}
    def preview(G, step):
        with torch.no_grad():
            z = torch.randn(50, G.z_dim, generator=torch.Generator().manual_seed(12345))
            _save_png(color_grid(G(z).numpy()), out / "testbed_gan_preview.png")

    if args.steps > 0:
        G, stats = train_testbed(steps=args.steps, seed=args.seed, n_images=args.images,
                                 batch_size=args.batch_size, lr=args.lr, threads=args.threads,
                                 log_every=args.log_every, max_seconds=args.max_seconds,
                                 bn_batches=max(args.bn_batches, 1),
                                 preview=preview if args.preview else None)
        provenance = {"steps_requested": args.steps, "steps": stats["steps"],
                      "batch_size": args.batch_size, "lr": args.lr, "images": args.images,
                      "threads": args.threads, "bn_batches": args.bn_batches,
                      "train_seconds": round(stats["train_seconds"], 1),
                      "render_seconds": round(stats["render_seconds"], 1),
                      "final_d_loss": round(stats["d_loss"], 4),
                      "final_g_loss": round(stats["g_loss"], 4),
                      "n_parameters": sum(p.numel() for p in G.parameters()),
                      "config": G.config, **common}
        save_testbed_generator(G, out / "testbed_gan.npz", seed=args.seed, steps=stats["steps"])
        atomic_write_text(out / "testbed_gan.json", json.dumps(provenance, indent=2) + "\n")
        with torch.no_grad():
            z = torch.randn(50, G.z_dim, generator=torch.Generator().manual_seed(12345))
            fake = G(z).numpy()
        real = training_images(50, args.seed + 7)
        _save_png(np.concatenate([color_grid(fake), color_grid(real)], axis=0),
                  out / "testbed_gan_samples.png")
        print(f"wrote {out / 'testbed_gan.npz'} ({stats['steps']} steps, "
              f"{stats['train_seconds']:.0f}s, {provenance['n_parameters']} parameters)")
    if args.feature_epochs > 0:
        import jax

        classifier, stats = train_features(args.feature_epochs, args.seed, args.feature_images)
        written = classifier.save(out / "testbed_features.npz")
        provenance = {**stats, "config": json.loads(classifier.config.to_json()),
                      "jax": jax.__version__, **common}
        atomic_write_text(out / "testbed_features.json", json.dumps(provenance, indent=2) + "\n")
        print(f"wrote {written} (held-out shape accuracy {stats['shape_accuracy']:.3f}, "
              f"{stats['train_seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
