import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("optax")

from jaxfactor.metrics.classifier import (AttributeClassifier,  # noqa: E402
                                          train_attribute_classifier)

from .conftest import seed_for  # noqa: E402
from .tolerances import gamma, network_error  # noqa: E402


def _synthetic(rng, n, size=8):
    """Grayscale noise with a bright 3x3 square in the top (attr 0 = 1) or
    bottom half, and a dark horizontal line (attr 1 = 1) or none."""
    images = rng.uniform(0.3, 0.5, (n, size, size))
    labels = rng.integers(0, 2, (n, 2))
    for k in range(n):
        row = rng.integers(0, size // 2 - 2) + (0 if labels[k, 0] else size // 2)
        col = rng.integers(0, size - 2)
        images[k, row:row + 3, col:col + 3] = 1.0
        if labels[k, 1]:
            images[k, rng.integers(0, size), :] = 0.0
    return (images * 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(seed_for("tests/test_classifier.py::trained"))
    images, labels = _synthetic(rng, 1024)
    result = train_attribute_classifier(images, labels, epochs=10, batch_size=32, seed=0)
    return result


def test_trains_to_high_accuracy(trained, rng):
    clf = trained.classifier
    test_images, test_labels = _synthetic(rng, 400)
    probs = clf.predict(test_images)
    assert probs.shape == (400, 2) and probs.dtype == np.float32
    assert np.all((probs >= 0) & (probs <= 1))
    accuracy = np.mean((probs > 0.5) == (test_labels > 0.5), axis=0)
    assert np.all(accuracy > 0.95), accuracy
    assert trained.loss[-1] < trained.loss[0]
    assert trained.accuracy.shape == (10,)


def test_features_are_the_penultimate_layer(trained, rng):
    clf = trained.classifier
    images, _ = _synthetic(rng, 10)
    feats = clf.features(images)
    assert feats.shape == (10, clf.config.hidden) and np.all(feats >= 0)
    head = clf.params["params"]["Dense_1"]
    kernel, bias = np.asarray(head["kernel"]), np.asarray(head["bias"])
    logits = feats @ kernel + bias
    # the same features (one program computes both); the head's products here and
    # in XLA: each within gamma(hidden + 1) (|f| |K| + |b|), entry by entry
    head_error = 2 * gamma(kernel.shape[0] + 1) * (np.abs(feats) @ np.abs(kernel) + np.abs(bias))
    assert np.all(np.abs(clf.logits(images) - logits) <= head_error)
    # sigmoid: 1/4-Lipschitz, and each evaluation a few roundings (gamma(1) p)
    probs = 1 / (1 + np.exp(-logits))
    assert np.all(np.abs(clf(images) - probs) <= head_error / 4 + 2 * gamma(1) * probs)
    # float input in [0, 1] is uint8 / 255, divided as _prepare divides it
    np.testing.assert_array_equal(clf.predict(images.astype(np.float32) / 255), clf.predict(images))
    # batch handling: batches of 3 and of 10 through the network (3 x 3 convolutions
    # with bias and ReLU, 2 x 2 average pools, the hidden dense layer)
    cfg = clf.config
    widths = (cfg.image_shape[-1], *cfg.conv_features)
    stages = [w * 9 + 1 for w in widths[:-1]] + [4] * len(cfg.conv_features)
    flat = clf.params["params"]["Dense_0"]["kernel"].shape[0]
    np.testing.assert_allclose(clf.features(images, batch_size=3), feats, rtol=0,
                               atol=2 * network_error(stages + [flat + 1]) * np.abs(feats).max())


def test_same_seed_same_classifier(trained, rng):
    # same shapes as the fixture's training run: the compiled epoch is reused
    images, labels = _synthetic(rng, 1024)
    a = train_attribute_classifier(images, labels, epochs=2, batch_size=32, seed=3)
    b = train_attribute_classifier(images, labels, epochs=2, batch_size=32, seed=3)
    c = train_attribute_classifier(images, labels, epochs=2, batch_size=32, seed=4)
    np.testing.assert_array_equal(a.loss, b.loss)
    np.testing.assert_array_equal(a.classifier.predict(images), b.classifier.predict(images))
    assert not np.array_equal(a.loss, c.loss)


def test_save_load_round_trip(trained, rng, tmp_path):
    clf = trained.classifier
    path = clf.save(tmp_path / "clf")
    assert path.endswith(".npz")
    with np.load(path, allow_pickle=False) as data:
        assert "__config__" in data.files
    loaded = AttributeClassifier.load(path)
    assert loaded.config == clf.config
    images, _ = _synthetic(rng, 16)
    np.testing.assert_array_equal(loaded.predict(images), clf.predict(images))
    np.testing.assert_array_equal(loaded.features(images), clf.features(images))
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(ValueError, match="not a saved"):
        AttributeClassifier.load(bad)


def test_input_errors(trained):
    clf = trained.classifier
    with pytest.raises(ValueError, match="per image"):
        clf.predict(np.zeros((2, 16, 16), np.uint8))
    with pytest.raises(ValueError, match="labels"):
        train_attribute_classifier(np.zeros((4, 8, 8)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_attribute_classifier(np.zeros((4, 8, 8)), np.full(4, 2.0))
