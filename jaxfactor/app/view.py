"""``jaxfactor view``: explore directions live in the browser, with sliders.

A local web page (served from the package, no CDN) with a seed, a directions
selector, one slider per direction for the first N (alpha in standard
deviations of the component, added together), a W+ layer range for
StyleGAN-like generators, and the image re-rendered as the sliders move. Its
"copy" box gives the edit as a JSON snippet (:func:`render_snippet` renders it)
and, for one direction, the ``jaxfactor edit`` command line that renders the
same pixels: the same latent (``sample_z(seed, 0, 1)``), the same step
arithmetic (``bridges.render``'s) and the same batch of one.

The server is the standard library's ``ThreadingHTTPServer`` bound to
127.0.0.1 only; it answers a fixed table of routes (the page's three assets,
read into memory at start-up, a JSON config, rendered PNGs and copy snippets),
so no request path reaches the file system. A ``Host`` header other than the
server's own loopback name is refused (DNS rebinding). Every query parameter
is checked and a bad one gets a 400 with a JSON ``{"error": ...}``; a failed
render gets a 500 with the error, and the server keeps serving.

One worker thread renders (:class:`LatestOnlyRenderer`): per page (its
``client`` id) only the newest waiting request is kept, an older one still
waiting is answered 204 (superseded), so dragging a slider never queues work.
"""
from __future__ import annotations

import collections
import http.server
import io
import json
import math
import os
import re
import shlex
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

#: The generator ``jaxfactor view`` serves when none is given (the one place
#: that names it).
DEFAULT_GENERATOR = "bridges.builtin:load_builtin_generator"

#: Where ``jaxfactor demo`` (run in the current directory) leaves its directions.
DEMO_DIRECTIONS = os.path.join("demo_out", "directions")

#: Directions computed at start-up when there is neither ``--directions`` nor a
#: demo output: PCA of W (as the papers do for StyleGAN2; of z for generators
#: without W), a few seconds.
STARTUP_PCA = {"method": "pca", "components": 16, "samples": 4000, "seed": 0}

HOST = "127.0.0.1"
SEED_LIMIT = 2**32          # sample_z's seeds
MAX_ALPHA_RANGE = 1000.0    # the largest --alpha-range
RENDER_TIMEOUT_S = 120.0    # a request waiting longer gets a 503

_ASSETS = {  # route -> (file under static/, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/view.js": ("view.js", "text/javascript; charset=utf-8"),
    "/static/view.css": ("view.css", "text/css; charset=utf-8"),
}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

__all__ = ["DEFAULT_GENERATOR", "DirectionSet", "Edit", "RequestError", "Viewer",
           "LatestOnlyRenderer", "ViewServer", "build_viewer", "startup_directions",
           "render_edit", "render_snippet", "serve"]


class RequestError(ValueError):
    """A bad request: answered with ``status`` and a JSON ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------- directions


@dataclass(frozen=True)
class DirectionSet:
    """One directions file as the viewer uses it.

    Attributes:
      label: the name shown in the selector.
      path: the file's absolute path (what the copied command names).
      directions: ``(k, d)`` float32 latent directions.
      scales: ``(k,)`` float32 latent length of a one-standard-deviation step.
      space: ``'z'``, ``'w'`` or ``'w+'``; method, layer: from the metadata.
      generator: the ``MODULE:FACTORY`` spec of the generator they were found
        for (the metadata's ``generator.spec``, or a string's first word), or ``None``.
    """

    label: str
    path: str
    directions: np.ndarray
    scales: np.ndarray
    space: str
    method: str | None
    layer: str | None
    generator: str | None = None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DirectionSet":
        """Read a directions file (:func:`jaxfactor.directions.load_directions`)."""
        from ..directions import load_directions

        d = load_directions(path)
        meta = d.metadata
        space = meta.get("space") or "z"
        method, layer = meta.get("method"), meta.get("layer")
        k = len(d.directions)
        label = f"{str(method or '?').upper()}-{k} in {space}"
        if layer not in (None, "z", "w"):
            label += f" (from {layer})"
        label += f": {Path(path).name}"
        return cls(label, os.path.abspath(os.fspath(path)), np.asarray(d.directions, np.float32),
                   np.asarray(d.scales, np.float32), space, method, layer,
                   _generator_spec(meta.get("generator")))


def _generator_spec(described) -> str | None:
    """The generator spec a directions file records: ``discover`` writes a dict
    with ``spec``, the demo a string ``"MODULE:FACTORY (what it is)"``."""
    if isinstance(described, dict):
        described = described.get("spec")
    if isinstance(described, str) and described.split():
        word = described.split()[0]
        return word if ":" in word else None
    return None


def startup_directions(adapter, generator_spec: str, cache_dir: str | os.PathLike) -> str:
    """The :data:`STARTUP_PCA` directions of ``adapter`` (in W, else z), as a file in ``cache_dir``.

    Computed once (``pipeline.discover``, a few seconds for the built-in
    generator) and reused while the file's metadata matches the generator (its
    spec, description and a sha256 of its weights) and the recipe.

    Returns:
      The directions file's path.
    """
    from bridges.activations import module_sha256
    from bridges.generators import describe_sampler

    from ..directions import DirectionsFileError, load_directions, save_directions
    from .pipeline import discover

    cfg = STARTUP_PCA
    layer = "w" if "w" in adapter.latent_names else "z"
    k = min(cfg["components"], adapter.w_dim if layer == "w" else adapter.z_dim)
    described = {"spec": generator_spec, **adapter.describe(),
                 "weights_sha256": module_sha256(adapter.module)}
    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot keep the start-up directions in {os.fspath(cache_dir)!r}: {err}; "
                         f"pass --directions or set XDG_CACHE_HOME") from None
    stem = re.sub(r"[^A-Za-z0-9]+", "_", generator_spec).strip("_")
    path = Path(cache_dir) / f"{stem}_{layer}_{cfg['method']}_{k}.npz"
    recipe = {"n_samples": cfg["samples"], "seed": cfg["seed"]}
    if path.exists():
        try:
            old = load_directions(path, method=cfg["method"])
            meta = old.metadata
            if (meta.get("generator") == described and
                    {k: meta.get("provenance", {}).get(k) for k in recipe} == recipe):
                return str(path)
        except (DirectionsFileError, ValueError, OSError):
            pass  # recomputed below, replacing the file atomically
    found = discover(adapter, layer, cfg["method"], k,
                     n_samples=cfg["samples"], seed=cfg["seed"], show_progress=False)
    save_directions(path, found.directions, found.scales, method=cfg["method"], space=found.space,
                    layer=layer, params={"n_components": k},
                    generator=described,
                    provenance={**recipe, "sampler": describe_sampler(cfg["seed"], adapter.z_dim)})
    return str(path)


# --------------------------------------------------------------- edits


@dataclass(frozen=True)
class Edit:
    """One view: a seed, a directions set, strengths and a W+ layer range.

    Attributes:
      set_index: index into the viewer's direction sets.
      seed: the latent is ``sample_z(seed, 0, 1, z_dim)`` (``jaxfactor edit --seed``).
      alphas: ``((index, alpha), ...)`` the non-zero strengths in standard
        deviations, by increasing index; they add up.
      layers: ``(first, last)`` inclusive W+ layers, or ``None`` for all.
    """

    set_index: int
    seed: int
    alphas: tuple[tuple[int, float], ...] = ()
    layers: tuple[int, int] | None = None


_INT = re.compile(r"[0-9]{1,10}")
_ALPHA = re.compile(r"([0-9]{1,6}):([^:]{1,32})")
_LAYERS = re.compile(r"([0-9]{1,4})-([0-9]{1,4})")
_CLIENT = re.compile(r"[A-Za-z0-9_-]{1,40}")
_EDIT_KEYS = {"set", "seed", "a", "layers", "client"}


def _edit_space(dset: DirectionSet, layers, num_ws) -> tuple[str, list[int] | None]:
    """The ``space`` and ``layers`` that ``bridges.render`` (and ``jaxfactor edit``) take."""
    if layers is None or (layers == (0, num_ws - 1) and dset.space == "w"):
        return dset.space, None
    return "w+", list(range(layers[0], layers[1] + 1))


def _edit_step(dset: DirectionSet, alphas) -> np.ndarray:
    """``(d,)`` float64 sum of the one-direction steps, each computed as
    ``bridges.render.edit`` computes it (so one direction gives its bits)."""
    from bridges.render import _steps

    total = np.zeros(dset.directions.shape[1])
    for i, a in alphas:  # one direction at a time, in edit's arithmetic
        total = total + _steps(dset.directions[[i]].astype(np.float64), np.full(1, a), "std",
                               np.broadcast_to(np.asarray(dset.scales[[i]], np.float64), (1,)))[0]
    return total


def render_edit(adapter, dset: DirectionSet, edit: Edit) -> np.ndarray:
    """The image of ``edit``: ``(H, W, C)`` uint8.

    The latent is ``sample_z(edit.seed, 0, 1, z_dim)``, moved by the sum of
    ``alpha_i * scale_i * d_i / ||d_i||`` in the set's space (or on the W+
    layer range), rendered in a batch of one, as ``jaxfactor edit`` renders a
    grid cell.
    """
    import torch

    from bridges.generators import sample_z
    from bridges.render import _run

    space, layers = _edit_space(dset, edit.layers, getattr(adapter, "num_ws", None))
    z = torch.from_numpy(sample_z(edit.seed, 0, 1, adapter.z_dim)).to(adapter.device)
    step = _edit_step(dset, edit.alphas)[None, :]
    return _run(adapter, z, step, space, layers, 1, (-1.0, 1.0))[0]


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    img = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def render_snippet(snippet: dict | str, adapter=None) -> np.ndarray:
    """Render a JSON snippet from the viewer's "copy" box, exactly as the page showed it.

    Args:
      snippet: the snippet (a dict, or its JSON text): ``generator``,
        ``directions`` (a file path), ``seed``, ``edits`` (``[{"index", "alpha"}]``,
        alpha in standard deviations) and ``layers`` (``[first, last]`` or null).
      adapter: the generator's adapter (default: loaded from ``generator``).

    Returns:
      ``(H, W, C)`` uint8 image.
    """
    from .pipeline import load_generator

    s = json.loads(snippet) if isinstance(snippet, str) else dict(snippet)
    if s.get("units", "std") != "std":
        raise ValueError(f"snippet units must be 'std' (standard deviations), got {s['units']!r}")
    dset = DirectionSet.load(s["directions"])
    adapter = load_generator(s["generator"]) if adapter is None else adapter
    layers = s.get("layers")
    edit = Edit(0, int(s["seed"]), tuple((int(e["index"]), float(e["alpha"]))
                                         for e in s.get("edits", ()) if float(e["alpha"]) != 0),
                None if layers is None else (int(layers[0]), int(layers[1])))
    return render_edit(adapter, dset, edit)


# --------------------------------------------------------------- the viewer


class Viewer:
    """A generator, its direction sets and the page's settings; parses and renders edits.

    Args:
      adapter: the generator's latent adapter (``bridges.generators``).
      generator_spec: the ``--generator`` spec that loads it (for the command line).
      sets: the :class:`DirectionSet` s to choose from (at least one); each must
        live in a space the adapter edits, with its width.
      sliders: sliders shown (the first N directions of a set).
      alpha_range: sliders run from ``-alpha_range`` to ``alpha_range``
        standard deviations; requests beyond are refused.
    """

    def __init__(self, adapter, generator_spec: str, sets: list[DirectionSet], *,
                 sliders: int = 10, alpha_range: float = 6.0):
        if not sets:
            raise ValueError("the viewer needs at least one directions file")
        if not (isinstance(sliders, int) and sliders >= 1):
            raise ValueError(f"sliders must be a positive int, got {sliders!r}")
        if not (math.isfinite(alpha_range) and 0 < alpha_range <= MAX_ALPHA_RANGE):
            raise ValueError(f"alpha_range must be in (0, {MAX_ALPHA_RANGE:g}], got {alpha_range!r}")
        self.num_ws = getattr(adapter, "num_ws", None)
        for s in sets:
            if s.space not in adapter.spaces:
                raise ValueError(f"{s.path}: directions in space {s.space!r}; this generator "
                                 f"edits {', '.join(adapter.spaces)}")
            width = adapter.z_dim if s.space == "z" else adapter.w_dim
            if s.directions.shape[1] != width:
                raise ValueError(f"{s.path}: directions of width {s.directions.shape[1]}; the "
                                 f"generator's {s.space} has width {width}")
            if not np.all(np.linalg.norm(s.directions, axis=1) > 0):
                raise ValueError(f"{s.path}: a direction is zero")
        self.adapter, self.generator_spec, self.sets = adapter, generator_spec, list(sets)
        self.sliders, self.alpha_range = sliders, float(alpha_range)
        self.image_shape = tuple(int(n) for n in self.render(Edit(0, 0)).shape)  # and warms up

    # ---------------------------------------------------- request parsing

    def parse(self, query: str) -> tuple[Edit, str | None]:
        """An :class:`Edit` and the client id from a query string.

        ``set=I`` (a directions set), ``seed=S`` (``0 <= S < 2**32``),
        ``a=INDEX:ALPHA`` (repeatable; ``|ALPHA| <= alpha_range``, finite),
        ``layers=A-B`` (W+ layers, inclusive; W/W+ sets of generators with W+),
        ``client=ID`` (letters, digits, ``-``, ``_``).

        Raises:
          RequestError: naming the parameter and the value.
        """
        try:
            pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query),
                                           max_num_fields=256)
        except ValueError as err:
            raise RequestError(f"malformed query string: {err}") from None
        seen: dict[str, list[str]] = collections.defaultdict(list)
        for key, value in pairs:
            if key not in _EDIT_KEYS:
                raise RequestError(f"unknown parameter {key!r}; the parameters are "
                                   f"{', '.join(sorted(_EDIT_KEYS))}")
            seen[key].append(value)
        for key, values in seen.items():
            if key != "a" and len(values) > 1:
                raise RequestError(f"parameter {key!r} given {len(values)} times")
        one = {k: v[0] for k, v in seen.items() if k != "a"}
        for key in ("set", "seed"):
            if key not in one:
                raise RequestError(f"missing parameter {key!r}")
        set_index = self._int("set", one["set"], len(self.sets))
        seed = self._int("seed", one["seed"], SEED_LIMIT)
        dset = self.sets[set_index]
        k = len(dset.directions)
        alphas: dict[int, float] = {}
        for text in seen.get("a", []):
            m = _ALPHA.fullmatch(text)
            if m is None:
                raise RequestError(f"a={text!r}: expected INDEX:ALPHA, e.g. a=0:1.5")
            i = int(m.group(1))
            if i >= k:
                raise RequestError(f"a={text!r}: direction {i} out of range; the set has {k} "
                                   f"directions (0-{k - 1})")
            if i in alphas:
                raise RequestError(f"a: direction {i} given twice")
            try:
                alpha = float(m.group(2))
            except ValueError:
                raise RequestError(f"a={text!r}: alpha {m.group(2)!r} is not a number") from None
            if not math.isfinite(alpha) or abs(alpha) > self.alpha_range:
                raise RequestError(f"a={text!r}: alpha must be finite and within "
                                   f"+-{self.alpha_range:g} standard deviations")
            alphas[i] = alpha
        layers = None
        if "layers" in one:
            if self.num_ws is None or dset.space not in ("w", "w+"):
                raise RequestError("layers applies to W/W+ directions of a generator with W+ layers")
            m = _LAYERS.fullmatch(one["layers"])
            if m is None:
                raise RequestError(f"layers={one['layers']!r}: expected A-B, e.g. layers=0-3")
            lo, hi = int(m.group(1)), int(m.group(2))
            if not 0 <= lo <= hi < self.num_ws:
                raise RequestError(f"layers={one['layers']!r}: need 0 <= A <= B <= {self.num_ws - 1}")
            layers = (lo, hi)
        client = one.get("client")
        if client is not None and _CLIENT.fullmatch(client) is None:
            raise RequestError("client must be 1-40 letters, digits, '-' or '_'")
        edit = Edit(set_index, seed, tuple(sorted((i, a) for i, a in alphas.items() if a != 0)),
                    layers)
        return edit, client

    @staticmethod
    def _int(name: str, text: str, limit: int) -> int:
        if _INT.fullmatch(text) is None or int(text) >= limit:
            raise RequestError(f"{name}={text!r}: expected an int in [0, {limit})")
        return int(text)

    # ---------------------------------------------------- rendering and copying

    def render(self, edit: Edit) -> np.ndarray:
        """``(H, W, C)`` uint8 image of ``edit`` (see :func:`render_edit`)."""
        return render_edit(self.adapter, self.sets[edit.set_index], edit)

    def png(self, edit: Edit) -> bytes:
        """The PNG bytes of :meth:`render`."""
        return _png(self.render(edit))

    def snippet(self, edit: Edit) -> dict:
        """What the page's "copy" box shows: ``{"json": ..., "command": ..., "note": ...}``.

        ``json`` renders with :func:`render_snippet`; ``command`` is the
        ``jaxfactor edit`` line giving the same pixels (framed by the grid's
        2-pixel border), or ``None`` for a combination of several directions,
        which one grid cell of ``jaxfactor edit`` cannot hold.
        """
        dset = self.sets[edit.set_index]
        space, layers = _edit_space(dset, edit.layers, self.num_ws)
        snippet = {"generator": self.generator_spec, "directions": dset.path, "seed": edit.seed,
                   "units": "std", "space": space,
                   "layers": None if edit.layers is None else list(edit.layers),
                   "edits": [{"index": i, "alpha": a} for i, a in edit.alphas]}
        note = ""
        if len(edit.alphas) > 1:
            command = None
            note = ("jaxfactor edit renders one direction per grid cell; this combination of "
                    f"{len(edit.alphas)} directions is reproduced by "
                    "jaxfactor.app.view.render_snippet(json)")
        else:
            i, a = edit.alphas[0] if edit.alphas else (0, 0.0)
            words = ["jaxfactor", "edit", "--generator", self.generator_spec, "--directions",
                     dset.path, "--indices", str(i), f"--alphas={a!r}", "--seed", str(edit.seed)]
            if layers is not None:
                words += ["--space", "w+", "--layers", f"{layers[0]}-{layers[-1]}"]
            words += ["--out", "edit.png"]
            command = " ".join(shlex.quote(w) for w in words)
        return {"json": snippet, "command": command, "note": note}

    def config(self) -> dict:
        """The page's settings: the generator, the sets, slider count and range, image size."""
        return {"generator": self.generator_spec, "adapter": self.adapter.describe(),
                "num_ws": self.num_ws, "sliders": self.sliders, "alpha_range": self.alpha_range,
                "image_shape": list(self.image_shape), "seed_limit": SEED_LIMIT,
                "sets": [{"label": s.label, "path": s.path, "space": s.space, "method": s.method,
                          "layer": s.layer, "count": int(len(s.directions)),
                          "layer_range": s.space in ("w", "w+") and self.num_ws is not None}
                         for s in self.sets]}


# --------------------------------------------------------------- the worker


class _Ticket:
    __slots__ = ("job", "done", "status", "value")

    def __init__(self, job):
        self.job, self.done, self.status, self.value = job, threading.Event(), None, None

    def finish(self, status: str, value=None):
        self.status, self.value = status, value
        self.done.set()


class LatestOnlyRenderer:
    """One worker thread running ``render(job)``; per client only the newest waiting job.

    :meth:`submit` returns a ticket; its ``status`` becomes ``'ok'`` (``value``
    the result), ``'error'`` (``value`` the message), or ``'superseded'`` when a
    newer job of the same client arrived before this one started. Jobs without a
    client are never superseded. Clients are served in order of arrival.

    Args:
      render: the function run on the worker thread.
      max_waiting: waiting jobs beyond this are refused (:class:`RequestError`, 503).
    """

    def __init__(self, render: Callable[[Any], Any], *, max_waiting: int = 64):
        self._render, self._max_waiting = render, max_waiting
        self._cond = threading.Condition()
        self._waiting: collections.OrderedDict = collections.OrderedDict()
        self._anonymous = 0
        self._closed = False
        self.rendered = self.superseded = self.failed = 0
        self._thread = threading.Thread(target=self._loop, name="jaxfactor-view-render", daemon=True)
        self._thread.start()

    def submit(self, job, client: str | None = None) -> _Ticket:
        """Queue ``job`` for ``client``, superseding that client's waiting job."""
        ticket = _Ticket(job)
        with self._cond:
            if self._closed:
                raise RequestError("the server is shutting down", 503)
            if client is None:
                self._anonymous += 1
                key = ("anonymous", self._anonymous)
            else:
                key = ("client", client)
            old = self._waiting.pop(key, None)
            if old is not None:
                self.superseded += 1
                old.finish("superseded")
            elif len(self._waiting) >= self._max_waiting:
                raise RequestError(f"{self._max_waiting} renders are waiting; try again", 503)
            self._waiting[key] = ticket
            self._cond.notify()
        return ticket

    def _loop(self):
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                _, ticket = self._waiting.popitem(last=False)
            try:
                value = self._render(ticket.job)
            except Exception as err:  # reported to the page; the worker carries on
                self.failed += 1
                ticket.finish("error", f"{type(err).__name__}: {' '.join(str(err).split())}")
            else:
                self.rendered += 1
                ticket.finish("ok", value)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker; waiting jobs are answered ``'superseded'``."""
        with self._cond:
            self._closed = True
            for ticket in self._waiting.values():
                ticket.finish("superseded")
            self._waiting.clear()
            self._cond.notify_all()
        self._thread.join(timeout)


# --------------------------------------------------------------- HTTP


def _load_assets() -> dict[str, tuple[bytes, str]]:
    static = resources.files("jaxfactor.app").joinpath("static")
    return {route: (static.joinpath(name).read_bytes(), ctype)
            for route, (name, ctype) in _ASSETS.items()}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "ViewServer"

    timeout = 60  # seconds an idle keep-alive connection (and its thread) is kept

    def version_string(self):
        return "jaxfactor-view"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None):
        self.send_response(status)
        headers = {"Content-Type": ctype, "Content-Length": str(len(body)),
                   "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                   "Referrer-Policy": "no-referrer", "Content-Security-Policy": _CSP,
                   "Cross-Origin-Resource-Policy": "same-origin", **(extra or {})}
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def send_error(self, code, message=None, explain=None):
        """Errors of the HTTP layer itself (bad request line, unknown method) as JSON too."""
        try:
            self.close_connection = True
            self._json(code, {"error": message or http.HTTPStatus(code).phrase})
        except OSError:
            pass

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        try:
            self._route()
        except RequestError as err:
            self._json(err.status, {"error": str(err)})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as err:  # never a traceback to the client; keep serving
            self._json(500, {"error": f"internal error: {type(err).__name__}: {err}"})

    def _route(self):
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1 or hosts[0].lower() not in self.server.allowed_hosts:
            raise RequestError(f"Host {hosts[0] if hosts else None!r} is not this server's "
                               f"(DNS rebinding is refused); open {self.server.url}", 403)
        split = urllib.parse.urlsplit(self.path)
        path, query = split.path, split.query
        if path in self.server.assets:
            if query:
                raise RequestError(f"{path} takes no parameters")
            body, ctype = self.server.assets[path]
            return self._send(200, body, ctype)
        viewer = self.server.viewer
        if path == "/api/config":
            if query:
                raise RequestError("/api/config takes no parameters")
            return self._json(200, viewer.config())
        if path == "/api/snippet":
            edit, _ = viewer.parse(query)
            return self._json(200, viewer.snippet(edit))
        if path == "/api/render":
            edit, client = viewer.parse(query)
            ticket = self.server.renderer.submit(edit, client)
            if not ticket.done.wait(RENDER_TIMEOUT_S):
                raise RequestError(f"no render within {RENDER_TIMEOUT_S:g} s", 503)
            if ticket.status == "superseded":
                return self._send(204, b"", "application/json", {"X-Render": "superseded"})
            if ticket.status == "error":
                return self._json(500, {"error": f"render failed: {ticket.value}"})
            return self._send(200, ticket.value, "image/png")
        raise RequestError(f"no such page: {path!r}", 404)


class ViewServer(http.server.ThreadingHTTPServer):
    """The viewer's HTTP server on ``127.0.0.1:port`` (``port=0``: a free one).

    Attributes:
      url: ``http://127.0.0.1:PORT/``; viewer; renderer (its worker).
      allowed_hosts: the ``Host`` headers it answers (``127.0.0.1:PORT``,
        ``localhost:PORT``).
    """

    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, viewer: Viewer, port: int = 0, *, verbose: bool = False):
        if not (isinstance(port, int) and 0 <= port < 65536):
            raise ValueError(f"port must be an int in [0, 65536), got {port!r}")
        self.viewer, self.verbose = viewer, verbose
        self.assets = _load_assets()
        super().__init__((HOST, port), _Handler)
        self.port = self.server_address[1]
        self.url = f"http://{HOST}:{self.port}/"
        self.allowed_hosts = {f"{HOST}:{self.port}", f"localhost:{self.port}"}
        self.renderer = LatestOnlyRenderer(viewer.png)

    def start(self) -> threading.Thread:
        """Serve on a background thread (tests, notebooks); :meth:`stop` ends it."""
        thread = threading.Thread(target=self.serve_forever, name="jaxfactor-view-http", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Stop serving, the render worker and the socket."""
        self.shutdown()
        self.renderer.close()
        self.server_close()


# --------------------------------------------------------------- entry


def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxfactor", "view")


def build_viewer(generator: str | None = None, directions: list[str] | None = None, *,
                 device: str = "cpu", sliders: int = 10, alpha_range: float = 6.0,
                 demo_dir: str | os.PathLike | None = DEMO_DIRECTIONS,
                 cache_dir: str | os.PathLike | None = None,
                 log: Callable[[str], None] = lambda msg: None) -> Viewer:
    """The :class:`Viewer` ``jaxfactor view`` serves.

    Args:
      generator: a ``--generator`` spec (default: the generator of the demo's
        directions when ``demo_dir`` holds some, else :data:`DEFAULT_GENERATOR`).
      directions: directions files; default: the demo's files made for the
        served generator, else :func:`startup_directions` (kept in
        ``cache_dir``, default ``$XDG_CACHE_HOME/jaxfactor/view``).
      device: ``'cpu'`` or ``'cuda'``.
      sliders, alpha_range: see :class:`Viewer`.
      log: called with one line per start-up step.
    """
    from .pipeline import load_generator

    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    sets = [DirectionSet.load(p) for p in directions or []]  # cheap checks before the generator loads
    demo: list[DirectionSet] = []
    if not sets and demo_dir is not None and os.path.isdir(demo_dir):
        demo = [DirectionSet.load(p) for p in sorted(Path(demo_dir).glob("*.npz"))]
    demo_specs = sorted({s.generator for s in demo if s.generator is not None})
    spec = generator or (demo_specs[0] if len(demo_specs) == 1 else DEFAULT_GENERATOR)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA device")
    adapter = load_generator(spec)
    adapter.module.to(device)
    if demo:
        sets = [s for s in demo if s.generator == spec]
        others = len(demo) - len(sets)
        log(f"directions: the demo's {len(sets)} files in {demo_dir}"
            + (f" ({others} made for another generator or none named, left out)" if others else ""))
    if not sets:
        t0 = time.perf_counter()
        path = startup_directions(adapter, spec, cache_dir or _cache_dir())
        sets = [DirectionSet.load(path)]
        log(f"directions: {path} ({sets[0].label.split(':')[0]}, computed in "
            f"{time.perf_counter() - t0:.1f} s)")
    return Viewer(adapter, spec, sets, sliders=sliders, alpha_range=alpha_range)


def serve(viewer: Viewer, port: int = 8765, *, open_browser: bool = False,
          verbose: bool = False) -> int:
    """Serve ``viewer`` on ``127.0.0.1:port`` until interrupted (Ctrl-C); returns 0."""
    try:
        server = ViewServer(viewer, port, verbose=verbose)
    except OSError as err:
        raise ValueError(f"cannot listen on {HOST}:{port}: {err.strerror or err}"
                         + ("; choose another --port" if port else "")) from None
    print(f"jaxfactor view: serving {server.url} (Ctrl-C stops)", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("jaxfactor view: stopped", file=sys.stderr)
    finally:
        server.renderer.close()
        server.server_close()
    return 0
