"""Bad input, tried systematically: every public estimator, the row sources and
the CLI fed malformed arrays, hyper-parameters and files.

The contract (docs in /work/shared/DESIGN.md, "What users get on bad input";
code in jaxfactor/_validation.py and jaxfactor/_params.py):

* integer and boolean input is converted to floating point, not refused;
* complex -> ``ValueError``; non-numeric (str, bytes, non-numeric objects,
  datetime) -> ``TypeError``; NaN/inf -> ``ValueError`` with the counts; not
  2-D -> ``ValueError``; too few rows or columns -> ``ValueError``;
* bad hyper-parameters -> ``InvalidParameterError`` (a ``ValueError`` and a
  ``TypeError``) at the start of ``fit``; ``n_components`` larger than the
  data -> ``ValueError`` naming the size; transform with the wrong width ->
  ``ValueError``;
* all of it before any kernel runs (checked by making every kernel fail the
  test when called), and a fitted result never holds NaN or inf;
* ``.npy`` files: a clear ``ValueError``/``TypeError`` naming the file,
  loading never unpickles; a missing file is a ``FileNotFoundError`` naming
  it; Fortran-ordered, big-endian and integer files give the same result as
  the C-ordered float32 file of the same values;
* the CLI: exit code 2, exactly one line on stderr, no traceback, no output
  or temporary file left behind. Argument-syntax errors follow the same rule:
  the parser prints one ``error:`` line pointing at ``--help`` instead of
  argparse's usage block.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import os
import pickle
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import NamedTuple
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxfactor import PCA, SCA, FastICA, NpySource, SeFa
from jaxfactor._params import InvalidParameterError
from jaxfactor.directions import save_directions
from jaxfactor.sources import CallableSource

ROOT = Path(__file__).resolve().parents[1]
GEN = "bridges.builtin:load_builtin_generator"

ESTIMATORS = [PCA, FastICA, SCA, SeFa]
SOURCE_ESTIMATORS = [PCA, FastICA, SCA]  # SeFa takes weights, not row sources

# Few shapes for inputs that reach the kernels: each new shape compiles them again.
VALID_SHAPES = [(8, 4), (6, 3)]
K = 2

SETTINGS = {"deadline": None, "derandomize": True, "database": None,
            "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}

# The kernels each estimator hands its validated input to (looked up as module
# globals at call time, so patching them here intercepts the estimators' calls).
KERNELS = {
    "jaxfactor.estimators.pca": ("pca_full", "randomized_svd", "randomized_svd_source"),
    "jaxfactor.estimators.ica": ("whiten", "whiten_source", "fastica"),
    "jaxfactor.estimators.sca": ("sca", "sca_source"),
    "jaxfactor.estimators.sefa": ("stack_normalized", "sefa_directions"),
}

# Exceptions that subclass ValueError/TypeError but mean a bug, not a refusal.
NOT_A_REFUSAL = (LookupError, ArithmeticError, UnicodeError)


@contextlib.contextmanager
def kernels_forbidden():
    """Make every kernel fail the test when reached: refusals come before the work."""
    with contextlib.ExitStack() as stack:
        for module_name, names in KERNELS.items():
            module = importlib.import_module(module_name)
            for name in names:
                assert callable(getattr(module, name)), (module_name, name)
                stack.enter_context(mock.patch.object(
                    module, name, side_effect=AssertionError(f"{module_name}.{name} reached")))
        yield


def refused(fit, exc, match, *, forbid_kernels=True):
    """Run ``fit()``; it must raise ``exc`` (a ValueError/TypeError family)
    whose message matches ``match``. Returns the exception."""
    guard = kernels_forbidden() if forbid_kernels else contextlib.nullcontext()
    with guard, pytest.raises(exc, match=match) as info:
        fit()
    assert not isinstance(info.value, NOT_A_REFUSAL), repr(info.value)
    return info.value


def fitted_floats(est) -> dict:
    """The fitted float attributes (trailing underscore) of ``est``."""
    out = {}
    for name, value in vars(est).items():
        if name.endswith("_") and not name.startswith("_") and isinstance(
                value, (float, np.floating, np.ndarray, jax.Array)):
            arr = np.asarray(value)
            if arr.dtype.kind == "f":
                out[name] = arr
    return out


def assert_finite_fit(est):
    floats = fitted_floats(est)
    assert "components_" in floats
    bad = [name for name, arr in floats.items() if not np.all(np.isfinite(arr))]
    assert not bad, f"{type(est).__name__} fitted non-finite {bad}"


# ----------------------------------------------------------------- strategies


class Case(NamedTuple):
    """A malformed input with the exception and message it must raise."""

    x: object
    exc: type
    match: str


sizes = st.integers(1, 12)
finite32 = st.floats(-1e3, 1e3, width=32)


@st.composite
def nonfinite_matrices(draw, width=None):
    """Valid float data with NaN/+inf/-inf at random positions (counted in the message)."""
    n, p = draw(st.integers(2, 12)), width or draw(sizes)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    x = draw(hnp.arrays(dtype, (n, p), elements=finite32))
    where = draw(st.lists(st.integers(0, n * p - 1), min_size=1, max_size=n * p, unique=True))
    values = draw(st.lists(st.sampled_from([math.nan, math.inf, -math.inf]),
                           min_size=len(where), max_size=len(where)))
    x.flat[where] = values
    n_nan, n_inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
    return Case(x, ValueError, rf"\b{n_nan} NaN and {n_inf} inf values")


empty_matrices = st.one_of(
    st.tuples(st.just(0), st.integers(0, 12)), st.tuples(st.integers(2, 12), st.just(0)),
).map(lambda shape: Case(np.zeros(shape, np.float32), ValueError, r"\b0 (sample|feature)\(s\)"))

one_d = st.integers(0, 12).map(
    lambda n: Case(np.arange(n, dtype=np.float32), ValueError, "Expected 2D array, got 1D array"))
zero_d = finite32.map(lambda v: Case(np.float32(v), ValueError, "Expected 2D array, got 0D array"))
three_d = st.tuples(sizes, sizes, st.integers(1, 4)).map(
    lambda s: Case(np.ones(s, np.float32), ValueError, "Expected 2D array, got 3D array"))

shapes = st.tuples(st.integers(2, 12), sizes)
# no i, n, f: float() reads "nan", "inf" and "infinity" as numbers
words = st.text(alphabet="abcdeghjklm", min_size=1, max_size=4)
str_arrays = shapes.flatmap(lambda s: hnp.arrays("<U4", s, elements=st.text(max_size=4))).map(
    lambda x: Case(x, TypeError, r"dtype <U4"))
bytes_arrays = shapes.flatmap(lambda s: hnp.arrays("S4", s, elements=st.binary(max_size=4))).map(
    lambda x: Case(x, TypeError, r"dtype \|S4"))
object_words = shapes.flatmap(lambda s: hnp.arrays(object, s, elements=words)).map(
    lambda x: Case(x, TypeError, "non-numeric"))
complex_arrays = st.tuples(shapes, st.sampled_from([np.complex64, np.complex128])).flatmap(
    lambda sd: hnp.arrays(sd[1], sd[0], elements=st.complex_numbers(
        max_magnitude=1e3, allow_nan=False, allow_infinity=False,
        width=8 * np.dtype(sd[1]).itemsize))).map(
    lambda x: Case(x, ValueError, "Complex data not supported"))
datetimes = shapes.map(lambda s: Case(np.zeros(s, "datetime64[s]"), TypeError, "datetime64"))


def malformed_arrays(est):
    """Every malformed kind; 3-D is a weight stack (L, C, d) for SeFa, so not malformed there."""
    kinds = [nonfinite_matrices(), empty_matrices, one_d, zero_d, str_arrays, bytes_arrays,
             object_words, complex_arrays, datetimes]
    if est is not SeFa:
        kinds.append(three_d)
    return st.one_of(*kinds)


@st.composite
def valid_matrices(draw):
    """Integer, boolean and float arrays (and nested lists) that must be accepted."""
    shape = draw(st.sampled_from(VALID_SHAPES))
    dtype = np.dtype(draw(st.sampled_from(
        [np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_,
         np.float16, np.float32, np.float64])))
    if dtype.kind == "b":
        elements = st.booleans()
    elif dtype.kind == "u":
        elements = st.integers(0, 100)
    elif dtype.kind == "i":
        elements = st.integers(-100, 100)
    else:
        elements = st.floats(-1e3, 1e3, width=8 * dtype.itemsize)
    x = draw(hnp.arrays(dtype, shape, elements=elements))
    return x.tolist() if draw(st.booleans()) and dtype.kind != "f" else x


bad_hyper_n_components = st.one_of(
    st.integers(-1000, 0), st.integers(-5, 0).map(np.int64),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3), st.booleans(),
    st.lists(st.integers(1, 3), min_size=1, max_size=2), st.just(np.float64(2.0)),
)


# ------------------------------------------------------------ arrays in memory


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: e.__name__)
def test_the_kernel_guard_stops_a_valid_fit(est):
    x = np.random.default_rng(2).normal(size=VALID_SHAPES[0]).astype(np.float32)
    with kernels_forbidden(), pytest.raises(AssertionError, match="reached"):
        est(K).fit(x)


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: e.__name__)
@settings(max_examples=40, **SETTINGS)
@given(data=st.data())
def test_malformed_arrays_are_refused_before_any_kernel(est, data):
    case = data.draw(malformed_arrays(est))
    model = est(K)
    refused(lambda: model.fit(case.x), case.exc, case.match)
    assert not hasattr(model, "components_")


@pytest.mark.filterwarnings("ignore::jaxfactor.ConvergenceWarning")  # random data, few rows
@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: e.__name__)
@settings(max_examples=25, **SETTINGS)
@given(x=valid_matrices())
def test_integer_boolean_and_float_input_is_accepted_with_finite_results(est, x):
    model = est(K)
    try:
        model.fit(x)
    except ValueError as err:
        # random small integers can be rank deficient, which FastICA refuses (documented)
        assert est is FastICA and ("rank" in str(err) or "variance" in str(err)), err
        return
    assert_finite_fit(model)
    scores = model.transform(np.asarray(x, np.float32))
    assert scores.shape == (len(x), K) and np.all(np.isfinite(scores))


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: e.__name__)
@settings(max_examples=30, **SETTINGS)
@given(k=bad_hyper_n_components)
def test_malformed_n_components_is_an_invalid_parameter(est, k):
    assume(not (est is PCA and isinstance(k, float) and 0 < k < 1))  # PCA: a variance fraction
    x = np.ones(VALID_SHAPES[0], np.float32)
    err = refused(lambda: est(k).fit(x), InvalidParameterError, "'n_components' parameter")
    assert isinstance(err, ValueError) and isinstance(err, TypeError)


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: e.__name__)
@settings(max_examples=25, **SETTINGS)
@given(shape=shapes, extra=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_n_components_larger_than_the_data_names_the_size(est, shape, extra, seed):
    n, p = shape
    # FastICA whitens after centring (rank n - 1); SeFa's limit is the latent dimension
    limit = {FastICA: min(n - 1, p), SeFa: p}.get(est, min(n, p))
    k = limit + extra
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    err = refused(lambda: est(k).fit(x), ValueError, rf"n_components={k}\b")
    assert not isinstance(err, InvalidParameterError)  # a valid int; the data are too small
    assert any(s in str(err) for s in (f"({n}, {p})", f"n_features={p}", f"{n} samples",
                                       f"d={p}")), err


@cache
def fitted(est):
    x = np.random.default_rng(7).normal(size=VALID_SHAPES[0]).astype(np.float32)
    return est(K).fit(x)


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: e.__name__)
@settings(max_examples=25, **SETTINGS)
@given(n=sizes, width=sizes, data=st.data())
def test_transform_with_the_wrong_width_is_refused(est, n, width, data):
    model = fitted(est)
    p = VALID_SHAPES[0][1]
    if width != p:
        refused(lambda: model.transform(np.ones((n, width), np.float32)), ValueError,
                rf"X has {width} features, but {est.__name__} is expecting {p} features")
    if width != K:
        refused(lambda: model.inverse_transform(np.ones((n, width), np.float32)), ValueError,
                rf"X has {width} components, but {est.__name__} was fitted with {K}")
    case = data.draw(nonfinite_matrices(width=p))
    refused(lambda: model.transform(case.x), case.exc, case.match)


def _torch():
    return pytest.importorskip("torch")


def _nan_at_corner(x):
    x = np.array(x)
    x[-1, -1] = np.nan
    return x


TENSOR_CASES = {
    # name: (make the input from an (8, 4) float32 array, exception or None, message)
    "torch-nan": (lambda x: _torch().from_numpy(_nan_at_corner(x)), ValueError, "1 NaN and 0 inf"),
    "torch-complex": (lambda x: _torch().from_numpy(x.astype(np.complex64)), ValueError,
                      "Complex data not supported"),
    "torch-1d": (lambda x: _torch().from_numpy(x[:, 0].copy()), ValueError, "got 1D array"),
    "torch-int": (lambda x: _torch().from_numpy((x * 10).astype(np.int32)), None, None),
    "torch-bool": (lambda x: _torch().from_numpy(x > 0), None, None),
    "torch-requires-grad": (lambda x: _torch().tensor(x, requires_grad=True), None, None),
    "jax-inf": (lambda x: jnp.asarray(x).at[0, 0].set(jnp.inf), ValueError, "0 NaN and 1 inf"),
    "jax-complex": (lambda x: jnp.asarray(x, jnp.complex64), ValueError, "Complex data not supported"),
    "jax-3d": (lambda x: jnp.asarray(x)[:, :, None], ValueError, "got 3D array"),
    "jax-int": (lambda x: jnp.asarray((x * 10).astype(np.int32)), None, None),
}


@pytest.mark.parametrize("case", sorted(TENSOR_CASES))
@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: e.__name__)
def test_torch_and_jax_input(est, case):
    make, exc, match = TENSOR_CASES[case]
    if est is SeFa and case == "jax-3d":
        pytest.skip("a 3-D array is a weight stack for SeFa")
    x = make(np.random.default_rng(3).normal(size=VALID_SHAPES[0]).astype(np.float32))
    if exc is None:
        assert_finite_fit(est(K).fit(x))
    else:
        refused(lambda: est(K).fit(x), exc, match)


@pytest.mark.parametrize("est", SOURCE_ESTIMATORS, ids=lambda e: e.__name__)
def test_a_nan_in_a_large_input_is_refused_at_once(est):
    x = np.zeros((20000, 64), np.float32)
    x[-1, -1] = np.nan
    start = time.perf_counter()
    refused(lambda: est(8).fit(x), ValueError, "1 NaN and 0 inf")
    assert time.perf_counter() - start < 5.0


def test_sefa_weight_lists_are_checked_matrix_by_matrix():
    w = np.ones((5, 4), np.float32)
    refused(lambda: SeFa(2).fit([w, np.ones((3, 5), np.float32)]), ValueError,
            "share the latent dimension")
    refused(lambda: SeFa(2).fit([w, _nan_at_corner(w)]), ValueError, r"weights\[1\] contains 1 NaN")
    refused(lambda: SeFa(2).fit([w, w.astype(np.complex64)]), ValueError, "Complex")
    refused(lambda: SeFa(2).fit(np.ones((2, 0, 4), np.float32)), ValueError, "0 sample")


def test_ragged_nested_lists_are_a_value_error():
    refused(lambda: PCA(1).fit([[1.0, 2.0], [3.0]]), ValueError, "X cannot be converted")


@pytest.mark.skipif(jax.config.jax_enable_x64, reason="float64 is kept under x64")
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: e.__name__)
def test_float64_values_beyond_float32_are_named_as_such(est):
    x = np.random.default_rng(5).normal(size=VALID_SHAPES[0]) * 1e300
    refused(lambda: est(K).fit(x), ValueError, "beyond the range of float32")


@pytest.mark.filterwarnings("ignore::jaxfactor.ConvergenceWarning")
@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: e.__name__)
def test_arithmetic_overflow_is_an_error_not_a_nan_result(est):
    # finite float32 data whose squares overflow float32 (1e19^2 > 3.4e38)
    x = (np.random.default_rng(6).normal(size=VALID_SHAPES[0]) * 1e19).astype(np.float32)
    model = est(K)
    try:
        model.fit(x)
    except ValueError as err:
        assert "overflow" in str(err)
        assert not hasattr(model, "components_")  # not left half-fitted
    else:
        assert_finite_fit(model)


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: e.__name__)
def test_fortran_ordered_arrays_give_the_c_ordered_result(est):
    x = np.random.default_rng(8).normal(size=VALID_SHAPES[0]).astype(np.float32)
    c, f = est(K).fit(x), est(K).fit(np.asfortranarray(x))
    np.testing.assert_array_equal(f.components_, c.components_)


# ----------------------------------------------------------------- row sources


class Boom:
    """Unpickling this creates ``marker``: proof that a loader ran a pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _npy(path, arr, **kw):
    np.save(path, arr, **kw)
    return path


BASE = np.random.default_rng(11).normal(size=VALID_SHAPES[0]).astype(np.float32)

NPY_CASES = {
    # name: (write the file into tmp_path, exception, message besides the file name)
    "truncated": (lambda d: _write(d / "truncated.npy", (_npy(d / "t.npy", BASE)).read_bytes()[:-7]),
                  ValueError, "cannot read"),
    "truncated-header": (lambda d: _write(d / "truncated-header.npy",
                                          _npy(d / "t.npy", BASE).read_bytes()[:40]),
                         ValueError, "cannot read"),
    "bad-header": (lambda d: _write(d / "bad-header.npy", b"\x93NUMPY\x01\x00{garbage" + b"\0" * 200),
                   ValueError, "cannot read"),
    "empty-file": (lambda d: _write(d / "empty-file.npy", b""), ValueError, "cannot read"),
    "garbage": (lambda d: _write(d / "garbage.npy", bytes(range(256)) * 4), ValueError, "cannot read"),
    "pickled-object-array": (lambda d: _npy(d / "pickled-object-array.npy",
                                            np.array([[Boom(d / "PWNED"), 1.0]], dtype=object),
                                            allow_pickle=True), ValueError, "cannot read"),
    "raw-pickle": (lambda d: _write(d / "raw-pickle.npy", pickle.dumps(Boom(d / "PWNED"))),
                   ValueError, "cannot read"),
    "complex": (lambda d: _npy(d / "complex.npy", BASE.astype(np.complex64)), ValueError,
                "Complex data not supported"),
    "str": (lambda d: _npy(d / "str.npy", BASE.astype("<U8")), TypeError, "dtype <U8"),
    "datetime": (lambda d: _npy(d / "datetime.npy", np.zeros((8, 4), "datetime64[s]")), TypeError,
                 "datetime64"),
    "structured": (lambda d: _npy(d / "structured.npy", np.zeros((8, 4), [("a", "f4")])), TypeError,
                   "dtype"),
    "1d": (lambda d: _npy(d / "1d.npy", BASE[:, 0]), ValueError, "1-D array"),
    "3d": (lambda d: _npy(d / "3d.npy", BASE[:, :, None]), ValueError, "3-D array"),
    "no-rows": (lambda d: _npy(d / "no-rows.npy", BASE[:0]), ValueError, r"0 sample\(s\)"),
    "no-columns": (lambda d: _npy(d / "no-columns.npy", BASE[:, :0]), ValueError, r"0 feature\(s\)"),
    "missing": (lambda d: d / "missing.npy", FileNotFoundError, "no such"),
}


@pytest.mark.timeout(60)  # a bad file must never hang the loader
@pytest.mark.parametrize("wrap", ["path", "NpySource"])
@pytest.mark.parametrize("case", sorted(NPY_CASES))
@pytest.mark.parametrize("est", SOURCE_ESTIMATORS, ids=lambda e: e.__name__)
def test_bad_npy_files_are_refused_naming_the_file(est, case, wrap, tmp_path):
    write, exc, match = NPY_CASES[case]
    path = write(tmp_path)
    x = (lambda: path) if wrap == "path" else (lambda: NpySource(path))
    err = refused(lambda: est(K).fit(x()), exc, match)
    assert path.name in str(err)
    assert not (tmp_path / "PWNED").exists(), "a pickle was executed"


@pytest.mark.parametrize("est", SOURCE_ESTIMATORS, ids=lambda e: e.__name__)
def test_nan_in_an_npy_file_is_refused_naming_the_file_and_rows(est, tmp_path):
    x = BASE.copy()
    x[5, 1] = np.nan
    path = _npy(tmp_path / "holes.npy", x)
    model = est(K, block_rows=4)
    # a source is read as the kernels go: refused at the first block that holds a NaN
    err = refused(lambda: model.fit(path), ValueError, r"1 NaN and 0 inf values in rows 4:8",
                  forbid_kernels=False)
    assert "holes.npy" in str(err) and not hasattr(model, "components_")


def test_nan_from_a_device_source_is_refused_by_the_end_of_the_first_pass():
    x = np.random.default_rng(12).normal(size=(12, 3)).astype(np.float32)
    clean = CallableSource(lambda lo, hi: jnp.asarray(x[lo:hi]), 12, 3)
    assert_finite_fit(PCA(K, block_rows=4).fit(clean))
    holes = x.copy()
    holes[9, 0] = np.inf
    dirty = CallableSource(lambda lo, hi: jnp.asarray(holes[lo:hi]), 12, 3)
    refused(lambda: PCA(K, block_rows=4).fit(dirty), ValueError, "1 NaN or inf values",
            forbid_kernels=False)


def test_a_large_complex_npy_file_is_refused_before_reading_it(tmp_path):
    path = _npy(tmp_path / "big.npy", np.zeros((5000, 64), np.complex64))
    start = time.perf_counter()
    for est in SOURCE_ESTIMATORS:
        refused(lambda est=est: est(8).fit(path), ValueError, "Complex data not supported")
    assert time.perf_counter() - start < 5.0


ACCEPTED_FILES = {
    # name: (values as written, in that dtype/order); compared with a C-ordered float32 file
    "int32": lambda v: v.astype(np.int32),
    "int64": lambda v: v.astype(np.int64),
    "uint8": lambda v: (v + 50).astype(np.uint8),
    "bool": lambda v: v > 0,
    "float16": lambda v: v.astype(np.float16),
    "float64": lambda v: v.astype(np.float64),
    "big-endian": lambda v: v.astype(">f4"),
    "fortran": lambda v: np.asfortranarray(v.astype(np.float32)),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED_FILES))
@pytest.mark.parametrize("est", SOURCE_ESTIMATORS, ids=lambda e: e.__name__)
def test_accepted_npy_files_give_the_float32_result(est, case, tmp_path):
    values = np.random.default_rng(13).integers(-50, 50, size=VALID_SHAPES[0])
    stored = ACCEPTED_FILES[case](values)
    path = _npy(tmp_path / f"{case}.npy", stored)
    ref = _npy(tmp_path / "ref.npy", np.ascontiguousarray(stored, np.float32))
    if case == "fortran":
        assert np.load(path).flags.f_contiguous
    got, want = est(K).fit(path), est(K).fit(ref)
    assert_finite_fit(got)
    np.testing.assert_array_equal(got.components_, want.components_)


# ------------------------------------------------------------------------ CLI

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="the CLI commands need the torch extra")


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    """Input files for the CLI cases, in their own directory."""
    d = tmp_path_factory.mktemp("cli-in")
    good = save_directions(d / "good.npz", np.random.default_rng(14).normal(size=(3, 64)),
                           method="pca", space="z")
    raw = Path(good).read_bytes()
    _write(d / "truncated.npz", raw[: len(raw) // 2])
    _write(d / "garbage.npz", bytes(range(256)) * 8)
    _write(d / "pickled.npz", pickle.dumps(Boom(d / "PWNED")))
    np.savez(d / "objects.npz", directions=np.array([Boom(d / "PWNED")], dtype=object))
    _npy(d / "plain.npy", np.ones((3, 64), np.float32))
    return d


def _discover(*extra, out="d.npz", layer="z", method="pca", components="2"):
    return ["discover", "--generator", GEN, "--layer", layer, "--method", method,
            "--components", components, "--samples", "64", *extra, "--out", out]


def _edit(directions, *extra, out="g.png"):
    return ["edit", "--generator", GEN, "--directions", directions, *extra, "--out", out]


# Run in a subprocess (python -m jaxfactor): what a user sees, tracebacks included.
# name: (argv with {in}/{out} placeholders, a fragment the one error line must hold)
SUBPROCESS_CASES = {
    "unknown-generator": (["discover", "--generator", "no_such_module_xyz:make", "--layer", "z",
                           "--method", "pca", "--components", "2", "--samples", "64",
                           "--out", "{out}/d.npz"], "no_such_module_xyz"),
    "bad-layer": (_discover(layer="synthesis.nope", out="{out}/d.npz"), "synthesis.nope"),
    "components-abc": (_discover(components="abc", out="{out}/d.npz"), "'abc'"),
    "out-into-a-missing-directory": (_discover(out="{out}/no/such/dir/d.npz"), "does not exist"),
    "truncated-directions": (_edit("{in}/truncated.npz", out="{out}/g.png"), "truncated.npz"),
    "pickled-directions": (_edit("{in}/pickled.npz", out="{out}/g.png"), "pickled.npz"),
    "alphas-nan": (_edit("{in}/good.npz", "--alphas", "nan", "1", out="{out}/g.png"), "'nan'"),
}

# Run in this process through cli.main (cheap after the first): more of the same.
IN_PROCESS_CASES = {
    "missing-directions": (_edit("{in}/missing.npz", out="{out}/g.png"), "missing.npz"),
    "garbage-directions": (_edit("{in}/garbage.npz", out="{out}/g.png"), "garbage.npz"),
    "object-array-directions": (_edit("{in}/objects.npz", out="{out}/g.png"), "objects.npz"),
    "plain-npy-directions": (_edit("{in}/plain.npy", out="{out}/g.png"), "plain.npy"),
    "evaluate-truncated-directions": (["evaluate", "--generator", GEN, "--directions",
                                       "{in}/truncated.npz", "--out", "{out}/e.json"],
                                      "truncated.npz"),
    "alphas-inf": (_edit("{in}/good.npz", "--alphas", "0", "inf", out="{out}/g.png"), "'inf'"),
    "components-0": (_discover(components="0", out="{out}/d.npz"), "--components"),
    "components-negative": (_discover(components="-1", out="{out}/d.npz"), "--components"),
    "ica-components-beyond-the-data": (_discover(method="ica", components="1000",
                                                 out="{out}/d.npz"), "n_components=1000"),
    "samples-0": (_discover(out="{out}/d.npz") + ["--samples", "0"], "--samples"),
    "pool-size-0": (_discover("--pool", "max", "--pool-size", "0", layer="synthesis.init",
                              out="{out}/d.npz"), "--pool-size"),
    "sca-components-beyond-the-data": (_discover(method="sca", components="65", out="{out}/d.npz"),
                                       "n_components=65"),
    "out-is-a-directory": (_discover(out="{out}"), "is a directory"),
    "unknown-method": (_discover(method="nmf", out="{out}/d.npz"), "nmf"),
    "missing-arguments": (["discover", "--method", "pca"], "required"),
}


def _argv(template, files: Path, out: Path):
    return [a.replace("{in}", str(files)).replace("{out}", str(out)) for a in template]


def _check_one_error_line(code, stdout, stderr, command, fragment, out: Path, files: Path):
    assert "Traceback" not in stdout + stderr, stderr
    assert code == 2, (code, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"jaxfactor {command}: error: "), lines[0]
    assert fragment in lines[0], lines[0]
    assert sorted(os.listdir(out)) == [], "output or temporary files left behind"
    assert not (files / "PWNED").exists(), "a pickle was executed"


@pytest.fixture(scope="module")
def cli_runs(cli_files, tmp_path_factory):
    """All subprocess cases, three at a time: ``name -> (out dir, CompletedProcess)``."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    outs = {name: tmp_path_factory.mktemp(f"cli-out-{name}") for name in SUBPROCESS_CASES}

    def run(name):
        out = outs[name]
        argv = _argv(SUBPROCESS_CASES[name][0], cli_files, out)
        proc = subprocess.run([sys.executable, "-m", "jaxfactor", *argv], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
        return name, (out, proc)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(run, sorted(SUBPROCESS_CASES)))


@needs_torch
@pytest.mark.parametrize("name", sorted(SUBPROCESS_CASES))
def test_cli_subprocess_bad_input_exits_2_with_one_line(name, cli_runs, cli_files):
    out, proc = cli_runs[name]
    argv, fragment = SUBPROCESS_CASES[name]
    _check_one_error_line(proc.returncode, proc.stdout, proc.stderr, argv[0], fragment, out,
                          cli_files)


@needs_torch
@pytest.mark.parametrize("name", sorted(IN_PROCESS_CASES))
def test_cli_bad_input_exits_2_with_one_line(name, cli_files, tmp_path, capsys):
    from jaxfactor.app.cli import main

    template, fragment = IN_PROCESS_CASES[name]
    if template[0] == "evaluate" and not all(
            importlib.util.find_spec(m) for m in ("torchvision", "pytorch_fid")):
        pytest.skip("evaluate needs torchvision and pytorch-fid")
    out = tmp_path / "out"
    out.mkdir()
    try:
        code = main(_argv(template, cli_files, out))
    except SystemExit as exc:  # argparse's exit
        code = exc.code
    captured = capsys.readouterr()
    _check_one_error_line(code, captured.out, captured.err, template[0], fragment, out, cli_files)
