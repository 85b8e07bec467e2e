"""jaxfactor: factorization kernels in JAX for semantic edit directions in GAN latents."""
from ._validation import ConvergenceWarning, NotFittedError
from .pca import PCA
from .randomized import randomized_svd, randomized_svd_source
from .sources import ArraySource, CallableSource, NpySource, RowSource

__version__ = "0.1.0"

__all__ = [
    "PCA",
    "randomized_svd",
    "randomized_svd_source",
    "RowSource",
    "ArraySource",
    "NpySource",
    "CallableSource",
    "ConvergenceWarning",
    "NotFittedError",
]
