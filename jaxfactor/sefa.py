"""Closed-form factorisation of generator weights (SeFa; Shen & Zhou 2021), (the kernels).

SeFa needs no sampling: the latent directions that a generator's first
latent-to-feature projections amplify most are the top eigenvectors of
``A^T A``, where ``A`` stacks the chosen weight matrices (each ``C_l x d``:
output channels by latent dimensions, PyTorch's ``nn.Linear.weight`` layout)
with every row normalised to unit L2 norm. Unlike the original code, the
eigenvectors are sorted by eigenvalue (descending) and their signs are fixed.

Kernels
  * :func:`stack_normalized` -- stack weight matrices and normalise rows.
  * :func:`sefa_directions` -- top eigenvectors of ``A^T A``.

Estimator
  :class:`jaxfactor.estimators.SeFa`.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._linalg import svd_flip

__all__ = ["SeFaResult", "stack_normalized", "sefa_directions"]


class SeFaResult(NamedTuple):
    """Directions from generator weights.

    Attributes:
      components: ``(k, d)`` orthonormal latent directions (rows), by
        decreasing eigenvalue; largest-magnitude entry of each positive.
      eigenvalues: ``(k,)`` eigenvalues of ``A^T A`` (descending).
      total: ``()`` ``trace(A^T A)`` (the number of non-zero rows of ``A``).
    """

    components: jax.Array
    eigenvalues: jax.Array
    total: jax.Array


@jax.jit
def stack_normalized(*weights: jax.Array) -> jax.Array:
    """Stack ``(C_l, d)`` matrices into ``A`` (``(sum C_l, d)``) with unit-norm rows.

    Rows of norm zero stay zero.

    Args:
      *weights: ``(C_l, d)`` float arrays sharing ``d``.

    Returns:
      ``(sum_l C_l, d)`` array.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.sefa import stack_normalized
      >>> rng = np.random.default_rng(0)
      >>> a = stack_normalized(rng.normal(size=(6, 4)), rng.normal(size=(3, 4)))
      >>> a.shape, bool(np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5))
      ((9, 4), True)
    """
    a = jnp.concatenate(weights, axis=0)
    norms = jnp.sqrt(jnp.sum(a * a, axis=1, keepdims=True))
    return a / jnp.where(norms > 0, norms, 1).astype(a.dtype)


@partial(jax.jit, static_argnames=("n_components",))
def sefa_directions(a: jax.Array, n_components: int) -> SeFaResult:
    """Top eigenvectors of ``A^T A`` (Shen & Zhou 2021, "Closed-form
    factorization of latent semantics in GANs").

    ``max_{n^T n = 1} ||A n||^2`` is solved by the leading eigenvector of the
    ``d x d`` matrix ``A^T A``; the next ones follow in order.

    Args:
      a: ``(C, d)`` stacked weights, usually from :func:`stack_normalized`.
      n_components: ``k <= d`` (static).

    Returns:
      :class:`SeFaResult`.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.sefa import sefa_directions, stack_normalized
      >>> a = stack_normalized(np.random.default_rng(0).normal(size=(16, 4)))
      >>> res = sefa_directions(a, n_components=2)
      >>> res.components.shape, bool(np.allclose(res.components @ res.components.T, np.eye(2), atol=1e-5))
      ((2, 4), True)
    """
    gram = a.T @ a
    w, v = jnp.linalg.eigh(gram)
    w = jnp.maximum(w[::-1][:n_components], 0)
    _, vt = svd_flip(None, v[:, ::-1][:, :n_components].T)
    return SeFaResult(vt, w, jnp.trace(gram))
