"""The streaming runner: passes of accumulators over a row source, sharded and resumable.

Everything computed over the rows of a :class:`~jaxfactor.sources.RowSource`
(moments, sketches, normal products, projections) is an accumulator
(:mod:`jaxfactor.accumulate`); this module is the one loop that feeds them.

* :func:`run_pass` reads the rows once, in blocks of ``block_rows``, and folds
  each block into every accumulator's state. It owns the row padding over a
  device mesh (:func:`jaxfactor.sharding.shard_block`: each block zero-padded
  to a multiple of the mesh size, the accumulators told how many rows are
  real), the bound on blocks queued by JAX's asynchronous dispatch
  (:class:`~jaxfactor.accumulate.InFlight`), progress callbacks and mid-pass
  checkpoints.
* :func:`run_passes` runs a sequence of :class:`Pass` es, each built from the
  results of the ones before (a flat ``context`` of arrays). With a
  :class:`Checkpoint` it saves the context at every pass boundary and the
  accumulator states every ``every`` blocks, resumes from the file after an
  interruption, and removes it when the last pass ends. A resumed run folds
  the same blocks into the same states in the same order, so it gives the
  same result, bit for bit, as one that was never interrupted.

Checkpoint files are ``.npz`` archives written atomically
(:func:`jaxfactor._io.atomic_write`) and read with ``allow_pickle=False``;
a file written by another run (another fingerprint) is refused.
"""
from __future__ import annotations

import json
import os
from functools import partial
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._io import atomic_write
from .accumulate import Accumulator, InFlight
from .sharding import replicated, shard_block
from .sources import RowSource

__all__ = ["Checkpoint", "Saved", "PassCheckpoint", "Pass", "as_checkpoint", "fingerprint",
           "key_data", "pack", "unpack", "run_pass", "run_passes"]

_FORMAT = 2  # version of the file layout below (1: randomized_svd_source's own format)


def fingerprint(run: dict) -> str:
    """A run's fingerprint: its defining sizes and settings as canonical JSON.

    Args:
      run: JSON-serialisable description (data shape, sizes, dtype, key data, ...).

    Examples:
      >>> from jaxfactor.streaming import fingerprint
      >>> fingerprint({"n": 50, "k": 2})
      '{"k": 2, "n": 50}'
    """
    return json.dumps(run, sort_keys=True)


def key_data(key: jax.Array) -> list:
    """The raw data of a ``jax.random`` key, as a list for a fingerprint.

    Examples:
      >>> import jax
      >>> from jaxfactor.streaming import key_data
      >>> key_data(jax.random.key(0))
      [0, 0]
    """
    return np.asarray(jax.random.key_data(key)).tolist()


class Saved(NamedTuple):
    """What a checkpoint file holds.

    Attributes:
      stage: index of the pass under way (or next to start).
      row: first row of that pass not yet folded in (0: the pass starts afresh).
      context: flat dict of arrays, the results of the passes before.
      states: flat dict ``'<name>.<i>'`` of the leaves of the accumulator
        states of the pass under way (empty at a pass boundary).
    """

    stage: int
    row: int
    context: dict
    states: dict


class Checkpoint(NamedTuple):
    """The checkpoint file of one resumable run.

    Attributes:
      path: the ``.npz`` file.
      fingerprint: the run's :func:`fingerprint`; a file with another one is refused.
      every: blocks between mid-pass saves (the context is saved at every
        pass boundary as well).
    """

    path: str
    fingerprint: str
    every: int = 16

    def load(self) -> Saved | None:
        """The saved progress of this run, or ``None`` when there is no file.

        Raises:
          ValueError: the file is not a checkpoint, or belongs to another run
            (other data shape, sizes, parameters or key).
        """
        if not os.path.exists(self.path):
            return None
        try:
            with np.load(self.path, allow_pickle=False) as f:
                arrays = {name: f[name] for name in f.files}
        except Exception as err:  # truncated, foreign or pickled: zipfile, EOF, OS, value errors
            raise ValueError(f"cannot read checkpoint {self.path!r}: {err}; delete it or pass "
                             f"another path") from err
        if not {"__fingerprint__", "__format__", "__stage__", "__row__"} <= set(arrays):
            raise ValueError(f"{self.path!r} is not a jaxfactor checkpoint (or one written by an "
                             f"older version); delete it or pass another path")
        if str(arrays["__fingerprint__"]) != self.fingerprint:
            raise ValueError(f"checkpoint {self.path!r} was written by a different run (other data "
                             f"shape, component count, range-finder sizes, parameters or key); "
                             f"delete it or pass another path")
        if int(arrays["__format__"]) != _FORMAT:
            raise ValueError(f"checkpoint {self.path!r} has format {int(arrays['__format__'])}; "
                             f"this version reads format {_FORMAT}: delete it")
        stage, row = int(arrays["__stage__"]), int(arrays["__row__"])
        context = {k[len("context."):]: v for k, v in arrays.items() if k.startswith("context.")}
        states = {k[len("state."):]: v for k, v in arrays.items() if k.startswith("state.")}
        return Saved(stage, row, context, states)

    def save(self, stage: int, row: int, context: dict, states: dict | None = None) -> None:
        """Write the progress atomically (a kill leaves the old file or the new one).

        Args:
          stage: index of the pass under way.
          row: first row of that pass not yet folded in.
          context: flat dict of arrays.
          states: dict of accumulator states (pytrees) of the pass under way.
        """
        arrays = {f"context.{k}": np.asarray(v) for k, v in context.items()}
        for name, state in (states or {}).items():
            for i, leaf in enumerate(jax.tree_util.tree_leaves(state)):
                arrays[f"state.{name}.{i}"] = np.asarray(leaf)
        atomic_write(self.path, lambda f: np.savez(
            f, __fingerprint__=np.array(self.fingerprint), __format__=np.array(_FORMAT),
            __stage__=np.array(stage), __row__=np.array(row), **arrays), suffix=".npz")

    def remove(self) -> None:
        """Delete the file (the run is complete)."""
        if os.path.exists(self.path):
            os.remove(self.path)


def as_checkpoint(path: str | os.PathLike | None, run: dict, every: int = 16) -> Checkpoint | None:
    """A :class:`Checkpoint` at ``path`` for the run described by ``run``, or
    ``None`` when ``path`` is ``None``.

    Examples:
      >>> from jaxfactor.streaming import as_checkpoint
      >>> as_checkpoint("run.npz", {"n": 50}, every=4)
      Checkpoint(path='run.npz', fingerprint='{"n": 50}', every=4)
      >>> as_checkpoint(None, {"n": 50}) is None
      True
    """
    if path is None:
        return None
    return Checkpoint(os.fspath(path), fingerprint(run), int(every))


def _restore_states(template: dict, saved: dict) -> dict:
    """States shaped like ``template`` with the leaves of ``saved`` (``'<name>.<i>'``)."""
    out = {}
    for name, state in template.items():
        leaves, treedef = jax.tree_util.tree_flatten(state)
        out[name] = jax.tree_util.tree_unflatten(
            treedef, [jnp.asarray(saved[f"{name}.{i}"]) for i in range(len(leaves))])
    return out


def pack(prefix: str, state: NamedTuple) -> dict:
    """A NamedTuple of arrays as flat context entries ``'<prefix>.<field>'``.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.accumulate import MomentsState
      >>> from jaxfactor.streaming import pack
      >>> sorted(pack("moments", MomentsState(np.int32(3), np.zeros(2), np.ones(2))))
      ['moments.count', 'moments.m2', 'moments.mean']
    """
    return {f"{prefix}.{name}": value for name, value in state._asdict().items()}


def unpack(prefix: str, cls, context: dict):
    """The NamedTuple ``cls`` from the context entries written by :func:`pack`.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.accumulate import MomentsState
      >>> from jaxfactor.streaming import pack, unpack
      >>> context = pack("moments", MomentsState(np.int32(3), np.zeros(2), np.ones(2)))
      >>> state = unpack("moments", MomentsState, context)
      >>> type(state).__name__, int(state.count), state.m2.shape
      ('MomentsState', 3, (2,))
    """
    return cls(**{name: context[f"{prefix}.{name}"] for name in cls._fields})


class PassCheckpoint(NamedTuple):
    """Where :func:`run_pass` saves mid-pass: the file, the pass's index and
    the context (results of earlier passes) to save beside the states."""

    file: Checkpoint
    stage: int
    context: dict


def run_pass(source: RowSource, accumulators: dict[str, Accumulator], states: dict, *,
             block_rows: int, dtype=jnp.float32, mesh=None, start_row: int = 0,
             progress: Callable[[int, int], None] | None = None,
             checkpoint: PassCheckpoint | None = None, in_flight: int = 2) -> dict:
    """One pass over the rows ``start_row:n``: fold every block into every state.

    For each block ``X_b`` (``(b, p)``, ``b <= block_rows``) and each name,
    ``states[name] <- accumulators[name].update(states[name], X_b)``. Over a
    mesh the block is zero-padded to a multiple of the mesh size and split by
    rows (:func:`jaxfactor.sharding.shard_block`), and the updates are called
    as ``update(state, block, n_valid)``. No host synchronisation per block
    beyond :class:`~jaxfactor.accumulate.InFlight`'s bound on queued blocks.

    Args:
      source: a row source of ``n`` rows.
      accumulators: name -> :class:`~jaxfactor.accumulate.Accumulator`.
      states: name -> starting state (placed as the updates expect it:
        replicated over ``mesh`` when there is one).
      block_rows: rows per block.
      dtype: dtype the blocks are converted to.
      mesh: a ``jax.sharding.Mesh`` (:func:`jaxfactor.sharding.row_mesh`) or ``None``.
      start_row: first row to read (a resumed pass).
      progress: optional ``callback(done_rows, total_rows)`` after each block.
      checkpoint: where to save the states every ``checkpoint.file.every``
        blocks (never after the last block: the caller saves what follows).
      in_flight: blocks that may be queued on the device at once.

    Returns:
      name -> state after the last row (not finalised, not waited on).

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.accumulate import moments
      >>> from jaxfactor.sources import ArraySource
      >>> from jaxfactor.streaming import run_pass
      >>> x, acc = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32), moments(8)
      >>> states = run_pass(ArraySource(x), {"m": acc}, {"m": acc.init()}, block_rows=16)
      >>> int(states["m"].count), bool(np.allclose(states["m"].mean, x.mean(0), atol=1e-6))
      (50, True)
    """
    n = source.n_samples
    queue = InFlight(in_flight)
    for n_blocks, lo in enumerate(range(start_row, n, block_rows), 1):
        hi = min(lo + block_rows, n)
        rows = source.read(lo, hi)
        if mesh is None:
            block = jnp.asarray(rows, dtype=dtype)
            states = {name: accumulators[name].update(st, block) for name, st in states.items()}
        else:
            block, n_valid = shard_block(rows, mesh, dtype=dtype)
            states = {name: accumulators[name].update(st, block, n_valid)
                      for name, st in states.items()}
        queue.add(states)
        if progress is not None:
            progress(hi, n)
        if checkpoint is not None and n_blocks % checkpoint.file.every == 0 and hi < n:
            checkpoint.file.save(checkpoint.stage, hi, checkpoint.context, states)
    return states


class Pass(NamedTuple):
    """One pass of a multi-pass computation.

    Attributes:
      name: label for progress callbacks (``'sketch'``, ``'power'``, ...).
      start: ``context -> (accumulators, states)``: the accumulators of the
        pass and their starting states, from the results of earlier passes.
        Called again on resume (then only the structure of the states is used).
      finish: ``(context, states) -> context``: the context for the passes
        after this one (a flat dict of arrays, what a checkpoint saves at the
        boundary), from the final states.
    """

    name: str
    start: Callable[[dict], tuple[dict[str, Accumulator], dict]]
    finish: Callable[[dict, dict], dict]


def _place(tree: Any, mesh):
    return tree if mesh is None else jax.device_put(tree, replicated(mesh))


def run_passes(source: RowSource, passes: Sequence[Pass], *, block_rows: int, dtype=jnp.float32,
               mesh=None, progress: Callable[[str, int, int], None] | None = None,
               checkpoint: Checkpoint | None = None, context: dict | None = None) -> dict:
    """Run ``passes`` in order over ``source``; resumable with a checkpoint.

    Without a file (or with none yet), pass ``i`` starts from
    ``passes[i].start(context)`` and its ``finish`` gives the context of pass
    ``i + 1``. With a ``checkpoint``, the context is saved after every pass
    but the last and the states every ``checkpoint.every`` blocks; an existing
    file of the same run is resumed from (earlier passes are skipped, the pass
    under way continues from its saved row and states); the file is removed
    when the last pass ends.

    Args:
      source: a row source.
      passes: the :class:`Pass` es, in order.
      block_rows, dtype, mesh: as for :func:`run_pass`.
      progress: optional ``callback(pass_name, done_rows, total_rows)``.
      checkpoint: a :class:`Checkpoint` or ``None``.
      context: the context of the first pass (default empty).

    Returns:
      The context after the last pass.

    Raises:
      ValueError: the checkpoint file belongs to another run.

    Examples:
      >>> import numpy as np
      >>> from jaxfactor.accumulate import moments
      >>> from jaxfactor.sources import ArraySource
      >>> from jaxfactor.streaming import Pass, run_passes
      >>> x, acc = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32), moments(8)
      >>> start = lambda ctx: ({"m": acc}, {"m": acc.init()})
      >>> passes = [Pass("mean", start, lambda ctx, st: {"mean": st["m"].mean}),
      ...           Pass("count", start, lambda ctx, st: {**ctx, "n": st["m"].count})]
      >>> context = run_passes(ArraySource(x), passes, block_rows=16)
      >>> sorted(context), int(context["n"])
      (['mean', 'n'], 50)
    """
    saved = checkpoint.load() if checkpoint is not None else None
    stage, row = 0, 0
    context = dict(context or {})
    if saved is not None:
        stage, row = saved.stage, saved.row
        context = {k: jnp.asarray(v) for k, v in saved.context.items()}
    context = _place(context, mesh)
    for i in range(stage, len(passes)):
        p = passes[i]
        accumulators, states = p.start(context)
        if i == stage and row:
            states = _restore_states(states, saved.states)
        states = _place(states, mesh)
        here = None if checkpoint is None else PassCheckpoint(checkpoint, i, context)
        states = run_pass(source, accumulators, states, block_rows=block_rows, dtype=dtype,
                          mesh=mesh, start_row=row if i == stage else 0,
                          progress=None if progress is None else partial(progress, p.name),
                          checkpoint=here)
        context = _place(p.finish(context, states), mesh)
        if checkpoint is not None and i + 1 < len(passes):
            checkpoint.save(i + 1, 0, context)
    if checkpoint is not None:
        checkpoint.remove()
    return context
