"""Kernel outcomes as values (jaxfactor._status), mapped to warnings and errors
in one place."""
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfactor import SCA, FastICA
from jaxfactor import _status as S
from jaxfactor._validation import ConvergenceWarning
from jaxfactor.ica import fastica


def test_iteration_status_values():
    ok = jnp.ones(3)
    assert int(S.iteration_status(True, ok)) == S.CONVERGED
    assert int(S.iteration_status(False, ok)) == S.MAX_ITER
    assert int(S.iteration_status(True, ok, jnp.array([1.0, jnp.nan]))) == S.NOT_FINITE
    assert int(S.iteration_status(False, jnp.array(jnp.inf))) == S.NOT_FINITE


def test_report_is_the_one_reaction():
    assert S.report("X", S.CONVERGED, n_iter=3, change=0.0, tol=1e-4) == "converged"
    with pytest.warns(ConvergenceWarning, match="X did not converge after 7 iterations"):
        assert S.report("X", S.MAX_ITER, n_iter=7, change=0.5, tol=1e-4) == "max_iter"
    with pytest.raises(ValueError, match="non-finite values after 2 iterations"):
        S.report("X", S.NOT_FINITE, n_iter=2, change=float("nan"), tol=1e-4)


def test_fastica_kernel_reports_not_finite(rng):
    white = jnp.asarray(rng.standard_normal((200, 3)), jnp.float32).at[5, 1].set(jnp.inf)
    res = fastica(white, w_init=jnp.eye(3), max_iter=5)
    assert int(res.status) == S.NOT_FINITE and not bool(res.converged)


def test_estimators_record_their_status(rng):
    x = rng.laplace(size=(400, 5)) @ rng.standard_normal((5, 8))
    assert FastICA(3, random_state=0).fit(x).status_ == "converged"
    with pytest.warns(ConvergenceWarning, match=r"FastICA \(parallel\) did not converge after 1 iterations.*fixed-point change.*Riemannian gradient norm"):
        assert FastICA(3, max_iter=1, random_state=0).fit(x).status_ == "max_iter"
    assert SCA(2).fit(x).status_ == "converged"
    with pytest.warns(ConvergenceWarning, match="SCA did not converge after 1 iterations"):
        assert SCA(2, max_iter=1).fit(x).status_ == "max_iter"
    ica = FastICA(3, random_state=0).fit(np.asarray(x, np.float32))
    assert ica.converged_ and int(ica.n_iter_) >= 1
