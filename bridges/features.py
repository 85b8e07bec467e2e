"""Feature extractors for the Fréchet distance: the FID Inception and your own.

A feature extractor is any callable ``images -> (N, d)`` features, where
``images`` is an ``(N, H, W, C)`` (or ``(N, H, W)``) batch, ``uint8`` in
``[0, 255]`` or floating point. :class:`FeatureExtractor` states that protocol;
:func:`as_feature_extractor` wraps a callable so that its output always comes
back as a 2-D numpy array (torch and JAX outputs included) and batches are
bounded. Small in-domain extractors (e.g. the penultimate layer of an attribute
classifier, ``jaxfactor.metrics.classifier.AttributeClassifier.features``) fit
the same slot as the standard network.

The standard FID network is pytorch-fid's Inception-v3 (``pytorch_fid``'s
``InceptionV3`` around its ``FIDInceptionA/C/E`` blocks, the port of the
TensorFlow graph of Heusel et al.), with 2048-d features from the final average
pool. :class:`InceptionFeatures` builds that architecture and loads its weights
from a local file only -- either the path you give, or pytorch-fid's own cache
location ``torch.hub.get_dir()/checkpoints/pt_inception-2015-12-05-6726825d.pth``
-- with ``torch.load(weights_only=True)``. It never downloads: when the file is
missing, :class:`InceptionWeightsNotFound` says where to put it. Images are
prepared as pytorch-fid prepares them: uint8 divided by 255, resized
bilinearly to 299 x 299 (``align_corners=False``) and mapped from ``[0, 1]`` to
``[-1, 1]``, inside the package's own ``InceptionV3.forward``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable
from unittest import mock

import numpy as np

from jaxfactor._extras import require

__all__ = [
    "FeatureExtractor",
    "as_feature_extractor",
    "FID_WEIGHTS_FILENAME",
    "FID_WEIGHTS_URL",
    "InceptionWeightsNotFound",
    "default_inception_weights_path",
    "fid_inception_network",
    "load_fid_inception",
    "images_to_tensor",
    "InceptionFeatures",
]

FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   + FID_WEIGHTS_FILENAME)


@runtime_checkable
class FeatureExtractor(Protocol):
    """``images (N, H, W, C) uint8 or float -> features (N, d)``."""

    def __call__(self, images) -> np.ndarray: ...


def _to_numpy(x) -> np.ndarray:
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def as_feature_extractor(fn: Callable, *, batch_size: int | None = None) -> Callable:
    """Wrap ``fn`` (images -> features) into a well-behaved feature extractor.

    Args:
      fn: any callable returning ``(b, d)`` features as numpy, JAX or torch
        (``(b, ...)`` outputs are flattened to ``(b, d)``).
      batch_size: call ``fn`` on at most this many images at a time.

    Returns:
      A callable ``images (N, ...) -> (N, d)`` numpy array that checks the row
      count and width of every answer.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    width: list[int] = []

    def extract(images):
        n = len(images)
        step = batch_size or max(n, 1)
        out = []
        for lo in range(0, n, step):
            part = images[lo:lo + step]
            f = _to_numpy(fn(part))
            if f.ndim < 1 or f.shape[0] != len(part):
                raise ValueError(f"feature function returned shape {f.shape} for {len(part)} images")
            f = f.reshape(f.shape[0], -1)
            if width and f.shape[1] != width[0]:
                raise ValueError(f"feature function returned {f.shape[1]} features; "
                                 f"earlier calls returned {width[0]}")
            width[:1] = [f.shape[1]]
            out.append(f)
        return np.concatenate(out, axis=0) if out else np.zeros((0, width[0] if width else 0))

    extract.__wrapped__ = fn  # type: ignore[attr-defined]
    return extract


class InceptionWeightsNotFound(FileNotFoundError):
    """The FID Inception weights file is not on this machine."""


def default_inception_weights_path() -> Path:
    """Where pytorch-fid caches its weights: ``torch.hub.get_dir()/checkpoints/<file>``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILENAME


def _missing_message(path: Path, given: bool) -> str:
    where = (f"The file {path} does not exist." if given else
             f"No weights file was given and none is in the torch hub cache ({path}).")
    return (f"{where} FID needs pytorch-fid's Inception weights, which are not downloaded "
            f"automatically. Fetch {FID_WEIGHTS_FILENAME} from {FID_WEIGHTS_URL} on a machine "
            f"with network access and either place it at {default_inception_weights_path()} "
            f"(set TORCH_HOME to move that folder) or pass its path as weights=...; or use an "
            f"in-domain feature extractor instead.")


def fid_inception_network(state_dict=None):
    """pytorch-fid's FID Inception-v3 (torchvision's Inception with the FID
    blocks), randomly initialised or loaded from ``state_dict``.

    This is ``pytorch_fid.inception.fid_inception_v3`` without its download:
    the same classes, assembled the same way.

    Args:
      state_dict: a state dict of the full network (``fc`` with 1008 classes),
        or ``None`` for random weights.

    Returns:
      A ``torchvision.models.Inception3`` module.
    """
    pfi = require("pytorch_fid.inception", feature="the FID Inception network")

    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    if state_dict is not None:
        net.load_state_dict(state_dict)
    return net


def _no_download(*args, **kwargs):  # pragma: no cover - guards against package changes
    raise RuntimeError("jaxfactor never downloads FID weights; pass a local file")


def load_fid_inception(weights: str | os.PathLike | None = None, *, device="cpu"):
    """pytorch-fid's ``InceptionV3`` (2048-d pool features) with local weights.

    Args:
      weights: path of ``pt_inception-2015-12-05-6726825d.pth`` (a state dict,
        loaded with ``torch.load(weights_only=True)``); ``None`` looks in
        :func:`default_inception_weights_path`.
      device: torch device for the network.

    Returns:
      ``pytorch_fid.inception.InceptionV3`` in eval mode, resizing to 299 and
      normalising ``[0, 1] -> [-1, 1]`` itself.

    Raises:
      InceptionWeightsNotFound: the file does not exist (the message says where
        to put it).
    """
    import torch

    pfi = require("pytorch_fid.inception", feature="the FID Inception network")

    given = weights is not None
    path = Path(weights) if given else default_inception_weights_path()
    if not path.is_file():
        raise InceptionWeightsNotFound(_missing_message(path, given))
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    # InceptionV3 builds its trunk with fid_inception_v3(), which downloads;
    # hand it the locally loaded network instead, and make any download fail.
    with mock.patch.object(pfi, "fid_inception_v3", lambda: fid_inception_network(state_dict)), \
            mock.patch.object(pfi, "load_state_dict_from_url", _no_download):
        model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True,
                                normalize_input=True, use_fid_inception=True)
    return model.to(device).eval()


def images_to_tensor(images, *, input_range: tuple[float, float] = (0.0, 1.0)):
    """``(N, H, W, C)`` / ``(N, H, W)`` images as a float32 ``(N, 3, H, W)`` tensor in ``[0, 1]``.

    ``uint8`` images are divided by 255 (as pytorch-fid's ``ToTensor``);
    floating images are mapped from ``input_range`` to ``[0, 1]``; one channel
    is repeated to three. Torch tensors are taken as NHWC too.

    Raises:
      ValueError: a shape that is not a batch of 1- or 3-channel images.
    """
    import torch

    arr = _to_numpy(images)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (N, H, W, C) with C in (1, 3), or (N, H, W); "
                         f"got shape {arr.shape}")
    if arr.dtype == np.uint8:
        x = arr.astype(np.float32) / 255.0
    elif arr.dtype.kind in "fiu":
        lo, hi = input_range
        if not hi > lo:
            raise ValueError(f"input_range must be increasing, got {input_range}")
        x = (arr.astype(np.float32) - lo) / (hi - lo)
    else:
        raise ValueError(f"images have dtype {arr.dtype}; uint8 or floating point is expected")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


class InceptionFeatures:
    """The standard FID feature extractor: 2048-d Inception pool features.

    Args:
      weights: local weights file (see :func:`load_fid_inception`); ``None``
        uses pytorch-fid's cache location. Loading happens here, so a missing
        file fails at construction, before any image is rendered.
      device: torch device (default ``'cpu'``).
      batch_size: images per forward pass.
      input_range: the value range of floating-point images (e.g. ``(-1, 1)``
        for generator outputs); uint8 images are always ``[0, 255]``.

    Calling the object on ``(N, H, W, C)`` images returns ``(N, 2048)``
    float32 numpy features.
    """

    dims = 2048

    def __init__(self, weights: str | os.PathLike | None = None, *, device="cpu",
                 batch_size: int = 50, input_range: tuple[float, float] = (0.0, 1.0)):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = device
        self.batch_size = batch_size
        self.input_range = input_range
        self.model = load_fid_inception(weights, device=device)

    def __call__(self, images) -> np.ndarray:
        import torch

        x = images_to_tensor(images, input_range=self.input_range)
        out = []
        with torch.no_grad():
            for lo in range(0, x.shape[0], self.batch_size):
                batch = x[lo:lo + self.batch_size].to(self.device)
                pooled = self.model(batch)[0]
                out.append(pooled.reshape(pooled.shape[0], -1).cpu().numpy())
        if not out:
            return np.zeros((0, self.dims), np.float32)
        return np.concatenate(out, axis=0).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"InceptionFeatures(device={self.device!r}, batch_size={self.batch_size})"
