"""The estimator template (jaxfactor._base.Factorizer): one fit for all."""
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from jaxfactor import PCA, SCA, FastICA, SeFa
from jaxfactor._base import Factorizer

ESTIMATORS = [PCA, FastICA, SCA, SeFa]


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_no_estimator_overrides_fit(cls):
    assert cls.fit is Factorizer.fit and cls.fit_transform is Factorizer.fit_transform


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_fit_runs_with_one_blas_thread_and_restores_the_pool(cls, rng, monkeypatch):
    seen = []
    inner = cls._fit

    def spy(self, X):
        seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        return inner(self, X)

    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    monkeypatch.setattr(cls, "_fit", spy)
    cls(2).fit(rng.laplace(size=(60, 6)).astype(np.float32))
    assert seen and set(seen) == {1}
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_parameters_are_checked_before_the_data(cls):
    # the constraint table is read before the input is looked at
    from jaxfactor._params import InvalidParameterError

    with pytest.raises(InvalidParameterError):
        cls(n_components=-1).fit("not data at all")
