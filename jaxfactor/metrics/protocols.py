"""The evaluation protocols of the source papers, generic over callables.

:func:`edit_fid` is the edit-FID protocol of Palaev, Lukmanov & Khan (ICLR 2023
Tiny Papers, "GANSpace with PCA vs ICA"): generate ``M`` images, edit each by
one randomly chosen direction with a random strength, and report the FID
between the original and the edited set (lower: the edits keep images
realistic). Nothing here knows about a particular generator or feature
network: the caller passes

* ``render``: ``latents (b, *latent_shape) numpy -> images (b, H, W, C)``
  (uint8 or float; whatever ``feature_fn`` accepts), and
* ``feature_fn``: ``images -> (b, d)`` features (e.g.
  ``bridges.features.InceptionFeatures`` for the standard FID, or an
  in-domain classifier's penultimate layer).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from .frechet import FeatureStatistics, feature_statistics, frechet_distance

__all__ = ["EditFIDResult", "edit_choices", "edit_fid"]

ALPHA_DISTRIBUTIONS = ("uniform", "normal")


class EditFIDResult(NamedTuple):
    """Outcome of :func:`edit_fid`.

    Attributes:
      fid: the Fréchet distance between original and edited feature sets.
      direction_index: ``(M,)`` int64, the direction applied to image ``m``.
      alpha: ``(M,)`` float64, the strength applied to image ``m``.
      alpha_range: the ``a`` of the draw.
      alpha_dist: ``'uniform'`` (``alpha ~ U[-a, a]``) or ``'normal'``
        (``alpha = a N(0, 1)``).
      seed: the seed the choices were drawn with.
      original_statistics, edited_statistics: :class:`FeatureStatistics` of
        both sets (pass ``original_statistics`` back in to skip re-rendering
        the originals, e.g. for the second strength).
    """

    fid: float
    direction_index: np.ndarray
    alpha: np.ndarray
    alpha_range: float
    alpha_dist: str
    seed: int
    original_statistics: FeatureStatistics
    edited_statistics: FeatureStatistics


def latents_and_directions(latents, directions):
    """Check and shape ``(M, *latent_shape)`` latents and ``(K, *latent_shape)``
    directions (one direction may come without its leading axis); returns
    them as numpy arrays, the directions in float64."""
    latents = np.asarray(latents)
    directions = np.asarray(directions, dtype=np.float64)
    if latents.ndim < 2:
        raise ValueError(f"latents must be (M, *latent_shape); got shape {latents.shape}")
    if directions.ndim == latents.ndim - 1:
        directions = directions[None]
    if directions.shape[1:] != latents.shape[1:]:
        raise ValueError(f"directions have shape {directions.shape}; expected "
                         f"(K, {', '.join(map(str, latents.shape[1:]))}) to match the latents")
    return latents, directions


def edit_choices(n_images: int, n_directions: int, *, alpha_range: float = 3.0,
                 alpha_dist: str = "uniform", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The per-image random choices of the edit-FID protocol.

    Draws, with ``numpy.random.default_rng(seed)``, first the direction indices
    ``k_m ~ U{0, ..., K-1}`` and then standard strengths ``u_m``
    (``U[-1, 1]`` or ``N(0, 1)``), returning ``alpha_m = a u_m``. The same seed
    thus gives the same directions and the same standard draws for every
    ``a``, so the ``a = 3`` and ``a = 6`` runs differ only by the scale.

    Args:
      n_images: ``M``; n_directions: ``K``.
      alpha_range: ``a > 0``.
      alpha_dist: ``'uniform'`` (the papers' statement, ``alpha ~ U[-a, a]``)
        or ``'normal'`` (``alpha = a N(0, 1)``, what the first paper's code
        drew with ``a = 6``).
      seed: int seed.

    Returns:
      ``(direction_index (M,) int64, alpha (M,) float64)``.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.metrics.protocols import edit_choices
      >>> index, alpha = edit_choices(5, 3, alpha_range=3.0, seed=0)
      >>> index.shape, index.dtype, bool(np.all(index < 3)), bool(np.all(np.abs(alpha) <= 3))
      ((5,), dtype('int64'), True, True)
      >>> bool(np.allclose(edit_choices(5, 3, alpha_range=6.0, seed=0)[1], 2 * alpha))
      True
    """
    if alpha_dist not in ALPHA_DISTRIBUTIONS:
        raise ValueError(f"alpha_dist must be one of {ALPHA_DISTRIBUTIONS}, got {alpha_dist!r}")
    if not (np.isfinite(alpha_range) and alpha_range > 0):
        raise ValueError(f"alpha_range must be a positive number, got {alpha_range!r}")
    if n_images < 2:
        raise ValueError(f"at least 2 images are needed for a FID, got {n_images}")
    if n_directions < 1:
        raise ValueError("at least one direction is needed")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n_directions, size=n_images).astype(np.int64)
    if alpha_dist == "uniform":
        unit = rng.uniform(-1.0, 1.0, size=n_images)
    else:
        unit = rng.standard_normal(n_images)
    return index, float(alpha_range) * unit


def edit_fid(render: Callable, latents, directions, feature_fn: Callable, *,
             alpha_range: float = 3.0, alpha_dist: str = "uniform", seed: int = 0,
             normalize: bool = True, batch_size: int = 50,
             original_statistics: FeatureStatistics | None = None) -> EditFIDResult:
    """Edit FID: FID between ``M`` generated images and their random edits.

    Image ``m`` comes from latent ``z_m``; its edit from
    ``z_m + alpha_m v_{k_m}`` with ``k_m`` uniform over the ``K`` directions
    and ``alpha_m ~ U[-a, a]`` (or ``a N(0, 1)``), drawn by
    :func:`edit_choices`. Returns ``FD(features(originals), features(edits))``
    (Palaev, Lukmanov & Khan 2023: ``M = 1000``, ``a = 3`` and ``a = 6``).
    Images are rendered and embedded ``batch_size`` at a time and their
    feature statistics accumulated blockwise, so no image set is held whole.

    Args:
      render: ``(b, *latent_shape) numpy float -> images``, deterministic.
      latents: ``(M, *latent_shape)`` latents of the originals (e.g. ``(M, d)``
        for z or W, ``(M, L, d)`` for W+).
      directions: ``(K, *latent_shape)``.
      feature_fn: ``images -> (b, d)`` features.
      alpha_range: ``a``.
      alpha_dist: ``'uniform'`` or ``'normal'``.
      seed: seed of the per-image choices.
      normalize: scale each direction to unit L2 norm first (so ``alpha`` is a
        latent distance); ``False`` uses the directions as given.
      batch_size: images per render / feature call.
      original_statistics: statistics of the originals from an earlier call
        with the same ``latents`` and ``feature_fn`` (skips their rendering).

    Returns:
      :class:`EditFIDResult` with the number and the per-image choices.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.metrics.protocols import edit_fid
      >>> latents = np.random.default_rng(0).normal(size=(40, 3))
      >>> identity = lambda a: a                    # render and features: the latents themselves
      >>> res = edit_fid(identity, latents, np.eye(3)[:2], identity, seed=0)
      >>> res.direction_index.shape, res.alpha.shape, res.fid > 0
      ((40,), (40,), True)
    """
    latents, directions = latents_and_directions(latents, directions)
    if not np.all(np.isfinite(directions)):
        raise ValueError("directions contain NaN or inf values")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if normalize:
        axes = tuple(range(1, directions.ndim))
        norms = np.sqrt(np.sum(directions ** 2, axis=axes, keepdims=True))
        if np.any(norms == 0):
            raise ValueError(f"direction(s) {np.flatnonzero(norms.ravel() == 0).tolist()} are zero; "
                             "they cannot be normalised")
        directions = directions / norms
    n = latents.shape[0]
    index, alpha = edit_choices(n, directions.shape[0], alpha_range=alpha_range,
                                alpha_dist=alpha_dist, seed=seed)
    work_dtype = latents.dtype if latents.dtype.kind == "f" else np.float64
    expand = (slice(None),) + (None,) * (latents.ndim - 1)

    def features_of(edit: bool):
        for lo in range(0, n, batch_size):
            hi = min(lo + batch_size, n)
            z = latents[lo:hi].astype(work_dtype)
            if edit:
                z = (z + alpha[lo:hi][expand] * directions[index[lo:hi]]).astype(work_dtype)
            yield np.asarray(feature_fn(render(z)))

    if original_statistics is None:
        original_statistics = feature_statistics(features_of(False))
    elif original_statistics.n_samples != n:
        raise ValueError(f"original_statistics summarise {original_statistics.n_samples} images, "
                         f"but {n} latents were given")
    edited_statistics = feature_statistics(features_of(True))
    fid = frechet_distance(original_statistics.mean, original_statistics.covariance,
                           edited_statistics.mean, edited_statistics.covariance)
    return EditFIDResult(fid, index, alpha, float(alpha_range), alpha_dist, seed,
                         original_statistics, edited_statistics)
