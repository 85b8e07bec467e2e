"""The testbed: a procedurally rendered image family with known, measurable factors.

Every image is one flat-coloured shape on a grey background, 32 x 32 RGB,
drawn by NumPy alone (deterministic, no download), anti-aliased by
``ss x ss`` supersampling. Seven factors, drawn independently of each other
(:func:`sample_factors`):

==============  =====================================================  ===========
factor          rendering parameter                                    unit
==============  =====================================================  ===========
``shape``       0 ellipse, 1 triangle, 2 ring (elliptic annulus)       class
``x``, ``y``    centroid of the shape, from the image centre            px
                (``y`` points down), each ``U[-5, 5]``
``size``        ``sqrt(area)``, ``U[5, 8]``                             px
``rotation``    angle of the major axis from ``+x`` towards ``+y``,     degrees
                ``U[-60, 60]``
``hue``         HSV hue of the (saturation 1, value 1) colour,          degrees
                ``U[0, 300]``
``background``  grey level of the background, ``U[0.1, 0.6]``           [0, 1]
==============  =====================================================  ===========

Every shape has minor / major half-length ``b / a = 0.6``: the ellipse
``(p/a)^2 + (q/b)^2 <= 1``; the isosceles triangle of height ``2a`` along
the major axis and base ``2b``, centroid at the origin; the ring the ellipse
minus the ellipse scaled by ``0.55``. ``a`` is chosen so that the area is
``size^2``.

Each factor is also *computed from the pixels* (:func:`measure`), with no
classifier in the loop. A pixel is ``(1 - c) g + c o`` with ``c`` the
shape's coverage, ``g`` the grey level and ``o`` the colour, whose largest
channel is 1 and smallest 0; so ``max - min`` over the channels is exactly
``c``. From the coverage map ``c``:

* ``size = sqrt(sum c)`` (area in px^2);
* ``x, y``: the centroid ``sum c r / sum c`` of the pixel centres ``r``;
* the covariance ``S`` of the coverage (central second moments over the
  area, less Sheppard's ``1/12``: the coverage is the shape convolved with
  the unit pixel box, whose variance ``1/12`` adds to the shape's):
  ``rotation = atan2(2 S_xy, S_xx - S_yy) / 2``;
* ``shape``: the affine-invariant compactness ``area / sqrt(det S)`` --
  ``4 pi`` (12.57) for an ellipse, ``6 sqrt 3`` (10.39) for any triangle,
  ``4 pi (1 - q^2) / (1 + q^2)`` (6.73) for the ring -- assigned to the
  nearest class (thresholds at the midpoints);
* ``background = sum min_channel / sum (1 - c)`` (``o``'s smallest channel is 0);
* ``hue``: the hue of the mean colour ``sum (pixel - (1 - c) g) / sum c``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "FACTOR_NAMES",
    "FACTOR_UNITS",
    "FACTOR_RANGES",
    "SHAPES",
    "COMPACTNESS",
    "IMAGE_SIZE",
    "Factors",
    "sample_factors",
    "render",
    "measure",
    "compactness",
    "testbed_images",
]

#: Column order of every factor array.
FACTOR_NAMES = ("shape", "x", "y", "size", "rotation", "hue", "background")
#: Unit of each factor, for tables and axis labels.
FACTOR_UNITS = ("class", "px", "px", "px", "deg", "deg", "grey level")
#: Ranges of the uniform draws (the shape is a class index 0, 1, 2).
FACTOR_RANGES = {"x": (-5.0, 5.0), "y": (-5.0, 5.0), "size": (5.0, 8.0),
                 "rotation": (-60.0, 60.0), "hue": (0.0, 300.0), "background": (0.1, 0.6)}
SHAPES = ("ellipse", "triangle", "ring")
IMAGE_SIZE = 32
ASPECT = 0.6          # b / a
RING_HOLE = 0.55      # inner ellipse scale of the ring
#: Compactness ``area / sqrt(det S)`` of each shape class (exact, continuous shapes).
COMPACTNESS = (4 * np.pi, 6 * np.sqrt(3.0),
               4 * np.pi * (1 - RING_HOLE ** 2) / (1 + RING_HOLE ** 2))
# area = K * a^2 for major half-length a
_AREA_COEF = (np.pi * ASPECT, 2 * ASPECT, np.pi * ASPECT * (1 - RING_HOLE ** 2))


class Factors(NamedTuple):
    """Factor values ``values`` ``(N, 7)`` float64 (columns :data:`FACTOR_NAMES`) and ``names``."""

    values: np.ndarray
    names: tuple[str, ...] = FACTOR_NAMES


def sample_factors(n: int, seed: int = 0) -> Factors:
    """Draw ``n`` independent factor vectors (see the module table).

    Args:
      n: number of images. seed: ``numpy.random.default_rng`` seed.

    Returns:
      :class:`Factors` with ``values`` ``(n, 7)`` float64; the shape column is
      a class index in ``{0, 1, 2}``, uniform; the others are uniform on
      :data:`FACTOR_RANGES`, each drawn independently.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    cols = [rng.integers(0, len(SHAPES), size=n).astype(np.float64)]
    for name in FACTOR_NAMES[1:]:
        lo, hi = FACTOR_RANGES[name]
        cols.append(rng.uniform(lo, hi, size=n))
    return Factors(np.stack(cols, axis=1))


def _hsv_rgb(hue_deg: np.ndarray) -> np.ndarray:
    """``(n,)`` hues in degrees -> ``(n, 3)`` RGB of saturation 1, value 1."""
    h = (np.asarray(hue_deg, np.float64) % 360.0) / 60.0
    k = (np.array([5.0, 3.0, 1.0])[None, :] + h[:, None]) % 6.0
    return 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _check_factors(values) -> np.ndarray:
    v = np.asarray(values.values if isinstance(values, Factors) else values, np.float64)
    if v.ndim != 2 or v.shape[1] != len(FACTOR_NAMES):
        raise ValueError(f"factors must be (N, {len(FACTOR_NAMES)}); got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"factors contain {np.count_nonzero(~np.isfinite(v))} NaN/inf values")
    if not np.all(np.isin(v[:, 0], np.arange(len(SHAPES)))):
        raise ValueError(f"the shape column must hold class indices 0..{len(SHAPES) - 1}")
    if np.any(v[:, 3] <= 0):
        raise ValueError("size must be positive")
    return v


def render(factors, *, supersample: int = 4, batch_size: int = 256) -> np.ndarray:
    """Render images of the given factors.

    Args:
      factors: :class:`Factors` or ``(N, 7)`` array, columns :data:`FACTOR_NAMES`.
      supersample: sub-samples per pixel side for the coverage (anti-aliasing).
      batch_size: images rendered at once (memory: ``batch * (32 ss)^2`` floats).

    Returns:
      ``(N, 32, 32, 3)`` float32 in ``[0, 1]`` (NHWC).
    """
    v = _check_factors(factors)
    ss = int(supersample)
    if ss < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    n, size = v.shape[0], IMAGE_SIZE
    sub = (np.arange(size * ss) + 0.5) / ss - size / 2      # sub-sample centres, px from the centre
    out = np.empty((n, size, size, 3), np.float32)
    for lo in range(0, n, batch_size):
        f = v[lo:lo + batch_size]
        m = f.shape[0]
        kind = f[:, 0].astype(int)
        a = f[:, 3] / np.sqrt(np.asarray(_AREA_COEF)[kind])    # major half-length
        b = ASPECT * a
        theta = np.deg2rad(f[:, 4])
        dx = sub[None, None, :] - f[:, 1, None, None]
        dy = sub[None, :, None] - f[:, 2, None, None]
        cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
        p = (dx * cos + dy * sin) / a[:, None, None]          # major axis, in units of a
        q = (-dx * sin + dy * cos) / b[:, None, None]         # minor axis, in units of b
        r2 = p * p + q * q
        ellipse = r2 <= 1.0
        ring = ellipse & (r2 >= RING_HOLE ** 2)
        # triangle: apex (4/3, 0), base at p = -2/3 with half-width 1 (units of a and b)
        triangle = (p >= -2.0 / 3.0) & (np.abs(q) <= (4.0 / 3.0 - p) / 2.0)
        inside = np.where((kind == 0)[:, None, None], ellipse,
                          np.where((kind == 1)[:, None, None], triangle, ring))
        cover = inside.reshape(m, size, ss, size, ss).mean(axis=(2, 4))   # (m, H, W)
        colour = _hsv_rgb(f[:, 5])                                         # (m, 3)
        grey = f[:, 6]
        img = ((1.0 - cover)[..., None] * grey[:, None, None, None]
               + cover[..., None] * colour[:, None, None, :])
        out[lo:lo + m] = img
    return out


def _as_nhwc(images, value_range, layout) -> np.ndarray:
    if hasattr(images, "detach"):                   # a torch tensor
        images = images.detach().cpu().numpy()
    x = np.asarray(images)
    if layout not in ("NHWC", "NCHW"):
        raise ValueError(f"layout must be 'NHWC' or 'NCHW'; got {layout!r}")
    if x.ndim != 4:
        raise ValueError(f"images must be 4-D (N, H, W, 3) or, with layout='NCHW', (N, 3, H, W); "
                         f"got shape {x.shape}")
    if layout == "NCHW":
        x = np.moveaxis(x, 1, -1)
    if x.shape[-1] != 3:
        raise ValueError(f"images must have 3 colour channels; got shape {x.shape} ({layout})")
    if x.dtype.kind not in "uif":
        raise TypeError(f"images must be integer or float; got dtype {x.dtype}")
    if value_range is None:
        value_range = (0.0, 255.0) if x.dtype == np.uint8 else (0.0, 1.0)
    lo, hi = (float(t) for t in value_range)
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low; got {value_range}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"images contain {np.count_nonzero(~np.isfinite(x))} NaN/inf values")
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _hue_deg(rgb: np.ndarray) -> np.ndarray:
    """``(n, 3)`` RGB -> hue in degrees ``[0, 360)`` (0 for grey)."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    mx, mn = rgb.max(axis=1), rgb.min(axis=1)
    d = np.where(mx - mn > 0, mx - mn, 1.0)
    h = np.where(mx == r, ((g - b) / d) % 6.0,
                 np.where(mx == g, (b - r) / d + 2.0, (r - g) / d + 4.0))
    return np.where(mx - mn > 0, 60.0 * h, 0.0) % 360.0


def _moments(images, value_range, layout):
    x = _as_nhwc(images, value_range, layout)
    n, h, w, _ = x.shape
    cover = x.max(axis=-1) - x.min(axis=-1)                   # (n, H, W), exact coverage
    mass = cover.sum(axis=(1, 2))
    safe = np.maximum(mass, 1e-12)
    xs = np.arange(w) + 0.5 - w / 2
    ys = np.arange(h) + 0.5 - h / 2
    cx = np.einsum("nhw,w->n", cover, xs) / safe
    cy = np.einsum("nhw,h->n", cover, ys) / safe
    dx = xs[None, :] - cx[:, None]
    dy = ys[None, :] - cy[:, None]
    sxx = np.einsum("nhw,nw->n", cover, dx * dx) / safe - 1.0 / 12.0   # Sheppard's correction
    syy = np.einsum("nhw,nh->n", cover, dy * dy) / safe - 1.0 / 12.0
    sxy = np.einsum("nhw,nh,nw->n", cover, dy, dx) / safe
    return x, cover, mass, cx, cy, sxx, syy, sxy


def compactness(images, *, value_range=None, layout: str = "NHWC") -> np.ndarray:
    """``area / sqrt(det S)`` of each image's coverage (the shape descriptor of :func:`measure`).

    Args: as :func:`measure`. Returns: ``(N,)`` float64 (0 for an image with no shape).
    """
    _, _, mass, _, _, sxx, syy, sxy = _moments(images, value_range, layout)
    det = np.maximum(sxx * syy - sxy * sxy, 1e-12)
    return np.where(mass > 0, mass / np.sqrt(det), 0.0)


def measure(images, *, value_range=None, layout: str = "NHWC") -> Factors:
    """Compute the seven factors of each image from its pixels (module docstring).

    Args:
      images: ``(N, H, W, 3)`` (``layout='NHWC'``) or ``(N, 3, H, W)``
        (``'NCHW'``, what the generator returns); numpy or torch; uint8 or float.
      value_range: pixel values of black and white; default ``(0, 255)`` for
        uint8, ``(0, 1)`` otherwise (use ``(-1, 1)`` for the generator's tanh).
        Values outside are clipped.

    Returns:
      :class:`Factors` ``(N, 7)`` float64 in the units of :data:`FACTOR_UNITS`;
      the shape column is the nearest class of the compactness. On a rendered
      image the measurement recovers the rendering parameters up to the
      pixel grid's quantisation (tests/test_testbed.py derives the bounds).
    """
    x, cover, mass, cx, cy, sxx, syy, sxy = _moments(images, value_range, layout)
    det = np.maximum(sxx * syy - sxy * sxy, 1e-12)
    comp = np.where(mass > 0, mass / np.sqrt(det), 0.0)
    levels = np.asarray(COMPACTNESS)
    shape = np.argmin(np.abs(comp[:, None] - levels[None, :]), axis=1).astype(np.float64)
    rotation = np.rad2deg(0.5 * np.arctan2(2.0 * sxy, sxx - syy))
    low = x.min(axis=-1)
    empty = np.maximum((1.0 - cover).sum(axis=(1, 2)), 1e-12)
    grey = low.sum(axis=(1, 2)) / empty
    colour = (x - (1.0 - cover)[..., None] * grey[:, None, None, None]).sum(axis=(1, 2))
    hue = _hue_deg(colour / np.maximum(mass, 1e-12)[:, None])
    values = np.stack([shape, cx, cy, np.sqrt(mass), rotation, hue, grey], axis=1)
    return Factors(values)


def testbed_images(n: int, seed: int = 0, *, supersample: int = 4) -> tuple[np.ndarray, Factors]:
    """``n`` rendered images and their factors: ``((n, 32, 32, 3) float32 in [0, 1], Factors)``."""
    factors = sample_factors(n, seed)
    return render(factors, supersample=supersample), factors
