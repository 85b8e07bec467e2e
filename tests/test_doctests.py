"""The engine's docstring examples: every example runs, and every public
function and class of the engine shows one (an ``Examples:`` section with at
least one ``>>>`` line)."""
import doctest
import importlib
import inspect
import pkgutil
import types
import typing

import pytest

import jaxfactor

# The app layer (jaxfactor.app*, python -m jaxfactor) is not the engine; private
# modules (jaxfactor._linalg, ...) have no public API of their own.
_EXCLUDED = ("jaxfactor.app", "jaxfactor.__main__")

# Public names allowed to lack an Examples section (none now; a name may join
# only with a reason beside it).
PENDING: set[str] = set()

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _is_engine(name: str) -> bool:
    if any(name == e or name.startswith(e + ".") for e in _EXCLUDED):
        return False
    return not any(part.startswith("_") for part in name.split(".")[1:])


def _raise_for_engine(name: str) -> None:
    # walk_packages skips a package that fails to import; an engine one must not vanish
    if _is_engine(name):
        raise


def engine_module_names() -> list[str]:
    names = ["jaxfactor"]
    for info in pkgutil.walk_packages(jaxfactor.__path__, prefix="jaxfactor.",
                                      onerror=_raise_for_engine):
        if _is_engine(info.name):
            names.append(info.name)
    return sorted(names)


ENGINE_MODULES = engine_module_names()


@pytest.mark.parametrize("modname", ENGINE_MODULES, ids=ENGINE_MODULES)
def test_docstring_examples_run(modname):
    module = importlib.import_module(modname)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS, verbose=False)
    report, failed = [], 0
    for test in finder.find(module, modname):
        # each docstring's examples import what they use: no shared module globals
        test.globs = {"__name__": modname}
        failed += runner.run(test, out=report.append).failed
    assert failed == 0, "".join(report)


def _is_exempt_class(obj) -> bool:
    if issubclass(obj, tuple) and hasattr(obj, "_fields"):
        return True  # NamedTuple result / state types
    if issubclass(obj, BaseException):
        return True  # exceptions and warnings
    return bool(getattr(obj, "_is_protocol", False)) and typing.Protocol in obj.__mro__


def _has_examples(doc: str | None) -> bool:
    if not doc:
        return False
    lines = inspect.cleandoc(doc).splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Examples:":
            return any(rest.strip().startswith(">>>") for rest in lines[i + 1:])
    return False


def missing_examples(module) -> list[str]:
    """The ``module.name`` of each public function or class that ``module``
    defines (a name in its ``__all__``) and whose docstring lacks Examples."""
    missing = []
    for name in getattr(module, "__all__", ()):
        obj = getattr(module, name)
        target = getattr(obj, "__wrapped__", obj)  # jax.jit's PjitFunction
        if getattr(obj, "__module__", None) != module.__name__ and \
                getattr(target, "__module__", None) != module.__name__:
            continue  # re-exported: checked where it is defined
        if inspect.isclass(target):
            if _is_exempt_class(target):
                continue
        elif not callable(target):
            continue
        if not _has_examples(inspect.getdoc(target)):
            missing.append(f"{module.__name__}.{name}")
    return missing


def test_public_api_has_examples():
    missing = []
    for modname in ENGINE_MODULES:
        missing += missing_examples(importlib.import_module(modname))
    missing = [m for m in missing if m not in PENDING]
    assert not missing, "public names without an Examples section:\n  " + "\n  ".join(missing)


def test_pending_names_still_lack_examples():
    for name in PENDING:
        modname, _, attr = name.rpartition(".")
        assert name in missing_examples(importlib.import_module(modname)), \
            f"{name} has examples now: drop it from PENDING"


def test_module_walk_finds_the_engine():
    assert "jaxfactor.metrics.walks" in ENGINE_MODULES
    assert "jaxfactor.estimators.sca" in ENGINE_MODULES
    assert not any(m.startswith(("jaxfactor.app", "jaxfactor._", "jaxfactor.__main__"))
                   for m in ENGINE_MODULES)


def test_rule_reports_a_missing_example():
    fake = types.ModuleType("fake_engine")

    def documented(x):
        """Double.

        Examples:
            >>> documented(2)
            4
        """
        return 2 * x

    def undocumented(x):
        """Triple, with no example."""
        return 3 * x

    class Result(typing.NamedTuple):
        value: int

    for f in (documented, undocumented, Result):
        f.__module__ = "fake_engine"
        setattr(fake, f.__name__, f)
    fake.__all__ = ["documented", "undocumented", "Result"]
    assert missing_examples(fake) == ["fake_engine.undocumented"]
