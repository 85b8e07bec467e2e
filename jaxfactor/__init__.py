"""jaxfactor: factorization kernels in JAX for semantic edit directions in GAN latents."""
from ._extras import MissingExtraError
from ._validation import ConvergenceWarning, NotFittedError
from .directions import (
    Directions,
    DirectionsFileError,
    load_directions,
    save_directions,
)
from .estimators import PCA, SCA, FastICA, SeFa
from .lifting import LiftResult, lift, lift_directions
from .metrics.amari import amari_distance, match_sources
from .metrics.frechet import frechet_distance, frechet_distance_from_features
from .metrics.protocols import edit_fid
from .metrics.walks import walk_predictions, walk_scores
from .randomized import randomized_svd, randomized_svd_source
from .sharding import row_mesh
from .sources import ArraySource, CachedSource, CallableSource, NpySource, RowSource

__version__ = "0.1.0"

__all__ = [
    "PCA",
    "FastICA",
    "SCA",
    "SeFa",
    "randomized_svd",
    "randomized_svd_source",
    "RowSource",
    "ArraySource",
    "NpySource",
    "CallableSource",
    "CachedSource",
    "row_mesh",
    "lift",
    "lift_directions",
    "LiftResult",
    "save_directions",
    "load_directions",
    "Directions",
    "DirectionsFileError",
    "amari_distance",
    "match_sources",
    "frechet_distance",
    "frechet_distance_from_features",
    "edit_fid",
    "walk_predictions",
    "walk_scores",
    "ConvergenceWarning",
    "NotFittedError",
    "MissingExtraError",
]
