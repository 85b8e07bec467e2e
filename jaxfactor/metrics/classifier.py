"""A small attribute classifier for images, trained with Flax (linen) and optax.

The walk scores (:mod:`jaxfactor.metrics.walks`) need attribute predictors
``images -> probabilities (N, J)``, and an in-domain Fréchet distance needs a
feature extractor ``images -> (N, d)``. For small images (e.g. 8 x 8 or
16 x 16 grayscale, as the built-in demo generator draws), this module trains
both in one network::

    [Conv 3x3 -> ReLU -> AvgPool 2x2] x len(conv_features)
    -> flatten -> Dense(hidden) -> ReLU          (the "features")
    -> Dense(J)                                   (the logits)

with independent sigmoid outputs (multi-label: one probability per binary
attribute), trained by AdamW on the mean binary cross-entropy. Labels may be
hard (0/1) or soft (probabilities). Parameters save to and load from ``.npz``
(``allow_pickle=False``; the architecture travels as a JSON string).

flax and optax (the ``demo`` extra) are imported by this module only; without
them importing it raises :class:`jaxfactor.MissingExtraError`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from functools import partial
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .._extras import require
from .._io import atomic_write

nn = require("flax.linen", feature="jaxfactor.metrics.classifier")
optax = require("optax", feature="jaxfactor.metrics.classifier")

__all__ = ["ClassifierConfig", "AttributeClassifier", "TrainingResult",
           "train_attribute_classifier"]


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of an :class:`AttributeClassifier`.

    Attributes:
      image_shape: ``(H, W, C)`` of the inputs.
      n_attributes: ``J``, the number of sigmoid outputs.
      conv_features: channels of the convolution stages (each halves H and W).
      hidden: width of the penultimate (feature) layer.

    Examples:
      >>> from jaxfactor.metrics.classifier import ClassifierConfig
      >>> config = ClassifierConfig((8, 8, 1), 2, conv_features=(4,), hidden=8)
      >>> ClassifierConfig.from_json(config.to_json()) == config
      True
    """

    image_shape: tuple
    n_attributes: int
    conv_features: tuple = (16, 32)
    hidden: int = 64

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ClassifierConfig":
        raw = json.loads(text)
        return cls(tuple(raw["image_shape"]), int(raw["n_attributes"]),
                   tuple(raw["conv_features"]), int(raw["hidden"]))


class _Network(nn.Module):
    conv_features: Sequence[int]
    hidden: int
    n_out: int

    @nn.compact
    def __call__(self, x):
        for width in self.conv_features:
            x = nn.relu(nn.Conv(width, (3, 3))(x))
            if x.shape[1] >= 2 and x.shape[2] >= 2:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        features = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.n_out)(features), features


def _network(config: ClassifierConfig) -> _Network:
    return _Network(tuple(config.conv_features), config.hidden, config.n_attributes)


@partial(jax.jit, static_argnames=("config",))
def _apply(params, x, config: ClassifierConfig):
    """``(logits (b, J), features (b, hidden))`` of a ``(b, H, W, C)`` batch."""
    return _network(config).apply(params, x)


def _prepare(images, image_shape=None) -> np.ndarray:
    """``(N, H, W[, C])`` uint8 (scaled by 1/255) or float images as float32 NHWC."""
    if type(images).__module__.startswith("torch"):
        images = images.detach().cpu().numpy()
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"images must be (N, H, W) or (N, H, W, C); got shape {arr.shape}")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype.kind in "fiu":
        arr = arr.astype(np.float32)
    else:
        raise ValueError(f"images have dtype {arr.dtype}; uint8 or floating point is expected")
    if image_shape is not None and arr.shape[1:] != tuple(image_shape):
        raise ValueError(f"images have shape {arr.shape[1:]} per image; this classifier takes "
                         f"{tuple(image_shape)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("images contain NaN or inf values")
    return arr


class AttributeClassifier:
    """A trained attribute classifier: probabilities and penultimate features.

    Args:
      params: the Flax parameter pytree (``{'params': {...}}``).
      config: its :class:`ClassifierConfig`.

    ``predict`` (also ``__call__``) fits the walk scores' predictor slot and
    ``features`` the Fréchet distance's feature-extractor slot.

    Examples:
      >>> import os, tempfile, numpy as np
      >>> from jaxfactor.metrics.classifier import AttributeClassifier, train_attribute_classifier
      >>> images = np.random.default_rng(0).uniform(size=(16, 8, 8)).astype(np.float32)
      >>> clf = train_attribute_classifier(images, images.mean(axis=(1, 2)) > 0.5, conv_features=(4,),
      ...                                  hidden=8, epochs=1, batch_size=8).classifier
      >>> clf.predict(images).shape, clf.features(images).shape
      ((16, 1), (16, 8))
      >>> with tempfile.TemporaryDirectory() as d:
      ...     again = AttributeClassifier.load(clf.save(os.path.join(d, "clf")))
      >>> bool(np.allclose(again.predict(images), clf.predict(images)))
      True
    """

    def __init__(self, params, config: ClassifierConfig):
        self.params = params
        self.config = config

    def _run(self, images, batch_size: int):
        x = _prepare(images, self.config.image_shape)
        logits, feats = [], []
        for lo in range(0, x.shape[0], batch_size):
            lg, ft = _apply(self.params, jnp.asarray(x[lo:lo + batch_size]), self.config)
            logits.append(np.asarray(lg))
            feats.append(np.asarray(ft))
        if not logits:
            return (np.zeros((0, self.config.n_attributes), np.float32),
                    np.zeros((0, self.config.hidden), np.float32))
        return np.concatenate(logits), np.concatenate(feats)

    def logits(self, images, *, batch_size: int = 1024) -> np.ndarray:
        """``(N, J)`` float32 logits."""
        return self._run(images, batch_size)[0]

    def predict(self, images, *, batch_size: int = 1024) -> np.ndarray:
        """``(N, J)`` float32 probabilities ``sigmoid(logits)`` of ``(N, H, W[, C])`` images."""
        return np.asarray(jax.nn.sigmoid(self.logits(images, batch_size=batch_size)))

    __call__ = predict

    def features(self, images, *, batch_size: int = 1024) -> np.ndarray:
        """``(N, hidden)`` float32 penultimate-layer activations (an in-domain FID extractor)."""
        return self._run(images, batch_size)[1]

    def save(self, path: str | os.PathLike) -> str:
        """Write parameters and architecture to ``path`` (``.npz``), atomically.

        Returns:
          The path written (``.npz`` appended when missing).
        """
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
        flat = {}
        for keys, leaf in jax.tree_util.tree_flatten_with_path(self.params)[0]:
            flat[".".join(str(k.key) for k in keys)] = np.asarray(leaf)
        flat["__config__"] = np.array(self.config.to_json())
        return atomic_write(path, lambda fh: np.savez(fh, **flat), suffix=".npz.tmp")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AttributeClassifier":
        """Read a classifier written by :meth:`save` (no pickles are loaded)."""
        with np.load(os.fspath(path), allow_pickle=False) as data:
            if "__config__" not in data.files:
                raise ValueError(f"{os.fspath(path)} is not a saved AttributeClassifier "
                                 "(no __config__ entry)")
            config = ClassifierConfig.from_json(str(data["__config__"]))
            params: dict = {}
            for name in data.files:
                if name == "__config__":
                    continue
                node = params
                *parents, leaf = name.split(".")
                for p in parents:
                    node = node.setdefault(p, {})
                node[leaf] = jnp.asarray(data[name])
        expected = jax.eval_shape(_network(config).init, jax.random.key(0),
                                  jnp.zeros((1,) + tuple(config.image_shape), jnp.float32))
        if (jax.tree_util.tree_structure(expected) != jax.tree_util.tree_structure(params)
                or any(a.shape != b.shape for a, b in zip(jax.tree_util.tree_leaves(expected),
                                                          jax.tree_util.tree_leaves(params)))):
            raise ValueError(f"{os.fspath(path)}: parameters do not match the stored architecture")
        return cls(params, config)

    def __repr__(self) -> str:
        return f"AttributeClassifier({self.config})"


def _init_params(net: _Network, config: ClassifierConfig, rng: np.random.Generator):
    """He-normal kernels (``N(0, 2 / fan_in)``) and zero biases, drawn with numpy.

    Drawing the initial weights with numpy rather than ``net.init`` keeps
    jax.random's (slow to compile on CPU) bit generators out of training.
    """
    shapes = jax.eval_shape(net.init, jax.random.key(0),
                            jnp.zeros((1,) + tuple(config.image_shape), jnp.float32))

    def draw(path, leaf):
        if path[-1].key == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape), jnp.float32)
        return jnp.zeros(leaf.shape, jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


class TrainingResult(NamedTuple):
    """Outcome of :func:`train_attribute_classifier`.

    Attributes:
      classifier: the trained :class:`AttributeClassifier`.
      loss: ``(epochs,)`` mean training loss per epoch.
      accuracy: ``(epochs,)`` mean minibatch training accuracy during each
        epoch (over all attributes, labels thresholded at 0.5).
    """

    classifier: AttributeClassifier
    loss: np.ndarray
    accuracy: np.ndarray


@partial(jax.jit, static_argnames=("config", "learning_rate", "weight_decay"))
def _train_epoch(params, opt_state, order, xs, ys, *, config: ClassifierConfig,
                 learning_rate: float, weight_decay: float):
    """One epoch: a ``lax.scan`` of AdamW steps over the ``(n_batches, batch_size)``
    index array ``order``. Returns ``(params, opt_state, mean loss, mean accuracy)``."""
    net = _network(config)
    optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)

    def loss_fn(p, xb, yb):
        logits, _ = net.apply(p, xb)
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, yb)), logits

    def step(carry, idx):
        p, s = carry
        xb, yb = xs[idx], ys[idx]
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, xb, yb)
        updates, s = optimizer.update(grads, s, p)
        acc = jnp.mean((logits > 0) == (yb > 0.5))
        return (optax.apply_updates(p, updates), s), (loss, acc)

    (params, opt_state), (losses, accs) = jax.lax.scan(step, (params, opt_state), order)
    return params, opt_state, jnp.mean(losses), jnp.mean(accs)


def train_attribute_classifier(images, labels, *, conv_features: Sequence[int] = (16, 32),
                               hidden: int = 64, epochs: int = 20, batch_size: int = 64,
                               learning_rate: float = 3e-3, weight_decay: float = 1e-4,
                               seed: int = 0) -> TrainingResult:
    """Train a small CNN to predict binary attributes of images.

    Minimises the mean sigmoid binary cross-entropy with ``optax.adamw`` over
    shuffled minibatches (each epoch one jitted ``lax.scan`` over
    ``floor(N / batch_size)`` steps; the shuffle reaches every image across
    epochs). Initial weights (He-normal) and shuffles come from
    ``numpy.random.default_rng(seed)``: same seed, same classifier.

    Args:
      images: ``(N, H, W)`` or ``(N, H, W, C)``, uint8 (scaled by 1/255) or float.
      labels: ``(N,)`` or ``(N, J)`` targets in ``[0, 1]``.
      conv_features, hidden: the architecture (:class:`ClassifierConfig`).
      epochs, batch_size, learning_rate, weight_decay: the optimisation.
      seed: initialisation and shuffling seed.

    Returns:
      :class:`TrainingResult`.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.metrics.classifier import train_attribute_classifier
      >>> images = np.random.default_rng(0).uniform(size=(16, 8, 8)).astype(np.float32)
      >>> res = train_attribute_classifier(images, images.mean(axis=(1, 2)) > 0.5, conv_features=(4,),
      ...                                  hidden=8, epochs=2, batch_size=8)
      >>> res.loss.shape, res.accuracy.shape, res.classifier.config.n_attributes
      ((2,), (2,), 1)
    """
    x = _prepare(images)
    y = np.asarray(labels, dtype=np.float32)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"labels must be (N,) or (N, J) with N = {x.shape[0]}; got {y.shape}")
    if not np.all((y >= 0) & (y <= 1)):
        raise ValueError("labels must lie in [0, 1]")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1; got {epochs}, {batch_size}")
    n = x.shape[0]
    batch_size = min(batch_size, n)
    n_batches = n // batch_size
    config = ClassifierConfig(tuple(x.shape[1:]), int(y.shape[1]), tuple(conv_features),
                              int(hidden))
    rng = np.random.default_rng(seed)
    params = _init_params(_network(config), config, rng)
    opt_state = optax.adamw(learning_rate, weight_decay=weight_decay).init(params)
    xs, ys = jnp.asarray(x), jnp.asarray(y)
    losses, accs = [], []
    for _ in range(epochs):
        order = rng.permutation(n)[:n_batches * batch_size].reshape(n_batches, batch_size)
        params, opt_state, loss, acc = _train_epoch(
            params, opt_state, jnp.asarray(order.astype(np.int32)), xs, ys, config=config,
            learning_rate=float(learning_rate), weight_decay=float(weight_decay))
        losses.append(float(loss))
        accs.append(float(acc))
    return TrainingResult(AttributeClassifier(params, config), np.asarray(losses),
                          np.asarray(accs))
