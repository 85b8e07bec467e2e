"""Hyper-parameter validation: one table per estimator, the same rule (and the
same message) for the same parameter everywhere."""
import math

import jax
import numpy as np
import pytest

from jaxfactor import PCA, SCA, FastICA, SeFa
from jaxfactor import _params as P
from jaxfactor._params import InvalidParameterError

ESTIMATORS = [PCA, FastICA, SCA, SeFa]


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_every_parameter_has_a_rule(cls):
    assert set(cls._parameter_constraints) == set(cls().get_params())


def test_shared_parameters_share_one_rule():
    # a name taken by two estimators has one rule object, except where an
    # estimator documents a wider meaning (PCA's variance-fraction n_components)
    seen = {}
    for cls in ESTIMATORS:
        for name, rule in cls._parameter_constraints.items():
            seen.setdefault(name, []).append((cls, rule))
    widened = {("PCA", "n_components")}
    for name, uses in seen.items():
        if len(uses) < 2 and name not in P.SHARED:
            continue
        for cls, rule in uses:
            if (cls.__name__, name) in widened:
                assert all(form in rule for form in P.SHARED[name])
            elif name in P.SHARED:
                assert rule is P.SHARED[name], (cls.__name__, name)
            else:   # not shared: must then differ in meaning, e.g. PCA's method has no 'auto'
                assert name in {"method", "whiten"}, (cls.__name__, name)


BAD = {
    "block_rows": [0, -3, True, 2.0, "8", None],
    "max_iter": [0, True, 1.5, None],
    "tol": [-1.0, math.inf, math.nan, True, "1e-4", None],
    "n_oversamples": [-1, True, 2.5],
    "n_iter": [-1, False, 1.0],
    "block_size": [0, True],
    "random_state": ["0", 1.5, True, [1]],
    "mesh": ["cpu", 4],
    "n_components": [0, -2, True, "3", 2.5],
}


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_shared_parameters_refused_the_same_way(cls, rng):
    x = rng.standard_normal((30, 6)).astype(np.float32)
    for name, values in BAD.items():
        if name not in cls._parameter_constraints:
            continue
        for value in values:
            with pytest.raises(InvalidParameterError,
                               match=rf"^The '{name}' parameter of {cls.__name__} must be .* "
                                     rf"Got .* instead\.$"):
                cls(**{name: value}).fit(x)


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_invalid_parameter_error_is_scikit_learns(cls, rng):
    from sklearn.utils._param_validation import InvalidParameterError as Sk

    x = rng.standard_normal((30, 6)).astype(np.float32)
    with pytest.raises(Sk) as info:
        cls(n_components=0).fit(x)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("value", [1e-3, 0, 0.0, np.float32(1e-4), 5])
def test_tol_accepted_forms(value, rng):
    x = rng.standard_normal((40, 5)).astype(np.float32)
    for cls in (FastICA, SCA):
        assert cls(2, tol=value, max_iter=3).fit(x).n_iter_ >= 1


def test_valid_forms_accepted(rng):
    x = rng.standard_normal((40, 5)).astype(np.float32)
    PCA(np.int64(2), block_rows=np.int32(16), random_state=np.random.default_rng(0)).fit(x)
    PCA(0.5, solver="full").fit(x)
    PCA(2, random_state=jax.random.key(1), mesh=None).fit(x)
    SCA(2, gamma=np.float32(2.5), reduced_rank="auto").fit(x)
    SeFa(None).fit(x)


def test_interval_and_option_messages():
    assert str(P.Interval(int, 1, None)) == "an int in the range [1, inf)"
    assert str(P.Interval(float, 0, 1, closed="neither")) == "a finite float in the range (0, 1)"
    assert str(P.Options("a", "b")) == "a str among {'a', 'b'}"
    assert not P.Interval(float, 0, None).accepts(math.inf)
    assert not P.Interval(int, 0, None).accepts(False)
