"""Activations of a generator layer as a replayable row source.

:class:`ActivationStream` turns ``(generator, layer, n_samples, seed)`` into a
:class:`jaxfactor.sources.RowSource`: row ``i`` is the flattened (optionally
pooled) output of ``layer`` when the generator runs on latent ``i``. Latents
are drawn per sample index (:func:`bridges.generators.sample_z`), so reading
rows ``a:b`` gives the same numbers in every pass and for every batch size;
the engines (``PCA(solver='streaming')``, ...) fit it without ever holding
the ``(n_samples, n_features)`` matrix. With ``cache=`` the rows are kept on
disk as the first pass computes them (:class:`jaxfactor.sources.CachedSource`),
so a multi-pass fit runs the generator once.

Capture uses a forward hook on the named module. When only features are
needed the hook raises a private exception right after the layer has run, so
the rest of the generator is skipped (the saving is measured in
``benchmarks/bench_stream.py``).
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
from typing import Sequence

import jax
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jaxfactor.sources import CachedSource, RowSource

from .dlpack import torch_to_jax
from .generators import LatentAdapter, as_adapter, describe_sampler, sample_z

__all__ = ["ActivationStream", "resolve_layer", "capture", "default_batch_size", "module_sha256",
           "BATCH_SIZES"]


class _StopForward(BaseException):
    """Raised by the capture hook to end the forward pass after the layer.

    A ``BaseException`` so that a model's own ``except Exception`` does not
    swallow it.
    """


BATCH_SIZES = {"cpu": 32}
"""Measured default batch sizes per device type (others: 256). On CPU, a pass over
256 rows of StyleGAN2-ADA's ``synthesis.b16.conv0`` took 13.2 s at 32 latents per
batch against 20.6 s at 256 (2-core x86-64): large batches leave the caches."""


def module_sha256(module: nn.Module) -> str:
    """sha256 (hex) of a module's state: every parameter and buffer, by name,
    shape, dtype and bytes (one tensor copied to the host at a time)."""
    h = hashlib.sha256()
    for name, value in module.state_dict().items():
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        else:  # extra state
            h.update(f"{name}:{value!r};".encode())
    return h.hexdigest()


def default_batch_size(device) -> int:
    """Latents per forward pass for a stream on ``device`` (:data:`BATCH_SIZES`)."""
    return BATCH_SIZES.get(torch.device(device).type, 256)


def resolve_layer(module: nn.Module, name: str) -> nn.Module:
    """The submodule of ``module`` with dotted name ``name``.

    Raises:
      ValueError: naming the closest matches and listing the available names.
    """
    modules = dict(module.named_modules())
    if name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=5)
    shown = names if len(names) <= 80 else names[:80] + [f"... ({len(names) - 80} more)"]
    hint = f" Did you mean {close}?" if close else ""
    raise ValueError(f"{type(module).__name__} has no layer named {name!r}.{hint} "
                     f"Available layers: {', '.join(shown)}")


@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    flags = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def _pool(x: torch.Tensor, pool: str | None, pool_size) -> torch.Tensor:
    if pool is None:
        return x
    if x.ndim != 4:
        raise ValueError(f"spatial pooling needs a (n, C, H, W) layer output, got shape {tuple(x.shape)}")
    return (F.adaptive_max_pool2d if pool == "max" else F.adaptive_avg_pool2d)(x, pool_size)


def _layer_output(adapter: LatentAdapter, layer: str, z: torch.Tensor, early_stop: bool,
                  output_index: int) -> torch.Tensor:
    """The raw output of ``layer`` (or latent ``layer``) for ``z``; call under
    inference mode with the module in eval mode."""
    if layer in adapter.latent_names:
        return adapter.codes(z)[layer]
    target = resolve_layer(adapter.module, layer)
    store = []

    def hook(mod, args, out):
        if store:
            return
        store.append(out[output_index] if isinstance(out, (tuple, list)) else out)
        if early_stop:
            raise _StopForward

    handle = target.register_forward_hook(hook)
    try:
        adapter.forward(z)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not store:
        raise RuntimeError(f"layer {layer!r} was not called during the generator's forward pass")
    if not isinstance(store[0], torch.Tensor):
        raise TypeError(f"layer {layer!r} returned {type(store[0]).__name__}, not a tensor; "
                        f"set output_index for tuple outputs")
    return store[0]


def capture(adapter: LatentAdapter, layer: str, z: torch.Tensor, *, pool: str | None = None,
            pool_size=None, early_stop: bool = True, output_index: int = 0) -> torch.Tensor:
    """Output of ``layer`` for latents ``z``, flattened per sample.

    Runs in ``torch.inference_mode`` with the module in eval mode (its modes
    are restored afterwards). ``layer`` is a dotted module name relative to
    ``adapter.module``, or one of ``adapter.latent_names`` (``'z'``, ``'w'``)
    to take the latent itself. A module called several times in one forward
    pass is captured at its first call.

    Args:
      adapter: the generator's :class:`~bridges.generators.LatentAdapter`.
      layer: the layer name.
      z: ``(n, z_dim)`` latents on the module's device.
      pool: ``None``, ``'max'`` or ``'avg'``: adaptive spatial pooling of a
        ``(n, C, H, W)`` output to ``pool_size``.
      pool_size: int or ``(h, w)``.
      early_stop: end the forward pass right after ``layer``.
      output_index: element to take when the layer returns a tuple/list.

    Returns:
      ``(n, p)`` float32 tensor, channel-major (``C, H, W`` order) per row.
    """
    with torch.inference_mode(), _eval_mode(adapter.module):
        out = _pool(_layer_output(adapter, layer, z, early_stop, output_index), pool, pool_size)
        return out.reshape(out.shape[0], -1).float()


class ActivationStream(RowSource):
    """Rows = flattened activations of ``layer`` on seeded, replayable latents.

    A :class:`jaxfactor.sources.RowSource`: ``n_samples``, ``n_features``,
    ``dtype`` (float32), ``read(start, stop) -> (stop - start, n_features)``
    ``jax.Array`` (handed over from torch through DLPack, zero-copy where the
    devices allow). Reading a range twice with the same ``batch_size`` gives
    identical rows. Across batch sizes the *latents* of a row are identical
    (:func:`~bridges.generators.sample_z` draws per index), but its features
    need not be bit for bit: PyTorch's CPU convolutions pick kernels by batch
    shape (StyleGAN2's differ by ~1.5e-6 relative between batch sizes).

    Args:
      G: the generator: an ``nn.Module`` (adapted with
        :func:`~bridges.generators.as_adapter`) or a
        :class:`~bridges.generators.LatentAdapter`.
      layer: dotted module name (relative to the module), or ``'z'`` / ``'w'``
        to stream the latents themselves (``'w'``: factorize StyleGAN's W
        directly). Default: the adapter's ``default_layer``.
      n_samples: rows.
      batch_size: latents per forward pass; ``None`` for :func:`default_batch_size`
        of the device (32 on CPU, 256 on accelerators).
      seed: latent seed (see :func:`~bridges.generators.sample_z`).
      pool: ``None``, ``'max'`` or ``'avg'`` spatial pooling to ``pool_size``.
      pool_size: int or ``(h, w)`` (required with ``pool``).
      device: where the latents go; must be the module's device (default).
      latent: a :class:`~bridges.generators.LatentAdapter` for ``G`` (when ``G``
        needs a non-default one).
      z_dim: latent width for a plain module that does not say it.
      early_stop: skip the layers after ``layer`` (same features, less work).
      output_index: element to take when the layer returns a tuple/list.
      cache: ``None`` (run the generator for every read), or where to keep the
        rows on disk: a ``.npy`` file path, or a directory (created if
        missing; any path not ending in ``.npy``), in which the file is
        ``activations-<fingerprint>.npy``, named from the fingerprint of
        :meth:`cache_description`. The first read of a row runs the
        generator and writes the row; later reads of it (later passes, later
        streams on the same cache) read the file and never run the generator
        (:class:`jaxfactor.sources.CachedSource`: atomic, resumable after a
        kill, memory one block). The file is validated against
        :meth:`cache_description` (``describe()`` plus ``output_index`` and a
        sha256 of the generator's parameters and buffers): a cache written
        for another generator, weights, layer, pooling, seed or size raises
        ``ValueError``. ``latents`` are never cached (they are cheap to
        regenerate); ``features(z)`` always runs the generator. Cached rows
        are those of the first pass's batching (rows of other batch sizes
        may differ in the last bits, see above).
      cache_overwrite: with ``cache``, discard a cache that does not match
        and rebuild it instead of raising.

    Attributes:
      adapter, layer, n_samples, n_features, dtype, feature_shape (the
      per-sample shape after pooling, before flattening), seed, batch_size,
      cache (the :class:`~jaxfactor.sources.CachedSource`, or ``None``),
      cache_path (its ``.npy`` file, or ``None``).
    """

    def __init__(self, G=None, layer: str | None = None, n_samples: int = 10000,
                 batch_size: int | None = None, seed: int = 0, *, pool: str | None = None,
                 pool_size: int | Sequence[int] | None = None, device=None,
                 latent: LatentAdapter | None = None, z_dim: int | None = None,
                 early_stop: bool = True, output_index: int = 0,
                 cache: str | os.PathLike | None = None, cache_overwrite: bool = False):
        if latent is not None:
            if not isinstance(latent, LatentAdapter):
                raise TypeError(f"latent must be a LatentAdapter, got {type(latent).__name__}")
            if G is not None and G is not latent and G is not latent.module:
                raise ValueError("latent wraps a different module than G")
            adapter = latent
        elif G is None:
            raise ValueError("pass a generator G (or latent=adapter)")
        else:
            adapter = as_adapter(G, z_dim)
        self.adapter = adapter
        layer = layer if layer is not None else adapter.default_layer
        if layer is None:
            raise ValueError(f"{type(adapter).__name__} has no default layer; pass layer=")
        if layer not in adapter.latent_names:
            resolve_layer(adapter.module, layer)
        self.layer = layer
        if int(n_samples) < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        if batch_size is None:
            batch_size = default_batch_size(adapter.device)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if pool not in (None, "max", "avg"):
            raise ValueError(f"pool must be None, 'max' or 'avg', got {pool!r}")
        if pool is not None and pool_size is None:
            raise ValueError("pool needs pool_size (an int or (h, w))")
        if pool is not None and layer in adapter.latent_names:
            raise ValueError(f"pooling does not apply to the latent {layer!r}")
        self.n_samples = int(n_samples)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {seed}")
        self.pool = pool
        self.pool_size = pool_size
        self.early_stop = bool(early_stop)
        self.output_index = int(output_index)
        module_device = adapter.device
        self.device = module_device if device is None else torch.device(device)
        if self.device.type != module_device.type or (
                self.device.index is not None and module_device.index is not None
                and self.device.index != module_device.index):
            raise ValueError(f"device={self.device} but the generator is on {module_device}; "
                             f"move it first (G.to({str(self.device)!r}))")
        self.dtype = np.dtype(np.float32)
        probe = self._capture_shape(self._z(0, 1))
        self.feature_shape = probe
        self.n_features = int(np.prod(probe))
        self.cache, self.cache_path = None, None
        if cache is not None:
            self._open_cache(cache, bool(cache_overwrite))

    # ------------------------------------------------------------- internals
    def _z(self, start, stop) -> torch.Tensor:
        return torch.from_numpy(sample_z(self.seed, start, stop, self.adapter.z_dim)).to(self.device)

    def _capture_shape(self, z):
        with torch.inference_mode(), _eval_mode(self.adapter.module):
            out = _layer_output(self.adapter, self.layer, z, True, self.output_index)
            return tuple(_pool(out, self.pool, self.pool_size).shape[1:])

    def _check_range(self, start, stop):
        if not 0 <= start <= stop <= self.n_samples:
            raise IndexError(f"rows {start}:{stop} outside [0, {self.n_samples}]")

    def _open_cache(self, cache, overwrite: bool) -> None:
        description = self.cache_description()
        path = os.fspath(cache)
        if os.path.isdir(path) or not path.endswith(".npy"):
            os.makedirs(path, exist_ok=True)
            path = os.path.join(path, f"activations-{CachedSource.fingerprint_of(description)[:20]}.npy")
        try:
            self.cache = CachedSource(_Generated(self), path, description=description,
                                      overwrite=overwrite)
        except ValueError as err:
            raise ValueError(f"{err} (ActivationStream: cache_overwrite=True)") from err
        self.cache_path = path

    def _generate(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` computed by the generator (never the cache)."""
        parts = []
        for lo in range(start, stop, self.batch_size):
            hi = min(lo + self.batch_size, stop)
            parts.append(capture(self.adapter, self.layer, self._z(lo, hi), pool=self.pool,
                                 pool_size=self.pool_size, early_stop=self.early_stop,
                                 output_index=self.output_index))
        if not parts:
            return torch.empty((0, self.n_features), device=self.device)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    # ---------------------------------------------------------------- public
    def features(self, z) -> torch.Tensor:
        """Features of given latents (not indices): ``(n, n_features)`` float32
        torch tensor on the stream's device.

        Args:
          z: ``(n, z_dim)`` numpy array or tensor.
        """
        z = torch.as_tensor(np.asarray(z, np.float32) if not isinstance(z, torch.Tensor) else z,
                            dtype=torch.float32).to(self.device)
        parts = [capture(self.adapter, self.layer, z[lo:lo + self.batch_size], pool=self.pool,
                         pool_size=self.pool_size, early_stop=self.early_stop,
                         output_index=self.output_index)
                 for lo in range(0, z.shape[0], self.batch_size)]
        return torch.cat(parts) if parts else torch.empty((0, self.n_features))

    def read_torch(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` as a float32 torch tensor on the stream's device
        (from the cache where it holds them)."""
        self._check_range(start, stop)
        if self.cache is None:
            return self._generate(start, stop)
        rows = self.cache.read(start, stop)
        if not rows.flags.writeable:
            rows = rows.copy()
        return torch.from_numpy(rows).to(self.device)

    def read(self, start: int, stop: int) -> jax.Array:
        """Rows ``start:stop``: ``(stop - start, n_features)`` float32 ``jax.Array``."""
        return torch_to_jax(self.read_torch(start, stop))

    def latents(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The latents of rows ``start:stop``, regenerated from the seed.

        Returns:
          ``{'z': (n, z_dim)}`` plus ``'w': (n, w_dim)`` when the generator has
          a mapping network; float32 numpy arrays.
        """
        self._check_range(start, stop)
        z = self._z(start, stop)
        if self.adapter.latent_names == ("z",):
            return {"z": z.cpu().numpy()}
        out = {name: [] for name in self.adapter.latent_names}
        with torch.inference_mode(), _eval_mode(self.adapter.module):
            for lo in range(0, z.shape[0], self.batch_size):
                codes = self.adapter.codes(z[lo:lo + self.batch_size])
                for name in out:
                    out[name].append(codes[name].float().cpu())
        return {name: (torch.cat(v) if v else torch.empty(0, 0)).numpy() for name, v in out.items()}

    def read_with_latents(self, start: int, stop: int):
        """``(read(start, stop), latents(start, stop))``."""
        return self.read(start, stop), self.latents(start, stop)

    def describe(self) -> dict:
        """JSON-able provenance: generator, layer, pooling, seed and sampler."""
        return {"generator": self.adapter.describe(), "layer": self.layer,
                "pool": self.pool, "pool_size": self.pool_size if self.pool_size is None
                else list(np.atleast_1d(self.pool_size).tolist()),
                "feature_shape": list(self.feature_shape), "n_samples": self.n_samples,
                "seed": self.seed,
                "sampler": describe_sampler(self.seed, self.adapter.z_dim)}

    def cache_description(self) -> dict:
        """What a cache of this stream's rows is validated against:
        :meth:`describe` plus ``output_index`` and ``weights_sha256``
        (:func:`module_sha256` of the generator: a retrained or reloaded
        generator with other weights never reads an old cache)."""
        return {"stream": self.describe(), "output_index": self.output_index,
                "weights_sha256": module_sha256(self.adapter.module)}

    def __repr__(self):
        return (f"ActivationStream(layer={self.layer!r}, n_samples={self.n_samples}, "
                f"n_features={self.n_features}, feature_shape={self.feature_shape}, "
                f"seed={self.seed}, batch_size={self.batch_size}, pool={self.pool!r})")


class _Generated(RowSource):
    """The rows of an :class:`ActivationStream` computed by its generator,
    never its cache: what the stream's :class:`~jaxfactor.sources.CachedSource`
    wraps. Reads return torch tensors on the stream's device."""

    def __init__(self, stream: ActivationStream):
        self._stream = stream
        self.n_samples, self.n_features, self.dtype = stream.n_samples, stream.n_features, stream.dtype

    def read(self, start, stop):
        return self._stream._generate(start, stop)

    def __repr__(self):
        return f"generated({self._stream!r})"
