"""Optional extras (jaxfactor/_extras.py): the engine imports and fits without
them; every path that needs one raises MissingExtraError, and the CLI turns it
into one line on stderr and exit code 2.

"Without them" is simulated in a fresh process by a meta-path finder that
answers every import of an optional module as pip-absent (``sys.modules[name]
= None`` would not do: scipy's array-API helpers read ``sys.modules['torch']``
and fail on ``None``). The slow test checks the same in a real venv.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxfactor._extras import (
    EXTRA_OF,
    TORCH_PIN,
    MissingExtraError,
    install_command,
    require,
    require_all,
)
from jaxfactor.app.cli import main

from .helpers import ROOT, run_json_script

PIN = " ".join(TORCH_PIN)
OPTIONAL = tuple(EXTRA_OF)
DEMO_ONLY = ("flax", "optax", "tqdm", "matplotlib")

_BLOCKER = """\
import sys

class _Absent:
    '''Answer imports of {blocked!r} (and their submodules) as not installed.'''

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _Absent())
"""


def _without(blocked, script: str) -> str:
    return _BLOCKER.format(blocked=tuple(blocked)) + script


def _run_module_without(blocked, args, cwd) -> subprocess.CompletedProcess:
    """``python -m jaxfactor *args`` with ``blocked`` modules absent."""
    script = _without(blocked, "import runpy, sys\nsys.argv = ['jaxfactor', *sys.argv[1:]]\n"
                               "runpy.run_module('jaxfactor', run_name='__main__', alter_sys=True)\n")
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300, check=False)


def _assert_one_line_error(stderr: str, command: str, extras: str, pin: bool = True):
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith(f"jaxfactor {command}: error: ")
    assert f"pip install 'jaxfactor[{extras}]'" in lines[0]
    assert (f"pip install {PIN} && " in lines[0]) == pin, lines[0]


# --------------------------------------------------------------- in-process


def test_message_names_modules_extras_and_the_pin_first():
    err = MissingExtraError("the demo", ["torch", "PIL", "flax"], ["torch", "torch", "demo"])
    assert isinstance(err, ImportError) and err.name == "torch"
    assert err.extras == ("torch", "demo") and err.modules == ("torch", "PIL", "flax")
    msg = str(err)
    assert "\n" not in msg
    assert msg.startswith("the demo needs torch, pillow, flax (optional extras 'torch', 'demo')")
    assert msg.index(f"pip install {PIN}") < msg.index("pip install 'jaxfactor[torch,demo]'")
    assert install_command(["demo"]) == ("pip install 'jaxfactor[demo]' "
                                         "(from a source checkout: pip install '.[demo]')")


def test_require_returns_the_module_or_raises_the_clear_error():
    assert require("json", "demo", feature="x") is json
    with pytest.raises(MissingExtraError, match=r"^feature y needs no_such_module_q .*'demo'"):
        require("no_such_module_q.sub", "demo", feature="feature y")
    require_all(["json", "os"], feature="z")  # all present: no error


def test_extras_table_matches_pyproject():
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((Path(ROOT) / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    dist = {"PIL": "pillow", "pytorch_fid": "pytorch-fid"}
    for module, extra in EXTRA_OF.items():
        names = {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in extras[extra]}
        assert dist.get(module, module).lower() in names, (module, extra, names)


def test_torch_pin_has_one_source():
    out = subprocess.run([sys.executable, "jaxfactor/_extras.py"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == PIN
    assert f"`{PIN}`" in (Path(ROOT) / "README.md").read_text()
    if shutil.which("make") is None:
        pytest.skip("no make")
    dry = subprocess.run(["make", "-n", "-B", ".venv/.installed", f"PYTHON={sys.executable}"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert f"pip install --quiet {PIN}\n" in dry


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["discover", "--help"],
                                  ["edit", "--help"], ["evaluate", "--help"]])
def test_help_is_plain_text(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "usage: jaxfactor" in text
    assert "``" not in text and "::" not in text and ":func:" not in text
    if argv == ["--help"]:
        assert f"pip install {PIN}" in text and "exit codes" in text


# --------------------------------------------------------------- without the extras

_ENGINE_AND_COMMANDS = """
import contextlib, io, json
import numpy as np
import jaxfactor

out = {}
rng = np.random.default_rng(0)
x = (rng.standard_normal((200, 6)) @ rng.standard_normal((6, 6))).astype(np.float32)
out["pca"] = jaxfactor.PCA(3, random_state=0).fit(x).components_.shape
out["ica"] = jaxfactor.FastICA(3, random_state=0).fit(x).components_.shape
out["sca"] = jaxfactor.SCA(3, random_state=0).fit(x).components_.shape
out["sefa"] = jaxfactor.SeFa(2).fit([rng.standard_normal((5, 4))]).components_.shape
out["amari"] = float(jaxfactor.amari_distance(np.eye(3), np.eye(3)))
out["frechet"] = float(jaxfactor.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2)))

for name in ("bridges", "bridges.torch", "bridges.builtin", "jaxfactor.metrics.classifier"):
    try:
        __import__(name)
        out[name] = "imported"
    except jaxfactor.MissingExtraError as err:
        out[name] = str(err)

from jaxfactor.app.cli import main
gen = "bridges.builtin:load_builtin_generator"
commands = {
    "discover": ["discover", "--generator", gen, "--layer", "w", "--method", "pca",
                 "--components", "2", "--out", "dirs.npz"],
    "edit": ["edit", "--generator", gen, "--directions", "dirs.npz", "--out", "grid.png"],
    "evaluate": ["evaluate", "--generator", gen, "--directions", "dirs.npz", "--out", "s.json"],
}
for name, argv in commands.items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except BaseException as exc:  # what would reach the user as a traceback
            code = repr(exc)
    out["cli " + name] = [code, err.getvalue()]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def without_extras():
    """The engine, the bridge imports and the commands, in one process with no
    optional module importable."""
    return run_json_script(_without(OPTIONAL, _ENGINE_AND_COMMANDS), timeout=300)


def test_engine_fits_without_extras(without_extras):
    for method in ("pca", "ica", "sca"):
        assert without_extras[method] == [3, 6]
    assert without_extras["sefa"] == [2, 4]
    assert without_extras["amari"] == pytest.approx(0.0, abs=1e-6)
    assert without_extras["frechet"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("module, extra", [("bridges", "torch"), ("bridges.torch", "torch"),
                                           ("bridges.builtin", "torch"),
                                           ("jaxfactor.metrics.classifier", "demo")])
def test_bridge_imports_raise_the_clear_error(without_extras, module, extra):
    msg = without_extras[module]
    assert f"(optional extra '{extra}')" in msg and "is not installed" in msg
    assert f"pip install 'jaxfactor[{extra}]'" in msg
    assert (f"pip install {PIN} && " in msg) == (extra == "torch")


@pytest.mark.parametrize("command", ["discover", "edit", "evaluate"])
def test_commands_without_torch_exit_2_with_one_line(without_extras, command):
    code, stderr = without_extras["cli " + command]
    assert code == 2, (code, stderr)
    _assert_one_line_error(stderr, command, "torch")


def test_python_m_jaxfactor_demo_without_torch(tmp_path):
    out = tmp_path / "report"
    proc = _run_module_without(OPTIONAL, ["demo", "--quick", "--out", str(out)], tmp_path)
    assert proc.returncode == 2, proc.stderr
    _assert_one_line_error(proc.stderr, "demo", "torch,demo")
    assert "torch, pillow, matplotlib, flax, optax" in proc.stderr
    assert not out.exists()  # nothing ran before the check


def test_demo_with_torch_but_without_the_demo_extra(tmp_path):
    pytest.importorskip("torch")
    proc = _run_module_without(DEMO_ONLY, ["demo", "--quick", "--out", str(tmp_path / "r")], tmp_path)
    assert proc.returncode == 2, proc.stderr
    _assert_one_line_error(proc.stderr, "demo", "demo", pin=False)
    assert "needs matplotlib, flax, optax (optional extra 'demo')" in proc.stderr


# --------------------------------------------------------------- a real venv


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_fresh_venv_without_torch(tmp_path):
    """``pip install .`` (no extras) into a new venv: the engine works, the demo
    says which extras to install and exits 2."""
    src = tmp_path / "src"
    for name in ("jaxfactor", "bridges"):
        shutil.copytree(Path(ROOT) / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(Path(ROOT) / name, src / name)
    venv = tmp_path / "venv"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py, exe = venv / "bin" / "python", venv / "bin" / "jaxfactor"
    subprocess.run([py, "-m", "pip", "install", "--quiet", str(src)], check=True, timeout=1500)
    print(f"venv + pip install: {time.perf_counter() - t0:.0f} s")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["JAX_PLATFORMS"] = "cpu"

    def run(*args):
        return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=tmp_path,
                              env=env, timeout=300, check=False)

    assert run(py, "-c", "import torch").returncode != 0  # the venv really lacks torch
    fit = run(py, "-c", "import numpy as np, jaxfactor; x = np.random.default_rng(0).standard_normal("
                        "(100, 5)).astype(np.float32); [e.fit(x) for e in (jaxfactor.PCA(2), "
                        "jaxfactor.FastICA(2), jaxfactor.SCA(2))]; print(jaxfactor.__file__)")
    assert fit.returncode == 0, fit.stderr
    assert str(venv) in fit.stdout  # the installed copy, not the checkout
    demo = run(exe, "demo", "--quick", "--out", tmp_path / "out")
    assert demo.returncode == 2, demo.stderr
    _assert_one_line_error(demo.stderr, "demo", "torch,demo")
    bridge = run(py, "-c", "import bridges")
    assert "MissingExtraError" in bridge.stderr and f"pip install {PIN}" in bridge.stderr
    helptext = run(exe, "--help")
    assert helptext.returncode == 0 and "``" not in helptext.stdout and "::" not in helptext.stdout
