"""The built-in demo GAN: a tiny StyleGAN-like generator for 8 x 8 digits.

The generator mirrors the latent structure of the two generators the source
papers study, at a size that trains in minutes on two CPU cores:

* ``mapping(z) -> w`` -- an MLP (StyleGAN2's mapping network), so a W space
  exists; ``w_avg`` (a running mean of w) allows truncation.
* ``synthesis(ws) -> image`` with ``ws`` of shape ``(N, num_ws, w_dim)`` (W+;
  W is the same w repeated). Its first block, ``synthesis.init``, is FastGAN's
  init layer (Liu et al. 2021): ``ConvTranspose2d(w_dim, 2C, 4)`` on w as a
  1 x 1 map, ``BatchNorm2d`` and ``GLU`` over channels, giving ``C x 4 x 4``
  features (1024 with the default ``C = 64``) -- the "conv1-style" layer whose
  activations are factorized and lifted back to W. A forward hook on the
  dotted name ``"synthesis.init"`` sees that output.
* Then StyleGAN2 modulated convolutions (Karras et al. 2020, weight
  modulation and demodulation), each with its own style affine ``affine`` --
  the ``nn.Linear(w_dim, in_channels)`` weights SeFa (Shen & Zhou 2021)
  stacks -- taking the later entries of ``ws``: ``conv4`` (4 x 4,
  ``ws[:, 1]``), upsampling to 8 x 8, ``conv8`` (``ws[:, 2]``), ``to_image``
  (1 x 1, not demodulated, ``ws[:, 3]``), then ``tanh``: images in
  ``[-1, 1]`` of shape ``(N, 1, 8, 8)``.

:class:`Discriminator` is the critic used for training only; it is not shipped.
:func:`load_builtin_generator` loads the shipped weights with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from jaxfactor._io import atomic_write

__all__ = [
    "MappingNetwork",
    "InitBlock",
    "ModulatedConv2d",
    "SynthesisNetwork",
    "Generator",
    "Discriminator",
    "DEFAULT_CONFIG",
    "WEIGHTS_FORMAT",
    "default_weights_path",
    "save_generator",
    "load_builtin_generator",
    "WeightsError",
]

#: Architecture of the shipped generator (also stored inside the weights file).
DEFAULT_CONFIG = {"z_dim": 64, "w_dim": 64, "channels": 64, "mapping_layers": 3}

#: Tag written into the weights file; a file without it is refused.
WEIGHTS_FORMAT = "jaxfactor-builtin-gan/1"

_WEIGHTS_NAME = "digits_gan.pt"


class WeightsError(RuntimeError):
    """The built-in generator's weights file is missing, corrupt or of another format."""


class MappingNetwork(nn.Module):
    """z -> w: pixel-normalise z, then ``num_layers`` linear + leaky-ReLU layers.

    Args:
      z_dim: latent size. w_dim: intermediate latent size. num_layers: depth.

    ``forward(z: (N, z_dim) float32, c=None, truncation_psi=1.0) -> (N, w_dim)``;
    with ``psi != 1`` returns ``w_avg + psi * (w - w_avg)`` (StyleGAN's
    truncation trick). ``w_avg`` is a buffer, a running mean kept in training.
    ``c`` is StyleGAN2-ADA's class label slot, kept so that code written for
    ``G.mapping(z, c, truncation_psi=...)`` works: the model is unconditional
    (``c_dim = 0``), so ``c`` must be ``None`` or of shape ``(N, 0)``.
    """

    def __init__(self, z_dim: int, w_dim: int, num_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        width = z_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, w_dim), nn.LeakyReLU(0.2)]
            width = w_dim
        self.net = nn.Sequential(*layers)
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None,
                truncation_psi: float = 1.0) -> torch.Tensor:
        if c is not None and c.numel() != 0:
            raise ValueError("the built-in generator is unconditional: c must be None or empty")
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        w = self.net(z)
        if truncation_psi != 1.0:
            w = self.w_avg.lerp(w, truncation_psi)
        return w


class InitBlock(nn.Module):
    """FastGAN's init layer: ``ConvTranspose2d(w_dim, 2C, 4) -> BatchNorm2d -> GLU``.

    ``forward(w: (N, w_dim)) -> (N, C, 4, 4)``; GLU halves the ``2C`` channels:
    ``a * sigmoid(b)`` with ``a, b`` the first and second channel halves.
    """

    def __init__(self, w_dim: int, channels: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(w_dim, 2 * channels, 4, 1, 0, bias=False)
        self.norm = nn.BatchNorm2d(2 * channels)
        self.glu = nn.GLU(dim=1)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.glu(self.norm(self.conv(w[:, :, None, None])))


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution (Karras et al. 2020, sec. 2.2).

    The style ``s = affine(w)`` (``(N, in_channels)``, bias initialised to 1)
    scales the kernel's input channels per sample,
    ``W'_{o,i} = W_{o,i} s_i``; with ``demodulate`` each output filter is
    renormalised, ``W''_o = W'_o / sqrt(sum W'_o^2 + eps)``. Grouped conv
    applies a different kernel to each sample. Then ``+ bias`` and, if
    ``activate``, leaky ReLU(0.2).

    ``forward(x: (N, in, H, W), w: (N, w_dim)) -> (N, out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int,
                 demodulate: bool = True, activate: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.demodulate, self.activate = kernel_size, demodulate, activate
        self.affine = nn.Linear(w_dim, in_channels)
        nn.init.ones_(self.affine.bias)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # Computed as StyleGAN2's non-fused path: scaling the input channels by s
        # and the output channels by the demodulation coefficients is the same
        # as convolving with the per-sample kernel, and needs one ordinary conv.
        styles = self.affine(w)
        out = F.conv2d(x * styles[:, :, None, None], self.weight * self.scale,
                       padding=self.kernel_size // 2)
        if self.demodulate:
            w2 = (self.weight * self.scale).square().sum(dim=(2, 3))          # (out, in)
            dcoefs = torch.rsqrt(styles.square() @ w2.T + 1e-8)               # (N, out)
            out = out * dcoefs[:, :, None, None]
        out = out + self.bias[None, :, None, None]
        return F.leaky_relu(out, 0.2) if self.activate else out


class SynthesisNetwork(nn.Module):
    """ws -> image: init block (4 x 4), modulated convs, 2x upsampling, tanh.

    ``forward(ws: (N, num_ws, w_dim), **ignored) -> (N, 1, 8, 8)`` in
    ``[-1, 1]``; entry ``ws[:, i]`` drives block i: 0 ``init``, 1 ``conv4``,
    2 ``conv8``, 3 ``to_image``. There is no noise input; keyword arguments of
    StyleGAN2-ADA's synthesis (``noise_mode=...``) are accepted and ignored.
    """

    num_ws = 4

    def __init__(self, w_dim: int, channels: int = 64, img_channels: int = 1):
        super().__init__()
        self.w_dim, self.channels = w_dim, channels
        self.img_resolution, self.img_channels = 8, img_channels
        self.init = InitBlock(w_dim, channels)
        self.conv4 = ModulatedConv2d(channels, channels // 2, 3, w_dim)
        self.conv8 = ModulatedConv2d(channels // 2, channels // 4, 3, w_dim)
        self.to_image = ModulatedConv2d(channels // 4, img_channels, 1, w_dim,
                                        demodulate=False, activate=False)

    def forward(self, ws: torch.Tensor, **ignored) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must have shape (N, {self.num_ws}, {self.w_dim}); "
                             f"got {tuple(ws.shape)}")
        x = self.init(ws[:, 0])
        x = self.conv4(x, ws[:, 1])
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.conv8(x, ws[:, 2])
        return torch.tanh(self.to_image(x, ws[:, 3]))


class Generator(nn.Module):
    """The built-in generator: ``forward(z) = synthesis(broadcast(mapping(z)))``.

    Attributes (as in StyleGAN2-ADA's ``Generator``): ``z_dim``, ``c_dim``
    (0), ``w_dim``, ``num_ws``, ``img_resolution`` (8), ``img_channels`` (1);
    submodules ``mapping`` and ``synthesis`` (first block ``synthesis.init``).
    The call signatures follow StyleGAN2-ADA (``mapping(z, c,
    truncation_psi=...)``, ``synthesis(ws, noise_mode=...)``), so adapters
    written for official checkpoints take this model as it is.

    ``forward(z: (N, z_dim) float32, c=None, truncation_psi=1.0) -> (N, 1, 8, 8)``
    in ``[-1, 1]``. Contains BatchNorm: call ``.eval()`` before sampling (the
    loader does).
    """

    def __init__(self, z_dim: int = 64, w_dim: int = 64, channels: int = 64,
                 mapping_layers: int = 3):
        super().__init__()
        self.z_dim, self.w_dim, self.c_dim = z_dim, w_dim, 0
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers)
        self.synthesis = SynthesisNetwork(w_dim, channels)
        self.num_ws = self.synthesis.num_ws
        self.img_resolution = self.synthesis.img_resolution
        self.img_channels = self.synthesis.img_channels
        self.config = {"z_dim": z_dim, "w_dim": w_dim, "channels": channels,
                       "mapping_layers": mapping_layers}

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        """``(N, w_dim) -> (N, num_ws, w_dim)``: W to W+ by repetition."""
        return w[:, None, :].expand(-1, self.num_ws, -1)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None,
                truncation_psi: float = 1.0, **synthesis_kwargs) -> torch.Tensor:
        w = self.mapping(z, c, truncation_psi=truncation_psi)
        return self.synthesis(self.broadcast(w), **synthesis_kwargs)


class Discriminator(nn.Module):
    """Critic for 8 x 8 images, ``(N, 1, 8, 8) -> (N,)`` logits (training only).

    An MLP on the 64 pixels (cheap on a CPU, and at 8 x 8 a convolution buys
    little), with StyleGAN's minibatch-standard-deviation feature appended
    before the last layers so that D can see a lack of diversity.
    """

    def __init__(self, hidden: int = 256, img_pixels: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(img_pixels, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2))
        self.head = nn.Sequential(nn.Linear(hidden + 1, hidden), nn.LeakyReLU(0.2),
                                  nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        std = h.std(dim=0, unbiased=False).mean()
        return self.head(torch.cat([h, std.expand(h.shape[0], 1)], dim=1)).squeeze(1)


def default_weights_path() -> Path:
    """Path of the shipped weights, ``bridges/builtin/weights/digits_gan.pt``."""
    return Path(__file__).resolve().parent / "weights" / _WEIGHTS_NAME


def save_generator(generator: Generator, path: str | os.PathLike, **metadata) -> None:
    """Write ``generator`` as ``{"format", "config", "state_dict", "metadata"}``.

    Only tensors, strings and numbers are stored, so the file loads with
    ``torch.load(weights_only=True)``. ``metadata`` values must be str/int/float.
    The file is written to a temporary name and renamed (never partly written).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()}
    meta = {}
    for key, value in metadata.items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise TypeError(f"metadata {key!r} must be str, int or float; got {type(value).__name__}")
        # Plain builtins only (e.g. torch.__version__ is a str subclass that
        # weights_only loading refuses).
        meta[str(key)] = str(value) if isinstance(value, str) else (
            int(value) if isinstance(value, int) else float(value))
    blob = {"format": WEIGHTS_FORMAT, "config": {k: int(v) for k, v in generator.config.items()},
            "state_dict": state, "metadata": meta}
    atomic_write(path, lambda f: torch.save(blob, f), suffix=".pt.tmp")


def load_builtin_generator(path: str | os.PathLike | None = None,
                           device: str | torch.device = "cpu") -> Generator:
    """Load the built-in generator, in eval mode with gradients off.

    Args:
      path: weights file written by :func:`save_generator` (``python -m
        bridges.builtin.train``); ``None`` loads the shipped
        :func:`default_weights_path`.
      device: where to put the module.

    Returns:
      :class:`Generator` ready for sampling: ``G(z)`` with ``z: (N, G.z_dim)``.

    Raises:
      WeightsError: the file is missing, not loadable with ``weights_only=True``,
        of another format, or its tensors do not fit the architecture.
    """
    path = Path(default_weights_path() if path is None else path)
    if not path.is_file():
        raise WeightsError(
            f"built-in generator weights not found at {path}; regenerate them with "
            f"`python -m bridges.builtin.train --out {path.parent}`")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have many types
        raise WeightsError(f"cannot read built-in generator weights {path}: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(f"{path} is not a built-in generator weights file "
                           f"(expected format {WEIGHTS_FORMAT!r})")
    config = blob.get("config")
    if not isinstance(config, dict) or set(config) != set(DEFAULT_CONFIG):
        raise WeightsError(f"{path}: bad architecture config {config!r}")
    generator = Generator(**{k: int(v) for k, v in config.items()})
    try:
        generator.load_state_dict(blob["state_dict"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise WeightsError(f"{path}: weights do not match the architecture: {exc}") from exc
    generator.eval().requires_grad_(False)
    return generator.to(device)
