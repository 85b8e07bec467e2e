"""Tests for the testbed image family (bridges/builtin/testbed.py): independent factors,
exact pixel measurements, and bounds on the geometric ones derived from the pixel grid."""
import math

import numpy as np
import pytest

from bridges.builtin import testbed
from bridges.builtin.testbed import (
    COMPACTNESS,
    FACTOR_NAMES,
    FACTOR_RANGES,
    IMAGE_SIZE,
    SHAPES,
    measure,
    render,
    sample_factors,
)

from .tolerances import LAMBDA, unit_roundoff

SS = 4  # the default supersampling


def _factors(rng, n):
    return sample_factors(n, seed=int(rng.integers(2**31)))


def test_factors_are_independent_uniform_draws(rng):
    n = 6000
    v = _factors(rng, n).values
    assert v.shape == (n, len(FACTOR_NAMES))
    # ranges
    assert set(np.unique(v[:, 0])) <= set(range(len(SHAPES)))
    for j, name in enumerate(FACTOR_NAMES[1:], start=1):
        lo, hi = FACTOR_RANGES[name]
        assert lo <= v[:, j].min() and v[:, j].max() <= hi
    # class frequencies: binomial(n, 1/3) within LAMBDA standard deviations
    counts = np.bincount(v[:, 0].astype(int), minlength=3)
    sd = math.sqrt(n / 3 * 2 / 3)
    assert np.all(np.abs(counts - n / 3) <= LAMBDA * sd), counts
    # pairwise independence: a sample correlation of independent variables has
    # standard deviation 1 / sqrt(n - 1), so |r| <= LAMBDA / sqrt(n - 1)
    r = np.corrcoef(v, rowvar=False)
    off = r[~np.eye(len(FACTOR_NAMES), dtype=bool)]
    assert np.max(np.abs(off)) <= LAMBDA / math.sqrt(n - 1), np.max(np.abs(off))
    # a factor's marginal is uniform: its mean and variance are those of U[lo, hi]
    for j, name in enumerate(FACTOR_NAMES[1:], start=1):
        lo, hi = FACTOR_RANGES[name]
        span = hi - lo
        assert abs(v[:, j].mean() - (lo + hi) / 2) <= LAMBDA * span / math.sqrt(12 * n)
    # deterministic: the same seed gives the same draws
    np.testing.assert_array_equal(sample_factors(5, 3).values, sample_factors(5, 3).values)


def test_render_is_deterministic_and_in_range(rng):
    f = _factors(rng, 20)
    a = render(f)
    assert a.shape == (20, IMAGE_SIZE, IMAGE_SIZE, 3) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, render(f, batch_size=7))


def _boundary(cover):
    """Pixels the shape's outline can pass through: the 3 x 3 neighbourhood of every
    pixel of fractional coverage (an outline pixel whose sub-samples all agree is
    next to one that is split, for outlines longer than a pixel)."""
    frac = (cover > 0) & (cover < 1)
    pad = np.pad(frac, ((0, 0), (1, 1), (1, 1)))
    near = np.zeros_like(frac)
    for dy in range(3):
        for dx in range(3):
            near |= pad[:, dy:dy + cover.shape[1], dx:dx + cover.shape[2]]
    return near


def test_measure_recovers_the_rendering_parameters(rng):
    """Bounds derived from the grid: the coverage of a pixel the outline crosses is
    off by at most ``e = 2 / ss`` (each of the ``ss`` sub-sample columns
    miscounts at most one sub-cell of area ``1 / ss^2`` per edge, and at most two
    edges meet in a pixel); the pixel-centre quadrature of a linear function is
    exact on fully covered pixels and off by at most ``1/2`` px per unit coverage
    on outline pixels. With ``B`` the outline pixels, ``M`` the area and ``R``
    the largest distance of an outline pixel from the centroid:

    * area: ``|dM| <= e |B|``, so ``|d size| <= e |B| / (2 sqrt(M - e |B|))``;
    * centroid: ``|dx| <= (|B| / 2 + e |B| R) / M``;
    * rotation: see below (a one-pixel displacement of the outline);
    * every geometric factor: the error's spread under 10 % of the factor's own.
    """
    n = 400
    f = _factors(rng, n)
    images = render(f)
    v = f.values
    m = measure(images).values
    cover = images.max(axis=-1).astype(np.float64) - images.min(axis=-1)
    mass = cover.sum(axis=(1, 2))
    near = _boundary(cover)
    b = near.sum(axis=(1, 2)).astype(np.float64)
    e = 2.0 / SS
    centre = np.arange(IMAGE_SIZE) + 0.5 - IMAGE_SIZE / 2
    dist = np.hypot(centre[None, None, :] - m[:, 1, None, None],
                    centre[None, :, None] - m[:, 2, None, None])
    radius = np.where(near, dist, 0).max(axis=(1, 2)) + 0.5
    # exact quantities: shape class, hue, background (float32 pixels: relative
    # rounding u per pixel, over ratios of sums of H*W of them)
    np.testing.assert_array_equal(m[:, 0], v[:, 0])
    u = unit_roundoff(np.float32)
    hw = IMAGE_SIZE * IMAGE_SIZE
    np.testing.assert_allclose(m[:, 6], v[:, 6], rtol=0, atol=4 * u * hw / (hw - mass).min())
    hue_err = np.abs((m[:, 5] - v[:, 5] + 180) % 360 - 180)
    # hue: a channel ratio off by ~ 4 u hw / M, times 60 degrees per unit
    assert np.all(hue_err <= 60 * 4 * u * hw / mass), hue_err.max()
    # area and size
    d_mass = e * b
    d_size = d_mass / (2 * np.sqrt(np.maximum(mass - d_mass, 1)))
    assert np.all(np.abs(m[:, 3] - v[:, 3]) <= d_size)
    # centroid
    d_c = (b / 2 + e * b * radius) / mass
    assert np.all(np.abs(m[:, 1] - v[:, 1]) <= d_c)
    assert np.all(np.abs(m[:, 2] - v[:, 2]) <= d_c)
    # rotation: the grid displaces the outline by less than one pixel; moving the
    # end of the major half-axis (length a) by one pixel across, against the minor
    # half-axis b, turns the principal axis by at most atan(1 / (a - b))
    a = v[:, 3] / np.sqrt(np.asarray(testbed._AREA_COEF)[v[:, 0].astype(int)])
    d_rot = np.rad2deg(np.arctan2(1.0, (1 - testbed.ASPECT) * a))
    assert np.all(np.abs(m[:, 4] - v[:, 4]) <= d_rot)
    # and the measurements track the parameters across their range: the error's
    # spread is small next to the factor's (correlation near 1)
    for j in (1, 2, 3, 4):
        r = np.corrcoef(m[:, j], v[:, j])[0, 1]
        err = np.std(m[:, j] - v[:, j]) / np.std(v[:, j])
        assert err < 0.1 and r > 0.99, (FACTOR_NAMES[j], r, err)


def test_triangle_and_ellipse_covariance_formulas():
    """The continuous covariances used above (and the compactness levels): a finely
    supersampled render, measured, lands on them."""
    f = np.array([[k, 0.0, 0.0, 7.5, 0.0, 120.0, 0.3] for k in range(3)])
    images = render(f, supersample=32)
    comp = testbed.compactness(images)
    # the same bounds as above with e = 2 / 32 shrink the pixel effects to ~ 3 %
    np.testing.assert_allclose(comp, COMPACTNESS, rtol=0.03)


def test_measure_each_factor_moves_alone(rng):
    """Changing one rendering parameter changes its measurement and, beyond the
    grid's quantisation, no other (the factors are separable in the pixels)."""
    base = _factors(rng, 1).values[0]
    base[0] = 0
    for j, name in enumerate(FACTOR_NAMES[1:], start=1):
        lo, hi = FACTOR_RANGES[name]
        f = np.repeat(base[None], 5, axis=0)
        f[:, j] = np.linspace(lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo), 5)
        m = measure(render(f)).values
        moved = np.ptp(m, axis=0)
        assert moved[j] >= 0.7 * np.ptp(f[:, j]), name
        others = [k for k in (5, 6) if k != j]   # hue and background are exact
        assert np.all(moved[others] <= 1e-3 * np.array([360, 1])[[o - 5 for o in others]]), name


def test_measure_layouts_and_errors(rng):
    images = render(_factors(rng, 4))
    nchw = np.moveaxis(images * 2 - 1, -1, 1)
    np.testing.assert_allclose(measure(nchw, value_range=(-1, 1), layout="NCHW").values,
                               measure(images).values, rtol=1e-5, atol=1e-4)
    u8 = np.round(images * 255).astype(np.uint8)
    assert measure(u8).values.shape == (4, 7)
    with pytest.raises(ValueError, match="3 colour channels"):
        measure(images[..., :2])
    with pytest.raises(ValueError, match="NaN"):
        bad = images.copy()
        bad[0, 0, 0, 0] = np.nan
        measure(bad)
    with pytest.raises(ValueError, match="factors must be"):
        render(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="class indices"):
        render(np.array([[5, 0, 0, 6, 0, 0, 0.3]]))
