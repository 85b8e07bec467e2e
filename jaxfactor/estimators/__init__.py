"""The estimators: scikit-learn-style classes over the kernels.

Each is a :class:`jaxfactor._base.Factorizer`: ``fit`` validates the
parameters from a table, intakes the data, chooses a plan
(:mod:`jaxfactor._policy`) and runs the kernels of its method module.
"""
from .ica import FastICA
from .pca import PCA
from .sca import SCA
from .sefa import SeFa

__all__ = ["PCA", "FastICA", "SCA", "SeFa"]
