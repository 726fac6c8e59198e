"""Bench of the behaviour tier (issue 9) on a small classifier zoo made here.

Per root (an MLP on a 16-D blob task, a small BatchNorm CNN on 8x8 synthetic images): weight-derived
children (full fine-tunes, last-layer fine-tune, re-trained last layer, 30% pruning, fp16 rounding,
int8 + SCB through a safetensors round trip), distilled students (fresh init on the root's logits)
and independent same-architecture models (other seeds). Prints determine's separation
(weight-derived vs independent), closeness AUC (lineage = derived + distilled vs independent),
accuracy at the calibrated threshold, and time per pair (calibration timed apart).

    .venv/bin/python bench/bench_behaviour.py [--archs mlp,cnn] [--roots 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from lineage_index.behaviour import closeness as closeness_fn
from lineage_index.behaviour import models as M
from lineage_index.behaviour.determine import calibrate, determine
from lineage_index.behaviour.probes import TaskSpec, synthetic_probes, task_data


def zoo(arch: str, seed: int, tmp: Path) -> tuple[M.Classifier, list[tuple[str, str, M.Classifier]]]:
    """(root, [(kind, group, model)]) with group in derived | distilled | independent."""
    task = TaskSpec(kind="blobs" if arch == "mlp" else "images", classes=4, seed=seed, spread=1.0)
    steps = 300 if arch == "mlp" else 200
    root = M.train_fresh(arch, task, seed=seed, steps=steps, name=f"{arch}{seed}-root")
    data = task_data(task, 2000, seed=500 + seed)
    out: list[tuple[str, str, M.Classifier]] = [
        ("ft-all", "derived", M.finetune(root, data, seed=1, steps=150, lr=3e-3)),
        ("ft-all-long", "derived", M.finetune(root, data, seed=2, steps=300, lr=3e-3)),
        ("ft-last", "derived", M.finetune(root, data, seed=3, steps=200, lr=1e-2, last_layer_only=True)),
        ("retrain-last", "derived", M.finetune(root, data, seed=4, steps=300, lr=1e-2, reinit_head=True)),
        ("prune30", "derived", M.prune(root, 0.3)),
        ("fp16", "derived", M.round_fp16(root)),
    ]
    M.save(root, tmp / f"{root.name}-int8", tensors=M.quantise_int8(root))
    out.append(("int8", "derived", M.load(tmp / f"{root.name}-int8")))
    big = task_data(task, 4000, seed=600 + seed)
    out += [(f"distilled{i}", "distilled", M.distill(root, big, seed=70 + i, steps=600)) for i in range(2)]
    out += [(f"independent{i}", "independent", M.train_fresh(arch, task, seed=seed * 100 + 31 + i, steps=steps))
            for i in range(4)]
    return root, out


def auc(pos: list[float], neg: list[float]) -> float:
    """P(score of a lineage pair > score of an independent pair), ties count half."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / max(1, len(pos) * len(neg))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", default="mlp,cnn")
    ap.add_argument("--roots", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows, cal_t, det_t, clo_t = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        for arch in args.archs.split(","):
            for seed in range(args.roots):
                root, models = zoo(arch, seed, tmp)
                probes_det = synthetic_probes(root.task, 1000, seed=4242)  # type: ignore[arg-type]
                t0 = time.perf_counter()
                thr = calibrate(root, probes_det)
                closeness_fn(root, root, cache_dir=tmp / "cache")  # calibrates and caches the source profile
                cal_t.append(time.perf_counter() - t0)
                for kind, group, m in models:
                    t0 = time.perf_counter()
                    d = determine(root, m, probes_det, threshold=thr)
                    det_t.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    c = closeness_fn(root, m, cache_dir=tmp / "cache")
                    clo_t.append(time.perf_counter() - t0)
                    rows.append((arch, seed, kind, group, d, c))
                    print(f"{arch}{seed} {kind:14s} {group:11s} barrier={d.loss_barrier:.4f} (thr {d.threshold:.4f}) "
                          f"{d.verdict:16s} s={c.score:.3f} (thr {c.threshold:.3f}) {c.verdict}")
    derived = [r for r in rows if r[3] == "derived"]
    indep = [r for r in rows if r[3] == "independent"]
    distilled = [r for r in rows if r[3] == "distilled"]
    ok = sum(r[4].verdict == "same basin" for r in derived) + sum(r[4].verdict != "same basin" for r in indep)
    print("\n== determine (loss barrier, calibrated per root)")
    print(f"separation weight-derived vs independent: {ok}/{len(derived) + len(indep)} "
          f"= {100 * ok / (len(derived) + len(indep)):.1f}%")
    pairs = [(d[4].loss_barrier, i[4].loss_barrier) for d in derived for i in indep if d[:2] == i[:2]]
    print(f"pairwise (same root) derived barrier < independent barrier: "
          f"{100 * sum(a < b for a, b in pairs) / max(1, len(pairs)):.1f}%")
    print(f"distilled students judged 'different basins': {sum(r[4].verdict != 'same basin' for r in distilled)}"
          f"/{len(distilled)}")
    print("\n== closeness (lineage = derived + distilled)")
    lin = derived + distilled
    per_root = [auc([r[5].score for r in lin if r[:2] == k], [r[5].score for r in indep if r[:2] == k])
                for k in sorted({r[:2] for r in rows})]
    print(f"AUC pooled: {auc([r[5].score for r in lin], [r[5].score for r in indep]):.3f}   "
          f"per root: {', '.join(f'{a:.3f}' for a in per_root)}")
    acc = sum(r[5].verdict == "lineage" for r in lin) + sum(r[5].verdict == "no lineage" for r in indep)
    print(f"accuracy at the calibrated threshold: {acc}/{len(rows)} = {100 * acc / len(rows):.1f}%  "
          f"(distilled found: {sum(r[5].verdict == 'lineage' for r in distilled)}/{len(distilled)})")
    print("\n== time (2 threads)")
    n = len(rows)
    print(f"calibration per root (determine + closeness aux models, probe selection): "
          f"{sum(cal_t) / len(cal_t):.2f} s")
    print(f"per pair: determine {sum(det_t) / n * 1000:.1f} ms, closeness (cached profile) {sum(clo_t) / n * 1000:.1f} ms")


if __name__ == "__main__":
    main()
