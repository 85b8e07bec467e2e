"""``SeFa``: the estimator over :mod:`jaxfactor.sefa`."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .. import _params as P
from .. import _validation as V
from .._base import Factorizer
from ..sefa import sefa_directions, stack_normalized

__all__ = ["SeFa"]


def _is_weight_list(weights) -> bool:
    if isinstance(weights, (list, tuple)) and len(weights) > 0:
        return all(getattr(w, "ndim", None) == 2 or (not hasattr(w, "ndim") and np.ndim(w) == 2)
                   for w in weights)
    return False


class SeFa(Factorizer):
    """SeFa: latent directions in closed form from generator weights.

    ``fit`` takes the weights, not data: a list of ``(C_l, d)`` matrices (the
    projections from the ``d``-dimensional latent code to each chosen layer's
    ``C_l`` channels, e.g. the style affine layers of StyleGAN2), a single
    ``(C, d)`` matrix, or a ``(L, C, d)`` stack. ``transform`` then gives the
    coordinates of latent codes along the directions, so the estimator obeys
    scikit-learn's transformer contract with the weight rows as the "samples".

    Args:
      n_components: ``k`` in ``[1, d]``; ``None`` for ``d``.

    Attributes:
      components_: ``(k, d)`` orthonormal directions, by decreasing eigenvalue.
      eigenvalues_: ``(k,)`` eigenvalues of ``A^T A``.
      explained_variance_ratio_: ``(k,)`` ``eigenvalues_ / trace(A^T A)``.
      n_components_, n_features_in_ (``d``): ints.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor import SeFa
      >>> rng = np.random.default_rng(0)
      >>> sefa = SeFa(n_components=3).fit([rng.normal(size=(16, 8)), rng.normal(size=(4, 8))])
      >>> sefa.components_.shape, sefa.transform(rng.normal(size=(5, 8))).shape
      ((3, 8), (5, 3))
    """

    _parameter_constraints = P.shared("n_components")

    def __init__(self, n_components=None):
        self.n_components = n_components

    def _fit(self, weights):
        if getattr(weights, "ndim", None) == 3:
            weights = list(weights)
        if _is_weight_list(weights):
            mats = [V.check_matrix(w, f"weights[{i}]") for i, w in enumerate(weights)]
            dims = {int(m.shape[1]) for m in mats}
            if len(dims) != 1:
                raise ValueError(f"all weight matrices must share the latent dimension d "
                                 f"(columns); got widths {[int(m.shape[1]) for m in mats]}")
            dtype = np.result_type(*[m.dtype for m in mats])
            mats = [m.astype(dtype) for m in mats]
            self.n_features_in_ = dims.pop()
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        else:
            arr, _ = self._intake(weights, reset=True, name="weights")
            mats = [arr]
        d = self.n_features_in_
        k = self.n_components
        if k is None:
            k = d
        elif not 1 <= k <= d:
            raise ValueError(f"n_components={k} must be between 1 and the latent dimension "
                             f"d={d}")
        res = sefa_directions(stack_normalized(*mats), int(k))
        self.components_ = np.asarray(res.components)
        self.eigenvalues_ = np.asarray(res.eigenvalues)
        total = float(res.total)
        self.explained_variance_ratio_ = (self.eigenvalues_ / total if total > 0
                                          else np.zeros_like(self.eigenvalues_))
        self.n_components_ = int(k)
        return self

    def transform(self, X):
        """Coordinates of latent codes along the directions: ``X components_^T``.

        Args:
          X: ``(n, d)`` latent codes.

        Returns:
          ``(n, k)``, the same kind of array as ``X``.
        """
        V.check_is_fitted(self)
        arr, kind = self._intake(X, reset=False)
        return V.restore_kind(arr @ jnp.asarray(self.components_, arr.dtype).T, kind)

    def inverse_transform(self, X):
        """Latent codes from coordinates: ``X components_`` (the projection
        onto the span of the directions).

        Args:
          X: ``(n, k)``.

        Returns:
          ``(n, d)``, the same kind of array as ``X``.
        """
        arr, kind = self._intake_scores(X)
        return V.restore_kind(arr @ jnp.asarray(self.components_, arr.dtype), kind)
