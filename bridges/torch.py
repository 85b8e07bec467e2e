"""The PyTorch bridge in one namespace: ``import bridges.torch as bt``.

``bt.ActivationStream`` (a replayable row source of a generator layer),
``bt.edit`` / ``bt.edit_samples`` / ``bt.render`` / ``bt.save_grid``
(edits to images), the latent adapters and the DLPack hand-over.
"""
from .activations import ActivationStream, capture, resolve_layer
from .dlpack import jax_to_torch, shares_memory, torch_to_jax
from .generators import (FastGANAdapter, LatentAdapter, PlainAdapter, StyleGANAdapter, as_adapter,
                         sample_z)
from .render import edit, edit_samples, make_grid, render, save_grid, to_uint8

__all__ = [
    "ActivationStream",
    "capture",
    "resolve_layer",
    "torch_to_jax",
    "jax_to_torch",
    "shares_memory",
    "LatentAdapter",
    "PlainAdapter",
    "FastGANAdapter",
    "StyleGANAdapter",
    "as_adapter",
    "sample_z",
    "edit",
    "edit_samples",
    "render",
    "to_uint8",
    "make_grid",
    "save_grid",
]
