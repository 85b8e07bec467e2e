"""The jaxfactor command (also python -m jaxfactor): demo, discover, edit, evaluate, view.

Its --help text is _DESCRIPTION and _EPILOG below, plain text (no reStructuredText).
Exit codes: 0 success; 2 bad arguments or inputs, or a missing optional extra
(one line on stderr); 1 an unexpected error.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

from .._extras import TORCH_PIN, MissingExtraError, require_all
from .demo import REQUIRED_MODULES as _DEMO_NEEDS

_DESCRIPTION = ("jaxfactor: find semantic edit directions in a generator's latent space "
                "(also run as: python -m jaxfactor).")

_EPILOG = f"""\
examples:
  jaxfactor demo --out demo_out
  jaxfactor discover --generator bridges.builtin:load_builtin_generator \\
      --layer synthesis.init --method pca --components 20 --samples 5000 --out dirs.npz
  jaxfactor edit --generator bridges.builtin:load_builtin_generator \\
      --directions dirs.npz --alphas -3 0 3 --out grid.png
  jaxfactor evaluate --generator mypkg.models:load_fastgan --directions dirs.npz \\
      --inception-weights pt_inception-2015-12-05-6726825d.pth --out scores.json
  jaxfactor view --directions dirs.npz      # sliders in the browser, on 127.0.0.1

optional extras: every command needs the torch extra, demo also the demo
extra. Install the torch pin first:
  pip install {' '.join(TORCH_PIN)}
  pip install 'jaxfactor[torch,demo]'

exit codes: 0 success; 2 bad arguments or inputs, or a missing extra (one
line on stderr); 1 an unexpected error.
"""

# Modules each command imports beyond the engine (checked before it runs, so
# one message names everything that is missing).
_NEEDS = {"demo": _DEMO_NEEDS, "discover": ("torch",), "edit": ("torch", "PIL"),
          "evaluate": ("torch", "torchvision", "pytorch_fid"), "view": ("torch", "PIL")}


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line, like every other error (the
    usage is in --help); exit code 2 as before. Subparsers inherit the class."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {value}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _check_out(args) -> None:
    """Refuse an --out that cannot be written before any work starts."""
    if args.command in ("demo", "view"):  # a report directory, created by the demo; view writes none
        return
    parent = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"--out {args.out!r}: directory {parent!r} does not exist")
    if os.path.isdir(args.out):
        raise ValueError(f"--out {args.out!r} is a directory; give a file name")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"--out {args.out!r}: directory {parent!r} is not writable")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="jaxfactor", description=_DESCRIPTION, epilog=_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the whole pipeline on the built-in testbed generator (known "
                                       "factors) and write an HTML report (needs the torch and demo extras)")
    d.add_argument("--out", default="demo_out", help="report directory (default: demo_out)")
    d.add_argument("--quick", action="store_true", help="reduced sizes (a smoke run)")
    d.add_argument("--samples", type=_positive_int, help="samples to factorize (default 4000)")
    d.add_argument("--components", type=_positive_int,
                   help="components of PCA/SCA/SeFa in W and the pooled layer (default 16)")
    d.add_argument("--init-components", type=_positive_int,
                   help="PCA components at the 16384-d init layer (default 500)")
    d.add_argument("--ica-components", type=_positive_int, nargs="+", metavar="K",
                   help="FastICA counts in W (default 16 32)")
    d.add_argument("--init-ica-components", type=_positive_int, nargs="+", metavar="K",
                   help="FastICA counts at the init layer (default 16 40: at most the numerical rank of the layer, about 50 here)")
    d.add_argument("--fid-images", type=_positive_int, help="images for edit FID (default 1000)")
    d.add_argument("--inception-weights", metavar="PATH",
                   help="edit FID on Inception features from this pytorch-fid weights file "
                        "(default: the testbed feature network)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-progress", action="store_true", help="no progress bars")

    g = sub.add_parser("discover", help="find latent directions of your generator; writes a directions file "
                                           "(needs the torch extra)")
    g.add_argument("--generator", required=True, metavar="MODULE:FACTORY",
                   help="'package.module:factory' or 'file.py:factory' returning an nn.Module, a latent "
                        "adapter, or (module, adapter)")
    g.add_argument("--layer", required=True, help="dotted module name to factorize, or 'z' / 'w'")
    g.add_argument("--method", required=True, choices=["pca", "ica", "sca", "sefa"])
    g.add_argument("--components", type=_positive_int, required=True)
    g.add_argument("--samples", type=_positive_int, default=10000)
    g.add_argument("--batch-size", type=_positive_int,
                   help="latents per forward pass (default: 32 on CPU, 256 on accelerators)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--pool", choices=["max", "avg"],
                   help="spatial pooling of the activations (needs --pool-size)")
    g.add_argument("--pool-size", type=_positive_int, nargs="+", metavar="N",
                   help="pooled spatial size with --pool: N (square) or H W")
    g.add_argument("--space", choices=["z", "w"], help="latent to lift to (default: w when there is one)")
    g.add_argument("--cache", metavar="PATH",
                   help="keep the activations in a .npy file or directory: the generator runs once "
                        "for every pass of the fit and the lift (resumable; refused if stale)")
    g.add_argument("--sefa-weights", nargs="+", metavar="PARAM",
                   help="for --method sefa: names of (C_l x d) weight parameters of the module")
    g.add_argument("--out", required=True, help="directions file to write (.npz)")

    e = sub.add_parser("edit", help="render a grid of edits (rows: directions, columns: strengths; "
                                       "needs the torch extra)")
    e.add_argument("--generator", required=True, metavar="MODULE:FACTORY")
    e.add_argument("--directions", required=True, help="a directions file from 'discover'")
    e.add_argument("--indices", type=int, nargs="+", help="directions to show (default: the first 8)")
    e.add_argument("--alphas", type=_finite_float, nargs="+", default=[-3.0, 0.0, 3.0])
    e.add_argument("--units", choices=["std", "latent"], default="std",
                   help="alpha in standard deviations of the component (default) or latent distance")
    e.add_argument("--space", choices=["z", "w", "w+"],
                   help="latent space of the edit (default: the file's); w+ edits W directions on "
                        "the --layers only")
    e.add_argument("--layers", metavar="A-B|I,J,...",
                   help="W+ layers of a --space w+ edit: a range A-B (inclusive) or a list I,J,...")
    e.add_argument("--samples", type=_positive_int, default=1,
                   help="samples per direction: the grid has one row per (direction, sample)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", required=True, help="PNG to write")

    v = sub.add_parser("evaluate", help="edit FID of a directions file (a = 3 and 6; needs the torch extra)")
    v.add_argument("--generator", required=True, metavar="MODULE:FACTORY")
    v.add_argument("--directions", required=True)
    v.add_argument("--images", type=_positive_int, default=1000)
    v.add_argument("--alpha-ranges", type=_finite_float, nargs="+", default=[3.0, 6.0])
    v.add_argument("--inception-weights", help="pytorch-fid Inception weights file (default: torch hub cache)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--out", required=True, help="JSON to write")

    w = sub.add_parser("view", help="explore directions live in the browser, with sliders (a local "
                                      "server on 127.0.0.1; needs the torch extra)")
    w.add_argument("--generator", metavar="MODULE:FACTORY",
                   help="the generator (default: the built-in one)")
    w.add_argument("--directions", nargs="+", metavar="FILE",
                   help="directions files to choose from (default: the demo's in demo_out/directions, "
                        "else PCA of W computed at start-up)")
    w.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765; 0: any free)")
    w.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    w.add_argument("--sliders", type=_positive_int, default=10, help="sliders: the first N directions")
    w.add_argument("--alpha-range", type=_finite_float, default=6.0,
                   help="sliders run over +-A standard deviations (default 6)")
    w.add_argument("--open", action="store_true", help="open the page in the web browser")
    return p


def _named_weights(adapter, names):
    params = dict(adapter.module.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"no parameter(s) {missing} in the module; 2-D parameters there: "
                         f"{[n for n, t in params.items() if t.ndim == 2][:40]}")
    return [params[n].detach().cpu().numpy() for n in names]


def _pool_size(args):
    """``--pool`` / ``--pool-size`` as ``ActivationStream`` wants them, refused in CLI terms."""
    size = args.pool_size
    if args.pool is None:
        if size is not None:
            raise ValueError("--pool-size needs --pool max or --pool avg")
        return None
    if size is None:
        raise ValueError(f"--pool {args.pool} needs --pool-size N (a square size) or --pool-size H W")
    if len(size) > 2:
        raise ValueError(f"--pool-size takes N or H W, got {len(size)} numbers")
    return size[0] if len(size) == 1 else tuple(size)


def _layers(text: str | None, num_ws: int | None) -> list[int] | None:
    """``--layers`` ``'A-B'`` (inclusive) or ``'I,J,...'`` as W+ indices."""
    if text is None:
        return None
    try:
        if "-" in text.strip("-"):
            lo, hi = (int(s) for s in text.split("-", 1))
            layers = list(range(lo, hi + 1))
        else:
            layers = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--layers must be a range A-B or a list I,J,..., got {text!r}") from None
    if not layers:
        raise ValueError(f"--layers {text!r} names no layer")
    if num_ws is not None and not all(0 <= i < num_ws for i in layers):
        raise ValueError(f"--layers {text!r} outside the generator's W+ layers 0-{num_ws - 1}")
    return layers


def _cmd_discover(args) -> int:
    from bridges.generators import describe_sampler

    from ..directions import save_directions
    from .pipeline import discover, load_generator

    pool_size = _pool_size(args)  # before the generator is built
    adapter = load_generator(args.generator)
    weights = _named_weights(adapter, args.sefa_weights) if args.sefa_weights else None
    found = discover(adapter, args.layer, args.method, args.components, n_samples=args.samples,
                     seed=args.seed, batch_size=args.batch_size, pool=args.pool,
                     show_progress=sys.stderr.isatty(),
                     pool_size=pool_size, space=args.space, sefa_weights=weights,
                     cache=args.cache)
    arrays = {"r2": found.r2} if found.r2 is not None else None
    save_directions(args.out, found.directions, found.scales, method=args.method, space=found.space,
                    layer=args.layer, params={"n_components": args.components, "pool": args.pool,
                                              "pool_size": pool_size},
                    generator={"spec": args.generator, **adapter.describe()}, arrays=arrays,
                    provenance={"n_samples": args.samples, "seed": args.seed,
                                "sampler": describe_sampler(args.seed, adapter.z_dim)},
                    extra={"convergence": found.convergence})
    conv = found.convergence
    note = ""
    if conv is not None:
        note = (f"; converged in {conv['n_iter']} iterations" if conv["status"] == "converged"
                else f"; NOT converged: {conv['message'] or conv['status']}")
    print(f"wrote {args.out}: {len(found.directions)} directions in {found.space} "
          f"({found.seconds:.1f} s){note}")
    return 0


def _cmd_edit(args) -> int:
    from bridges.generators import sample_z
    from bridges.render import edit, save_grid

    from ..directions import load_directions
    from .pipeline import load_generator

    dirs = load_directions(args.directions)  # the cheap check first: before the generator is built
    found_in = dirs.metadata.get("space") or "z"
    space = args.space or found_in
    if space != found_in and not (space == "w+" and found_in in ("w", "w+")):
        raise ValueError(f"--space {space}: the file's directions live in {found_in!r}; "
                         f"{'only w and w+ share directions' if found_in == 'w' else 'use --space ' + found_in}")
    if args.layers is not None and space != "w+":
        raise ValueError("--layers applies to --space w+ only")
    idx = args.indices if args.indices else list(range(min(8, len(dirs.directions))))
    bad = [i for i in idx if not 0 <= i < len(dirs.directions)]
    if bad:
        raise ValueError(f"--indices {bad} out of range: the file has {len(dirs.directions)} directions")
    adapter = load_generator(args.generator)
    if space not in adapter.spaces:
        raise ValueError(f"--space {space}: this generator edits {', '.join(adapter.spaces)}")
    layers = _layers(args.layers, getattr(adapter, "num_ws", None))
    z = sample_z(args.seed, 0, args.samples, adapter.z_dim)
    images = edit(adapter, z, dirs.directions[idx], args.alphas, units=args.units,
                  scales=dirs.scales[idx], space=space, layers=layers)   # (m, a, n, H, W, C)
    rows = images.transpose(0, 2, 1, 3, 4, 5).reshape(-1, *images.shape[1:2], *images.shape[3:])
    save_grid(rows, args.out)
    where = f"W+ layers {layers[0]}-{layers[-1]}" if layers else space
    print(f"wrote {args.out}: {len(idx)} directions x {args.samples} samples (rows) x "
          f"{len(args.alphas)} strengths (columns), in {where}")
    return 0


def _cmd_evaluate(args) -> int:
    import torch

    from bridges.features import InceptionFeatures
    from bridges.generators import sample_z
    from bridges.render import render_codes

    from ..directions import load_directions
    from ..metrics.protocols import edit_fid
    from .pipeline import load_generator

    dirs = load_directions(args.directions)  # the cheap check first: before the generator is built
    adapter = load_generator(args.generator)
    space = dirs.metadata.get("space") or "z"
    extractor = InceptionFeatures(args.inception_weights)
    z = sample_z(args.seed, 0, args.images, adapter.z_dim)
    latents = adapter.codes(torch.from_numpy(z))["w"].numpy() if space == "w" else z

    def render(lat):  # Inception features take [0, 1]
        return (render_codes(adapter, lat, space=space) + 1) / 2

    scaled = dirs.directions * dirs.scales[:, None]
    out = {"directions": os.fspath(args.directions), "images": args.images, "space": space}
    stats = None
    for a in args.alpha_ranges:
        res = edit_fid(render, latents, scaled, extractor, alpha_range=a, seed=args.seed,
                       normalize=False, original_statistics=stats)
        stats = res.original_statistics
        out[f"fid_a{a:g}"] = float(res.fid)
        print(f"edit FID a={a:g}: {res.fid:.3f}")
    from .._io import atomic_write_text

    atomic_write_text(args.out, json.dumps(out, indent=2) + "\n")
    return 0


def _cmd_demo(args) -> int:
    from .demo import DemoConfig, run_demo

    overrides = {k: v for k, v in (("n_samples", args.samples), ("components", args.components),
                                   ("init_components", args.init_components),
                                   ("fid_images", args.fid_images),
                                   ("inception_weights", args.inception_weights)) if v is not None}
    for key, counts in (("ica_components", args.ica_components),
                        ("init_ica_components", args.init_ica_components)):
        if counts is not None:
            overrides[key] = tuple(counts)
    overrides["seed"] = args.seed
    if args.no_progress:
        overrides["show_progress"] = False
    cfg = DemoConfig.quick(**overrides) if args.quick else DemoConfig(**overrides)
    run_demo(args.out, cfg)
    return 0


def _cmd_view(args) -> int:
    from .view import build_viewer, serve

    if not 0 <= args.port < 65536:  # before the generator loads
        raise ValueError(f"--port must be in 0-65535, got {args.port}")
    viewer = build_viewer(args.generator, args.directions, device=args.device, sliders=args.sliders,
                          alpha_range=args.alpha_range,
                          log=lambda msg: print(f"jaxfactor view: {msg}", flush=True))
    return serve(viewer, args.port, open_browser=args.open)


def main(argv=None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    handlers = {"demo": _cmd_demo, "discover": _cmd_discover, "edit": _cmd_edit, "evaluate": _cmd_evaluate,
                "view": _cmd_view}
    from .pipeline import PipelineError

    try:
        require_all(_NEEDS[args.command], feature="this command")
        _check_out(args)
        return handlers[args.command](args)
    except (MissingExtraError, PipelineError, ValueError, TypeError, FileNotFoundError, KeyError) as err:
        message = " ".join(str(err).split())  # one line, whatever the exception carried
        print(f"jaxfactor {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
