"""The layers, enforced: engine <- bridges <- app (import-linter contracts in
pyproject.toml), with no engine module left out of the contract."""
import ast
import os
import pkgutil
import sys
import tomllib

import importlinter.cli as lint

import jaxfactor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = ("jaxfactor.app", "jaxfactor.__main__")


def _contracts():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]["contracts"]


def test_import_linter_contracts_hold():
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        code = lint.lint_imports(config_filename=os.path.join(ROOT, "pyproject.toml"),
                                 no_cache=True, no_logo=True)
    finally:
        os.chdir(cwd)
    assert code == lint.EXIT_STATUS_SUCCESS


def test_engine_contract_names_every_engine_module():
    engine = _contracts()[0]
    assert engine["name"].startswith("The engine")
    listed = set(engine["source_modules"])
    top = {f"jaxfactor.{m.name}" for m in pkgutil.iter_modules(jaxfactor.__path__)}
    assert top - set(APP) == listed, "a new engine module must join the contract"


def test_package_root_imports_no_app_and_no_bridges():
    # the contract checks submodules; the package's own __init__ is checked here
    with open(os.path.join(ROOT, "jaxfactor", "__init__.py")) as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
    assert not any(n.startswith(("bridges", ".app", "jaxfactor.app")) for n in names), names


def test_a_forbidden_import_is_caught(tmp_path):
    # the contract can fail: an engine module importing bridges is reported
    contract = _contracts()[0]
    config = tmp_path / "contract.toml"
    config.write_text(
        '[tool.importlinter]\nroot_packages = ["fake_engine", "bridges"]\n'
        '[[tool.importlinter.contracts]]\nname = "x"\ntype = "forbidden"\n'
        'source_modules = ["fake_engine.kernels"]\nforbidden_modules = ["bridges"]\n')
    pkg = tmp_path / "fake_engine"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "kernels.py").write_text("import bridges.render\n")
    assert contract["forbidden_modules"][0] == "bridges"
    cwd = os.getcwd()
    os.chdir(tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        code = lint.lint_imports(config_filename=str(config), no_cache=True, no_logo=True)
    finally:
        sys.path.remove(str(tmp_path))
        os.chdir(cwd)
    assert code != lint.EXIT_STATUS_SUCCESS
