"""Benchmark: `lineage-index check` on a zoo (every model against all the others) and on a
synthetic 7B-shaped checkpoint against an index of 1,000 sketches.

    python bench/bench_check.py --zoo /path/to/zoo [--no-seven-b]

Zoo part: the index holds every model's sketch; each model is checked against the others
(its own sketch is excluded), with the collection's records as a registry would have them.
Prints top-1 parent accuracy, verdict-class accuracy, the number of independent models
(roots and distilled students) given a lineage verdict pointing outside their own tree
(goal 0), and a calibration table (predicted probability against observed frequency),
also written as an SVG picture next to the zoo's truth (calibration.svg in the current dir).
7B part: a sparse Llama-2-7B-shaped checkpoint whose planned sample ranges hold real values,
checked against 1,000 stored sketches (100 of its family, one of them its parent).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lineage_index.indexer.check import check
from lineage_index.indexer.pipeline import sketch_all
from lineage_index.indexer.sketch import _byte_range, plan_reads
from lineage_index.indexer.sources import DirSource
from lineage_index.indexer.store import SketchStore

LINEAGE = {"copy", "quantized", "adapter", "finetune", "merge", "prune"}


def bench_zoo(zoo: Path) -> None:
    truth = json.loads((zoo / "truth.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        store = SketchStore(Path(tmp))
        src = DirSource(zoo)
        records, report = sketch_all(src.iter_records(), src.open_reader, store)
        parents: dict[str, set[str]] = {}
        relation: dict[str, str] = {}
        for e in truth["edges"]:
            parents.setdefault(e["child"], set()).add(e["parent"])
            relation[e["child"]] = e["relation"]
        top1 = n_top = cls_ok = n_cls = false_claims = n_indep = 0
        calib: list[tuple[float, bool]] = []
        t0 = time.perf_counter()
        for m, info in sorted(truth["models"].items()):
            r = check(str(zoo / m), store, model_id=m, records=records)
            rel = relation.get(m)
            tree = info.get("weight_root") or info["root"]
            if rel is None or rel == "distill":  # independent weights: roots and distilled students
                n_indep += 1
                named = [p for p in r.parents if (truth["models"].get(p, {}).get("weight_root") or p) != tree]
                if r.verdict in LINEAGE and named:
                    false_claims += 1
                continue
            n_cls += 1
            cls_ok += r.verdict == rel
            n_top += 1
            hit = bool(r.parents) and r.parents[0] in parents[m]
            top1 += hit
            calib.append((r.probability, hit and r.verdict == rel))
        secs = time.perf_counter() - t0
    print(f"zoo {zoo}: {len(truth['models'])} models checked in {secs:.1f} s ({secs / len(truth['models']):.2f} s each)")
    print(f"  top-1 parent accuracy: {top1}/{n_top} = {top1 / max(1, n_top):.3f}")
    print(f"  verdict-class accuracy: {cls_ok}/{n_cls} = {cls_ok / max(1, n_cls):.3f}")
    print(f"  independent models given a lineage verdict outside their tree: {false_claims} of {n_indep} (goal 0)")
    bins = np.linspace(0, 1, 6)
    rows = []
    print("  calibration: predicted probability bin -> observed frequency (n)")
    for lo, hi in zip(bins[:-1], bins[1:], strict=True):
        sel = [ok for p, ok in calib if lo <= p < hi or (hi == 1 and p == 1)]
        if sel:
            rows.append(((lo + hi) / 2, float(np.mean(sel)), len(sel)))
            print(f"    [{lo:.1f}, {hi:.1f}): {np.mean(sel):.3f} ({len(sel)})")
    write_svg(Path("calibration.svg"), rows)
    print("  picture: calibration.svg")


def write_svg(path: Path, rows: list[tuple[float, float, int]]) -> None:
    size, pad = 300, 30
    def xy(p: float, f: float) -> tuple[float, float]:
        return pad + p * (size - 2 * pad), size - pad - f * (size - 2 * pad)
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(p, f) for p, f, _ in rows))
    dots = "".join(f'<circle cx="{xy(p, f)[0]:.1f}" cy="{xy(p, f)[1]:.1f}" r="{2 + n ** 0.5:.1f}" fill="#1f77b4"/>'
                   for p, f, n in rows)
    (x0, y0), (x1, y1) = xy(0, 0), xy(1, 1)
    path.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}">'
        f'<rect width="100%" height="100%" fill="white"/>'
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#aaa" stroke-dasharray="4"/>'
        f'<polyline points="{pts}" fill="none" stroke="#1f77b4"/>{dots}'
        f'<text x="{size / 2}" y="{size - 5}" text-anchor="middle" font-size="11">predicted probability</text>'
        f'<text x="10" y="{size / 2}" font-size="11" transform="rotate(-90 10 {size / 2})" '
        f'text-anchor="middle">observed frequency</text></svg>')


def bench_seven_b() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_sketch import write_sparse_llama7b

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "hub"
        repo = root / "synthetic" / "llama-2-7b-shaped"
        write_sparse_llama7b(repo)
        src = DirSource(root)
        rec = next(r for r in src.iter_records())
        for p in plan_reads(rec.tensors):  # real BF16 values where the sketch will read
            a, b = _byte_range(p)
            vals = (rng.standard_normal((b - a) // 2) * 0.02).astype(np.float32)
            bf16 = (vals.view(np.uint32) >> 16).astype("<u2").tobytes()
            fd = os.open(repo / p.tensor.file, os.O_WRONLY)
            try:
                os.pwrite(fd, bf16, a)
            finally:
                os.close(fd)
        _, rep = sketch_all([rec], src.open_reader, None)
        target = rep.sketches[rec.id]
        store = SketchStore(Path(tmp) / "store")
        import dataclasses

        for i in range(100):  # same family: the target's parent, 99 independent models
            samples = {}
            for k, s in target.samples.items():
                # the parent: the target without its fine-tuning update (a smaller norm)
                v = 0.99 * s.values + 0.001 * rng.standard_normal(s.values.shape).astype(np.float32) if i == 0 \
                    else (rng.standard_normal(s.values.shape) * 0.02).astype(np.float32)
                samples[k] = dataclasses.replace(s, values=v.astype(np.float32))
            store.put(dataclasses.replace(target, model_id=f"bench/llama-7b-{i:03d}", sha="x", samples=samples,
                                          derived={}))
        for i in range(900):  # other families: small sketches
            tiny = {k: dataclasses.replace(s, values=s.values[:1, :8].copy()) for k, s in list(target.samples.items())[:4]}
            store.put(dataclasses.replace(target, model_id=f"bench/other-{i:03d}", sha="x", family=f"other{i % 7}",
                                          samples=tiny, derived={}))
        t0 = time.perf_counter()
        r = check(str(repo), store, model_id="synthetic/llama-2-7b-shaped")
        secs = time.perf_counter() - t0
    print(f"7B-shaped check against 1,000 stored sketches: {secs:.2f} s, verdict {r.verdict} "
          f"(parents {r.parents[:1]}), bytes read {r.bytes_read:,}, requests {r.requests}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", type=Path)
    ap.add_argument("--no-seven-b", action="store_true")
    args = ap.parse_args()
    if args.zoo:
        bench_zoo(args.zoo)
    if not args.no_seven_b:
        bench_seven_b()


if __name__ == "__main__":
    main()
