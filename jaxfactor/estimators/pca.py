"""``PCA``: the estimator over :mod:`jaxfactor.pca` and :mod:`jaxfactor.randomized`."""
from __future__ import annotations

import numbers

import jax.numpy as jnp
import numpy as np

from .. import _params as P
from .. import _validation as V
from .._base import Factorizer
from .._policy import (ADAPTIVE_METHODS, ADAPTIVE_TOL, SOLVERS, Plan, choose_svd_solver, platform_of,
                       range_method_of)
from ..accumulate import PRECISIONS
from ..pca import PCAResult, _finish, inverse_transform, pca_full
from ..randomized import randomized_svd, randomized_svd_source, range_params
from ..sharding import shard_rows
from ..sources import ArraySource

__all__ = ["PCA"]


class PCA(Factorizer):
    """Principal component analysis with exact, randomized and streaming solvers.

    A drop-in for ``sklearn.decomposition.PCA`` (same parameters where they
    overlap, same fitted attributes) that also fits replayable row sources
    (:mod:`jaxfactor.sources`, generator activation streams) without holding
    the ``(n, p)`` matrix.

    Args:
      n_components: ``k``: an int in ``[1, min(n, p)]``, ``None`` for
        ``min(n, p)``, or a float in ``(0, 1)`` for the smallest ``k`` whose
        components explain that fraction of the variance (``'full'`` only).
      solver: ``'auto'`` (see :mod:`jaxfactor._policy`), ``'full'`` (exact:
        covariance ``eigh`` or thin SVD), ``'randomized'`` (in-memory
        randomized SVD) or ``'streaming'`` (randomized SVD over row blocks;
        any input).
      whiten: scale transformed scores to unit variance.
      method: range finder of the randomized solvers: ``'auto'`` (default:
        ``'adaptive'`` in memory, ``'krylov'`` for a stream), ``'adaptive'``
        (accuracy-controlled shifted subspace iteration, run until ``tol`` is
        met; in-memory only), ``'krylov'`` (block Krylov, fixed ``n_iter``) or
        ``'subspace'`` (scikit-learn's power iteration, fixed ``n_iter``).
      tol: ``'adaptive'`` only: the relative shortfall of the captured variance
        to reach, ``1 - sum_k ev_i / sum_k ev_i(exact)``, estimated a
        posteriori from the convergence of the Ritz values (default
        :data:`jaxfactor._policy.ADAPTIVE_TOL`, ``4e-2``).
      n_oversamples, n_iter, block_size: range-finder sizes (defaults in
        :func:`jaxfactor.randomized.range_params` and
        :func:`jaxfactor._policy.adaptive_width`).
      block_rows: rows per block when reading a source.
      random_state: ``None`` (key 0: unseeded fits are reproducible), an int,
        a numpy generator or a ``jax.random`` key.
      mesh: a ``jax.sharding.Mesh`` (see :func:`jaxfactor.sharding.row_mesh`)
        to split rows over its devices: the whole in-memory ``X`` for
        ``'randomized'``, each row block for ``'streaming'`` (any input);
        ``None`` runs on the default device (the mesh of size one).
        ``'full'`` ignores it.
      precision: operand precision of the products with the data in the
        randomized solvers: ``'float32'`` (default, full float32), ``'tf32'``
        or ``'bf16'`` (float32 accumulation; meant for GPUs, where they run on
        tensor cores; accuracy measured in
        ``benchmarks/results/precision.md``). ``'full'`` ignores it.

    Attributes:
      components_: ``(k, p)`` principal axes, largest-magnitude entry of each
        positive.
      explained_variance_: ``(k,)``; explained_variance_ratio_: ``(k,)`` --
        exact for every solver (total variance from the same pass);
      singular_values_: ``(k,)``; mean_: ``(p,)``; noise_variance_: float;
      n_components_, n_samples_, n_features_in_: ints; solver_: the solver used;
      n_passes_: passes over the data the fit made;
      error_estimate_: ``'adaptive'``: the estimated relative shortfall of the
        captured variance reached (``None`` for the other methods);
      plan_: the :class:`jaxfactor._policy.Plan` the fit ran.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor import PCA
      >>> x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
      >>> pca = PCA(n_components=2).fit(x)
      >>> pca.components_.shape, pca.transform(x).shape, pca.solver_
      ((2, 8), (50, 2), 'full')
      >>> pca.inverse_transform(pca.transform(x)).shape
      (50, 8)
    """

    def __init__(self, n_components=None, *, solver="auto", whiten=False, method="auto",
                 tol=ADAPTIVE_TOL, n_oversamples=None, n_iter=None, block_size=None,
                 block_rows=4096,
                 random_state=None, mesh=None, precision="float32"):
        self.n_components = n_components
        self.solver = solver
        self.whiten = whiten
        self.method = method
        self.tol = tol
        self.n_oversamples = n_oversamples
        self.n_iter = n_iter
        self.block_size = block_size
        self.block_rows = block_rows
        self.random_state = random_state
        self.mesh = mesh
        self.precision = precision

    _parameter_constraints = {
        **P.shared("block_rows", "n_oversamples", "n_iter", "block_size", "random_state", "mesh",
                   "tol"),
        # beside the shared rule: a variance fraction, as scikit-learn's PCA
        "n_components": [*P.SHARED["n_components"], P.Interval(float, 0, 1, closed="neither")],
        "solver": [P.Options(*SOLVERS)],
        "whiten": [P.InstanceOf(bool, np.bool_, name="a bool")],
        "method": [P.Options("auto", "adaptive", "adaptive_krylov", "krylov", "subspace")],
        "precision": [P.Options(*PRECISIONS)],
    }

    # ---------------------------------------------------------------- checks
    def _check_params(self, n, p):
        k = self.n_components
        if isinstance(k, numbers.Real) and not isinstance(k, numbers.Integral):
            if self.solver not in ("auto", "full"):
                raise ValueError(f"n_components={k} (a variance fraction) needs solver='full', "
                                 f"got solver={self.solver!r}")
            return float(k)
        return V.check_n_components(k, n, p)

    # ------------------------------------------------------------------- fit
    def _fit(self, X):
        arr, source, n, p, dtype, _ = self._intake_rows(X)
        in_memory = source is None
        if in_memory:
            source = ArraySource(arr)
        k = self._check_params(n, p)
        solver = choose_svd_solver(self.solver, n, p, k, in_memory)
        if solver == "randomized" and not in_memory:
            raise ValueError("solver='randomized' needs an in-memory array; use solver='streaming' "
                             "for row sources")
        rank = min(n, p)
        key = V.check_random_state_key(self.random_state)
        if self.mesh is not None and in_memory and solver == "randomized":
            # mean-padded rows add nothing to centred products; see sharding.shard_rows
            arr, _ = shard_rows(arr, self.mesh)
        if solver == "full":
            res = pca_full(source, None, block_rows=self.block_rows, dtype=dtype)
            if isinstance(k, float):
                ratio = np.cumsum(np.asarray(res.explained_variance)) / float(res.total_variance)
                k = int(min(np.searchsorted(ratio, k, side="right") + 1, rank))
            res = _finish(res.components, res.explained_variance, n, res.mean,
                          res.total_variance, k, rank)
        else:
            method, _ = range_method_of(solver, self.method, self.n_iter)
            if method in ADAPTIVE_METHODS and solver == "streaming":
                raise ValueError(f"method={method!r} runs in memory only; use method='krylov' or "
                                 "'subspace' with solver='streaming'")
            kw = dict(key=key, method=method, n_oversamples=self.n_oversamples,
                      n_iter=self.n_iter, block_size=self.block_size, precision=self.precision)
            if method in ADAPTIVE_METHODS:
                kw.update(tol=self.tol, n_iter=None)
            if solver == "randomized":
                svd = randomized_svd(arr, k, center=True, compute_u=False, **kw)
                # sum of squared deviations over the (possibly mean-padded) rows / (n - 1)
                total = jnp.sum(jnp.var(arr, axis=0)) * arr.shape[0] / max(n - 1, 1)
            else:
                svd, mom = randomized_svd_source(source, k, center=True, block_rows=self.block_rows,
                                                 dtype=dtype, mesh=self.mesh, **kw)
                total = jnp.sum(mom.variance)
            ev = svd.s ** 2 / max(n - 1, 1)
            res = _finish(svd.vt, ev, n, svd.mean, total, k, rank)
        self._set_fitted(res, n, solver)
        self._set_passes(solver, svd if solver != "full" else None, n, p, k)
        self.plan_ = Plan(solver, *range_method_of(solver, self.method, self.n_iter),
                          precision="float32" if solver == "full" else self.precision,
                          platform=platform_of(self.mesh))
        return res

    def _set_passes(self, solver, svd, n, p, k):
        self.error_estimate_ = None
        if solver == "full":
            self.n_passes_ = 1
        elif hasattr(svd, "n_passes"):
            self.n_passes_ = int(svd.n_passes)
            self.error_estimate_ = float(svd.error)
        else:
            method, _ = range_method_of(solver, self.method, self.n_iter)
            params = range_params(k, n, p, method=method, n_oversamples=self.n_oversamples,
                                  n_iter=self.n_iter, block_size=self.block_size)
            # in memory X Z and X^T Y each read X; a stream fuses them into one pass per step.
            # In memory Krylov finishes with two narrow passes (randomized._krylov_normal_ritz)
            if solver == "streaming":
                self.n_passes_ = params.n_iter + 1
            else:
                self.n_passes_ = 2 * params.n_iter + (2 if params.method == "krylov" else 1)

    def _set_fitted(self, res: PCAResult, n, solver):
        self.components_ = np.asarray(res.components)
        self.explained_variance_ = np.asarray(res.explained_variance)
        total = float(res.total_variance)
        self.explained_variance_ratio_ = (self.explained_variance_ / total if total > 0
                                          else np.zeros_like(self.explained_variance_))
        self.singular_values_ = np.asarray(res.singular_values)
        self.mean_ = np.asarray(res.mean)
        self.noise_variance_ = float(res.noise_variance)
        self.n_components_ = int(self.components_.shape[0])
        self.n_samples_ = int(n)
        self.solver_ = solver

    # ------------------------------------------------------------- transforms
    def _score_scale(self):
        if not self.whiten:
            return None
        return jnp.sqrt(jnp.maximum(jnp.asarray(self.explained_variance_), jnp.finfo(jnp.float32).tiny))

    def inverse_transform(self, X):
        """Data-space points from scores: ``X components_ + mean_`` (scores
        multiplied back by ``sqrt(explained_variance_)`` when whitening).

        Args:
          X: ``(n, k)`` scores.

        Returns:
          ``(n, p)``, the same kind of array as ``X``.
        """
        arr, kind = self._intake_scores(X)
        out = inverse_transform(arr, jnp.asarray(self.components_, arr.dtype),
                                jnp.asarray(self.mean_, arr.dtype), self._score_scale())
        return V.restore_kind(out, kind)
