"""Tests for the built-in digits GAN (bridges/builtin): weights, structure, attributes, training."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bridges.builtin.attributes import (  # noqa: E402
    ATTRIBUTE_NAMES,
    AttributeReference,
    analytic_attributes,
    compute_attributes,
    digits_reference,
    fit_reference,
    to_probabilities,
)
from bridges.builtin.attributes import classifier_input, load_builtin_classifier  # noqa: E402
from bridges.builtin.model import (  # noqa: E402
    Generator,
    WeightsError,
    default_weights_path,
    load_builtin_generator,
    save_generator,
)

from .tolerances import gamma, network_error, unit_roundoff  # noqa: E402

F64 = np.float64


def _fan_ins(g, upto=None):
    """The generator's stages for :func:`tests.tolerances.network_error`, on the
    longest path to ``'w'``, the init block's output (``'init'``) or the image:
    pixel norm (a mean of z_dim squares, rsqrt), the mapping's linear layers
    (leaky ReLU is exact), ConvTranspose on the 1 x 1 map, BN, GLU; then the
    style affine, and per modulated conv: input scaling, convolution,
    demodulation, bias; the bilinear upsampling (4 terms); tanh."""
    mapping = [g.z_dim, 1] + [g.w_dim + 1] * (len(g.mapping.net) // 2)
    if upto == "w":
        return mapping
    init = mapping + [g.w_dim, 1, 1]
    if upto == "init":
        return init
    c = g.synthesis.channels
    return (init + [g.w_dim + 1] + [1, c * 9, 1, 1] + [4] + [1, c // 2 * 9, 1, 1]
            + [1, c // 4, 1] + [1])


def _close(actual, desired, stages, dtype=np.float32):
    """Two evaluations of the same network on the same numbers (other batch
    sizes, layouts or copies): within twice one pass's error of each other,
    relative to the result's magnitude."""
    tol = 2 * network_error(stages, dtype) * desired.abs().max().item()
    torch.testing.assert_close(actual, desired, rtol=0, atol=tol)


@pytest.fixture(scope="module")
def generator():
    return load_builtin_generator()


# ---------------------------------------------------------------- weights and structure

def test_shipped_weights_load_with_weights_only(generator):
    path = default_weights_path()
    blob = torch.load(path, map_location="cpu", weights_only=True)   # must not need pickle
    assert blob["format"] == "jaxfactor-builtin-gan/1"
    assert path.stat().st_size < 5 * 2**20
    assert not generator.training
    assert (generator.z_dim, generator.w_dim, generator.num_ws) == (64, 64, 4)
    assert (generator.img_resolution, generator.img_channels) == (8, 1)
    provenance = json.loads(path.with_suffix(".json").read_text())
    assert {"seed", "epochs", "torch", "date", "train_seconds"} <= set(provenance)


def test_samples_shape_range_and_diversity(generator, rng):
    z = torch.from_numpy(rng.standard_normal((64, generator.z_dim)).astype(np.float32))
    with torch.no_grad():
        x = generator(z)
    assert x.shape == (64, 1, 8, 8) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert x.min() >= -1 and x.max() <= 1
    # Not collapsed: different latents give clearly different images.
    spread = x.flatten(1).std(dim=0).mean().item()
    assert spread > 0.1
    # Eval mode: a sample does not depend on the rest of the batch (BatchNorm frozen).
    with torch.no_grad():
        alone = generator(z[:1])
    _close(alone, x[:1], _fan_ins(generator))


def test_samples_look_like_digits_to_attributes(generator, rng):
    """The samples' ink mass and centroid lie in the range of the real digits."""
    z = torch.from_numpy(rng.standard_normal((256, generator.z_dim)).astype(np.float32))
    with torch.no_grad():
        attrs = compute_attributes(generator(z), layout="NCHW")
    ref = digits_reference()
    mean_z = (attrs.mean(axis=0) - ref.mean) / ref.std
    assert np.all(np.abs(mean_z[[0, 2, 3]]) < 1.5), mean_z


def test_init_block_hook_gives_1024_features(generator, rng):
    modules = dict(generator.named_modules())
    assert "synthesis.init" in modules
    seen = {}
    handle = modules["synthesis.init"].register_forward_hook(
        lambda module, inputs, output: seen.setdefault("out", output))
    try:
        z = torch.from_numpy(rng.standard_normal((5, generator.z_dim)).astype(np.float32))
        with torch.no_grad():
            generator(z)
    finally:
        handle.remove()
    out = seen["out"]
    assert out.shape == (5, 64, 4, 4)
    assert out.flatten(1).shape[1] == 1024
    # The init block is ConvTranspose2d(w_dim, 2C, 4) + BatchNorm2d + GLU on w.
    with torch.no_grad():
        w = generator.mapping(z)
        pre = modules["synthesis.init.norm"](modules["synthesis.init.conv"](w[:, :, None, None]))
    a, b = pre[:, :64], pre[:, 64:]
    _close(out, a * torch.sigmoid(b), _fan_ins(generator, "init"))


def test_w_and_w_plus_paths_agree(generator, rng):
    z = torch.from_numpy(rng.standard_normal((6, generator.z_dim)).astype(np.float32))
    with torch.no_grad():
        w = generator.mapping(z)
        assert w.shape == (6, generator.w_dim)
        ws = w[:, None, :].repeat(1, generator.num_ws, 1)
        image = generator(z)
        _close(generator.synthesis(ws), image, _fan_ins(generator))
        # W+ really is per block: changing a later entry changes the image (by
        # more than rounding), but leaves the init features alone.
        ws2 = ws.clone()
        ws2[:, 3] += 1.0
        rounding = 2 * network_error(_fan_ins(generator)) * image.abs().max().item()
        assert (generator.synthesis(ws2) - image).abs().max().item() > rounding
        init_only = [generator.w_dim, 1, 1]                   # ConvTranspose, BN, GLU on the same w
        _close(generator.synthesis.init(ws2[:, 0]), generator.synthesis.init(ws[:, 0]), init_only)
    with pytest.raises(ValueError, match="ws must have shape"):
        generator.synthesis(w)


def test_truncation_moves_towards_w_avg(generator, rng):
    z = torch.from_numpy(rng.standard_normal((4, generator.z_dim)).astype(np.float32))
    with torch.no_grad():
        w = generator.mapping(z)
        half = generator.mapping(z, None, truncation_psi=0.5)
        zero = generator.mapping(z, truncation_psi=0.0)
    w_avg = generator.mapping.w_avg
    # lerp with weight 0 returns w_avg itself: start + 0 (end - start)
    torch.testing.assert_close(zero, w_avg.expand_as(zero), rtol=0, atol=0)
    # two mapping passes, then lerp and 0.5 (w + w_avg): a few roundings of
    # |w| + |w_avg| each (<= gamma(1))
    tol = (2 * network_error(_fan_ins(generator, "w")) * w.abs().max().item()
           + gamma(1) * (w.abs() + w_avg.abs()).max().item())
    torch.testing.assert_close(half, 0.5 * (w + w_avg), rtol=0, atol=tol)


def test_modulated_conv_equals_per_sample_kernel(rng):
    """The non-fused computation equals StyleGAN2's per-sample modulated kernel."""
    from bridges.builtin.model import ModulatedConv2d

    torch.manual_seed(0)
    layer = ModulatedConv2d(5, 3, 3, w_dim=4)
    x = torch.from_numpy(rng.standard_normal((2, 5, 6, 6)).astype(np.float64))
    w = torch.from_numpy(rng.standard_normal((2, 4)).astype(np.float64))
    layer = layer.double()
    with torch.no_grad():
        got = layer(x, w)
        s = layer.affine(w)
        for i in range(2):
            k = layer.weight * layer.scale * s[i][None, :, None, None]
            k = k / torch.sqrt(k.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
            ref = torch.nn.functional.conv2d(x[i:i + 1], k, padding=1) + layer.bias[None, :, None, None]
            # float64, both ways: the style affine (4 + 1 terms), the scaling, a
            # 5 x 3 x 3 convolution and a demodulation sum of as many terms, bias
            _close(got[i:i + 1], torch.nn.functional.leaky_relu(ref, 0.2), [5, 1, 45, 45, 1, 1], F64)


def test_loader_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_builtin_generator(tmp_path / "missing.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"this is not a torch file")
    with pytest.raises(WeightsError, match="cannot read"):
        load_builtin_generator(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(WeightsError, match="not a built-in generator"):
        load_builtin_generator(other)
    # A file that would need pickle to load is refused, not executed.
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "jaxfactor-builtin-gan/1", "config": object()}, pickled)
    with pytest.raises(WeightsError, match="cannot read"):
        load_builtin_generator(pickled)
    # Round trip of a fresh generator; a truncated state dict is refused.
    g = Generator()
    save_generator(g, tmp_path / "g.pt")
    loaded = load_builtin_generator(tmp_path / "g.pt")
    for (k, a), (_, b) in zip(g.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)       # stored bit for bit
    blob = torch.load(tmp_path / "g.pt", weights_only=True)
    blob["state_dict"].pop("synthesis.init.conv.weight")
    torch.save(blob, tmp_path / "short.pt")
    with pytest.raises(WeightsError, match="do not match"):
        load_builtin_generator(tmp_path / "short.pt")


# ---------------------------------------------------------------- attributes

def _attribute_error(ink):
    """Bound on ``|compute_attributes(ink) - exact|`` for ``(N, h, w)`` ink maps in
    ``[0, 1]`` (``value_range=(0, 1)``): float64 sums of ``h w`` terms, each off by
    ``g = gamma(h w)`` relative to its terms' magnitudes, carried through the
    ratios (mass over ``h w``; thickness ``2 mass / tv``; the centroid's; the
    slant's ``-mu11 / mu02``, whose pixel-unit offsets from the centroid inherit
    its error), then the float32 result (``u |a|``). Returns ``(bound, a)``, ``a``
    the attributes recomputed here in float64 for the magnitudes."""
    ink = np.asarray(ink, F64)
    n, h, w = ink.shape
    g = gamma(h * w, F64)
    ys, xs = (np.arange(h) + 0.5) / h - 0.5, (np.arange(w) + 0.5) / w - 0.5
    mass = ink.sum(axis=(1, 2))
    cx, cy = np.einsum("nhw,w->n", ink, xs) / mass, np.einsum("nhw,h->n", ink, ys) / mass
    dcx = g * (np.einsum("nhw,w->n", ink, np.abs(xs)) / mass + np.abs(cx))
    dcy = g * (np.einsum("nhw,h->n", ink, np.abs(ys)) / mass + np.abs(cy))
    dx, dy = (xs[None] - cx[:, None]) * w, (ys[None] - cy[:, None]) * h
    mu11, mu02 = np.einsum("nhw,nh,nw->n", ink, dy, dx), np.einsum("nhw,nh->n", ink, dy * dy)
    ady, adx = np.einsum("nhw,nh->n", ink, np.abs(dy)), np.einsum("nhw,nw->n", ink, np.abs(dx))
    d11 = g * np.einsum("nhw,nh,nw->n", ink, np.abs(dy), np.abs(dx)) + w * dcx * ady + h * dcy * adx
    d02 = g * mu02 + 2 * h * dcy * ady
    slant = np.where(mu02 > 0, -mu11 / np.where(mu02 > 0, mu02, 1), 0)
    dslant = np.where(mu02 > 0, (d11 + np.abs(slant) * d02) / np.where(mu02 > 0, mu02, 1), 0)
    padded = np.pad(ink, ((0, 0), (1, 1), (1, 1)))
    tv = (np.abs(np.diff(padded, axis=1)).sum(axis=(1, 2)) + np.abs(np.diff(padded, axis=2)).sum(axis=(1, 2)))
    thickness = 2 * mass / tv
    a = np.stack([mass / (h * w), thickness, cx, cy, slant], axis=1)
    f64 = np.stack([g * mass / (h * w), 3 * g * thickness, dcx, dcy, dslant], axis=1)
    return f64 + unit_roundoff(np.float32) * np.abs(a), a


def _bar(h=8, w=8, col=3, rows=(1, 7)):
    img = np.zeros((h, w), np.float32)
    img[rows[0]:rows[1], col] = 1.0
    return img


def test_vertical_bar_attributes():
    img = _bar()                                     # 6 pixels in column 3, rows 1..6
    a = compute_attributes(img[None], value_range=(0, 1))[0]
    assert a.dtype == np.float32
    tol = _attribute_error(img[None])[0][0]
    np.testing.assert_allclose(a[0], 6 / 64, rtol=0, atol=tol[0])                        # ink mass
    # TV: 2 per row horizontally (6 rows) + 2 vertically = 14; thickness 2*6/14.
    np.testing.assert_allclose(a[1], 12 / 14, rtol=0, atol=tol[1])
    np.testing.assert_allclose(a[2], (3 + 0.5) / 8 - 0.5, rtol=0, atol=tol[2])           # centroid x
    np.testing.assert_allclose(a[3], ((1 + 6) / 2 + 0.5) / 8 - 0.5, rtol=0, atol=tol[3])  # centroid y
    np.testing.assert_allclose(a[4], 0.0, rtol=0, atol=tol[4])                           # slant


def test_shift_moves_centroid_only():
    img = _bar()
    shifted = np.roll(np.roll(img, 2, axis=1), -1, axis=0)
    a = compute_attributes(np.stack([img, shifted]), value_range=(0, 1))
    tol = _attribute_error(np.stack([img, shifted]))[0].sum(axis=0)   # a difference of two
    np.testing.assert_allclose(a[1, 2] - a[0, 2], 2 / 8, rtol=0, atol=tol[2])
    np.testing.assert_allclose(a[1, 3] - a[0, 3], -1 / 8, rtol=0, atol=tol[3])
    assert np.all(np.abs(a[1, [0, 1, 4]] - a[0, [0, 1, 4]]) <= tol[[0, 1, 4]])


def test_slant_of_diagonals_and_thick_bar():
    eye = np.eye(8, dtype=np.float32)                # "\": leans left as it goes up
    a = compute_attributes(np.stack([eye[::-1], eye]), value_range=(0, 1))
    tol = _attribute_error(np.stack([eye[::-1], eye]))[0][:, 4]
    assert np.all(np.abs(a[:, 4] - [1.0, -1.0]) <= tol)          # "/" = +1, "\" = -1
    # Shear of 0.5 pixel per row, by hand: x = 3 + round-free half steps via two columns.
    img = np.zeros((8, 8))
    for i in range(8):
        img[i, 2 + (7 - i) // 2] = 1.0               # climbs one column every two rows
    x = np.arange(8) + 0.5
    y = np.arange(8) + 0.5
    yy, xx = np.meshgrid(y, x, indexing="ij")
    m = img.sum()
    cx, cy = (img * xx).sum() / m, (img * yy).sum() / m
    expected = -(img * (xx - cx) * (yy - cy)).sum() / (img * (yy - cy) ** 2).sum()
    got = compute_attributes(img[None], value_range=(0, 1))[0, 4]
    # expected is the same float64 formula: its error is the bound's float64 part
    tol, _ = _attribute_error(img[None])
    np.testing.assert_allclose(got, expected, rtol=0, atol=2 * tol[0, 4])
    assert 0.4 < got < 0.6
    # A bar 3 pixels wide and 6 long: thickness 2*18/(2*(6+3)) = 2.
    thick = np.zeros((8, 8))
    thick[1:7, 2:5] = 1.0
    np.testing.assert_allclose(compute_attributes(thick[None], value_range=(0, 1))[0, 1], 2.0, rtol=0,
                               atol=_attribute_error(thick[None])[0][0, 1])


def test_attribute_input_forms_agree(rng):
    imgs = rng.uniform(0, 1, size=(4, 8, 8))
    ref = compute_attributes(imgs, value_range=(0, 1))
    # The other forms give the same ink up to d per pixel: first order, the
    # attributes move by sum_p |da / dx_p| d (central differences of step h,
    # through kinks of |.| a secant slope, still a Lipschitz bound), plus both
    # computations' own error.
    own, _ = _attribute_error(imgs)
    h = 1e-3
    grad = np.zeros((4, 5))
    for p in range(64):
        e = np.zeros(64)
        e[p] = h
        e = e.reshape(8, 8)
        grad += np.abs(compute_attributes(imgs + e, value_range=(0, 1)).astype(F64)
                       - compute_attributes(imgs - e, value_range=(0, 1))) / (2 * h)
    u8 = np.round(imgs * 255).astype(np.uint8)
    quantised = grad * 0.5 / 255 + 2 * own                            # rounding to 1/255 steps
    assert np.all(np.abs(compute_attributes(u8) - ref) <= quantised)  # default (0, 255)
    signed = imgs * 2 - 1                                             # default (-1, 1)
    recast = grad * 2 * gamma(1, F64) + 2 * own                       # (x + 1) / 2, a channel mean
    assert np.all(np.abs(compute_attributes(signed) - ref) <= recast)
    rgb = np.repeat(imgs[..., None], 3, axis=-1)
    assert np.all(np.abs(compute_attributes(rgb, value_range=(0, 1)) - ref) <= recast)
    nchw = torch.from_numpy(signed[:, None])
    assert np.all(np.abs(compute_attributes(nchw, layout="NCHW") - ref) <= recast)
    empty = compute_attributes(np.zeros((1, 8, 8)), value_range=(0, 1))
    np.testing.assert_array_equal(empty, np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError, match="shape"):
        compute_attributes(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="NaN"):
        compute_attributes(np.full((1, 8, 8), np.nan))
    with pytest.raises(ValueError, match="value_range"):
        compute_attributes(imgs, value_range=(1, 1))


def test_probabilities_are_logistic_zscores(rng):
    values = rng.standard_normal((50, 5)) * [1, 2, 3, 4, 5] + [1, 2, 3, 4, 5]
    ref = fit_reference(values)
    np.testing.assert_array_equal(ref.mean, values.mean(axis=0))            # the same numpy mean
    p = to_probabilities(values, ref)
    z = (values - values.mean(axis=0)) / values.std(axis=0)
    # 0.5 (1 + tanh(z / 2)) there, 1 / (1 + exp(-z)) here: a few float64 roundings
    # of numbers <= 2 (<= gamma(1) absolute), then the float32 result (u p)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-z)), rtol=unit_roundoff(np.float32), atol=gamma(1, F64))
    assert p.dtype == np.float32 and np.all((p > 0) & (p < 1))
    huge = to_probabilities(np.full((1, 5), 1e6), AttributeReference(np.zeros(5), np.ones(5)))
    assert np.all(np.isfinite(huge))
    # The default reference is the real digits: their mean maps to 1/2.
    dref = digits_reference()
    np.testing.assert_array_equal(to_probabilities(dref.mean[None]), 0.5)   # z = 0 exactly, tanh(0) = 0
    res = analytic_attributes(_bar()[None], value_range=(0, 1), probabilities=True)
    assert res.names == ATTRIBUTE_NAMES and res.values.shape == (1, 5)
    with pytest.raises(ValueError):
        to_probabilities(np.zeros((2, 3)))


# ---------------------------------------------------------------- training script

def test_training_script_smoke(tmp_path):
    from bridges.builtin.train import main

    rc = main(["--epochs", "1", "--max-batches", "2", "--out", str(tmp_path), "--seed", "1",
               "--batch-size", "16", "--classifier-epochs", "0"])
    assert rc == 0
    g = load_builtin_generator(tmp_path / "digits_gan.pt")
    with torch.no_grad():
        x = g(torch.zeros(2, g.z_dim))
    assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()
    prov = json.loads((tmp_path / "digits_gan.json").read_text())
    assert prov["epochs"] == 1 and prov["steps"] == 2 and prov["seed"] == 1
    assert (tmp_path / "digits_gan_samples.png").stat().st_size > 0


@pytest.mark.slow          # ~10 s of XLA compilation for one epoch
def test_classifier_script_smoke(tmp_path):
    pytest.importorskip("flax")
    from bridges.builtin.train import main

    rc = main(["--epochs", "0", "--classifier-epochs", "1", "--out", str(tmp_path)])
    assert rc == 0
    clf = load_builtin_classifier(tmp_path / "digits_classifier.npz")
    assert clf.predict(np.zeros((3, 8, 8, 1), np.float32)).shape == (3, 10)
    prov = json.loads((tmp_path / "digits_classifier.json").read_text())
    assert prov["epochs"] == 1 and 0 <= prov["test_accuracy"] <= 1
    assert not (tmp_path / "digits_gan.pt").exists()
    assert main(["--epochs", "0", "--classifier-epochs", "0", "--out", str(tmp_path)]) == 2


# ---------------------------------------------------------------- shipped classifier

def test_shipped_classifier_recognises_digits(generator, rng):
    pytest.importorskip("flax")
    from bridges.builtin.train import load_digits_images

    clf = load_builtin_classifier()
    images, labels = load_digits_images()
    x = classifier_input(images)
    assert x.shape == (1797, 8, 8, 1)
    probs = clf.predict(x)
    assert probs.shape == (1797, 10)
    assert np.mean(probs.argmax(axis=1) == labels) > 0.95
    feats = clf.features(x[:7])
    assert feats.ndim == 2 and feats.shape[0] == 7
    # The generator's samples are recognised as some digit most of the time.
    z = torch.from_numpy(rng.standard_normal((200, generator.z_dim)).astype(np.float32))
    with torch.no_grad():
        p = clf.predict(classifier_input(generator(z)))
    assert np.mean(p.max(axis=1) > 0.5) > 0.6
    # Several digit classes appear (no mode collapse onto one digit).
    assert len(np.unique(p.argmax(axis=1))) >= 8


def test_classifier_loader_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_builtin_classifier(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="cannot read"):
        load_builtin_classifier(bad)
    with pytest.raises(ValueError, match="8 x 8"):
        classifier_input(np.zeros((2, 1, 16, 16)))


# ---------------------------------------------------------------- the testbed GAN

def _testbed_fan_ins(g, upto=None):
    """The testbed generator's longest path for :func:`network_error`: mapping as
    above; the init layer's matrix product (w_dim terms), BN, GLU; then per
    modulated conv the style affine, scaling, convolution, demodulation and bias,
    with a 4-term bilinear upsampling before the 3 x 3 ones; tanh."""
    mapping = [g.z_dim, 1] + [g.w_dim + 1] * (len(g.mapping.net) // 2)
    init = mapping + [g.w_dim, 1, 1]
    if upto == "init":
        return init
    s = g.synthesis
    stages = init + [g.w_dim + 1, 1, s.reduce.in_channels, 1, 1]
    for block in (s.conv8, s.conv16, s.conv32):
        stages += [4, g.w_dim + 1, 1, block.in_channels * 9, 1, 1]
    return stages + [g.w_dim + 1, 1, s.to_rgb.in_channels, 1, 1]


@pytest.fixture(scope="module")
def testbed_generator():
    from bridges.builtin import load_testbed_generator

    return load_testbed_generator()


def test_testbed_weights_are_float16_npz_without_pickle(testbed_generator):
    from bridges.builtin.testbed_gan import TESTBED_FORMAT, default_testbed_path

    path = default_testbed_path()
    with np.load(path, allow_pickle=False) as data:                 # must not need pickle
        meta = json.loads(str(data["__meta__"]))
        dtypes = {data[k].dtype for k in data.files if k != "__meta__"}
    assert meta["format"] == TESTBED_FORMAT
    assert dtypes <= {np.dtype(np.float16), np.dtype(np.int64)}
    assert path.stat().st_size < 8 * 2**20
    provenance = json.loads(path.with_suffix(".json").read_text())
    assert {"seed", "steps", "train_seconds", "torch", "date", "command"} <= set(provenance)
    assert path.with_name("testbed_gan_samples.png").is_file()
    g = testbed_generator
    assert not g.training
    assert (g.z_dim, g.w_dim, g.num_ws, g.img_resolution, g.img_channels) == (64, 64, 6, 32, 3)


def test_testbed_init_layer_has_the_conv1_dimension(testbed_generator, rng):
    """The hooked ``synthesis.init`` output is 1024 x 4 x 4 = 16384 features, and the
    init block's matrix product is FastGAN's ConvTranspose2d + BN + GLU."""
    from bridges.activations import capture
    from bridges.builtin.model import InitBlock
    from bridges.generators import as_adapter

    g = testbed_generator
    z = torch.from_numpy(rng.standard_normal((4, g.z_dim)).astype(np.float32))
    feats = capture(as_adapter(g), "synthesis.init", z)
    assert tuple(feats.shape) == (4, 16384)
    reference = InitBlock(g.w_dim, 1024).eval()
    reference.load_state_dict(g.synthesis.init.state_dict())
    with torch.no_grad():
        w = g.mapping(z)
        _close(g.synthesis.init(w).flatten(1), reference(w).flatten(1), _testbed_fan_ins(g, "init"))
        _close(feats.reshape(4, -1), reference(w).flatten(1), _testbed_fan_ins(g, "init"))


def test_testbed_w_plus_and_batch_independence(testbed_generator, rng):
    g = testbed_generator
    z = torch.from_numpy(rng.standard_normal((6, g.z_dim)).astype(np.float32))
    with torch.no_grad():
        x = g(z)
        assert x.shape == (6, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
        w = g.mapping(z)
        ws = w[:, None].repeat(1, g.num_ws, 1)
        _close(g.synthesis(ws), x, _testbed_fan_ins(g))
        _close(g(z[:1]), x[:1], _testbed_fan_ins(g))                 # eval-mode BatchNorm
        ws2 = ws.clone()
        ws2[:, 5] += 1.0                                            # to_rgb's style only
        assert (g.synthesis(ws2) - x).abs().max() > 2 * network_error(_testbed_fan_ins(g))
    with pytest.raises(ValueError, match="ws must have shape"):
        g.synthesis(w)


def test_testbed_samples_look_like_the_testbed(testbed_generator, rng):
    """Measured from the pixels, the samples' factors spread over the testbed's
    ranges: the GAN draws coloured shapes on grey backgrounds, moved, sized and
    coloured as the data are (its shapes are mostly ellipse-like blobs: the shape
    class and rotation are not asserted)."""
    from bridges.builtin import testbed

    g = testbed_generator
    z = torch.from_numpy(rng.standard_normal((300, g.z_dim)).astype(np.float32))
    with torch.no_grad():
        f = testbed.measure(g(z), value_range=(-1, 1), layout="NCHW").values
    real = testbed.measure(testbed.render(testbed.sample_factors(300, 1))).values
    for j in (1, 2, 3, 6):       # x, y, size, background: the bulk of the real spread
        assert np.std(f[:, j]) > 0.4 * np.std(real[:, j]), testbed.FACTOR_NAMES[j]


def test_testbed_save_load_round_trip_and_errors(tmp_path):
    from bridges.builtin.testbed_gan import (
        TestbedGenerator,
        load_testbed_generator,
        save_testbed_generator,
    )

    torch.manual_seed(0)
    g = TestbedGenerator()
    save_testbed_generator(g, tmp_path / "g.npz", note="test")
    loaded = load_testbed_generator(tmp_path / "g.npz")
    for (k, a), (_, b) in zip(g.state_dict().items(), loaded.state_dict().items()):
        if a.dtype.is_floating_point:   # float16 storage: within half a float16 ulp
            torch.testing.assert_close(b, a.half().float(), rtol=0, atol=0, msg=k)
        else:
            torch.testing.assert_close(b, a, rtol=0, atol=0, msg=k)
    with pytest.raises(WeightsError, match="not found"):
        load_testbed_generator(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="cannot read"):
        load_testbed_generator(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", __meta__=np.array(json.dumps({"format": "x"})))
    with pytest.raises(WeightsError, match="not a testbed"):
        load_testbed_generator(tmp_path / "other.npz")
    with np.load(tmp_path / "g.npz") as data:
        arrays = {k: data[k] for k in data.files if k != "synthesis.init.conv.weight"}
    np.savez(tmp_path / "short.npz", **arrays)
    with pytest.raises(WeightsError, match="do not match"):
        load_testbed_generator(tmp_path / "short.npz")


def test_testbed_training_script_smoke(tmp_path):
    from bridges.builtin.testbed_gan import load_testbed_generator
    from bridges.builtin.train_testbed import main

    assert main(["--steps", "2", "--images", "64", "--batch-size", "8", "--feature-epochs", "0",
                 "--bn-batches", "1", "--out", str(tmp_path)]) == 0
    g = load_testbed_generator(tmp_path / "testbed_gan.npz")
    assert g.num_ws == 6
    prov = json.loads((tmp_path / "testbed_gan.json").read_text())
    assert prov["steps"] == 2 and prov["train_seconds"] > 0
    assert (tmp_path / "testbed_gan_samples.png").stat().st_size > 0
    assert main(["--steps", "-1", "--out", str(tmp_path)]) == 2


def test_shipped_testbed_feature_network(rng):
    """The FID feature network recognises the shape class of fresh testbed images
    (held-out accuracy 0.78 at training; here on 200 images, whose binomial spread
    is sqrt(p (1 - p) / 200), above 0.78 - LAMBDA of those) and gives features."""
    pytest.importorskip("flax")
    from bridges.builtin import load_testbed_features, testbed

    from .tolerances import LAMBDA

    net = load_testbed_features()
    images, factors = testbed.testbed_images(200, seed=int(rng.integers(2**31)))
    pred = net.predict(images * 2 - 1)
    assert pred.shape == (200, 9)
    accuracy = np.mean(pred[:, :3].argmax(axis=1) == factors.values[:, 0])
    assert accuracy >= 0.78 - LAMBDA * np.sqrt(0.78 * 0.22 / 200)
    assert net.features(images[:5] * 2 - 1).shape == (5, net.config.hidden)
