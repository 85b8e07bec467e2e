import itertools

import numpy as np
import pytest

from jaxfactor.metrics.walks import (WalkPredictions, plot_walk_curves, walk_predictions,
                                     walk_scores)

from .tolerances import assert_within, gamma

F64 = np.float64


def identity(z):
    return z


def test_linear_generator_linear_attribute_efficiency_is_slope(rng):
    # G(z) = z A (A orthogonal), p(x) = 0.4 + c x.w: along a unit v the
    # prediction changes by c (A v).w per unit distance, for every sample.
    d, c = 5, 0.05
    a, _ = np.linalg.qr(rng.standard_normal((d, d)))
    w = rng.standard_normal(d)
    render = lambda z: z @ a  # noqa: E731
    predict = lambda x: 0.4 + c * x @ w  # noqa: E731
    latents = rng.standard_normal((50, d))
    v = rng.standard_normal(d)
    v /= np.linalg.norm(v)
    slope = c * (a.T @ v) @ w
    walk = walk_predictions(render, predict, latents, [v], np.linspace(0.5, 3.0, 6))
    scores = walk_scores(walk)
    # float64 rounding of one prediction at distance t: z + t v (2 roundings), two
    # inner products of length d, the scale and the offset: at most 3 gamma(d)
    # times the same computation on magnitudes; the slope's two inner products
    n = len(latents)
    t_max = 3.0
    magnitude = 0.4 + c * (np.abs(latents)[None] + np.abs(walk.distances)[:, None, None] * np.abs(v)) \
        @ np.abs(a) @ np.abs(w)                                         # (S, N)
    pred_error = 3 * gamma(d, F64) * magnitude.max(axis=1)             # (S,)
    slope_error = 2 * gamma(d, F64) * c * (np.abs(a.T) @ np.abs(v)) @ np.abs(w)
    # S_e: a difference of two predictions (at +-t and 0) over t, averaged over the samples
    zero = len(walk.distances) // 2
    eff_tol = (pred_error[-1] + pred_error[zero]) / t_max + gamma(n, F64) * abs(slope) + slope_error
    assert abs(scores.efficiency - abs(slope)) <= eff_tol
    assert scores.signs[0] == np.sign(slope)
    # one-sided walk keeps the sign as given
    one = walk_scores(walk_predictions(render, predict, latents, [v], [3.0], two_sided=False))
    assert abs(one.efficiency - slope) <= eff_tol
    # the curve's mean moves linearly, its spread is the start's spread (the
    # exact predictions are the start's shifted by slope t): per distance, both
    # sides' prediction errors and means of n terms
    start = predict(render(latents))
    means = np.abs(scores.curve_mean[0, :, 0]) + abs(start.mean())
    assert_within(scores.curve_mean[0, :, 0], start.mean() + slope * walk.distances,
                  pred_error + pred_error[zero] + gamma(n, F64) * means
                  + slope_error * np.abs(walk.distances))
    assert_within(scores.curve_std[0, :, 0], start.std(),
                  pred_error + pred_error[zero] + 2 * gamma(n, F64) * (start.std() + means))


def test_efficiency_filters_negative_starts(rng):
    # A saturating attribute: only samples starting below 0.5 count.
    latents = rng.standard_normal((200, 3))
    predict = lambda x: 1.0 / (1.0 + np.exp(-2.0 * x[:, 0]))  # noqa: E731
    t = 1.5
    walk = walk_predictions(identity, predict, latents, np.eye(3)[:1], [t], two_sided=False)
    scores = walk_scores(walk)
    p0 = predict(latents)
    neg = p0 < 0.5
    delta = predict(latents[neg] + t * np.eye(3)[0]) - p0[neg]
    ref = np.mean(delta) / t
    assert scores.pair_n_negative[0] == np.sum(neg)
    # the same predictions on both sides, up to a few ulps of each sigmoid (exp,
    # add, divide: <= gamma(1) relative), and a mean of n terms each
    assert abs(scores.efficiency - ref) <= (4 * gamma(1, F64) * p0.max()
                                            + 2 * gamma(len(delta), F64) * np.abs(delta).mean()) / t
    all_delta = predict(latents + t * np.eye(3)[0]) - p0
    unfiltered = np.mean(all_delta) / t
    # the filter matters here: more than 3 standard errors of the unfiltered mean
    assert abs(ref - unfiltered) > 3 * np.std(all_delta) / t / np.sqrt(len(all_delta))


def test_pure_directions_give_full_disentanglement(rng):
    # Attribute j reads coordinate j only; direction i is a signed axis, permuted.
    d, n_attr = 6, 4
    coef = rng.uniform(0.05, 0.1, n_attr)
    predict = lambda x: 0.5 + x[:, :n_attr] * coef  # noqa: E731
    perm = rng.permutation(n_attr)
    signs = rng.choice([-1.0, 1.0], n_attr)
    directions = np.eye(d)[perm] * signs[:, None] * 3.0  # normalised inside
    latents = rng.standard_normal((20, d))
    scores = walk_scores(walk_predictions(identity, predict, latents, directions, [1.0, 2.0]))
    # the unmatched responses are exactly 0 (an axis step leaves the other
    # coordinates as they are); trace and sum add the same terms in other orders
    assert abs(scores.disentanglement - 1.0) <= 2 * gamma(n_attr**2, F64)
    np.testing.assert_array_equal(scores.assignment[:, 0], np.arange(n_attr))
    np.testing.assert_array_equal(scores.assignment[:, 1], perm)
    np.testing.assert_array_equal(scores.signs, signs.astype(int))
    # a prediction at distance t: z + t (exact direction), times coef, plus 0.5
    # (3 roundings); S_e divides a difference of two by t = 2 and averages them
    t, n = 2.0, len(latents)
    pred_error = gamma(3, F64) * (0.5 + (np.abs(latents[:, :n_attr]).max(0) + t) * coef)
    assert_within(scores.pair_efficiency, coef[perm],
                  (2 * pred_error[perm] / t + gamma(n, F64) * coef[perm]))


def test_mixed_directions_match_brute_force_assignment(rng):
    d, n_attr, t, c = 5, 3, 2.0, 0.1
    predict = lambda x: 0.5 + c * x[:, :n_attr]  # noqa: E731
    v = rng.standard_normal((3, d))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    latents = rng.standard_normal((10, d))
    scores = walk_scores(walk_predictions(identity, predict, latents, v, [t]))
    analytic = c * t * np.abs(v[:, :n_attr])  # A_ij for a linear attribute
    # a prediction: z + t v (with v renormalised: 3 roundings), times c, plus 0.5;
    # A_ij: means of n differences of two
    n = len(latents)
    pred_error = gamma(5, F64) * (0.5 + c * (np.abs(latents[:, :n_attr]).max(0) + t * np.abs(v[:, :n_attr])))
    response_error = 2 * pred_error + gamma(n, F64) * analytic
    assert_within(scores.response, analytic, response_error)
    best = max(itertools.permutations(range(n_attr)),
               key=lambda p: sum(analytic[i, p[i]] for i in range(3)))
    ref = sum(analytic[i, best[i]] for i in range(3)) / analytic.sum()
    # S_d = tr / sum moves by at most (1 + S_d) sum|dA| / sum A, plus the two sums
    assert abs(scores.disentanglement - ref) <= ((1 + ref) * response_error.sum() / analytic.sum()
                                                 + 2 * gamma(analytic.size, F64) * ref)
    np.testing.assert_array_equal(scores.assignment[:, 1], best)
    assert 0 < scores.disentanglement < 1


def test_more_directions_than_attributes(rng):
    d = 4
    predict = lambda x: 0.5 + 0.1 * x[:, :2]  # noqa: E731
    directions = np.stack([np.eye(d)[3], np.eye(d)[1], np.eye(d)[2], np.eye(d)[0]])
    scores = walk_scores(walk_predictions(identity, predict, rng.standard_normal((8, d)),
                                          directions, [1.0]))
    assert scores.assignment.tolist() == [[1, 1], [3, 0]]
    # unmatched responses exactly 0: trace and sum differ only in summation order
    assert abs(scores.disentanglement - 1.0) <= 2 * gamma(4, F64)
    assert scores.response.shape == (4, 2) and scores.curve_mean.shape == (4, 3, 2)


def test_walk_predictions_grid_and_batches(rng):
    calls = []

    def render(z):
        calls.append(len(z))
        return z

    latents = rng.standard_normal((7, 2))
    walk = walk_predictions(render, lambda x: x[:, 0], latents, np.eye(2), [2.0, 1.0],
                            batch_size=3)
    np.testing.assert_array_equal(walk.distances, [-2, -1, 0, 1, 2])
    assert walk.predictions.shape == (2, 5, 7, 1)
    assert max(calls) <= 3 and sum(calls) == 7 + 2 * 4 * 7
    # unit axis directions: z + t e is the same float64 addition as here
    np.testing.assert_array_equal(walk.predictions[0, 4, :, 0], latents[:, 0] + 2.0)
    np.testing.assert_array_equal(walk.predictions[1, 0, :, 0], latents[:, 0])


def test_no_negative_start_gives_nan_efficiency(rng):
    walk = walk_predictions(identity, lambda x: 0.9 + 0.01 * x[:, 0], rng.standard_normal((5, 2)),
                            np.eye(2)[:1], [1.0])
    scores = walk_scores(walk)
    assert scores.pair_n_negative[0] == 0 and np.isnan(scores.efficiency)


@pytest.mark.parametrize("backend", ["matplotlib", "pillow"])
def test_plot_writes_png(rng, tmp_path, backend):
    pytest.importorskip("matplotlib" if backend == "matplotlib" else "PIL")
    Image = pytest.importorskip("PIL.Image")
    predict = lambda x: 1 / (1 + np.exp(-x[:, :3]))  # noqa: E731
    walk = walk_predictions(identity, predict, rng.standard_normal((10, 4)), np.eye(4)[:3],
                            np.linspace(0.5, 2, 4))
    scores = walk_scores(walk)
    path = plot_walk_curves(scores, tmp_path / "curves.png", backend=backend,
                            attribute_names=["a", "b", "c"], ncols=2)
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        assert im.size[0] > 100 and im.size[1] > 100


def test_errors(rng):
    latents = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match="non-negative"):
        walk_predictions(identity, identity, latents, np.eye(3), [-1.0])
    with pytest.raises(ValueError, match="positive"):
        walk_predictions(identity, identity, latents, np.eye(3), [0.0])
    with pytest.raises(ValueError, match="directions have shape"):
        walk_predictions(identity, identity, latents, np.eye(4), [1.0])
    with pytest.raises(ValueError, match="predict returned"):
        walk_predictions(identity, lambda x: x[:2], latents, np.eye(3), [1.0])
    with pytest.raises(ValueError, match="contain 0"):
        walk_scores(WalkPredictions(np.array([1.0, 2.0]), np.zeros((1, 2, 3, 1))))
