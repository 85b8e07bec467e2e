"""PyTorch side of jaxfactor: activation streams, latent adapters, rendering, FID features.

``import bridges.torch as bt`` gathers the user-facing names; the most common
ones are also importable from here.
"""
from . import torch  # noqa: F401  (bridges.torch.ActivationStream after `import bridges`)
from .activations import ActivationStream
from .generators import FastGANAdapter, PlainAdapter, StyleGANAdapter, as_adapter
from .render import edit, edit_samples, render, save_grid

__all__ = ["ActivationStream", "FastGANAdapter", "PlainAdapter", "StyleGANAdapter", "as_adapter",
           "edit", "edit_samples", "render", "save_grid"]
