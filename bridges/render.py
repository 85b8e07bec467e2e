"""Apply latent directions with strengths and render the images.

Units of strength ``alpha`` (both available, chosen by ``units``):

* ``'std'`` (default): ``alpha = 1`` is a one-standard-deviation move of the
  component. The step is ``alpha * scale_i * d_i / ||d_i||`` where
  ``scale_i`` is given (``scales``) or, by default, ``||d_i||`` -- so a
  direction lifted by :func:`jaxfactor.lifting.lift` (already "latent step
  per one std") is applied as ``z + alpha * d_i``; for directions found in
  the latent space itself (PCA on W) pass ``scales=sqrt(explained_variance_)``.
* ``'latent'``: ``alpha`` is the Euclidean length of the step in the latent
  space: ``alpha * d_i / ||d_i||``.

Edits act on ``'z'``, on ``'w'`` (every synthesis layer) or on a ``'w+'``
layer range (``layers=range(a, b)``), as the generator's adapter allows.
Images come back as ``uint8`` arrays ``(..., H, W, C)``.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from jaxfactor._extras import require
from jaxfactor._io import atomic_write

from .activations import _eval_mode
from .generators import LatentAdapter, as_adapter

__all__ = ["to_uint8", "render", "render_codes", "edit", "edit_samples", "make_grid", "save_grid"]


def to_uint8(images: torch.Tensor, drange: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """``(n, C, H, W)`` float images in ``drange`` to ``(n, H, W, C)`` uint8.

    One-channel images stay ``(n, H, W, 1)``.
    """
    lo, hi = drange
    x = (images.detach().float() - lo) * (255.0 / (hi - lo))
    x = x.round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def _as_z(z, adapter: LatentAdapter) -> torch.Tensor:
    t = z if isinstance(z, torch.Tensor) else torch.from_numpy(np.asarray(z, np.float32))
    t = t.to(dtype=torch.float32, device=adapter.device)
    if t.ndim == 1:
        t = t[None, :]
    if t.ndim != 2 or t.shape[1] != adapter.z_dim:
        raise ValueError(f"z must be (n, {adapter.z_dim}), got shape {tuple(t.shape)}")
    return t


def _space_dim(adapter: LatentAdapter, space: str) -> int:
    if space not in adapter.spaces:
        raise ValueError(f"{type(adapter).__name__} edits spaces {adapter.spaces}, not {space!r}")
    return adapter.z_dim if space == "z" else adapter.w_dim


def _steps(directions: np.ndarray, alphas: np.ndarray, units: str, scales) -> np.ndarray:
    """``(m, d)`` directions and ``(m,)`` alphas to ``(m, d)`` latent steps."""
    if units not in ("std", "latent"):
        raise ValueError(f"units must be 'std' or 'latent', got {units!r}")
    norms = np.linalg.norm(directions, axis=1)
    if np.any(norms == 0) or not np.all(np.isfinite(directions)):
        raise ValueError("directions must be finite and non-zero")
    unit = directions / norms[:, None]
    if units == "latent":
        length = np.ones_like(norms)
    else:
        length = norms if scales is None else np.broadcast_to(np.asarray(scales, np.float64),
                                                              norms.shape)
    return (alphas * length)[:, None] * unit


def _batched(adapter, n, batch_size, image_of, group=None):
    """``concatenate([image_of(lo, hi) for each batch])`` in eval and inference mode.

    With ``group``, rows come in consecutive groups of that size and a batch
    never crosses a group: each group is cut at the same offsets as a call on
    that group alone (convolutions round differently by batch size on CPU).
    """
    group = n if group is None else group
    bounds = [(lo, min(lo + batch_size, g0 + group)) for g0 in range(0, n, group)
              for lo in range(g0, g0 + group, batch_size)]
    with torch.inference_mode(), _eval_mode(adapter.module):
        return np.concatenate([image_of(lo, hi) for lo, hi in bounds])


def _run(adapter, z, steps, space, layers, batch_size, drange, group=None):
    def image_of(lo, hi):
        if steps is None:
            return to_uint8(adapter.forward(z[lo:hi]), drange)
        sb = torch.as_tensor(steps[lo:hi], dtype=torch.float32, device=z.device)
        return to_uint8(adapter.forward_edited(z[lo:hi], sb, space, layers), drange)

    return _batched(adapter, z.shape[0], batch_size, image_of, group)


def render(G, z, *, batch_size: int = 32, drange=(-1.0, 1.0)) -> np.ndarray:
    """Unedited images of latents ``z`` ``(n, z_dim)``: ``(n, H, W, C)`` uint8."""
    adapter = as_adapter(G)
    return _run(adapter, _as_z(z, adapter), None, "z", None, batch_size, drange)


def render_codes(G, codes, *, space: str = "z", batch_size: int = 256) -> np.ndarray:
    """Unedited images of latent codes, as floats in the generator's range
    (what feature extractors and attribute measures take).

    Args:
      G: generator module or adapter.
      codes: ``(n, z_dim)`` latents for ``space='z'``; ``(n, w_dim)`` W codes
        for ``space='w'`` (the same code at every W+ entry).
      space: ``'z'`` or ``'w'``.
      batch_size: images per forward pass.

    Returns:
      ``(n, H, W, C)`` float32 numpy images, clamped to ``[-1, 1]``.
    """
    adapter = as_adapter(G)
    _space_dim(adapter, space)
    if space not in ("z", "w"):
        raise ValueError(f"render_codes renders codes in 'z' or 'w', not {space!r}")
    t = codes if isinstance(codes, torch.Tensor) else torch.from_numpy(np.asarray(codes, np.float32))
    t = t.to(dtype=torch.float32, device=adapter.device)

    def image_of(lo, hi):
        b = t[lo:hi]
        img = (adapter.forward(b) if space == "z"
               else adapter.synthesize(b[:, None].repeat(1, adapter.num_ws, 1)))
        return img.clamp(-1, 1).permute(0, 2, 3, 1).float().cpu().numpy()

    return np.ascontiguousarray(_batched(adapter, t.shape[0], batch_size, image_of))


def edit_samples(G, z, directions, alphas, *, units: str = "std", scales=None, space: str = "z",
                 layers: Sequence[int] | None = None, batch_size: int = 32,
                 drange=(-1.0, 1.0)) -> np.ndarray:
    """One edit per sample: sample ``j`` moved along its direction by its alpha.

    Args:
      G: generator module or adapter.
      z: ``(n, z_dim)`` latents.
      directions: ``(d,)`` (all samples) or ``(n, d)`` (one per sample), ``d``
        the width of ``space``.
      alphas: scalar or ``(n,)`` strengths.
      units, scales: see the module docstring (``scales``: scalar or ``(n,)``).
      space: ``'z'``, ``'w'`` or ``'w+'``; layers: W+ layer indices.
      batch_size: images per forward pass; drange: the generator's output range.

    Returns:
      ``(n, H, W, C)`` uint8 images.
    """
    adapter = as_adapter(G)
    zt = _as_z(z, adapter)
    n, dim = zt.shape[0], _space_dim(adapter, space)
    dirs = np.asarray(directions, np.float64)
    dirs = np.broadcast_to(dirs, (n, dim)) if dirs.ndim == 1 else dirs
    if dirs.shape != (n, dim):
        raise ValueError(f"directions must be ({dim},) or ({n}, {dim}), got {np.shape(directions)}")
    a = np.broadcast_to(np.asarray(alphas, np.float64), (n,))
    sc = None if scales is None else np.broadcast_to(np.asarray(scales, np.float64), (n,))
    steps = _steps(dirs, a, units, sc)
    return _run(adapter, zt, steps, space, layers, batch_size, drange)


def edit(G, z, directions, alphas, *, units: str = "std", scales=None, space: str = "z",
         layers: Sequence[int] | None = None, batch_size: int = 32,
         drange=(-1.0, 1.0)) -> np.ndarray:
    """Every direction at every strength, for every sample.

    Args:
      G: generator module or adapter.
      z: ``(n, z_dim)`` latents (``(z_dim,)`` for one).
      directions: ``(d,)`` one direction or ``(m, d)``.
      alphas: a scalar or ``(a,)`` strengths.
      units, scales: see the module docstring (``scales``: scalar or ``(m,)``).
      space, layers, batch_size, drange: as :func:`edit_samples`.

    Returns:
      uint8 images ``(m, a, n, H, W, C)``; the ``m`` axis is absent for a
      1-D ``directions`` and the ``a`` axis for a scalar ``alphas``. Each
      (direction, alpha) cell's ``n`` samples are batched exactly as
      :func:`render` batches ``z``, so an ``alpha = 0`` cell equals
      ``render(G, z, batch_size=batch_size)`` bit for bit (with a deterministic
      generator: see :class:`bridges.generators.FastGANAdapter`'s ``noise_mode``).
    """
    adapter = as_adapter(G)
    zt = _as_z(z, adapter)
    n, dim = zt.shape[0], _space_dim(adapter, space)
    dirs = np.asarray(directions, np.float64)
    single_dir = dirs.ndim == 1
    dirs = np.atleast_2d(dirs)
    if dirs.ndim != 2 or dirs.shape[1] != dim:
        raise ValueError(f"directions must be ({dim},) or (m, {dim}) for space {space!r}, "
                         f"got {np.shape(directions)}")
    al = np.asarray(alphas, np.float64)
    single_alpha = al.ndim == 0
    al = np.atleast_1d(al)
    if al.ndim != 1:
        raise ValueError(f"alphas must be a scalar or 1-D, got shape {al.shape}")
    m, a = dirs.shape[0], al.shape[0]
    sc = None if scales is None else np.broadcast_to(np.asarray(scales, np.float64), (m,))
    # Steps for every (direction, alpha) pair, repeated over the samples.
    steps = np.stack([_steps(dirs, np.full(m, alpha), units, sc) for alpha in al], axis=1)
    steps = np.repeat(steps.reshape(m * a, 1, dim), n, axis=1).reshape(m * a * n, dim)
    zz = zt.repeat(m * a, 1)
    images = _run(adapter, zz, steps, space, layers, batch_size, drange, group=n)
    images = images.reshape(m, a, n, *images.shape[1:])
    if single_alpha:
        images = images[:, 0]
    if single_dir:
        images = images[0]
    return images


def make_grid(images: np.ndarray, *, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile ``(rows, cols, H, W, C)`` uint8 images into one ``(H', W', C)`` image."""
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[None]
    if images.ndim != 5 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (rows, cols, H, W, C), got {images.dtype} {images.shape}")
    r, c, h, w, ch = images.shape
    grid = np.full((r * h + (r + 1) * pad, c * w + (c + 1) * pad, ch), pad_value, np.uint8)
    for i in range(r):
        for j in range(c):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y:y + h, x:x + w] = images[i, j]
    return grid


def save_grid(images: np.ndarray, path: str | os.PathLike, *, pad: int = 2,
              pad_value: int = 255) -> str:
    """Save ``(rows, cols, H, W, C)`` uint8 images (rows = directions, columns =
    alphas) as one PNG, written atomically. Returns the path."""
    Image = require("PIL.Image", feature="bridges.render.save_grid")

    grid = make_grid(images, pad=pad, pad_value=pad_value)
    if grid.shape[2] not in (1, 3, 4):
        raise ValueError(f"images need 1, 3 or 4 channels, got {grid.shape[2]}")
    img = Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid)
    return atomic_write(path, lambda f: img.save(f, format="PNG"), suffix=".png", fsync=False)
