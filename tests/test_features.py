import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytorch_fid")

from bridges.features import (FID_WEIGHTS_FILENAME, FeatureExtractor,  # noqa: E402
                              InceptionFeatures, InceptionWeightsNotFound, as_feature_extractor,
                              default_inception_weights_path, fid_inception_network,
                              images_to_tensor)

from .tolerances import network_error, unit_roundoff  # noqa: E402


def _inception_stages(model):
    """Stages of pytorch-fid's Inception for :func:`tests.tolerances.network_error`:
    every convolution (its fan-in, no bias: batch norm follows) and batch norm
    (1) of the network -- more than its longest path, which passes through one
    branch of each block -- the bilinear resize (4 terms) and the input's
    normalisation (1), the 3 x 3 average pool of each FIDInception block's pool
    branch (9) and the final average pool (8 x 8)."""
    stages = [4, 1, 64]
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            stages.append(m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1])
        elif isinstance(m, torch.nn.BatchNorm2d):
            stages.append(1)
        elif type(m).__name__.startswith("FIDInception"):
            stages.append(9)
    return stages


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A randomly initialised FID Inception saved the way the real weights are
    stored: a plain state dict in a .pth file."""
    torch.manual_seed(0)
    net = fid_inception_network()
    path = tmp_path_factory.mktemp("hub") / FID_WEIGHTS_FILENAME
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def extractor(weights_file):
    torch.set_num_threads(2)
    return InceptionFeatures(weights_file, batch_size=2)


def test_missing_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    expected = tmp_path / "torch" / "hub" / "checkpoints" / FID_WEIGHTS_FILENAME
    assert default_inception_weights_path() == expected
    with pytest.raises(InceptionWeightsNotFound) as err:
        InceptionFeatures()
    message = str(err.value)
    assert str(expected) in message and "not downloaded" in message
    with pytest.raises(FileNotFoundError, match="does not exist"):
        InceptionFeatures(tmp_path / "nowhere.pth")


def test_inception_features_through_user_weights_path(extractor, weights_file, rng):
    # Two tiny images, one per batch (batch_size=1 here, 2 images at once in the
    # reference), resized to 299 inside the network.
    images = rng.integers(0, 256, (2, 12, 12, 3), dtype=np.uint8)
    extractor.batch_size = 1
    feats = extractor(images)
    assert isinstance(extractor, FeatureExtractor)
    assert feats.shape == (2, 2048) and feats.dtype == np.float32
    assert np.all(np.isfinite(feats)) and np.all(feats >= 0)  # after ReLU + average pool
    # reference: pytorch-fid's own constructor path (its download replaced by our
    # state dict), its own resize + normalisation, both images in one batch
    from unittest import mock

    from pytorch_fid import inception as pfi
    state = torch.load(weights_file, weights_only=True)
    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: state):
        reference = pfi.InceptionV3([3]).eval()
    x = torch.from_numpy(images.astype(np.float32) / 255).permute(0, 3, 1, 2)
    with torch.no_grad():
        ref = reference(x)[0].reshape(2, -1).numpy()
    # the same network on the same pixels, one image per batch there and two here
    tol = 2 * network_error(_inception_stages(reference)) * np.abs(ref).max()
    np.testing.assert_allclose(feats, ref, rtol=0, atol=tol)
    assert np.abs(feats[0] - feats[1]).max() > tol           # two images, not rounding


def test_default_cache_location_is_used(weights_file, monkeypatch, tmp_path):
    target = tmp_path / "torch" / "hub" / "checkpoints"
    target.mkdir(parents=True)
    (target / FID_WEIGHTS_FILENAME).symlink_to(weights_file)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    model = InceptionFeatures(batch_size=4).model
    for name, p in torch.load(weights_file, weights_only=True).items():
        if name.startswith("Mixed_7c.branch_pool.conv"):
            np.testing.assert_array_equal(dict(model.named_parameters())[
                "blocks.3.2." + name[len("Mixed_7c."):]].numpy(), p.numpy())


def test_images_to_tensor_conventions(rng):
    u8 = rng.integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
    t = images_to_tensor(u8)
    assert t.shape == (2, 3, 5, 4) and t.dtype == torch.float32
    u = unit_roundoff(np.float32)
    # a float32 division of exact integers: correctly rounded, within u of u8 / 255
    np.testing.assert_allclose(t.numpy(), u8.transpose(0, 3, 1, 2) / 255.0, rtol=u, atol=0)
    signed = u8.astype(np.float64) / 127.5 - 1.0
    # signed (|x| <= 1) rounded to float32 (u), x + 1 (<= 2: 2 u), halved (exact):
    # 1.5 u from u8 / 255, and t is within u of it
    np.testing.assert_allclose(images_to_tensor(signed, input_range=(-1, 1)).numpy(), t.numpy(),
                               rtol=0, atol=2.5 * u)
    gray = rng.uniform(0, 1, (2, 5, 4))
    g = images_to_tensor(gray).numpy()
    assert g.shape == (2, 3, 5, 4)
    np.testing.assert_allclose(g[:, 0], gray, rtol=u, atol=0)                # float64 -> float32
    np.testing.assert_array_equal(g[:, 0], g[:, 2])
    with pytest.raises(ValueError, match="C in"):
        images_to_tensor(np.zeros((2, 5, 4, 2)))


def test_as_feature_extractor_batches_and_converts(rng):
    calls = []

    def fn(images):
        calls.append(len(images))
        return torch.as_tensor(images.reshape(len(images), -1)[:, :4] * 2.0)

    extract = as_feature_extractor(fn, batch_size=3)
    images = rng.uniform(size=(7, 2, 2, 1))
    feats = extract(images)
    assert isinstance(feats, np.ndarray) and feats.shape == (7, 4)
    np.testing.assert_array_equal(feats, images.reshape(7, -1) * 2.0)       # doubling is exact
    assert calls == [3, 3, 1]
    bad = as_feature_extractor(lambda x: np.zeros((len(x) - 1, 2)))
    with pytest.raises(ValueError, match="returned shape"):
        bad(images)
