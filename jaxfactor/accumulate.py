"""Blockwise accumulators: ``init / update / merge / finalize`` over row blocks.

An :class:`Accumulator` is a NamedTuple of four pure functions, in the manner of
optax's ``GradientTransformation``. Its state is a pytree of arrays, so the same
quartet serves three needs:

* streaming -- fold row blocks in one after another with ``update``;
* sharding -- each device folds its rows, then states are combined by
  ``merge`` (a sum for most states, Chan's rule for moments);
* resuming -- the state is what a checkpoint saves.

``update`` functions are jitted (or call one jitted function); they never
touch Python-side state. Library code feeds row sources to accumulators
through one runner, :func:`jaxfactor.streaming.run_pass` (padding over a
mesh, the in-flight bound, progress, checkpoints); :func:`fold` folds an
iterable of in-memory blocks.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "Accumulator",
    "MomentsState",
    "Moments",
    "moments",
    "PRECISIONS",
    "check_precision",
    "matmul",
    "centred_matmul",
    "centred_rmatmul",
    "NormalProductState",
    "normal_product",
    "TSQRState",
    "tsqr",
    "StackState",
    "stack_rows",
    "SumState",
    "sum_rows",
    "InFlight",
    "fold",
    "map_blocks",
]


class Accumulator(NamedTuple):
    """Four pure functions describing a blockwise reduction.

    Attributes:
      init: ``() -> state``.
      update: ``(state, block) -> state``; ``block`` is ``(b, p)``.
      merge: ``(state_a, state_b) -> state``; associative and commutative.
      finalize: ``state -> result``.
    """

    init: Callable[[], Any]
    update: Callable[[Any, jax.Array], Any]
    merge: Callable[[Any, Any], Any]
    finalize: Callable[[Any], Any]


# ---------------------------------------------------------------- moments


class MomentsState(NamedTuple):
    """Running first and second moments of rows seen so far.

    Attributes:
      count: ``()`` int32, rows folded in.
      mean: ``(p,)`` running column means.
      m2: ``(p,)`` sums of squared deviations from the running mean per column,
        or ``(p, p)`` the centred Gram matrix ``sum (x - mean)(x - mean)^T``
        when the covariance is tracked.
    """

    count: jax.Array
    mean: jax.Array
    m2: jax.Array


class Moments(NamedTuple):
    """Finalised moments.

    Attributes:
      n_samples: ``()`` int32.
      mean: ``(p,)``.
      variance: ``(p,)`` per-column variance with ``ddof`` applied.
      covariance: ``(p, p)`` covariance with ``ddof`` applied, or ``None``.
    """

    n_samples: jax.Array
    mean: jax.Array
    variance: jax.Array
    covariance: jax.Array | None


def _moments_init(n_features, covariance, dtype):
    shape = (n_features, n_features) if covariance else (n_features,)
    return MomentsState(jnp.zeros((), jnp.int32), jnp.zeros((n_features,), dtype),
                        jnp.zeros(shape, dtype))


def _moments_merge(a, b):
    dtype = a.mean.dtype
    na = a.count.astype(dtype)
    nb = b.count.astype(dtype)
    total = jnp.maximum(na + nb, 1)
    delta = b.mean - a.mean
    mean = a.mean + delta * (nb / total)
    if a.m2.ndim == 2:
        correction = jnp.outer(delta, delta) * (na * nb / total)
    else:
        correction = delta * delta * (na * nb / total)
    return MomentsState(a.count + b.count, mean, a.m2 + b.m2 + correction)


@jax.jit
def _moments_update(state, block, n_valid=None):
    block = block.astype(state.mean.dtype)
    if n_valid is None:
        mean = jnp.mean(block, axis=0)
        centred = block - mean
        count = jnp.asarray(block.shape[0], jnp.int32)
    else:  # only the first n_valid rows are data (the rest pad a sharded block)
        valid = _row_mask(block.shape[0], n_valid)
        count = jnp.asarray(n_valid, jnp.int32)
        mean = jnp.sum(jnp.where(valid, block, 0), axis=0) / jnp.maximum(count, 1).astype(block.dtype)
        centred = jnp.where(valid, block - mean, 0)
    if state.m2.ndim == 2:
        m2 = centred.T @ centred
    else:
        m2 = jnp.sum(centred * centred, axis=0)
    return _moments_merge(state, MomentsState(count, mean, m2))


def _row_mask(rows, n_valid):
    """``(rows, 1)`` booleans: True for the first ``n_valid`` rows."""
    return (jnp.arange(rows) < n_valid)[:, None]


def _moments_finalize(state, ddof):
    denom = jnp.maximum(state.count.astype(state.mean.dtype) - ddof, 1)
    if state.m2.ndim == 2:
        cov = state.m2 / denom
        return Moments(state.count, state.mean, jnp.diag(cov), cov)
    return Moments(state.count, state.mean, state.m2 / denom, None)


def moments(n_features: int, *, covariance: bool = False, ddof: int = 1,
            dtype=jnp.float32) -> Accumulator:
    """Column means and (co)variances, accurate in float32 for millions of rows.

    Each block is centred on its own mean before its second moment is formed,
    and blocks are combined with Chan, Golub & LeVeque's pairwise rule::

        delta = mean_b - mean_a
        m2    = m2_a + m2_b + delta delta^T * n_a n_b / (n_a + n_b)

    so no sum of raw squares (which cancels catastrophically when the mean is
    large next to the spread) is ever formed.

    Args:
      n_features: ``p``, the width of the blocks.
      covariance: track the full ``(p, p)`` centred Gram matrix, not only its
        diagonal.
      ddof: delta degrees of freedom of the finalised (co)variance.
      dtype: accumulation dtype.

    ``update(state, block, n_valid=None)``: with ``n_valid`` (an int32
    scalar), only the first ``n_valid`` rows of ``block`` are data; the rest
    (padding that makes a block divisible over a device mesh) enter neither
    the count, the mean nor the second moment.

    Returns:
      An :class:`Accumulator` (``init()`` takes no argument) whose
      ``finalize`` returns :class:`Moments`.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.accumulate import fold, moments
      >>> x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
      >>> acc = moments(8, covariance=True)
      >>> res = acc.finalize(fold(acc, acc.init(), [x[:20], x[20:]]))
      >>> int(res.n_samples), res.covariance.shape
      (50, (8, 8))
      >>> bool(np.allclose(res.covariance, np.cov(x.T), atol=1e-5))
      True
    """
    return Accumulator(partial(_moments_init, n_features, covariance, dtype),
                       _moments_update, jax.jit(_moments_merge),
                       partial(_moments_finalize, ddof=ddof))


# ------------------------------------------------- products for range finders

#: Operand precisions of the products with the data (see :func:`matmul`).
PRECISIONS = ("float32", "tf32", "bf16")


def check_precision(precision) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else ``ValueError``.

    Examples:
      >>> from jaxfactor.accumulate import check_precision
      >>> check_precision("bf16")
      'bf16'
      >>> check_precision("fp8")
      Traceback (most recent call last):
          ...
      ValueError: precision must be one of ('float32', 'tf32', 'bf16'), got 'fp8'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def matmul(a: jax.Array, b: jax.Array, precision: str = "float32") -> jax.Array:
    """``a @ b`` with the operands in the given precision, accumulated in float32.

    * ``'float32'``: full float32 products (``precision=HIGHEST``: JAX's
      default precision may use TF32 on recent NVIDIA GPUs; on CPU both are
      the same float32 product, bit for bit).
    * ``'tf32'``: operands rounded to TensorFloat-32 (8-bit exponent, 10-bit
      mantissa), float32 accumulation. On GPU this is the
      ``TF32_TF32_F32`` dot algorithm (tensor cores); elsewhere (CPU, which
      has no TF32 units) it is emulated by ``lax.reduce_precision`` of the
      operands followed by a float32 product -- the same rounding, no speed-up.
    * ``'bf16'``: operands cast to bfloat16 (7-bit mantissa), float32
      accumulation (``preferred_element_type=float32``).

    Args:
      a: ``(m, k)``; b: ``(k, n)``; float32 (or float64: the low precisions then
        still round to their formats and return float64).
      precision: one of :data:`PRECISIONS` (static).

    Returns:
      ``(m, n)`` in the result dtype of ``a`` and ``b``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxfactor.accumulate import matmul
      >>> a, b = jnp.ones((3, 4)), jnp.ones((4, 2))
      >>> out = matmul(a, b, "bf16")
      >>> out.shape, out.dtype, bool(jnp.all(out == 4))
      ((3, 2), dtype('float32'), True)
    """
    if precision == "float32":
        return jnp.matmul(a, b, precision=lax.Precision.HIGHEST)
    out = jnp.result_type(a, b)
    if precision == "bf16":
        prod = jnp.matmul(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), preferred_element_type=jnp.float32)
        return prod.astype(out)
    if precision == "tf32":
        if jax.default_backend() == "gpu" and out == jnp.float32:
            return jnp.matmul(a, b, precision=lax.DotAlgorithmPreset.TF32_TF32_F32)
        a32 = lax.reduce_precision(a.astype(jnp.float32), exponent_bits=8, mantissa_bits=10)
        b32 = lax.reduce_precision(b.astype(jnp.float32), exponent_bits=8, mantissa_bits=10)
        return jnp.matmul(a32, b32, precision=lax.Precision.HIGHEST).astype(out)
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def centred_matmul(x: jax.Array, mean: jax.Array | None, z: jax.Array,
                   precision: str = "float32") -> jax.Array:
    """``(X - 1 mean^T) Z`` without forming ``X - 1 mean^T``.

    The product with ``X`` is done in ``precision`` (see :func:`matmul`); the
    mean correction ``1 (mean^T Z)`` in the working dtype.

    Args:
      x: ``(n, p)``; mean: ``(p,)`` or ``None``; z: ``(p, b)``.
      precision: operand precision of ``X Z`` (static).

    Returns:
      ``(n, b)``.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.accumulate import centred_matmul
      >>> rng = np.random.default_rng(0)
      >>> x, z = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(8, 2)).astype(np.float32)
      >>> y = centred_matmul(x, x.mean(0), z)
      >>> y.shape, bool(np.allclose(y, (x - x.mean(0)) @ z, atol=1e-4))
      ((50, 2), True)
    """
    y = matmul(x, z, precision)
    if mean is not None:
        y = y - (mean @ z)[None, :]
    return y


def centred_rmatmul(x: jax.Array, mean: jax.Array | None, y: jax.Array,
                    precision: str = "float32") -> jax.Array:
    """``(X - 1 mean^T)^T Y`` without forming ``X - 1 mean^T``.

    Args:
      x: ``(n, p)``; mean: ``(p,)`` or ``None``; y: ``(n, b)``.
      precision: operand precision of ``X^T Y`` (static).

    Returns:
      ``(p, b)``.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.accumulate import centred_rmatmul
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(50, 2)).astype(np.float32)
      >>> z = centred_rmatmul(x, x.mean(0), y)
      >>> z.shape, bool(np.allclose(z, (x - x.mean(0)).T @ y, atol=1e-4))
      ((8, 2), True)
    """
    z = matmul(x.T, y, precision)
    if mean is not None:
        z = z - jnp.outer(mean, jnp.sum(y, axis=0))
    return z


class NormalProductState(NamedTuple):
    """State of :func:`normal_product`: the operands and the running sum."""

    z: jax.Array
    mean: jax.Array
    product: jax.Array


def _normal_product_update_impl(state, block, n_valid=None, *, precision="float32"):
    block = block.astype(state.z.dtype)
    if precision == "float32":
        y = centred_matmul(block, state.mean, state.z)
        if n_valid is not None:  # padded rows give zero rows of y, so add nothing below
            y = jnp.where(_row_mask(block.shape[0], n_valid), y, 0)
        return state._replace(product=state.product + centred_rmatmul(block, state.mean, y))
    # low precision: centre the block explicitly (a block-sized copy) so that the
    # rounding of the operands is relative to the spread, not to the mean
    centred = block - state.mean
    if n_valid is not None:
        centred = jnp.where(_row_mask(block.shape[0], n_valid), centred, 0)
    y = matmul(centred, state.z, precision)
    return state._replace(product=state.product + matmul(centred.T, y, precision))


def _per_precision(update_impl):
    """One jitted ``update(state, block, n_valid=None)`` per :data:`PRECISIONS` entry."""
    return {p: jax.jit(partial(update_impl, precision=p)) for p in PRECISIONS}


_NORMAL_PRODUCT_UPDATES = _per_precision(_normal_product_update_impl)


def _normal_product_merge(a, b):
    return a._replace(product=a.product + b.product)


def _normal_product_init(z, mean=None):
    mean = jnp.zeros((z.shape[0],), z.dtype) if mean is None else mean.astype(z.dtype)
    return NormalProductState(z, mean, jnp.zeros_like(z))


def normal_product(precision: str = "float32") -> Accumulator:
    """Accumulate ``(X - 1 mean^T)^T (X - 1 mean^T) Z`` over row blocks.

    This is one application of the (centred) normal operator -- the step of a
    power or block-Krylov iteration -- done in a single pass over the rows.
    ``init(z, mean=None)`` takes the ``(p, b)`` block ``Z`` and the ``(p,)``
    column means to fold into the products (``None``: no centring); the
    operands travel in the state so that ``update`` is one cached jitted
    function. ``update(state, block, n_valid=None)``: with ``n_valid``, rows
    from ``n_valid`` on are padding and contribute nothing.

    Args:
      precision: operand precision of the two products with each block (see
        :func:`matmul`); the running sum is kept in the working dtype. With a
        low precision each block is centred explicitly before rounding.

    Returns:
      An :class:`Accumulator`; ``finalize`` returns the ``(p, b)`` product.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.accumulate import fold, normal_product
      >>> x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
      >>> z, xc = np.eye(8, 2, dtype=np.float32), x - x.mean(0)
      >>> acc = normal_product()
      >>> prod = acc.finalize(fold(acc, acc.init(z, x.mean(0)), [x[:25], x[25:]]))
      >>> prod.shape, bool(np.allclose(prod, xc.T @ xc @ z, atol=1e-3))
      ((8, 2), True)
    """
    return Accumulator(_normal_product_init, _NORMAL_PRODUCT_UPDATES[check_precision(precision)],
                       _normal_product_merge, lambda s: s.product)


class TSQRState(NamedTuple):
    """State of :func:`tsqr`: the basis, the means and the triangular factor."""

    q: jax.Array
    mean: jax.Array
    r: jax.Array


def _tsqr_stack(a, b):
    return jnp.linalg.qr(jnp.concatenate([a, b], axis=0), mode="r")


def _tsqr_update_impl(state, block, n_valid=None, *, precision="float32"):
    block = block.astype(state.q.dtype)
    if precision == "float32":
        y = centred_matmul(block, state.mean, state.q)
    else:
        y = matmul(block - state.mean, state.q, precision)
    if n_valid is not None:  # zero rows leave R unchanged
        y = jnp.where(_row_mask(block.shape[0], n_valid), y, 0)
    return state._replace(r=_tsqr_stack(state.r, y))


_TSQR_UPDATES = _per_precision(_tsqr_update_impl)


@jax.jit
def _tsqr_merge(a, b):
    return a._replace(r=_tsqr_stack(a.r, b.r))


def _tsqr_init(q, mean=None):
    mean = jnp.zeros((q.shape[0],), q.dtype) if mean is None else mean.astype(q.dtype)
    return TSQRState(q, mean, jnp.zeros((q.shape[1], q.shape[1]), q.dtype))


def tsqr(precision: str = "float32") -> Accumulator:
    """Triangular factor ``R`` of ``(X - 1 mean^T) Q`` by tall-skinny QR.

    ``init(q, mean=None)`` takes the ``(p, m)`` basis and ``(p,)`` means. Each
    block's product ``Y_b = (X_b - 1 mean^T) Q`` is folded in by
    ``R <- qr([R; Y_b]).R``, and two states merge by ``qr([R_a; R_b]).R``.
    Since ``R^T R = Y^T Y`` without ever squaring the condition number, the
    SVD of ``R`` gives the singular values and right singular vectors of
    ``Y`` to full working accuracy. ``update(state, block, n_valid=None)``:
    rows from ``n_valid`` on are padding and leave ``R`` unchanged.

    Args:
      precision: operand precision of ``Y_b`` (see :func:`matmul`); the QR is
        done in the working dtype.

    Returns:
      An :class:`Accumulator`; ``finalize`` returns the ``(m, m)`` factor
      (determined up to the signs of its rows).

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.accumulate import fold, tsqr
      >>> x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
      >>> q, y = np.eye(8, 3, dtype=np.float32), (x - x.mean(0))[:, :3]
      >>> acc = tsqr()
      >>> r = acc.finalize(fold(acc, acc.init(q, x.mean(0)), [x[:25], x[25:]]))
      >>> r.shape, bool(np.allclose(r.T @ r, y.T @ y, atol=1e-3))
      ((3, 3), True)
    """
    return Accumulator(_tsqr_init, _TSQR_UPDATES[check_precision(precision)], _tsqr_merge, lambda s: s.r)


# ------------------------------------------------ per-row maps and their sums


class StackState(NamedTuple):
    """State of :func:`stack_rows`.

    Attributes:
      operands: pytree of arrays passed to ``fn`` after the block.
      rows: ``(n_rows, width)`` the results so far (zeros beyond ``cursor``).
      cursor: ``()`` int32, the next row to write.
    """

    operands: Any
    rows: jax.Array
    cursor: jax.Array


def _valid_count(block, n_valid):
    return jnp.asarray(block.shape[0] if n_valid is None else n_valid, jnp.int32)


def _stack_write(rows, cursor, operands, block, n_valid, *, fn):
    out = fn(block, *operands).astype(rows.dtype)
    count = _valid_count(block, n_valid)
    at = jnp.arange(block.shape[0])
    # padding rows go out of bounds and are dropped: the buffer needs no slack
    index = jnp.where(at < count, cursor + at, rows.shape[0])
    return rows.at[index].set(out, mode="drop"), cursor + count


# the (n, width) buffer is donated, so each block writes its rows in place
_stack_write_jit = jax.jit(_stack_write, static_argnames=("fn",), donate_argnums=(0,))


def _stack_init(operands, n_rows, width, dtype=jnp.float32, start=0):
    return StackState(operands, jnp.zeros((n_rows, width), dtype), jnp.asarray(start, jnp.int32))


def _stack_update(fn, state, block, n_valid=None):
    rows, cursor = _stack_write_jit(state.rows, state.cursor, state.operands, block, n_valid, fn=fn)
    return state._replace(rows=rows, cursor=cursor)


def _stack_merge(a, b):
    # states over disjoint row ranges (b initialised with start = a's end): zeros elsewhere
    return a._replace(rows=a.rows + b.rows, cursor=jnp.maximum(a.cursor, b.cursor))


def stack_rows(fn: Callable[..., jax.Array]) -> Accumulator:
    """Stack ``fn(X_b, *operands)`` of every block into one ``(n, width)`` array.

    For per-row results a pass keeps, such as projections ``(X_b - 1 mean^T) V``
    (whitened data, left factors, scores). ``init(operands, n_rows, width,
    dtype=float32, start=0)`` allocates the ``(n_rows, width)`` result, rows
    written from ``start`` on; the operands travel in the state so that one
    compiled update serves every call. ``update(state, block, n_valid=None)``
    writes the block's rows at the cursor in place (the buffer is donated:
    the previous state's ``rows`` is consumed); with ``n_valid``, rows from
    ``n_valid`` on are padding and are not written. ``merge`` adds two states
    that cover disjoint row ranges.

    Args:
      fn: ``(block (b, p), *operands) -> (b, width)``, a module-level function
        (static: it keys the compiled update).

    Returns:
      An :class:`Accumulator`; ``finalize`` returns the ``(n_rows, width)`` array.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from jaxfactor.accumulate import fold, stack_rows
      >>> x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
      >>> acc = stack_rows(jnp.matmul)                  # each block's rows X_b @ v
      >>> v = np.eye(8, 2, dtype=np.float32)
      >>> out = acc.finalize(fold(acc, acc.init((v,), 50, 2), [x[:20], x[20:]]))
      >>> out.shape, bool(np.allclose(out, x[:, :2]))
      ((50, 2), True)
    """
    return Accumulator(_stack_init, partial(_stack_update, fn), jax.jit(_stack_merge),
                       lambda s: s.rows)


class SumState(NamedTuple):
    """State of :func:`sum_rows`: the operands of ``fn`` and the running sum."""

    operands: Any
    total: jax.Array


def _sum_merge(a, b):
    return a._replace(total=a.total + b.total)


def _sum_update_impl(state, block, n_valid=None, *, fn):
    out = fn(block, *state.operands)
    if n_valid is not None:  # padding rows add nothing
        out = jnp.where(_row_mask(block.shape[0], n_valid).reshape((-1,) + (1,) * (out.ndim - 1)),
                        out, 0)
    return _sum_merge(state, SumState(state.operands, jnp.sum(out, axis=0).astype(state.total.dtype)))


_sum_update_jit = jax.jit(_sum_update_impl, static_argnames=("fn",))


def _sum_init(operands, shape, dtype=jnp.float32):
    return SumState(operands, jnp.zeros(shape, dtype))


def sum_rows(fn: Callable[..., jax.Array]) -> Accumulator:
    """Accumulate ``sum_i fn(X_b, *operands)[i]`` over every row of every block.

    ``init(operands, shape, dtype=float32)`` starts a zero sum of ``shape``
    (``fn``'s per-row result shape); ``update(state, block, n_valid=None)``
    merges in the block's sum over its rows (with ``n_valid``, rows from
    ``n_valid`` on are padding and add nothing); ``merge`` adds the sums.

    Args:
      fn: ``(block (b, p), *operands) -> (b, ...)``, a module-level function
        (static: it keys the compiled update).

    Returns:
      An :class:`Accumulator`; ``finalize`` returns the sum.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from jaxfactor.accumulate import fold, sum_rows
      >>> x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
      >>> acc = sum_rows(jnp.multiply)                  # sum over rows of 2 * X_b
      >>> total = acc.finalize(fold(acc, acc.init((2.0,), (8,)), [x[:20], x[20:]]))
      >>> total.shape, bool(np.allclose(total, 2 * x.sum(0), atol=1e-4))
      ((8,), True)
    """
    return Accumulator(_sum_init, partial(_sum_update_jit, fn=fn), jax.jit(_sum_merge),
                       lambda s: s.total)


class InFlight:
    """Bound the number of blocks queued on the device.

    JAX dispatches asynchronously: a Python loop that reads blocks faster than
    the device folds them would keep every queued block alive, so a pass over
    a file larger than memory would hold most of it. ``add(state)`` after each
    update waits for the state of ``limit`` updates ago, which keeps reading
    one block ahead of the computation (I/O and compute overlap) and memory
    at ``limit + 1`` blocks.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxfactor.accumulate import InFlight
      >>> queue = InFlight(limit=2)
      >>> for i in range(5):
      ...     queue.add(jnp.full((3,), i))
      >>> len(queue.pending)
      2
    """

    def __init__(self, limit: int = 2):
        self.limit = limit
        self.pending: list = []

    def add(self, state) -> None:
        self.pending.append(state)
        if len(self.pending) > self.limit:
            # a buffer donated to a later update (stack_rows) is gone; its siblings
            # come out of the same computation, so waiting on them is the same wait
            jax.block_until_ready([leaf for leaf in jax.tree_util.tree_leaves(self.pending.pop(0))
                                   if not (isinstance(leaf, jax.Array) and leaf.is_deleted())])


def fold(acc: Accumulator, state: Any, blocks: Iterable[Any], *, in_flight: int = 2) -> Any:
    """Fold an iterable of row blocks into an accumulator state.

    Args:
      acc: the accumulator.
      state: the starting state (from ``acc.init(...)``).
      blocks: iterable of ``(b_i, p)`` arrays (numpy, JAX or anything
        ``jnp.asarray`` takes).
      in_flight: blocks that may be queued on the device at once (see
        :class:`InFlight`).

    Returns:
      The state after all blocks (not finalised).

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.accumulate import fold, moments
      >>> x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
      >>> acc = moments(8)
      >>> state = fold(acc, acc.init(), np.array_split(x, 3))
      >>> int(state.count), state.mean.shape, bool(np.allclose(state.mean, x.mean(0), atol=1e-6))
      (50, (8,), True)
    """
    queue = InFlight(in_flight)
    for block in blocks:
        state = acc.update(state, jnp.asarray(block))
        queue.add(state)
    return state


def map_blocks(fn: Callable[[jax.Array], Any], source, block_rows: int, *, dtype=jnp.float32,
               in_flight: int = 2, progress: Callable[[int, int], None] | None = None) -> list:
    """``[fn(block) for block in source.blocks(block_rows)]`` with the blocks
    queued on the device bounded (see :class:`InFlight`), so that reading the
    next block overlaps the work on this one and memory stays at a few blocks
    (plus the results, which should be small: e.g. ``(b_i, k)`` projections).

    Args:
      fn: jitted function of one ``(b_i, p)`` block of ``dtype``.
      source: a row source (:class:`jaxfactor.sources.RowSource`).
      block_rows: rows per block.
      dtype: dtype the blocks are converted to.
      in_flight: blocks that may be queued at once.
      progress: optional ``callback(done_rows, total_rows)``.

    Returns:
      The list of ``fn`` results, one per block, in row order (not waited on).

    Examples:
      >>> import jax, numpy as np
      >>> from jaxfactor.accumulate import map_blocks
      >>> from jaxfactor.sources import ArraySource
      >>> x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
      >>> out = map_blocks(jax.jit(lambda b: b.sum(axis=0)), ArraySource(x), 20)
      >>> [o.shape for o in out], bool(np.allclose(sum(out), x.sum(0), atol=1e-4))
      ([(8,), (8,), (8,)], True)
    """
    out, queue, done = [], InFlight(in_flight), 0
    for block in source.blocks(block_rows):
        res = fn(jnp.asarray(block, dtype=dtype))
        queue.add(res)
        out.append(res)
        done += block.shape[0]
        if progress is not None:
            progress(done, source.n_samples)
    return out
