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


# --------------------------------------------------------------- one pass, many fits


class LayerSample(NamedTuple):
    """The rows of one layer, read into memory by one pass of the generator.

    Attributes:
      layer: the layer's name (``'z'``/``'w'``: the latent itself).
      features: ``(n, p)`` float32 rows (flattened, pooled when asked).
      latents: ``(n, d)`` float32 latents of ``space`` of the same rows (the
        features themselves when ``layer`` is the latent).
      space: ``'z'`` or ``'w'``: where the directions of this layer live.
      seconds: wall time of the pass.
    """

    layer: str
    features: np.ndarray
    latents: np.ndarray
    space: str
    seconds: float


def sample_layer(adapter, layer: str, *, n_samples: int, seed: int = 0,
                 batch_size: int | None = None, pool: str | None = None, pool_size=None,
                 space: str | None = None, show_progress: bool = True) -> LayerSample:
    """Read ``n_samples`` rows of ``layer`` (the same rows :func:`discover` streams) into memory.

    Args:
      adapter: a ``bridges`` latent adapter.
      layer: a module name of the generator, or ``'z'``/``'w'``.
      n_samples, seed, batch_size, pool, pool_size: as for
        :class:`bridges.activations.ActivationStream`.
      space: latent space of the lift (default ``'w'`` when the adapter has it).

    Returns:
      :class:`LayerSample`.
    """
    from bridges.activations import ActivationStream

    t0 = time.perf_counter()
    stream = ActivationStream(latent=adapter, layer=layer, n_samples=n_samples,
                              batch_size=batch_size, seed=seed, pool=pool, pool_size=pool_size)
    with progress_bar(n_samples, f"reading {layer}", show_progress) as update:
        x = np.concatenate([np.asarray(b, np.float32) for b in
                            ProgressSource(stream, update).blocks(stream.batch_size * 4)])
    if layer in ("z", "w"):
        return LayerSample(layer, x, x, layer, time.perf_counter() - t0)
    sp = space or ("w" if "w" in adapter.latent_names else "z")
    latents = np.asarray(stream.latents(0, n_samples)[sp], np.float32)
    return LayerSample(layer, x, latents, sp, time.perf_counter() - t0)


def _sign_by_largest(directions: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm with their largest-magnitude entry positive."""
    d = np.asarray(directions, np.float64)
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-300)
    signs = np.sign(d[np.arange(d.shape[0]), np.argmax(np.abs(d), axis=1)])
    return (d * np.where(signs == 0, 1.0, signs)[:, None]).astype(np.float32)


def discover_at_layer(sample: LayerSample, requests, *, random_state: int = 0,
                      estimator_params: dict | None = None) -> dict:
    """Every ``(method, k)`` of ``requests`` on one in-memory :class:`LayerSample`.

    One PCA, of the largest ``k`` that any PCA or FastICA request asks for,
    serves them all: a PCA request takes its first ``k`` components (the
    leading ``k`` principal axes do not depend on how many more are computed:
    identical with the exact solver, within the randomized solver's accuracy,
    which only improves with the extra columns); a FastICA request runs on the
    first ``k`` PCA scores, since FastICA's whitening *is* the projection on
    the top ``k`` principal axes scaled to unit variance (Hyvarinen & Oja
    2000, sec. 5.2), so the separate whitening pass over the ``p`` features is
    the same work done again. SCA fits the features itself. Directions are
    then lifted to the latent by least squares (layers) or mapped back from
    the principal axes (the latent itself), as :func:`discover` does.

    Args:
      sample: the layer's rows and latents.
      requests: ``(method, k)`` pairs, ``method`` in ``'pca'``, ``'ica'``, ``'sca'``.
      random_state: seed of every estimator.
      estimator_params: ``{method: {param: value}}`` passed to the estimators.

    Returns:
      ``{(method, k): Discovery}``. A PCA request's ``estimator`` is the shared
      PCA (it may hold more than ``k`` components; the first ``k`` are the
      request's); a FastICA request's is the FastICA fitted on the scores
      (its ``components_`` act on the ``k`` PCA scores), and its ``seconds``
      exclude the shared PCA, which a PCA request of the layer is charged
      with (or the first FastICA request when there is none).

    Raises:
      PipelineError: an unknown method. ValueError: a count the data cannot give.
    """
    from ..lifting import lift_directions

    params = estimator_params or {}
    requests = [(str(m), int(k)) for m, k in requests]
    for method, _ in requests:
        if method not in ("pca", "ica", "sca"):
            raise PipelineError(f"discover_at_layer fits 'pca', 'ica' or 'sca', not {method!r}")
    x, latents = sample.features, sample.latents
    n, p = x.shape
    for method, k in requests:
        _check_before_sampling(make_estimator(method, k, random_state=random_state,
                                              **params.get(method, {})), n, p)
    in_latent = sample.layer in ("z", "w")

    def finish(est, scores, axes, seconds, convergence):
        """Directions from ``scores`` (n, k) whose unit feature-space axes are the rows of ``axes``."""
        t0 = time.perf_counter()
        if in_latent:
            dirs = np.asarray(axes, np.float32)
            scales = projection_std([latents], dirs)
            return Discovery(dirs, scales, sample.space, est, None,
                             seconds + time.perf_counter() - t0, convergence)
        lifted = lift_directions(latents, scores)
        d = np.asarray(lifted.directions, np.float64)
        norms = np.linalg.norm(d, axis=1)
        unit = (d / np.where(norms[:, None] == 0, 1, norms[:, None])).astype(np.float32)
        return Discovery(unit, norms.astype(np.float32), sample.space, est,
                         np.asarray(lifted.r2), seconds + time.perf_counter() - t0, convergence)

    out = {}
    widest = max([k for m, k in requests if m in ("pca", "ica")], default=0)
    pca_seconds = 0.0
    if widest:
        t0 = time.perf_counter()
        pca = make_estimator("pca", widest, random_state=random_state, **params.get("pca", {}))
        _fit_reporting(pca, x)
        scores = np.asarray(pca.transform(x), np.float32)
        components = np.asarray(pca.components_, np.float64)
        pca_seconds = time.perf_counter() - t0
    charged = any(m == "pca" for m, _ in requests)
    for method, k in requests:
        t0 = time.perf_counter()
        if method == "pca":
            out[(method, k)] = finish(pca, scores[:, :k], feature_directions(pca)[:k], pca_seconds,
                                      None)
        elif method == "ica":
            est = make_estimator("ica", k, random_state=random_state, **params.get("ica", {}))
            convergence = _fit_reporting(est, scores[:, :k])
            sources = np.asarray(est.transform(scores[:, :k]), np.float32)
            # feature-space mixing: x - mean ~ scores_k V_k = sources A^T V_k; FastICA's
            # sign rule for directions_ (largest-magnitude entry positive)
            axes = _sign_by_largest(np.asarray(est.mixing_, np.float64).T @ components[:k])
            extra = 0.0 if charged else pca_seconds
            charged = True
            out[(method, k)] = finish(est, sources, axes, time.perf_counter() - t0 + extra,
                                      convergence)
        else:
            est = make_estimator("sca", k, random_state=random_state, **params.get("sca", {}))
            convergence = _fit_reporting(est, x)
            out[(method, k)] = finish(est, np.asarray(est.transform(x), np.float32),
                                      feature_directions(est), time.perf_counter() - t0,
                                      convergence)
    return out
