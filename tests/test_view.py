"""jaxfactor view: request parsing and validation, the HTTP server's answers, the
render worker's latest-only queue, exact reproduction by the copied command line,
and a bounded load test on loopback."""
import gc
import http.client
import io
import json
import os
import shlex
import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("PIL")

from PIL import Image  # noqa: E402

from bridges.generators import PlainAdapter, sample_z  # noqa: E402
from bridges.render import render  # noqa: E402
from jaxfactor.app import view as V  # noqa: E402
from jaxfactor.app.cli import main  # noqa: E402
from jaxfactor.app.pipeline import load_generator  # noqa: E402
from jaxfactor.directions import save_directions  # noqa: E402
from tests.conftest import seed_for  # noqa: E402

GEN = V.DEFAULT_GENERATOR


@pytest.fixture(scope="module")
def adapter():
    return load_generator(GEN)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A W set (5 directions) and a Z set (3), random directions and scales."""
    rng = np.random.default_rng(seed_for("tests/test_view.py::files"))
    out = tmp_path_factory.mktemp("view")
    w = save_directions(out / "w dirs.npz", rng.standard_normal((5, 64)).astype(np.float32),
                        rng.uniform(0.1, 0.4, 5), method="pca", space="w", layer="w")
    z = save_directions(out / "z.npz", rng.standard_normal((3, 64)).astype(np.float32),
                        rng.uniform(0.5, 1.5, 3), method="ica", space="z", layer="synthesis.init")
    return [w, z]


@pytest.fixture(scope="module")
def viewer(adapter, files):
    return V.Viewer(adapter, GEN, [V.DirectionSet.load(p) for p in files], sliders=4, alpha_range=6.0)


@pytest.fixture(scope="module")
def server(viewer):
    s = V.ViewServer(viewer, 0)
    s.start()
    yield s
    s.stop()


def _get(server, path, host=None, method="GET", headers=()):
    """(status, headers, body) of one request, with any Host header."""
    conn = http.client.HTTPConnection(V.HOST, server.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for h in ([f"{V.HOST}:{server.port}"] if host is None else [host] if isinstance(host, str) else host):
            conn.putheader("Host", h)
        for k, v in headers:
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def _png_pixels(data: bytes) -> np.ndarray:
    img = np.asarray(Image.open(io.BytesIO(data)))
    return img[..., None] if img.ndim == 2 else img


# ------------------------------------------------------------------ parsing


def test_parse_valid_queries(viewer):
    e, client = viewer.parse("set=0&seed=7&a=3:-1.5&a=0:2&a=1:0&layers=1-2&client=page-1_x")
    assert e == V.Edit(0, 7, ((0, 2.0), (3, -1.5)), (1, 2)) and client == "page-1_x"
    e, client = viewer.parse(f"set=1&seed={2**32 - 1}")
    assert e == V.Edit(1, 2**32 - 1) and client is None
    assert viewer.parse("set=0&seed=0&a=4:6")[0].alphas == ((4, 6.0),)   # the range is inclusive


@pytest.mark.parametrize("query, words", [
    ("seed=1", "missing parameter 'set'"),
    ("set=0", "missing parameter 'seed'"),
    ("set=0&seed=1&x=2", "unknown parameter 'x'"),
    ("set=0&set=1&seed=1", "'set' given 2 times"),
    ("set=2&seed=1", "set='2'"),
    ("set=-1&seed=1", "set='-1'"),
    ("set=0&seed=-3", "seed='-3'"),
    ("set=0&seed=1.5", "seed='1.5'"),
    ("set=0&seed=4294967296", "seed='4294967296'"),
    ("set=0&seed=%201", "seed=' 1'"),
    ("set=0&seed=1&a=5:1", "direction 5 out of range; the set has 5"),
    ("set=1&seed=1&a=3:1", "direction 3 out of range; the set has 3"),
    ("set=0&seed=1&a=1", "expected INDEX:ALPHA"),
    ("set=0&seed=1&a=-1:1", "expected INDEX:ALPHA"),
    ("set=0&seed=1&a=1:x", "is not a number"),
    ("set=0&seed=1&a=1:nan", "finite"),
    ("set=0&seed=1&a=1:inf", "finite"),
    ("set=0&seed=1&a=1:1e400", "finite"),
    ("set=0&seed=1&a=1:6.01", "within +-6"),
    ("set=0&seed=1&a=1:1&a=1:2", "direction 1 given twice"),
    ("set=1&seed=1&layers=0-1", "layers applies to W/W+"),
    ("set=0&seed=1&layers=2-1", "0 <= A <= B <= 3"),
    ("set=0&seed=1&layers=0-4", "0 <= A <= B <= 3"),
    ("set=0&seed=1&layers=1", "expected A-B"),
    ("set=0&seed=1&client=a/b", "client must be"),
    ("set=0&seed=1&&", "malformed query"),
])
def test_parse_refuses_bad_parameters(viewer, query, words):
    with pytest.raises(V.RequestError, match=None) as info:
        viewer.parse(query)
    assert words in str(info.value) and info.value.status == 400


def test_viewer_refuses_sets_it_cannot_edit(adapter, tmp_path, rng):
    bad = save_directions(tmp_path / "narrow.npz", rng.standard_normal((2, 10)), method="pca", space="w")
    with pytest.raises(ValueError, match="width 10; the generator's w has width 64"):
        V.Viewer(adapter, GEN, [V.DirectionSet.load(bad)])
    plain = PlainAdapter(torch.nn.Linear(64, 64), z_dim=64)
    wset = save_directions(tmp_path / "w.npz", rng.standard_normal((2, 64)), method="pca", space="w")
    with pytest.raises(ValueError, match="this generator edits z"):
        V.Viewer(plain, "x:y", [V.DirectionSet.load(wset)])
    with pytest.raises(ValueError, match="alpha_range"):
        V.Viewer(adapter, GEN, [V.DirectionSet.load(wset)], alpha_range=float("inf"))


# ------------------------------------------------------------------ rendering


def test_alpha_zero_is_the_unedited_render(viewer, adapter):
    for seed in (0, 12345):
        z = sample_z(seed, 0, 1, adapter.z_dim)
        plain = render(adapter, z)[0]
        for set_index, layers in ((0, None), (0, (1, 2)), (1, None)):
            got = viewer.render(V.Edit(set_index, seed, (), layers))
            np.testing.assert_array_equal(got, plain)
    # an edit moves the image (the test above could not fail on a constant renderer)
    moved = viewer.render(V.Edit(0, 0, ((0, 3.0),)))
    assert np.abs(moved.astype(int) - render(adapter, sample_z(0, 0, 1, 64))[0]).max() > 10


@pytest.mark.parametrize("query", ["set=0&seed=11&a=2:2.5", "set=0&seed=11&a=1:-3.7&layers=1-2",
                                   "set=1&seed=4000000000&a=2:1.2", "set=0&seed=5"])
def test_copied_command_reproduces_the_image(server, viewer, tmp_path, capsys, query):
    status, _, body = _get(server, "/api/snippet?" + query)
    snippet = json.loads(body)
    words = shlex.split(snippet["command"])
    assert words[:2] == ["jaxfactor", "edit"] and words[-2:] == ["--out", "edit.png"]
    out = tmp_path / "edit.png"
    assert main(words[1:-1] + [str(out)]) == 0
    grid = np.asarray(Image.open(out))
    grid = grid[..., None] if grid.ndim == 2 else grid
    status, headers, png = _get(server, "/api/render?" + query)
    assert status == 200 and headers["Content-Type"] == "image/png"
    shown = _png_pixels(png)
    h, w, _ = shown.shape
    assert grid.shape[:2] == (h + 4, w + 4)                  # one cell, the grid's 2-pixel border
    np.testing.assert_array_equal(grid[2:2 + h, 2:2 + w], shown)
    np.testing.assert_array_equal(shown, viewer.render(viewer.parse(query)[0]))
    np.testing.assert_array_equal(V.render_snippet(snippet["json"], viewer.adapter), shown)


def test_combined_directions_add_up(server, viewer, adapter, files):
    query = "set=0&seed=3&a=0:2&a=3:-1.5&a=4:1&layers=0-1"
    snippet = json.loads(_get(server, "/api/snippet?" + query)[2])
    assert snippet["command"] is None and "render_snippet" in snippet["note"]
    shown = _png_pixels(_get(server, "/api/render?" + query)[2])
    np.testing.assert_array_equal(V.render_snippet(json.dumps(snippet["json"])), shown)
    # independent reference: one float64 sum of the steps, W+ layers 0-1 moved, in torch
    dset = viewer.sets[0]
    d = dset.directions.astype(np.float64)
    unit = d / np.linalg.norm(d, axis=1, keepdims=True)
    coef = np.zeros(len(d))
    coef[[0, 3, 4]] = np.array([2.0, -1.5, 1.0]) * dset.scales[[0, 3, 4]]
    with torch.inference_mode():
        ws = adapter._ws(torch.from_numpy(sample_z(3, 0, 1, 64))).clone()
        ws[:, :2] += torch.from_numpy(coef @ unit).float()
        ref = ((adapter.synthesize(ws)[0, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    # float32 steps summed in another order: at most one grey level apart
    assert np.abs(shown[..., 0].astype(int) - ref.numpy().astype(int)).max() <= 1
    unedited = render(adapter, sample_z(3, 0, 1, 64))[0]
    assert np.abs(shown.astype(int) - unedited.astype(int)).max() > 10


# ------------------------------------------------------------------ HTTP


def test_assets_config_and_headers(server, viewer):
    static = os.path.join(os.path.dirname(V.__file__), "static")
    for route, (name, ctype) in V._ASSETS.items():
        status, headers, body = _get(server, route)
        assert status == 200 and headers["Content-Type"] == ctype
        with open(os.path.join(static, name), "rb") as f:
            assert body == f.read()
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
    html = _get(server, "/")[2].decode()
    assert "http" not in html.replace("http-equiv", "")       # no CDN: only own, relative assets
    status, _, body = _get(server, "/", host=f"localhost:{server.port}")
    assert status == 200
    cfg = json.loads(_get(server, "/api/config")[2])
    assert cfg["num_ws"] == 4 and cfg["image_shape"] == [8, 8, 1] and cfg["sliders"] == 4
    assert [s["count"] for s in cfg["sets"]] == [5, 3]
    assert [s["layer_range"] for s in cfg["sets"]] == [True, False]
    assert _get(server, "/", method="HEAD")[2] == b""


@pytest.mark.parametrize("path, status, words", [
    ("/api/render?set=0&seed=1&a=9:1", 400, "out of range"),
    ("/api/render?set=0&seed=1&a=1:nan", 400, "finite"),
    ("/api/render?set=0", 400, "missing parameter 'seed'"),
    ("/api/snippet?set=0&seed=x", 400, "seed="),
    ("/api/config?x=1", 400, "takes no parameters"),
    ("/?a=1", 400, "takes no parameters"),
    ("/static/view.py", 404, "no such page"),
    ("/static/../view.py", 404, "no such page"),
    ("/static/%2e%2e/view.py", 404, "no such page"),
    ("//etc/passwd", 404, "no such page"),
    ("/static/", 404, "no such page"),
    ("/index.html", 404, "no such page"),
])
def test_bad_requests_get_json_errors(server, path, status, words):
    got, headers, body = _get(server, path)
    assert got == status and headers["Content-Type"] == "application/json"
    err = json.loads(body)["error"]
    assert words in err and "Traceback" not in err


@pytest.mark.parametrize("host", ["evil.example:80", "evil.example", "127.0.0.1", "localhost",
                                  "127.0.0.1:1", "[::1]:{port}", "", ["127.0.0.1:{port}", "evil:1"], []])
def test_other_host_headers_are_refused(server, host):
    hosts = [h.format(port=server.port) for h in host] if isinstance(host, list) else host.format(port=server.port)
    status, headers, body = _get(server, "/api/config", host=hosts)
    assert status == 403 and "DNS rebinding" in json.loads(body)["error"]


def test_other_methods_and_bad_request_lines(server):
    status, headers, body = _get(server, "/api/render?set=0&seed=1", method="POST")
    assert status == 501 and headers["Content-Type"] == "application/json" and json.loads(body)["error"]
    import socket

    for line, answer in ((b"GET /a b HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 "),
                         (b"GARBAGE\r\n\r\n", b"")):   # HTTP/0.9 style: the body alone
        with socket.create_connection((V.HOST, server.port), timeout=10) as s:
            s.sendall(line)
            reply = b"".join(iter(lambda: s.recv(4096), b""))   # until the server closes
        assert reply.startswith(answer) and b'{"error": "Bad request syntax' in reply


def test_requests_never_open_files(server, monkeypatch):
    """No route touches the file system: every answer comes from memory or the renderer."""
    import builtins

    _get(server, "/api/render?set=0&seed=2&a=0:1")             # warm: lazy imports done
    touched = []

    def spy(module, name):
        real = getattr(module, name)

        def wrapper(path, *args, **kwargs):
            touched.append((name, path))
            return real(path, *args, **kwargs)
        monkeypatch.setattr(module, name, wrapper)

    for module, name in ((os, "open"), (os, "stat"), (os, "lstat"), (os, "listdir"), (os, "scandir"),
                         (io, "open"), (builtins, "open")):
        spy(module, name)
    for path in ("/", "/static/view.js", "/static/../view.py", "/../../etc/passwd", "/api/config",
                 "/api/render?set=1&seed=9&a=0:2", "/api/snippet?set=0&seed=1", "/etc/passwd",
                 "/static/view.css?x=/etc/passwd"):
        _get(server, path)
    monkeypatch.undo()
    assert touched == []


def test_render_errors_and_superseded_requests(tmp_path, rng):
    failing = {"on": False}
    gate, entered = {"on": False, "release": threading.Event()}, threading.Event()

    class Flaky(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(16, 12)

        def forward(self, z):
            if failing["on"]:
                raise RuntimeError("the generator fell over")
            if gate["on"]:
                entered.set()
                gate["release"].wait(10)
            return torch.tanh(self.lin(z)).reshape(-1, 3, 2, 2)

    path = save_directions(tmp_path / "z.npz", rng.standard_normal((2, 16)), method="pca", space="z")
    viewer = V.Viewer(PlainAdapter(Flaky(), z_dim=16), "mod:flaky", [V.DirectionSet.load(path)])
    s = V.ViewServer(viewer, 0)
    s.start()
    try:
        failing["on"] = True
        status, headers, body = _get(s, "/api/render?set=0&seed=1&a=0:1")
        assert status == 500 and headers["Content-Type"] == "application/json"
        assert json.loads(body)["error"] == "render failed: RuntimeError: the generator fell over"
        failing["on"] = False
        status, headers, body = _get(s, "/api/render?set=0&seed=1&a=0:1")
        assert status == 200 and _png_pixels(body).shape == (2, 2, 3)
        assert s.renderer.failed == 1 and s.renderer.rendered == 1
        # a page's waiting request is answered 204 when its newer one arrives
        gate["on"] = True
        answers = {}

        def ask(name, seed):
            answers[name] = _get(s, f"/api/render?set=0&seed={seed}&client=page")

        threads = {"a": threading.Thread(target=ask, args=("a", 1))}
        threads["a"].start()
        assert entered.wait(10)                      # the worker is inside render "a"
        for name, seed in (("b", 2), ("c", 3)):
            threads[name] = threading.Thread(target=ask, args=(name, seed))
            threads[name].start()
            t0 = time.monotonic()                    # until the request is waiting in the queue
            while not (s.renderer._waiting and s.renderer.superseded == (name == "c")):
                assert time.monotonic() - t0 < 10
                time.sleep(0.005)
        gate["release"].set()
        for t in threads.values():
            t.join(30)
        assert [answers[n][0] for n in "abc"] == [200, 204, 200]
        assert answers["b"][1].get("X-Render") == "superseded" and answers["b"][2] == b""
        assert s.renderer.superseded == 1
    finally:
        gate["release"].set()
        s.stop()


# ------------------------------------------------------------------ the worker


def test_latest_only_renderer_drops_stale_jobs():
    gate, started, order = threading.Event(), threading.Event(), []

    def work(job):
        started.set()
        gate.wait(10)
        if job == "bad":
            raise ValueError("no good")
        order.append(job)
        return job * 2

    r = V.LatestOnlyRenderer(work, max_waiting=3)
    try:
        first = r.submit("a", "page")
        assert started.wait(10)                        # the worker is busy with "a"
        stale = [r.submit(x, "page") for x in ("b", "c", "d")]
        other = r.submit("x", "tab2")
        anon = [r.submit(x) for x in ("p",)]
        with pytest.raises(V.RequestError) as info:    # three jobs wait: the fourth is refused
            r.submit("q")
        assert info.value.status == 503
        gate.set()
        for t in [first, *stale, other, *anon]:
            assert t.done.wait(10)
        assert [t.status for t in stale] == ["superseded", "superseded", "ok"]
        assert (first.value, stale[-1].value, other.value, anon[0].value) == ("aa", "dd", "xx", "pp")
        assert order == ["a", "d", "x", "p"]           # clients in order of arrival, newest job each
        assert (r.rendered, r.superseded) == (4, 2)
        bad = r.submit("bad", "page")
        assert bad.done.wait(10) and (bad.status, bad.value) == ("error", "ValueError: no good")
        after = r.submit("e", "page")
        assert after.done.wait(10) and after.value == "ee"   # the worker carries on
    finally:
        gate.set()
        r.close()
    assert not r._thread.is_alive()


# ------------------------------------------------------------------ start-up and CLI


def test_startup_directions_are_pca_of_w(adapter, tmp_path, monkeypatch):
    monkeypatch.setitem(V.STARTUP_PCA, "samples", 1500)
    path = V.startup_directions(adapter, GEN, tmp_path)
    dset = V.DirectionSet.load(path)
    assert dset.space == "w" and dset.directions.shape == (V.STARTUP_PCA["components"], 64)
    # float64 reference: eigenvectors of the covariance of the same W samples
    with torch.inference_mode():
        w = adapter.codes(torch.from_numpy(sample_z(0, 0, 1500, 64)))["w"].double().numpy()
    evals, evecs = np.linalg.eigh(np.cov(w, rowvar=False))
    evals, evecs = evals[::-1], evecs[:, ::-1]
    k = 4                                             # the leading, well separated components
    assert np.all(evals[:k] / evals[1:k + 1] > 1.05)
    cos = np.abs(np.sum(dset.directions[:k].astype(np.float64) * evecs[:, :k].T, axis=1))
    assert np.all(cos > 0.99), cos
    np.testing.assert_allclose(dset.scales[:k], np.sqrt(evals[:k]), rtol=1e-3)
    mtime = os.stat(path).st_mtime_ns
    assert V.startup_directions(adapter, GEN, tmp_path) == path and os.stat(path).st_mtime_ns == mtime
    monkeypatch.setitem(V.STARTUP_PCA, "seed", 1)         # another recipe: recomputed
    V.startup_directions(adapter, GEN, tmp_path)
    assert os.stat(path).st_mtime_ns != mtime
    # a generator without W: PCA of z, which a viewer of it accepts
    plain = PlainAdapter(torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Unflatten(1, (3, 2, 2))),
                         z_dim=6)
    zpath = V.startup_directions(plain, "m:plain", tmp_path)
    zset = V.DirectionSet.load(zpath)
    assert zset.space == "z" and zset.directions.shape == (6, 6)   # as many as z has
    V.Viewer(plain, "m:plain", [zset])
    with pytest.raises(ValueError, match="cannot keep the start-up directions"):
        V.startup_directions(plain, "m:plain", os.path.join(zpath, "sub"))   # under a file
    with pytest.raises(ValueError, match="units must be 'std'"):
        V.render_snippet({"units": "latent", "directions": zpath, "seed": 0}, plain)


def test_build_viewer_takes_the_demo_directions_of_its_generator(tmp_path, rng):
    demo = tmp_path / "demo_out" / "directions"
    demo.mkdir(parents=True)

    def save(name, generator):
        return save_directions(demo / name, rng.standard_normal((2, 64)), method="pca", space="w",
                               generator=generator)

    save("b.npz", f"{GEN} (digits GAN)")                 # the demo's string
    save("a.npz", {"spec": GEN, "z_dim": 64})            # discover's dict
    save("c.npz", {"spec": "other.module:load"})
    save("d.npz", "a generator named by no spec")
    v = V.build_viewer(demo_dir=demo, cache_dir=tmp_path / "cache")   # two specs: the default's
    assert v.generator_spec == GEN and [os.path.basename(s.path) for s in v.sets] == ["a.npz", "b.npz"]
    assert not (tmp_path / "cache").exists()
    # a demo made with another generator: view serves that generator with its directions
    gen_py = tmp_path / "gen.py"
    gen_py.write_text("from bridges.builtin import load_builtin_generator as load\n")
    other = tmp_path / "other" / "directions"
    other.mkdir(parents=True)
    save_directions(other / "e.npz", rng.standard_normal((3, 64)), method="ica", space="w",
                    generator={"spec": f"{gen_py}:load"})
    v = V.build_viewer(demo_dir=other, cache_dir=tmp_path / "cache")
    assert v.generator_spec == f"{gen_py}:load" and len(v.sets) == 1
    # files on the command line win over the demo's
    v = V.build_viewer(directions=[str(demo / "c.npz")], demo_dir=other)
    assert [os.path.basename(s.path) for s in v.sets] == ["c.npz"] and v.generator_spec == GEN


def test_cli_view_refuses_bad_arguments(tmp_path, capsys):
    assert main(["view", "--directions", str(tmp_path / "missing.npz")]) == 2
    assert "no directions file" in capsys.readouterr().err
    assert main(["view", "--port", "65536"]) == 2
    assert "--port must be in 0-65535" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["view", "--sliders", "0"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["view", "--alpha-range", "nan"])


# ------------------------------------------------------------------ load


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_bounded_load(server, viewer):
    """200 renders from 8 concurrent keep-alive clients: no error, bounded memory, p95 printed."""
    n_clients, per_client = 8, 25
    rng = np.random.default_rng(seed_for("tests/test_view.py::test_bounded_load"))
    queries = []
    for _ in range(n_clients * per_client + 136):
        s = int(rng.integers(2))
        k = len(viewer.sets[s].directions)
        a = "&".join(f"a={i}:{rng.uniform(-6, 6):.2f}" for i in rng.choice(k, 2, replace=False))
        queries.append(f"/api/render?set={s}&seed={rng.integers(2**32)}&{a}")
    # urlsplit keeps an LRU cache of its last 128 distinct URLs: the warm-up fills it
    warm, queries = queries[:136], queries[136:]

    def client(qs, out):
        conn = http.client.HTTPConnection(V.HOST, server.port, timeout=30)
        try:
            for q in qs:
                t0 = time.perf_counter()
                conn.request("GET", q)
                r = conn.getresponse()
                body = r.read()
                out.append((r.status, time.perf_counter() - t0, len(body), body[:8]))
        finally:
            conn.close()

    def run(qs_all):
        results = [[] for _ in range(n_clients)]
        threads = [threading.Thread(target=client, args=(qs_all[i::n_clients], results[i]))
                   for i in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads), "the load test did not finish"
        return [x for r in results for x in r]

    run(warm)                                          # warm-up: allocator pools, lazy imports, caches
    threads_before = threading.active_count()
    # two measured rounds of the same 200 queries: a leak of what one request makes grows the
    # process in both rounds alike, while the allocators' slack (per-thread arenas, fragmentation
    # of freed image buffers: measured 0-9 MiB over one round) is taken up once, so the smaller
    # growth of the two is what is bounded
    rss_growth, object_growth, walls, got = [], [], [], None
    for _ in range(2):
        gc.collect()
        rss_before, objects_before = _rss_bytes(), len(gc.get_objects())
        t0 = time.perf_counter()
        got = run(queries)
        walls.append(time.perf_counter() - t0)
        rss_growth.append(_rss_bytes() - rss_before)
        gc.collect()
        object_growth.append(len(gc.get_objects()) - objects_before)
        assert len(got) == 200
        assert all(status == 200 and head == b"\x89PNG\r\n\x1a\n" for status, _, _, head in got), \
            {status for status, *_ in got}
    lat = np.array([t for _, t, _, _ in got]) * 1e3
    body = np.mean([size for _, _, size, _ in got])
    print(f"\nload: 200 renders, 8 clients: p50 {np.percentile(lat, 50):.1f} ms, "
          f"p95 {np.percentile(lat, 95):.1f} ms, max {lat.max():.1f} ms, {200 / walls[-1]:.0f} renders/s, "
          f"RSS growth per round {[f'{g / 2**20:.2f}' for g in rss_growth]} MiB, "
          f"{object_growth} more Python objects, mean PNG {body / 1024:.1f} KiB")
    # nothing is kept per request: a leak of one Python object per request adds 200, so
    # the bound is half that
    assert min(object_growth) < 100
    # measured: 3.7 then 0.07 MiB here, 9.1 MiB over a single round on the CI machine
    assert min(rss_growth) < 8 * 2**20
    assert not server.renderer._waiting
    time.sleep(0.2)
    assert threading.active_count() <= threads_before    # keep-alive handler threads ended


def test_cli_view_with_no_arguments_serves_the_builtin_generator(tmp_path):
    """``jaxfactor view`` on a fresh install: no demo output, so PCA of W at start-up; Ctrl-C stops it."""
    import signal
    import subprocess
    import sys
    import urllib.request

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    proc = subprocess.Popen([sys.executable, "-m", "jaxfactor", "view", "--port", "0"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stdout:   # start-up lines, then the URL
            lines.append(line)
            if "serving" in line:
                break
        url = lines[-1].split("serving ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        assert any("PCA-16 in w" in line for line in lines), lines
        with urllib.request.urlopen(url + "api/config", timeout=30) as r:
            cfg = json.loads(r.read())
        assert cfg["generator"] == GEN and cfg["sets"][0]["count"] == V.STARTUP_PCA["components"]
        assert cfg["sets"][0]["path"].startswith(str(tmp_path / "cache" / "jaxfactor" / "view"))
        with urllib.request.urlopen(url + "api/render?set=0&seed=4&a=1:2", timeout=30) as r:
            assert r.status == 200 and r.read().startswith(b"\x89PNG")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "stopped" in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
