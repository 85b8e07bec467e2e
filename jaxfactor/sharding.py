"""Row sharding over a device mesh: the single device is the mesh of size one.

Engines run their ordinary jitted kernels on row-sharded inputs and let XLA's
SPMD partitioner (GSPMD) split the work: a product ``X Z`` with ``X`` sharded by
rows and ``Z`` replicated stays sharded; ``X^T Y`` becomes per-device partial
products followed by a collective sum (all-reduce); the small ``k x k`` and
``p x k`` factors stay replicated. No home-made communication code.

Multi-host: call ``jax.distributed.initialize()`` on every host first (with
``coordinator_address``, ``num_processes`` and ``process_id``, or from the
cluster's environment); ``jax.devices()`` then lists the devices of all hosts
and :func:`row_mesh` spans them. Each host feeds only its own rows, e.g. with
``jax.make_array_from_process_local_data(row_sharding(mesh), local_rows)``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["ROWS", "row_mesh", "row_sharding", "replicated", "shard_rows", "shard_block"]

ROWS = "rows"


def row_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``'rows'`` over ``devices`` (default: all devices).

    Args:
      devices: a sequence of ``jax.Device`` or ``None``.

    Returns:
      ``jax.sharding.Mesh`` of shape ``(len(devices),)``.

    Examples:
      >>> import jax
      >>> from jaxfactor.sharding import row_mesh
      >>> mesh = row_mesh()                             # all devices; one on a plain CPU
      >>> mesh.axis_names, mesh.devices.size == jax.device_count()
      (('rows',), True)
      >>> row_mesh(jax.devices()[:1]).devices.shape
      (1,)
    """
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.array(devices), (ROWS,))


def row_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the first (row) axis over the mesh.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxfactor.sharding import row_mesh, row_sharding
      >>> x = jax.device_put(jnp.ones((4, 3)), row_sharding(row_mesh()))
      >>> tuple(x.sharding.spec)                       # rows split, columns whole
      ('rows', None)
    """
    return NamedSharding(mesh, PartitionSpec(ROWS, None))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device of the mesh.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxfactor.sharding import replicated, row_mesh
      >>> w = jax.device_put(jnp.eye(3), replicated(row_mesh()))
      >>> tuple(w.sharding.spec), w.sharding.is_fully_replicated
      ((), True)
    """
    return NamedSharding(mesh, PartitionSpec())


def shard_rows(x, mesh: Mesh, *, pad_with_mean: bool = True) -> tuple[jax.Array, int]:
    """Place a matrix on ``mesh`` split by rows, padding rows to a multiple of
    the mesh size.

    Padding rows equal the column mean, so the mean of the padded matrix is
    the mean of ``x`` and padded rows add exactly zero to every centred
    product and second moment; callers divide by the true row count.
    ``pad_with_mean=False`` pads with zeros (for uncentred products).

    Args:
      x: ``(n, p)`` array (numpy or JAX).
      mesh: a mesh from :func:`row_mesh`.
      pad_with_mean: pad with the column mean (default) or zeros.

    Returns:
      ``(sharded, n)``: the ``(n_padded, p)`` row-sharded array and the true
      row count ``n``.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.sharding import row_mesh, shard_rows
      >>> mesh = row_mesh()
      >>> x, n = shard_rows(np.ones((5, 3), np.float32), mesh)
      >>> n, x.shape[0] % mesh.devices.size, bool(np.all(np.asarray(x) == 1))
      (5, 0, True)
    """
    x = jnp.asarray(x)
    n = x.shape[0]
    size = mesh.devices.size
    pad = (-n) % size
    if pad:
        fill = jnp.mean(x, axis=0, keepdims=True) if pad_with_mean else jnp.zeros((1, x.shape[1]), x.dtype)
        x = jnp.concatenate([x, jnp.broadcast_to(fill, (pad, x.shape[1]))], axis=0)
    return jax.device_put(x, row_sharding(mesh)), n


def shard_block(block, mesh: Mesh, *, dtype=None) -> tuple[jax.Array, np.int32]:
    """Place one row block of a stream on ``mesh`` split by rows, zero-padded.

    Unlike :func:`shard_rows`, the padding is zeros: the caller passes the
    returned count to the accumulators (``update(state, block, n_valid)``,
    :mod:`jaxfactor.accumulate`) or kernels (``n_valid``), which mask the
    padding out of moments and products. A host block is padded on the host
    (one copy, then one transfer per device); a JAX array stays on its device.

    Args:
      block: ``(b, p)`` rows (numpy or JAX).
      mesh: a mesh from :func:`row_mesh`.
      dtype: dtype to place the block in (default: the block's).

    Returns:
      ``(sharded, n_valid)``: the ``(b_padded, p)`` row-sharded block,
      ``b_padded`` the next multiple of the mesh size, and ``b`` as an int32
      scalar (a traced argument: every block count shares one compiled update).

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.sharding import row_mesh, shard_block
      >>> mesh = row_mesh()
      >>> block, n_valid = shard_block(np.ones((5, 3)), mesh, dtype=np.float32)
      >>> int(n_valid), block.dtype, block.shape[0] % mesh.devices.size
      (5, dtype('float32'), 0)
      >>> bool(np.all(np.asarray(block)[5:] == 0))      # zero padding, if any
      True
    """
    xp = jnp if isinstance(block, jax.Array) else np
    block = xp.asarray(block, dtype=dtype)
    rows = block.shape[0]
    pad = (-rows) % mesh.devices.size
    if pad:
        block = xp.concatenate([block, xp.zeros((pad, block.shape[1]), block.dtype)], axis=0)
    return jax.device_put(block, row_sharding(mesh)), np.int32(rows)
