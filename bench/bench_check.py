"""Benchmark: `lineage-index check` on zoos held out from its calibration, and a synthetic
7B-shaped checkpoint against an index of 1,000 sketches.

    python bench/bench_check.py --zoo /path/to/zoo [--zoo ...] [--out DIR] [--weights-only] [--no-seven-b]

Zoo part, per zoo (its seed should not be one the shipped calibration was fitted on; the
script says when it is): the index holds every model's sketch and record; each model is
checked against all the others (its own sketch left out). Prints top-1 parent accuracy and
verdict-class accuracy over non-root models, how many independently trained models (roots and
distilled students) got any lineage verdict naming a model outside their weight tree, and the
calibration of the probabilities: Brier score, expected calibration error and a reliability
table, for the verdict probability (is the verdict right?) and for every candidate's
P(parent); with --weights-only the same again from the weights alone (no upload times, no
cards: bit-identical re-uploads are then undecidable). Then the hard guarantee on every model: each is checked against an index holding
only the *other* weight trees of the zoo (same architectures, independently trained): any
lineage verdict there is a false claim (goal 0). The reliability diagram and the histogram of
predicted probabilities are written as calibration.svg (and .png) in --out.

7B part: a sparse Llama-2-7B-shaped checkpoint whose planned sample ranges hold real values,
checked against 1,000 stored sketches (100 of its family, one of them its parent); prints the
time, the verdict and the bytes read (the same range-read plan as ingest).
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

from lineage_index.indexer.check.calibration import (
    ZooTruth,
    brier,
    expected_calibration_error,
    load_calibration,
    reliability,
)
from lineage_index.indexer.check.run import check
from lineage_index.indexer.pipeline import sketch_all
from lineage_index.indexer.read.sources import DirSource
from lineage_index.indexer.sketch.sample import _byte_range, plan_reads
from lineage_index.indexer.sketch.store import SketchStore, load_meta_id

LINEAGE = {"copy", "quantized", "adapter", "finetune", "merge", "prune"}


def bench_zoo(zoo: Path, weights_only: bool = False) -> dict:
    raw = json.loads((zoo / "truth.json").read_text())
    truth = ZooTruth.from_json(raw)
    trained_on = {(z.get("size"), z.get("seed")) for z in load_calibration().provenance.get("zoos", [])}
    meta = raw["zoo"]
    held_out = (meta.get("size"), meta.get("seed")) not in trained_on
    print(f"zoo {zoo} ({meta.get('size')}, seed {meta.get('seed')}, "
          f"{'held out from' if held_out else 'USED IN'} the calibration)")
    with tempfile.TemporaryDirectory() as tmp:
        store = SketchStore(Path(tmp) / "all")
        src = DirSource(zoo)
        records, report = sketch_all(src.iter_records(), src.open_reader, store)
        out = one_pass(zoo, raw, truth, store, records, set(report.sketches), "with the index's records")
        if weights_only:
            out["weights_only"] = one_pass(zoo, raw, truth, store, {}, set(report.sketches),
                                           "from the weights alone (no records: no upload times, no cards)")
        out["guarantee"] = guarantee(zoo, raw, truth, store, records, Path(tmp))
    return out


def one_pass(zoo: Path, raw: dict, truth: ZooTruth, store: SketchStore, records: dict, indexed: set[str],
             label: str) -> dict:
    """Every model against all the others: accuracy, false lineage and calibration figures."""
    out: dict = {"verdict_p": [], "verdict_ok": [], "cand_p": [], "cand_ok": []}
    top1 = n_top = cls_ok = n_cls = false_claims = n_indep = 0
    bytes_read: list[int] = []
    t0 = time.perf_counter()
    for m in sorted(raw["models"]):
        if m not in indexed:
            continue
        r = check(str(zoo / m), store, model_id=m, records=records, save=False)
        bytes_read.append(r.bytes_read)
        out["verdict_p"].append(r.probability)
        out["verdict_ok"].append(truth.verdict_right(m, r.verdict, r.parents, indexed - {m}))
        for c in r.candidates:
            out["cand_p"].append(c.probability)
            out["cand_ok"].append(truth.pair_label(m, c.model_id) == "parent")
        if not truth.parents.get(m):  # independent weights: roots and distilled students
            n_indep += 1
            outside = [p for p in r.parents if truth.tree.get(p, p) != truth.tree[m]]
            false_claims += bool(r.verdict in LINEAGE and outside)
            continue
        n_cls += 1
        cls_ok += r.verdict == truth.relation[m]
        n_top += 1
        top1 += bool(r.parents) and r.parents[0] in truth.parents[m]
    secs = time.perf_counter() - t0
    n = len(out["verdict_p"])
    print(f"  {label}: {n} models checked in {secs:.1f} s ({secs / max(1, n):.2f} s each), "
          f"{int(np.median(bytes_read)):,} bytes read per model (median)")
    print(f"    top-1 parent accuracy: {top1}/{n_top} = {top1 / max(1, n_top):.3f}")
    print(f"    verdict-class accuracy: {cls_ok}/{n_cls} = {cls_ok / max(1, n_cls):.3f}")
    print(f"    verdicts right (class and parents, every model): {sum(out['verdict_ok'])}/{n}")
    print(f"    independent models given a lineage verdict outside their weight tree: {false_claims} of {n_indep}"
          " (goal 0)")
    _calibration_lines(out, "    ")
    return out


def guarantee(zoo: Path, raw: dict, truth: ZooTruth, full: SketchStore, records: dict, tmp: Path) -> tuple[int, int]:
    """Every model against an index of only the other weight trees: lineage verdicts there are false."""
    by_tree: dict[str, list[Path]] = {}
    for p in full:
        by_tree.setdefault(truth.tree.get(load_meta_id(p), "?"), []).append(p)
    claims = checked = 0
    for tree in sorted(by_tree):
        store = SketchStore(tmp / f"without-{abs(hash(tree))}")
        for other, paths in by_tree.items():
            if other != tree:
                for p in paths:
                    (store.root / p.parent.name).mkdir(parents=True, exist_ok=True)
                    (store.root / p.parent.name / p.name).symlink_to(p)
        for m in sorted(x for x in raw["models"] if truth.tree.get(x) == tree and x not in truth.adapters):
            r = check(str(zoo / m), store, model_id=m, records=records, save=False)
            checked += 1
            if r.verdict in LINEAGE and r.parents:
                claims += 1
                print(f"    FALSE CLAIM: {m} -> {r.verdict} of {r.parents}")
    print(f"  every model against the other weight trees only: {claims} lineage verdicts of {checked} (goal 0)")
    return claims, checked


def _calibration_lines(out: dict, indent: str = "  ") -> None:
    for name, p, y in (("verdict probability", out["verdict_p"], out["verdict_ok"]),
                       ("candidate P(parent)", out["cand_p"], out["cand_ok"])):
        print(f"{indent}{name}: Brier {brier(p, y):.4f}, ECE {expected_calibration_error(p, y):.3f}, "
              f"n {len(p)}; predicted probability bin -> observed frequency (n):")
        for lo, mean_p, freq, k in reliability(p, y, bins=10):
            print(f"{indent}  [{lo:.1f}, {lo + 0.1:.1f}): mean p {mean_p:.3f} -> {freq:.3f} ({k})")


def write_picture(out_dir: Path, runs: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("verdict_p", "verdict_ok", "cand_p", "cand_ok")
    merged = {k: [v for r in runs for v in r[k]] for k in keys}
    curves = [("verdict", "verdict_p", "verdict_ok", "#1f77b4"), ("candidate P(parent)", "cand_p", "cand_ok", "#d62728")]
    if all("weights_only" in r for r in runs):
        for k in keys:
            merged["w_" + k] = [v for r in runs for v in r["weights_only"][k]]
        curves += [("verdict, weights only", "w_verdict_p", "w_verdict_ok", "#2ca02c"),
                   ("candidate, weights only", "w_cand_p", "w_cand_ok", "#ff7f0e")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    ax = axes[0]
    ax.plot([0, 1], [0, 1], "--", color="#999", lw=1)
    for name, pk, yk, colour in curves:
        rows = reliability(merged[pk], merged[yk], bins=10)
        ax.plot([r[1] for r in rows], [r[2] for r in rows], "o-", color=colour,
                label=f"{name} (Brier {brier(merged[pk], merged[yk]):.3f})")
        for _, mp, fr, k in rows:
            ax.annotate(str(k), (mp, fr), textcoords="offset points", xytext=(4, -10), fontsize=7, color=colour)
    ax.set(xlabel="predicted probability", ylabel="observed frequency", xlim=(0, 1), ylim=(-0.02, 1.02),
           title="reliability (held-out zoos)")
    ax.legend(loc="upper left", fontsize=8)
    ax = axes[1]
    ax.hist([merged[c[1]] for c in curves], bins=np.linspace(0, 1, 21), color=[c[3] for c in curves],
            label=[c[0] for c in curves], log=True)
    ax.set(xlabel="predicted probability", ylabel="count (log)", title="spread of the probabilities")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / "calibration.svg")
    fig.savefig(out_dir / "calibration.png", dpi=90)
    print(f"picture: {out_dir / 'calibration.svg'}")


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
        t0, c0 = time.perf_counter(), time.process_time()
        r = check(str(repo), store, model_id="synthetic/llama-2-7b-shaped", save=False)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"7B-shaped check against 1,000 stored sketches: {secs:.2f} s ({cpu:.2f} s CPU), verdict {r.verdict} "
          f"(parents {r.parents[:1]}, p {r.probability:.2f}), bytes read {r.bytes_read:,} of "
          f"{target.model_bytes:,}, requests {r.requests}; load average {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", type=Path, action="append", default=[])
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--no-seven-b", action="store_true")
    ap.add_argument("--weights-only", action="store_true",
                    help="also check every model without the index's records (no times, no cards)")
    args = ap.parse_args()
    runs = [bench_zoo(z, args.weights_only) for z in args.zoo]
    if len(runs) > 1:
        keys = ("verdict_p", "verdict_ok", "cand_p", "cand_ok")
        print("all zoos together, with the index's records:")
        _calibration_lines({k: [v for r in runs for v in r[k]] for k in keys})
        if args.weights_only:
            print("all zoos together, from the weights alone:")
            _calibration_lines({k: [v for r in runs for v in r["weights_only"][k]] for k in keys})
    if runs:
        write_picture(args.out, runs)
    if not args.no_seven_b:
        bench_seven_b()


if __name__ == "__main__":
    main()
