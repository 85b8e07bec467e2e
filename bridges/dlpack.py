"""Hand arrays between PyTorch and JAX through DLPack.

Both directions are zero-copy when the two frameworks can address the same
memory: CPU tensor to CPU JAX array, CUDA tensor to a JAX GPU array on the same
device. Otherwise (a CUDA tensor while JAX only has a CPU backend, a strided or
misaligned tensor that XLA cannot adopt -- XLA's CPU client wants 64-byte
aligned buffers, which torch's allocator gives but a tensor over a numpy
buffer or an offset view may not) the data are copied once, and the result is
still correct.

JAX arrays are immutable. A JAX array that shares its buffer with a torch
tensor sees later in-place writes to that tensor (and the other way round);
hand over a ``.clone()`` when the tensor will be modified afterwards.
"""
from __future__ import annotations

import jax
import numpy as np
import torch

__all__ = ["torch_to_jax", "jax_to_torch", "shares_memory"]


def _jax_has_gpu() -> bool:
    try:
        return any(d.platform == "gpu" for d in jax.devices())
    except RuntimeError:  # pragma: no cover - no backend at all
        return False


def torch_to_jax(tensor: torch.Tensor) -> jax.Array:
    """A ``torch.Tensor`` as a ``jax.Array``, sharing memory where possible.

    The tensor is detached from autograd and made contiguous (a no-op when it
    already is). A CUDA tensor becomes a JAX GPU array when JAX has a GPU
    backend and is copied to the host otherwise.

    Args:
      tensor: any-shaped tensor of a dtype both frameworks know (float16/32/64,
        bfloat16, integer, bool).

    Returns:
      ``jax.Array`` with the same shape and dtype, on the matching device.
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"torch_to_jax needs a torch.Tensor, got {type(tensor).__name__}")
    t = tensor.detach()
    if t.device.type == "cuda" and not _jax_has_gpu():
        t = t.cpu()
    elif t.device.type not in ("cpu", "cuda"):
        t = t.cpu()  # mps, xla, ...: DLPack support varies, go through the host
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    return jax.dlpack.from_dlpack(t.contiguous())


def jax_to_torch(array: jax.Array) -> torch.Tensor:
    """A ``jax.Array`` as a ``torch.Tensor`` sharing its buffer (same device).

    The tensor must be treated as read-only: JAX assumes its buffers never
    change.

    Args:
      array: a ``jax.Array`` (fully addressable, single device).

    Returns:
      ``torch.Tensor`` with the same shape and dtype.
    """
    if not isinstance(array, jax.Array):
        array = jax.numpy.asarray(array)
    return torch.from_dlpack(array)


def shares_memory(tensor: torch.Tensor, array) -> bool:
    """Whether ``tensor`` and a JAX or numpy ``array`` start at the same address.

    Args:
      tensor: a torch tensor; array: a ``jax.Array`` or ``np.ndarray``.

    Returns:
      ``True`` when their first elements share one address.
    """
    if isinstance(array, np.ndarray):
        ptr = array.__array_interface__["data"][0]
    else:
        ptr = array.unsafe_buffer_pointer()
    return int(ptr) == int(tensor.data_ptr())
