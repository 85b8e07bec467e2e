import json

import numpy as np
import pytest

pytest.importorskip("torch")

from jaxfactor.app.cli import main  # noqa: E402
from jaxfactor.app.demo import DemoConfig, _plans  # noqa: E402
from jaxfactor.directions import load_directions  # noqa: E402

GEN = "bridges.builtin:load_builtin_generator"


def test_quick_demo_writes_its_report_and_directions(quick_demo_report):
    """The quick demo run through the CLI (shared with test_report: tests/conftest.py)."""
    out = quick_demo_report
    for name in ("index.html", "results.json", "tables.md"):
        assert (out / name).stat().st_size > 0
    res = json.loads((out / "results.json").read_text())
    rows = res["rows"]
    assert [r["method"] for r in rows] == [p["method"].upper() for p in _plans(DemoConfig.quick())]
    for r in rows:
        assert (out / r["grid"]).exists() and (out / r["walk_plot"]).exists()
        for key in ("fid_a3", "fid_a6", "S_e", "S_d"):
            assert np.isfinite(r[key]), (r["label"], key)
        assert 0 < r["S_d"] <= 1
        d = load_directions(out / "directions" / f"{r['tag']}.npz", method=r["method"].lower())
        assert d.directions.shape == (r["components"], 64) and d.metadata["space"] == "w"
        np.testing.assert_allclose(np.linalg.norm(d.directions, axis=1), 1.0, rtol=1e-5)
    # stronger edits move the image distribution further, on average over methods
    assert np.mean([r["fid_a6"] for r in rows]) >= np.mean([r["fid_a3"] for r in rows])
    assert abs(res["fid_alpha0_control"]) < 1e-6
    html = (out / "index.html").read_text()
    assert all(r["grid"] in html for r in rows)


def test_demo_plans():
    """The testbed plan (one entry per table row) and the per-layer plan of ``layers``."""
    cfg = DemoConfig(components=5, ica_components=(3, 7), init_components=50,
                     init_ica_components=(4,), pool_size=2)
    got = [(p["layer"], p["method"], p["k"], p["pool"]) for p in _plans(cfg)]
    assert got == [("w", "pca", 5, None), ("synthesis.init", "pca", 50, None),
                   ("w", "ica", 3, None), ("w", "ica", 7, None),
                   ("synthesis.init", "ica", 4, None),
                   ("synthesis.conv8", "pca", 5, ("max", 2)), ("synthesis.conv8", "sca", 5, ("max", 2)),
                   ("weights", "sefa", 5, None)]
    by_layer = [(p["layer"], p["method"], p["k"]) for p in
                _plans(DemoConfig(layers=("w", "synthesis.conv16"), components=3, ica_components=(2,)))]
    assert by_layer == [("w", "pca", 3), ("w", "ica", 2), ("w", "sca", 3),
                        ("synthesis.conv16", "pca", 3), ("synthesis.conv16", "ica", 2),
                        ("synthesis.conv16", "sca", 3), ("weights", "sefa", 3)]


def test_discover_and_edit_commands(tmp_path, capsys):
    out = tmp_path / "dirs.npz"
    code = main(["discover", "--generator", GEN, "--layer", "synthesis.init", "--method", "pca",
                 "--components", "3", "--samples", "300", "--batch-size", "100", "--out", str(out)])
    assert code == 0
    d = load_directions(out, method="pca", layer="synthesis.init")
    assert d.directions.shape == (3, 64) and d.metadata["space"] == "w"
    np.testing.assert_allclose(np.linalg.norm(d.directions, axis=1), 1.0, rtol=1e-5)
    assert np.all(d.arrays["r2"] > 0.5)  # the init layer is a near-linear function of w
    png = tmp_path / "grid.png"
    assert main(["edit", "--generator", GEN, "--directions", str(out), "--alphas", "-2", "0", "2",
                 "--out", str(png)]) == 0
    from PIL import Image

    assert Image.open(png).size[0] > 3 * 8


@pytest.mark.parametrize("argv, message", [
    (["discover", "--generator", "no_such_module_xyz:f", "--layer", "w", "--method", "pca",
      "--components", "2", "--out", "x.npz"], "cannot import generator module"),
    (["discover", "--generator", "bridges.builtin:nope", "--layer", "w", "--method", "pca",
      "--components", "2", "--out", "x.npz"], "has no callable 'nope'"),
    (["discover", "--generator", "bridges.builtin", "--layer", "w", "--method", "pca",
      "--components", "2", "--out", "x.npz"], "must look like"),
    (["discover", "--generator", GEN, "--layer", "synthesis.nope", "--method", "pca",
      "--components", "2", "--samples", "10", "--out", "x.npz"], "synthesis.nope"),
    (["edit", "--generator", GEN, "--directions", "missing.npz", "--out", "g.png"], "missing.npz"),
])
def test_cli_errors_exit_2_with_a_message(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_usage_errors():
    with pytest.raises(SystemExit) as exc:
        main(["discover", "--method", "pca"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["discover", "--generator", GEN, "--layer", "w", "--method", "nmf", "--components", "2",
              "--out", "x.npz"])


def _planted(rng, n, p, k, noise=0.05):
    """``X = S A^T + noise``: ``k`` unit-variance Laplace sources of spread ``scale``
    along orthonormal columns of ``A (p, k)``, float32; returns ``(X, S, A)``."""
    a, _ = np.linalg.qr(rng.normal(size=(p, k)))
    scale = np.linspace(3.0, 1.0, k)
    s = rng.laplace(scale=1 / np.sqrt(2), size=(n, k))
    x = (s * scale) @ a.T + noise * rng.normal(size=(n, p))
    return x.astype(np.float32), s, a


def _angles_deg(got, want):
    """Angle (degrees) between each row of ``got`` and the best-matched row of ``want``, signs ignored."""
    from scipy.optimize import linear_sum_assignment

    g = np.asarray(got, np.float64)
    w = np.asarray(want, np.float64)
    cos = np.abs((g / np.linalg.norm(g, axis=1, keepdims=True))
                 @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T)
    rows, cols = linear_sum_assignment(-cos)
    return np.degrees(np.arccos(np.clip(cos[rows, cols], 0, 1)))


def _reference_pca(x, k):
    """float64 NumPy reference: top-``k`` principal axes ``(k, p)``, scores and squared singular values."""
    xc = np.asarray(x, np.float64) - np.asarray(x, np.float64).mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    return vt[:k], xc @ vt[:k].T, s ** 2


def _reference_lift(latents, scores):
    """GANSpace's lift in float64: regress centred latents on unit-variance scores."""
    lat = np.asarray(latents, np.float64)
    c = np.asarray(scores, np.float64)
    std = (c - c.mean(0)) / c.std(0, ddof=1)
    b, *_ = np.linalg.lstsq(std, lat - lat.mean(0), rcond=None)
    return b


def test_discover_at_layer_in_the_latent_matches_numpy_and_scikit_learn(rng):
    """PCA-3 taken from the shared PCA-5 is the float64 SVD's top 3 axes; FastICA-5
    on the shared PCA's scores reaches scikit-learn's FastICA fit of the full data."""
    from sklearn.decomposition import FastICA as SkFastICA

    from jaxfactor.app.pipeline import LayerSample, discover_at_layer

    from .tolerances import angle_bound_deg, gram_error, min_gap

    n, p, k, tol = 3000, 12, 5, 1e-7
    x, _, _ = _planted(rng, n, p, k)
    got = discover_at_layer(LayerSample("w", x, x, "w", 0.0), [("pca", 3), ("ica", k)],
                            estimator_params={"ica": {"tol": tol, "max_iter": 1000}})
    axes, _, sigma2 = _reference_pca(x, 3)
    pca = got[("pca", 3)]
    assert pca.directions.shape == (3, p) and pca.estimator.n_components == k   # one shared fit
    # Davis-Kahan on the Gram matrix: float32 perturbation over each axis's own gap
    bound = angle_bound_deg(gram_error(x), min_gap(sigma2, 3))
    assert np.all(_angles_deg(pca.directions, axes) <= bound)
    want_std = np.std(x.astype(np.float64) @ pca.directions.T.astype(np.float64), axis=0, ddof=1)
    np.testing.assert_allclose(pca.scales, want_std, rtol=4 * np.finfo(np.float32).eps)
    # both fixed points stop once a step moves each unmixing row by less than
    # acos(1 - tol) ~ sqrt(2 tol) rad; the quadratic convergence leaves less than that
    ica = got[("ica", k)]
    ref = SkFastICA(k, whiten="unit-variance", fun="logcosh", tol=tol, max_iter=1000,
                    random_state=0).fit(x.astype(np.float64))
    step = np.degrees(np.sqrt(2 * tol))
    whitening = angle_bound_deg(gram_error(x), min_gap(np.linalg.svd(
        x - x.mean(0), compute_uv=False) ** 2, k))
    assert np.all(_angles_deg(ica.directions, ref.mixing_.T) <= 2 * step + whitening)
    assert np.all(np.linalg.norm(ica.directions, axis=1) == pytest.approx(1, rel=1e-6))


def test_discover_at_layer_lifts_like_ganspace(rng):
    """At a layer, the directions are the least-squares lift of the shared PCA's
    first ``k`` scores (float64 reference), and FastICA's lift that of its sources."""
    from jaxfactor.app.pipeline import LayerSample, discover_at_layer

    from .tolerances import angle_bound_deg, gamma, gram_error, min_gap

    n, d, p, k = 3000, 6, 40, 4
    latents = rng.normal(size=(n, d)).astype(np.float32)
    x, _, _ = _planted(rng, n, p, k)
    x = (x + np.tanh(latents @ rng.normal(size=(d, p)))).astype(np.float32)
    got = discover_at_layer(LayerSample("layer", x, latents, "w", 0.0), [("pca", 2), ("ica", 3)])
    _, scores, sigma2 = _reference_pca(x, 2)
    want = _reference_lift(latents, scores)
    pca = got[("pca", 2)]
    # an axis off by theta moves its score by theta ||X_c|| / sigma_i of its spread: the
    # lift's direction by about as much (in radians) relative to sigma_1 / sigma_i; the
    # float32 lift itself (Gram and cross products of n rows, unit-variance uncorrelated
    # scores) adds gamma(n) times the latents' conditioning (< 10 for these draws)
    lift_error = 10 * gamma(n)
    theta = np.radians(angle_bound_deg(gram_error(x), min_gap(sigma2, 2)))
    bound = np.degrees(theta * np.sqrt(sigma2[0] / sigma2[:2]) + lift_error)
    assert np.all(_angles_deg(pca.directions, want) <= bound.max())
    np.testing.assert_allclose(pca.scales, np.linalg.norm(want, axis=1), rtol=lift_error + theta)
    assert pca.r2.shape == (2,) and np.all((0 <= pca.r2) & (pca.r2 <= 1))
    ica = got[("ica", 3)]
    sources = np.asarray(ica.estimator.transform(np.asarray(pca.estimator.transform(x))[:, :3]))
    want_ica = _reference_lift(latents, sources)
    assert np.all(_angles_deg(ica.directions, want_ica) <= np.degrees(lift_error))
    np.testing.assert_allclose(ica.scales, np.linalg.norm(want_ica, axis=1), rtol=lift_error)
