"""Shared estimator plumbing: scikit-learn's contract plus array intake."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import validate_data
from threadpoolctl import threadpool_limits

from . import _params as P
from . import _validation as V
from .accumulate import centred_matmul
from .sources import RowSource, as_source, is_source


@jax.jit
def _scores(x, components, mean, scale):
    y = centred_matmul(x, mean, components.T)
    return y if scale is None else y / scale


class Factorizer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Base class of jaxfactor's estimators (not public).

    Provides ``_intake`` (validation + hand-over to JAX, recording
    ``n_features_in_`` and feature names on ``reset``) and the scikit-learn
    tags that describe the estimators: float32 output unless JAX's x64 mode
    is on, no NaN allowed.
    """

    def _intake(self, x, *, reset: bool, min_samples: int = 1, name: str = "X"):
        kind = V.array_kind(x)
        arr = V.check_matrix(x, name, min_samples=min_samples)
        if kind == "numpy" and hasattr(x, "columns"):
            validate_data(self, x, reset=reset, skip_check_array=True)
        elif reset:
            self.n_features_in_ = int(arr.shape[1])
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        if not reset:
            V.check_n_features(self, arr, name)
        return arr, kind

    def _intake_rows(self, x, *, min_samples: int = 2):
        """Fit input of any kind: ``(arr, source, n, p, dtype, kind)``.

        An array (numpy, JAX, torch) goes through :meth:`_intake` and comes back
        as ``arr`` (``source`` is ``None``); a row source (that is not also an
        array) or a path to ``.npy`` data comes back as ``source`` (``arr`` and
        ``kind`` are ``None``), read block by block by the caller. Either way
        ``n_features_in_`` is recorded.
        """
        if not (isinstance(x, (str, os.PathLike)) or (
                is_source(x) and not hasattr(x, "__array__") and not hasattr(x, "__dlpack__"))):
            arr, kind = self._intake(x, reset=True, min_samples=min_samples)
            return arr, None, arr.shape[0], arr.shape[1], arr.dtype, kind
        source: RowSource = V.check_source(as_source(x), min_samples=min_samples)
        n, p = source.n_samples, source.n_features
        self.n_features_in_ = int(p)
        if hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        return None, source, n, p, V.working_dtype(getattr(source, "dtype", np.float32)), None

    def fit(self, X, y=None):
        """Fit the model on ``X``.

        Args:
          X: ``(n_samples, n_features)`` float array (numpy, JAX or torch);
            PCA, FastICA and SCA also take a row source
            (:mod:`jaxfactor.sources`, a ``bridges`` activation stream, or a
            path to ``.npy`` data), read block by block. SeFa takes its
            weights here: a list of ``(C_l, d)`` arrays, one ``(C, d)`` array
            or an ``(L, C, d)`` stack.
          y: ignored.

        Returns:
          ``self``.
        """
        P.validate_params(self)
        # XLA runs its own thread pool; LAPACK (QR, SVD, eigh through OpenBLAS)
        # would start a second one on the same cores and the two contend.
        try:
            # float32 products at full float32 on every platform (TF32 on NVIDIA otherwise)
            with threadpool_limits(limits=1, user_api="blas"), jax.default_matmul_precision("highest"):
                self._fit(X)
        except Exception:
            V.clear_fitted(self)
            raise
        V.check_fitted_finite(self)
        return self

    def fit_transform(self, X, y=None):
        """Fit, then return the ``(n_samples, k)`` transform of ``X``."""
        return self.fit(X).transform(X)

    def _score_scale(self):
        """``(k,)`` divisor of the scores (PCA's whitening), or ``None``."""
        return None

    def transform(self, X):
        """Scores of ``X``: ``(X - mean_) components_^T`` (the mean folded into
        the product), divided by the estimator's score scale where it has one
        (PCA with ``whiten=True``: ``sqrt(explained_variance_)``). For FastICA
        these are the sources, for SCA epca's ``X Y``.

        Args:
          X: ``(n, p)`` float array (numpy, JAX or torch).

        Returns:
          ``(n, k)`` scores, the same kind of array as ``X``.
        """
        V.check_is_fitted(self)
        arr, kind = self._intake(X, reset=False)
        with jax.default_matmul_precision("highest"):
            out = _scores(arr, jnp.asarray(self.components_, arr.dtype),
                          jnp.asarray(self.mean_, arr.dtype), self._score_scale())
        return V.restore_kind(out, kind)

    def _intake_scores(self, x):
        """Validate ``(n, k)`` scores for ``inverse_transform``."""
        V.check_is_fitted(self)
        kind = V.array_kind(x)
        arr = V.check_matrix(x, "X")
        if arr.shape[1] != self.n_components_:
            raise ValueError(f"X has {arr.shape[1]} components, but {type(self).__name__} "
                             f"was fitted with {self.n_components_}")
        return arr, kind

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = (
            ["float64", "float32"] if jax.config.jax_enable_x64 else ["float32"])
        return tags

    @property
    def _n_features_out(self):
        return int(self.components_.shape[0])
