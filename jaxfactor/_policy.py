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


# ------------------------------------------------------------------ FastICA

WHITEN_SOLVERS = ("auto", "eigh", "svd", "randomized")
SVD_MAX_ENTRIES = 1 << 22


def choose_whiten_solver(solver: str, n_samples: int, n_features: int, n_components: int,
                         in_memory: bool = True) -> str:
    """Resolve FastICA's ``whiten_solver='auto'`` (one of :data:`WHITEN_SOLVERS`).

    :func:`choose_svd_solver` decides exact vs randomized; an exact whitening
    of a small matrix (``n p <= 2^22`` entries) is a thin SVD (one compiled
    program, accurate to ``eps``), a larger one the covariance ``eigh`` (one
    pass, ``O(n p^2)``). Data that are not in memory (a row source) are
    whitened by the streaming randomized SVD whatever the shape: the
    result is then ``'randomized'``. Any value other than ``'auto'`` is
    returned as is.

    Args:
      solver: the user's choice.
      n_samples, n_features: data shape.
      n_components: ``k`` (an int).
      in_memory: whether the data are an in-memory array.
    """
    if solver != "auto":
        return solver
    if not in_memory:
        return "randomized"
    if choose_svd_solver("auto", n_samples, n_features, n_components, True) != "full":
        return "randomized"
    return "svd" if n_samples * n_features <= SVD_MAX_ENTRIES else "eigh"


WHITEN_KRYLOV_MAX_FRACTION = 0.02
WHITEN_SUBSPACE_ITER = 2


def choose_whiten_range(method: str, n_iter, n_samples: int, n_features: int,
                        n_components: int) -> tuple[str, int | None]:
    """Resolve FastICA's randomized whitening range finder ``method='auto'``.

    ICA needs the top-``k`` subspace of the data, not accurate singular
    values: the whitening is exact for whatever ``k``-dimensional subspace the
    range finder returns (Rayleigh-Ritz), and ICA then rotates inside it. So:

    * ``k + 10 <= 0.02 min(n, p)`` (few components): PCA's block Krylov
      default (:func:`jaxfactor.randomized.range_params`), cheap at this width;
    * more components: subspace iteration with ``2`` applications of the
      normal operator and ``k + 10`` columns: ``5 (k + 10)`` GEMM columns over
      ``X`` instead of Krylov's ``~7.5 (k + 10)``, and QR factorisations of a
      ``(p, k + 10)`` instead of a ``(p, 2.5 k)`` basis. Measured at
      ``N = 10000``, ``p = 16384``, ``k = 500`` (2 loaded cores): 14.7 s vs
      26.7 s for Krylov, same Amari distance of the ICA that follows
      (``benchmarks/bench_ica.py``).

    An explicit ``method`` (``'krylov'``/``'subspace'``) is returned with the
    user's ``n_iter`` untouched.

    Returns:
      ``(method, n_iter)`` for :func:`jaxfactor.randomized.range_params`.
    """
    if method != "auto":
        return method, n_iter
    if n_components + 10 <= WHITEN_KRYLOV_MAX_FRACTION * min(n_samples, n_features):
        return "krylov", n_iter
    return "subspace", WHITEN_SUBSPACE_ITER if n_iter is None else n_iter


DECORRELATIONS = ("auto", "eigh", "newton-schulz")


def choose_decorrelation(decorrelation: str, platform: str) -> str:
    """Resolve FastICA's ``decorrelation='auto'`` for a JAX backend platform.

    ``'eigh'`` (an eigendecomposition of the ``k x k`` matrix ``W W^T``) on
    CPU, where LAPACK's ``syevd`` is faster than the ~10-20 ``k x k``
    matrix products a Newton-Schulz polar iteration needs; ``'newton-schulz'``
    (matrix products only) on accelerators, where ``eigh`` is slow and
    matrix products are what the hardware does best.

    Args:
      decorrelation: one of :data:`DECORRELATIONS`.
      platform: ``jax.default_backend()``-style name (``'cpu'``, ``'gpu'``,
        ``'tpu'``, ...).
    """
    if decorrelation != "auto":
        return decorrelation
    return "eigh" if platform == "cpu" else "newton-schulz"
