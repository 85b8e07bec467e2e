"""Hyper-parameter constraints: one table per estimator, one rule per name.

Each estimator declares ``_parameter_constraints``, a dict from parameter name
to a list of accepted forms, in the manner of scikit-learn's
``_parameter_constraints``. Parameters that several estimators share take
their rule from :data:`SHARED`, so ``block_rows=True`` or ``tol=inf`` is
refused the same way everywhere. :func:`validate_params` checks a whole table
at the start of ``fit`` and raises :class:`InvalidParameterError` (scikit-learn's
class, a ``ValueError`` and a ``TypeError``) with scikit-learn's message.
Checks that need the data (``n_components`` against the shape) stay with the
estimator.
"""
from __future__ import annotations

import math
import numbers
import os

import jax
import numpy as np

try:  # scikit-learn's class, so that code catching it catches ours
    from sklearn.utils._param_validation import InvalidParameterError
except ImportError:  # pragma: no cover - scikit-learn is a dependency
    class InvalidParameterError(ValueError, TypeError):
        """A hyper-parameter has a value outside its constraints."""

__all__ = ["InvalidParameterError", "Interval", "Options", "Constant", "InstanceOf",
           "ArrayLike", "JaxKey", "Predicate", "SHARED", "shared", "validate_params"]


class Interval:
    """Numbers of one kind in an interval.

    Args:
      kind: ``int`` (integers; ``bool`` excluded) or ``float`` (finite reals;
        ``bool`` excluded).
      low, high: bounds (``None``: unbounded).
      closed: ``'left'``, ``'right'``, ``'both'`` or ``'neither'``.
    """

    def __init__(self, kind, low=None, high=None, *, closed="both"):
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def accepts(self, value) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is int:
            if not isinstance(value, numbers.Integral):
                return False
        elif not isinstance(value, numbers.Real) or not math.isfinite(value):
            return False
        if self.low is not None:
            if value < self.low or (value == self.low and self.closed in ("right", "neither")):
                return False
        if self.high is not None:
            if value > self.high or (value == self.high and self.closed in ("left", "neither")):
                return False
        return True

    def __str__(self):
        kind = "an int" if self.kind is int else "a finite float"
        left = "[" if self.closed in ("left", "both") else "("
        right = "]" if self.closed in ("right", "both") else ")"
        low = "-inf" if self.low is None else self.low
        high = "inf" if self.high is None else self.high
        if self.low is None:
            left = "("
        if self.high is None:
            right = ")"
        return f"{kind} in the range {left}{low}, {high}{right}"


class Options:
    """One of a fixed set of strings."""

    def __init__(self, *options: str):
        self.options = tuple(options)

    def accepts(self, value) -> bool:
        return isinstance(value, str) and value in self.options

    def __str__(self):
        return "a str among {" + ", ".join(repr(o) for o in self.options) + "}"


class Constant:
    """Exactly ``value`` (``None``, ``True``, ``False``), by identity."""

    def __init__(self, value):
        self.value = value

    def accepts(self, value) -> bool:
        return value is self.value

    def __str__(self):
        return repr(self.value)


class InstanceOf:
    """An instance of one of ``types`` (``bool`` excluded unless listed)."""

    def __init__(self, *types, name: str | None = None):
        self.types, self.name = types, name

    def accepts(self, value) -> bool:
        if isinstance(value, bool) and bool not in self.types:
            return False
        return isinstance(value, self.types)

    def __str__(self):
        return self.name or "an instance of " + " or ".join(
            f"'{t.__module__}.{t.__qualname__}'" for t in self.types)


class Predicate:
    """Any value ``test(value)`` accepts, described by ``name``."""

    def __init__(self, test, name: str):
        self.test, self.name = test, name

    def accepts(self, value) -> bool:
        try:
            return bool(self.test(value))
        except Exception:  # a predicate that cannot even look at the value refuses it
            return False

    def __str__(self):
        return self.name


def _is_array_like(value) -> bool:
    return (hasattr(value, "__array__") or hasattr(value, "__dlpack__")
            or isinstance(value, (list, tuple)))


def _is_jax_key(value) -> bool:
    return isinstance(value, jax.Array) and jax.numpy.issubdtype(value.dtype, jax.dtypes.prng_key)


ArrayLike = Predicate(_is_array_like, "an array-like")
JaxKey = Predicate(_is_jax_key, "a jax.random key")

SHARED = {
    "block_rows": [Interval(int, 1, None)],
    "max_iter": [Interval(int, 1, None)],
    "tol": [Interval(float, 0, None)],
    "n_oversamples": [Constant(None), Interval(int, 0, None)],
    "n_iter": [Constant(None), Interval(int, 0, None)],
    "block_size": [Constant(None), Interval(int, 1, None)],
    "random_state": [Constant(None), Interval(int, None, None),
                     InstanceOf(np.random.RandomState, np.random.Generator), JaxKey],
    "mesh": [Constant(None), InstanceOf(jax.sharding.Mesh)],
    "n_components": [Constant(None), Interval(int, 1, None)],
    "checkpoint": [Constant(None), InstanceOf(str, os.PathLike, name="a path (str or os.PathLike)")],
    "checkpoint_every": [Interval(int, 1, None)],
}
"""The rule of every parameter that more than one estimator takes."""


def shared(*names: str) -> dict:
    """The shared rules of ``names``, as a fragment of a constraints table."""
    return {name: SHARED[name] for name in names}


def validate_params(estimator) -> None:
    """Check every hyper-parameter of ``estimator`` against its class's
    ``_parameter_constraints`` table.

    Raises:
      InvalidParameterError: the first parameter whose value no form of its
        rule accepts, in scikit-learn's wording.
    """
    table = type(estimator)._parameter_constraints
    for name, value in estimator.get_params(deep=False).items():
        forms = table[name]
        if any(form.accepts(value) for form in forms):
            continue
        described = [str(form) for form in forms]
        must = described[0] if len(described) == 1 else (
            ", ".join(described[:-1]) + " or " + described[-1])
        raise InvalidParameterError(f"The {name!r} parameter of {type(estimator).__name__} must be "
                                    f"{must}. Got {value!r} instead.")
