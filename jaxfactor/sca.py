"""Sparse component analysis (Chen & Rohe, "A new basis for sparse PCA"), (the kernels).

Problem (for centred data ``X_c = X - 1 mean^T``, ``n x p``)::

    min ||X_c - Z B Y^T||_F  over Z (n x k), Y (p x k) orthonormal, B (k x k),
    subject to ||Y||_1 <= gamma            (entrywise L1 norm of the whole Y)

solved, as the R package ``epca`` (``sca`` / ``sma``) does, by alternating
"polar-rotate-shrink" (PRS) updates started from the truncated SVD
``Z_0 = U_k``, ``Y_0 = V_k``::

    Z <- PRS(X_c Y)        (budget k sqrt(n) is never binding: rotation only)
    Y <- PRS(X_c^T Z, gamma)
    B  = Z^T X_c Y

where ``PRS(A, budget)`` takes the orthogonal polar factor of ``A``, rotates it
by varimax (restarted from the identity on every call and stopped, as epca
does, when its criterion grows by a relative ``tol / sqrt(m)`` or less, ``m``
the rows of ``A``; its decisions taken in float64, see :func:`_varimax`), flips each column so
that its sum of cubes is positive, projects the whole matrix onto the L1 ball
of radius ``budget`` when it lies outside (one global soft threshold, exact),
and orders the columns by explained variance ``||X_c^T z||^2`` /
``||X_c y||^2``. Flip and order make the columns canonical, so the stopping
rule compares them column by column. epca's rule (``stop_rule='epca'``, the
default): stop when, for ``Z`` and for ``Y``, the largest entry change of the
unit-normalised columns summed over matched pairs of columns is below
``tol`` (columns of nearly equal explained variance may trade places; see
:func:`_matched_change`). With these rules ``acceleration='none'`` reproduces epca's
iterates one by one, and ``acceleration='anderson'`` (the estimator's default) reaches
the same fixed point in fewer iterations, with the sample side's varimax warm-started
(``tests/test_sca_reference.py``).

Measurements behind the design choices are in ``docs/sca_notes.md``.

Policy (:func:`jaxfactor._policy.choose_reduced_rank`): ``reduced_rank='auto'`` iterates on
``X`` below ``n p = 2^24`` and on the rank-``2k + 10`` randomized SVD above;
row sources always use the reduced variant. Measured effects are in
``benchmarks/results/bench_sca.md``.

Kernels
  * :func:`prs` -- the polar-rotate-flip-shrink block.
  * :func:`sca_iterate` -- the iteration on the data (``X`` in memory).
  * :func:`sca_iterate_reduced` -- the same iteration with ``X_c`` replaced by
    its rank-``r`` randomized SVD ``U S V^T`` (``r >= k``), so that each
    product costs ``O((n + p) r k)`` instead of ``O(n p k)``. An approximation:
    it solves the problem for the rank-``r`` matrix; the final scores, ``B`` and
    explained variance are still computed with the real ``X``.
  * :func:`sca` -- initial SVD plus iteration.

Estimator
  :class:`jaxfactor.estimators.SCA`.
"""
from __future__ import annotations

import math
import os
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from ._linalg import (linear_assignment, polar_small_svd, project_l1_ball, varimax, varimax_bb,
                      varimax_epca)
from ._policy import choose_reduced_rank, choose_svd_solver
from ._status import iteration_status
from .accumulate import centred_matmul, stack_rows, sum_rows
from .pca import pca_full
from .randomized import randomized_svd, range_params, svd_from_context, svd_passes, svd_run
from .sources import ArraySource, RowSource
from .streaming import Pass, as_checkpoint, pack, run_passes, unpack

__all__ = ["SCAResult", "prs", "flip_skewness", "sca_iterate", "sca_iterate_reduced", "sca",
           "sca_source", "choose_reduced_rank"]

ROTATIONS = ("varimax", "none")
VARIMAX_STARTS = ("identity", "previous", "converged")
STOP_RULES = ("epca", "max_entry")
ROTATION_PRECISIONS = ("float32", "float64")
ACCELERATIONS = ("none", "anderson")

# varimax inside PRS: epca's rule, relative tolerance tol / sqrt(m) on the sum of
# the singular values (m the rows of the rotated matrix), at most 1000 steps
_VARIMAX_MAX_ITER = 1000
# warm-started varimax: a fixed number of steps a call keeps the outer map smooth
# (a tolerance made it stall; docs/sca_notes.md)
_WARM_STEPS = 10
# varimax_start='converged': each warm varimax by Barzilai-Borwein ascent (in float64) to
# this relative stationarity (1e-5 left the outer change at a 3e-5 floor at p = 16384,
# k = 50) within this many criterion evaluations
_CONVERGED_RTOL = 1e-6
_CONVERGED_MAX_EVALS = 500


class SCAResult(NamedTuple):
    """A sparse component analysis ``X_c ~ Z B Y^T``.

    Attributes:
      loadings: ``(p, k)`` sparse loadings ``Y`` (unit-norm columns before the
        shrinkage; ``||Y||_1 <= gamma``), columns ordered by explained variance.
      scores: ``(n, k)`` ``X_c Y``.
      z: ``(n, k)`` orthonormal sample-side basis ``Z``.
      b: ``(k, k)`` ``Z^T X_c Y``.
      explained_variance_ratio: ``(k,)`` cumulative proportion of variance
        explained by the span of the first ``j`` loadings,
        ``||X_c P_j||_F^2 / ||X_c||_F^2`` with ``P_j`` the orthogonal projector
        onto ``span(Y[:, :j])`` (``Y`` need not be orthogonal after shrinking).
      objective: ``()`` ``||B||_F``.
      mean: ``(p,)`` column means.
      n_iter: ``()`` int32 iterations run.
      converged: ``()`` bool.
      change: ``()`` largest entry change of ``Z`` or ``Y`` in the last iteration.
      status: ``()`` int32, a :mod:`jaxfactor._status` code.
    """

    loadings: jax.Array
    scores: jax.Array
    z: jax.Array
    b: jax.Array
    explained_variance_ratio: jax.Array
    objective: jax.Array
    mean: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    change: jax.Array
    status: jax.Array


def flip_skewness(a: jax.Array) -> jax.Array:
    """Flip each column of ``a`` so that its sum of cubes is non-negative.

    Args:
      a: ``(m, k)`` array.

    Returns:
      ``(m, k)`` array, columns multiplied by ``sign(sum_i a_ij^3)`` (``+1``
      when that sum is 0).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxfactor.sca import flip_skewness
      >>> flip_skewness(jnp.array([[-2.0, 1.0], [1.0, 1.0]])).tolist()
      [[2.0, 1.0], [-1.0, 1.0]]
    """
    return a * _skew_signs(a)[None, :]


def _skew_signs(a):
    """``(k,)`` signs, ``sign(sum_i a_ij^3)`` (``+1`` for 0), in ``a``'s dtype."""
    return jnp.where(jnp.sum(a ** 3, axis=0) < 0, -1, 1).astype(a.dtype)


def prs(a: jax.Array, budget=None, *, rotate: str = "varimax",
        previous: jax.Array | None = None, n_valid=None) -> jax.Array:
    """Polar, Rotate, Shrink: the building block of SCA (Chen & Rohe).

    ``polar(a)`` (orthonormal factor ``U V^T`` of ``a = U S V^T``, through a
    QR of ``a`` and an SVD of the ``k x k`` factor) -> varimax rotation
    (restarted from the identity, or started from the rotation that best
    aligns the polar factor with ``previous``) -> columns flipped to a positive sum of
    cubes -> Euclidean projection onto ``{||.||_1 <= budget}`` (a no-op when
    the matrix is already inside). Ordering the columns by explained
    variance needs the data and is done by the iteration.

    Args:
      a: ``(m, k)`` float array, ``m >= k``.
      budget: L1 radius, or ``None`` for no shrinkage.
      rotate: ``'varimax'`` or ``'none'``.
      previous: ``(m, k)`` output of the previous call, or ``None``: varimax
        then starts from ``T_0 = polar(Q^T previous)`` (``Q = polar(a)``), the
        orthogonal ``T`` minimising ``||Q T - previous||_F``, instead of ``I``,
        and takes ``_WARM_STEPS`` (10) steps (it keeps refining across calls;
        see :func:`sca_iterate`).
      n_valid: the true row count for varimax's column means when ``a`` has
        zero padding rows (row sharding); default ``m``.

    Returns:
      ``(m, k)`` array.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.sca import prs
      >>> a = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
      >>> q = prs(a)                                    # orthonormal columns
      >>> q.shape, bool(np.allclose(q.T @ q, np.eye(2), atol=1e-5))
      ((8, 2), True)
      >>> bool(np.abs(prs(a, 2.0)).sum() <= 2.0 + 1e-5)  # inside the L1 ball
      True
    """
    return _rotate_shrink(polar_small_svd(a), budget, rotate=rotate, previous=previous,
                          n_valid=n_valid)


def _varimax_tol(tol, q, n_valid):
    """epca's varimax tolerance ``tol / sqrt(m)`` for an ``(m, k)`` ``q``."""
    m = q.shape[0] if n_valid is None else n_valid
    return jnp.asarray(tol, q.dtype) / jnp.sqrt(jnp.asarray(m, q.dtype))


def _varimax(q, tol, max_iter, *, init=None, n_valid=None, precision="float64", switch=None):
    """``varimax(q).rotated``, run in ``precision`` and returned in ``q``'s dtype.

    epca's tolerance sits at float32's epsilon (``1e-5 / sqrt(10^4) = 1e-7`` relative
    on the criterion), which float32 cannot resolve: its stopping step, and so the
    rotation, then jitter from call to call. ``'float64'``: the decisions in float64,
    the steps before the last few in float32 (:func:`jaxfactor._linalg.varimax_epca`; ``switch``:
    its growth threshold for leaving float32, default the rounding bound of ``q``'s dtype).
    """
    if precision == "float32":
        return varimax(q, tol, max_iter, init=init, n_valid=n_valid).rotated
    return varimax_epca(q, tol, max_iter, init=init, n_valid=n_valid, switch=switch).rotated


def _rotate_shrink(q: jax.Array, budget, *, rotate: str, previous=None, n_valid=None,
                   tol=1e-5, precision="float64", warm="previous", coarse=False, flip=True,
                   init=None):
    """The rotate-flip-shrink part of :func:`prs` on an orthonormal ``(m, k)`` ``q``;
    with ``previous``, varimax starts from the rotation aligning ``q`` with it and takes
    ``_WARM_STEPS`` of R's steps (``warm='previous'``) or runs to a stationary point
    (``warm='converged'``, :func:`jaxfactor._linalg.varimax_bb`). ``flip=False`` keeps
    the signs the rotation gives (the warm start carries the previous iterate's).
    ``coarse=True`` (a rotation that is only a start): from ``I``, R's steps stay in
    float32 while their growth exceeds 16 tolerances, the tolerance term of
    :func:`jaxfactor._linalg.varimax_switch` without its rounding bound. ``init``
    (``(k, k)`` orthogonal, without ``previous``): R's steps to R's tolerance start
    there instead of at ``I``."""
    if rotate == "varimax" and previous is None:
        vtol = _varimax_tol(tol, q, n_valid)
        q = _varimax(q, vtol, _VARIMAX_MAX_ITER, init=init, n_valid=n_valid,
                     precision=precision, switch=16 * vtol if coarse else None)
    elif rotate == "varimax":
        start = polar_small_svd(q.T @ previous)
        if warm == "converged":
            # in float64: float32 rounding of the criterion's gradient moved each stationary
            # point found by ~1e-6, and epca's rule sums k columns' changes, so at k = 50 the
            # outer change sat at 1.5-6e-5 against tol 1e-5 (p = 4096: 5 of 6 seeds stalled
            # at 1000 iterations; with this, the two rerun converged in 261 and 566)
            with jax.enable_x64(True):
                wide = jnp.float64
                q = varimax_bb(q.astype(wide), _CONVERGED_RTOL, _CONVERGED_MAX_EVALS,
                               init=start.astype(wide), n_valid=n_valid).rotated.astype(q.dtype)
        else:
            q = varimax(q, 0.0, _WARM_STEPS, init=start, n_valid=n_valid).rotated
    if flip:
        q = flip_skewness(q)
    if budget is not None:
        q = project_l1_ball(q, budget, method="active_set")
    return q


def _order_by(a: jax.Array, product: jax.Array):
    """Permute the columns of ``a`` and ``product`` by decreasing ``||product_j||^2``."""
    order = jnp.argsort(-jnp.sum(product * product, axis=0))
    return a[:, order], product[:, order]


def _rmatmul(x: jax.Array, mean: jax.Array, z: jax.Array) -> jax.Array:
    """``(X - 1 mean^T)^T Z`` as the transpose of ``Z^T X`` (``(p, k)``).

    XLA on CPU runs ``X^T Z`` (contracting the leading axis of a row-major
    ``X``) about three times slower than ``Z^T X``, and its simplifier turns
    ``(Z^T X)^T`` back into ``X^T Z``; the optimisation barrier keeps the fast
    form (measured: 0.10 s instead of 0.33 s for ``X`` of ``(10000, 2048)``,
    ``k = 20``).
    """
    wide = jax.lax.optimization_barrier(z.T @ x)
    return wide.T - jnp.outer(mean, jnp.sum(z, axis=0))


def _unit_columns(a):
    norms = jnp.sqrt(jnp.sum(a * a, axis=0))
    return a / jnp.where(norms > 0, norms, 1)[None, :]


def _matched_change(new: jax.Array, old: jax.Array, rule: str = "epca", match=None) -> jax.Array:
    """The change from ``old`` to ``new`` (both ``(m, k)``) the stopping rule tests.

    ``rule='epca'`` (epca's ``distance(old, new, "maximum")``): the columns scaled
    to unit length, each old column paired with a new one by an assignment
    (:func:`jaxfactor._linalg.linear_assignment`), and the largest absolute entry
    difference of each pair summed over the pairs. epca's assignment minimises
    that sum; this one maximises the summed cosines (a ``(k, k)`` product instead
    of ``m k^2`` differences). The two agree whenever the sum is below a tolerance
    well under the distance between distinct columns, so they stop at the same
    iteration. ``match``: that assignment when the caller has it (``_matching(old, new)``).
    ``rule='max_entry'``: :func:`_max_entry_change`.
    """
    if rule == "max_entry":
        return _max_entry_change(new, old)
    un, uo = _unit_columns(new), _unit_columns(old)
    if match is None:
        match = linear_assignment(-(uo.T @ un))
    return jnp.sum(jnp.max(jnp.abs(un[:, match] - uo), axis=0))


def _max_entry_change(new: jax.Array, old: jax.Array) -> jax.Array:
    """Largest entry change from ``old`` to ``new`` (both ``(m, k)``), each old
    column compared with the new column that matches it best (largest
    ``|cosine|``).

    Flip and order make the columns canonical, except that two columns of
    nearly equal explained variance may trade places from one iteration to
    the next (measured: at ``p = 16384, k = 50`` on GAN-like data, 2 to 10
    columns swap in most iterations, so the unmatched change stays near 0.05
    while the matched one is 3e-4). The ``(k, k)`` product and an argmax make
    the match; no assignment solver is needed: if two old columns picked the
    same new one, the change is large anyway.
    """
    norms = jnp.sqrt(jnp.sum(new * new, axis=0))
    cos = jnp.abs(new.T @ old) / jnp.where(norms > 0, norms, 1)[:, None]
    match = jnp.argmax(cos, axis=0)
    return jnp.max(jnp.abs(new[:, match] - old))


class _LoopState(NamedTuple):
    i: jax.Array
    y: jax.Array
    xy: jax.Array
    z: jax.Array
    change: jax.Array


class _Sides(NamedTuple):
    """How the loop reaches ``X_c``, for the identity-restart and the warm loop.

    ``apply(y) = X_c y`` (``(p, k) -> (n, k)``) and ``apply_t(z) = X_c^T z``.
    The warm loop works in coordinates ``c = reduce(y)`` (``(c, k)``) with
    ``||X_c y_j|| = ||c_j||`` and ``X_c y = lift(c)``; ``polar_back(w)`` is the
    orthogonal polar factor of ``X_c^T lift(w)`` for orthonormal ``w``. On
    ``X`` itself ``c = X_c y``; on ``U diag(s) Vt`` ``c = s * (Vt y)`` (``r`` rows),
    ``lift(w) = U w`` and ``polar_back(w) = Vt^T polar(s * w)``: the loop then
    touches nothing of size ``n``.
    """

    apply: Callable
    apply_t: Callable
    reduce: Callable
    lift: Callable
    polar_back: Callable


def _data_sides(x, mean) -> _Sides:
    apply = lambda y: centred_matmul(x, mean, y)  # noqa: E731
    apply_t = lambda z: _rmatmul(x, mean, z)  # noqa: E731
    return _Sides(apply, apply_t, apply, lambda w: w, lambda w: polar_small_svd(apply_t(w)))


def _factored_sides(u, s, vt) -> _Sides:
    reduce = lambda y: s[:, None] * (vt @ y)  # noqa: E731
    return _Sides(lambda y: u @ reduce(y), lambda z: vt.T @ (s[:, None] * (u.T @ z)), reduce,
                  lambda w: u @ w, lambda w: vt.T @ polar_small_svd(s[:, None] * w))


class _Options(NamedTuple):
    """The static choices of the iteration (see :func:`sca_iterate`)."""

    rotate: str = "varimax"
    varimax_start: str = "identity"
    stop_rule: str = "epca"
    rotation_precision: str = "float64"
    acceleration: str = "none"


def _step_change(z, y, s, rule):
    """The stopping rule's change from ``(s.z, s.y)`` to ``(z, y)`` and the matching
    ``perm`` of ``y``'s columns to ``s.y``'s (``y[:, perm[j]]`` pairs ``s.y[:, j]``) that
    epca's rule computed, for the Anderson history (``None`` under ``'max_entry'``)."""
    perm = _matching(s.y, y) if rule == "epca" else None
    change = jnp.maximum(_matched_change(z, s.z, rule),
                         _matched_change(y, s.y, rule, match=perm))
    return change, perm


def _epca_step(sides: _Sides, s, gamma, opts: _Options, rot: dict, n_valid):
    """One step of epca's alternation from ``s.xy = X_c Y`` (``s.y``, ``s.z``: the last
    sides, ``s.i``: the step): ``(z, y, X_c y, change, perm)``, ``change`` by epca's rule
    over both sides (infinite at the first step, which compares against the unrotated SVD
    start), ``perm`` as :func:`_step_change`."""
    q = polar_small_svd(s.xy)
    init = None
    if opts.acceleration == "anderson" and opts.rotate == "varimax":
        # the sample side's varimax from the rotation aligning q with the last Z, to R's
        # tolerance: 2-4 steps instead of ~32 from I at the fixed point (5000 x 1024,
        # k = 20), where they were the largest cost of a step. The loadings see Z only
        # through the start of their own varimax (polar(X_c^T Q T) = polar(X_c^T Q) T),
        # so the fixed point moves by no more than epca's tolerance leaves: 0.0036 deg
        # from epca against 0.0041 with the start at I, same 118 iterations
        init = jnp.where(s.i > 0, polar_small_svd(q.T @ s.z), jnp.eye(q.shape[1], dtype=q.dtype))
    # k sqrt(n) budget on the sample side: never binding
    z = _rotate_shrink(q, None, n_valid=n_valid, init=init, **rot)
    z, xtz = _order_by(z, sides.apply_t(z))
    y = _rotate_shrink(polar_small_svd(xtz), gamma, **rot)
    y, xy = _order_by(y, sides.apply(y))
    change, perm = _step_change(z, y, s, opts.stop_rule)
    return z, y, xy, jnp.where(s.i == 0, jnp.inf, change), perm


def _iterate(sides: _Sides, y0, gamma, tol, max_iter, opts: _Options, n_valid):
    """The SCA alternation as one ``lax.while_loop``.

    ``n_valid`` is the true sample count (``X`` may carry zero-padding rows).
    """
    rotate = opts.rotate
    if rotate == "varimax" and opts.varimax_start in ("previous", "converged"):
        return _iterate_warm(sides, y0, gamma, tol, max_iter, opts, n_valid)
    if opts.acceleration == "anderson":
        return _iterate_anderson(sides, y0, gamma, tol, max_iter, opts, n_valid)
    rot = dict(rotate=rotate, tol=tol, precision=opts.rotation_precision)
    apply = sides.apply
    dtype = y0.dtype
    xy0 = apply(y0)
    z0 = jnp.zeros(xy0.shape, dtype)
    init = _LoopState(jnp.zeros((), jnp.int32), y0, xy0, z0, jnp.full((), jnp.inf, dtype))

    def cond(s):
        return (s.i < max_iter) & (s.change > tol)

    def body(s):
        z, y, xy, change, _ = _epca_step(sides, s, gamma, opts, rot, n_valid)
        return _LoopState(s.i + 1, y, xy, z, change)

    return jax.lax.while_loop(cond, body, init)


_ANDERSON_DEPTH = 10
# Anderson steps start once the plain change is below this many tolerances: from the SVD
# start they can jump to another fixed point (measured at 3000 x 512, k = 10)
_ANDERSON_START = 1000.0
# the history restarts when the change grows more than tenfold: restarting at any growth
# (the map jumps a little where a varimax stops one step earlier) discards it too often
_ANDERSON_RESTART = 10.0
# after this many stalls (a whole history without a new low) the plain iteration takes
# over for good: where the map is too rough for mixing, epca's own steps still converge
_ANDERSON_STALLS = 2


class _AndersonState(NamedTuple):
    i: jax.Array
    y: jax.Array          # the next input (extrapolated or plain), in the history's column order
    xy: jax.Array         # coordinates of the next input
    y_out: jax.Array      # the last plain output PRS(X_c^T Z): what is returned
    xy_out: jax.Array
    z: jax.Array
    change: jax.Array
    hist_f: jax.Array     # (depth + 1, p, k) ring of outputs G(input), in the history's order
    hist_r: jax.Array     # (depth + 1, p, k) ring of residuals output - input
    gram_hi: jax.Array    # (depth + 1, depth + 1) <r_a, r_b> of the ring's slots, float64
    gram_lo: jax.Array    #   carried as float32 hi + lo (the loop runs without x64)
    head: jax.Array       # the ring slot written last
    count: jax.Array      # valid history entries
    best: jax.Array       # smallest change so far
    since: jax.Array      # iterations since the change last reached a new low (or a restart)
    stalls: jax.Array     # restarts for want of a new low; at _ANDERSON_STALLS mixing stops


def _matching(new, old):
    """``perm`` with ``old[:, perm[j]]`` the column matched to ``new[:, j]``."""
    return linear_assignment(-(_unit_columns(new).T @ _unit_columns(old)))


def _split_wide(v):
    """float64 ``v`` as float32 ``(hi, lo)`` with ``hi + lo = v`` to about 2^-48."""
    hi = v.astype(jnp.float32)
    return hi, (v - hi.astype(v.dtype)).astype(jnp.float32)


def _ring_order(head, count, slots):
    """Ring slots of the last ``count`` entries, oldest first, padded in front with the
    oldest (``(slots,)`` int32) and the mask of the differences that are valid."""
    back = jnp.arange(slots - 1, -1, -1)                       # slots-1 ... 0 steps back
    order = jnp.mod(head - jnp.minimum(back, count - 1), slots)
    valid = back[1:] < count - 1                               # difference order[j+1]-order[j]
    return order, valid


def _anderson_coefficients(gram, order, valid):
    """Type-II Anderson mixing (Walker & Ni 2011) as weights on the ring's slots: the
    next input ``sum_s c_s f_s`` (``f_s`` the outputs) equals ``f - (dF) g`` with
    ``g = argmin ||r - dR g||`` over the valid differences (float64 normal equations
    from the residuals' inner products ``gram``, ``(slots, slots)``)."""
    slots = gram.shape[0]
    g_sel = gram[order][:, order]                              # oldest first
    dd = g_sel[1:, 1:] - g_sel[1:, :-1] - g_sel[:-1, 1:] + g_sel[:-1, :-1]
    rhs = g_sel[1:, -1] - g_sel[:-1, -1]
    dd = jnp.where(valid[:, None] & valid[None, :], dd, 0)
    rhs = jnp.where(valid, rhs, 0)
    ridge = 1e-12 * jnp.trace(dd) + jnp.finfo(dd.dtype).tiny
    dd = dd + jnp.diag(jnp.where(valid, ridge, 1.0))
    g = jnp.linalg.solve(dd, rhs)
    # f_last - sum_j g_j (f[order[j+1]] - f[order[j]])
    weights = jnp.zeros(slots, dd.dtype).at[order[-1]].add(1.0)
    weights = weights.at[order[1:]].add(-g).at[order[:-1]].add(g)
    return weights


def _iterate_anderson(sides: _Sides, y0, gamma, tol, max_iter, opts: _Options, n_valid):
    """epca's alternation ``Y <- G(Y) = PRS(X_c^T PRS(X_c Y), gamma)`` with Anderson
    acceleration of the fixed-point map ``G`` once it has settled.

    Each iteration evaluates ``G`` exactly as the plain loop does (so the result is a
    fixed point of epca's map, stopped by its rule with ``G(Y)`` compared to ``Y``);
    the next input is the Anderson combination of the last ``_ANDERSON_DEPTH``
    inputs and residuals, each output stored in its input's column order (columns may
    trade places), once the change is below ``_ANDERSON_START tol``; the history restarts
    when the change grows more than ``_ANDERSON_RESTART``-fold or has not reached a
    new low for ``_ANDERSON_DEPTH`` iterations (a plain step follows each restart);
    after ``_ANDERSON_STALLS`` such stalls the plain iteration continues alone, so the
    loop converges wherever epca's does (within ``max_iter``).
    """
    rot = dict(rotate=opts.rotate, tol=tol, precision=opts.rotation_precision)
    xy0 = sides.apply(y0)
    return _anderson_loop(lambda s: _epca_step(sides, s, gamma, opts, rot, n_valid),
                          sides.apply, jnp.zeros((), jnp.int32), y0, xy0,
                          jnp.zeros(xy0.shape, y0.dtype), tol, max_iter)


def _anderson_loop(step, coords_of, i0, y0, xy0, z0, tol, max_iter):
    """The loop of :func:`_iterate_anderson` around ``step(s) -> (z, y, xy, change, perm)``
    (``s.y``: the input, ``s.xy = coords_of(s.y)``, ``s.z``: the last sample side,
    ``s.i``: the iteration), from iteration ``i0``; returns a :class:`_LoopState`.

    The history is a ring of outputs and residuals kept in the column order of the
    inputs (the map commutes with permutations of its input's columns: each output is
    matched to its input and stored in that order), with the residuals' inner products
    updated by one row a step, so a step costs ``O(depth p k)`` and moves no history.
    """
    dtype = y0.dtype
    p, k = y0.shape
    slots = _ANDERSON_DEPTH + 1
    hist = jnp.zeros((slots, p, k), dtype)
    gram0 = jnp.zeros((slots, slots), jnp.float32)
    inf = jnp.full((), jnp.inf, dtype)
    zero = jnp.zeros((), jnp.int32)
    init = _AndersonState(i0, y0, xy0, y0, xy0, z0, inf, hist, hist, gram0, gram0, zero, zero,
                          inf, zero, zero)

    def cond(s):
        return (s.i < max_iter) & (s.change > tol)

    def body(s):
        z, y, xy, change, perm = step(s)
        # the output in the input's column order (columns may trade places)
        if perm is None:
            perm = _matching(s.y, y)
        f, xf = y[:, perm], xy[:, perm]
        r = f - s.y
        head = jnp.mod(s.head + 1, slots)
        hist_f = s.hist_f.at[head].set(f)
        hist_r = s.hist_r.at[head].set(r)
        # restart on a large growth, or when a whole history brought no new low (a stall)
        # stalls count only where mixing runs: the plain steps before it may plateau
        settled = change < _ANDERSON_START * tol
        since = jnp.where(settled & (change >= s.best), s.since + 1, 0)
        stalled = since > _ANDERSON_DEPTH
        restart = (change > _ANDERSON_RESTART * s.change) | stalled | (s.i == i0)
        count = jnp.where(restart, 1, jnp.minimum(s.count + 1, slots))
        since = jnp.where(restart, 0, since)
        stalls = s.stalls + stalled.astype(jnp.int32)
        mix = (count >= 2) & settled & (stalls < _ANDERSON_STALLS)
        with jax.enable_x64(True):
            wide = jnp.float64
            # a fused float64 reduction (XLA's CPU dot of this shape runs 5x slower)
            row = jnp.sum(hist_r.astype(wide) * r.astype(wide)[None], axis=(1, 2))
            gram = s.gram_hi.astype(wide) + s.gram_lo.astype(wide)
            gram = gram.at[head, :].set(row).at[:, head].set(row)
            gram_hi, gram_lo = _split_wide(gram)

            def mixed():
                order, valid = _ring_order(head, count, slots)
                weights = _anderson_coefficients(gram, order, valid)
                out = jnp.zeros((p, k), wide)
                for slot in range(slots):     # unrolled: 20x faster than the dot on CPU
                    out = out + weights[slot] * hist_f[slot].astype(wide)
                return out.astype(dtype)

            y_next = jax.lax.cond(mix, mixed, lambda: f)
        xy_next = jax.lax.cond(mix, lambda: coords_of(y_next), lambda: xf)
        return _AndersonState(s.i + 1, y_next, xy_next, y, xy, z, change, hist_f, hist_r,
                              gram_hi, gram_lo, head, count, jnp.minimum(change, s.best),
                              since, stalls)

    s = jax.lax.while_loop(cond, body, init)
    return _LoopState(s.i, s.y_out, s.xy_out, s.z, s.change)


def _iterate_warm(sides: _Sides, y0, gamma, tol, max_iter, opts: _Options, n_valid):
    """The alternation with varimax warm-started from the previous loadings.

    With that start the rotation applied on the sample side does not change
    the loadings. For any orthogonal ``T``, ``polar(X_c^T Q T) = A T`` with
    ``A = polar(X_c^T Q)``; the loading-side varimax starts from
    ``L_0 = A T polar((A T)^T Y_prev) = A polar(A^T Y_prev)`` and each step maps
    ``L`` to ``A polar(A^T f(L))``: the same sequence whatever ``T`` is. So the
    loop carries the unrotated sample-side polar factor ``Q = polar(X_c Y)``
    (its changes enter the stopping rule) and rotates it once at the end,
    varimax to R's tolerance from the rotation that aligns ``Q`` with the first
    step's ``Z``, then flip and order. The first step has nothing to follow:
    it is the reference step, varimax from ``I`` to R's tolerance on both
    sides, so the loadings are exactly those of the loop that rotates ``Z``
    every time (checked: same iterates, ``||B||``, sparsity and explained
    variance at ``p = 2048``, ``k = 20`` and ``50``). On the factored data the
    loop costs ``O(p r k)`` plus the loading-side varimax steps; nothing of
    size ``n`` but ``U w`` for the stopping rule. Measured (2 cores, GAN-like
    ``N = 10000``, idle machine): ``p = 2048, k = 50`` 4.9 s instead of 10.0 s,
    ``p = 16384, k = 50`` 52.8 s instead of 74.9 s, same answers.
    """
    dtype = y0.dtype
    # First step as the reference: varimax from I on both sides. With each warm varimax
    # run to a stationary point this step is only the start: its R steps stay in float32
    # while their growth exceeds 16 tolerances (float32 resolves that; the default
    # bound, 8 sqrt(m) eps_32, sent 900 of the 1000 steps at p = 16384, k = 50 to float64)
    z0 = sides.lift(polar_small_svd(sides.reduce(y0)))
    rot = dict(rotate="varimax", tol=tol, precision=opts.rotation_precision,
               coarse=opts.varimax_start == "converged")
    z1 = _rotate_shrink(z0, None, n_valid=n_valid, **rot)
    y1 = _rotate_shrink(polar_small_svd(sides.apply_t(z1)), gamma, **rot)
    y1, coords1 = _order_by(y1, sides.reduce(y1))
    init = _LoopState(jnp.ones((), jnp.int32), y1, coords1, z0, jnp.full((), jnp.inf, dtype))

    def cond(s):
        return (s.i < max_iter) & (s.change > tol)

    def step(s):
        w = polar_small_svd(s.xy)
        z = sides.lift(w)
        # signs carried over from the previous iterate, not re-chosen by skewness: a
        # column of near-zero skewness (|sum y^3| / sum |y|^3 = 0.003 at p = 16384,
        # k = 50) flipped every few iterations, a change of about 0.3 each time
        y = _rotate_shrink(sides.polar_back(w), gamma, rotate="varimax", previous=s.y,
                           warm=opts.varimax_start, flip=False)
        y, coords = _order_by(y, sides.reduce(y))
        change, perm = _step_change(z, y, s, opts.stop_rule)
        return z, y, coords, change, perm

    def body(s):
        z, y, coords, change, _ = step(s)
        return _LoopState(s.i + 1, y, coords, z, change)

    if opts.acceleration == "anderson" and opts.varimax_start == "converged":
        # each warm varimax run to a stationary point makes the outer map a function
        # of its input alone, smooth enough for mixing
        state = _anderson_loop(step, sides.reduce, init.i, y1, coords1, z0, tol, max_iter)
    else:
        state = jax.lax.while_loop(cond, body, init)
    signs = _skew_signs(state.y)            # the canonical signs, once, at the end
    state = state._replace(y=state.y * signs, xy=state.xy * signs[None, :])
    xy = sides.lift(state.xy)
    q = sides.lift(polar_small_svd(state.xy))
    z = _varimax(q, _varimax_tol(tol, q, n_valid), _VARIMAX_MAX_ITER,
                 init=polar_small_svd(q.T @ z1),
                 n_valid=n_valid, precision=opts.rotation_precision)
    z, _ = _order_by(flip_skewness(z), sides.apply_t(z))
    return state._replace(xy=xy, z=z)


def _span_basis(y):
    """Orthonormal basis ``Q`` of ``span(Y)`` (``(p, k)``) and a ``(k,)`` mask of
    the columns of ``Y`` that add a direction (a column in the span of the
    earlier ones, or zero, adds nothing)."""
    q, r = jnp.linalg.qr(y, mode="reduced")
    diag = jnp.abs(jnp.diag(r))
    return q, diag > 10 * jnp.finfo(y.dtype).eps * jnp.max(diag)


def _assemble(state: _LoopState, mean, scores, captured, adds, total, tol) -> SCAResult:
    """The result from a final loop state and the data-side sums.

    ``scores = X_c Y``; ``captured[j] = ||X_c q_j||^2`` for the basis of
    :func:`_span_basis`; ``total = ||X_c||_F^2``.
    """
    b = state.z.T @ scores
    captured = jnp.where(adds, captured, 0)
    ratio = jnp.where(total > 0, jnp.cumsum(captured) / jnp.where(total > 0, total, 1), 0)
    converged = state.change <= tol
    return SCAResult(state.y, scores, state.z, b, ratio, jnp.linalg.norm(b), mean, state.i,
                     converged, state.change, iteration_status(converged, state.y, b))


def _finish(x, mean, state: _LoopState, scores, tol):
    """Scores, ``B``, cumulative explained variance and flags from a final state."""
    q, adds = _span_basis(state.y)
    captured = jnp.sum(centred_matmul(x, mean, q) ** 2, axis=0)
    # Fused by XLA into one reduction: X - mean is not stored. Padding rows
    # equal to the mean (row sharding) add exactly zero.
    total = jnp.sum((x - mean[None, :]) ** 2)
    return _assemble(state, mean, scores, captured, adds, total, tol)


def _true_rows(x, n_valid):
    return x.shape[0] if n_valid is None else n_valid


_STATIC = ("rotate", "varimax_start", "stop_rule", "rotation_precision", "acceleration")


@partial(jax.jit, static_argnames=_STATIC)
def sca_iterate(x: jax.Array, mean: jax.Array, y0: jax.Array, gamma, *, tol=1e-5,
                max_iter=1000, rotate: str = "varimax",
                varimax_start: str = "identity", stop_rule: str = "epca",
                rotation_precision: str = "float64", acceleration: str = "none",
                n_valid=None) -> SCAResult:
    """Run the SCA iteration on ``X`` in memory, from the loadings ``y0``.

    ``Z <- PRS(X_c Y)``, ``Y <- PRS(X_c^T Z, gamma)`` until the change of ``Z``
    and of ``Y`` (``stop_rule``) is at most ``tol`` (Chen & Rohe; module doc).
    The mean is folded into each product.

    Args:
      x: ``(n, p)`` float array, possibly row-sharded over a mesh and padded
        with rows equal to ``mean`` (:func:`jaxfactor.sharding.shard_rows`).
      mean: ``(p,)`` column means (zeros for uncentred data).
      y0: ``(p, k)`` starting loadings, usually the top right singular vectors.
      gamma: L1 budget of the loadings (scalar, traced).
      tol: stopping tolerance (traced); also sets varimax's, ``tol / sqrt(m)``
        relative on its criterion (epca's ``epsilon``).
      max_iter: iteration cap (traced).
      rotate: ``'varimax'`` or ``'none'`` (static).
      varimax_start: ``'identity'`` (default, the reference method): restart
        each varimax from ``I`` and run it to R's tolerance, as ``epca``
        does; ``'previous'``: from the second iteration on, start it from the
        rotation that aligns its input with the previous iterate and take
        ten steps, so that varimax refines across iterations. More outer
        iterations, far fewer varimax steps; at the joint fixed point the
        rotation is an exact varimax stationary point rather than one stopped
        at R's loose tolerance. Measured effect in ``benchmarks/bench_sca.py``.
        ``'converged'``: the same warm start, each varimax then run to a
        stationary point by Barzilai-Borwein ascent
        (:func:`jaxfactor._linalg.varimax_bb`): where R's steps crawl along a
        plateau (``p = 16384, k = 50``) the outer loop no longer waits for them.
      stop_rule: ``'epca'`` (default; epca's matched sum over unit-normalised
        columns of the largest entry change) or ``'max_entry'`` (the largest
        entry change of any matched column, unnormalised: about ``k`` times
        looser); static.
      rotation_precision: ``'float64'`` (default) or ``'float32'``: the
        precision of the varimax rotations (static). float32 cannot resolve
        epca's varimax tolerance (:func:`jaxfactor._policy.choose_rotation_precision`).
      acceleration: ``'none'`` (default, epca's plain iteration) or
        ``'anderson'``: with ``varimax_start='identity'`` or ``'converged'``, Anderson
        mixing of the fixed-point map ``Y -> PRS(X_c^T PRS(X_c Y))`` once it has settled
        (:func:`_iterate_anderson`, :func:`_anderson_loop`): the same fixed point in
        fewer iterations; ignored with ``'previous'`` (static). With ``'identity'`` the
        sample side's varimax then starts from the rotation aligning its input with the
        last ``Z`` (still to R's tolerance; the loadings' varimax still from ``I``):
        a few steps instead of dozens near the fixed point.
      n_valid: true row count when ``x`` carries padding rows (traced;
        default ``x.shape[0]``); used for varimax's column means on the
        sample side.

    Returns:
      :class:`SCAResult` (``scores`` and ``z`` have ``x``'s rows, padding
      rows included: they are zero).

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.sca import sca_iterate
      >>> x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
      >>> mean = x.mean(0)
      >>> y0 = np.linalg.svd(x - mean, full_matrices=False)[2][:2].T
      >>> res = sca_iterate(x, mean, y0, 2.5)
      >>> res.loadings.shape, res.scores.shape, bool(np.abs(res.loadings).sum() <= 2.5 + 1e-4)
      ((8, 2), (50, 2), True)
    """
    gamma = jnp.asarray(gamma, x.dtype)
    opts = _Options(rotate, varimax_start, stop_rule, rotation_precision, acceleration)
    state = _iterate(_data_sides(x, mean), y0, gamma, jnp.asarray(tol, x.dtype), max_iter, opts,
                     _true_rows(x, n_valid))
    return _finish(x, mean, state, state.xy, tol)


def _iterate_factored(u, s, vt, gamma, n_components, tol, max_iter, opts: _Options,
                      n_valid) -> _LoopState:
    dtype = vt.dtype
    y0 = vt[:n_components].T
    return _iterate(_factored_sides(u, s, vt), y0, jnp.asarray(gamma, dtype), jnp.asarray(tol, dtype),
                    max_iter, opts, n_valid)


@partial(jax.jit, static_argnames=("n_components",) + _STATIC)
def sca_iterate_reduced(x: jax.Array, mean: jax.Array, u: jax.Array, s: jax.Array,
                        vt: jax.Array, gamma, *, n_components: int, tol=1e-5, max_iter=1000,
                        rotate: str = "varimax", varimax_start: str = "identity",
                        stop_rule: str = "epca", rotation_precision: str = "float64",
                        acceleration: str = "none", n_valid=None) -> SCAResult:
    """The SCA iteration on the rank-``r`` approximation ``X_c ~ U diag(s) Vt``.

    Each product costs ``O((n + p) r k)`` instead of ``O(n p k)``:
    ``X_c Y ~ U (s * (Vt Y))`` and ``X_c^T Z ~ Vt^T (s * (U^T Z))``; the start
    is ``Y_0 = Vt[:k]^T``. This solves the SCA problem for the rank-``r``
    matrix, an approximation of the problem for ``X`` (exact when ``X_c`` has
    rank ``r``); the returned scores, ``B``, objective and explained variance
    are computed with ``X`` itself (two more products).

    Args:
      x: ``(n, p)`` data (possibly row-sharded and mean-padded); mean: ``(p,)``.
      u: ``(n, r)``; s: ``(r,)``; vt: ``(r, p)``: truncated SVD of ``X_c``.
      gamma: L1 budget of the loadings (traced).
      n_components: ``k <= r`` (static).
      tol, max_iter, rotate, varimax_start, stop_rule, rotation_precision, acceleration,
        n_valid: as for :func:`sca_iterate`.

    Returns:
      :class:`SCAResult`.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.sca import sca_iterate_reduced
      >>> x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
      >>> u, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
      >>> res = sca_iterate_reduced(x, x.mean(0), u[:, :4], s[:4], vt[:4], 2.5, n_components=2)
      >>> res.loadings.shape, res.z.shape, res.b.shape
      ((8, 2), (50, 2), (2, 2))
    """
    opts = _Options(rotate, varimax_start, stop_rule, rotation_precision, acceleration)
    state = _iterate_factored(u, s, vt, gamma, n_components, tol, max_iter, opts,
                              _true_rows(x, n_valid))
    scores = centred_matmul(x, mean, state.y)
    return _finish(x, mean, state, scores, tol)


_iterate_factored_jit = jax.jit(_iterate_factored, static_argnames=("n_components", "opts"))


@jax.jit
def _left_factor(block, mean, vt, s):
    """``(X_b - 1 mean^T) Vt^T diag(1/s)`` (zero where ``s`` is negligible)."""
    inv = jnp.where(s > jnp.finfo(s.dtype).eps * s[0] * 10, 1 / jnp.where(s > 0, s, 1), 0)
    return centred_matmul(block, mean, vt.T) * inv[None, :]


@jax.jit
def _scores_rows(block, mean, y):
    """Scores ``X_b,c Y`` of one block."""
    return centred_matmul(block, mean, y)


@jax.jit
def _captured_rows(block, mean, q):
    """``(X_b,c q_j)^2`` per row; summed over all rows, ``||X_c q_j||^2``."""
    return centred_matmul(block, mean, q) ** 2


_span_basis_jit = jax.jit(_span_basis)
_assemble_jit = jax.jit(_assemble)


def sca_source(source: RowSource, n_components: int, *, key: jax.Array, reduced_rank: int,
               gamma=None, tol=1e-5, max_iter: int = 1000, rotate: str = "varimax",
               varimax_start: str = "identity", stop_rule: str = "epca",
               rotation_precision: str = "float64", acceleration: str = "none",
               block_rows: int = 4096,
               dtype=jnp.float32, mesh=None, checkpoint: str | os.PathLike | None = None,
               checkpoint_every: int = 16) -> SCAResult:
    """Sparse component analysis of rows read in blocks from a replayable source.

    The reduced variant (:func:`sca_iterate_reduced`) over a streaming
    randomized SVD: the ``n_iter + 1`` passes of ``randomized_svd_source``
    (:func:`jaxfactor.randomized.svd_passes`, which also give the column
    moments), one pass for ``U = X_c V diag(1/s)`` (``n x r``, stacked by
    :func:`~jaxfactor.accumulate.stack_rows`), the iteration on ``U diag(s)
    V^T`` (no pass), one pass for the scores ``X_c Y`` and the captured
    variances ``||X_c q_j||^2`` (:func:`~jaxfactor.accumulate.sum_rows`).
    Memory: ``O(block_rows p + (n + p) r)``; the ``n x p`` matrix is never
    held. All passes run through :func:`jaxfactor.streaming.run_passes`, so
    they shard over ``mesh`` and resume from ``checkpoint`` (the iteration's
    result is saved at the boundary before the last pass).

    Args:
      source: a :class:`~jaxfactor.sources.RowSource` of ``n`` rows of width ``p``.
      n_components: ``k``.
      key: ``jax.random`` key of the randomized SVD.
      reduced_rank: ``r`` in ``[k, min(n, p)]``.
      gamma: L1 budget (default ``sqrt(p k)``).
      tol, max_iter, rotate, varimax_start, stop_rule, rotation_precision, acceleration: as
        for :func:`sca_iterate`.
      block_rows: rows per block.
      dtype: working dtype.
      mesh: a ``jax.sharding.Mesh`` (:func:`jaxfactor.sharding.row_mesh`) to
        split each block by rows over its devices, or ``None``.
      checkpoint: path of a ``.npz`` checkpoint file, or ``None``: the state
        is saved every ``checkpoint_every`` blocks and at each pass boundary;
        a call with the same arguments after an interruption resumes from it
        and returns the same result as an uninterrupted call; the file is
        removed at the end.
      checkpoint_every: blocks between checkpoints.

    Returns:
      :class:`SCAResult` (``scores`` and ``z`` are ``(n, k)``, in memory).

    Raises:
      ValueError: ``checkpoint`` holds a file of another run.

    Examples:
      >>> import jax, numpy as np
      >>> from jaxfactor.sca import sca_source
      >>> from jaxfactor.sources import ArraySource
      >>> x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
      >>> res = sca_source(ArraySource(x), 2, key=jax.random.key(0), reduced_rank=4, block_rows=16)
      >>> res.loadings.shape, res.scores.shape, res.mean.shape
      ((8, 2), (50, 2), (8,))
    """
    n, p = source.n_samples, source.n_features
    k = n_components
    gamma = default_gamma(p, k) if gamma is None else gamma
    opts = _Options(rotate, varimax_start, stop_rule, rotation_precision, acceleration)
    params = range_params(reduced_rank, n, p)
    common = dict(key=key, center=True, block_rows=block_rows, dtype=dtype)
    stack, sums = stack_rows(_left_factor), sum_rows(_captured_rows)
    scores_acc = stack_rows(_scores_rows)

    def left_start(ctx):
        operands = (ctx["svd.mean"], ctx["svd.vt"], ctx["svd.s"])
        return {"u": stack}, {"u": stack.init(operands, n, reduced_rank, dtype)}

    def left_finish(ctx, states):
        u = stack.finalize(states["u"])
        state = _iterate_factored_jit(u, ctx["svd.s"], ctx["svd.vt"], gamma, k, tol, max_iter,
                                      opts, n)
        q, adds = _span_basis_jit(state.y)
        return {**ctx, **pack("loop", state), "q": q, "adds": adds}

    def final_start(ctx):
        mean = ctx["svd.mean"]
        return ({"scores": scores_acc, "captured": sums},
                {"scores": scores_acc.init((mean, ctx["loop.y"]), n, k, dtype),
                 "captured": sums.init((mean, ctx["q"]), (k,), dtype)})

    def final_finish(ctx, states):
        return {**ctx, "scores": scores_acc.finalize(states["scores"]),
                "captured": sums.finalize(states["captured"])}

    passes = svd_passes(source, reduced_rank, params, mesh=mesh, **common) + [
        Pass("left", left_start, left_finish), Pass("final", final_start, final_finish)]
    run = {**svd_run(source, reduced_rank, params, **common),
           "sca": {"k": k, "gamma": float(gamma), "tol": float(tol), "max_iter": int(max_iter),
                   **opts._asdict()}}
    ctx = run_passes(source, passes, block_rows=block_rows, dtype=dtype, mesh=mesh,
                     checkpoint=as_checkpoint(checkpoint, run, checkpoint_every))
    _, mom = svd_from_context(ctx)
    total = jnp.sum(mom.variance) * max(n - 1, 1)
    return _assemble_jit(unpack("loop", _LoopState, ctx), ctx["svd.mean"], ctx["scores"],
                         ctx["captured"], ctx["adds"], total, tol)


def default_gamma(n_features: int, n_components: int) -> float:
    """epca's default L1 budget ``sqrt(p k)``: between the infeasible ``k``
    (unit columns cannot be sparser) and the inactive ``k sqrt(p)``."""
    return math.sqrt(n_features * n_components)


def sca(x: jax.Array, n_components: int, *, key: jax.Array, gamma=None, tol=1e-5,
        max_iter: int = 1000, rotate: str = "varimax", reduced_rank: int | None = None,
        svd_solver: str = "auto", varimax_start: str = "identity", stop_rule: str = "epca",
        rotation_precision: str = "float64", acceleration: str = "none",
        n_valid=None) -> SCAResult:
    """Sparse component analysis of ``X`` in memory: initial SVD plus iteration.

    Starts from the top ``k`` right singular vectors of ``X_c`` (exact by
    covariance ``eigh``/thin SVD for small ``p``, else randomized; see
    :mod:`jaxfactor._policy`), then runs :func:`sca_iterate`. With
    ``reduced_rank=r`` the iteration runs on the rank-``r`` randomized SVD
    instead (:func:`sca_iterate_reduced`, an approximation).

    Args:
      x: ``(n, p)`` float array; the kernels assume it is finite. May be
        row-sharded over a mesh and padded with rows equal to the column mean
        (:func:`jaxfactor.sharding.shard_rows`); pass the true ``n_valid``.
      n_components: ``k <= min(n, p)``.
      key: ``jax.random`` key for the randomized SVD.
      gamma: L1 budget of the ``(p, k)`` loadings (default ``sqrt(p k)``).
      tol, max_iter, rotate, varimax_start, stop_rule, rotation_precision, acceleration:
        see :func:`sca_iterate`.
      reduced_rank: ``None`` (iterate on ``X``) or ``r`` in ``[k, min(n, p)]``.
      svd_solver: ``'auto'``, ``'full'`` or ``'randomized'`` for the start.
      n_valid: true row count (default ``x.shape[0]``).

    Returns:
      :class:`SCAResult`.

    Examples:
      >>> import jax, numpy as np
      >>> from jaxfactor.sca import sca
      >>> x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
      >>> res = sca(x, 2, key=jax.random.key(0))
      >>> res.loadings.shape, res.scores.shape, res.explained_variance_ratio.shape
      ((8, 2), (50, 2), (2,))
      >>> bool(np.abs(res.loadings).sum() <= np.sqrt(8 * 2) + 1e-4)   # default budget sqrt(p k)
      True
    """
    n, p = x.shape
    n_count = n if n_valid is None else int(n_valid)
    k = n_components
    options = dict(tol=tol, max_iter=max_iter, rotate=rotate, varimax_start=varimax_start,
                   stop_rule=stop_rule, rotation_precision=rotation_precision,
                   acceleration=acceleration)
    gamma = default_gamma(p, k) if gamma is None else gamma
    if reduced_rank is not None:
        svd = randomized_svd(x, reduced_rank, key=key, center=True, compute_u=True)
        return sca_iterate_reduced(x, svd.mean, svd.u, svd.s, svd.vt, gamma, n_components=k,
                                   n_valid=n_count, **options)
    solver = choose_svd_solver(svd_solver, n_count, p, k, True)
    if solver == "full":
        # mean-padding rows change neither the mean nor the principal axes
        start = pca_full(ArraySource(x), k, dtype=x.dtype)
        mean, y0 = start.mean, start.components.T
    else:
        start = randomized_svd(x, k, key=key, center=True, compute_u=False)
        mean, y0 = start.mean, start.vt.T
    return sca_iterate(x, mean, y0, gamma, n_valid=n_count, **options)
