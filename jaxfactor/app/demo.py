"""``jaxfactor demo``: the whole pipeline on the built-in digits generator.

Discovers directions with PCA, FastICA, SCA and SeFa in the W space (64-d,
factorized directly, as the papers do for StyleGAN2) and at the FastGAN-like
``synthesis.init`` layer (1024 features, lifted to W by least squares, as the
papers do for FastGAN's conv1), then evaluates every set with

* edit FID (Palaev et al.): 1000 images, each edited by one random direction
  with ``alpha ~ U[-a, a]``, ``a`` = 3 and 6, FID(original, edited) on the
  in-domain features of the shipped digit classifier (its penultimate
  layer). ``alpha`` is in units of the standard deviation of W along the
  direction (for lifted directions: of the component's score), because the
  built-in W has a small scale (per-coordinate std about 0.08) and a unit
  step would leave the data manifold for every method alike;
* walk scores (Liu et al.): efficiency ``S_e`` and disentanglement ``S_d``
  over unit-norm walks of up to three RMS standard deviations of W, against
  15 attribute predictors (the classifier's 10 digit probabilities and 5
  analytic pixel attributes mapped to (0, 1)),

and writes a report: PNG grids of edits, walk-curve plots, tables in the
layout of the papers' tables (Markdown + JSON) and an ``index.html``.
"""
from __future__ import annotations

import html
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._extras import require_all
from .._io import atomic_write_text

# What the demo imports beyond the engine: the built-in generator (torch),
# PNG grids and plots (pillow; the 'torch' extra), the digit classifier (flax, optax).
REQUIRED_MODULES = ("torch", "PIL", "flax", "optax")


@dataclass
class DemoConfig:
    """Sizes of a demo run (defaults: the full run, a few minutes on 2 cores)."""

    n_samples: int = 5000
    components: int = 16
    ica_components: tuple = (8, 16)
    fid_images: int = 1000
    alpha_ranges: tuple = (3.0, 6.0)
    walk_samples: int = 200
    walk_steps: int = 3
    grid_directions: int = 8
    grid_alphas: tuple = (-6.0, -3.0, 0.0, 3.0, 6.0)
    layers: tuple = ("w", "synthesis.init")
    seed: int = 0
    show_progress: bool = True
    extra: dict = field(default_factory=dict)

    @classmethod
    def quick(cls, **kw):
        """Reduced sizes for smoke tests (well under a minute)."""
        base = dict(n_samples=600, components=4, ica_components=(4,), fid_images=200,
                    walk_samples=20, walk_steps=2, grid_directions=3, show_progress=False)
        base.update(kw)
        return cls(**base)


def _log(msg: str) -> None:
    print(f"[jaxfactor demo] {msg}", flush=True)


class _Builtin:
    """The built-in generator and its evaluators, as plain callables."""

    def __init__(self):
        import torch

        from bridges.builtin import analytic_attributes, load_builtin_classifier, load_builtin_generator
        from bridges.generators import as_adapter, sample_z
        from bridges.render import render_codes

        self.torch = torch
        self.G = load_builtin_generator()
        self.adapter = as_adapter(self.G)
        self.classifier = load_builtin_classifier()
        self._analytic = analytic_attributes
        self._sample_z = sample_z
        self._render_codes = render_codes

    def w_of(self, seed: int, n: int) -> np.ndarray:
        z = self.torch.from_numpy(self._sample_z(seed, 0, n, self.adapter.z_dim))
        return self.adapter.codes(z)["w"].numpy().astype(np.float32)

    def render(self, w: np.ndarray) -> np.ndarray:
        """``(b, 64)`` W codes -> ``(b, 8, 8, 1)`` float images in [-1, 1]."""
        return self._render_codes(self.adapter, w, space="w")

    def features(self, images):
        return self.classifier.features(images)

    def attributes(self, images):
        digits = self.classifier.predict(images)
        pix = self._analytic(images[..., 0], value_range=(-1.0, 1.0), layout="NHWC", probabilities=True)
        return np.concatenate([digits, pix.values], axis=1)

    @property
    def attribute_names(self):
        from bridges.builtin import ATTRIBUTE_NAMES

        return [f"digit {d}" for d in range(10)] + list(ATTRIBUTE_NAMES)

    def sefa_weights(self):
        """Style-affine weights ``(C_l, 64)`` of the modulated layers (SeFa's input)."""
        return [m.affine.weight.detach().numpy() for name, m in self.G.synthesis.named_children()
                if hasattr(m, "affine")]


def _to_uint8(images: np.ndarray, upscale: int = 4) -> np.ndarray:
    x = np.clip((images + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    if upscale > 1:
        x = x.repeat(upscale, axis=-3).repeat(upscale, axis=-2)
    return x


def run_demo(out_dir: str | os.PathLike, config: DemoConfig | None = None) -> dict:
    """Run the demo and write the report into ``out_dir``.

    Args:
      out_dir: output directory (created).
      config: sizes; :class:`DemoConfig` defaults when ``None``.

    Returns:
      The results dictionary also written to ``results.json``.

    Raises:
      MissingExtraError: the ``torch`` or ``demo`` extra is not installed.
    """
    require_all(REQUIRED_MODULES, feature="the demo")
    import torch

    # no gradients anywhere in the demo, without changing the caller's grad mode
    with torch.no_grad():
        return _run_demo(out_dir, config)


def _run_demo(out_dir, config):
    from bridges.render import save_grid

    from ..directions import save_directions
    from ..metrics.protocols import edit_fid
    from ..metrics.walks import plot_walk_curves, walk_predictions, walk_scores
    from .pipeline import discover, progress_bar

    cfg = config or DemoConfig()
    out = Path(out_dir)
    for sub in ("grids", "walks", "directions"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    _log("loading the built-in generator and classifier")
    b = _Builtin()
    from bridges.generators import describe_sampler  # after _Builtin checked the extras

    w_ref = b.w_of(cfg.seed + 1, 4000)
    w_cov = np.cov(w_ref, rowvar=False)
    rms_std = float(np.sqrt(np.trace(w_cov) / w_cov.shape[0]))

    plans = []
    for layer in cfg.layers:
        plans.append((layer, "pca", cfg.components))
        for k in cfg.ica_components:
            plans.append((layer, "ica", k))
        plans.append((layer, "sca", cfg.components))
    plans.append(("weights", "sefa", cfg.components))

    fid_latents = b.w_of(cfg.seed + 2, cfg.fid_images)
    walk_latents = b.w_of(cfg.seed + 3, cfg.walk_samples)
    grid_latent = b.w_of(cfg.seed + 4, 1)
    distances = np.linspace(0.0, 3.0 * rms_std, cfg.walk_steps + 1)[1:]
    original_stats = None
    rows = []
    for layer, method, k in plans:
        label = f"{method.upper()}-{k} ({'W' if layer == 'w' else 'weights' if layer == 'weights' else layer + ' -> W'})"
        _log(f"{label}: discovering")
        found = discover(b.adapter, "w" if layer == "weights" else layer, method, k,
                         n_samples=cfg.n_samples, seed=cfg.seed, batch_size=500,
                         sefa_weights=b.sefa_weights() if method == "sefa" else None,
                         random_state=cfg.seed, show_progress=cfg.show_progress,
                         # the demo's ICA runs to 400 iterations (the library default is 200)
                         estimator_params={"max_iter": 400} if method == "ica" else None)
        dirs = found.directions.astype(np.float64)
        if layer in ("w", "weights"):
            sigma = np.sqrt(np.einsum("kd,de,ke->k", dirs, w_cov, dirs))
        else:
            sigma = found.scales.astype(np.float64)  # latent length of a one-std score step
        scaled = dirs * sigma[:, None]
        tag = f"{layer.replace('.', '_')}_{method}_{k}"
        save_directions(out / "directions" / f"{tag}.npz", dirs.astype(np.float32),
                        sigma.astype(np.float32), method=method, space="w",
                        layer=None if layer == "weights" else layer,
                        params={"n_components": k},
                        generator="bridges.builtin (8x8 digits GAN)",
                        provenance={"n_samples": cfg.n_samples, "seed": cfg.seed,
                                    "sampler": describe_sampler(cfg.seed, b.adapter.z_dim)})
        row = {"method": method.upper(), "components": k, "layer": layer, "label": label,
               "discover_seconds": round(found.seconds, 3)}
        if found.r2 is not None:
            row["lift_r2_mean"] = float(np.mean(found.r2))
        est = found.estimator
        for attr in ("n_iter_", "converged_", "sparsity_"):
            if hasattr(est, attr):
                v = getattr(est, attr)
                row[attr.rstrip("_")] = v.item() if hasattr(v, "item") else v
        for a in cfg.alpha_ranges:
            res = edit_fid(b.render, fid_latents, scaled, b.features, alpha_range=a, seed=cfg.seed,
                           normalize=False, batch_size=500, original_statistics=original_stats)
            original_stats = res.original_statistics
            row[f"fid_a{a:g}"] = float(res.fid)
        with progress_bar(len(dirs), f"{label}: walks", cfg.show_progress):
            walk = walk_predictions(b.render, b.attributes, walk_latents, dirs, distances,
                                    normalize=True, batch_size=1000)
        scores = walk_scores(walk)
        row["S_e"] = float(scores.efficiency)
        row["S_d"] = float(scores.disentanglement)
        plot_walk_curves(scores, out / "walks" / f"{tag}.png",
                         direction_names=[f"dir {i}" for i in range(len(dirs))],
                         attribute_names=b.attribute_names)
        n_grid = min(cfg.grid_directions, len(dirs))
        alphas = np.asarray(cfg.grid_alphas)
        steps = scaled[:n_grid, None, :] * alphas[None, :, None]  # (rows, cols, d)
        tiles = _to_uint8(b.render((grid_latent + steps).reshape(-1, dirs.shape[1])))
        save_grid(tiles.reshape(n_grid, len(alphas), *tiles.shape[1:]), out / "grids" / f"{tag}.png")
        row["grid"] = f"grids/{tag}.png"
        row["walk_plot"] = f"walks/{tag}.png"
        rows.append(row)
        fids = ", ".join("a=%g: %.3f" % (a, row["fid_a%g" % a]) for a in cfg.alpha_ranges)
        _log(f"{label}: FID {fids}; S_e {row['S_e']:.3f}, S_d {row['S_d']:.3f}")
    # alpha = 0 control: the same protocol with zero strength must give FID ~ 0
    zero = edit_fid(b.render, fid_latents, np.zeros((1, fid_latents.shape[1])), b.features,
                    alpha_range=1.0, seed=cfg.seed, normalize=False, batch_size=500,
                    original_statistics=original_stats)
    results = {"config": {k: v for k, v in cfg.__dict__.items() if k != "extra"},
               "w_rms_std": rms_std, "walk_distances": distances.tolist(),
               "attribute_names": b.attribute_names, "fid_alpha0_control": float(zero.fid),
               "rows": rows, "seconds": round(time.perf_counter() - t_start, 1)}
    _write_report(out, results, cfg)
    _log(f"done in {results['seconds']:.0f} s; open {out / 'index.html'}")
    return results


def _fmt(v, digits=3):
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return "" if v is None else str(v)


def _tables(results: dict, cfg: DemoConfig) -> str:
    a_cols = [f"fid_a{a:g}" for a in cfg.alpha_ranges]
    lines = ["# jaxfactor demo: built-in digits generator", "",
             f"Edit FID: {cfg.fid_images} images, one random direction each, alpha ~ U[-a, a] in units of "
             f"the standard deviation along the direction; features: the digit classifier's penultimate "
             f"layer. Control with alpha = 0: FID = {results['fid_alpha0_control']:.2e}.", "",
             "## Edit FID by method, components and alpha range (lower: edits stay realistic)", "",
             "| method | layer | components | " + " | ".join(f"FID a={a:g}" for a in cfg.alpha_ranges) + " |",
             "|---|---|---|" + "---|" * len(a_cols)]
    for r in results["rows"]:
        lines.append(f"| {r['method']} | {r['layer']} | {r['components']} | "
                     + " | ".join(_fmt(r[c]) for c in a_cols) + " |")
    lines += ["", "## Walk efficiency and disentanglement (higher is better)", "",
              f"Unit-norm walks up to {results['walk_distances'][-1]:.3f} in W "
              f"(3 x the RMS standard deviation of W), {cfg.walk_samples} start points, 15 attributes.", "",
              "| method | layer | components | S_e | S_d | lift R^2 | iterations | sparsity | seconds |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        lines.append(f"| {r['method']} | {r['layer']} | {r['components']} | {_fmt(r['S_e'])} | "
                     f"{_fmt(r['S_d'])} | {_fmt(r.get('lift_r2_mean'))} | {_fmt(r.get('n_iter'))} | "
                     f"{_fmt(r.get('sparsity'))} | {_fmt(r['discover_seconds'], 2)} |")
    return "\n".join(lines) + "\n"


def _write_report(out: Path, results: dict, cfg: DemoConfig) -> None:
    md = _tables(results, cfg)
    for name, text in (("results.json", json.dumps(results, indent=2)), ("tables.md", md)):
        atomic_write_text(out / name, text)
    cards = []
    alpha_list = ", ".join("%g" % a for a in cfg.grid_alphas)
    for r in results["rows"]:
        fids = ", ".join("a=%g: %.3f" % (a, r["fid_a%g" % a]) for a in cfg.alpha_ranges)
        cards.append(
            f"<section><h3>{html.escape(r['label'])}</h3>"
            f"<p>FID {fids}; "
            f"S<sub>e</sub> {r['S_e']:.3f}, S<sub>d</sub> {r['S_d']:.3f}</p>"
            f"<figure><img src='{r['grid']}' alt='edit grid' style='image-rendering:pixelated'>"
            f"<figcaption>rows: directions; columns: alpha = {alpha_list} (std units)"
            f"</figcaption></figure>"
            f"<figure><img src='{r['walk_plot']}' alt='walk curves' style='max-width:100%'></figure></section>")
    table_html = "<pre>" + html.escape(md) + "</pre>"
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>jaxfactor demo</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}section{border-top:1px solid #ccc;"
            "padding:8px 0}figure{display:inline-block;vertical-align:top;margin:4px}</style></head><body>"
            "<h1>jaxfactor demo: directions in the built-in digits generator</h1>"
            + table_html + "".join(cards) + "</body></html>")
    atomic_write_text(out / "index.html", page)
