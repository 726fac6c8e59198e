"""Benchmark: cold-start time and peak memory of CLI commands that should answer at once.

    python bench/bench_cold_start.py [--repeat 3]

Each command runs in a fresh interpreter (as a user's shell runs it); the best of ``--repeat``
wall times and its peak RSS are printed, with whether torch was imported. Commands that need
Neo4j run against nothing (``--help``) so the figure is the tool's own start, not a server's.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

COMMANDS = [["--help"], ["--version"], ["query", "--help"], ["edges", "--help"], ["neo4j", "--help"],
            ["ingest", "--help"], ["check", "--help"], ["tree", "--help"], ["zoo", "build", "--help"]]
PROBE = ("import sys, runpy\nsys.argv = ['lineage-index', *sys.argv[1:]]\n"
         "try:\n    runpy.run_module('lineage_index.cli.app', run_name='__main__')\nexcept SystemExit:\n    pass\n"
         "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)")


def run(argv: list[str]) -> tuple[float, float, bool]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True)
    took = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return took, max(peak, before) / 1024, "NO-TORCH" not in r.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"{'command':28s} {'best s':>7s} {'peak MB':>8s} torch")
    for argv in COMMANDS:
        runs = [run(argv) for _ in range(args.repeat)]
        best = min(r[0] for r in runs)
        print(f"{' '.join(argv):28s} {best:7.2f} {runs[0][1]:8.0f} {'yes' if any(r[2] for r in runs) else 'no'}")


if __name__ == "__main__":
    main()
