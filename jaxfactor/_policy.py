"""The ``solver='auto'`` policy, in one place.

Every estimator that chooses between an exact and a randomized factorisation
asks :func:`choose_svd_solver`. The rule, in order:

1. a requested fraction of variance (``0 < n_components < 1``) needs the
   whole spectrum: ``'full'``;
2. small feature spaces (``p <= 1024``, e.g. StyleGAN's 512-dim W) or a
   component count close to the data's rank (``k >= 0.4 min(n, p)``, where a
   randomized basis would be nearly as wide as the data): ``'full'``, the
   covariance eigendecomposition (one pass, ``O(n p^2)``);
3. data that are not an in-memory array (a file, a generator stream):
   ``'streaming'``;
4. otherwise ``'randomized'``.
"""
from __future__ import annotations

SOLVERS = ("auto", "full", "randomized", "streaming")

FULL_MAX_FEATURES = 1024
FULL_MIN_FRACTION = 0.4


def choose_svd_solver(solver: str, n_samples: int, n_features: int, n_components,
                      in_memory: bool) -> str:
    """Resolve ``solver`` (one of :data:`SOLVERS`) to a concrete solver name.

    Args:
      solver: the user's choice; anything but ``'auto'`` is returned as is.
      n_samples, n_features: data shape.
      n_components: int, ``None`` (all) or a float fraction of variance.
      in_memory: whether the data are an in-memory array.
    """
    if solver != "auto":
        return solver
    small = min(n_samples, n_features)
    if n_components is None or (isinstance(n_components, float) and 0 < n_components < 1):
        return "full"
    if n_features <= FULL_MAX_FEATURES or n_components >= FULL_MIN_FRACTION * small:
        return "full"
    return "randomized" if in_memory else "streaming"
