"""Optional dependencies: which extra installs which module, and the one error
raised when a feature needs a module that is not installed.

The engine (``import jaxfactor``: the estimators, kernels and the metrics that
do not need torch) imports none of these modules. Everything that does goes
through :func:`require` or :func:`require_all`, so a missing extra is always a
:class:`MissingExtraError` whose message says what to install.

``python jaxfactor/_extras.py`` prints :data:`TORCH_PIN` (the Makefile reads it
from here); this file imports nothing outside the standard library.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterable
from types import ModuleType

# torch 2.14.1 with torchvision 0.29.1 is the pair whose torchvision imports
# (pytorch-fid needs it); installed first, pip never picks a torch build itself.
TORCH_PIN = ("torch==2.14.1", "torchvision==0.29.1")

# import name -> the extra of pyproject.toml that installs it
EXTRA_OF = {
    "torch": "torch",
    "torchvision": "torch",
    "pytorch_fid": "torch",
    "PIL": "torch",
    "flax": "demo",
    "optax": "demo",
    "tqdm": "demo",
    "matplotlib": "demo",
}

# import name -> distribution name, where they differ (the message says what pip knows)
_DISTRIBUTION = {"PIL": "pillow", "pytorch_fid": "pytorch-fid"}

_EXTRA_ORDER = ("torch", "demo", "dev", "cuda")


def install_command(extras: Iterable[str]) -> str:
    """The shell line that installs ``extras``: the torch pin first when the
    ``torch`` extra is among them, then ``pip install 'jaxfactor[...]'``."""
    wanted = sorted(set(extras), key=lambda e: (_EXTRA_ORDER + (e,)).index(e))
    spec = ",".join(wanted)
    steps = [f"pip install {' '.join(TORCH_PIN)}"] if "torch" in wanted else []
    steps.append(f"pip install 'jaxfactor[{spec}]'")
    return " && ".join(steps) + f" (from a source checkout: pip install '.[{spec}]')"


class MissingExtraError(ImportError):
    """``feature`` needs optional modules that are not installed.

    Attributes:
      feature: what was asked for (a command, module or function).
      modules: the missing import names, e.g. ``('torch', 'PIL')`` (the message
        names their distributions: ``torch, pillow``).
      extras: the extras that install them, e.g. ``('torch',)``.
    """

    def __init__(self, feature: str, modules: Iterable[str], extras: Iterable[str], detail: str = ""):
        self.feature = feature
        self.modules = tuple(modules)
        self.extras = tuple(sorted(set(extras), key=lambda e: (_EXTRA_ORDER + (e,)).index(e)))
        names = ", ".join(_DISTRIBUTION.get(m, m) for m in self.modules)
        quoted = ", ".join(f"'{e}'" for e in self.extras)
        plural = "s" if len(self.extras) > 1 else ""
        if detail:
            state = f"cannot be imported ({' '.join(detail.split())})"
        else:
            state = "is not installed" if len(self.modules) == 1 else "are not installed"
        message = (f"{feature} needs {names} (optional extra{plural} {quoted}), which {state}; "
                   f"install with: {install_command(self.extras)}")
        super().__init__(message, name=self.modules[0] if self.modules else None)


def _try_import(module: str) -> tuple[ModuleType | None, str | None, str]:
    """Import ``module``; on failure return the missing top-level name and a
    detail when the failure is not simply that name being absent."""
    try:
        return importlib.import_module(module), None, ""
    except ImportError as err:
        top = module.partition(".")[0]
        absent = (err.name or "").partition(".")[0]
        if isinstance(err, ModuleNotFoundError) and absent in EXTRA_OF:
            return None, absent, ""
        return None, top, f"{type(err).__name__}: {err}"


def require(module: str, extra: str | None = None, *, feature: str) -> ModuleType:
    """Import and return ``module``, or raise :class:`MissingExtraError`.

    Args:
      module: dotted import name, e.g. ``'flax.linen'``.
      extra: the extra that installs it (default: :data:`EXTRA_OF` of its
        top-level package).
      feature: what needs it, for the message (``'jaxfactor demo'``).
    """
    mod, missing, detail = _try_import(module)
    if mod is None:
        raise MissingExtraError(feature, [missing], [extra or EXTRA_OF[missing]], detail)
    return mod


def require_all(modules: Iterable[str], *, feature: str) -> None:
    """Import every module in ``modules``; raise one :class:`MissingExtraError`
    that names all the missing ones and their extras."""
    missing, details = [], []
    for module in modules:
        mod, name, detail = _try_import(module)
        if mod is None and name not in missing:
            missing.append(name)
            details += [detail] if detail else []
    if missing:
        raise MissingExtraError(feature, missing, [EXTRA_OF[m] for m in missing], "; ".join(details))


if __name__ == "__main__":
    print(" ".join(TORCH_PIN))
