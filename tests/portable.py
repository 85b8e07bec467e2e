"""Run the default test suite under the numerics of other machines, one after
the other, and report each run's result and duration.

    python -m tests.portable                 # every environment below (make test-portable)
    python -m tests.portable --salts 1 2 3 4 # the plain environment on other random data

Other CPUs pick other kernels: OpenBLAS by core type (AMD's Zen takes the
Haswell kernels; AVX-only CPUs Sandybridge), XLA by instruction set (AMD EPYC
before Zen 4 has no AVX-512) and PyTorch by its ATen/oneDNN dispatch. Each
kernel sums in its own order, so a tolerance that passes in only one of these
environments is tuned, not derived. Not part of CI (it runs the suite several
times over); run it before changing a tolerance.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AVX2 = "--xla_cpu_max_isa=AVX2"

ENVIRONMENTS = {
    "plain": {},
    "openblas-haswell": {"OPENBLAS_CORETYPE": "Haswell"},
    "openblas-skylakex": {"OPENBLAS_CORETYPE": "SkylakeX"},
    "openblas-sandybridge": {"OPENBLAS_CORETYPE": "Sandybridge"},
    "xla-avx2": {"XLA_FLAGS": AVX2},
    # what an AMD EPYC (Zen 2/3) machine picks in all three libraries at once
    "amd-like": {"OPENBLAS_CORETYPE": "Haswell", "XLA_FLAGS": AVX2,
                 "ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2"},
}


def run(name: str, extra: dict, pytest_args: list[str]) -> tuple[bool, float]:
    env = dict(os.environ)
    for key, value in extra.items():
        env[key] = f"{env[key]} {value}" if key == "XLA_FLAGS" and env.get(key) else value
    shown = " ".join(f"{k}={v}" for k, v in extra.items()) or "(plain)"
    print(f"=== {name}: {shown}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", *pytest_args], cwd=ROOT, env=env)
    seconds = time.perf_counter() - start
    print(f"=== {name}: {'passed' if proc.returncode == 0 else 'FAILED'} in {seconds:.0f} s",
          flush=True)
    return proc.returncode == 0, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.portable", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", nargs="+", choices=sorted(ENVIRONMENTS),
                        help="environments to run (default: all)")
    parser.add_argument("--salts", nargs="+", type=int,
                        help="instead: the plain environment with JAXFACTOR_TEST_SALT set to each")
    parser.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    args = parser.parse_args(argv)
    if args.salts:
        runs = [(f"salt-{s}", {"JAXFACTOR_TEST_SALT": str(s)}) for s in args.salts]
    else:
        runs = [(name, ENVIRONMENTS[name]) for name in (args.env or ENVIRONMENTS)]
    results = [(name, *run(name, extra, args.pytest_args)) for name, extra in runs]
    print("\n| run | result | seconds |\n|---|---|---|")
    for name, ok, seconds in results:
        print(f"| {name} | {'passed' if ok else 'FAILED'} | {seconds:.0f} |")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
