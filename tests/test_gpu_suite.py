"""benchmarks/gpu_suite.py --tiny on the CPU: every case runs its code, is checked against
its float64 reference and is recorded in the JSON and the Markdown table; a failing case
is recorded with its error while the others go on; a hanging case is ended at its time
cap; and the suite imports nothing the lent GPU machine lacks.

Default-suite cost: one run of the tiny suite, 30-60 s on 2 cores (almost all of it XLA
compiling toy programs); the time-cap and the no-GPU tests are marked slow."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks import gpu_suite

from .helpers import ROOT, subprocess_env

# What the lent machine lacks (it has Python, jax + CUDA plugin, torch, numpy, scipy and
# scikit-learn): a sitecustomize on PYTHONPATH makes importing these fail in the suite
# and in its worker processes.
ABSENT = ("pytest", "flax", "optax", "PIL", "pytorch_fid", "torchvision", "tqdm", "matplotlib",
          "selenium", "picard")
BLOCKER = textwrap.dedent("""
    import sys

    ABSENT = {absent!r}

    class _Absent:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in ABSENT:
                raise ModuleNotFoundError(f"{{name}} is not on the lent GPU machine", name=name)
            return None

    sys.meta_path.insert(0, _Absent())
""")
# What issue 21 asks for, by case.
REQUIRED = {"peaks", "pca_n10000", "pca_n100000", "ica_k100", "ica_k1000", "sca_k50",
            "stream_builtin", "frechet_d2048"}
INJECTED = "pca_n100000"        # its code is that of pca_n10000, which runs


def _run_suite(tmp, *args, timeout=600):
    site = tmp / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER.format(absent=ABSENT))
    out = tmp / "out"
    env = subprocess_env(PYTHONPATH=str(site))
    proc = subprocess.run([sys.executable, str(Path(ROOT) / "benchmarks" / "gpu_suite.py"), str(out), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp, env=env)
    return proc, out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_suite")
    proc, out = _run_suite(tmp, "--tiny", "--inject-failure", INJECTED)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    payload = json.loads((out / "gpu_suite.json").read_text())
    return proc, payload, (out / "gpu_suite.md").read_text()


def _case(payload, name):
    return next(c for c in payload["cases"] if c["case"] == name)


def test_every_case_is_present_and_the_failing_one_is_isolated(tiny):
    proc, payload, md = tiny
    names = [c["case"] for c in payload["cases"]]
    assert names == gpu_suite.CASE_NAMES and REQUIRED <= set(names)
    bad = _case(payload, INJECTED)
    assert bad["status"] == "error" and "injected" in bad["error"] and not bad["rows"]
    assert "Traceback" in bad["traceback"]
    for case in payload["cases"]:
        if case["case"] == INJECTED:
            continue
        assert case["status"] == "ok", (case["case"], case.get("error"), [r.get("error") for r in case["rows"]])
        assert case["rows"], case["case"]
        for row in case["rows"]:
            assert "error" not in row, (case["case"], row)
            # every run with a reference passed it; timed runs have their times
            assert row.get("check", "pass") == "pass", (case["case"], row)
            if "steady_s" in row:
                assert row["steady_s"] > 0 and row["compile_s"] >= 0 and row["first_call_s"] > 0
    # the Markdown table: one line per run, the injected error among them
    for case in payload["cases"]:
        assert f"| {case['case']} |" in md
    assert "failure injected into pca_n100000" in md
    assert md.count("\n| ") - 1 == sum(max(len(c["rows"]), 1) for c in payload["cases"])
    # versions said and recorded
    versions = payload["environment"]["versions"]
    assert {"python", "jax", "torch", "numpy", "scipy", "sklearn"} <= set(versions)
    assert "ran with python" in proc.stdout


def test_each_case_runs_what_the_issue_asks(tiny):
    _, payload, _ = tiny
    pca = _case(payload, "pca_n10000")
    runs = {(r["run"], r["precision"]) for r in pca["rows"]}
    for method in ("krylov", "adaptive"):
        assert {(f"jaxfactor {method}", p) for p in ("float32", "tf32", "bf16")} <= runs
    assert {r["run"] for r in pca["rows"] if r["impl"] == "torch"} == {
        "torch.svd_lowrank niter=2", "torch.svd_lowrank niter=4"}
    assert pca["jax_to_torch_zero_copy"] is True
    for row in pca["rows"]:
        # model flops and bytes over the steady time, beside the measured peaks
        assert row["tflops"] > 0 and row["shortfall"] < gpu_suite.SHORTFALL_TARGET
        assert 0 <= row["angle_top_half_deg"] < 90 and row["sv_excess_over_bound"] <= 1
    assert set(payload["peaks"]) >= {"bf16_TFLOPs", "float32_TFLOPs", "copy_GBps"}
    assert any("tflops_pct_peak" in r for r in pca["rows"])
    exact = _case(payload, "pca_exact_torch_n10000")["rows"]
    assert [r["run"] for r in exact] == ["torch.linalg.svd (exact)"]
    assert exact[0]["shortfall"] <= 1e-5     # the exact SVD captures the optimum
    for name in ("ica_k100", "ica_k1000"):
        ica = _case(payload, name)
        runs = [r["run"] for r in ica["rows"]]
        assert runs[0] == "whiten (randomized)" and "fastica iteration, eigh" in runs
        assert "fastica iteration, newton-schulz" in runs
        assert ica["decorrelations_agree"] is True
        est = ica["rows"][-1]
        assert est["plan"]["decorrelation"] == "eigh" and est["plan"]["platform"] == "cpu"
    # the two ICA cases take the two whitening range finders, as at full size
    plans = {name: _case(payload, name)["rows"][0]["range_method"] for name in ("ica_k100", "ica_k1000")}
    assert plans == {"ica_k100": "krylov", "ica_k1000": "subspace"}
    sca = _case(payload, "sca_k50")["rows"]
    assert {r["plan"]["reduced_rank"] is None for r in sca} == {True, False}   # both plans ran
    stream = {r["run"]: r for r in _case(payload, "stream_builtin")["rows"]}
    hand = stream["DLPack hand-over (one block)"]
    assert hand["zero_copy"] and hand["same_device"] and hand["equal"]
    assert stream["read all rows (generator + hand-over)"]["rows_per_s"] > 0
    assert stream["streaming PCA over the stream"]["n_passes"] > 1
    fd = _case(payload, "frechet_d2048")["rows"][0]
    assert fd["fd"] > 0 and fd["fd_err"] <= fd["fd_bound"]


@pytest.mark.slow
def test_the_suite_refuses_full_sizes_without_a_gpu(tmp_path):
    proc, out = _run_suite(tmp_path, "--only", "peaks", timeout=300)
    assert proc.returncode == 0
    case = json.loads((out / "gpu_suite.json").read_text())["cases"][0]
    assert case["status"] == "error" and "need a GPU" in case["error"]


@pytest.mark.slow
def test_a_hanging_case_is_ended_at_its_cap_and_the_rest_go_on(tmp_path):
    proc, out = _run_suite(tmp_path, "--tiny", "--only", "frechet_d2048,peaks", "--inject-hang",
                           "frechet_d2048", "--case-cap", "8", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cases = {c["case"]: c for c in json.loads((out / "gpu_suite.json").read_text())["cases"]}
    assert cases["frechet_d2048"]["status"] == "error"
    assert "killed at its time cap of 8 s" in cases["frechet_d2048"]["error"]
    assert cases["peaks"]["status"] == "ok"


def test_the_suite_module_imports_only_the_standard_library():
    # the parent side runs before any check of the stack: it must start anywhere
    code = ("import sys; sys.path.insert(0, %r); import benchmarks.gpu_suite; "
            "print(sorted(m for m in ('jax', 'numpy', 'torch', 'scipy') if m in sys.modules))" % str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
