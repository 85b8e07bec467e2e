"""The testbed GAN: StyleGAN-like, 32 x 32 RGB, with a FastGAN init layer of 16384 features.

Trained on the testbed image family (:mod:`.testbed`), so every image it
draws has factors that :func:`.testbed.measure` computes from the pixels.
The latent structure is the one the two source papers study:

* ``mapping(z) -> w``: pixel norm and an MLP (StyleGAN2's mapping network),
  ``z_dim = w_dim = 64``; ``w_avg`` allows truncation.
* ``synthesis(ws)`` with ``ws`` ``(N, 6, 64)`` (W+; W repeats one w):

  ``ws[:, 0]`` ``init``  FastGAN's init layer (Liu et al. 2021):
                         ``ConvTranspose2d(64, 2048, 4)``, ``BatchNorm2d``,
                         ``GLU``: **1024 x 4 x 4 = 16384 features**, the
                         real conv1 dimension;
  ``ws[:, 1]`` ``reduce`` modulated 1 x 1 conv 1024 -> 64 (4 x 4);
  ``ws[:, 2]`` ``conv8``  2x up, modulated 3 x 3, 64 -> 32 (8 x 8);
  ``ws[:, 3]`` ``conv16`` 2x up, modulated 3 x 3, 32 -> 16 (16 x 16);
  ``ws[:, 4]`` ``conv32`` 2x up, modulated 3 x 3, 16 -> 16 (32 x 32);
  ``ws[:, 5]`` ``to_rgb`` modulated 1 x 1, 16 -> 3, not demodulated; ``tanh``.

  Images ``(N, 3, 32, 32)`` in ``[-1, 1]``. The modulated convolutions are
  StyleGAN2's (:class:`.model.ModulatedConv2d`); their ``affine`` weights are
  what SeFa stacks.

Weights ship as ``weights/testbed_gan.npz`` (float16 arrays, loaded with
``allow_pickle=False``) beside ``testbed_gan.json`` (architecture and
provenance); ``python -m bridges.builtin.train_testbed`` reproduces them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jaxfactor._io import atomic_write

from .model import InitBlock, MappingNetwork, ModulatedConv2d, WeightsError

__all__ = [
    "TESTBED_CONFIG",
    "TESTBED_FORMAT",
    "TestbedSynthesis",
    "TestbedGenerator",
    "TestbedDiscriminator",
    "default_testbed_path",
    "save_testbed_generator",
    "load_testbed_generator",
    "default_testbed_features_path",
    "load_testbed_features",
]

#: Architecture of the shipped testbed generator.
TESTBED_CONFIG = {"z_dim": 64, "w_dim": 64, "init_channels": 1024, "channels": 64,
                  "mapping_layers": 4}
#: Tag stored in the weights file; another tag is refused.
TESTBED_FORMAT = "jaxfactor-testbed-gan/1"


class LinearInitBlock(InitBlock):
    """:class:`.model.InitBlock` computed as one matrix product.

    A ``ConvTranspose2d(w_dim, 2C, 4)`` on a 1 x 1 map is ``w @ K`` with the
    kernel ``K`` viewed as ``(w_dim, 2C * 16)``; the product is the same
    function with the same parameters, several times faster on a CPU than the
    transposed-convolution kernel. ``forward(w: (N, w_dim)) -> (N, C, 4, 4)``.
    """

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        k = self.conv.weight                                   # (w_dim, 2C, 4, 4)
        x = (w @ k.reshape(k.shape[0], -1)).reshape(w.shape[0], *k.shape[1:])
        return self.glu(self.norm(x))


class TestbedSynthesis(nn.Module):
    """``ws (N, 6, w_dim) -> (N, 3, 32, 32)`` in ``[-1, 1]`` (blocks in the module docstring).

    Keyword arguments of StyleGAN2-ADA's synthesis (``noise_mode=...``) are
    accepted and ignored (there is no noise input).
    """

    num_ws = 6

    def __init__(self, w_dim: int = 64, init_channels: int = 1024, channels: int = 64):
        super().__init__()
        self.w_dim, self.channels = w_dim, channels
        self.img_resolution, self.img_channels = 32, 3
        self.init = LinearInitBlock(w_dim, init_channels)
        self.reduce = ModulatedConv2d(init_channels, channels, 1, w_dim)
        self.conv8 = ModulatedConv2d(channels, channels // 2, 3, w_dim)
        self.conv16 = ModulatedConv2d(channels // 2, channels // 4, 3, w_dim)
        self.conv32 = ModulatedConv2d(channels // 4, channels // 4, 3, w_dim)
        self.to_rgb = ModulatedConv2d(channels // 4, 3, 1, w_dim, demodulate=False, activate=False)

    def forward(self, ws: torch.Tensor, **ignored) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must have shape (N, {self.num_ws}, {self.w_dim}); "
                             f"got {tuple(ws.shape)}")
        x = self.init(ws[:, 0])
        x = self.reduce(x, ws[:, 1])
        for i, block in enumerate((self.conv8, self.conv16, self.conv32)):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = block(x, ws[:, 2 + i])
        return torch.tanh(self.to_rgb(x, ws[:, 5]))


class TestbedGenerator(nn.Module):
    """``forward(z) = synthesis(broadcast(mapping(z)))``, StyleGAN2-ADA's call signatures.

    Attributes: ``z_dim``, ``c_dim`` (0), ``w_dim``, ``num_ws`` (6),
    ``img_resolution`` (32), ``img_channels`` (3), ``config``.

    ``forward(z: (N, z_dim) float32, c=None, truncation_psi=1.0) -> (N, 3, 32, 32)``.
    Contains BatchNorm: sample in eval mode (the loader sets it).
    """

    def __init__(self, z_dim: int = 64, w_dim: int = 64, init_channels: int = 1024,
                 channels: int = 64, mapping_layers: int = 4):
        super().__init__()
        self.z_dim, self.w_dim, self.c_dim = z_dim, w_dim, 0
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers)
        self.synthesis = TestbedSynthesis(w_dim, init_channels, channels)
        self.num_ws = self.synthesis.num_ws
        self.img_resolution = self.synthesis.img_resolution
        self.img_channels = self.synthesis.img_channels
        self.config = {"z_dim": z_dim, "w_dim": w_dim, "init_channels": init_channels,
                       "channels": channels, "mapping_layers": mapping_layers}

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        """``(N, w_dim) -> (N, num_ws, w_dim)``: W to W+ by repetition."""
        return w[:, None, :].expand(-1, self.num_ws, -1)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None,
                truncation_psi: float = 1.0, **synthesis_kwargs) -> torch.Tensor:
        w = self.mapping(z, c, truncation_psi=truncation_psi)
        return self.synthesis(self.broadcast(w), **synthesis_kwargs)


class TestbedDiscriminator(nn.Module):
    """Critic ``(N, 3, 32, 32) -> (N,)`` logits (training only, not shipped).

    Three stride-2 3 x 3 convolutions (``c, 2c, 4c`` channels, leaky ReLU) to
    4 x 4, StyleGAN's minibatch standard deviation as one more channel, then
    a linear layer.
    """

    def __init__(self, channels: int = 16):
        super().__init__()
        c = channels
        self.body = nn.Sequential(
            nn.Conv2d(3, c, 3, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 3, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * c, 4 * c, 3, 2, 1), nn.LeakyReLU(0.2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear((4 * c + 1) * 16, 128), nn.LeakyReLU(0.2),
                                  nn.Linear(128, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        std = h.std(dim=0, unbiased=False).mean()
        h = torch.cat([h, std.expand(h.shape[0], 1, *h.shape[2:])], dim=1)
        return self.head(h).squeeze(1)


def default_testbed_path() -> Path:
    """Path of the shipped weights, ``bridges/builtin/weights/testbed_gan.npz``."""
    return Path(__file__).resolve().parent / "weights" / "testbed_gan.npz"


def save_testbed_generator(generator: TestbedGenerator, path: str | os.PathLike,
                           **metadata) -> None:
    """Write ``generator`` as an ``.npz`` of float16 parameters (integers kept as int64).

    The architecture and ``metadata`` (JSON-able values) travel as a JSON
    string in the entry ``__meta__``; nothing needs pickle to load. Written to
    a temporary name and renamed (never partly written).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for key, value in generator.state_dict().items():
        v = value.detach().cpu().numpy()
        arrays[key] = v.astype(np.float16) if v.dtype.kind == "f" else v.astype(np.int64)
    meta = {"format": TESTBED_FORMAT, "config": {k: int(v) for k, v in generator.config.items()},
            "metadata": metadata}
    arrays["__meta__"] = np.array(json.dumps(meta))
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays), suffix=".npz.tmp")


def load_testbed_generator(path: str | os.PathLike | None = None,
                           device: str | torch.device = "cpu") -> TestbedGenerator:
    """Load the testbed generator (eval mode, gradients off, float32).

    Args:
      path: an ``.npz`` from :func:`save_testbed_generator`; ``None`` loads
        :func:`default_testbed_path`.
      device: where to put the module.

    Returns:
      :class:`TestbedGenerator`: ``G(z)``, ``z: (N, 64)`` -> ``(N, 3, 32, 32)``.

    Raises:
      WeightsError: the file is missing, unreadable, of another format, or its
        arrays do not fit the architecture.
    """
    path = Path(default_testbed_path() if path is None else path)
    if not path.is_file():
        raise WeightsError(f"testbed generator weights not found at {path}; regenerate them with "
                           f"`python -m bridges.builtin.train_testbed --out {path.parent}`")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop("__meta__")))
    except Exception as exc:  # zip, npz and JSON errors have many types
        raise WeightsError(f"cannot read testbed generator weights {path}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != TESTBED_FORMAT:
        raise WeightsError(f"{path} is not a testbed generator file (expected format {TESTBED_FORMAT!r})")
    config = meta.get("config")
    if not isinstance(config, dict) or set(config) != set(TESTBED_CONFIG):
        raise WeightsError(f"{path}: bad architecture config {config!r}")
    generator = TestbedGenerator(**{k: int(v) for k, v in config.items()})
    reference = generator.state_dict()
    state = {}
    for key, value in arrays.items():
        tensor = torch.from_numpy(value.astype(np.float32) if value.dtype.kind == "f" else value)
        state[key] = tensor.to(reference[key].dtype) if key in reference else tensor
    try:
        generator.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise WeightsError(f"{path}: weights do not match the architecture: {exc}") from exc
    generator.eval().requires_grad_(False)
    return generator.to(device)


def default_testbed_features_path() -> Path:
    """Path of the shipped testbed feature network, ``weights/testbed_features.npz``."""
    return Path(__file__).resolve().parent / "weights" / "testbed_features.npz"


def load_testbed_features(path: str | os.PathLike | None = None):
    """Load the testbed feature network (Flax + optax, no pickles).

    Args:
      path: an ``.npz`` written by ``python -m bridges.builtin.train_testbed``;
        ``None`` loads :func:`default_testbed_features_path`.

    Returns:
      :class:`jaxfactor.metrics.classifier.AttributeClassifier` on
      ``(N, 32, 32, 3)`` images in ``[-1, 1]``: ``predict`` gives the 9
      factor targets of ``train_testbed.feature_targets``, ``features`` the
      penultimate layer (the in-domain FID features).

    Raises:
      WeightsError: the file is missing or unreadable.
    """
    from jaxfactor.metrics.classifier import AttributeClassifier

    path = Path(default_testbed_features_path() if path is None else path)
    if not path.is_file():
        raise WeightsError(f"testbed feature network not found at {path}; regenerate it with "
                           f"`python -m bridges.builtin.train_testbed --steps 0 --out {path.parent}`")
    try:
        return AttributeClassifier.load(path)
    except Exception as exc:  # zip, npz and shape errors have many types
        raise WeightsError(f"cannot read testbed feature network {path}: {exc}") from exc
