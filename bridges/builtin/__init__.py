"""The built-in demo generators: the testbed GAN (32 x 32 RGB shapes with known
factors) and a small StyleGAN-like GAN on scikit-learn's 8 x 8 digits.

``load_testbed_generator()`` (:mod:`.testbed_gan`) draws images of the
testbed family (:mod:`.testbed`), whose factors ``testbed.measure`` computes
from the pixels; its init layer ``synthesis.init`` has the real FastGAN conv1
dimension, 1024 x 4 x 4 = 16384 features; ``python -m
bridges.builtin.train_testbed`` reproduces its weights.

The digits generator:

Runs the whole pipeline offline: ``load_builtin_generator()`` gives a
``Generator`` with a mapping network (W space, ``w_dim = 64``), a synthesis
network taking W+ codes ``(N, 4, 64)`` whose first block ``synthesis.init`` is
a FastGAN init layer (1024 = 64 x 4 x 4 features), and images
``(N, 1, 8, 8)`` in ``[-1, 1]``. Attribute predictors for the walk scores:
the analytic pixel attributes (:mod:`.attributes`) and the shipped digit
classifier (``load_builtin_classifier``). ``python -m bridges.builtin.train``
reproduces the shipped weights.
"""
from .attributes import (
    ATTRIBUTE_NAMES,
    AttributeReference,
    Attributes,
    analytic_attributes,
    classifier_input,
    compute_attributes,
    digits_reference,
    fit_reference,
    load_builtin_classifier,
    to_probabilities,
)
from .testbed_gan import (
    load_testbed_features,
    load_testbed_generator,
)
from .model import (
    Generator,
    WeightsError,
    default_weights_path,
    load_builtin_generator,
)

__all__ = [
    "load_testbed_generator",
    "load_testbed_features",
    "Generator",
    "WeightsError",
    "default_weights_path",
    "load_builtin_generator",
    "load_builtin_classifier",
    "classifier_input",
    "ATTRIBUTE_NAMES",
    "Attributes",
    "AttributeReference",
    "compute_attributes",
    "analytic_attributes",
    "fit_reference",
    "digits_reference",
    "to_probabilities",
]
