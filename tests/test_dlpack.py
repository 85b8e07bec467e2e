"""DLPack hand-over between torch and JAX: values, dtypes, and shared memory on CPU."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from bridges.dlpack import jax_to_torch, shares_memory, torch_to_jax


def test_torch_to_jax_shares_memory_on_cpu(rng):
    # torch's allocator aligns buffers as XLA needs (64 bytes); a tensor over
    # a misaligned numpy buffer is copied instead (checked below)
    t = torch.tensor(rng.standard_normal((6, 5)), dtype=torch.float32)
    assert t.data_ptr() % 64 == 0
    a = torch_to_jax(t)
    assert isinstance(a, jax.Array) and a.shape == (6, 5) and a.dtype == jnp.float32
    assert shares_memory(t, a)
    t[2, 3] = 123.0  # a write through torch is seen by the JAX array: one buffer
    assert float(a[2, 3]) == 123.0
    np.testing.assert_array_equal(np.asarray(a), t.numpy())
    shifted = torch.zeros(17)[1:]  # 4-byte offset: not adoptable, copied, still correct
    b = torch_to_jax(shifted)
    assert not shares_memory(shifted, b) and np.asarray(b).shape == (16,)


def test_jax_to_torch_shares_memory_on_cpu(rng):
    a = jnp.asarray(rng.standard_normal((4, 3)).astype(np.float32))
    t = jax_to_torch(a)
    assert isinstance(t, torch.Tensor) and tuple(t.shape) == (4, 3) and t.dtype == torch.float32
    assert shares_memory(t, a)
    np.testing.assert_array_equal(t.numpy(), np.asarray(a))
    back = torch_to_jax(t)
    assert back.unsafe_buffer_pointer() == a.unsafe_buffer_pointer()


def test_non_contiguous_and_autograd_tensors_are_handed_over_correctly(rng):
    base = torch.from_numpy(rng.standard_normal((5, 7)).astype(np.float32))
    view = base.T  # strided view: copied once, values intact
    np.testing.assert_array_equal(np.asarray(torch_to_jax(view)), base.numpy().T)
    w = torch.ones(3, requires_grad=True) * 2
    np.testing.assert_array_equal(np.asarray(torch_to_jax(w)), [2, 2, 2])
    for dtype in (torch.float64, torch.int32, torch.float16):
        x = torch.arange(6, dtype=dtype).reshape(2, 3)
        got = np.asarray(torch_to_jax(x))
        np.testing.assert_array_equal(got.astype(np.float64), x.double().numpy())
    with pytest.raises(TypeError, match="torch.Tensor"):
        torch_to_jax(np.ones(3))
