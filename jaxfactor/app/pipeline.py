"""From a generator to directions, edits and scores: the steps the CLI runs.

This is the top layer: it imports the PyTorch bridge (lazily) and the
engines. Each step is an ordinary function so that scripts can call them too.
"""
from __future__ import annotations

import importlib
import importlib.util
import numbers
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, NamedTuple

import numpy as np

from .._policy import materialize_stream

METHODS = ("pca", "ica", "sca", "sefa")


class PipelineError(RuntimeError):
    """A user-facing failure (bad module path, layer, weights, ...)."""


# --------------------------------------------------------------- progress


@contextmanager
def progress_bar(total: int, desc: str, enabled: bool = True):
    """A tqdm progress bar when tqdm is installed and ``enabled``, else a
    no-op; yields ``update(n)``."""
    bar = None
    if enabled:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)
        except ImportError:  # pragma: no cover - tqdm is in the demo extra
            bar = None
    try:
        yield (bar.update if bar is not None else (lambda n=1: None))
    finally:
        if bar is not None:
            bar.close()


class ProgressSource:
    """Wrap a row source so every ``read`` advances a progress callback."""

    def __init__(self, source, update: Callable[[int], None]):
        self._source, self._update = source, update
        self.n_samples, self.n_features, self.dtype = source.n_samples, source.n_features, source.dtype

    def read(self, start, stop):
        rows = self._source.read(start, stop)
        self._update(stop - start)
        return rows

    def blocks(self, block_rows, start=0, stop=None):
        stop = self.n_samples if stop is None else stop
        for lo in range(start, stop, block_rows):
            yield self.read(lo, min(lo + block_rows, stop))

    def __getattr__(self, name):
        return getattr(self._source, name)


# --------------------------------------------------------------- generators


#: Short names of the shipped generators, accepted wherever a generator spec is.
BUILTIN_GENERATORS = {
    "builtin:testbed": "bridges.builtin:load_testbed_generator",
    "builtin:digits": "bridges.builtin:load_builtin_generator",
}


def load_generator(spec: str, **kwargs):
    """Call a user factory named ``"package.module:function"`` or
    ``"path/to/file.py:function"``, or a shipped generator by its short name
    (:data:`BUILTIN_GENERATORS`: ``"builtin:testbed"``, ``"builtin:digits"``).

    The factory returns an ``nn.Module``, a ``bridges`` latent adapter, or a
    ``(module, adapter)`` pair; the adapter is returned (built with
    ``bridges.generators.as_adapter`` when only a module is given).

    Raises:
      PipelineError: with what went wrong (missing module, attribute, or a
        factory that returned something else).
    """
    from bridges.generators import LatentAdapter, as_adapter

    spec = BUILTIN_GENERATORS.get(spec, spec)
    if ":" not in spec:
        raise PipelineError(f"--generator must look like 'package.module:factory' or 'file.py:factory', got {spec!r}")
    mod_name, func_name = spec.rsplit(":", 1)
    try:
        if mod_name.endswith(".py") or os.path.sep in mod_name:
            if not os.path.exists(mod_name):
                raise PipelineError(f"generator file {mod_name!r} does not exist")
            module_spec = importlib.util.spec_from_file_location("_jaxfactor_user_generator", mod_name)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
    except ModuleNotFoundError as err:
        raise PipelineError(f"cannot import generator module {mod_name!r}: {err}") from err
    factory = getattr(module, func_name, None)
    if factory is None or not callable(factory):
        public = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
        raise PipelineError(f"{mod_name!r} has no callable {func_name!r}; callables there: {', '.join(public)}")
    out = factory(**kwargs)
    if isinstance(out, tuple) and len(out) == 2:
        out = out[1]
    if isinstance(out, LatentAdapter):
        return out
    try:
        return as_adapter(out)
    except TypeError as err:
        raise PipelineError(f"factory {spec!r} returned {type(out).__name__}; expected an nn.Module, "
                            f"a LatentAdapter or (module, adapter)") from err


# --------------------------------------------------------------- factorize


def make_estimator(method: str, n_components: int, *, random_state: int = 0, **params):
    """The estimator for ``method`` in :data:`METHODS` (not SeFa, which needs weights)."""
    from .. import FastICA, PCA, SCA

    if method == "pca":
        return PCA(n_components, random_state=random_state, **params)
    if method == "ica":
        return FastICA(n_components, random_state=random_state, **params)
    if method == "sca":
        return SCA(n_components, random_state=random_state, **params)
    raise PipelineError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def feature_directions(estimator) -> np.ndarray:
    """Unit-norm ``(k, p)`` feature-space directions of a fitted estimator:
    PCA/SCA loadings (normalised), ICA ``directions_`` (mixing columns)."""
    comps = getattr(estimator, "directions_", None)
    comps = np.asarray(estimator.components_ if comps is None else comps, np.float64)
    norms = np.linalg.norm(comps, axis=1, keepdims=True)
    return (comps / np.where(norms == 0, 1, norms)).astype(np.float32)


def _check_before_sampling(estimator, n_samples: int, n_features: int) -> None:
    """The checks ``fit`` would make that need no data: the hyper-parameters
    and an int ``n_components`` against the ``(n_samples, n_features)`` shape,
    so that a bad value fails before the generator runs.

    Raises:
      InvalidParameterError (a ``ValueError``): a bad hyper-parameter.
      ValueError: ``n_components`` larger than the data allow.
    """
    from .. import FastICA
    from .. import _params as P

    P.validate_params(estimator)
    k = estimator.n_components
    # FastICA whitens after centring, which removes one dimension
    limit = min(n_samples - isinstance(estimator, FastICA), n_features)
    if isinstance(k, numbers.Integral) and k > limit:
        raise ValueError(f"n_components={k} is more than {type(estimator).__name__} can find in "
                         f"{n_samples} samples of {n_features} features (at most {limit})")


class Discovery(NamedTuple):
    """What :func:`discover` found.

    Attributes:
      directions: ``(k, d)`` latent directions (unit norm).
      scales: ``(k,)`` the latent length of a one-standard-deviation edit:
        for directions lifted from a layer, the step that moves the
        component's score by one standard deviation; for directions found in
        the latent itself (``layer`` ``'z'``/``'w'``, and SeFa), the standard
        deviation of the latents projected on the direction.
      space: latent space of the directions (``'z'`` or ``'w'``).
      estimator: the fitted estimator.
      r2: ``(k,)`` lifting fit quality, or ``None`` when no lift was needed.
      seconds: wall time of factorization and lifting.
      convergence: JSON-able ``{'status', 'n_iter', 'message'}`` of an
        iterative fit (``status`` ``'converged'`` or ``'max_iter'``), or
        ``None`` for closed-form methods.
    """

    directions: np.ndarray
    scales: np.ndarray
    space: str
    estimator: Any
    r2: np.ndarray | None
    seconds: float
    convergence: dict | None = None


def projection_std(blocks, directions: np.ndarray) -> np.ndarray:
    """Standard deviation (``ddof=1``) of rows projected on unit ``directions``.

    Args:
      blocks: an iterable of ``(b, d)`` row blocks (the latents).
      directions: ``(k, d)`` unit-norm rows.

    Returns:
      ``(k,)`` float32: one-std lengths for :func:`bridges.render.edit`'s ``'std'`` units.
    """
    dirs = np.asarray(directions, np.float64)
    count, mean, m2 = 0, np.zeros(len(dirs)), np.zeros(len(dirs))
    for block in blocks:
        proj = np.asarray(block, np.float64) @ dirs.T
        b = proj.shape[0]
        if b == 0:
            continue
        bmean = proj.mean(axis=0)
        delta = bmean - mean
        total = count + b
        m2 += ((proj - bmean) ** 2).sum(axis=0) + delta ** 2 * count * b / total   # Chan et al.
        mean += delta * b / total
        count = total
    if count < 2:
        raise ValueError("the standard deviation of a projection needs at least 2 samples")
    return np.sqrt(m2 / (count - 1)).astype(np.float32)


def _fit_reporting(est, data) -> dict | None:
    """``est.fit(data)`` with its ConvergenceWarning caught, returned as a record
    (reported once, by the caller) instead of printed between progress bars."""
    import warnings

    from .._validation import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        est.fit(data)
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    status = getattr(est, "status_", None)
    if status is None:
        return None
    return {"status": str(status), "n_iter": int(getattr(est, "n_iter_", 0)),
            "message": messages[-1] if messages else None}


def discover(adapter, layer: str, method: str, n_components: int, *, n_samples: int,
             seed: int = 0, batch_size: int | None = None, pool: str | None = None, pool_size=None,
             space: str | None = None, sefa_weights=None, random_state: int = 0,
             show_progress: bool = True, estimator_params: dict | None = None,
             cache=None) -> Discovery:
    """Find ``n_components`` latent directions of ``adapter``'s generator.

    ``layer`` ``'z'``/``'w'`` factorizes the latent itself (StyleGAN's W, as in
    the papers); any other layer is streamed, factorized, and the component
    scores are lifted to the latent by least squares (GANSpace's recipe).
    ``method='sefa'`` needs ``sefa_weights`` (a list of ``(C_l, d)`` weight
    matrices) and samples nothing. ``cache`` (a ``.npy`` path or a directory)
    keeps the streamed activations on disk (:class:`jaxfactor.sources.CachedSource`),
    so a multi-pass fit and the lift run the generator once.
    """
    from bridges.activations import ActivationStream

    from .. import SeFa
    from ..lifting import lift, lift_directions

    t0 = time.perf_counter()
    if method == "sefa":
        if not sefa_weights:
            raise PipelineError("method 'sefa' needs the latent-to-feature weight matrices (--sefa-weights)")
        sefa = SeFa(n_components).fit(sefa_weights)
        dirs = np.asarray(sefa.components_, np.float32)
        sp = space or ("w" if "w" in getattr(adapter, "spaces", ()) else "z")
        codes = ActivationStream(latent=adapter, layer=sp, n_samples=n_samples,
                                 batch_size=batch_size, seed=seed)
        scales = projection_std(codes.blocks(codes.batch_size * 4), dirs)
        return Discovery(dirs, scales, sp, sefa, None, time.perf_counter() - t0)
    stream = ActivationStream(latent=adapter, layer=layer, n_samples=n_samples, batch_size=batch_size,
                              seed=seed, pool=pool, pool_size=pool_size,
                              cache=None if layer in ("z", "w") else cache)
    est = make_estimator(method, n_components, random_state=random_state, **(estimator_params or {}))
    _check_before_sampling(est, n_samples, stream.n_features)
    x = None
    with progress_bar(n_samples, f"{method}: reading {layer}", show_progress) as update:
        if not materialize_stream(method, stream.n_features):
            est.set_params(solver="streaming")
            convergence = _fit_reporting(est, ProgressSource(stream, update))
        else:
            x = np.concatenate([np.asarray(b) for b in
                                 ProgressSource(stream, update).blocks(stream.batch_size * 4)])
            convergence = _fit_reporting(est, x)
    if layer in ("z", "w"):
        dirs = feature_directions(est)
        scales = projection_std([x] if x is not None else stream.blocks(stream.batch_size * 4),
                                dirs)
        return Discovery(dirs, scales, layer, est, None, time.perf_counter() - t0, convergence)
    sp = space or ("w" if "w" in adapter.latent_names else "z")
    if x is not None:
        # the features are already in memory: regress on the latents of the same
        # rows (regenerated from their indices) instead of re-running the generator
        latents = np.asarray(stream.latents(0, n_samples)[sp])
        lifted = lift_directions(latents, est.transform(x))
    else:
        with progress_bar(n_samples, f"{method}: lifting to {sp}", show_progress) as update:
            lifted = lift(ProgressSource(stream, update), est, space=sp)
    d = np.asarray(lifted.directions, np.float64)
    norms = np.linalg.norm(d, axis=1)
    unit = (d / np.where(norms[:, None] == 0, 1, norms[:, None])).astype(np.float32)
    return Discovery(unit, norms.astype(np.float32), sp, est, np.asarray(lifted.r2),
                     time.perf_counter() - t0, convergence)
