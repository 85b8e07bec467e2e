"""``FastICA``: the estimator over :mod:`jaxfactor.whitening` and :mod:`jaxfactor.ica`."""
from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _params as P
from .. import _validation as V
from .._base import Factorizer
from .._linalg import row_signs
from .._policy import (
    DECORRELATIONS,
    ICA_ALGORITHMS,
    WHITEN_SOLVERS,
    Plan,
    choose_decorrelation,
    choose_ica_algorithm,
    choose_whiten_range,
    choose_whiten_solver,
    SPURIOUS_K2_OVER_N,
    platform_of,
    random_start_is_trapped,
    whitening_rank_floor,
)
from .._status import MAX_ITER, NAMES, report
from .._validation import ConvergenceWarning
from ..ica import ALGORITHMS, CONTRASTS, fastica
from ..ica_init import reseed_init
from ..picard import PICARD_CONTRASTS, ica_criteria, picard_o
from ..sharding import shard_block, shard_rows
from ..metrics.stability import bootstrap_rows, ica_restarts, stability_index
from ..whitening import WhiteningResult, whiten, whiten_source

__all__ = ["FastICA"]

WHITEN_OPTIONS = ("unit-variance", "arbitrary-variance", False)


def _finish_whitened(white, w, components, s, unit_variance):
    """Feature-space unmixing/mixing from ``W`` and the whitening (NumPy).

    ``components_ = W' K`` with ``K = diag(1/s) Vt`` and ``W'`` the rows of
    ``W`` divided by the source standard deviations when ``unit_variance``;
    ``mixing_ = Vt^T diag(s) W'^{-1}`` (the pseudo-inverse of ``components_``,
    exact because ``Vt`` has orthonormal rows and ``W'`` is invertible).
    Small ``(k, k)`` algebra and two ``(k, k) x (k, p)`` products, so it runs
    in NumPy (float64 for the inverse) instead of compiling a program per shape.

    Returns:
      ``(unmixing (k, p), mixing (p, k), source_variance (k,))``, the source
      variances (``ddof=0``) of ``X_c components_^T``.
    """
    white, w = np.asarray(white), np.asarray(w)
    components, s = np.asarray(components), np.asarray(s)
    dtype = components.dtype
    n = white.shape[0]
    src = white @ w.T                          # = sqrt(n) X_c (W K)^T
    std = np.sqrt(np.mean(np.square(src, dtype=np.float64), axis=0) / n)
    scale = 1 / std if unit_variance else np.ones_like(std)
    w_scaled = w.astype(np.float64) * scale[:, None]
    unmixing = (w_scaled / s[None, :]).astype(dtype) @ components
    mixing = components.T @ (s[:, None] * np.linalg.inv(w_scaled)).astype(dtype)
    return unmixing, mixing, (std * scale) ** 2


def _finish_unwhitened(x, w):
    """Unmixing ``W``, mixing ``W^{-1}`` and source variances for ``whiten=False``."""
    w = np.asarray(w)
    src = np.asarray(x) @ w.T
    return w, np.linalg.inv(w.astype(np.float64)).astype(w.dtype), np.var(src, axis=0, dtype=np.float64)


class _Ordered(NamedTuple):
    """Components in their reported order and signs (numpy)."""

    unmixing: np.ndarray     # (k, p) or (k, k)
    mixing: np.ndarray       # (p, k)
    directions: np.ndarray   # (k, p) unit-norm mixing columns
    explained: np.ndarray    # (k,)
    order: np.ndarray        # (k,) the permutation applied
    signs: np.ndarray        # (k,) the signs applied


def _order_and_sign(unmixing, mixing, source_variance) -> _Ordered:
    """Sort by explained variance ``||a_i||^2 var(s_i)`` (descending, stable)
    and flip so each normalised mixing column has a positive largest entry."""
    explained = np.sum(np.square(mixing, dtype=np.float64), axis=0) * source_variance
    order = np.argsort(-explained, kind="stable")
    mixing, unmixing, explained = mixing[:, order], unmixing[order], explained[order]
    norms = np.linalg.norm(mixing, axis=0)
    directions = (mixing / np.maximum(norms, np.finfo(mixing.dtype).tiny)).T
    signs = row_signs(directions)
    return _Ordered(unmixing * signs[:, None], mixing * signs[None, :],
                    directions * signs[:, None], explained, order, signs)


class FastICA(Factorizer):
    """FastICA: a drop-in for ``sklearn.decomposition.FastICA`` that scales to
    wide data (``p = 16384``) and many components (``k`` up to thousands).

    Whitening uses the project's randomized SVD when ``p`` is large (see
    :func:`~jaxfactor.whitening.whiten`), and the fixed-point iteration runs as one jitted
    ``lax.while_loop`` on the ``(n, k)`` whitened data.

    Args:
      n_components: ``k``, an int in ``[1, min(n_samples - 1, n_features)]``
        (the whitened rank: centring removes one dimension), or ``None`` for
        the numerical rank of the centred data (at most ``min(n - 1, p)``). An
        explicit ``k`` larger than the numerical rank is an error. Ignored,
        with a warning, when ``whiten=False`` (as in scikit-learn).
      algorithm: ``'parallel'`` (the fixed point with symmetric decorrelation),
        ``'deflation'``, ``'picard'`` (Picard-O: L-BFGS on the orthogonal
        group with a line search, :func:`jaxfactor.picard.picard_o`; it
        descends where the fixed point cycles, at many components for the
        rows) or ``'auto'`` (:func:`jaxfactor._policy.choose_ica_algorithm`).
      fun: contrast ``'logcosh'``, ``'exp'`` or ``'cube'`` (not with ``'picard'``).
      fun_args: ``{'alpha': a}`` for logcosh, ``1 <= a <= 2`` (default 1).
      whiten: ``'unit-variance'`` (sources scaled to unit variance),
        ``'arbitrary-variance'`` (scikit-learn's unscaled sources) or
        ``False`` (data assumed white already; no centring, ``k = p``).
      max_iter: iteration cap (per component for deflation). Picard-O needs more
        steps than the fixed point at many components (319 at ``k = 300``,
        ``n = 10000``: ``benchmarks/results/bench_ica.md``).
      tol: tolerance on ``max_i | |<w_i^new, w_i^old>| - 1 |`` (fixed point) or
        on the Riemannian gradient's largest entry (``'picard'``).
      w_init: ``(k, k)`` starting unmixing matrix of the whitened data
        (scikit-learn's meaning, with the same whitening sign convention), or
        ``None`` for the start ``init`` makes.
      init: the start when ``w_init`` is ``None``: ``'random'`` (a Gaussian draw
        from ``random_state``, scikit-learn's) or ``'reseed'``
        (:func:`jaxfactor.ica_init.reseed_init`: rounds of data-point seeds iterated
        alone, the most non-Gaussian kept, each round refined by ``algorithm``).
        ``'reseed'`` is for many components on few rows (``k^2 / n > 10``), where a
        random start ends in a spurious optimum: at ``n = 2000``, ``k = 150``
        Laplace sources it reached the planted start's Amari distance (0.027
        against 0.195 from random) in 5 refinements; it costs several fits.
      whiten_solver: ``'auto'``, ``'eigh'``, ``'svd'`` or ``'randomized'``
        (see :func:`~jaxfactor.whitening.whiten`); a row source is always whitened by the
        streaming randomized SVD.
      method: randomized range finder, ``'auto'`` (block Krylov for few
        components, two subspace iterations for many: see
        :func:`jaxfactor._policy.choose_whiten_range`), ``'krylov'`` or
        ``'subspace'``.
      n_oversamples, n_iter, block_size: range finder sizes (see
        :func:`jaxfactor.randomized.range_params`).
      decorrelation: ``'auto'`` (``'eigh'`` on CPU, ``'newton-schulz'`` on
        accelerators: :func:`jaxfactor._policy.choose_decorrelation`),
        ``'eigh'`` or ``'newton-schulz'``.
      block_rows: rows per block when ``X`` is a row source.
      mesh: a ``jax.sharding.Mesh`` (:func:`jaxfactor.sharding.row_mesh`)
        over which the rows of ``X`` (randomized whitening of an in-memory
        ``X``; every block of a row source) and of the whitened data (the
        fixed-point iteration) are split; ``None`` runs on the default device,
        the mesh of size one.
      random_state: ``None`` (key 0: unseeded fits are reproducible), an int,
        a numpy generator or a ``jax.random`` key.
      checkpoint: ``None`` or a path (``str`` or ``os.PathLike``) of a
        ``.npz`` checkpoint file for the streaming whitening of a row source
        (ignored for in-memory ``X``): a fit interrupted during the passes
        over the rows and repeated with the same data and parameters resumes
        from it and gives the same result; the file is removed when the
        whitening completes. A file of another run is refused (``ValueError``).
      checkpoint_every: int ``>= 1``, blocks between checkpoints.
      n_restarts: ``None`` (one fit from one start) or an int ``R >= 1``: the
        fit runs ``R`` seeded starts on the whitened data (the first the start
        a plain fit uses: ``w_init`` or the ``random_state`` draw) and keeps
        the run with the best objective (the lowest ``E[sum_i G(y_i)]`` for
        ``'logcosh'``/``'exp'``, the highest for ``'cube'``), and ``R`` more
        seeded fits on bootstrap resamples of the whitened rows, from which
        ``stability_`` is computed (ICASSO's 'both' mode, Himberg, Hyvarinen &
        Esposito 2004; :mod:`jaxfactor.metrics.stability`). Each group of ``R`` runs
        is one ``vmap``-ed program over the shared whitened data; the cost is
        about ``2 R`` fits.

    Attributes:
      components_: ``(k, p)`` unmixing matrix in feature space; the sources are
        ``(X - mean_) components_^T``.
      mixing_: ``(p, k)`` its pseudo-inverse; ``X ~ sources mixing_^T + mean_``.
      directions_: ``(k, p)`` feature-space direction of each component for
        editing: mixing column ``i`` divided by its L2 norm, so every row has
        unit norm, with the sign chosen so that its largest-magnitude entry is
        positive.
      explained_variance_: ``(k,)`` variance of the data carried by each
        component, ``||mixing_[:, i]||^2 var(source_i)`` (``ddof=1``); it sums
        to the variance of the whitened PCA subspace.
      mean_: ``(p,)`` column means (zeros when ``whiten=False``).
      whitening_: ``(k, p)`` whitening matrix ``diag(1/s) Vt`` (scikit-learn's
        meaning: ``sqrt(n) (X - mean_) whitening_^T`` is white); absent when
        ``whiten=False``.
      n_iter_: iterations run (deflation: the most any component needed).
      converged_: whether the iteration met ``tol`` (its own criterion).
      change_, grad_norm_, objective_: at the final unmixing, whatever the
        algorithm: FastICA's fixed-point change, the largest entry of the
        Riemannian gradient ``skew(E[g(y) y^T])`` and the objective
        ``E[sum_i G(y_i)]`` on the whitened data
        (:func:`jaxfactor.picard.ica_criteria`); a fixed point that met
        ``tol`` can still have a large gradient.
      algorithm_: the algorithm run (``'auto'`` resolved).
      n_components_: ``k``; whiten_solver_: the whitening solver used;
      plan_: the :class:`jaxfactor._policy.Plan` the fit ran.
      stability_: ``(k,)`` float64 in ``[0, 1]``, only with ``n_restarts``:
        each returned component's stability index
        (:func:`jaxfactor.metrics.stability.stability_index`): its cluster is the
        component with its best one-to-one match (by ``|corr|`` of the
        sources) in each bootstrap fit; the index is the cluster's mean
        ``|corr|`` minus its mean ``|corr|`` to the nearest other cluster.
        Near 1: the data determine the component; near 0: it rotates from
        resample to resample (e.g. inside a Gaussian subspace).
      restart_objectives_: ``(R,)`` objectives of the ``R`` full-data runs
        (the kept one is ``objective_``), only with ``n_restarts``.
      reseed_objectives_: ``(rounds,)`` float64, the objective after each round of
        ``init='reseed'`` (the best is ``objective_``), only with it.

    Out-of-core: ``fit`` also takes a row source
    (:class:`jaxfactor.sources.NpySource` over a ``.npy`` file or a directory
    of shards, any :class:`~jaxfactor.sources.RowSource`, or a path): the
    whitening streams over row blocks (:func:`~jaxfactor.whitening.whiten_source`), so only the
    ``(n, k)`` whitened data and a few blocks are ever in memory; an int
    ``n_components`` is then required. ``transform`` takes in-memory arrays.

    Ordering and signs: components are sorted by ``explained_variance_``,
    descending (ties keep the iteration's order), and the sign of each
    component is the sign of its direction (largest-magnitude entry of
    ``directions_[i]`` positive); ``components_``, ``mixing_`` and
    ``directions_`` share the order and signs, so ``transform`` and
    ``inverse_transform`` stay consistent.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor import FastICA
      >>> rng = np.random.default_rng(0)
      >>> x = rng.laplace(size=(200, 3)).astype(np.float32) @ rng.normal(size=(3, 4)).astype(np.float32)
      >>> ica = FastICA(n_components=3, random_state=0).fit(x)
      >>> ica.components_.shape, ica.mixing_.shape, ica.transform(x).shape
      ((3, 4), (4, 3), (200, 3))
    """

    def __init__(self, n_components=None, *, algorithm="parallel", fun="logcosh", fun_args=None,
                 whiten="unit-variance", max_iter=200, tol=1e-4, w_init=None,
                 whiten_solver="auto", method="auto", n_oversamples=None, n_iter=None,
                 block_size=None, decorrelation="auto", block_rows=4096, random_state=None,
                 mesh=None, checkpoint=None, checkpoint_every=16, n_restarts=None,
                 init="random"):
        self.n_components = n_components
        self.algorithm = algorithm
        self.fun = fun
        self.fun_args = fun_args
        self.whiten = whiten
        self.max_iter = max_iter
        self.tol = tol
        self.w_init = w_init
        self.whiten_solver = whiten_solver
        self.method = method
        self.n_oversamples = n_oversamples
        self.n_iter = n_iter
        self.block_size = block_size
        self.decorrelation = decorrelation
        self.block_rows = block_rows
        self.random_state = random_state
        self.mesh = mesh
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.n_restarts = n_restarts
        self.init = init

    _parameter_constraints = {
        **P.shared("n_components", "max_iter", "tol", "n_oversamples", "n_iter", "block_size",
                   "block_rows", "random_state", "mesh", "checkpoint", "checkpoint_every"),
        "algorithm": [P.Options(*ICA_ALGORITHMS)],
        "fun": [P.Options(*CONTRASTS)],
        "fun_args": [P.Constant(None), P.Predicate(
            lambda a: isinstance(a, dict) and set(a) <= {"alpha"}
            and P.Interval(float, 1, 2).accepts(a.get("alpha", 1.0)),
            "a dict {'alpha': a float in [1, 2]}")],
        "whiten": [P.Options(*(w for w in WHITEN_OPTIONS if w)), P.Constant(False)],
        "w_init": [P.Constant(None), P.ArrayLike],
        "whiten_solver": [P.Options(*WHITEN_SOLVERS)],
        "method": [P.Options("auto", "krylov", "subspace")],
        "decorrelation": [P.Options(*DECORRELATIONS)],
        "n_restarts": [P.Constant(None), P.Interval(int, 1, None)],
        "init": [P.Options("random", "reseed")],
    }

    # ---------------------------------------------------------------- checks
    def _check_params(self, n, p):
        alpha = ({} if self.fun_args is None else self.fun_args).get("alpha", 1.0)
        if self.whiten is False:
            if self.n_components is not None:
                warnings.warn("Ignoring n_components with whiten=False.", UserWarning, stacklevel=3)
            return p, float(alpha)
        k = self.n_components
        if k is None:
            return None, float(alpha)
        if k > p:
            raise ValueError(f"n_components={k} is larger than n_features={p}: whitening keeps at "
                             f"most min(n_samples - 1, n_features) = {min(n - 1, p)} components")
        if k > n - 1:
            raise ValueError(f"X has {n} samples, fewer than n_components + 1 = {k + 1} "
                             f"(n_components={k}): after "
                             f"centring the whitened rank is at most n_samples - 1 = {n - 1}; "
                             f"use n_components <= {n - 1} or more samples")
        return int(k), float(alpha)

    def _check_w_init(self, k, dtype):
        if self.w_init is None:
            return None
        w = np.asarray(self.w_init)
        if w.shape != (k, k):
            raise ValueError(f"w_init has shape {w.shape}; it must be (n_components, n_components) "
                             f"= {(k, k)}")
        w = V.check_matrix(w, "w_init").astype(dtype)
        if np.linalg.matrix_rank(np.asarray(w, np.float64)) < k:
            raise ValueError("w_init is rank deficient; it must be an invertible matrix")
        return w

    # ------------------------------------------------------------------- fit
    def _fit(self, X):
        arr, source, n, p, dtype, _ = self._intake_rows(X)
        k, alpha = self._check_params(n, p)
        key = V.check_random_state_key(self.random_state)
        key_whiten, key_init = jax.random.split(key)
        rank_limit = min(n - 1, p)
        mesh = self.mesh
        platform = platform_of(mesh)
        decorrelation = choose_decorrelation(self.decorrelation, platform)
        if self.init == "reseed" and (self.w_init is not None or self.n_restarts is not None):
            raise ValueError("init='reseed' makes the start itself: it takes neither w_init nor "
                             f"n_restarts (got w_init={'an array' if self.w_init is not None else None}"
                             f", n_restarts={self.n_restarts!r})")
        if source is not None and (self.whiten is False or k is None):
            raise ValueError("fitting a row source needs whitening and an int n_components "
                             f"(got whiten={self.whiten!r}, n_components={self.n_components!r})")

        if self.whiten is False:
            w_user = self._check_w_init(k, dtype)
            white = arr
            self.whiten_solver_ = None
            range_method = (None, None)
        else:
            k_req = rank_limit if k is None else k
            solver = ("randomized" if source is not None else
                      choose_whiten_solver(self.whiten_solver, n, p, k_req, True))
            # the range finder is chosen here, once, and recorded in plan_
            range_method = (choose_whiten_range(self.method, self.n_iter, n, p, k_req)
                            if solver == "randomized" else (None, None))
            w_user = self._check_w_init(k_req, dtype) if k is not None else None
            kw = dict(key=key_whiten, method=range_method[0], n_oversamples=self.n_oversamples,
                      n_iter=range_method[1], block_size=self.block_size)
            if source is not None:
                res = whiten_source(source, k_req, block_rows=self.block_rows, dtype=dtype,
                                    mesh=mesh, checkpoint=self.checkpoint,
                                    checkpoint_every=self.checkpoint_every, **kw)
            elif solver == "randomized" and mesh is not None:
                # mean-padded rows add nothing to the centred products; their whitened rows are 0
                xs, _ = shard_rows(arr, mesh)
                res = whiten(xs, k_req, solver=solver, n_valid=n, **kw)
            elif solver == "randomized":
                res = whiten(arr, k_req, solver=solver, **kw)
            else:
                res = whiten(arr, k_req, solver=solver)
            s = np.asarray(res.singular_values, np.float64)
            floor = whitening_rank_floor(dtype, n, p, solver) * (s[0] if s.size and s[0] > 0 else 1.0)
            rank = int(np.sum(s > floor))
            if rank == 0:
                raise ValueError("X has (numerically) zero variance after centring; FastICA "
                                 "needs data that vary")
            if rank < k_req:
                if k is not None:
                    raise ValueError(f"n_components={k} is larger than the numerical rank {rank} "
                                     f"of the centred data (singular value {k} is {s[k - 1]:.3g}, "
                                     f"below {floor:.3g}); use n_components <= {rank}")
                res = WhiteningResult(res.white[:, :rank], res.components[:rank],
                                      res.singular_values[:rank], res.mean)
                k_req = rank
            if k is None:
                w_user = self._check_w_init(k_req, dtype)
            k = k_req
            white = res.white
            self.whiten_solver_ = solver

        # The fixed-point iteration on (row-sharded) whitened data; padded rows are zero.
        white_iter = white if mesh is None else shard_block(white, mesh)[0]
        if w_user is None and self.init == "random" and random_start_is_trapped(n, k):
            warnings.warn(f"FastICA: n_components^2 / n_samples = {k * k / n:.3g} > "
                          f"{SPURIOUS_K2_OVER_N:g}: from a random start the iteration is expected "
                          f"to end in a spurious optimum at this ratio (measured on planted "
                          f"sources); n_samples >= {-(-k * k // 8)} rows or init='reseed' reach "
                          f"the good one", UserWarning, stacklevel=3)
        algorithm = choose_ica_algorithm(self.algorithm, n, k, self.fun)
        if algorithm == "picard" and self.fun not in PICARD_CONTRASTS:
            raise ValueError(f"algorithm='picard' minimises a likelihood for super-Gaussian "
                             f"sources: fun must be one of {PICARD_CONTRASTS}, got {self.fun!r}")
        kw = dict(fun=self.fun, alpha=alpha, tol=float(self.tol), max_iter=int(self.max_iter),
                  n_valid=n, decorrelation=decorrelation)
        self._stalled = False
        if self.n_restarts is not None:
            result, criteria = self._fit_restarts(white_iter, w_user, key_init, k, n, algorithm,
                                                  kw)
        elif w_user is None and self.init == "reseed":
            result, criteria = self._fit_reseed(white_iter, key_init, n, algorithm, kw)
        elif algorithm == "picard":
            w0 = (jax.random.normal(key_init, (k, k), white.dtype) if w_user is None else w_user)
            result = picard_o(white_iter, w0, **kw)
            criteria = result
            self._stalled = bool(result.stalled)
        else:
            result = fastica(white_iter, key=key_init, w_init=w_user, algorithm=algorithm, **kw)
            criteria = ica_criteria(white_iter, result.w, fun=self.fun, alpha=alpha, n_valid=n,
                                    decorrelation=decorrelation)
        white = white[:n]
        self.algorithm_ = algorithm
        self.n_iter_ = int(result.n_iter)
        self.plan_ = Plan(self.whiten_solver_, *range_method, decorrelation=decorrelation,
                          platform=platform, algorithm=algorithm,
                          init="w_init" if w_user is not None else self.init,
                          n_restarts=self.n_restarts)
        self.converged_ = bool(result.converged)
        self.change_ = float(criteria.change)
        self.grad_norm_ = float(criteria.grad_norm)
        self.objective_ = float(criteria.objective)
        self.status_ = self._report(result.status)

        if self.whiten is False:
            parts = _finish_unwhitened(arr, result.w)
            mean = np.zeros((p,), dtype)
        else:
            parts = _finish_whitened(white, result.w, res.components, res.singular_values,
                                     unit_variance=self.whiten == "unit-variance")
            mean = res.mean
        ordered = _order_and_sign(*parts)
        self.components_ = np.asarray(ordered.unmixing)
        self.mixing_ = np.asarray(ordered.mixing)
        self.directions_ = np.asarray(ordered.directions)
        self.explained_variance_ = np.asarray(ordered.explained) * (n / max(n - 1, 1))
        self.mean_ = np.asarray(mean)
        if self.whiten is not False:
            self.whitening_ = np.asarray(res.components) / np.asarray(res.singular_values)[:, None]
        elif hasattr(self, "whitening_"):
            del self.whitening_
        self.n_components_ = int(k)
        self._unmixing = np.asarray(result.w)[ordered.order] * ordered.signs[:, None]
        if self.n_restarts is not None:
            self.stability_ = self._stability[ordered.order]
        else:
            for name in ("stability_", "restart_objectives_"):
                if hasattr(self, name):
                    delattr(self, name)
        if self.plan_.init != "reseed" and hasattr(self, "reseed_objectives_"):
            del self.reseed_objectives_
        return self

    def _fit_reseed(self, white, key_init, n, algorithm, kw):
        """``init='reseed'``: :func:`jaxfactor.ica_init.reseed_init` with ``algorithm``
        refining each round; the kept round's run is the fit."""
        if algorithm == "picard":
            def refine(w0):
                return picard_o(white, w0, **kw)
        else:
            def refine(w0):
                return fastica(white, w_init=w0, algorithm=algorithm, **kw)
        out = reseed_init(white, refine, fun=self.fun, alpha=kw["alpha"], n_valid=n,
                          key=key_init, decorrelation=kw["decorrelation"])
        self.reseed_objectives_ = out.objectives
        if algorithm == "picard":
            self._stalled = bool(out.result.stalled)
            return out.result, out.result
        return out.result, out.criteria

    def _fit_restarts(self, white, w_user, key_init, k, n, algorithm, kw):
        """``n_restarts``: the best of ``R`` seeded full-data runs, and the
        stability of its components across ``R`` seeded bootstrap fits."""
        r = int(self.n_restarts)
        key_starts, key_rows, key_boot = jax.random.split(key_init, 3)
        first = (jax.random.normal(key_init, (k, k), white.dtype) if w_user is None
                 else jnp.asarray(w_user, white.dtype))
        starts = jax.random.normal(key_starts, (r, k, k), white.dtype).at[0].set(first)
        runs = ica_restarts(white, starts, algorithm=algorithm, **kw)
        objectives = np.asarray(runs.objective, np.float64)
        # 'cube': G(u) = u^4 / 4 grows with the (super-Gaussian) non-Gaussianity
        best = int(np.argmax(objectives) if self.fun == "cube" else np.argmin(objectives))
        rows = bootstrap_rows(key_rows, white.shape[0], n, r)
        boot = ica_restarts(white, jax.random.normal(key_boot, (r, k, k), white.dtype), rows,
                            algorithm=algorithm, **kw)
        self._stability = stability_index(np.asarray(runs.w[best]), np.asarray(boot.w)).index
        self.restart_objectives_ = objectives
        self._stalled = bool(runs.stalled[best])
        result = jax.tree_util.tree_map(lambda a: a[best], runs)
        return result, result

    def _report(self, status):
        """The fit's status name; a :class:`ConvergenceWarning` naming both criteria
        (the one the algorithm stops on first) when it stopped at ``max_iter``."""
        status = int(status)
        if status != MAX_ITER:
            return report("FastICA", status, n_iter=self.n_iter_, change=self.change_,
                          tol=float(self.tol))
        tol = float(self.tol)
        if self.algorithm_ == "picard":
            msg = (f"Riemannian gradient norm {self.grad_norm_:.3g} > tol={tol:.3g}; fixed-point "
                   f"change {self.change_:.3g}")
            if self._stalled:
                msg += " (no descent found along the gradient: the float32 floor)"
        else:
            msg = (f"last change {self.change_:.3g} > tol={tol:.3g} (fixed-point change); "
                   f"Riemannian gradient norm {self.grad_norm_:.3g}")
        hint = "" if self.algorithm_ == "picard" else ", or try algorithm='picard'"
        warnings.warn(f"FastICA ({self.algorithm_}) did not converge after {self.n_iter_} "
                      f"iterations: {msg}; objective {self.objective_:.6g}. Increase max_iter or "
                      f"tol{hint}.", ConvergenceWarning, stacklevel=4)
        return NAMES[status]

    # ------------------------------------------------------------- transforms
    def inverse_transform(self, X):
        """Mixed data from sources: ``X mixing_^T + mean_``.

        Args:
          X: ``(n, k)`` sources.

        Returns:
          ``(n, p)``, the same kind of array as ``X``.
        """
        arr, kind = self._intake_scores(X)
        out = arr @ jnp.asarray(self.mixing_, arr.dtype).T + jnp.asarray(self.mean_, arr.dtype)
        return V.restore_kind(out, kind)
