"""``SCA``: the estimator over :mod:`jaxfactor.sca`."""
from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from .. import _params as P
from .. import _validation as V
from .._base import Factorizer
from .._policy import (
    Plan,
    choose_reduced_rank,
    choose_rotation_precision,
    choose_sca_acceleration,
    choose_svd_solver,
    platform_of,
    range_method_of,
)
from .._status import report
from ..sca import (ACCELERATIONS, ROTATION_PRECISIONS, ROTATIONS, STOP_RULES, default_gamma,
                   sca, sca_source)
from ..sharding import shard_rows

__all__ = ["SCA"]


class SCA(Factorizer):
    """Sparse component analysis (Chen & Rohe), the method of R's ``epca::sca``.

    Finds sparse loadings ``Y`` (``p x k``, ``||Y||_1 <= gamma``) and an
    orthonormal ``Z`` with ``X_c ~ Z B Y^T``: a varimax-rotated, soft-thresholded
    PCA basis that keeps nearly PCA's explained variance with many exact zeros.
    See :mod:`jaxfactor.sca` for the algorithm.

    Args:
      n_components: ``k`` in ``[1, min(n, p)]``; ``None`` for ``min(n, p)``.
      gamma: L1 budget of the whole loading matrix; ``None`` for ``sqrt(p k)``.
        Meaningful values lie in ``[k, k sqrt(p)]``: below ``k`` unit columns
        cannot meet it (the loadings shrink below unit norm), above
        ``k sqrt(p)`` it never binds (SCA is then varimax-rotated PCA). Values
        outside that range give a ``UserWarning``; ``gamma <= 0`` or
        non-finite a ``ValueError``.
      rotate: ``'varimax'`` (SCA) or ``'none'`` (no rotation: sparse matrix
        approximation with the SVD basis, epca's ``sma`` without rotation).
      max_iter: iteration cap (``ConvergenceWarning`` when reached).
      tol: epca's ``epsilon``: stop when the change of ``Z`` and of ``Y`` (see
        ``stop_rule``) is below ``tol``; varimax stops at a relative growth
        of ``tol / sqrt(m)`` of its criterion (``m`` rows rotated), as epca.
      reduced_rank: ``None`` (iterate on ``X``), ``r >= k`` (iterate on the
        rank-``r`` randomized SVD of ``X_c``: much cheaper per iteration for
        large ``n x p``; an approximation, see :func:`sca_iterate_reduced`),
        or ``'auto'`` (:func:`jaxfactor._policy.choose_reduced_rank`: ``X`` itself for small
        ``n p``, rank ``2k + 10`` above). Row sources always use the reduced
        variant (``None`` and ``'auto'`` then mean rank ``2k + 10``).
      svd_solver: initial SVD: ``'auto'``, ``'full'`` or ``'randomized'``.
      varimax_start: ``'identity'`` (restart each varimax from ``I`` and run
        it to R's tolerance, as ``epca``: the reference method) or
        ``'previous'`` (ten varimax steps per call from the previous
        iterate's rotation) or ``'converged'`` (from the same start, each
        varimax run to a stationary point by Barzilai-Borwein ascent: at
        ``p = 16384, k = 50`` the fast path that converges); see
        :func:`jaxfactor.sca.sca_iterate`.
      stop_rule: ``'epca'`` (epca's Hungarian-matched sum over unit-normalised
        columns of the largest entry change) or ``'max_entry'`` (the largest
        entry change of any matched column; the rule before epca's).
      rotation_precision: ``'auto'``
        (:func:`jaxfactor._policy.choose_rotation_precision`: float64 rotations
        unless ``tol`` is loose enough for float32), ``'float32'`` or
        ``'float64'``; the products with ``X`` stay in the data's dtype.
      acceleration: ``'auto'`` (:func:`jaxfactor._policy.choose_sca_acceleration`:
        ``'anderson'`` with the identity-restarted and the converged warm rotations),
        ``'anderson'``
        (Anderson mixing of epca's fixed-point map once it has settled: the same
        fixed point, to within what epca's stopping rule leaves, in fewer
        iterations; ``benchmarks/results/bench_sca.md``) or ``'none'`` (epca's
        plain iteration, its iterates one by one: the exact reference path).
      block_rows: rows per block when ``X`` is a row source.
      mesh: a ``jax.sharding.Mesh`` (:func:`jaxfactor.sharding.row_mesh`)
        to split the rows of an in-memory ``X`` over its devices (padded to
        a multiple of the mesh size with the column mean; the padding
        changes nothing), or each block of a row source (zero-padded, the
        padding masked out); ``None`` runs on the default device.
      random_state: ``None`` (key 0: unseeded fits are reproducible), an int,
        a numpy generator or a ``jax.random`` key.
      checkpoint: ``None`` or a path (``str`` or ``os.PathLike``) of a
        ``.npz`` checkpoint file for the fit of a row source (ignored for
        in-memory ``X``): a fit interrupted during its passes over the rows
        and repeated with the same data and parameters resumes from it and
        gives the same result; the file is removed when the fit completes. A
        file of another run is refused (``ValueError``).
      checkpoint_every: int ``>= 1``, blocks between checkpoints.

    Attributes:
      components_: ``(k, p)`` sparse loadings (``Y^T``), ordered by explained
        variance, each with a positive sum of cubes.
      mean_: ``(p,)``.
      B_: ``(k, k)`` ``Z^T X_c Y``.
      explained_variance_ratio_: ``(k,)`` CUMULATIVE proportion of variance
        explained by the span of the first ``j`` loadings (projection-based,
        as ``epca``'s ``cpve``; unlike ``PCA.explained_variance_ratio_``, which is
        per component).
      sparsity_: fraction of exact zeros in ``components_``.
      gamma_: the budget used; objective_: ``||B_||_F``.
      n_iter_: iterations run; converged_: bool.
      reduced_rank_: the rank the iteration ran on (``None``: on ``X``).
      rotation_precision_: the precision the varimax rotations ran in.
      acceleration_: the outer iteration that ran (``'anderson'`` or ``'none'``).
      plan_: the :class:`jaxfactor._policy.Plan` the fit ran.
      n_components_, n_samples_, n_features_in_: ints.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor import SCA
      >>> x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
      >>> sca = SCA(n_components=2, random_state=0).fit(x)
      >>> sca.components_.shape, sca.transform(x).shape, 0.0 <= sca.sparsity_ <= 1.0
      ((2, 8), (50, 2), True)
    """

    def __init__(self, n_components=None, *, gamma=None, rotate="varimax", max_iter=1000,
                 tol=1e-5, reduced_rank=None, svd_solver="auto", varimax_start="identity",
                 stop_rule="epca", rotation_precision="auto", acceleration="auto",
                 block_rows=4096, mesh=None, random_state=None, checkpoint=None,
                 checkpoint_every=16):
        self.n_components = n_components
        self.gamma = gamma
        self.rotate = rotate
        self.max_iter = max_iter
        self.tol = tol
        self.reduced_rank = reduced_rank
        self.svd_solver = svd_solver
        self.varimax_start = varimax_start
        self.stop_rule = stop_rule
        self.rotation_precision = rotation_precision
        self.acceleration = acceleration
        self.block_rows = block_rows
        self.mesh = mesh
        self.random_state = random_state
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every

    _parameter_constraints = {
        **P.shared("n_components", "max_iter", "tol", "block_rows", "mesh", "random_state",
                   "checkpoint", "checkpoint_every"),
        "gamma": [P.Constant(None), P.Interval(float, 0, None, closed="neither")],
        "rotate": [P.Options(*ROTATIONS)],
        "reduced_rank": [P.Constant(None), P.Options("auto"), P.Interval(int, 1, None)],
        "svd_solver": [P.Options("auto", "full", "randomized")],
        "varimax_start": [P.Options("previous", "identity", "converged")],
        "stop_rule": [P.Options(*STOP_RULES)],
        "rotation_precision": [P.Options("auto", *ROTATION_PRECISIONS)],
        "acceleration": [P.Options("auto", *ACCELERATIONS)],
    }

    def _check_params(self, n, p, in_memory=True):
        k = V.check_n_components(self.n_components, n, p)
        r = self.reduced_rank
        if r is not None and r != "auto":
            if not k <= r <= min(n, p):
                raise ValueError(f"reduced_rank={r} must lie between n_components={k} and "
                                 f"min(n_samples, n_features)={min(n, p)}")
        gamma = default_gamma(p, k) if self.gamma is None else float(self.gamma)
        if gamma < k:
            warnings.warn(f"gamma={gamma:.4g} < n_components={k}: unit-norm loadings cannot meet "
                          f"the budget, so they are shrunk below unit norm", UserWarning,
                          stacklevel=3)
        elif gamma > k * math.sqrt(p):
            warnings.warn(f"gamma={gamma:.4g} > n_components * sqrt(n_features)="
                          f"{k * math.sqrt(p):.4g}: the budget is inactive and the loadings "
                          f"are varimax-rotated principal axes (not sparse)", UserWarning,
                          stacklevel=3)
        return k, gamma, choose_reduced_rank(r, n, p, k, in_memory=in_memory)

    def _fit(self, X):
        arr, source, n, p, dtype, _ = self._intake_rows(X)
        k, gamma, rank = self._check_params(n, p, in_memory=source is None)
        key = V.check_random_state_key(self.random_state)
        # the initial SVD is chosen here, once, and recorded in plan_
        solver = ("streaming" if source is not None else "randomized" if rank is not None
                  else choose_svd_solver(self.svd_solver, n, p, k, True))
        precision = choose_rotation_precision(self.rotation_precision, n, p, float(self.tol), dtype)
        acceleration = choose_sca_acceleration(
            self.acceleration, self.varimax_start if self.rotate == "varimax" else "identity")
        common = dict(key=key, gamma=gamma, tol=float(self.tol), max_iter=int(self.max_iter),
                      rotate=self.rotate, varimax_start=self.varimax_start,
                      stop_rule=self.stop_rule, rotation_precision=precision,
                      acceleration=acceleration)
        if source is not None:
            res = sca_source(source, k, reduced_rank=rank, block_rows=int(self.block_rows),
                             dtype=dtype, mesh=self.mesh, checkpoint=self.checkpoint,
                             checkpoint_every=int(self.checkpoint_every), **common)
        else:
            if self.mesh is not None:
                # rows equal to the mean: zero in every centred product
                arr, _ = shard_rows(arr, self.mesh)
            res = sca(arr, k, reduced_rank=rank, svd_solver=solver, n_valid=n, **common)
        res = jax.block_until_ready(res)  # inside fit's BLAS thread limit
        self.components_ = np.asarray(res.loadings).T.copy()
        self.mean_ = np.asarray(res.mean)
        self.B_ = np.asarray(res.b)
        self.explained_variance_ratio_ = np.asarray(res.explained_variance_ratio)
        self.sparsity_ = float(np.mean(self.components_ == 0))
        self.gamma_ = gamma
        self.objective_ = float(res.objective)
        self.n_iter_ = int(res.n_iter)
        self.reduced_rank_ = rank
        self.rotation_precision_ = precision
        self.acceleration_ = acceleration
        self.plan_ = Plan(solver, *range_method_of(solver, "krylov", None), reduced_rank=rank,
                          platform=platform_of(self.mesh))
        self.converged_ = bool(res.converged)
        self.n_components_ = k
        self.n_samples_ = int(n)
        self.status_ = report("SCA", res.status, n_iter=self.n_iter_, change=float(res.change),
                              tol=float(self.tol))
        return self

    def inverse_transform(self, X):
        """Data-space points from scores: ``X pinv(Y) + mean_``.

        For scores ``S = X_c Y`` this is the orthogonal projection of ``X_c``
        onto the span of the loadings (``Y`` need not be orthonormal), so
        ``inverse_transform(transform(X))`` is the rank-``k`` reconstruction
        whose share of variance is ``explained_variance_ratio_[-1]``.

        Args:
          X: ``(n, k)`` scores.

        Returns:
          ``(n, p)``, the same kind of array as ``X``.
        """
        arr, kind = self._intake_scores(X)
        back = np.linalg.pinv(self.components_.T.astype(np.float64)).astype(arr.dtype)
        out = arr @ jnp.asarray(back) + jnp.asarray(self.mean_, arr.dtype)
        return V.restore_kind(out, kind)
