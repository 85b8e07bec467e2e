"""Kernel outcomes as values, in the manner of lineax's ``RESULTS``.

Iterative kernels return a ``status`` (an ``int32`` scalar, traced inside jit)
instead of raising from deep inside a compiled loop; :func:`report` is the one
place where an estimator turns it into a warning or an error.
"""
from __future__ import annotations

import warnings

import jax.numpy as jnp

CONVERGED = 0
"""The iteration met its tolerance."""
MAX_ITER = 1
"""The iteration stopped at ``max_iter`` before meeting its tolerance."""
NOT_FINITE = 2
"""The iterate or its change became NaN or inf (overflow in the data's scale)."""

NAMES = {CONVERGED: "converged", MAX_ITER: "max_iter", NOT_FINITE: "not_finite"}


def iteration_status(converged, *arrays):
    """``()`` int32 status of an iteration: :data:`NOT_FINITE` when any of
    ``arrays`` holds NaN/inf, else :data:`CONVERGED` or :data:`MAX_ITER` by
    ``converged`` (traceable)."""
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in arrays]))
    return jnp.where(finite, jnp.where(converged, CONVERGED, MAX_ITER), NOT_FINITE).astype(jnp.int32)


def report(name: str, status, *, n_iter: int, change: float, tol: float) -> str:
    """Turn a kernel's status into the estimator's reaction; returns its name.

    Raises:
      ValueError: :data:`NOT_FINITE` (naming the iteration count).

    Warns:
      ConvergenceWarning: :data:`MAX_ITER`, with the iteration count and the
        last change against ``tol``.
    """
    from ._validation import ConvergenceWarning

    status = int(status)
    if status == NOT_FINITE:
        raise ValueError(f"{name} produced non-finite values after {n_iter} iterations (the "
                         f"arithmetic overflowed: rescale the data or use float64)")
    if status == MAX_ITER:
        warnings.warn(f"{name} did not converge after {n_iter} iterations: last change "
                      f"{change:.3g} > tol={tol:.3g}. Increase max_iter or tol.",
                      ConvergenceWarning, stacklevel=4)
    return NAMES[status]
