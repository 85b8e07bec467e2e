"""``jaxfactor demo``: the whole pipeline on the testbed generator, judged against ground truth.

The testbed GAN (``bridges.builtin.load_testbed_generator``: 32 x 32 RGB
shapes, W of 64 dimensions, a FastGAN init layer of 1024 x 4 x 4 = 16384
features) draws images whose seven factors (shape, x, y, size, rotation,
hue, background) ``bridges.builtin.testbed.measure`` computes from the pixels.
The demo discovers directions with

* PCA in W (factorized directly, as the papers do for StyleGAN2) and PCA with
  ``init_components`` (500) components at the 16384-d init layer, lifted to W
  by least squares (as they do for FastGAN's conv1);
* FastICA in W and at the init layer (``ica_components``, ``init_ica_components``);
* SCA (Chen & Rohe's sparse components) on a max-pooled intermediate layer
  (``pooled_layer``), with PCA on the same pooled features beside it, as the
  sparsity paper does;
* SeFa on the style-affine weights.

Each layer is read once (``cfg.n_samples`` rows in memory: 262 MB at the
init layer) and every method at it fits those rows
(:func:`.pipeline.discover_at_layer`): one PCA per layer, of the largest count
a PCA or FastICA run there asks for, gives the PCA rows (its leading axes)
and whitens the FastICA runs (FastICA on its first ``k`` scores, which is
FastICA's own whitening done once).

It then evaluates every set with

* edit FID (Palaev et al.): ``fid_images`` images, each edited by one random
  direction with ``alpha ~ U[-a, a]``, ``a`` = 3 and 6, ``alpha`` in standard
  deviations of W along the direction (for lifted directions: of the
  component's score); features: the penultimate layer of the network trained
  on the testbed (``bridges.builtin.load_testbed_features``), or the Inception
  network when ``inception_weights`` names its weights file;
* the sparsity paper's ``S_e`` / ``S_d`` on the measured factors, over
  unit-norm walks in W of up to three RMS standard deviations of W
  (:func:`jaxfactor.metrics.disentanglement.factor_walk_scores`);
* ground truth: the factor-change matrix (factor standard deviations per unit
  W distance), each direction's best-matched factor and its share, and DCI
  (Eastwood & Williams 2018) of the directions' coordinates against the
  measured factors;

and writes a self-contained report folder (:mod:`.report`): ``index.html``
with real tables (the papers' Tables 1-3 and the sparsity paper's Table 1),
the claims of both papers answered yes/no with the numbers, labelled edit
grids (nearest-neighbour, 96 px cells), heat maps, walk curves and the Fig. 2
scatter; plus ``results.json`` and ``tables.md``.
"""
from __future__ import annotations

import html
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._extras import require_all
from .._io import atomic_write_text

# What the demo imports beyond the engine: the testbed generator (torch), PNGs
# (pillow), plots (matplotlib), the feature network (flax, optax).
REQUIRED_MODULES = ("torch", "PIL", "matplotlib", "flax", "optax")

#: Factors whose values are angles: differences are taken modulo these periods.
_PERIODS = {"hue": 360.0, "rotation": 180.0}


@dataclass
class DemoConfig:
    """Sizes of a demo run (defaults: the full run; :meth:`quick` for smoke tests).

    ``layers`` (``None`` for the testbed plan described in the module
    docstring) runs, for each named layer, PCA (``components``), FastICA (each
    of ``ica_components``) and SCA (``components``), then SeFa.
    """

    n_samples: int = 4000
    components: int = 16
    ica_components: tuple = (16, 32)
    init_components: int = 500
    init_ica_components: tuple = (16, 40)
    pooled_layer: str = "synthesis.conv8"
    pool_size: int = 4
    fid_images: int = 1000
    alpha_ranges: tuple = (3.0, 6.0)
    walk_samples: int = 48
    walk_steps: int = 2
    walk_directions: int = 8
    dci_samples: int = 2000
    grid_directions: int = 6
    grid_samples: int = 3
    grid_alphas: tuple = (-6.0, -3.0, 0.0, 3.0, 6.0)
    layers: tuple | None = None
    inception_weights: str | None = None
    seed: int = 0
    show_progress: bool = True
    extra: dict = field(default_factory=dict)

    @classmethod
    def quick(cls, **kw):
        """Reduced sizes for smoke tests (well under a minute)."""
        base = dict(n_samples=400, components=4, ica_components=(4,), init_components=16,
                    init_ica_components=(4,), fid_images=100, walk_samples=8, walk_steps=1,
                    walk_directions=3, dci_samples=300, grid_directions=2, grid_samples=1,
                    show_progress=False)
        base.update(kw)
        return cls(**base)


def _log(msg: str) -> None:
    print(f"[jaxfactor demo] {msg}", flush=True)


class _Testbed:
    """The testbed generator, its measurement and its feature network, as plain callables."""

    def __init__(self, inception_weights=None):
        import torch

        from bridges.builtin import load_testbed_features, load_testbed_generator
        from bridges.builtin import testbed
        from bridges.generators import as_adapter, sample_z
        from bridges.render import render_codes

        self.torch = torch
        self.testbed = testbed
        self.G = load_testbed_generator()
        self.adapter = as_adapter(self.G)
        self._sample_z = sample_z
        self._render_codes = render_codes
        if inception_weights is None:
            self.feature_net = load_testbed_features()
            self.feature_name = (f"the testbed feature network's penultimate layer "
                                 f"({self.feature_net.config.hidden}-d)")
            self._features = lambda images: self.feature_net.features(images)
        else:
            from bridges.features import InceptionFeatures

            extractor = InceptionFeatures(inception_weights, input_range=(-1.0, 1.0))
            self.feature_name = "Inception pool features (2048-d)"
            self._features = extractor

    def w_of(self, seed: int, n: int) -> np.ndarray:
        z = self.torch.from_numpy(self._sample_z(seed, 0, n, self.adapter.z_dim))
        return self.adapter.codes(z)["w"].numpy().astype(np.float32)

    def render(self, w: np.ndarray) -> np.ndarray:
        """``(b, 64)`` W codes -> ``(b, 32, 32, 3)`` float images in [-1, 1]."""
        return self._render_codes(self.adapter, w, space="w")

    def features(self, images):
        return self._features(images)

    def measure(self, images) -> np.ndarray:
        return self.testbed.measure(images, value_range=(-1.0, 1.0)).values

    @property
    def factor_names(self):
        return list(self.testbed.FACTOR_NAMES)

    @property
    def factor_units(self):
        return list(self.testbed.FACTOR_UNITS)

    def sefa_weights(self):
        """Style-affine weights ``(C_l, 64)`` of the modulated layers (SeFa's input)."""
        return [m.affine.weight.detach().numpy() for _, m in self.G.synthesis.named_children()
                if hasattr(m, "affine")]


def _plans(cfg: DemoConfig) -> list[dict]:
    """The (layer, method, components, pooling) runs of a config, in report order."""
    def plan(layer, method, k, pool=False):
        return {"layer": layer, "method": method, "k": int(k),
                "pool": ("max", cfg.pool_size) if pool else None}

    if cfg.layers is not None:
        out = []
        for layer in cfg.layers:
            out.append(plan(layer, "pca", cfg.components))
            out += [plan(layer, "ica", k) for k in cfg.ica_components]
            out.append(plan(layer, "sca", cfg.components))
        return out + [plan("weights", "sefa", cfg.components)]
    return ([plan("w", "pca", cfg.components), plan("synthesis.init", "pca", cfg.init_components)]
            + [plan("w", "ica", k) for k in cfg.ica_components]
            + [plan("synthesis.init", "ica", k) for k in cfg.init_ica_components]
            + [plan(cfg.pooled_layer, "pca", cfg.components, pool=True),
               plan(cfg.pooled_layer, "sca", cfg.components, pool=True),
               plan("weights", "sefa", cfg.components)])


def _label(p: dict) -> str:
    where = {"w": "W", "weights": "weights"}.get(p["layer"], p["layer"] + " -> W")
    if p["pool"] is not None:
        where = f"{p['layer']} max-pooled {p['pool'][1]}x{p['pool'][1]} -> W"
    return f"{p['method'].upper()}-{p['k']} ({where})"


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


def _coordinates(w: np.ndarray, mean: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Least-squares coordinates ``c`` of ``w - mean`` along the rows of ``directions``."""
    c, *_ = np.linalg.lstsq(directions.T.astype(np.float64), (w - mean).T.astype(np.float64),
                            rcond=None)
    return c.T


class _Stages:
    """Wall time per stage of a run: ``with stages("edit FID"): ...`` adds to that stage."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


class _Plotter:
    """Draws the report's figures in one background thread while the run goes on.

    Matplotlib (Agg canvases on bare ``Figure`` objects, no pyplot) is Python
    work; the rendering and factorization it overlaps release the GIL in
    torch's and XLA's kernels. One worker thread, so figures never share
    matplotlib state across threads. ``wait`` re-raises the first error.
    """

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxfactor-plots")
        self._pending = []
        self.seconds = 0.0

    def _timed(self, fn, args, kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0

    def submit(self, fn, *args, **kwargs) -> None:
        self._pending.append(self._pool.submit(self._timed, fn, args, kwargs))

    def wait(self) -> None:
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pending = []
            self._pool.shutdown(wait=True)


def _run_demo(out_dir, config):
    from ..directions import save_directions
    from ..metrics.disentanglement import (
        best_factors,
        dci,
        factor_change_matrix,
        factor_walk,
        factor_walk_scores,
    )
    from ..metrics.protocols import edit_fid
    from ..metrics.walks import plot_walk_curves
    from . import report as R
    from .pipeline import discover, discover_at_layer, progress_bar, sample_layer

    cfg = config or DemoConfig()
    out = Path(out_dir)
    for sub in ("grids", "cells", "walks", "heatmaps", "directions"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    stages = _Stages()
    _log("loading the testbed generator and its feature network")
    with stages("loading the generator and the feature network"):
        b = _Testbed(cfg.inception_weights)
    from bridges.generators import describe_sampler  # after _Testbed checked the extras

    with stages("reference samples (W statistics, measured factors for DCI)"):
        w_ref = b.w_of(cfg.seed + 1, max(cfg.dci_samples, 4000))
        w_mean = w_ref.mean(axis=0)
        w_cov = np.cov(w_ref, rowvar=False)
        rms_std = float(np.sqrt(np.trace(w_cov) / w_cov.shape[0]))
        names = b.factor_names
        periods = [_PERIODS.get(n, 0.0) for n in names]
        # the measured factors of one set of samples serve every method's DCI and scales
        w_dci = w_ref[:cfg.dci_samples]
        f_dci = b.measure(b.render(w_dci))
        f_mean, f_std = f_dci.mean(axis=0), np.maximum(f_dci.std(axis=0), 1e-6)
        fid_latents = b.w_of(cfg.seed + 2, cfg.fid_images)
        walk_latents = b.w_of(cfg.seed + 3, cfg.walk_samples)
        grid_latents = b.w_of(cfg.seed + 4, cfg.grid_samples)
    distances = np.linspace(0.0, 3.0 * rms_std, cfg.walk_steps + 1)[1:]

    # one generator pass per layer; every method at that layer fits the same rows, and one
    # PCA per layer serves its PCA and whitens its FastICA runs (pipeline.discover_at_layer)
    plans = _plans(cfg)
    # figures are drawn in the background; on an error the worker finishes what is queued
    plotter = _Plotter()
    found = {}
    layers = list(dict.fromkeys((p["layer"], p["pool"]) for p in plans if p["method"] != "sefa"))
    for layer, pool in layers:
        with stages("generator passes over the factorized layers"):
            sample = sample_layer(b.adapter, layer, n_samples=cfg.n_samples, seed=cfg.seed,
                                  batch_size=500, pool=pool[0] if pool else None,
                                  pool_size=pool[1] if pool else None,
                                  show_progress=cfg.show_progress)
        requests = [(p["method"], p["k"]) for p in plans if (p["layer"], p["pool"]) == (layer, pool)]
        _log(f"{layer}{' max-pooled' if pool else ''}: {sample.features.shape[0]} x "
             f"{sample.features.shape[1]} rows in {sample.seconds:.1f} s; fitting "
             + ", ".join(f"{m.upper()}-{k}" for m, k in requests))
        with stages("factorization and lifting"):
            fits = discover_at_layer(sample, requests, random_state=cfg.seed,
                                     # the demo's ICA runs to 400 iterations (the default is 200)
                                     estimator_params={"ica": {"max_iter": 400}})
        found.update({(layer, pool, m, k): d for (m, k), d in fits.items()})
        del sample, fits

    original_stats = None
    rows = []
    pooled_fits = {}
    for p in plans:
        layer, method, k = p["layer"], p["method"], p["k"]
        label = _label(p)
        if method == "sefa":
            with stages("factorization and lifting"):
                found[(layer, p["pool"], method, k)] = discover(
                    b.adapter, "w", method, k, n_samples=cfg.n_samples, seed=cfg.seed,
                    batch_size=500, sefa_weights=b.sefa_weights(), random_state=cfg.seed,
                    show_progress=cfg.show_progress)
        result = found[(layer, p["pool"], method, k)]
        dirs = result.directions.astype(np.float64)
        if layer in ("w", "weights"):
            sigma = np.sqrt(np.einsum("kd,de,ke->k", dirs, w_cov, dirs))
        else:
            sigma = result.scales.astype(np.float64)  # latent length of a one-std score step
        scaled = dirs * sigma[:, None]
        tag = f"{layer.replace('.', '_')}_{method}_{k}" + ("_maxpool" if p["pool"] else "")
        save_directions(out / "directions" / f"{tag}.npz", dirs.astype(np.float32),
                        sigma.astype(np.float32), method=method, space="w",
                        layer=None if layer == "weights" else layer,
                        params={"n_components": k, "pool": p["pool"][0] if p["pool"] else None,
                                "pool_size": p["pool"][1] if p["pool"] else None},
                        generator="bridges.builtin:load_testbed_generator (testbed GAN)",
                        provenance={"n_samples": cfg.n_samples, "seed": cfg.seed,
                                    "sampler": describe_sampler(cfg.seed, b.adapter.z_dim)})
        row = {"method": method.upper(), "components": k, "layer": layer, "label": label,
               "pool": f"max {p['pool'][1]}x{p['pool'][1]}" if p["pool"] else "",
               "discover_seconds": round(result.seconds, 3), "tag": tag}
        if result.r2 is not None:
            row["lift_r2_mean"] = float(np.mean(result.r2))
        est = result.estimator
        for attr in ("n_iter_", "converged_", "sparsity_"):
            if hasattr(est, attr):
                v = getattr(est, attr)
                row[attr.rstrip("_")] = v.item() if hasattr(v, "item") else v
        if p["pool"] and method in ("pca", "sca"):
            pooled_fits[method] = (p, est)
        t_eval = time.perf_counter()
        with stages("edit FID (rendering, features, Frechet distance)"):
            for a in cfg.alpha_ranges:
                res = edit_fid(b.render, fid_latents, scaled, b.features, alpha_range=a,
                               seed=cfg.seed, normalize=False, batch_size=500,
                               original_statistics=original_stats)
                original_stats = res.original_statistics
                row[f"fid_a{a:g}"] = float(res.fid)
        n_eval = min(cfg.walk_directions, len(dirs))
        with stages("walks (rendering, measuring the factors)"), \
                progress_bar(n_eval, f"{label}: walks", cfg.show_progress):
            walk = factor_walk(b.render, b.measure, walk_latents, dirs[:n_eval], distances,
                               batch_size=1000)
        with stages("walk scores and DCI"):
            changes = factor_change_matrix(walk, scale=f_std, periods=periods)
            best, share = best_factors(changes)
            scores = factor_walk_scores(walk, f_mean, f_std)
            row["S_e"] = float(scores.efficiency)
            row["S_d"] = float(scores.disentanglement)
            row["share_mean"] = float(np.nanmean(share))
            row["best_factors"] = [names[i] for i in best]
            row["best_shares"] = [float(s) for s in share]
            row["factor_changes"] = changes.tolist()
            n_codes = min(len(dirs), cfg.walk_directions, w_ref.shape[1])
            varying = np.flatnonzero(f_dci.std(axis=0) > 0)       # a constant factor has no code
            if n_codes >= 2 and varying.size >= 2:
                scores_dci = dci(_coordinates(w_dci, w_mean, dirs[:n_codes]), f_dci[:, varying])
                row["dci_D"] = scores_dci.disentanglement
                row["dci_C"] = scores_dci.completeness
                row["dci_I"] = float(np.mean(scores_dci.informativeness))
            row["dci_codes"] = n_codes
            row["dci_factors"] = [names[j] for j in varying]
        dir_names = [f"dir {i}: {names[best[i]]}" for i in range(n_eval)]
        plotter.submit(plot_walk_curves, scores, out / "walks" / f"{tag}.png",
                       direction_names=dir_names, attribute_names=names)
        plotter.submit(R.plot_heatmap, changes, dir_names,
                       [f"{n} ({u})" for n, u in zip(names, b.factor_units)],
                       out / "heatmaps" / f"{tag}.png",
                       title=f"{label}: factor change per unit walk in W",
                       unit="factor std per unit W distance")
        row["walk_plot"] = f"walks/{tag}.png"
        row["heatmap"] = f"heatmaps/{tag}.png"
        with stages("edit grids (rendering, PNG cells)"):
            row.update(_grids(b, R, out, tag, scaled, grid_latents, cfg, best, share, names))
        row["evaluate_seconds"] = round(time.perf_counter() - t_eval, 3)
        rows.append(row)
        fids = ", ".join("a=%g: %.3f" % (a, row["fid_a%g" % a]) for a in cfg.alpha_ranges)
        _log(f"{label}: FID {fids}; S_e {row['S_e']:.3f}, S_d {row['S_d']:.3f}, "
             f"DCI D {row.get('dci_D', float('nan')):.3f}")
    # alpha = 0 control: the same protocol with zero strength must give FID ~ 0
    with stages("edit FID (rendering, features, Frechet distance)"):
        zero = edit_fid(b.render, fid_latents, np.zeros((1, fid_latents.shape[1])), b.features,
                        alpha_range=1.0, seed=cfg.seed, normalize=False, batch_size=500,
                        original_statistics=original_stats)
    with stages("Fig. 2 (pooled layer samples and their factors)"):
        fig2 = _figure2(b, R, out, cfg, pooled_fits, plotter) if len(pooled_fits) == 2 else None
    with stages("waiting for the plots to finish"):
        plotter.wait()
    results = {"config": {k: v for k, v in cfg.__dict__.items() if k != "extra"},
               "generator": "bridges.builtin:load_testbed_generator",
               "feature_network": b.feature_name,
               "w_rms_std": rms_std, "walk_distances": distances.tolist(),
               "factor_names": names, "factor_units": b.factor_units,
               "attribute_names": names,
               "factor_std": f_std.tolist(), "fid_alpha0_control": float(zero.fid),
               "rows": rows, "figure2": fig2}
    results["claims"] = _claims(rows, cfg)
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    results["stages"] = ([{"stage": k, "seconds": round(v, 2), "background": False}
                          for k, v in stages.seconds.items()]
                         + [{"stage": "plots (walk curves, heat maps, Fig. 2)",
                             "seconds": round(plotter.seconds, 2), "background": True}])
    _write_report(out, results, cfg, R)
    _log(f"done in {results['seconds']:.0f} s; open {out / 'index.html'}")
    return results


def _grids(b, R, out, tag, scaled, grid_latents, cfg, best, share, names) -> dict:
    """Edit grids: one PNG cell per (direction, alpha), samples stacked, 96 px tiles."""
    n_grid = min(cfg.grid_directions, len(scaled))
    alphas = np.asarray(cfg.grid_alphas, np.float64)
    s = grid_latents.shape[0]
    steps = scaled[:n_grid, None, None, :] * alphas[None, :, None, None]      # (r, a, 1, d)
    codes = (grid_latents[None, None] + steps).reshape(-1, grid_latents.shape[1])
    tiles = R.upscale(R.to_uint8(b.render(codes)), 96)                        # (r*a*s, H, W, 3)
    h, w = tiles.shape[1:3]
    tiles = tiles.reshape(n_grid, len(alphas), s, h, w, 3)
    cells = []
    for i in range(n_grid):
        row_cells = []
        for j, a in enumerate(alphas):
            column = np.full((s * (h + 2), w, 3), 255, np.uint8)
            for k in range(s):
                column[k * (h + 2):k * (h + 2) + h] = tiles[i, j, k]
            rel = f"cells/{tag}_d{i}_a{j}.png"
            R.save_png(column, out / rel)
            row_cells.append(rel)
        cells.append(row_cells)
    gap = 2
    full = np.full((n_grid * (s * (h + gap)) + gap, len(alphas) * (w + gap) + gap, 3), 255, np.uint8)
    for i in range(n_grid):
        for j in range(len(alphas)):
            for k in range(s):
                y = gap + (i * s + k) * (h + gap)
                x = gap + j * (w + gap)
                full[y:y + h, x:x + w] = tiles[i, j, k]
    R.save_png(full, out / "grids" / f"{tag}.png")
    labels = []
    for i in range(n_grid):
        if i < len(best):
            labels.append(f"dir {i}: {names[best[i]]} ({share[i]:.2f} of its change)")
        else:
            labels.append(f"dir {i}")
    return {"grid": f"grids/{tag}.png", "grid_cells": cells, "grid_labels": labels,
            "grid_alphas": alphas.tolist()}


def _figure2(b, R, out, cfg, pooled_fits, plotter):
    """The sparsity paper's Fig. 2 on the pooled layer: the PCA plane, PCA's and SCA's bases.

    Uses the pooled-layer PCA and SCA fits of the run (their first two
    components) on fresh samples of the same layer; ``plotter`` draws it.
    """
    from bridges.activations import ActivationStream

    p, pca = pooled_fits["pca"]
    _, sca = pooled_fits["sca"]
    n = min(cfg.n_samples, 1500)
    stream = ActivationStream(latent=b.adapter, layer=p["layer"], n_samples=n, batch_size=500,
                              seed=cfg.seed + 5, pool=p["pool"][0], pool_size=p["pool"][1])
    x = np.concatenate([np.asarray(blk) for blk in stream.blocks(500)]).astype(np.float64)
    w = np.asarray(stream.latents(0, n)["w"])
    factors = b.measure(b.render(w))
    v = np.asarray(pca.components_, np.float64)[:2]
    y = np.asarray(sca.components_, np.float64)[:2]
    y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-300)
    mean = x.mean(axis=0)
    pts = (x - mean) @ v.T
    sca_in_plane = y @ v.T                                      # SCA axes in PCA coordinates
    sca_scores = (x - mean) @ y.T
    names = b.factor_names
    picks = []
    for i in range(2):
        corr = [abs(np.corrcoef(sca_scores[:, i], factors[:, j])[0, 1]) if factors[:, j].std() > 0
                else 0.0 for j in range(len(names))]
        picks.append(int(np.nanargmax(corr)))
    plotter.submit(R.plot_basis_scatter, pts, [factors[:, j] for j in picks],
                   [f"{names[j]} ({b.factor_units[j]})" for j in picks],
                   {"PCA": np.eye(2), "SCA": sca_in_plane}, out / "figure2.png",
                   title=f"{p['layer']} max-pooled {p['pool'][1]}x{p['pool'][1]}: "
                         f"{n} samples on the first two PCA axes")
    in_plane = float(np.mean(np.linalg.norm(sca_in_plane, axis=1)))
    return {"path": "figure2.png", "coloured_by": [names[j] for j in picks],
            "sca_in_pca_plane": in_plane, "n_samples": n,
            "sca_loading_zeros": float(np.mean(np.abs(y) < 1e-12))}


def _find(rows, method, layer=None, pooled=None):
    for r in rows:
        if r["method"] == method and (layer is None or r["layer"] == layer) and \
                (pooled is None or bool(r["pool"]) == pooled):
            yield r


def _claims(rows, cfg) -> list[dict]:
    """The papers' claims, answered on this generator with the numbers."""
    claims = []

    def add(paper, claim, theirs, here, holds):
        claims.append({"paper": paper, "claim": claim, "paper_numbers": theirs, "here": here,
                       "reproduced": None if holds is None else bool(holds)})

    def num(r, key):
        v = r.get(key)
        return float("nan") if v is None else float(v)

    a_lo, a_hi = (f"fid_a{a:g}" for a in cfg.alpha_ranges[:2]) if len(cfg.alpha_ranges) >= 2 \
        else (None, None)
    if a_lo:
        worse = [r for r in rows if num(r, a_hi) >= num(r, a_lo)]
        add("Palaev et al.", f"stronger edits (a = {cfg.alpha_ranges[1]:g}) cost more FID than "
            f"a = {cfg.alpha_ranges[0]:g}", "every row of their Tables 1-3",
            f"{len(worse)} of {len(rows)} methods", len(worse) == len(rows))
    pca_init = next(_find(rows, "PCA", "synthesis.init"), None)
    ica_init = list(_find(rows, "ICA", "synthesis.init"))
    if pca_init and ica_init and a_lo:
        best = min(ica_init, key=lambda r: num(r, a_hi))
        holds = num(best, a_hi) <= 1.1 * num(pca_init, a_hi)
        add("Palaev et al.", "ICA at the init layer edits as realistically as PCA (FID within 10 %)",
            "FastGAN a = 6: PCA 24.33, ICA-500 24.13, ICA-1000 23.82",
            f"a = {cfg.alpha_ranges[1]:g}: PCA-{pca_init['components']} {num(pca_init, a_hi):.3f}, "
            f"ICA-{best['components']} {num(best, a_hi):.3f}", holds)
    ica_w = sorted(_find(rows, "ICA", "w"), key=lambda r: r["components"])
    pca_w = next(_find(rows, "PCA", "w"), None)
    if pca_w and len(ica_w) >= 1:
        d = [num(r, "dci_D") for r in ica_w]
        grows = all(b >= a for a, b in zip(d, d[1:])) if len(d) > 1 else None
        above = d[-1] > num(pca_w, "dci_D")
        holds = above and (grows is not False)
        add("Palaev et al.", "ICA is more disentangled than PCA as components grow (DCI D in W)",
            "qualitative: ICA edits change fewer attributes",
            "PCA {:.3f}; ".format(num(pca_w, "dci_D")) + ", ".join(
                f"ICA-{r['components']} {v:.3f}" for r, v in zip(ica_w, d)), holds)
    sca = next(_find(rows, "SCA", pooled=True), None) or next(_find(rows, "SCA"), None)
    pca_same = (next(_find(rows, "PCA", sca["layer"], bool(sca["pool"])), None) if sca else None)
    sefa = next(_find(rows, "SEFA"), None)
    if sca and pca_same:
        ratio = num(sca, "S_e") / num(pca_same, "S_e") if num(pca_same, "S_e") else float("nan")
        add("Liu et al.", "SCA is more efficient than PCA (S_e, same layer)",
            "S_e SCA 6.234 vs PCA 0.492 (12.7x)",
            f"S_e SCA {num(sca, 'S_e'):.3f} vs PCA {num(pca_same, 'S_e'):.3f} ({ratio:.2f}x)",
            num(sca, "S_e") > num(pca_same, "S_e"))
        add("Liu et al.", "SCA is at least as disentangled as PCA (S_d, same layer)",
            "S_d SCA 0.745 vs PCA 0.740",
            f"S_d SCA {num(sca, 'S_d'):.3f} vs PCA {num(pca_same, 'S_d'):.3f}",
            num(sca, "S_d") >= num(pca_same, "S_d"))
        add("Liu et al.", "SCA directions move one factor more than PCA's (best-factor share, "
            "ground truth)", "not measured there (no ground truth)",
            f"SCA {num(sca, 'share_mean'):.3f} vs PCA {num(pca_same, 'share_mean'):.3f}",
            num(sca, "share_mean") > num(pca_same, "share_mean"))
    if sefa and sca:
        add("Liu et al.", "SeFa is the least disentangled of PCA, SCA and SeFa (S_d)",
            "S_d SeFa 0.684 < PCA 0.740 < SCA 0.745",
            f"S_d SeFa {num(sefa, 'S_d'):.3f}, PCA {num(pca_same, 'S_d') if pca_same else float('nan'):.3f}, "
            f"SCA {num(sca, 'S_d'):.3f}",
            num(sefa, "S_d") <= min(num(sca, "S_d"), num(pca_same, "S_d") if pca_same else np.inf))
    return claims


def _tables_markdown(results: dict, cfg: DemoConfig) -> str:
    a_cols = [f"fid_a{a:g}" for a in cfg.alpha_ranges]
    lines = ["# jaxfactor demo: testbed generator", "",
             "| method | layer | components | " + " | ".join(f"FID a={a:g}" for a in cfg.alpha_ranges)
             + " | S_e | S_d | DCI D | DCI C | share |",
             "|---|---|---|" + "---|" * (len(a_cols) + 5)]
    for r in results["rows"]:
        vals = [r.get(c) for c in a_cols] + [r.get(k) for k in ("S_e", "S_d", "dci_D", "dci_C",
                                                                  "share_mean")]
        lines.append(f"| {r['method']} | {r['layer']} {r.get('pool', '')} | {r['components']} | "
                     + " | ".join("" if v is None else f"{v:.3f}" for v in vals) + " |")
    lines += ["", "## Claims", ""]
    for c in results["claims"]:
        verdict = {True: "yes", False: "no", None: "n/a"}[c["reproduced"]]
        lines.append(f"- {c['paper']}: {c['claim']} -- **{verdict}** ({c['here']}; paper: "
                     f"{c['paper_numbers']})")
    return "\n".join(lines) + "\n"


def _write_report(out: Path, results: dict, cfg: DemoConfig, R) -> None:
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    atomic_write_text(out / "tables.md", _tables_markdown(results, cfg))
    sections = []
    from bridges.builtin.testbed_gan import default_testbed_path

    samples = default_testbed_path().parent / "testbed_gan_samples.png"
    rows = results["rows"]
    intro = (f"<p>Generator: the testbed GAN ({html.escape(results['generator'])}): 32 x 32 RGB "
             f"shapes, W of 64 dimensions, init layer 1024 x 4 x 4 = 16384 features. Every image's "
             f"seven factors ({', '.join(results['factor_names'])}) are measured from its pixels. "
             f"Run time {results['seconds']:.1f} s.</p>")
    if samples.is_file():
        shutil.copyfile(samples, out / "samples.png")
        intro += ("<figure><img src='samples.png' class='px' alt='testbed GAN samples (top) and "
                  "real testbed images (bottom)'><figcaption>Top: 50 samples of the GAN; bottom: "
                  "50 rendered testbed images.</figcaption></figure>")
    sections.append("<section>" + intro + "</section>")
    stage_rows = [{**r, "share": 100 * r["seconds"] / results["seconds"] if results["seconds"]
                   else None,
                   "thread": "background" if r["background"] else "main"}
                  for r in results.get("stages", [])]
    if stage_rows:
        sections.append(
            "<section><h2>Where the time went</h2><p>" + html.escape(
                f"Wall time of this run: {results['seconds']:.1f} s on "
                f"{os.cpu_count()} CPU core(s), after the interpreter and the libraries "
                f"were imported; each method's discovery and evaluation times are in the "
                f"tables below. JIT compilation falls in the stage that first runs a "
                f"program. The plots are drawn in a background thread while the main one "
                f"goes on, so their time overlaps the others'; writing this page comes after "
                f"the table (well under a second). Each layer is read once and one PCA per layer (of the largest "
                f"count asked there) gives the PCA rows and whitens the FastICA runs, which "
                f"fit its first k scores.") + "</p>"
            + R.html_table([R.Column("stage", "stage"), R.Column("thread", "thread"),
                            R.Column("seconds", "wall time", "s", digits=2),
                            R.Column("share", "share of the run", "%", digits=2)],
                           stage_rows, table_id="stages", caption="Run time by stage")
            + "</section>")

    claim_rows = [{**c, "verdict": {True: "yes", False: "no", None: "n/a"}[c["reproduced"]]}
                  for c in results["claims"]]
    sections.append("<section><h2>Do the papers' claims hold here?</h2>" + R.html_table(
        [R.Column("paper", "paper"), R.Column("claim", "claim"),
         R.Column("paper_numbers", "in the paper"), R.Column("here", "on the testbed"),
         R.Column("verdict", "reproduced")], claim_rows, table_id="claims",
        caption="Each claim answered yes/no with the numbers of this run") + "</section>")

    fid_cols = [R.Column(f"fid_a{a:g}", f"edit FID a = {a:g}", "Fréchet distance, lower = more "
                         "realistic edits") for a in cfg.alpha_ranges]
    base = [R.Column("method", "method"), R.Column("layer", "layer"), R.Column("pool", "pooling"),
            R.Column("components", "components", "count", numeric=True)]
    sections.append(
        "<section><h2>Edit FID by method, components and alpha range (Tables 1-3 of Palaev et al.)"
        "</h2><p>" + html.escape(
            f"{cfg.fid_images} images, one random direction each, alpha ~ U[-a, a] in standard "
            f"deviations along the direction; features: {results['feature_network']}. Control "
            f"with alpha = 0: FID = {results['fid_alpha0_control']:.2e}.") + "</p>"
        + R.html_table(base + fid_cols, rows, table_id="fid", caption="Edit FID") + "</section>")
    walk_cols = [
        R.Column("S_e", "S_e", "prob. / unit W"),
        R.Column("S_d", "S_d", "0-1"),
        R.Column("dci_D", "DCI D", "0-1"),
        R.Column("dci_C", "DCI C", "0-1"),
        R.Column("dci_I", "DCI I", "mean R^2"),
        R.Column("share_mean", "factor share", "mean, 0-1"),
        R.Column("lift_r2_mean", "lift R^2", "mean"),
        R.Column("discover_seconds", "discovery time", "s", digits=2),
    ]
    sections.append(
        "<section><h2>Efficiency and disentanglement (Table 1 of Liu et al.) and ground truth</h2>"
        "<p>" + html.escape(
            f"Unit-norm walks in W of up to {results['walk_distances'][-1]:.3f} (3 x the RMS "
            f"standard deviation of W) from {cfg.walk_samples} start points along the first "
            f"{cfg.walk_directions} directions; the 'attribute probability' of the paper is the "
            f"logistic of each measured factor's z-score. DCI (Eastwood & Williams 2018, linear "
            f"regressor): disentanglement D, completeness C and informativeness I of the "
            f"coordinates along the first directions against the measured factors of "
            f"{cfg.dci_samples} samples. Factor share: the best-matched factor's share of a "
            f"direction's factor change (in factor standard deviations), averaged.") + "</p>"
        + R.html_table(base + walk_cols, rows, table_id="walks",
                       caption="Walk scores and ground-truth disentanglement") + "</section>")
    fig2 = results.get("figure2")
    if fig2:
        sections.append(
            "<section><h2>Fig. 2 of Liu et al. on the pooled layer</h2>"
            f"<figure><img src='{fig2['path']}' alt='PCA and SCA bases on the pooled layer'>"
            "<figcaption>" + html.escape(
                f"{fig2['n_samples']} samples on the first two PCA axes of the pooled layer, "
                f"coloured by the factors most correlated with SCA's two components "
                f"({', '.join(fig2['coloured_by'])}); arrows: the PCA basis and SCA's "
                f"(projected on the plane; mean in-plane length {fig2['sca_in_pca_plane']:.2f}); "
                f"{100 * fig2['sca_loading_zeros']:.0f} % of SCA's loadings are zero.")
            + "</figcaption></figure></section>")
    for r in rows:
        fids = ", ".join("a = %g: %.3f" % (a, r["fid_a%g" % a]) for a in cfg.alpha_ranges)
        head = [f"<th scope='col'>alpha = {a:g}</th>" for a in r["grid_alphas"]]
        body = []
        for label, cells in zip(r["grid_labels"], r["grid_cells"]):
            tds = "".join(f"<td><img class='px' src='{c}' alt='{html.escape(label)}'></td>"
                          for c in cells)
            body.append(f"<tr><th scope='row' class='row'>{html.escape(label)}</th>{tds}</tr>")
        grid = (f"<table class='grid'><caption>Edits in std units; each cell: "
                f"{cfg.grid_samples} samples</caption><thead><tr><th></th>{''.join(head)}</tr>"
                f"</thead><tbody>{''.join(body)}</tbody></table>")
        sections.append(
            f"<section><h2>{html.escape(r['label'])}</h2><p>edit FID {fids}; S<sub>e</sub> "
            f"{r['S_e']:.3f}, S<sub>d</sub> {r['S_d']:.3f}; DCI D "
            f"{r.get('dci_D', float('nan')):.3f}. <a href='{r['grid']}'>whole grid as one PNG</a>"
            f"</p>{grid}<figure><img src='{r['heatmap']}' alt='factor-change heat map'>"
            f"<figcaption>Factor change per unit walk in W, in factor standard deviations."
            f"</figcaption></figure><figure><img src='{r['walk_plot']}' alt='walk curves' "
            f"style='max-width:100%'><figcaption>Walk curves: mean and spread over start points "
            f"of the matched factors' probabilities.</figcaption></figure></section>")
    R.write_page(out / "index.html", "jaxfactor demo: directions in the testbed generator",
                 sections)
