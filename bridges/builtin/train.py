"""Train the built-in digits GAN and write its weights (reproduces the shipped file).

    python -m bridges.builtin.train --epochs 60 --out bridges/builtin/weights --seed 0

Data: ``sklearn.datasets.load_digits`` (1797 images, 8 x 8, values 0..16,
bundled with scikit-learn -- no download), scaled to ``[-1, 1]``.

Objective: the non-saturating GAN loss (Goodfellow et al. 2014),
``L_D = softplus(-D(x)) + softplus(D(G(z)))``, ``L_G = softplus(-D(G(z)))``,
with lazy R1 regularisation on real images (Mescheder et al. 2018; every
``r1_every`` steps, ``gamma / 2 * ||grad_x D(x)||^2 * r1_every``) and Adam
(``betas = (0, 0.99)``, StyleGAN2's). The shipped generator is an exponential
moving average of the trained one (``ema = 0.999``), whose BatchNorm statistics
are re-estimated at the end over ``bn_batches`` batches of fresh latents.

Determinism: ``torch.manual_seed(seed)``, a seeded ``torch.Generator`` for
shuffling and latents, ``torch.use_deterministic_algorithms(True)`` and
``torch.set_num_threads(threads)`` (default 1). CPU results are reproducible
for the same torch version, thread count and CPU; across machines they agree
only approximately (float summation order in the BLAS/conv kernels).

Writes into ``--out``: ``digits_gan.pt`` (generator, loadable with
``torch.load(weights_only=True)``), ``digits_gan.json`` (provenance: seed,
epochs, versions, date, training time) and ``digits_gan_samples.png`` (a grid
of 100 samples to look at). Unless ``--classifier-epochs 0``, also the digit
classifier (:mod:`jaxfactor.metrics.classifier`, Flax + optax; 10 sigmoid
outputs, one per digit, on ``(N, 8, 8, 1)`` images in ``[-1, 1]``; its
penultimate layer is the in-domain FID feature extractor):
``digits_classifier.npz`` and ``digits_classifier.json`` (held-out accuracy).
``--epochs 0`` trains the classifier only.
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
import torch.nn.functional as F

from jaxfactor._io import atomic_write, atomic_write_text

from .model import DEFAULT_CONFIG, Discriminator, Generator, default_weights_path, save_generator

__all__ = ["load_digits_images", "train", "train_classifier", "sample_grid", "main"]


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """The scikit-learn digits as ``((1797, 1, 8, 8) float32 in [-1, 1], (1797,) int64 labels)``.

    Pixel ``v`` in ``0..16`` becomes ``v / 8 - 1``; ink is high (white on black).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 8.0 - 1.0)[:, None]
    return images, digits.target.astype(np.int64)


def sample_grid(images: np.ndarray, nrow: int = 10, scale: int = 4) -> np.ndarray:
    """Tile ``(N, 1, H, W)`` images in ``[-1, 1]`` into a uint8 grid (1-pixel gaps), upscaled."""
    n, _, h, w = images.shape
    ncol = -(-n // nrow)
    grid = np.full((ncol * (h + 1) + 1, nrow * (w + 1) + 1), 64, np.uint8)
    pix = np.clip((images[:, 0] + 1) * 127.5, 0, 255).astype(np.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = pix[i]
    return np.kron(grid, np.ones((scale, scale), np.uint8))


def _save_png(array: np.ndarray, path: Path) -> None:
    from jaxfactor._extras import require

    image = require("PIL.Image", feature="bridges.builtin.train").fromarray(array)
    atomic_write(path, lambda f: image.save(f, format="PNG"), suffix=".png", fsync=False)


@torch.no_grad()
def _update_ema(ema: Generator, model: Generator, decay: float) -> None:
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def gan_step(G, D, opt_g, opt_d, real: torch.Tensor, gen: torch.Generator, *, do_r1: bool,
             r1_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the non-saturating GAN loss: the discriminator on ``real``
    (``(B, C, H, W)`` float32) against ``G``'s samples, with the lazy R1 penalty
    ``r1_weight ||grad D(real)||^2`` when ``do_r1``; then the generator through its
    mapping, whose running ``w_avg`` follows the batch's mean ``w``.

    Returns:
      ``(d_loss, g_loss)``, scalar tensors.
    """
    batch_size = real.shape[0]
    z = torch.randn(batch_size, G.z_dim, generator=gen)
    with torch.no_grad():
        fake = G(z)
    real.requires_grad_(do_r1)
    real_logits = D(real)
    d_loss = F.softplus(-real_logits).mean() + F.softplus(D(fake)).mean()
    if do_r1:
        (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
        d_loss = d_loss + r1_weight * grad.square().sum(dim=(1, 2, 3)).mean()
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    z = torch.randn(batch_size, G.z_dim, generator=gen)
    w = G.mapping(z)
    g_loss = F.softplus(-D(G.synthesis(G.broadcast(w)))).mean()
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    with torch.no_grad():
        G.mapping.w_avg.lerp_(w.detach().mean(dim=0), 0.005)
    return d_loss, g_loss


@torch.no_grad()
def _recalibrate_batchnorm(generator: Generator, batches: int, batch_size: int,
                           gen: torch.Generator) -> None:
    """Re-estimate BatchNorm running statistics as exact averages over fresh latents."""
    norms = [m for m in generator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                     # cumulative average
    generator.train()
    for _ in range(batches):
        generator(torch.randn(batch_size, generator.z_dim, generator=gen))
    for m in norms:
        m.momentum = 0.1
    generator.eval()


def train(epochs: int = 60, seed: int = 0, batch_size: int = 64, lr: float = 2e-3,
          mapping_lr_mult: float = 0.1, r1_gamma: float = 0.1, r1_every: int = 4,
          ema: float = 0.999, bn_batches: int = 50, max_batches: int | None = None,
          threads: int = 1, log_every: int = 25, progress=print) -> tuple[Generator, dict]:
    """Train the digits GAN; return ``(ema_generator in eval mode, stats dict)``.

    Args:
      epochs: passes over the 1797 images. seed: all randomness.
      batch_size: images per step (the last partial batch of an epoch is dropped).
      lr: Adam step for the synthesis net and D; the mapping net uses
        ``lr * mapping_lr_mult`` (StyleGAN's lower mapping rate).
      r1_gamma, r1_every: lazy R1 penalty weight and interval.
      ema: decay of the generator's moving average. bn_batches: batches used
        to re-estimate BatchNorm statistics at the end.
      max_batches: stop each epoch after this many steps, and re-estimate
        BatchNorm over at most this many batches (smoke tests).
      threads: torch intra-op threads. log_every: epochs between log lines.
    """
    previous = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        return _train(epochs, seed, batch_size, lr, mapping_lr_mult, r1_gamma, r1_every,
                      ema, bn_batches, max_batches, log_every, progress)
    finally:                               # leave the caller's torch settings as they were
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1])


def _train(epochs, seed, batch_size, lr, mapping_lr_mult, r1_gamma, r1_every, ema,
           bn_batches, max_batches, log_every, progress):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)

    images, _ = load_digits_images()
    data = torch.from_numpy(images)
    n = data.shape[0]

    G = Generator(**DEFAULT_CONFIG)
    D = Discriminator()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    betas = (0.0, 0.99)
    opt_g = torch.optim.Adam([
        {"params": G.mapping.parameters(), "lr": lr * mapping_lr_mult},
        {"params": G.synthesis.parameters()},
    ], lr=lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)

    start = time.perf_counter()
    step = 0
    stats = {"d_loss": float("nan"), "g_loss": float("nan")}
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        n_batches = n // batch_size
        if max_batches is not None:
            n_batches = min(n_batches, max_batches)
        d_sum = g_sum = 0.0
        for b in range(n_batches):
            real = data[order[b * batch_size:(b + 1) * batch_size]]
            d_loss, g_loss = gan_step(G, D, opt_g, opt_d, real, gen, do_r1=r1_gamma > 0 and step % r1_every == 0,
                                      r1_weight=0.5 * r1_gamma * r1_every)
            _update_ema(G_ema, G, ema if step >= 100 else 0.0)
            d_sum += d_loss.item()
            g_sum += g_loss.item()
            step += 1
        stats = {"d_loss": d_sum / max(n_batches, 1), "g_loss": g_sum / max(n_batches, 1)}
        if progress is not None and (epoch % log_every == 0 or epoch == epochs - 1):
            progress(f"epoch {epoch + 1}/{epochs}  D {stats['d_loss']:.3f}  "
                     f"G {stats['g_loss']:.3f}  {time.perf_counter() - start:.0f}s")
    if max_batches is not None:            # smoke runs: keep the re-estimation short too
        bn_batches = min(bn_batches, max_batches)
    _recalibrate_batchnorm(G_ema, bn_batches, 256, gen)
    stats.update(steps=step, train_seconds=time.perf_counter() - start)
    return G_ema, stats


def train_classifier(epochs: int = 30, seed: int = 0, test_fraction: float = 0.2):
    """Train the digit classifier (Flax + optax) on the digits; return ``(classifier, stats)``.

    Uses :func:`jaxfactor.metrics.classifier.train_attribute_classifier`: a
    small CNN with 10 sigmoid outputs (one per digit, one-hot targets) on
    ``(N, 8, 8, 1)`` images in ``[-1, 1]``, trained on a stratified
    ``1 - test_fraction`` split; ``stats`` holds the held-out accuracy
    (argmax of the 10 probabilities) and the training time.
    """
    from sklearn.model_selection import train_test_split

    from jaxfactor.metrics.classifier import train_attribute_classifier

    images, labels = load_digits_images()
    x = np.ascontiguousarray(images[:, 0, :, :, None])
    x_train, x_test, y_train, y_test = train_test_split(
        x, labels, test_size=test_fraction, random_state=seed, stratify=labels)
    start = time.perf_counter()
    result = train_attribute_classifier(x_train, np.eye(10, dtype=np.float32)[y_train],
                                        epochs=epochs, seed=seed)
    seconds = time.perf_counter() - start
    accuracy = float(np.mean(result.classifier.predict(x_test).argmax(axis=1) == y_test))
    return result.classifier, {"epochs": epochs, "test_accuracy": round(accuracy, 4),
                               "n_train": int(len(y_train)), "n_test": int(len(y_test)),
                               "final_loss": round(float(result.loss[-1]), 5),
                               "train_seconds": round(seconds, 1)}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bridges.builtin.train",
        description="Train the built-in 8x8 digits GAN (reproduces the shipped weights).",
        epilog="example: python -m bridges.builtin.train --epochs 60 --seed 0 "
               "--out bridges/builtin/weights")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--out", type=Path, default=default_weights_path().parent,
                   help="output directory (default: the package's weights directory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--r1-gamma", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: reproducible and fastest on a shared machine)")
    p.add_argument("--log-every", type=int, default=25, help="epochs between log lines")
    p.add_argument("--classifier-epochs", type=int, default=30,
                   help="also train the digit classifier (Flax + optax) for this many "
                        "epochs and write digits_classifier.npz; 0 skips it")
    p.add_argument("--max-batches", type=int, default=None,
                   help="cap steps per epoch (smoke tests)")
    return p


def _common_provenance(args, argv) -> dict:
    return {
        "seed": args.seed, "torch": torch.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "machine": platform.machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m bridges.builtin.train " + " ".join(
            sys.argv[1:] if argv is None else argv),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.epochs < 0 or args.classifier_epochs < 0 or args.batch_size < 2:
        print("error: --epochs and --classifier-epochs must be >= 0, --batch-size >= 2",
              file=sys.stderr)
        return 2
    if args.epochs == 0 and args.classifier_epochs == 0:
        print("error: nothing to do (--epochs 0 and --classifier-epochs 0)", file=sys.stderr)
        return 2
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.epochs > 0:
        G, stats = train(epochs=args.epochs, seed=args.seed, batch_size=args.batch_size,
                         lr=args.lr, r1_gamma=args.r1_gamma, max_batches=args.max_batches,
                         threads=args.threads, log_every=args.log_every)
        provenance = {
            "epochs": args.epochs, "batch_size": args.batch_size,
            "lr": args.lr, "r1_gamma": args.r1_gamma, "threads": args.threads,
            "max_batches": args.max_batches, "steps": stats["steps"],
            "train_seconds": round(stats["train_seconds"], 1),
            "final_d_loss": round(stats["d_loss"], 4), "final_g_loss": round(stats["g_loss"], 4),
            "n_parameters": sum(p.numel() for p in G.parameters()), "config": G.config,
            **_common_provenance(args, argv),
        }
        save_generator(G, out / "digits_gan.pt", seed=args.seed, epochs=args.epochs,
                       torch_version=torch.__version__)
        atomic_write_text(out / "digits_gan.json", json.dumps(provenance, indent=2) + "\n")
        with torch.no_grad():
            z = torch.randn(100, G.z_dim, generator=torch.Generator().manual_seed(12345))
            _save_png(sample_grid(G(z).numpy()), out / "digits_gan_samples.png")
        print(f"wrote {out / 'digits_gan.pt'} ({stats['train_seconds']:.0f}s, "
              f"{provenance['n_parameters']} generator parameters)")
    if args.classifier_epochs > 0:
        classifier, stats = train_classifier(args.classifier_epochs, args.seed)
        written = classifier.save(out / "digits_classifier.npz")
        provenance = {**stats, "config": json.loads(classifier.config.to_json()),
                      "jax": _jax_version(), **_common_provenance(args, argv)}
        atomic_write_text(out / "digits_classifier.json", json.dumps(provenance, indent=2) + "\n")
        print(f"wrote {written} (held-out accuracy {stats['test_accuracy']:.3f}, "
              f"{stats['train_seconds']:.0f}s)")
    return 0


def _jax_version() -> str:
    import jax

    return jax.__version__


if __name__ == "__main__":
    sys.exit(main())
