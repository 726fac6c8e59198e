"""Benchmark: Hub requests per model, by rate-limit bucket, through a Hub-shaped server.

    python bench/bench_hub_requests.py --zoo /tmp/zoo-small [--before /tmp/before] [--scale 100]

Serves the zoo (and a sparse 7B-shaped, two-shard Llama checkpoint in its own org) with the
test Hub (``tests/hubserver.py``) as the real Hub behaves: weight files redirected to a CDN on
another origin, and the anonymous limits (api 500, resolvers 3,000 per 300 s) scaled down in
time by ``--scale`` (300 s / 100 = 3 s windows, quotas / 100). Runs ``lineage-index ingest --all``
as a user would (a subprocess; the real huggingface_hub client) and prints, from the server's
own log: requests per model by bucket (api, resolvers, CDN), 429 answers, wall time, models
per window, and the projected time for 2,000,000 models at the free tier's limits (5,000
resolvers and 1,000 api requests per 5 minutes). ``--before DIR`` runs the same crawl with the
code of another checkout (e.g. ``git worktree add /tmp/before <commit>``) for a before/after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_sketch import write_sparse_llama7b  # noqa: E402
from hubserver import LocalHub  # noqa: E402

ANONYMOUS = {"api": 500, "resolvers": 3000}
FREE = {"api": 1000, "resolvers": 5000}
WINDOW_S = 300.0
HUB_MODELS = 2_000_000


def crawl(code: Path, zoo: Path, scale: float, extra_env: dict[str, str]) -> dict[str, float]:
    with LocalHub(zoo, page_size=1000) as hub, tempfile.TemporaryDirectory() as tmp:
        hub.cdn = True
        window = WINDOW_S / scale
        hub.limits = {b: (max(1, int(q / scale)), window) for b, q in ANONYMOUS.items()}
        env = {**os.environ, "PYTHONPATH": str(code), "XDG_CACHE_HOME": str(Path(tmp) / "xdg"),
               "HF_HUB_DISABLE_TELEMETRY": "1", **extra_env}
        env.pop("HF_TOKEN", None)
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "lineage_index.cli.app", "ingest", "--all", "--endpoint", hub.url,
                            "--store", str(Path(tmp) / "store"), "--no-graph"],
                           capture_output=True, text=True, env=env, timeout=3600, cwd=tmp)
        took = time.monotonic() - t0
        if r.returncode != 0:
            raise SystemExit(f"crawl with {code} failed:\n{r.stderr[-2000:]}")
        counts = hub.requests_by_bucket()
        models = len(hub.repo_ids())
        by_repo: dict[str, int] = {}
        for e in hub.log:
            if e.route == "resolve":
                by_repo[e.repo or ""] = by_repo.get(e.repo or "", 0) + 1
        return {"models": models, "api": counts.get("api", 0), "resolvers": counts.get("resolvers", 0),
                "cdn": counts.get("cdn", 0), "limited": hub.limited, "seconds": took, "window": window,
                "seven_b_resolvers": by_repo.get("bench7b/Llama-2-7b-shaped", 0),
                "seven_b_cdn": sum(1 for e in hub.log if e.route == "cdn" and e.repo == "bench7b/Llama-2-7b-shaped")}


def show(label: str, c: dict[str, float]) -> None:
    n = c["models"]
    windows = c["seconds"] / c["window"]
    print(f"{label}: {n:.0f} models in {c['seconds']:.1f} s ({windows:.1f} windows of {c['window']:.0f} s, "
          f"{n / max(windows, 1e-9):.1f} models per window)")
    print(f"  per model: api {c['api'] / n:.3f}  resolvers {c['resolvers'] / n:.2f}  CDN {c['cdn'] / n:.1f}   "
          f"429 answered: {c['limited']:.0f}")
    print(f"  7B-shaped two-shard model: {c['seven_b_resolvers']:.0f} resolver requests, "
          f"{c['seven_b_cdn']:.0f} CDN requests")
    per_window = min(FREE["resolvers"] / max(c["resolvers"] / n, 1e-9), FREE["api"] / max(c["api"] / n, 1e-9))
    days = HUB_MODELS / per_window * WINDOW_S / 86400
    print(f"  projected: {per_window:,.0f} models per 5 min at free-tier limits; {HUB_MODELS:,} models in "
          f"{days:.1f} days")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", type=Path, required=True)
    ap.add_argument("--before", type=Path, help="another checkout to compare with")
    ap.add_argument("--scale", type=float, default=100.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        zoo = Path(tmp) / "hub"
        shutil.copytree(args.zoo, zoo)
        for stray in zoo.iterdir():
            if not stray.is_dir():
                stray.unlink()
        write_sparse_llama7b(zoo / "bench7b" / "Llama-2-7b-shaped")
        if args.before:
            show(f"before ({args.before})", crawl(args.before, zoo, args.scale, {}))
        show("after (this checkout)", crawl(ROOT, zoo, args.scale, {}))


if __name__ == "__main__":
    main()
