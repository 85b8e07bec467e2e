"""Analytic image attributes for walk scores: ink mass, thickness, centroid, slant.

Every attribute is a closed-form function of the pixels, vectorised over the
batch in NumPy. Images are first mapped to an *ink* map ``I`` in ``[0, 1]``
(1 = full ink; for the digits, bright strokes on a dark background), with
pixel centres at ``x_j = (j + 1/2) / W - 1/2`` (columns, left to right) and
``y_i = (i + 1/2) / H - 1/2`` (rows, top to bottom), i.e. coordinates in units
of the image width/height, 0 at the image centre. With ``M = sum I``:

``ink_mass``
    ``M / (H W)``: the inked fraction of the image, in ``[0, 1]``.
``thickness``
    ``2 M / TV(I)`` in pixels, where ``TV`` is the anisotropic total variation
    (sum of absolute differences between 4-neighbours, the image zero-padded
    by one pixel). For a binary stroke of width ``t`` and length ``L`` the
    total variation is its perimeter ``2 (L + t)``, so this is
    ``t L / (L + t)``, which tends to the stroke width ``t`` when ``L >> t``
    (the area / half-perimeter estimate of mean stroke width).
``centroid_x``, ``centroid_y``
    ``sum I x / M`` and ``sum I y / M``: the ink's centre of mass (positive =
    right of / below the centre).
``slant``
    ``-mu11 / mu02`` with the central moments ``mu11 = sum I (x - x̄)(y - ȳ)``
    and ``mu02 = sum I (y - ȳ)^2`` (both in pixel units): the horizontal shear
    per unit height of the best-fitting line ``x = x̄ + s (y - ȳ)`` with the
    sign flipped because ``y`` points down, so a stroke leaning right, like
    ``/``, has positive slant (the moment-based deskewing of LeCun et al.'s
    MNIST preprocessing). 0 for a vertical bar.

An image with no ink has mass and thickness 0 and centroid and slant 0 (the
denominators are guarded by a tiny epsilon).

:func:`to_probabilities` maps attributes to ``(0, 1)`` by the logistic of
their z-scores against reference data (by default the scikit-learn digits),
for code that expects attribute *probabilities* (the walk scores S_e, S_d).

The other attribute predictor is the shipped digit classifier
(:func:`load_builtin_classifier`): ten probabilities, one per digit, whose
penultimate layer doubles as the in-domain FID feature extractor.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "ATTRIBUTE_NAMES",
    "Attributes",
    "AttributeReference",
    "compute_attributes",
    "analytic_attributes",
    "fit_reference",
    "digits_reference",
    "to_probabilities",
    "default_classifier_path",
    "load_builtin_classifier",
    "classifier_input",
]

#: Column order of every attribute array.
ATTRIBUTE_NAMES = ("ink_mass", "thickness", "centroid_x", "centroid_y", "slant")

_EPS = 1e-6


class Attributes(NamedTuple):
    """Attribute values: ``values`` ``(N, 5)`` float32, ``names`` (column names)."""

    values: np.ndarray
    names: tuple[str, ...]


class AttributeReference(NamedTuple):
    """Per-attribute ``mean`` and ``std`` ``(5,)`` float64 of reference data."""

    mean: np.ndarray
    std: np.ndarray


def _ink(images, value_range, layout) -> np.ndarray:
    """Images -> ink maps ``(N, H, W)`` float64 in ``[0, 1]``."""
    if hasattr(images, "detach"):                         # a torch tensor
        images = images.detach().cpu().numpy()
    x = np.asarray(images)
    if layout not in ("NHWC", "NCHW"):
        raise ValueError(f"layout must be 'NHWC' or 'NCHW'; got {layout!r}")
    if x.ndim == 4:
        x = x.mean(axis=1 if layout == "NCHW" else -1)
    elif x.ndim != 3:
        raise ValueError("images must be (N, H, W), (N, H, W, C) or, with layout='NCHW', "
                         f"(N, C, H, W); got shape {x.shape}")
    if x.dtype.kind not in "uif":
        raise TypeError(f"images must be integer or float; got dtype {x.dtype}")
    if value_range is None:
        value_range = (0.0, 255.0) if x.dtype == np.uint8 else (-1.0, 1.0)
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low; got {value_range}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"images contain {np.count_nonzero(~np.isfinite(x))} NaN/inf values")
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def compute_attributes(images, *, value_range=None, layout: str = "NHWC") -> np.ndarray:
    """The five analytic attributes of each image (definitions in the module docstring).

    Args:
      images: ``(N, H, W)`` or ``(N, H, W, C)`` (``layout='NHWC'``, channels
        averaged) or ``(N, C, H, W)`` with ``layout='NCHW'`` (what the
        generator returns); numpy array or torch tensor, uint8 or float.
      value_range: ``(no_ink, full_ink)`` pixel values; default ``(0, 255)``
        for uint8 and ``(-1, 1)`` for anything else (the generator's tanh
        output). Use ``(0, 16)`` for raw ``load_digits`` images.

    Returns:
      ``(N, 5)`` float32, columns :data:`ATTRIBUTE_NAMES`.
    """
    ink = _ink(images, value_range, layout)
    n, h, w = ink.shape
    ys = (np.arange(h) + 0.5) / h - 0.5
    xs = (np.arange(w) + 0.5) / w - 0.5
    mass = ink.sum(axis=(1, 2))
    safe = np.maximum(mass, _EPS)
    cx = np.einsum("nhw,w->n", ink, xs) / safe
    cy = np.einsum("nhw,h->n", ink, ys) / safe
    dx = (xs[None, :] - cx[:, None]) * w                 # pixel units
    dy = (ys[None, :] - cy[:, None]) * h
    mu11 = np.einsum("nhw,nh,nw->n", ink, dy, dx)
    mu02 = np.einsum("nhw,nh->n", ink, dy * dy)
    slant = np.where(mu02 > _EPS, -mu11 / np.maximum(mu02, _EPS), 0.0)
    padded = np.pad(ink, ((0, 0), (1, 1), (1, 1)))
    tv = (np.abs(np.diff(padded, axis=1)).sum(axis=(1, 2))
          + np.abs(np.diff(padded, axis=2)).sum(axis=(1, 2)))
    thickness = np.where(tv > _EPS, 2.0 * mass / np.maximum(tv, _EPS), 0.0)
    out = np.stack([mass / (h * w), thickness, cx, cy, slant], axis=1)
    return out.astype(np.float32)


def fit_reference(values) -> AttributeReference:
    """Mean and std ``(5,)`` of reference attribute values ``(N, 5)`` (std floored at 1e-6)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] < 2:
        raise ValueError(f"reference values must be (N >= 2, k); got shape {v.shape}")
    return AttributeReference(v.mean(axis=0), np.maximum(v.std(axis=0), 1e-6))


@functools.lru_cache(maxsize=1)
def _digits_reference() -> AttributeReference:
    from sklearn.datasets import load_digits

    return fit_reference(compute_attributes(load_digits().images, value_range=(0, 16)))


def digits_reference() -> AttributeReference:
    """Attribute statistics of the 1797 scikit-learn digits (the generator's training data)."""
    ref = _digits_reference()
    return AttributeReference(ref.mean.copy(), ref.std.copy())


def to_probabilities(values, reference: AttributeReference | None = None) -> np.ndarray:
    """Logistic of z-scores: ``p = 1 / (1 + exp(-(a - mean) / std))``.

    Args:
      values: ``(N, k)`` attribute values. reference: their statistics on
        reference data (default :func:`digits_reference`, for the five
        analytic attributes).

    Returns:
      ``(N, k)`` float32 in ``(0, 1)``; 0.5 at the reference mean.
    """
    v = np.asarray(values, dtype=np.float64)
    ref = digits_reference() if reference is None else reference
    if v.ndim != 2 or v.shape[1] != np.shape(ref.mean)[0]:
        raise ValueError(f"values must be (N, {np.shape(ref.mean)[0]}); got shape {v.shape}")
    z = (v - np.asarray(ref.mean)) / np.asarray(ref.std)
    return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)   # overflow-free logistic


def analytic_attributes(images, *, value_range=None, layout: str = "NHWC",
                        probabilities: bool = False,
                        reference: AttributeReference | None = None) -> Attributes:
    """:func:`compute_attributes` with names; ``probabilities=True`` applies
    :func:`to_probabilities` (against ``reference``, default the digits)."""
    values = compute_attributes(images, value_range=value_range, layout=layout)
    if probabilities:
        values = to_probabilities(values, reference)
    return Attributes(values, ATTRIBUTE_NAMES)


def default_classifier_path() -> Path:
    """Path of the shipped digit classifier, ``bridges/builtin/weights/digits_classifier.npz``."""
    return Path(__file__).resolve().parent / "weights" / "digits_classifier.npz"


def classifier_input(images, *, layout: str = "NCHW") -> np.ndarray:
    """Generator output ``(N, 1, 8, 8)`` (torch or numpy, ``[-1, 1]``) -> ``(N, 8, 8, 1)`` float32.

    ``layout='NHWC'`` takes ``(N, 8, 8)`` or ``(N, 8, 8, 1)`` instead. The
    values are passed through unchanged: the classifier was trained on the
    digits scaled to ``[-1, 1]``, the generator's range.
    """
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    x = np.asarray(images, dtype=np.float32)
    if layout == "NCHW":
        if x.ndim != 4:
            raise ValueError(f"NCHW images must be 4-D; got shape {x.shape}")
        x = np.moveaxis(x, 1, -1)
    elif layout == "NHWC":
        if x.ndim == 3:
            x = x[..., None]
    else:
        raise ValueError(f"layout must be 'NHWC' or 'NCHW'; got {layout!r}")
    if x.shape[1:] != (8, 8, 1):
        raise ValueError(f"the digit classifier takes 8 x 8 single-channel images; got {x.shape}")
    return np.ascontiguousarray(x)


def load_builtin_classifier(path: str | os.PathLike | None = None):
    """Load the shipped digit classifier (Flax + optax, no pickles).

    Args:
      path: a ``.npz`` written by ``python -m bridges.builtin.train``; ``None``
        loads :func:`default_classifier_path`.

    Returns:
      :class:`jaxfactor.metrics.classifier.AttributeClassifier`:
      ``clf.predict(x) -> (N, 10)`` per-digit probabilities and
      ``clf.features(x) -> (N, hidden)`` penultimate features, for ``x`` of
      shape ``(N, 8, 8, 1)`` in ``[-1, 1]`` (see :func:`classifier_input`).

    Raises:
      WeightsError: the file is missing or unreadable.
    """
    from jaxfactor.metrics.classifier import AttributeClassifier

    from .model import WeightsError

    path = Path(default_classifier_path() if path is None else path)
    if not path.is_file():
        raise WeightsError(f"digit classifier weights not found at {path}; regenerate them with "
                           f"`python -m bridges.builtin.train --epochs 0 --out {path.parent}`")
    try:
        return AttributeClassifier.load(path)
    except Exception as exc:  # zip, npz and shape errors have many types
        raise WeightsError(f"cannot read digit classifier {path}: {exc}") from exc
