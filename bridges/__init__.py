"""PyTorch side of jaxfactor: activation streams, latent adapters, rendering, FID features.

``import bridges.torch as bt`` gathers the user-facing names; the most common
ones are also importable from here. It needs the ``torch`` extra; without it
importing ``bridges`` (or any submodule) raises
``jaxfactor.MissingExtraError`` saying what to install.
"""
from jaxfactor._extras import require

require("torch", feature="the PyTorch bridge (bridges)")

from . import torch  # noqa: F401,E402  (bridges.torch.ActivationStream after `import bridges`)
from .activations import ActivationStream  # noqa: E402
from .generators import FastGANAdapter, PlainAdapter, StyleGANAdapter, as_adapter  # noqa: E402
from .render import edit, edit_samples, render, save_grid  # noqa: E402

__all__ = ["ActivationStream", "FastGANAdapter", "PlainAdapter", "StyleGANAdapter", "as_adapter",
           "edit", "edit_samples", "render", "save_grid"]
