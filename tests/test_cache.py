"""CachedSource and ActivationStream(cache=...): rows kept on disk by the first
pass, bit-identical to the source, resumable after a kill, refused when stale."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from bridges.activations import ActivationStream
from jaxfactor import PCA
from jaxfactor.sources import ArraySource, CachedSource, RowSource

from .helpers import ROOT, KilledSource, low_rank_data, subprocess_env
from .test_generators import TinyFastGAN


class Counting(RowSource):
    """Rows of ``inner`` (a source or a 2-D array), counting reads, rows and passes."""

    def __init__(self, inner):
        self.inner = inner if isinstance(inner, RowSource) else ArraySource(inner)
        self.n_samples, self.n_features = self.inner.n_samples, self.inner.n_features
        self.dtype = self.inner.dtype
        self.reads, self.rows, self.passes, self.ranges = 0, 0, 0, []

    def read(self, start, stop):
        self.reads += 1
        self.rows += stop - start
        self.passes += start == 0
        self.ranges.append((start, stop))
        return self.inner.read(start, stop)


def _full_pass(src, block):
    return np.concatenate(list(src.blocks(block)))


def test_rows_are_the_source_rows_and_later_passes_read_only_the_file(rng, tmp_path):
    n, p = 57, 5
    x = rng.standard_normal((n, p)).astype(np.float32)
    path = str(tmp_path / "rows.npy")
    src = Counting(x)
    cached = CachedSource(src, path, description={"data": "x"}, save_every=3)
    assert cached.shape == (n, p) and cached.dtype == np.float32 and not cached.complete
    # arbitrary ranges, overlapping and out of order: each row comes from the source once
    for _ in range(12):
        lo = int(rng.integers(0, n))
        hi = int(rng.integers(lo, n + 1))
        got = cached.read(lo, hi)
        assert isinstance(got, np.ndarray) and got.shape == (hi - lo, p)
        np.testing.assert_array_equal(got, x[lo:hi])
    for block in (7, 1, 20, n):
        np.testing.assert_array_equal(_full_pass(cached, block), x)
    assert cached.complete and cached.filled == ((0, n),)
    assert src.rows == n  # every row read from the source exactly once, whatever the ranges
    assert sorted(os.listdir(tmp_path)) == ["rows.npy", "rows.npy.json"]
    reads = src.reads
    np.testing.assert_array_equal(_full_pass(cached, 11), x)
    assert src.reads == reads  # a second full pass never reads the source
    # a returned block is a fresh array: changing it changes neither the file nor later reads
    block = cached.read(3, 9)
    block[:] = 0
    np.testing.assert_array_equal(cached.read(3, 9), x[3:9])
    # a second object on the same path: complete at once, zero source reads
    fresh = Counting(x)
    again = CachedSource(fresh, path, description={"data": "x"})
    assert again.complete
    for block in (4, 13):
        np.testing.assert_array_equal(_full_pass(again, block), x)
    np.testing.assert_array_equal(again.read(50, 57), x[50:])
    assert fresh.reads == 0
    # the final file is a plain .npy of the data; the sidecar says what it is
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), x)
    with open(path + ".json") as f:
        meta = json.load(f)
    assert meta["complete"] and meta["filled"] == [[0, n]]
    assert (meta["n_samples"], meta["n_features"], np.dtype(meta["dtype"])) == (n, p, np.float32)
    assert meta["description"] == {"data": "x"}
    assert meta["fingerprint"] == CachedSource.fingerprint_of({"data": "x"}) == cached.fingerprint
    with pytest.raises(IndexError):
        cached.read(0, n + 1)


def test_default_description_and_forwarded_attributes(rng, tmp_path):
    x = rng.standard_normal((6, 2)).astype(np.float32)
    plain = CachedSource(ArraySource(x), tmp_path / "a.npy")
    assert plain.description == {"type": "ArraySource"}

    class Described(Counting):
        def describe(self):
            return {"kind": "described", "size": list(x.shape)}

        def latents(self, start, stop):
            return {"z": np.arange(start, stop)}

        def read_with_latents(self, start, stop):  # would bypass the cache: hidden
            raise AssertionError

    described = CachedSource(Described(x), tmp_path / "b.npy")
    assert described.description == {"kind": "described", "size": [6, 2]}
    assert described.latents(2, 4)["z"].tolist() == [2, 3]
    assert not hasattr(described, "read_with_latents")

    class ForCaching(Described):
        def cache_description(self):
            return {"kind": "for caching"}

    assert CachedSource(ForCaching(x), tmp_path / "c.npy").description == {"kind": "for caching"}


def test_a_killed_pass_resumes_from_the_filled_rows(rng, tmp_path):
    n, p, block = 90, 4, 8
    x = rng.standard_normal((n, p)).astype(np.float32)
    path = str(tmp_path / "rows.npy")
    killed = Counting(KilledSource(x, fail_at=40, fail_pass=1))
    cached = CachedSource(killed, path, description={"data": "x"}, save_every=4)
    with pytest.raises(KeyboardInterrupt):
        for _ in cached.blocks(block):
            pass
    # the five blocks before the kill were written and recorded (on the way out)
    assert cached.filled == ((0, 40),) and not os.path.exists(path)
    with open(path + ".json") as f:
        assert json.load(f)["filled"] == [[0, 40]]
    inode = os.stat(path + ".partial").st_ino
    resumed_src = Counting(x)
    resumed = CachedSource(resumed_src, path, description={"data": "x"}, save_every=4)
    assert resumed.filled == ((0, 40),) and not resumed.complete
    assert os.stat(path + ".partial").st_ino == inode  # the partial file is reused
    np.testing.assert_array_equal(_full_pass(resumed, block), x)
    assert resumed_src.rows == n - 40 and resumed_src.ranges[0] == (40, 48)
    assert resumed.complete
    np.testing.assert_array_equal(np.load(path), x)


def test_a_hard_kill_loses_at_most_save_every_blocks(rng, tmp_path):
    # os._exit in the middle of a pass: nothing runs on the way out, so only
    # the progress recorded every save_every source reads survives
    n, p, block, every = 100, 3, 8, 3
    x = rng.standard_normal((n, p)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import os, numpy as np
        from jaxfactor.sources import ArraySource, CachedSource
        x = np.load({str(tmp_path / 'x.npy')!r})
        class Dies(ArraySource):
            def read(self, start, stop):
                if start == 7 * {block}:
                    os._exit(3)
                return super().read(start, stop)
        c = CachedSource(Dies(x), {str(tmp_path / 'rows.npy')!r}, description={{"data": "x"}},
                         save_every={every})
        for _ in c.blocks({block}):
            pass
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 3, proc.stderr[-2000:]
    # seven blocks written; progress recorded after the 3rd and the 6th
    src = Counting(x)
    resumed = CachedSource(src, tmp_path / "rows.npy", description={"data": "x"})
    assert resumed.filled == ((0, 6 * block),)
    np.testing.assert_array_equal(_full_pass(resumed, block), x)
    assert src.rows == n - 6 * block and resumed.complete


def _complete_cache(x, path, description):
    cached = CachedSource(ArraySource(x), path, description=description)
    _full_pass(cached, 16)
    assert cached.complete
    return cached


def test_a_stale_or_damaged_cache_is_refused_and_overwrite_rebuilds(rng, tmp_path):
    x = rng.standard_normal((40, 3)).astype(np.float32)
    path = str(tmp_path / "rows.npy")
    _complete_cache(x, path, {"data": "x", "seed": 1})
    with pytest.raises(ValueError, match=r"description.*'seed' \(cache 1, source 2\)"):
        CachedSource(ArraySource(x), path, description={"data": "x", "seed": 2})
    with pytest.raises(ValueError, match=r"shape: cache \(40, 3\), source \(39, 3\)"):
        CachedSource(ArraySource(x[:-1]), path, description={"data": "x", "seed": 1})
    with pytest.raises(ValueError, match="dtype: cache float32, source float64"):
        CachedSource(ArraySource(x.astype(np.float64)), path, description={"data": "x", "seed": 1})
    # a partial cache is checked the same way
    partial = str(tmp_path / "partial.npy")
    CachedSource(ArraySource(x), partial, description={"seed": 1}, save_every=1).read(0, 10)
    with pytest.raises(ValueError, match="'seed'"):
        CachedSource(ArraySource(x), partial, description={"seed": 2})
    # overwrite=True discards the stale cache and rebuilds it from the new source
    y = rng.standard_normal((40, 3)).astype(np.float32)
    src = Counting(y)
    rebuilt = CachedSource(src, path, description={"data": "y"}, overwrite=True)
    assert not rebuilt.complete and rebuilt.filled == () and not os.path.exists(path)
    np.testing.assert_array_equal(_full_pass(rebuilt, 16), y)
    assert src.rows == 40 and rebuilt.complete
    np.testing.assert_array_equal(np.load(path), y)
    # a matching cache is used even with overwrite=True
    assert CachedSource(Counting(y), path, description={"data": "y"}, overwrite=True).complete


def test_damaged_files_are_errors(rng, tmp_path):
    x = rng.standard_normal((30, 4)).astype(np.float32)
    desc = {"data": "x"}
    # a sidecar that is not JSON
    bad_json = str(tmp_path / "bad_json.npy")
    _complete_cache(x, bad_json, desc)
    with open(bad_json + ".json", "w") as f:
        f.write('{"format": "jaxfactor.cached-rows", ')
    with pytest.raises(ValueError, match="not valid JSON"):
        CachedSource(ArraySource(x), bad_json, description=desc)
    assert CachedSource(ArraySource(x), bad_json, description=desc, overwrite=True).filled == ()
    # JSON, but not a cache sidecar
    foreign = str(tmp_path / "foreign.npy")
    with open(foreign + ".json", "w") as f:
        json.dump({"hello": 1}, f)
    with pytest.raises(ValueError, match="not a jaxfactor cache sidecar"):
        CachedSource(ArraySource(x), foreign, description=desc)
    # a complete file whose size does not match its sidecar (truncated)
    short = str(tmp_path / "short.npy")
    _complete_cache(x, short, desc)
    size = os.path.getsize(short)
    os.truncate(short, size - 4)
    with pytest.raises(ValueError, match=f"{size - 4} bytes.*{size}"):
        CachedSource(ArraySource(x), short, description=desc)
    # a file at the path with no sidecar cannot be validated
    orphan = str(tmp_path / "orphan.npy")
    np.save(orphan, x)
    with pytest.raises(ValueError, match="without a sidecar"):
        CachedSource(ArraySource(x), orphan, description=desc)
    rebuilt = CachedSource(ArraySource(x), orphan, description=desc, overwrite=True)
    assert rebuilt.filled == () and not os.path.exists(orphan)
    # a partial file of another shape than its sidecar says
    wrong = str(tmp_path / "wrong.npy")
    CachedSource(ArraySource(x), wrong, description=desc, save_every=1).read(0, 5)
    np.save(wrong + ".partial.npy", np.zeros((30, 5), np.float32))
    os.replace(wrong + ".partial.npy", wrong + ".partial")
    with pytest.raises(ValueError, match=r"shape \(30, 5\)"):
        CachedSource(ArraySource(x), wrong, description=desc)


@pytest.mark.parametrize("umask, mode", [(0o027, 0o640), (0o002, 0o664)])
def test_file_modes_follow_the_umask(rng, tmp_path, umask, mode):
    x = rng.standard_normal((20, 2)).astype(np.float32)
    path = str(tmp_path / "rows.npy")
    old = os.umask(umask)
    try:
        cached = CachedSource(ArraySource(x), path, description={"data": "x"}, save_every=1)
        cached.read(0, 10)
        assert os.stat(path + ".partial").st_mode & 0o777 == mode
        assert os.stat(path + ".json").st_mode & 0o777 == mode
        cached.read(10, 20)
        assert cached.complete
        assert os.stat(path).st_mode & 0o777 == mode
        assert os.stat(path + ".json").st_mode & 0o777 == mode
    finally:
        os.umask(old)


def test_streaming_pca_over_a_cache_reads_the_source_once(rng, tmp_path):
    x = low_rank_data(rng, 300, 12, 4)
    plain_src = Counting(x)
    kw = {"solver": "streaming", "block_rows": 64, "random_state": 0}
    plain = PCA(3, **kw).fit(plain_src)
    assert plain_src.passes > 1  # what the cache saves
    src = Counting(x)
    cached = PCA(3, **kw).fit(CachedSource(src, tmp_path / "rows.npy", description={"data": "x"}))
    assert src.passes == 1 and src.rows == 300  # one pass over the source, the rest from disk
    # the same rows in the same order: the same fit, bit for bit
    np.testing.assert_array_equal(cached.components_, plain.components_)
    np.testing.assert_array_equal(cached.explained_variance_, plain.explained_variance_)
    np.testing.assert_array_equal(cached.mean_, plain.mean_)
    # a later fit over the complete cache never reads the source
    later_src = Counting(x)
    later = PCA(3, **kw).fit(CachedSource(later_src, tmp_path / "rows.npy", description={"data": "x"}))
    assert later_src.reads == 0
    np.testing.assert_array_equal(later.components_, plain.components_)


@pytest.fixture(scope="module")
def counted_fastgan():
    G = TinyFastGAN(nz=16, ch=8).eval()
    G.forward_calls = 0

    def count(module, args):
        G.forward_calls += 1

    G.init.register_forward_pre_hook(count)  # the captured layer: once per batch run
    return G


def test_activation_stream_cache_runs_the_generator_once(counted_fastgan, tmp_path):
    G = counted_fastgan
    n, batch, block = 23, 5, 7
    plain = ActivationStream(G, "init", n_samples=n, batch_size=batch, seed=3)
    ref = _full_pass(plain, block)
    ref = np.asarray(ref)
    cached = ActivationStream(G, "init", n_samples=n, batch_size=batch, seed=3,
                              cache=tmp_path / "acts")
    assert os.path.dirname(cached.cache_path) == str(tmp_path / "acts")
    assert os.path.basename(cached.cache_path) == (
        f"activations-{CachedSource.fingerprint_of(cached.cache_description())[:20]}.npy")
    before = G.forward_calls
    first = np.concatenate([np.asarray(b) for b in cached.blocks(block)])
    # blocks 0:7, 7:14, 14:21, 21:23 in batches of 5: 2 + 2 + 2 + 1 runs
    assert G.forward_calls - before == 7
    np.testing.assert_array_equal(first, ref)
    assert cached.cache.complete
    before = G.forward_calls
    second = np.concatenate([np.asarray(b) for b in cached.blocks(4)])
    torch_rows = cached.read_torch(2, 9)
    rows, lat = cached.read_with_latents(5, 12)
    assert G.forward_calls == before  # later passes: the file only
    np.testing.assert_array_equal(second, ref)
    assert isinstance(torch_rows, torch.Tensor) and torch_rows.dtype == torch.float32
    np.testing.assert_array_equal(torch_rows.numpy(), ref[2:9])
    np.testing.assert_array_equal(np.asarray(rows), ref[5:12])
    np.testing.assert_array_equal(lat["z"], plain.latents(5, 12)["z"])  # latents regenerated
    # a new stream on the same directory: the same file, no generator runs for rows
    again = ActivationStream(G, "init", n_samples=n, batch_size=batch, seed=3,
                             cache=tmp_path / "acts")
    assert again.cache_path == cached.cache_path and again.cache.complete
    before = G.forward_calls
    np.testing.assert_array_equal(np.asarray(again.read(0, n)), ref)
    assert G.forward_calls == before
    # another seed in the same directory: its own file
    other = ActivationStream(G, "init", n_samples=n, batch_size=batch, seed=4,
                             cache=tmp_path / "acts")
    assert other.cache_path != cached.cache_path and not other.cache.complete
    # an explicit file written for another seed (or other weights) is refused
    with pytest.raises(ValueError, match=r"'stream\.seed' \(cache 3, source 4\).*cache_overwrite=True"):
        ActivationStream(G, "init", n_samples=n, batch_size=batch, seed=4, cache=cached.cache_path)
    with pytest.raises(ValueError, match="weights_sha256"):
        ActivationStream(TinyFastGAN(nz=16, ch=8, seed=1).eval(), "init", n_samples=n,
                         batch_size=batch, seed=3, cache=cached.cache_path)
    # wrapping a stream directly validates the same description (weights included)
    wrapped = CachedSource(plain, tmp_path / "wrapped.npy")
    assert wrapped.description == json.loads(json.dumps(plain.cache_description()))
    rebuilt = ActivationStream(G, "init", n_samples=n, batch_size=batch, seed=4,
                               cache=cached.cache_path, cache_overwrite=True)
    assert not rebuilt.cache.complete
    np.testing.assert_array_equal(np.asarray(rebuilt.read(0, n)),
                                  np.asarray(other.read(0, n)))


def test_streaming_pca_over_a_cached_stream_runs_the_generator_once(counted_fastgan, tmp_path):
    G = counted_fastgan
    kw = {"solver": "streaming", "block_rows": 16, "random_state": 0}
    plain = ActivationStream(G, "init", n_samples=40, batch_size=8, seed=5)
    before = G.forward_calls
    ref = PCA(3, **kw).fit(plain)
    plain_runs = G.forward_calls - before
    stream = ActivationStream(G, "init", n_samples=40, batch_size=8, seed=5,
                              cache=tmp_path / "acts.npy")
    before = G.forward_calls
    got = PCA(3, **kw).fit(stream)
    runs = G.forward_calls - before
    # one pass: 16 + 16 + 8 rows in batches of 8 is 2 + 2 + 1 runs, instead of that per pass
    assert runs == 5 and plain_runs > runs and plain_runs % runs == 0
    np.testing.assert_array_equal(got.components_, ref.components_)
    np.testing.assert_array_equal(got.explained_variance_, ref.explained_variance_)
    # lifting the scores to the latents reuses the rows too: no extra generator pass
    from jaxfactor.lifting import lift

    before = G.forward_calls
    lifted = lift(stream, got, space="z")
    assert G.forward_calls == before
    np.testing.assert_allclose(lifted.directions, lift(plain, ref, space="z").directions,
                               rtol=0, atol=0)


def test_a_kill_while_finishing_is_completed_on_the_next_open(rng, tmp_path):
    x = rng.standard_normal((12, 3)).astype(np.float32)
    path = str(tmp_path / "rows.npy")
    _complete_cache(x, path, {"data": "x"})
    with open(path + ".json") as f:
        meta = json.load(f)
    # killed after the rename, before the sidecar said complete
    with open(path + ".json", "w") as f:
        json.dump(dict(meta, complete=False), f)
    src = Counting(x)
    assert CachedSource(src, path, description={"data": "x"}).complete
    with open(path + ".json") as f:
        assert json.load(f)["complete"]
    # killed after recording every row, before the rename
    os.replace(path, path + ".partial")
    with open(path + ".json", "w") as f:
        json.dump(dict(meta, complete=False), f)
    again = CachedSource(src, path, description={"data": "x"})
    assert again.complete and not os.path.exists(path + ".partial")
    np.testing.assert_array_equal(again.read(0, 12), x)
    assert src.reads == 0
