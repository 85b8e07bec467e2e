"""Fréchet distance between Gaussians fitted to feature sets (the FID's number).

For feature sets summarised by means ``mu`` and covariances ``S`` (Heusel et
al., 2017, "GANs trained by a two time-scale update rule converge to a local
Nash equilibrium")::

    FD = ||mu1 - mu2||^2 + tr S1 + tr S2 - 2 tr (S1^(1/2) S2 S1^(1/2))^(1/2)

The last trace is computed through two *symmetric* eigendecompositions --
``S1 = U diag(l) U^T`` gives ``S1^(1/2) = U diag(sqrt(l)) U^T``, and the
eigenvalues ``m`` of the symmetric ``S1^(1/2) S2 S1^(1/2)`` give
``tr(...)^(1/2) = sum sqrt(m)`` -- never the general (non-symmetric) matrix
square root of ``S1 S2`` that pytorch-fid takes with ``scipy.linalg.sqrtm``.
Rounding can only produce tiny negative eigenvalues of these positive
semi-definite matrices; eigenvalues below the rounding level
``d eps max|eig|`` (negative ones included) are set to zero, so that the null
directions of a singular covariance add no ``sqrt(rounding)`` noise to the
trace. The result is real by construction, also when the covariances are
singular (fewer samples than feature dimensions), where ``sqrtm`` returns
complex noise.

Precision: the eigendecompositions run in float64 inside a local
``jax.enable_x64`` scope (the inputs are only ``d x d``; the global x64 flag
is left as it is), and the final sums are formed in numpy float64. Feature
statistics are accumulated blockwise in float64 the same way, with
:func:`jaxfactor.accumulate.moments` (Chan's pairwise merge), so a stream of
feature blocks never needs to be held in memory at once. Should a JAX version
offer no local x64 scope, the kernels run in float32 and only the final sums
are float64.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..accumulate import moments
from ..sources import RowSource

__all__ = [
    "FeatureStatistics",
    "FrechetTerms",
    "feature_statistics",
    "frechet_terms",
    "frechet_distance",
    "frechet_distance_from_features",
]


class FeatureStatistics(NamedTuple):
    """Mean and covariance of a feature set.

    Attributes:
      n_samples: number of feature vectors summarised.
      mean: ``(d,)`` float64.
      covariance: ``(d, d)`` float64, unbiased (``ddof=1``).
    """

    n_samples: int
    mean: np.ndarray
    covariance: np.ndarray


class FrechetTerms(NamedTuple):
    """The Fréchet distance and its parts (all Python floats).

    Attributes:
      distance: ``mean_term + trace1 + trace2 - 2 trace_sqrt_product``,
        clipped at 0 (the exact value is a squared Wasserstein-2 distance).
      mean_term: ``||mu1 - mu2||^2``.
      trace1, trace2: ``tr S1``, ``tr S2``.
      trace_sqrt_product: ``tr (S1^(1/2) S2 S1^(1/2))^(1/2)``.
    """

    distance: float
    mean_term: float
    trace1: float
    trace2: float
    trace_sqrt_product: float


def _x64_scope():
    """A context in which JAX computes in float64, local to this call."""
    scope = getattr(jax, "enable_x64", None)
    if scope is not None:
        return scope(True)
    try:  # older JAX
        from jax.experimental import enable_x64  # type: ignore[attr-defined]
        return enable_x64()
    except ImportError:  # pragma: no cover - no local scope: float32 kernels
        return contextlib.nullcontext()


@jax.jit
def _sqrt_product_eigenvalues(sigma1: jax.Array, sigma2: jax.Array) -> jax.Array:
    """Eigenvalues of ``S1^(1/2) S2 S1^(1/2)`` for symmetric PSD ``S1, S2``.

    Args:
      sigma1, sigma2: ``(d, d)`` symmetric positive semi-definite.

    Returns:
      ``(d,)`` eigenvalues (ascending; rounding may leave tiny negatives).
    """
    s1 = 0.5 * (sigma1 + sigma1.T)
    s2 = 0.5 * (sigma2 + sigma2.T)
    w1, u1 = jnp.linalg.eigh(s1)
    root1 = (u1 * jnp.sqrt(_drop_rounding(w1))) @ u1.T
    product = root1 @ s2 @ root1
    return jnp.linalg.eigvalsh(0.5 * (product + product.T))


def _drop_rounding(w):
    """Eigenvalues of a PSD matrix with those below its rounding level
    ``d eps max|w|`` set to 0 (negative ones included): their square roots
    would add ``sqrt(rounding)`` noise per null direction of a singular
    covariance."""
    xp = jnp if isinstance(w, jax.Array) else np
    tol = w.shape[0] * xp.finfo(w.dtype).eps * xp.max(xp.abs(w))
    return xp.where(w > tol, w, 0.0)


def _as_float64(x, name: str) -> np.ndarray:
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} has dtype {arr.dtype}; a real numeric array is needed")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains {int(np.sum(np.isnan(arr)))} NaN and "
                         f"{int(np.sum(np.isinf(arr)))} inf values")
    return arr


def frechet_terms(mu1, sigma1, mu2, sigma2) -> FrechetTerms:
    """Fréchet distance between ``N(mu1, S1)`` and ``N(mu2, S2)`` with its parts.

    ``FD = ||mu1 - mu2||^2 + tr S1 + tr S2 - 2 tr (S1^(1/2) S2 S1^(1/2))^(1/2)``
    (Dowson & Landau, 1982; the FID of Heusel et al., 2017), the trace of the
    square root from symmetric eigendecompositions in float64 (module
    docstring).

    Args:
      mu1, mu2: ``(d,)`` means (numpy, JAX or torch; any real dtype).
      sigma1, sigma2: ``(d, d)`` symmetric positive semi-definite covariances.

    Returns:
      :class:`FrechetTerms`.

    Raises:
      ValueError: shapes that do not match, NaN or inf.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.metrics.frechet import frechet_terms
      >>> t = frechet_terms(np.zeros(3), np.eye(3), np.ones(3), 4 * np.eye(3))
      >>> bool(np.isclose(t.mean_term, 3)), bool(np.isclose(t.trace_sqrt_product, 6))
      (True, True)
      >>> bool(np.isclose(t.distance, 3 + 3 + 12 - 2 * 6))
      True
    """
    mu1 = _as_float64(mu1, "mu1")
    mu2 = _as_float64(mu2, "mu2")
    sigma1 = _as_float64(sigma1, "sigma1")
    sigma2 = _as_float64(sigma2, "sigma2")
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 must be vectors of the same length; got shapes "
                         f"{mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    for name, s in (("sigma1", sigma1), ("sigma2", sigma2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must have shape {(d, d)} to match the means; got {s.shape}")
    with _x64_scope():
        eig = _sqrt_product_eigenvalues(jnp.asarray(sigma1), jnp.asarray(sigma2))
        eig = _drop_rounding(np.asarray(eig))
    diff = mu1 - mu2
    mean_term = float(diff @ diff)
    trace1 = float(np.trace(sigma1))
    trace2 = float(np.trace(sigma2))
    trace_sqrt = float(np.sum(np.sqrt(eig.astype(np.float64))))
    distance = max(mean_term + trace1 + trace2 - 2.0 * trace_sqrt, 0.0)
    return FrechetTerms(distance, mean_term, trace1, trace2, trace_sqrt)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between ``N(mu1, S1)`` and ``N(mu2, S2)``.

    ``||mu1 - mu2||^2 + tr S1 + tr S2 - 2 tr (S1^(1/2) S2 S1^(1/2))^(1/2)``;
    see :func:`frechet_terms` for the parts and the arguments.

    Returns:
      The distance as a Python float (>= 0).

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.metrics.frechet import frechet_distance
      >>> bool(np.isclose(frechet_distance(np.zeros(2), np.eye(2), np.full(2, 2.0), np.eye(2)), 8.0))
      True
    """
    return frechet_terms(mu1, sigma1, mu2, sigma2).distance


def _blocks(features: Any, block_rows: int) -> Iterable[Any]:
    if isinstance(features, RowSource) or all(
            hasattr(features, a) for a in ("n_samples", "n_features", "read", "blocks")):
        return features.blocks(block_rows)
    if hasattr(features, "shape") and len(getattr(features, "shape")) == 2:
        n = features.shape[0]
        return (features[lo:lo + block_rows] for lo in range(0, n, block_rows))
    if isinstance(features, (list, tuple)) and features and np.ndim(features[0]) == 1:
        arr = np.asarray(features)  # a list of feature vectors
        return (arr[lo:lo + block_rows] for lo in range(0, arr.shape[0], block_rows))
    return features  # an iterable of (b, d) blocks


def feature_statistics(features, *, block_rows: int = 1024) -> FeatureStatistics:
    """Mean and covariance of feature vectors, accumulated blockwise in float64.

    Blocks are folded into :func:`jaxfactor.accumulate.moments` (each block
    centred on its own mean, blocks merged by Chan's rule), inside a local
    float64 scope; nothing but one block and the ``(d, d)`` state is held.

    Args:
      features: ``(n, d)`` array (numpy, JAX or torch), a row source (anything
        with ``blocks(block_rows)``), or any iterable of ``(b_i, d)`` blocks
        (e.g. a generator that renders and embeds images batch by batch).
      block_rows: rows per block when ``features`` is an array or a source.

    Returns:
      :class:`FeatureStatistics` with float64 mean and ``ddof=1`` covariance.

    Raises:
      ValueError: fewer than 2 rows, blocks of different widths, NaN or inf.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.metrics.frechet import feature_statistics
      >>> feats = np.random.default_rng(0).normal(size=(50, 4))
      >>> st = feature_statistics(feats, block_rows=16)
      >>> st.n_samples, st.mean.dtype, bool(np.allclose(st.covariance, np.cov(feats.T)))
      (50, dtype('float64'), True)
    """
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    acc = None
    state = None
    width = None
    with _x64_scope():
        for i, block in enumerate(_blocks(features, block_rows)):
            if type(block).__module__.startswith("torch"):
                block = block.detach().cpu().numpy()
            block = jnp.asarray(block)
            if block.ndim != 2:
                raise ValueError(f"feature block {i} has shape {block.shape}; (rows, d) is expected")
            if block.shape[0] == 0:
                continue
            if acc is None:
                width = block.shape[1]
                acc = moments(width, covariance=True, ddof=1, dtype=jnp.float64)
                state = acc.init()
            elif block.shape[1] != width:
                raise ValueError(f"feature block {i} has {block.shape[1]} columns; earlier "
                                 f"blocks had {width}")
            if not bool(jnp.all(jnp.isfinite(block))):
                raise ValueError(f"feature block {i} contains NaN or inf values")
            state = acc.update(state, block)
        if acc is None or int(state.count) < 2:
            n = 0 if state is None else int(state.count)
            raise ValueError(f"at least 2 feature vectors are needed for a covariance; got {n}")
        result = acc.finalize(state)
        mean = np.asarray(result.mean, dtype=np.float64)
        cov = np.asarray(result.covariance, dtype=np.float64)
    return FeatureStatistics(int(result.n_samples), mean, 0.5 * (cov + cov.T))


def frechet_distance_from_features(features1, features2, *, block_rows: int = 1024) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID).

    Args:
      features1, features2: each an ``(n_i, d)`` array, a row source, an
        iterable of ``(b, d)`` blocks (see :func:`feature_statistics`), or
        already computed :class:`FeatureStatistics` (to reuse a reference set).
      block_rows: rows per block for arrays and sources.

    Returns:
      ``frechet_distance(mu1, S1, mu2, S2)`` as a Python float.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.metrics.frechet import frechet_distance_from_features
      >>> rng = np.random.default_rng(0)
      >>> a, b = rng.normal(size=(200, 4)), rng.normal(loc=1.0, size=(200, 4))
      >>> frechet_distance_from_features(a, a) < 1e-6, frechet_distance_from_features(a, b) > 1.0
      (True, True)
    """
    stats = []
    for f in (features1, features2):
        stats.append(f if isinstance(f, FeatureStatistics)
                     else feature_statistics(f, block_rows=block_rows))
    (_, mu1, s1), (_, mu2, s2) = stats
    if mu1.shape != mu2.shape:
        raise ValueError(f"the feature sets have different widths: {mu1.shape[0]} and {mu2.shape[0]}")
    return frechet_distance(mu1, s1, mu2, s2)
