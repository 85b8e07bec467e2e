import json

import numpy as np
import pytest

pytest.importorskip("torch")

from jaxfactor.app.cli import main  # noqa: E402
from jaxfactor.app.demo import DemoConfig, run_demo  # noqa: E402
from jaxfactor.directions import load_directions  # noqa: E402

GEN = "bridges.builtin:load_builtin_generator"


def test_demo_end_to_end_small(tmp_path):
    cfg = DemoConfig.quick(layers=("w",), components=3, ica_components=(3,), n_samples=400,
                           fid_images=120, walk_samples=8, walk_steps=2, grid_directions=2)
    res = run_demo(tmp_path, cfg)
    for name in ("index.html", "results.json", "tables.md"):
        assert (tmp_path / name).stat().st_size > 0
    rows = res["rows"]
    assert [r["method"] for r in rows] == ["PCA", "ICA", "SCA", "SEFA"]
    for r in rows:
        assert (tmp_path / r["grid"]).exists() and (tmp_path / r["walk_plot"]).exists()
        for key in ("fid_a3", "fid_a6", "S_e", "S_d"):
            assert np.isfinite(r[key]), (r["label"], key)
        assert 0 < r["S_d"] <= 1
    # stronger edits move the image distribution further, on average over methods
    assert np.mean([r["fid_a6"] for r in rows]) >= np.mean([r["fid_a3"] for r in rows])
    assert abs(res["fid_alpha0_control"]) < 1e-6
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"][0]["label"] == rows[0]["label"]
    html = (tmp_path / "index.html").read_text()
    assert all(r["grid"] in html for r in rows)


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
