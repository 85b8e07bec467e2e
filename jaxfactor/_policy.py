"""Every ``'auto'`` choice and size threshold, in one place.

Estimators ask this module what to run and record the answer as a fitted
:class:`Plan` (``plan_``), in the manner of lineax's ``AutoLinearSolver``: the
rules below are the only place a threshold lives.

Exact or randomized (:func:`choose_svd_solver`), in order:

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

import math
from typing import NamedTuple

import numpy as np

SOLVERS = ("auto", "full", "randomized", "streaming")


class Plan(NamedTuple):
    """What a fit ran, as resolved from its parameters, the data's shape and
    the platform (recorded on the estimator as ``plan_``).

    Attributes:
      solver: PCA's solver (``'full'``, ``'randomized'``, ``'streaming'``),
        FastICA's whitening solver (``'eigh'``, ``'svd'``, ``'randomized'``,
        or ``None`` without whitening), SCA's initial SVD (``'full'`` or
        ``'randomized'``; ``'streaming'`` for row sources).
      range_method: ``'krylov'`` / ``'subspace'`` when a randomized range
        finder runs, else ``None``; n_iter: its iteration count when fixed by
        the policy (``None``: :func:`jaxfactor.randomized.range_params`).
      precision: operand precision of the products with the data.
      decorrelation: FastICA's symmetric decorrelation (``'eigh'`` or
        ``'newton-schulz'``), else ``None``.
      reduced_rank: SCA's reduced rank (``None``: iterate on ``X``).
      platform: the JAX platform the fit ran on (``'cpu'``, ``'gpu'``, ...).
      algorithm: FastICA's solver (``'parallel'``, ``'deflation'``, ``'picard'``),
        else ``None``.
      init: FastICA's start (``'random'``, ``'reseed'``, ``'w_init'`` for a given
        matrix), else ``None``.
      n_restarts: FastICA's seeded starts (``None``: one), else ``None``.
    """

    solver: str | None
    range_method: str | None = None
    n_iter: int | None = None
    precision: str = "float32"
    decorrelation: str | None = None
    reduced_rank: int | None = None
    platform: str = "cpu"
    algorithm: str | None = None
    init: str | None = None
    n_restarts: int | None = None


def platform_of(mesh=None) -> str:
    """The platform of ``mesh``'s first device, or of JAX's default device."""
    import jax

    return (mesh.devices.flat[0] if mesh is not None else jax.devices()[0]).platform


# ------------------------------------------------------------------ PCA

DIRECT_MAX_ENTRIES = 2 ** 26
"""An in-memory ``(n, p)`` array up to this many entries has its covariance
formed in one program (``X - mean`` stored once); larger ones are accumulated
block by block. Also the size up to which a row source over an in-memory array
is checked for NaN/inf at intake instead of block by block."""

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


ADAPTIVE_METHODS = ("adaptive", "adaptive_krylov")
"""The accuracy-controlled range finders (``tol``, in memory only)."""


def range_method_of(solver: str, method: str, n_iter) -> tuple[str | None, int | None]:
    """The range finder a randomized ``solver`` runs (``(None, None)`` for exact ones):
    ``method='auto'`` is ``'adaptive'`` in memory and ``'krylov'`` for a stream."""
    if solver not in ("randomized", "streaming"):
        return None, None
    if method == "auto":
        method = "adaptive" if solver == "randomized" else "krylov"
    return method, (None if method in ADAPTIVE_METHODS else n_iter)


ADAPTIVE_TOL = 4e-2
"""Default ``tol`` of the accuracy-controlled randomized SVD: the relative shortfall of
the captured variance (its estimate is conservative: the achieved shortfall was
0.02-0.8 of it on every spectrum measured), reached after at least
:func:`adaptive_min_iter` steps."""


def adaptive_min_iter(n_components: int, width: int) -> int:
    """Fewest shifted power steps of the accuracy-controlled solver, in ``[3, 5]``.

    Enough steps that the subspace filter separates ``sigma_k`` from
    ``sigma_{width+1}`` at least as sharply as scikit-learn's randomized PCA
    (7 power steps on ``k + 10`` columns) separates ``sigma_k`` from
    ``sigma_{k+11}`` on a power-law spectrum -- ``(2t + 1) log(width / k) >=
    15 log1p(10 / k)`` -- plus one step, and at least 3 (the first step with an
    error estimate). That peer oversamples by 10 columns whatever ``k``, so
    its filter is sharp at small ``k`` and blunt at large: the count falls
    from 5 (``k <= 40``) to 3 (``k >= 100``). Measured against float64 SVD,
    shortfall of the captured variance (power-law spectrum, singular values
    ``i^-0.5``): at ``k = 30`` (``N = 1500, p = 1100``) 4 steps 3.6e-5 - 6.1e-5
    against scikit-learn's 5.2e-5 - 6.7e-5, 5 steps 0.7e-5 - 1.5e-5; at ``k =
    100`` (``N = 3000, p = 2048``) 3 steps 1.5e-4 against 4.2e-4; GAN-like
    features at ``k = 250`` (``N = 3000, p = 8192``) 3 steps 2.5e-5 against
    1.3e-4.

    Examples:
      >>> from jaxfactor._policy import adaptive_min_iter, adaptive_width
      >>> [adaptive_min_iter(k, adaptive_width(k, 10**4, 10**4)) for k in (10, 30, 60, 100, 500)]
      [5, 5, 4, 3, 3]
    """
    k = max(int(n_components), 1)
    margin = math.log(max(width, k + 1) / k)
    odd = 15.0 * math.log1p(10.0 / k) / margin          # 2t + 1
    return int(min(max(math.ceil((odd - 1) / 2) + 1, 3), 5))


ADAPTIVE_MAX_ITER = 100

KRYLOV_MIN_DEPTH = 6
"""Fewest blocks of the accuracy-controlled block Krylov (``method='adaptive_krylov'``).

Measured against float64 SVD on the spectra of ``tests/test_pca_accuracy.py``
(shortfall of the captured variance at a fixed depth, blocks of ``ceil((k + 10) / 2)``
columns, scikit-learn's randomized PCA beside it): power law ``i^-0.5`` at ``k = 30``
depth 5 9.1e-5, depth 6 2.9e-6 against scikit-learn's 5.2e-5; at ``k = 60`` depth 5
2.3e-4, 6 1.1e-5 against 4.1e-4; at ``k = 100`` depth 5 2.9e-4, 6 1.8e-5 against
3.9e-4. On the flat spectrum (32..25, then a ramp) depth 6 left 0.048 at ``k = 30`` and
0.056 at ``k = 100`` against scikit-learn's 0.045 and 0.046; there the tolerance, not
the minimum, decides (depth 8: 0.029 and 0.033)."""

KRYLOV_MAX_DEPTH = 16
"""Most blocks of ``'adaptive_krylov'`` unless ``max_iter`` says otherwise (the basis,
its Rayleigh quotient and their eigenvalue problems grow with it)."""


def krylov_adaptive_block(n_components: int, n_samples: int, n_features: int,
                          block_size: int | None = None) -> int:
    """Columns per block of ``'adaptive_krylov'``: ``ceil((k + 10) / 2)`` by default (on the
    flat spectrum blocks of ``k / 4 + 5`` were far behind at equal passes: 0.067 against
    0.021 at ``k = 100``), at most ``min(n, p) // 2``."""
    b = math.ceil((n_components + 10) / 2) if block_size is None else int(block_size)
    return max(1, min(b, min(n_samples, n_features) // 2))


def krylov_adaptive_max_depth(n_components: int, block: int, n_samples: int, n_features: int,
                              max_iter: int | None = None) -> int:
    """Most blocks of ``'adaptive_krylov'``: ``max_iter`` or :data:`KRYLOV_MAX_DEPTH`, no
    more than fit in ``min(n, p)`` columns.

    Raises:
      ValueError: when ``k`` columns do not fit in as many blocks.
    """
    cap = KRYLOV_MAX_DEPTH if max_iter is None else int(max_iter)
    depth = max(1, min(cap, min(n_samples, n_features) // block))
    if depth * block < n_components:
        raise ValueError(f"method='adaptive_krylov' with blocks of {block} columns cannot hold "
                         f"n_components={n_components} in {depth} blocks; raise max_iter or "
                         f"use the full solver")
    return depth


def adaptive_width(n_components: int, n_samples: int, n_features: int,
                   n_oversamples: int | None = None) -> int:
    """Columns of the adaptive solver's subspace: ``k + max(10, k // 2)`` by default
    (wider bases converge in fewer steps on flat spectra: at ``k = 100`` a
    1.5k-wide basis needed 23 passes where ``k + 10`` needed 27 for ``tol =
    1e-2``), capped at ``min(n, p)``."""
    over = max(10, n_components // 2) if n_oversamples is None else n_oversamples
    return min(n_components + over, n_samples, n_features)


TRANSPOSE_MAX_BYTES = 2 ** 32
"""Largest in-memory ``X`` (4 GiB) beside which :func:`keep_transpose` keeps a
transposed copy."""


def keep_transpose(n_samples: int, n_features: int, itemsize: int, platform: str,
                   precision: str = "float32") -> bool:
    """Whether the in-memory randomized SVD keeps a row-major ``(p, n)`` copy of
    ``X`` for its products ``X^T Y`` (twice ``X``'s memory for the fit).

    On CPU, XLA runs ``X^T Y`` with ``X`` row-major at about half the rate of
    ``X Z`` (measured here: 37-68 against 135-150 GFLOP/s at ``n = 6000, p = 8192``,
    256 columns, where the same product from the transposed copy ran at 82-134);
    a copy costs one transpose, less than one product. GPUs' GEMMs read either
    operand transposed at full rate, so no copy there; nor for ``'tf32'`` /
    ``'bf16'`` operands, whose fits keep a converted copy of their own.

    Args:
      n_samples, n_features: ``n`` and ``p``; itemsize: bytes per entry.
      platform: the JAX platform (``'cpu'``, ``'gpu'``, ``'tpu'``).
      precision: the products' operand precision.

    Examples:
      >>> from jaxfactor._policy import keep_transpose
      >>> keep_transpose(10_000, 16_384, 4, "cpu"), keep_transpose(10_000, 16_384, 4, "gpu")
      (True, False)
    """
    return (platform == "cpu" and precision == "float32"
            and n_samples * n_features * itemsize <= TRANSPOSE_MAX_BYTES)


def keep_converted_transpose(n_samples: int, n_features: int, platform: str) -> bool:
    """Whether ``'adaptive_krylov'`` in ``'bf16'`` keeps its bfloat16 copy of the
    centred data in both layouts (``(n, p)`` and ``(p, n)``, row-major; together the
    memory of one float32 copy).

    Measured on CPU (AMD EPYC with AVX-512 BF16, 2 cores, ``n = 10000, p = 16384``,
    255 columns): bfloat16 ``X Z`` 0.19 s, ``X^T Y`` from the same copy 0.77 s, from
    the transposed copy 0.18 s (float32: 0.41, 0.49 and 0.34 s). GPUs read either
    operand transposed at full rate.

    Args:
      n_samples, n_features: ``n`` and ``p``.
      platform: the JAX platform.

    Examples:
      >>> from jaxfactor._policy import keep_converted_transpose
      >>> keep_converted_transpose(10_000, 16_384, "cpu"), keep_converted_transpose(10_000, 16_384, "gpu")
      (True, False)
    """
    return platform == "cpu" and n_samples * n_features * 2 <= TRANSPOSE_MAX_BYTES


def materialize_stream(method: str, n_features: int) -> bool:
    """Whether the pipeline reads a generator stream into memory before
    fitting (``True``), or lets the estimator stream it: PCA streams features
    wider than :data:`FULL_MAX_FEATURES` (the width where the exact solver stops
    being the choice); the other methods iterate in memory."""
    return not (method == "pca" and n_features > FULL_MAX_FEATURES)


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


ICA_ALGORITHMS = ("auto", "parallel", "deflation", "picard")
PICARD_MAX_COMPONENTS_FRACTION = 0.02
"""``algorithm='auto'`` runs Picard-O when ``k > 0.02 n`` (``N / k < 50``); measured in
``benchmarks/results/bench_ica.md``."""


def choose_ica_algorithm(algorithm: str, n_samples: int, n_components: int,
                         fun: str = "logcosh") -> str:
    """Resolve FastICA's ``algorithm='auto'`` (one of :data:`ICA_ALGORITHMS`).

    The parallel fixed point where it converges fast (few components for the
    rows: ``k <= 0.02 n``); Picard-O (:func:`jaxfactor.picard.picard_o`, a
    descent method with a line search) where the fixed point's Newton step,
    divided by a curvature that sampling noise swamps, cycles instead; the
    ``'cube'`` contrast, which Picard-O does not minimise, always runs the
    fixed point. Anything but ``'auto'`` is returned as is.

    Args:
      algorithm: the user's choice.
      n_samples, n_components: ``n`` and ``k``.
      fun: the contrast.
    """
    if algorithm != "auto":
        return algorithm
    if fun == "cube" or n_components <= PICARD_MAX_COMPONENTS_FRACTION * n_samples:
        return "parallel"
    return "picard"


SPURIOUS_K2_OVER_N = 10.0
"""Above ``k^2 / n = 10`` a descent from a random start was measured to end in a spurious
optimum of the ICA objective (planted Laplace sources, ``benchmarks/results/bench_ica.md``,
'Starts'): ``k^2 / n = 8`` (n = 5000, k = 200) and 9 (n = 10000, k = 300) reached the planted
basin from every random start, 20 (n = 2000, k = 200) and 25 (n = 10000, k = 500) from none."""


def random_start_is_trapped(n_samples: int, n_components: int) -> bool:
    """Whether ``k^2 > SPURIOUS_K2_OVER_N n``: too few rows for the components, so that
    FastICA and Picard-O from a random start are expected to end in a spurious optimum
    (more rows, ``n >= k^2 / 8``, or a start near the answer reach the good one)."""
    return n_components * n_components > SPURIOUS_K2_OVER_N * n_samples


def whitening_rank_floor(dtype, n_samples: int, n_features: int, solver: str) -> float:
    """FastICA's numerical-rank floor, relative to the largest singular value.

    A whitening singular value below ``floor * s_max`` counts as zero. ``eigh``
    of the covariance has eigenvalue errors ``~ eps p lambda_max``, so a
    singular value is above zero beyond ``sqrt(eps min(n, p)) s_max`` (twice
    that for margin; ``docs/ica_notes.md``); SVD-based solvers resolve down to
    ``eps max(n, p)`` (ten times that).
    """
    eps = float(np.finfo(dtype).eps)
    if solver == "eigh":
        return float(np.sqrt(eps * min(n_samples, n_features))) * 2
    return eps * max(n_samples, n_features) * 10


# ------------------------------------------------------------------ randomized range finder


class RangeParams(NamedTuple):
    """Shape of the range finder: ``n_iter`` applications of ``A`` to a
    ``(p, block_size)`` block; the basis has ``basis_size`` columns."""

    method: str
    n_iter: int
    block_size: int
    basis_size: int


def range_params(n_components: int, n_samples: int, n_features: int, *,
                 method: str = "krylov", n_oversamples: int | None = None,
                 n_iter: int | None = None, block_size: int | None = None) -> RangeParams:
    """Default range-finder sizes; the one place where they are chosen.

    ``subspace`` follows scikit-learn: ``k + 10`` columns, 7 iterations when
    ``k < 0.1 min(n, p)`` else 4. ``krylov`` uses blocks of
    ``ceil((k + 10) / 2)`` columns and 5 iterations, a basis of about ``2.5 k``
    columns built with 10 passes of half width over ``X`` (plus one to
    project): on GAN-like spectra (slow power-law decay) it captures more
    variance and resolves the singular values better than the subspace
    default (measured in ``tests/test_pca.py`` and ``benchmarks/bench_pca.py``),
    for about half of its matrix-product flops when ``k < 0.1 min(n, p)``.
    With 4 iterations it is no better than the subspace default. Narrower blocks
    save flops but lose accuracy on such flat tails, because the polynomial
    filter then has to separate ``sigma_k`` from ``sigma_m`` with ``m`` close
    to ``k``. The basis (and so each block) is capped at ``min(n, p)``.

    Args:
      n_components: ``k``.
      n_samples, n_features: ``n`` and ``p`` of the data.
      method: ``'krylov'`` or ``'subspace'``.
      n_oversamples: extra basis columns beyond ``k``.
      n_iter: applications of the normal operator (each is two passes).
      block_size: Krylov block width (derived from the basis size when None).

    Returns:
      :class:`RangeParams`.

    Examples:
      >>> from jaxfactor.randomized import range_params
      >>> range_params(2, 50, 8, method="subspace")
      RangeParams(method='subspace', n_iter=4, block_size=8, basis_size=8)
      >>> range_params(10, 10_000, 512).method
      'krylov'
    """
    small = min(n_samples, n_features)
    if method == "subspace":
        q = n_iter if n_iter is not None else (7 if n_components < 0.1 * small else 4)
        width = min(n_components + (10 if n_oversamples is None else n_oversamples), small)
        return RangeParams("subspace", max(q, 1), width, width)
    if method != "krylov":
        raise ValueError(f"method must be 'krylov' or 'subspace', got {method!r}")
    q = max(n_iter if n_iter is not None else 5, 1)
    over = 10 if n_oversamples is None else n_oversamples
    b = block_size if block_size is not None else math.ceil((n_components + over) / 2)
    b = max(1, min(b, small))
    q = min(q, math.ceil(small / b))
    return RangeParams("krylov", q, b, min(q * b, small))


# ------------------------------------------------------------------ SCA

REDUCED_MIN_SIZE = 2 ** 24
"""SCA's ``reduced_rank='auto'`` iterates on ``X`` itself below ``n p`` entries."""


def choose_reduced_rank(reduced_rank, n_samples: int, n_features: int, n_components: int,
                        *, in_memory: bool = True):
    """The rank SCA's reduced-space variant runs on, or ``None`` to iterate on ``X``.

    ``reduced_rank='auto'`` iterates on ``X`` itself when ``n p <
    REDUCED_MIN_SIZE``, else (and always for row sources, which cannot afford a
    pass per iteration) on the rank ``r = min(2 k + 10, n, p)`` randomized SVD
    (its measured effect is in ``benchmarks/results/bench_sca.md``).

    Args:
      reduced_rank: ``'auto'``, ``None`` or an int ``r``.
      n_samples, n_features, n_components: ``n``, ``p``, ``k``.
      in_memory: whether the data is an in-memory array.

    Returns:
      ``None`` or an int.
    """
    if reduced_rank != "auto" and (reduced_rank is not None or in_memory):
        return reduced_rank
    if reduced_rank == "auto" and in_memory and n_samples * n_features < REDUCED_MIN_SIZE:
        return None
    return min(2 * n_components + 10, n_samples, n_features)


ROTATION_FLOAT32_MARGIN = 100
"""float32 rotations are used only when SCA's tolerance exceeds this many times
``m eps_32`` (see :func:`choose_rotation_precision`)."""


def choose_rotation_precision(rotation_precision: str, n_samples: int, n_features: int,
                              tol: float, dtype) -> str:
    """The precision SCA's varimax rotations run in (``'float32'`` or ``'float64'``).

    epca stops varimax when its criterion ``d`` (a sum over ``m`` rows) grows by a
    relative ``tol / sqrt(m)`` or less. float32 computes ``d`` only to a relative
    ``~ sqrt(m) eps_32``, so it can make that decision only when
    ``tol >> m eps_32`` (``1.2e-3`` for ``m = 10^4``); below, the stopping step and
    hence the rotation jitter from call to call and the outer iteration stalls.
    ``'auto'``: ``'float64'`` for float32 data unless ``tol >=`` :data:`ROTATION_FLOAT32_MARGIN`
    ``* max(n, p) * eps_32``; float64 data rotate in float64 anyway.

    Args:
      rotation_precision: ``'auto'``, ``'float32'`` or ``'float64'``.
      n_samples, n_features: ``n``, ``p``.
      tol: SCA's stopping tolerance.
      dtype: the working dtype.

    Returns:
      ``'float32'`` or ``'float64'``.
    """
    if rotation_precision != "auto":
        return rotation_precision
    if np.dtype(dtype) == np.float64:
        return "float64"
    m = max(n_samples, n_features)
    return "float32" if tol >= ROTATION_FLOAT32_MARGIN * m * np.finfo(np.float32).eps else "float64"


def choose_sca_acceleration(acceleration: str, varimax_start: str) -> str:
    """The outer iteration SCA runs: ``'anderson'`` or ``'none'``.

    ``'auto'``: ``'anderson'`` (Anderson mixing of epca's fixed-point map once it has
    settled, :func:`jaxfactor.sca.sca_iterate`) when the varimax rotations restart from
    the identity, as epca's do: the same fixed point to within the distance epca's own
    stopping rule leaves (``tests/test_sca_reference.py``) in a third to a fifth of the
    iterations (``benchmarks/results/bench_sca.md``), and when each warm rotation runs to
    a stationary point (``'converged'``), which makes the outer map a function of its
    input: 85 -> 29 iterations at 10000 x 2048 x 20 and 133 -> 59 at 10000 x 16384 x 50
    (``reduced_rank='auto'``), 0.007 and 0.002 degrees from the plain loop's answer;
    ``'none'`` for the fixed ten warm steps (``'previous'``), whatever is asked: that
    loop does not mix.

    Args:
      acceleration: ``'auto'``, ``'anderson'`` or ``'none'``.
      varimax_start: ``'identity'``, ``'previous'`` or ``'converged'`` (pass
        ``'identity'`` when the rotation is not varimax: no warm start then).

    Returns:
      ``'anderson'`` or ``'none'``.
    """
    if varimax_start == "previous":
        return "none"                  # the ten fixed warm steps are never mixed
    if acceleration != "auto":
        return acceleration
    return "anderson"
