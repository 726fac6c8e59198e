"""Bench of the behaviour tier on Hugging Face-format classifiers (issue 21).

Builds (or reuses) ``lineage-index zoo build DIR --classifiers --hf-format``: a transformers ViT
family and a transformers ResNet family (BatchNorm) saved with Hugging Face layout
(``config.json`` of the model type, ``preprocessor_config.json``, transformers tensor names), each
with a root, weight-derived children (fine-tune of the last layer / all layers, last layer
re-trained, pruned, int8, fp16, adversarial fine-tune, transfer to a 3-class label set), distilled
students and three independent models (one with a fine-tune of its own), plus labelled probe
PNGs in ``DIR/.probes``. Every model is loaded from its directory the way ``closeness`` and
``determine`` load a user's model (transformers Auto class from config.json, safetensors only,
preprocessing from preprocessor_config.json applied to the probe PNGs).

Per family root (source A) against every other model of the zoo of the same input space:
determine's separation (weight-derived vs independent, same-architecture pairs), closeness AUC
(lineage = descendants through weights or distillation vs every other model, the other family
included) of the statistic closeness decides on, max(s − threshold, soft agreement − its
threshold), and of the boundary score s alone, accuracy at the calibrated thresholds, and seconds
per pair and per calibration (auxiliary models made by the tool from the source's config and the
labelled probes, once per root).

    .venv/bin/python bench/bench_behaviour_hf.py [--zoo DIR] [--size small] [--seed 0] [--n-aux 8] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from lineage_index.behaviour import models as M
from lineage_index.behaviour.closeness import N_AUX, closeness
from lineage_index.behaviour.determine import calibrate, determine
from lineage_index.behaviour.probes import probes_for
from lineage_index.errors import UsageError


def auc(pos: list[float], neg: list[float]) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / max(1, len(pos) * len(neg))


def lineage_of(truth: dict, a: str, b: str) -> str:
    """``derived`` (b descends from a through weights), ``distilled`` (through a distillation on
    the way) or ``none``."""
    models = truth["models"]
    node, via_distill = b, False
    while models[node]["parents"]:
        parent = models[node]["parents"][0]
        via_distill |= models[node]["relation"] == "distill"
        if parent == a:
            return "distilled" if via_distill else "derived"
        node = parent
    return "none"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", type=Path, default=Path("/tmp/hf-classifier-zoo"))
    ap.add_argument("--size", default="small")
    ap.add_argument("--seed", type=int, default=0, help="zoo seed when the zoo is built here (7: a held-out seed)")
    ap.add_argument("--n-aux", type=int, default=N_AUX)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--roots", default="", help="comma-separated root ids to use as sources (default: every root)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.zoo / "truth.json").is_file():
        t0 = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "lineage-index"), "zoo", "build", str(args.zoo), "--classifiers",
                        "--hf-format", "--size", args.size, "--seed", str(args.seed), "--no-progress"], check=True)
        print(f"zoo built in {time.perf_counter() - t0:.0f} s", flush=True)
    truth = json.loads((args.zoo / "truth.json").read_text())
    probe_dir = args.zoo / truth["zoo"].get("probes", ".probes")
    ids = sorted(truth["models"])
    t0 = time.perf_counter()
    loaded = {m: M.load(args.zoo / m, name=m) for m in ids}
    print(f"{len(loaded)} models loaded from Hugging Face layout in {time.perf_counter() - t0:.1f} s", flush=True)
    roots = [m for m in ids if truth["models"][m]["group"] == "root" and (not args.roots or m in args.roots.split(","))]
    rows, cal_t, det_t, clo_t, per_root = [], [], [], [], {}
    for root_id in roots:
        a = loaded[root_id]
        probes = probes_for(a, probe_dir)
        t0 = time.perf_counter()
        lin, ind = M.make_aux(a, M.aux_data(a, probes), n_lineage=args.n_aux, n_independent=args.n_aux, seed=1000)
        aux_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        thr = calibrate(a, probes, derived=lin[:2], independent=ind[:2])
        cache = args.zoo.parent / f".bench-cache-{args.zoo.name}"
        own = closeness(a, a, probes, cache_dir=cache, lineage_aux=lin, independent_aux=ind)
        cal_t.append(aux_s + time.perf_counter() - t0)
        print(f"[{root_id}] calibration {cal_t[-1]:.0f} s (aux models {aux_s:.0f} s); determine threshold "
              f"{thr.value:.4f}; closeness threshold {own.threshold:.3f} ({own.calibration.how})", flush=True)
        scores: dict[str, list[float]] = {"lin": [], "ind": []}
        for mid in ids:
            if mid == root_id:
                continue
            b, group = loaded[mid], lineage_of(truth, root_id, mid)
            t0 = time.perf_counter()
            try:
                d = determine(a, b, probes, threshold=thr)
                dv, barrier = d.verdict, d.loss_barrier
            except UsageError:  # another architecture: no linear path
                dv, barrier = "no path", float("nan")
            det_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            c = closeness(a, b, probes, cache_dir=cache, lineage_aux=lin, independent_aux=ind)
            clo_t.append(time.perf_counter() - t0)
            margin = max(c.score - c.threshold, -1.0 if c.soft_agreement is None else c.soft_agreement - c.soft_threshold)
            scores["ind" if group == "none" else "lin"].append(margin)
            same_arch = dv != "no path"
            rows.append({"root": root_id, "model": mid, "lineage": group, "same_arch": same_arch,
                         "determine": dv, "barrier": barrier, "det_threshold": thr.value, "score": c.score,
                         "threshold": c.threshold, "verdict": c.verdict, "indirect": c.indirect,
                         "soft": c.soft_agreement, "soft_threshold": c.soft_threshold, "signal": c.signal,
                         "margin": margin})
            soft = "" if c.soft_agreement is None else f" soft={c.soft_agreement:.3f} (thr {c.soft_threshold:.3f})"
            print(f"{mid:48s} {group:9s} barrier={barrier:.4f} {dv:16s} s={c.score:.3f} (thr {c.threshold:.3f}){soft} "
                  f"{c.verdict}{' [indirect]' if c.indirect else ''}{f' ({c.signal})' if c.signal else ''}", flush=True)
        per_root[root_id] = round(auc(scores["lin"], scores["ind"]), 3)
    wd = [r for r in rows if r["lineage"] == "derived"]
    indep_same = [r for r in rows if r["lineage"] == "none" and r["same_arch"]]
    ok = sum(r["determine"] == "same basin" for r in wd) + sum(r["determine"] != "same basin" for r in indep_same)
    lin = [r for r in rows if r["lineage"] != "none"]
    non = [r for r in rows if r["lineage"] == "none"]
    acc = sum(r["verdict"] == "lineage" for r in lin) + sum(r["verdict"] == "no lineage" for r in non)
    summary = {
        "zoo": str(args.zoo), "models": len(ids), "roots": roots, "pairs": len(rows), "n_aux": args.n_aux,
        "determine_separation": f"{ok}/{len(wd) + len(indep_same)}",
        "closeness_auc_per_root": per_root,
        "closeness_auc_pooled": round(auc([r["margin"] for r in lin], [r["margin"] for r in non]), 3),
        "boundary_score_auc_pooled": round(auc([r["score"] for r in lin], [r["score"] for r in non]), 3),
        "closeness_accuracy": f"{acc}/{len(rows)}", "closeness_accuracy_pct": round(100 * acc / max(1, len(rows)), 1),
        "distilled_found": f"{sum(r['verdict'] == 'lineage' for r in rows if r['lineage'] == 'distilled')}/"
                           f"{sum(r['lineage'] == 'distilled' for r in rows)}",
        "calibration_s_per_root": round(sum(cal_t) / len(cal_t), 1),
        "determine_s_per_pair": round(sum(det_t) / len(det_t), 3),
        "closeness_s_per_pair": round(sum(clo_t) / len(clo_t), 3),
        "threads": args.threads,
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
