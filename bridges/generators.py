"""Latent adapters: how a PyTorch generator turns latents into images.

A :class:`LatentAdapter` wraps a user's ``nn.Module`` and says

* what a latent is (``z_dim``, and the shape the module wants it in),
* which latent spaces can be edited (``spaces``: ``'z'``; ``'w'`` and
  ``'w+'`` for generators with a mapping network),
* how to run the generator from a latent, and from an edited latent.

Three adapters cover the common structures:

* :class:`PlainAdapter` -- a module ``G(z) -> image`` (DCGAN, a toy
  generator, anything with one latent input).
* :class:`FastGANAdapter` -- FastGAN (Liu et al. 2021): ``z -> init`` (a 4x4
  transposed convolution, batch norm and GLU giving ``C x 4 x 4``; 1024 x 4 x
  4 = 16384 features at full size) ``-> ...``; the default layer to factorize
  is ``'init'``.
* :class:`StyleGANAdapter` -- StyleGAN2-style ``mapping(z) -> w`` and
  ``synthesis(ws)``; :meth:`StyleGANAdapter.from_stylegan2_ada` wraps an
  official StyleGAN2-ADA / StyleGAN3 ``G`` (``G.mapping(z, c, ...)``,
  ``G.synthesis(ws, noise_mode='const')``). Factorizing W directly (as the
  papers do for StyleGAN2) is ``ActivationStream(..., layer='w')``; edits on a
  W+ layer range are ``space='w+', layers=range(a, b)``.

Latents are drawn per sample index by :func:`sample_z`, so every pass of a
multi-pass algorithm, and every batch size, sees the same latents. Images and
features are then identical between passes of one batch size; across batch
sizes they may differ in the last bits (PyTorch's CPU convolutions choose
kernels by batch shape), so the renderers batch an edit exactly as the plain
render they are compared with. Renders are deterministic per latent when the
generator is: StyleGAN2-ADA with ``noise_mode='const'``, FastGAN through
:class:`FastGANAdapter` (its ``noise_mode``).

Wrapping your own checkpoint (nothing is downloaded; load it with the code
that trained it)::

    # StyleGAN2-ADA (NVlabs/stylegan2-ada-pytorch on sys.path)
    import pickle, dnnlib, legacy
    with dnnlib.util.open_url("network-snapshot.pkl") as f:
        G = legacy.load_network_pkl(f)["G_ema"].eval()
    adapter = StyleGANAdapter.from_stylegan2_ada(G, truncation_psi=1.0)

    # FastGAN (odegeasslbc/FastGAN-pytorch models.py on sys.path): the EMA
    # weights, from train.py's all_N.pth (or models/N.pth), either key layout
    from models import Generator
    adapter = FastGANAdapter.from_checkpoint(
        "all_50000.pth", lambda: Generator(ngf=64, nz=256, im_size=1024))

Both pickles and checkpoints can run code when loaded: load only files you
trust (``torch.load(..., weights_only=True)`` where the format allows).
"""
from __future__ import annotations

import contextlib
import inspect
import os
import zlib
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "sample_z",
    "describe_sampler",
    "LatentAdapter",
    "PlainAdapter",
    "FastGANAdapter",
    "StyleGANAdapter",
    "as_adapter",
    "load_fastgan_weights",
    "NOISE_MODES",
]

_GAMMA = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's Weyl increment (odd)
_STREAM_SALT = 0x5851F42D4C957F2D
_MIX = ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB), (31, None))
SAMPLER_VERSION = 1


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele, Lea & Flood 2014): a bijective 64-bit mixer."""
    for shift, mult in _MIX:
        x = x ^ (x >> np.uint64(shift))
        if mult is not None:
            x = x * np.uint64(mult)
    return x


def describe_sampler(seed: int, dim: int) -> dict:
    """A JSON-able, complete statement of how :func:`sample_z` draws row ``i``:
    enough to regenerate the latents without this package (all arithmetic on
    unsigned 64-bit integers, modulo ``2**64``)."""
    return {
        "name": "bridges.generators.sample_z", "version": SAMPLER_VERSION,
        "algorithm": "SplitMix64 counter hash + Box-Muller", "seed": int(seed), "dim": int(dim),
        "mix64": "for (shift, mult) in mix_steps: x ^= x >> shift; if mult: x *= mult",
        "mix_steps": [[shift, mult] for shift, mult in _MIX],
        "stream_key": "s = mix64(seed ^ stream_salt)", "stream_salt": _STREAM_SALT,
        "words_per_row": "w = 2 * ceil(dim / 2)",
        "word": "u64[i, c] = mix64(s + (i * w + c + 1) * gamma) for c in 0..w-1",
        "gamma": int(_GAMMA),
        "uniform": "u[i, c] = ((u64[i, c] >> 11) + 1) * 2**-53 in float64",
        "normal": "z[i, 2m] = sqrt(-2 ln u[i, 2m]) cos(2 pi u[i, 2m + 1]); "
                  "z[i, 2m + 1] = sqrt(-2 ln u[i, 2m]) sin(2 pi u[i, 2m + 1]); "
                  "keep the first dim columns, rounded to float32",
    }


def sample_z(seed: int, start: int, stop: int, dim: int) -> np.ndarray:
    """Standard normal latents for sample indices ``start:stop``.

    Counter-based: entry ``(i, j)`` is a Box-Muller transform of two SplitMix64
    hashes of ``(seed, i, j)`` (the 64-bit words ``mix(s + c * gamma)`` for
    the counters ``c`` of row ``i``, with ``s = mix(seed)``), computed in
    float64 and rounded to float32. Row ``i`` depends on ``(seed, i, dim)``
    alone, so any range, read in any batch size and on any device, gives the
    same rows -- what multi-pass algorithms need -- and no random state is
    kept anywhere.

    Args:
      seed: int in ``[0, 2**32)``; start, stop: row range (``0 <= start <= stop``).
      dim: latent width.

    Returns:
      ``(stop - start, dim)`` float32 numpy array.
    """
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed}")
    if not 0 <= start <= stop:
        raise ValueError(f"row range {start}:{stop} is invalid")
    half = (int(dim) + 1) // 2
    with np.errstate(over="ignore"):
        stream = _mix64(np.array([int(seed) ^ _STREAM_SALT], np.uint64))
        rows = np.arange(start, stop, dtype=np.uint64)[:, None]
        cols = np.arange(2 * half, dtype=np.uint64)[None, :]
        counters = rows * np.uint64(2 * half) + cols + np.uint64(1)
        words = _mix64(stream + counters * _GAMMA)
    u = ((words >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53  # in (0, 1]
    radius = np.sqrt(-2.0 * np.log(u[:, 0::2]))
    angle = (2.0 * np.pi) * u[:, 1::2]
    out = np.empty((stop - start, 2 * half), np.float64)
    out[:, 0::2] = radius * np.cos(angle)
    out[:, 1::2] = radius * np.sin(angle)
    return np.ascontiguousarray(out[:, :dim], dtype=np.float32)


def _module_device(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def _first(out, index: int):
    if isinstance(out, (list, tuple)):
        return out[index]
    if isinstance(out, dict):
        raise TypeError("the generator returned a dict; wrap it so that it returns a tensor")
    return out


def _as_step(step: torch.Tensor, n: int, dim: int, name: str) -> torch.Tensor:
    if step.ndim == 1:
        step = step[None, :].expand(n, -1)
    if tuple(step.shape) != (n, dim):
        raise ValueError(f"{name} step has shape {tuple(step.shape)}; expected ({dim},) or ({n}, {dim})")
    return step


class LatentAdapter:
    """How a generator turns latents into images (base class).

    Attributes:
      module: the wrapped ``nn.Module``; layer names are relative to it.
      z_dim: width of the flat latent ``z``.
      spaces: the latent spaces :meth:`forward_edited` accepts.
      latent_names: the latents :meth:`codes` returns (``'z'``, maybe ``'w'``).
      default_layer: the layer to factorize when none is given (or ``None``).
    """

    module: nn.Module
    z_dim: int
    spaces: tuple[str, ...] = ("z",)
    latent_names: tuple[str, ...] = ("z",)
    default_layer: str | None = None

    @property
    def device(self) -> torch.device:
        """Device of the module's first parameter (CPU when it has none)."""
        return _module_device(self.module)

    def codes(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Latents of each kind for ``z``: ``{'z': (n, z_dim)}`` (and ``'w'``)."""
        return {"z": z}

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(n, C, H, W)`` from flat latents ``z`` ``(n, z_dim)``."""
        raise NotImplementedError

    def forward_edited(self, z: torch.Tensor, step: torch.Tensor, space: str = "z",
                       layers: Sequence[int] | None = None) -> torch.Tensor:
        """Images from ``z`` moved by ``step`` in latent space ``space``.

        Args:
          z: ``(n, z_dim)``; step: ``(d,)`` or ``(n, d)`` with ``d`` the width
            of ``space``; space: one of :attr:`spaces`; layers: W+ layer
            indices (``space='w+'`` only).

        Returns:
          ``(n, C, H, W)`` images.
        """
        if space != "z":
            raise ValueError(f"{type(self).__name__} edits only space 'z', got {space!r}")
        if layers is not None:
            raise ValueError("layers applies to space='w+' only")
        return self._render_moved(z, z + _as_step(step, z.shape[0], self.z_dim, "z"))

    def _render_moved(self, base: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
        """Images of the latents ``moved``, edited from ``base`` (adapters whose
        renders depend on the unedited latent, such as FastGAN's noise, override it)."""
        return self.forward(moved)

    def describe(self) -> dict:
        """A JSON-able description for metadata (class names, sizes)."""
        return {"adapter": type(self).__name__, "module": type(self.module).__name__,
                "z_dim": int(self.z_dim), "spaces": list(self.spaces)}


class PlainAdapter(LatentAdapter):
    """A module ``G(z) -> image`` (or ``-> [image, ...]``).

    Args:
      module: the generator.
      z_dim: latent width (default: the module's ``z_dim`` / ``nz`` /
        ``latent_dim`` attribute).
      z_shape: the shape one latent takes when passed to the module
        (default ``(z_dim,)``; DCGAN-style generators want ``(z_dim, 1, 1)``).
      output_index: which element of a list/tuple output is the image.
    """

    def __init__(self, module: nn.Module, z_dim: int | None = None, *,
                 z_shape: Sequence[int] | None = None, output_index: int = 0):
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        if z_dim is None:
            z_dim = next((getattr(module, a) for a in ("z_dim", "nz", "latent_dim")
                          if isinstance(getattr(module, a, None), int)), None)
        if z_dim is None:
            raise ValueError(f"cannot tell the latent width of {type(module).__name__}; pass z_dim")
        self.z_dim = int(z_dim)
        self.z_shape = tuple(z_shape) if z_shape is not None else (self.z_dim,)
        if int(np.prod(self.z_shape)) != self.z_dim:
            raise ValueError(f"z_shape {self.z_shape} does not hold z_dim={self.z_dim} numbers")
        self.output_index = output_index

    def forward(self, z):
        return _first(self.module(z.reshape(z.shape[0], *self.z_shape)), self.output_index)


NOISE_MODES = ("const", "zero", "random")
"""Noise of FastGAN's noise injections: ``'const'`` (per-row noise, a function of
the row's unedited latent), ``'zero'`` (none) or ``'random'`` (a fresh
``torch.randn`` per call, upstream's behaviour; renders do not replay)."""


def _noise_modules(module: nn.Module) -> list[nn.Module]:
    """Noise-injection modules: a class named ``*Noise*`` whose ``forward``
    takes a ``noise`` argument (FastGAN's ``NoiseInjection(feat, noise=None)``)."""
    found = []
    for m in module.modules():
        if "noise" in type(m).__name__.lower() and m is not module:
            try:
                params = inspect.signature(m.forward).parameters
            except (TypeError, ValueError):
                continue
            if "noise" in params:
                found.append(m)
    return found


def _row_seeds(z: torch.Tensor) -> list[int]:
    """One 32-bit seed per row: a CRC of the row's float32 bytes (so it does not
    depend on the batch the row is in)."""
    rows = z.detach().to("cpu", torch.float32).contiguous().numpy()
    return [zlib.crc32(r.tobytes()) for r in rows]


def _const_noise(seeds: list[int], index: int, shape, device, dtype) -> torch.Tensor:
    """``(n, 1, H, W)`` standard normal noise, row ``i`` drawn by :func:`sample_z`
    from ``(seeds[i], index)`` alone."""
    _, _, h, w = shape
    rows = [sample_z(zlib.crc32(f"{s}:{index}".encode()), 0, 1, h * w) for s in seeds]
    return torch.from_numpy(np.concatenate(rows)).reshape(len(seeds), 1, h, w).to(device, dtype)


def _strip_prefix(state: dict, prefix: str) -> dict:
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def _load_state(G: nn.Module, state: dict, source: str) -> str:
    """Load a state dict as saved by ``G`` itself or by ``nn.DataParallel(G)``
    (keys prefixed ``module.``); returns the layout that fitted."""
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ValueError(f"{source}: expected a state dict (names -> tensors), got {type(state).__name__}")
    own_state = G.state_dict()
    own = set(own_state)
    for layout, candidate in (("plain", state), ("DataParallel", _strip_prefix(state, "module."))):
        if set(candidate) == own:
            wrong = [f"{k}: {tuple(v.shape)} in the file, {tuple(own_state[k].shape)} in the model"
                     for k, v in candidate.items()
                     if tuple(getattr(v, "shape", ())) != tuple(own_state[k].shape)]
            if wrong:
                raise ValueError(f"{source}: {len(wrong)} tensors have other shapes than "
                                 f"{type(G).__name__}'s (e.g. {'; '.join(wrong[:3])}); is the "
                                 f"generator built with the checkpoint's ngf / nz / im_size?")
            G.load_state_dict(candidate, strict=True)
            return layout
    candidate = _strip_prefix(state, "module.")
    missing, unexpected = sorted(own - set(candidate)), sorted(set(candidate) - own)
    raise ValueError(
        f"{source}: the keys fit {type(G).__name__} neither as saved nor with the DataParallel "
        f"prefix 'module.' removed: {len(missing)} missing (e.g. {missing[:4]}), "
        f"{len(unexpected)} unexpected (e.g. {unexpected[:4]}); is the generator built with "
        f"the checkpoint's ngf / nz / im_size?")


def _load_parameter_list(G: nn.Module, params, source: str) -> None:
    """Copy ``params`` (tensors in ``G.parameters()`` order, as FastGAN's
    ``copy_G_params`` saves its EMA) into ``G``."""
    own = list(G.parameters())
    params = list(params)
    if len(params) != len(own):
        raise ValueError(f"{source}: 'g_ema' holds {len(params)} tensors; {type(G).__name__} has "
                         f"{len(own)} parameters")
    bad = [i for i, (a, b) in enumerate(zip(own, params))
           if not isinstance(b, torch.Tensor) or tuple(a.shape) != tuple(b.shape)]
    if bad:
        i = bad[0]
        got = tuple(params[i].shape) if isinstance(params[i], torch.Tensor) else type(params[i]).__name__
        raise ValueError(f"{source}: 'g_ema' entry {i} is {got}, parameter {i} of "
                         f"{type(G).__name__} is {tuple(own[i].shape)} ({len(bad)} mismatches)")
    with torch.no_grad():
        for a, b in zip(own, params):
            a.copy_(b)


def load_fastgan_weights(G: nn.Module, checkpoint, *, ema: bool = True, source: str = "checkpoint") -> dict:
    """Load FastGAN weights into ``G`` from any file upstream's ``train.py`` writes.

    Layouts handled:

    * ``all_N.pth``: ``{'g': state dict, 'd': ..., 'g_ema': [tensors], 'opt_g': ...}``
      -- ``'g'`` is the raw generator, ``'g_ema'`` its exponential moving average
      as a list of parameters in ``G.parameters()`` order (buffers such as batch
      norm statistics and spectral-norm vectors come from ``'g'``);
    * ``models/N.pth``: ``{'g': state dict, 'd': ...}`` whose ``'g'`` already holds
      the EMA weights (upstream loads them before saving);
    * a bare state dict.

    In each, keys saved from ``nn.DataParallel`` (prefixed ``module.``, as
    upstream's training saves them) and plain keys are both accepted.

    Args:
      G: the generator, built with the checkpoint's sizes (``ngf``, ``nz``,
        ``im_size``); loaded in place.
      checkpoint: the loaded object (``torch.load(path, weights_only=True)``).
      ema: load the EMA weights (what upstream samples with). ``False`` loads
        the raw ``'g'`` of an ``all_N.pth``; a file holding only EMA weights
        then raises.
      source: name of the file for messages.

    Returns:
      A JSON-able record: ``{'weights': 'g_ema' | 'g' | 'state_dict', 'key_layout': ...}``.

    Raises:
      ValueError: the file is not one of the layouts, or its keys or shapes do
        not fit ``G`` (the message names the keys).
    """
    if isinstance(checkpoint, dict) and "g" in checkpoint:
        layout = _load_state(G, checkpoint["g"], f"{source}['g']")
        ema_part = checkpoint.get("g_ema")
        if ema_part is None:
            if not ema:
                raise ValueError(f"{source} holds one generator 'g' (upstream's models/N.pth, whose "
                                 f"'g' is the EMA); the raw weights are in all_N.pth")
            return {"weights": "g (EMA)", "key_layout": layout}
        if ema:
            if isinstance(ema_part, dict):
                _load_state(G, {**G.state_dict(), **_strip_prefix(ema_part, "module.")},
                            f"{source}['g_ema']")
            else:
                _load_parameter_list(G, ema_part, f"{source}['g_ema']")
            return {"weights": "g_ema", "key_layout": layout}
        return {"weights": "g", "key_layout": layout}
    if isinstance(checkpoint, dict) and checkpoint and all(isinstance(v, torch.Tensor)
                                                           for v in checkpoint.values()):
        return {"weights": "state_dict", "key_layout": _load_state(G, checkpoint, source)}
    keys = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
    raise ValueError(f"{source} is not a FastGAN checkpoint: expected a dict with 'g' (and maybe "
                     f"'g_ema') or a state dict; found {keys}")


class FastGANAdapter(PlainAdapter):
    """FastGAN's generator: ``z -> init (C x 4 x 4) -> ... -> [image, small image]``.

    The init layer (``module.init``: ConvTranspose2d 4x4, BatchNorm, GLU) is the
    layer the ICA/PCA paper factorizes (1024 x 4 x 4 = 16384 features at full
    size); it is :attr:`default_layer`. The image is the first output.

    FastGAN's noise injections draw ``torch.randn`` on every call, so a plain
    generator never renders the same ``z`` twice alike. The adapter controls
    them (``noise_mode``): with ``'const'`` (the default) each row's noise is a
    fixed function of the row's *unedited* latent -- a render replays exactly,
    and an edit of a row keeps that row's noise, so grid columns change by
    alpha only and ``alpha = 0`` reproduces the plain render.

    Args:
      module: the generator (put it in eval mode: its batch norms must use
        running statistics).
      z_dim: latent width (default: ``in_channels`` of the first
        ``ConvTranspose2d`` under ``module.init``).
      init_layer: the dotted name of the init layer.
      noise_mode: one of :data:`NOISE_MODES`.
    """

    default_layer = "init"

    def __init__(self, module: nn.Module, z_dim: int | None = None, *, init_layer: str = "init",
                 noise_mode: str = "const"):
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if z_dim is None:
            try:
                init = module.get_submodule(init_layer)
            except AttributeError as err:
                raise ValueError(f"{type(module).__name__} has no submodule {init_layer!r}; "
                                 f"pass init_layer or z_dim") from err
            conv = next((m for m in init.modules() if isinstance(m, nn.ConvTranspose2d)), None)
            if conv is None:
                raise ValueError(f"no ConvTranspose2d under {init_layer!r}; pass z_dim")
            z_dim = conv.in_channels
        super().__init__(module, z_dim, output_index=0)
        self.default_layer = init_layer
        self.noise_mode = noise_mode
        self.checkpoint: dict | None = None

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, generator_factory: Callable[[], nn.Module]
                        | nn.Module, *, ema: bool = True, map_location="cpu", **adapter_kwargs):
        """Build the generator and load an upstream FastGAN checkpoint into it.

        Args:
          path: ``all_N.pth`` or ``models/N.pth`` from upstream's ``train.py``,
            or a file holding a bare state dict (see :func:`load_fastgan_weights`).
          generator_factory: a callable returning the generator built with the
            checkpoint's sizes (``lambda: Generator(ngf=64, nz=256, im_size=1024)``),
            or the module itself.
          ema: load the EMA weights (default; what upstream samples with).
          map_location: passed to ``torch.load``.
          **adapter_kwargs: ``z_dim``, ``init_layer``, ``noise_mode``.

        Returns:
          A :class:`FastGANAdapter` on the generator in eval mode; its
          ``checkpoint`` attribute (and :meth:`describe`) records the file and
          which weights were loaded.
        """
        G = generator_factory if isinstance(generator_factory, nn.Module) else generator_factory()
        if not isinstance(G, nn.Module):
            raise TypeError(f"generator_factory returned {type(G).__name__}, not an nn.Module")
        name = os.fspath(path)
        ckpt = torch.load(name, map_location=map_location, weights_only=True)
        record = load_fastgan_weights(G, ckpt, ema=ema, source=os.path.basename(name))
        adapter = cls(G.eval(), **adapter_kwargs)
        adapter.checkpoint = {"path": os.path.abspath(name), **record}
        return adapter

    @contextlib.contextmanager
    def _noise(self, base: torch.Tensor):
        """Feed every noise injection its noise for rows whose unedited latents are ``base``."""
        if self.noise_mode == "random":
            yield
            return
        seeds = _row_seeds(base) if self.noise_mode == "const" else None
        handles = []

        def hook_for(index):
            def hook(module, args, kwargs):
                if len(args) > 1 or kwargs.get("noise") is not None:
                    return None
                feat = args[0]
                if seeds is None:
                    noise = feat.new_zeros((feat.shape[0], 1, *feat.shape[2:]))
                else:
                    noise = _const_noise(seeds, index, feat.shape, feat.device, feat.dtype)
                return args, {**kwargs, "noise": noise}
            return hook

        try:
            for i, m in enumerate(_noise_modules(self.module)):
                handles.append(m.register_forward_pre_hook(hook_for(i), with_kwargs=True))
            yield
        finally:
            for h in handles:
                h.remove()

    def forward(self, z):
        with self._noise(z):
            return super().forward(z)

    def _render_moved(self, base, moved):
        with self._noise(base):   # the row's noise follows its unedited latent
            return PlainAdapter.forward(self, moved)

    def describe(self):
        d = super().describe()
        d["noise_mode"] = self.noise_mode
        if self.checkpoint is not None:
            d["checkpoint"] = dict(self.checkpoint)
        return d


class StyleGANAdapter(LatentAdapter):
    """StyleGAN2-style generator: ``mapping(z) -> w``, ``synthesis(ws) -> image``.

    ``mapping`` may return ``(n, w_dim)`` or the broadcast ``(n, num_ws,
    w_dim)`` (then ``w = ws[:, 0]``). Edits: ``'z'`` moves ``z`` before the
    mapping; ``'w'`` moves ``w`` for every synthesis layer; ``'w+'`` moves the
    layers in ``layers`` only.

    Args:
      module: the generator (its submodules name the layers).
      mapping, synthesis: callables, or names of attributes of ``module``.
      z_dim, w_dim, num_ws: latent sizes.
      synthesis_kwargs: extra keyword arguments of every synthesis call.
    """

    spaces = ("z", "w", "w+")
    latent_names = ("z", "w")

    def __init__(self, module: nn.Module, *, z_dim: int, w_dim: int, num_ws: int,
                 mapping: str | Callable = "mapping", synthesis: str | Callable = "synthesis",
                 synthesis_kwargs: dict | None = None):
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.z_dim, self.w_dim, self.num_ws = int(z_dim), int(w_dim), int(num_ws)
        self._mapping = getattr(module, mapping) if isinstance(mapping, str) else mapping
        self._synthesis = getattr(module, synthesis) if isinstance(synthesis, str) else synthesis
        self.synthesis_kwargs = dict(synthesis_kwargs or {})
        self._device_kwargs: Callable[[torch.device], dict] | None = None

    @classmethod
    def from_stylegan2_ada(cls, G: nn.Module, *, truncation_psi: float = 1.0,
                           c: torch.Tensor | None = None, noise_mode: str = "const",
                           force_fp32: bool | None = None, fused_modconv: bool | None = None):
        """Wrap an NVlabs StyleGAN2-ADA / StyleGAN3 generator.

        Uses ``G.z_dim``, ``G.w_dim``, ``G.num_ws``, ``G.c_dim``; calls
        ``G.mapping(z, c, truncation_psi=...)`` and ``G.synthesis(ws,
        noise_mode=noise_mode, ...)`` (``'const'``: no per-call noise, so rows
        replay exactly).

        Mixed precision: upstream's checkpoints run their highest-resolution
        blocks in float16 (``num_fp16_res=4``), which CPUs emulate slowly (2
        images at 64 px: 80 s in fp16 against 0.4 s in fp32, measured on this
        project's 2-core machines). ``force_fp32=None`` forces float32 when the
        generator is on a CPU and keeps the checkpoint's precision elsewhere;
        ``fused_modconv=None`` turns upstream's fused modulated convolution off
        on CPU (a pass over 256 rows of ``synthesis.b16.conv0``: 6.4 s unfused
        against 13.2 s fused) and leaves upstream's choice elsewhere. Both are
        resolved per call, from the device of the latents, and are passed only
        to synthesis networks that take them (StyleGAN3 has no ``fused_modconv``).

        Args:
          G: the generator (e.g. ``G_ema`` from the network pickle).
          truncation_psi: truncation of ``w`` towards its mean.
          c: ``(c_dim,)`` class label for conditional models (zeros when
            ``None``).
          noise_mode: synthesis noise mode.
          force_fp32: ``None`` (float32 on CPU only), ``True`` or ``False``.
          fused_modconv: ``None`` (off on CPU, upstream's choice elsewhere),
            ``True`` or ``False``.
        """
        for a in ("z_dim", "w_dim", "num_ws", "mapping", "synthesis"):
            if not hasattr(G, a):
                raise ValueError(f"{type(G).__name__} has no attribute {a!r}: not a StyleGAN2-ADA generator")
        c_dim = int(getattr(G, "c_dim", 0))
        label = torch.zeros(c_dim) if c is None else torch.as_tensor(c, dtype=torch.float32).reshape(c_dim)

        def mapping(z):
            cz = label.to(z.device)[None, :].expand(z.shape[0], -1)
            return G.mapping(z, cz, truncation_psi=truncation_psi)

        adapter = cls(G, z_dim=G.z_dim, w_dim=G.w_dim, num_ws=G.num_ws, mapping=mapping,
                      synthesis="synthesis", synthesis_kwargs={"noise_mode": noise_mode})
        adapter.truncation_psi = truncation_psi
        options = _synthesis_options(G.synthesis)
        adapter.precision = {"force_fp32": force_fp32, "fused_modconv": fused_modconv,
                             "accepted": sorted(options & {"force_fp32", "fused_modconv"})}

        def device_kwargs(device: torch.device) -> dict:
            cpu = device.type == "cpu"
            kw = {"force_fp32": cpu if force_fp32 is None else bool(force_fp32)}
            fused = (False if cpu else None) if fused_modconv is None else bool(fused_modconv)
            if fused is not None:
                kw["fused_modconv"] = fused
            return {k: v for k, v in kw.items() if k in options}

        adapter._device_kwargs = device_kwargs
        return adapter

    def _ws(self, z):
        m = self._mapping(z)
        if m.ndim == 2:
            return m[:, None, :].expand(-1, self.num_ws, -1)
        return m

    def codes(self, z):
        return {"z": z, "w": self._ws(z)[:, 0]}

    def synthesize(self, ws: torch.Tensor) -> torch.Tensor:
        """Images from ``ws`` ``(n, num_ws, w_dim)``."""
        kwargs = dict(self.synthesis_kwargs)
        if self._device_kwargs is not None:
            kwargs.update(self._device_kwargs(ws.device))
        return _first(self._synthesis(ws, **kwargs), 0)

    def forward(self, z):
        return self.synthesize(self._ws(z))

    def forward_edited(self, z, step, space="z", layers=None):
        if space not in self.spaces:
            raise ValueError(f"space must be one of {self.spaces}, got {space!r}")
        if layers is not None and space != "w+":
            raise ValueError("layers applies to space='w+' only")
        n = z.shape[0]
        if space == "z":
            return self.forward(z + _as_step(step, n, self.z_dim, "z"))
        step = _as_step(step, n, self.w_dim, space)
        ws = self._ws(z).clone()
        if space == "w":
            ws = ws + step[:, None, :]
        else:
            idx = list(range(self.num_ws)) if layers is None else [int(i) for i in layers]
            bad = [i for i in idx if not 0 <= i < self.num_ws]
            if bad:
                raise ValueError(f"W+ layers {bad} out of range [0, {self.num_ws})")
            ws[:, idx] = ws[:, idx] + step[:, None, :]
        return self.synthesize(ws)

    def describe(self):
        d = super().describe()
        d.update(w_dim=self.w_dim, num_ws=self.num_ws)
        if hasattr(self, "truncation_psi"):
            d["truncation_psi"] = float(self.truncation_psi)
        d["noise_mode"] = self.synthesis_kwargs.get("noise_mode")
        if hasattr(self, "precision"):
            d["precision"] = dict(self.precision)
        return d


def _synthesis_options(synthesis) -> set[str]:
    """The keyword options a synthesis network's ``forward`` takes: its named
    parameters, plus upstream's pass-through ones (``**block_kwargs``) told
    apart by architecture: StyleGAN2-ADA (``block_resolutions``) takes
    ``force_fp32`` and ``fused_modconv``, StyleGAN3 (``layer_names``) ``force_fp32``."""
    try:
        params = inspect.signature(getattr(synthesis, "forward", synthesis)).parameters
    except (TypeError, ValueError):
        return set()
    names = {n for n, q in params.items() if q.kind not in (q.VAR_POSITIONAL, q.VAR_KEYWORD)}
    if any(q.kind == q.VAR_KEYWORD for q in params.values()):
        if hasattr(synthesis, "block_resolutions"):
            names |= {"force_fp32", "fused_modconv", "noise_mode"}
        elif hasattr(synthesis, "layer_names"):
            names |= {"force_fp32", "noise_mode"}
    return names


def as_adapter(G, z_dim: int | None = None) -> LatentAdapter:
    """``G`` as a :class:`LatentAdapter`.

    Adapters pass through; a module with ``mapping``, ``synthesis``, ``z_dim``,
    ``w_dim`` and ``num_ws`` is taken for StyleGAN2-ADA; a module with an
    ``init`` submodule holding a ``ConvTranspose2d`` for FastGAN; anything else
    for a plain ``G(z)`` module (``z_dim`` given or read from the module).
    """
    if isinstance(G, LatentAdapter):
        if z_dim is not None and z_dim != G.z_dim:
            raise ValueError(f"z_dim={z_dim} disagrees with the adapter's z_dim={G.z_dim}")
        return G
    if not isinstance(G, nn.Module):
        raise TypeError(f"G must be a torch.nn.Module or a LatentAdapter, got {type(G).__name__}")
    if all(hasattr(G, a) for a in ("mapping", "synthesis", "z_dim", "w_dim", "num_ws")):
        return StyleGANAdapter.from_stylegan2_ada(G)
    init = getattr(G, "init", None)
    if isinstance(init, nn.Module) and any(isinstance(m, nn.ConvTranspose2d) for m in init.modules()):
        return FastGANAdapter(G, z_dim)
    return PlainAdapter(G, z_dim)
