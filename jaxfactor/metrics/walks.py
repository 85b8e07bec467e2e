"""Walk scores of latent directions: efficiency and disentanglement.

Following Liu, Anirudh, Thiagarajan & Bremer ("Sparsity improves unsupervised
attribute discovery in StyleGAN"): start from ``N`` latents ``z_n``, walk each
unit direction ``v_i`` over a grid of distances ``t``, render, and record the
attribute predictions ``p_j(G(z_n + t v_i))`` of ``J`` attribute predictors
(any callable ``images -> probabilities (b, J)``). From the predictions:

* the response matrix ``A_ij``: mean over samples of ``|p_j(end) - p_j(start)|``
  when walking direction ``i`` to the end of the grid (averaged over both ends
  for a two-sided walk);
* the matching of directions to attributes: the assignment that maximises the
  total matched response ``sum_i A_{i, pi(i)}`` (Hungarian algorithm,
  ``scipy.optimize.linear_sum_assignment(A, maximize=True)``), giving
  ``min(K, J)`` pairs;
* disentanglement ``S_d = Tr(A') / sum_ij A'_ij`` with ``A'`` the square
  block of ``A`` on the matched directions and attributes, ordered so that the
  matched pairs lie on its diagonal (``S_d = 1``: each matched direction
  changes only its attribute);
* efficiency ``S_e = Delta p / Delta d`` of each matched pair: the change of the
  attribute's prediction from the start to the end of the walk divided by the
  latent distance walked, averaged over the samples whose start prediction is
  negative (``p_j(z_n) < threshold = 0.5``), as the paper filters. Since a
  direction's sign is arbitrary (PCA, ICA, SCA), a two-sided walk takes, per
  pair, the sign along which the attribute increases on average. ``S_e`` is
  reported per pair and as the mean over pairs;
* the curves: mean and standard deviation over samples of every prediction
  along every walk, as arrays and as a PNG plot (:func:`plot_walk_curves`).

Generic over callables: ``render`` maps ``(b, *latent_shape)`` numpy latents
to images (or anything ``predict`` accepts).
"""
from __future__ import annotations

import os
from typing import Callable, NamedTuple, Sequence

import numpy as np

from .._extras import require
from .._io import atomic_write
from .protocols import latents_and_directions

__all__ = ["WalkPredictions", "WalkScores", "walk_predictions", "walk_scores",
           "plot_walk_curves"]


class WalkPredictions(NamedTuple):
    """Attribute predictions along walks.

    Attributes:
      distances: ``(S,)`` float64 signed walk distances, ascending, one of
        them 0 (the start).
      predictions: ``(K, S, N, J)`` float64, ``p_j(G(z_n + distances[s] v_i))``.
    """

    distances: np.ndarray
    predictions: np.ndarray


class WalkScores(NamedTuple):
    """Walk scores (see the module docstring for the definitions).

    Attributes:
      efficiency: mean of ``pair_efficiency`` over the matched pairs (NaN
        where no pair had a sample with a negative start).
      disentanglement: ``S_d = Tr(A') / sum A'``.
      assignment: ``(P, 2)`` int64 rows ``(direction i, attribute j)`` of the
        matched pairs, ``P = min(K, J)``, sorted by direction.
      pair_efficiency: ``(P,)`` ``S_e`` of each pair.
      pair_n_negative: ``(P,)`` number of samples with a negative start.
      signs: ``(P,)`` +1 or -1, the walking sign used for each pair's ``S_e``.
      response: ``(K, J)`` the matrix ``A``.
      distances: ``(S,)`` the signed distances of the curves.
      curve_mean, curve_std: ``(K, S, J)`` mean and standard deviation over
        samples of ``p_j`` along direction ``i``.
    """

    efficiency: float
    disentanglement: float
    assignment: np.ndarray
    pair_efficiency: np.ndarray
    pair_n_negative: np.ndarray
    signs: np.ndarray
    response: np.ndarray
    distances: np.ndarray
    curve_mean: np.ndarray
    curve_std: np.ndarray


def _as_predictions(p, n: int) -> np.ndarray:
    if type(p).__module__.startswith("torch"):
        p = p.detach().cpu().numpy()
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if p.ndim != 2 or p.shape[0] != n:
        raise ValueError(f"predict returned shape {p.shape} for {n} images; (n, J) is expected")
    return p


def walk_predictions(render: Callable, predict: Callable, latents, directions, distances, *,
                     two_sided: bool = True, normalize: bool = True,
                     batch_size: int = 64) -> WalkPredictions:
    """Predict attributes along linear walks from each latent along each direction.

    Args:
      render: ``(b, *latent_shape) numpy -> images``.
      predict: ``images -> (b, J)`` (or ``(b,)``) attribute probabilities.
      latents: ``(N, *latent_shape)`` starting latents.
      directions: ``(K, *latent_shape)``.
      distances: 1-D non-negative walk distances (0 is added if missing).
      two_sided: also walk the negative distances (the grid becomes
        ``-t_max .. 0 .. t_max``).
      normalize: scale directions to unit L2 norm, so distances are latent
        distances; ``False`` uses the directions as given.
      batch_size: latents per ``render``/``predict`` call.

    Returns:
      :class:`WalkPredictions` (``K * (S - 1) * N + N`` images are rendered:
      the start images once for all directions).

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.metrics.walks import walk_predictions
      >>> latents = np.random.default_rng(0).normal(size=(10, 2))
      >>> predict = lambda z: 1 / (1 + np.exp(-z))      # attribute j: sigmoid(z_j)
      >>> walk = walk_predictions(lambda z: z, predict, latents, np.eye(2), [1.0, 2.0])
      >>> walk.distances.tolist(), walk.predictions.shape
      ([-2.0, -1.0, 0.0, 1.0, 2.0], (2, 5, 10, 2))
    """
    latents, directions = latents_and_directions(latents, directions)
    if normalize:
        norms = np.sqrt(np.sum(directions ** 2, axis=tuple(range(1, directions.ndim)),
                               keepdims=True))
        if np.any(norms == 0):
            raise ValueError("zero directions cannot be normalised")
        directions = directions / norms
    steps = np.asarray(distances, dtype=np.float64).ravel()
    if steps.size == 0 or not np.all(np.isfinite(steps)) or np.any(steps < 0):
        raise ValueError(f"distances must be finite and non-negative, got {steps}")
    steps = np.unique(np.concatenate([[0.0], steps]))
    if steps.size < 2:
        raise ValueError("distances need at least one positive value")
    grid = np.concatenate([-steps[:0:-1], steps]) if two_sided else steps
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = latents.shape[0]
    dtype = latents.dtype if latents.dtype.kind == "f" else np.float64

    def predict_at(direction, t):
        out = []
        for lo in range(0, n, batch_size):
            z = latents[lo:lo + batch_size].astype(dtype)
            if t != 0.0:
                z = (z + t * direction[None]).astype(dtype)
            out.append(_as_predictions(predict(render(z)), z.shape[0]))
        return np.concatenate(out, axis=0)

    start = predict_at(None, 0.0)
    preds = np.empty((directions.shape[0], grid.size, n, start.shape[1]))
    zero = int(np.flatnonzero(grid == 0.0)[0])
    for i, v in enumerate(directions):
        for s, t in enumerate(grid):
            preds[i, s] = start if s == zero else predict_at(v, t)
    return WalkPredictions(grid, preds)


def walk_scores(walk: WalkPredictions, *, threshold: float = 0.5) -> WalkScores:
    """Efficiency ``S_e``, disentanglement ``S_d`` and curves from walk predictions.

    Args:
      walk: :class:`WalkPredictions` from :func:`walk_predictions` (or built by
        hand: ``predictions`` ``(K, S, N, J)`` over signed ``distances``
        ``(S,)`` containing 0).
      threshold: a sample counts as negative for attribute ``j`` when its
        start prediction is below this.

    Returns:
      :class:`WalkScores`.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.metrics.walks import walk_predictions, walk_scores
      >>> latents = np.random.default_rng(0).normal(size=(10, 2))
      >>> predict = lambda z: 1 / (1 + np.exp(-z))      # attribute j: sigmoid(z_j)
      >>> scores = walk_scores(walk_predictions(lambda z: z, predict, latents, np.eye(2), [1.0]))
      >>> scores.assignment.tolist(), bool(np.isclose(scores.disentanglement, 1))
      ([[0, 0], [1, 1]], True)
    """
    from scipy.optimize import linear_sum_assignment

    grid = np.asarray(walk.distances, dtype=np.float64)
    preds = np.asarray(walk.predictions, dtype=np.float64)
    if preds.ndim != 4 or preds.shape[1] != grid.size:
        raise ValueError(f"predictions must be (K, S, N, J) with S = {grid.size}; got {preds.shape}")
    zeros = np.flatnonzero(grid == 0.0)
    if zeros.size != 1:
        raise ValueError("distances must contain 0 (the start) exactly once")
    zero = int(zeros[0])
    top, bottom = int(np.argmax(grid)), int(np.argmin(grid))
    start = preds[:, zero]  # (K, N, J)
    up = preds[:, top] - start
    response = np.mean(np.abs(up), axis=1)  # (K, J)
    two_sided = grid[bottom] < 0
    if two_sided:
        down = preds[:, bottom] - start
        response = 0.5 * (response + np.mean(np.abs(down), axis=1))

    rows, cols = linear_sum_assignment(response, maximize=True)
    order = np.argsort(rows)
    rows, cols = rows[order], cols[order]
    block = response[np.ix_(rows, cols)]
    total = float(np.sum(block))
    disentanglement = float(np.trace(block) / total) if total > 0 else float("nan")

    pair_eff = np.empty(rows.size)
    pair_neg = np.empty(rows.size, dtype=np.int64)
    signs = np.ones(rows.size, dtype=np.int64)
    for k, (i, j) in enumerate(zip(rows, cols)):
        end = top
        if two_sided and np.mean(preds[i, top, :, j] - preds[i, bottom, :, j]) < 0:
            end, signs[k] = bottom, -1
        negative = start[i, :, j] < threshold
        pair_neg[k] = int(np.sum(negative))
        if pair_neg[k] == 0:
            pair_eff[k] = np.nan
        else:
            delta = preds[i, end, negative, j] - start[i, negative, j]
            pair_eff[k] = float(np.mean(delta) / abs(grid[end]))
    finite = pair_eff[np.isfinite(pair_eff)]
    efficiency = float(np.mean(finite)) if finite.size else float("nan")
    return WalkScores(efficiency, disentanglement, np.stack([rows, cols], axis=1).astype(np.int64),
                      pair_eff, pair_neg, signs, response, grid,
                      np.mean(preds, axis=2), np.std(preds, axis=2))


def _pair_labels(scores: WalkScores, direction_names, attribute_names):
    labels = []
    for (i, j), e in zip(scores.assignment, scores.pair_efficiency):
        dn = direction_names[i] if direction_names is not None else f"direction {i}"
        an = attribute_names[j] if attribute_names is not None else f"attribute {j}"
        labels.append(f"{dn} -> {an}  S_e={e:.3g}")
    return labels


def _plot_matplotlib(scores, path, labels, ncols):
    # The Agg canvas on a bare Figure: no pyplot, no global backend switch.
    require("matplotlib", feature="plotting walk curves with matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    npairs = len(labels)
    nrows = -(-npairs // ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.6 * nrows), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    x = scores.distances
    for k, ((i, j), label) in enumerate(zip(scores.assignment, labels)):
        ax = axes[k // ncols][k % ncols]
        mean, std = scores.curve_mean[i, :, j], scores.curve_std[i, :, j]
        ax.plot(x, mean, color="C0")
        ax.fill_between(x, mean - std, mean + std, color="C0", alpha=0.25)
        ax.axhline(0.5, color="0.6", lw=0.8, ls="--")
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("latent distance", fontsize=8)
        ax.set_ylabel("prediction", fontsize=8)
        ax.tick_params(labelsize=7)
    for k in range(npairs, nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    fig.suptitle(f"S_e = {scores.efficiency:.3g}   S_d = {scores.disentanglement:.3g}", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"), suffix=".png", fsync=False)


def _plot_pillow(scores, path, labels, ncols):
    require("PIL", "demo", feature="plotting walk curves (with matplotlib or pillow)")
    from PIL import Image, ImageDraw

    w, h, pad = 320, 220, 30
    npairs = len(labels)
    nrows = -(-npairs // ncols)
    img = Image.new("RGB", (w * ncols, h * nrows + 20), "white")
    draw = ImageDraw.Draw(img)
    draw.text((5, 3), f"S_e = {scores.efficiency:.3g}   S_d = {scores.disentanglement:.3g}",
              fill="black")
    x = scores.distances
    for k, ((i, j), label) in enumerate(zip(scores.assignment, labels)):
        ox, oy = (k % ncols) * w, (k // ncols) * h + 20
        mean, std = scores.curve_mean[i, :, j], scores.curve_std[i, :, j]
        lo, hi = float(np.min(mean - std)), float(np.max(mean + std))
        lo, hi = min(lo, 0.0), max(hi, 1.0)
        span_x = float(x[-1] - x[0]) or 1.0

        def px(t, y):
            return (ox + pad + (t - x[0]) / span_x * (w - 2 * pad),
                    oy + h - pad - (y - lo) / (hi - lo) * (h - 2 * pad))

        (x0, y0), (x1, y1) = px(x[0], hi), px(x[-1], lo)
        draw.rectangle([x0, y0, x1, y1], outline="gray")
        for curve, colour in ((mean - std, (150, 180, 230)), (mean + std, (150, 180, 230)),
                              (mean, (20, 60, 200))):
            draw.line([px(t, y) for t, y in zip(x, curve)], fill=colour, width=2)
        draw.text((ox + 5, oy + 3), label, fill="black")
    atomic_write(path, lambda f: img.save(f, format="PNG"), suffix=".png", fsync=False)


def plot_walk_curves(scores: WalkScores, path: str | os.PathLike, *,
                     direction_names: Sequence[str] | None = None,
                     attribute_names: Sequence[str] | None = None,
                     ncols: int = 4, backend: str = "auto") -> str:
    """Plot, for every matched pair, the mean +- std of the prediction vs distance.

    Args:
      scores: :class:`WalkScores`.
      path: PNG file to write.
      direction_names, attribute_names: optional labels.
      ncols: panels per row.
      backend: ``'matplotlib'`` (Agg, no display needed), ``'pillow'``, or
        ``'auto'`` (matplotlib when it imports, pillow otherwise).

    Returns:
      The path written, as a string.

    Examples:
      >>> import os, tempfile, numpy as np
      >>> from jaxfactor.metrics.walks import WalkPredictions, plot_walk_curves, walk_scores
      >>> rng = np.random.default_rng(0)
      >>> walk = WalkPredictions(np.array([-1.0, 0.0, 1.0]), rng.uniform(size=(2, 3, 5, 2)))
      >>> scores = walk_scores(walk)
      >>> with tempfile.TemporaryDirectory() as d:   # matplotlib's Agg canvas: no display needed
      ...     path = plot_walk_curves(scores, os.path.join(d, "walks.png"), backend="matplotlib")
      ...     os.path.getsize(path) > 0
      True
    """
    if backend not in ("auto", "matplotlib", "pillow"):
        raise ValueError(f"backend must be 'auto', 'matplotlib' or 'pillow', got {backend!r}")
    labels = _pair_labels(scores, direction_names, attribute_names)
    ncols = max(1, min(ncols, len(labels)))
    path = os.fspath(path)
    if backend in ("auto", "matplotlib"):
        try:
            _plot_matplotlib(scores, path, labels, ncols)
            return path
        except ImportError:
            if backend == "matplotlib":
                raise
    _plot_pillow(scores, path, labels, ncols)
    return path
