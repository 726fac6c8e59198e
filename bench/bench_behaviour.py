"""Bench of the behaviour tier (issue 9) on a classifier zoo made here, and on the zoo's causal LMs.

Per image root (a small BatchNorm CNN, a small ViT, optionally an MLP on blobs; each trained on
its synthetic task) and per text root (a classifier on the real all-MiniLM-L6-v2, 22.7M
parameters): weight-derived children (fine-tune of the last layer, of all layers, last layer
re-trained from scratch, 30% pruning, int8 + SCB through a safetensors round trip, fp16, adversarial
fine-tune, transfer to another label space - closeness then runs in the indirect mode), logit-
distilled students (fresh models trained on the root's logits only), and negatives: independent
models of the same architecture (other seeds, other data samples) and one of another architecture.

Prints per kind: determine's separation (weight-derived vs independent, 100% is the goal),
closeness AUC (lineage = derived + distilled vs no lineage), accuracy at the calibrated threshold,
and time per pair on ``--threads`` CPU threads (calibration timed apart). The auxiliary models
for calibration are made by the tool (``models.make_aux``: fine-tunes, pruning, independent
re-trainings on their own data samples) once per root and shared by closeness and determine.
``--lm-zoo`` adds same-basin determination over the causal LMs of a generated zoo (pairs of one
architecture; derived = same weight root in truth.json).

    .venv/bin/python bench/bench_behaviour.py [--kinds cnn,vit,text] [--roots 2] [--text-roots 1]
        [--threads 2] [--n-aux 8] [--lm-zoo /work/zoo-small] [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lineage_index.behaviour import closeness as closeness_fn
from lineage_index.behaviour import models as M
from lineage_index.behaviour.closeness import N_AUX
from lineage_index.behaviour.determine import calibrate, determine
from lineage_index.behaviour.probes import ProbeSet, TaskSpec, synthetic_probes, task_data
from lineage_index.errors import UsageError


@dataclass
class Kind:
    """Zoo settings of one model kind."""

    arch: str
    task: dict[str, object]
    steps: int
    other_arch: str
    k: int = 100
    pool: int = 512
    det_probes: int = 1000
    arch_kwargs: dict[str, object] = field(default_factory=dict)


KINDS = {
    "mlp": Kind("mlp", {"kind": "blobs"}, 300, "mlp", arch_kwargs={}),
    "cnn": Kind("cnn", {"kind": "images"}, 300, "vit"),
    "vit": Kind("vit", {"kind": "images"}, 400, "cnn"),
    "text": Kind("text", {"kind": "text", "length": 10}, 150, "text", k=40, pool=96, det_probes=192),
}


def zoo(kind: Kind, seed: int, tmp: Path, quick: bool) -> tuple[M.Classifier, list[tuple[str, str, M.Classifier]]]:
    """(root, [(name, group, model)]) with group in derived | distilled | independent."""
    task = TaskSpec(**{"classes": 4, "seed": seed, "spread": 1.0, **kind.task})  # type: ignore[arg-type]
    q = 0.5 if quick else 1.0
    if kind.arch == "text":
        root = M.minilm_classifier(task, seed=seed, head_steps=int(120 * q), steps=int(30 * q), name=f"text{seed}-root")
        ft_steps, head_steps, adv_steps, kd_steps = int(20 * q), int(80 * q), int(10 * q), int(150 * q)
        other_kwargs: dict[str, object] = {"layers": 2}
        kd_kwargs: dict[str, object] = {"layers": 2}
    else:
        root = M.train_fresh(kind.arch, task, seed=seed, steps=kind.steps, name=f"{kind.arch}{seed}-root",
                             **kind.arch_kwargs)
        ft_steps, head_steps, adv_steps, kd_steps = 150, 200, 150, 600
        other_kwargs = {"depth": 2} if kind.arch == "mlp" else {}
        kd_kwargs = {}
    data = task_data(task, 2000, seed=500 + seed)
    other_task = TaskSpec(**{**task.to_dict(), "classes": 2})
    transfer_data = ProbeSet(data.x, data.y % 2)  # a coarser label space on the same inputs  # type: ignore[operator]
    out: list[tuple[str, str, M.Classifier]] = [
        ("ft-last", "derived", M.finetune(root, data, seed=1, steps=head_steps, last_layer_only=True)),
        ("ft-all", "derived", M.finetune(root, data, seed=2, steps=ft_steps)),
        ("ft-all-long", "derived", M.finetune(root, data, seed=3, steps=2 * ft_steps)),
        ("retrain-last", "derived", M.finetune(root, data, seed=4, steps=head_steps, reinit_head=True)),
        ("prune30", "derived", M.prune(root, 0.3)),
        ("fp16", "derived", M.round_fp16(root)),
        ("adversarial", "derived", M.adversarial_finetune(root, data, seed=5, steps=adv_steps)),
        ("transfer", "derived", M.transfer(root, transfer_data, 2, seed=6, steps=ft_steps, head_steps=head_steps,
                                           task=other_task)),
    ]
    M.save(root, tmp / f"{root.name}-int8", tensors=M.quantise_int8(root))
    out.append(("int8", "derived", M.load(tmp / f"{root.name}-int8")))
    big = task_data(task, 4000 if kind.arch != "text" else 1500, seed=600 + seed)
    out.append(("distilled0", "distilled", M.distill(root, big, seed=70, steps=kd_steps, **kd_kwargs)))
    if kind.arch != "text":
        out.append(("distilled1", "distilled", M.distill(root, big, seed=71, steps=kd_steps)))
    n_ind = 2 if kind.arch == "text" else 3
    for i in range(n_ind):
        m = M.train_fresh(kind.arch, task, seed=seed * 100 + 31 + i, steps=kind.steps, **kind.arch_kwargs)
        out.append((f"independent{i}", "independent", m))
    other = M.train_fresh(kind.other_arch, task, seed=seed * 100 + 77, steps=kind.steps, **other_kwargs)
    out.append((f"other-arch-{kind.other_arch}", "independent", other))
    return root, out


def auc(pos: list[float], neg: list[float]) -> float:
    """P(score of a lineage pair > score of an independent pair), ties count half."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / max(1, len(pos) * len(neg))


def bench_kind(name: str, kind: Kind, roots: int, tmp: Path, quick: bool, n_aux: int = N_AUX) -> dict[str, object]:
    rows = []
    cal_t: list[float] = []
    det_t: list[float] = []
    clo_t: list[float] = []
    per_root_auc = []
    params = 0
    for seed in range(roots):
        t0 = time.perf_counter()
        root, models = zoo(kind, seed, tmp, quick)
        print(f"[{name}{seed}] zoo of {len(models)} models made in {time.perf_counter() - t0:.0f} s", flush=True)
        assert root.task is not None
        params = sum(p.numel() for p in root.module.parameters())
        t0 = time.perf_counter()
        lin, ind = M.make_aux(root, M.aux_data(root, None, n=2000 if name != "text" else 800), n_lineage=n_aux,
                              n_independent=n_aux, seed=1000 + seed)
        aux_t = time.perf_counter() - t0
        probes_det = synthetic_probes(root.task, kind.det_probes, seed=4242)
        t0 = time.perf_counter()
        thr = calibrate(root, probes_det, derived=lin[:2], independent=ind[:2])
        cache = tmp / f"cache-{name}{seed}"
        own = closeness_fn(root, root, k=kind.k, pool=kind.pool, cache_dir=cache, lineage_aux=lin,
                           independent_aux=ind)  # selects the probes and calibrates (cached for the pairs)
        cal_t.append(aux_t + time.perf_counter() - t0)
        print(f"[{name}{seed}] calibration {cal_t[-1]:.0f} s (aux models {aux_t:.0f} s); determine threshold "
              f"{thr.value:.4f} ({thr.how})", flush=True)
        cal = own.calibration
        print(f"[{name}{seed}] closeness threshold {cal.value:.3f} ({cal.how}); calibration scores lineage "
              f"{[round(v, 3) for v in cal.lineage_scores]} independent {[round(v, 3) for v in cal.independent_scores]}",
              flush=True)
        scores: dict[str, list[float]] = {"lin": [], "ind": []}
        for mname, group, m in models:
            t0 = time.perf_counter()
            try:
                d = determine(root, m, probes_det, threshold=thr)
                dv, barrier = d.verdict, d.loss_barrier
            except UsageError:  # another architecture: no linear path at all
                dv, barrier = "different basins (no path)", float("nan")
            det_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            c = closeness_fn(root, m, k=kind.k, pool=kind.pool, cache_dir=cache, lineage_aux=lin, independent_aux=ind)
            clo_t.append(time.perf_counter() - t0)
            rows.append((seed, mname, group, dv, barrier, thr.value, c))
            scores["ind" if group == "independent" else "lin"].append(c.score)
            print(f"{name}{seed} {mname:18s} {group:11s} barrier={barrier:.4f} (thr {thr.value:.4f}) {dv:26s} "
                  f"s={c.score:.3f} (thr {c.threshold:.3f}) {c.verdict}{' [indirect]' if c.indirect else ''}",
                  flush=True)
        per_root_auc.append(auc(scores["lin"], scores["ind"]))
    derived = [r for r in rows if r[2] == "derived"]
    indep = [r for r in rows if r[2] == "independent"]
    distilled = [r for r in rows if r[2] == "distilled"]
    ok = sum(r[3] == "same basin" for r in derived) + sum(r[3] != "same basin" for r in indep)
    lin = derived + distilled
    acc = sum(r[6].verdict == "lineage" for r in lin) + sum(r[6].verdict == "no lineage" for r in indep)
    summary = {
        "kind": name, "roots": roots, "pairs": len(rows), "n_aux": n_aux,
        "determine_separation": f"{ok}/{len(derived) + len(indep)}",
        "determine_separation_pct": round(100 * ok / max(1, len(derived) + len(indep)), 1),
        "distilled_different_basins": f"{sum(r[3] != 'same basin' for r in distilled)}/{len(distilled)}",
        "closeness_auc_per_root": [round(a, 3) for a in per_root_auc],
        "closeness_auc_pooled": round(auc([r[6].score for r in lin], [r[6].score for r in indep]), 3),
        "closeness_accuracy": f"{acc}/{len(rows)}", "closeness_accuracy_pct": round(100 * acc / max(1, len(rows)), 1),
        "distilled_found": f"{sum(r[6].verdict == 'lineage' for r in distilled)}/{len(distilled)}",
        "calibration_s_per_root": round(sum(cal_t) / len(cal_t), 1),
        "determine_s_per_pair": round(sum(det_t) / len(det_t), 3),
        "closeness_s_per_pair": round(sum(clo_t) / len(clo_t), 3),
        "params": params,
        "rows": [{"root": r[0], "model": r[1], "group": r[2], "determine": r[3], "barrier": r[4],
                  "score": r[6].score, "threshold": r[6].threshold, "indirect": r[6].indirect,
                  "calibration": [r[6].calibration.lineage_scores, r[6].calibration.independent_scores]}
                 for r in rows],
    }
    return summary


def bench_lms(zoo_dir: Path, n_aux: int) -> dict[str, object]:
    """determine over the causal LMs of a generated zoo, per architecture, every root as A."""
    from lineage_index.behaviour.lm import (
        calibrate_lm,
        determine_lm,
        is_causal_lm_dir,
        load_lm,
        sample_probes,
    )

    truth = json.loads((zoo_dir / "truth.json").read_text())["models"]
    by_arch: dict[str, list[str]] = {}
    for mid, t in truth.items():
        if t.get("method") == "adapter" or not is_causal_lm_dir(zoo_dir / mid):
            continue
        by_arch.setdefault(t["arch"], []).append(mid)
    rows, cal_t, det_t = [], [], []
    for arch, ids in sorted(by_arch.items()):
        roots = [m for m in ids if truth[m]["weight_root"] == m and not truth[m]["parents"]]
        for a_id in roots:
            a = load_lm(zoo_dir / a_id, name=a_id)
            probe = sample_probes(a, 64, 32, seed=4242)
            t0 = time.perf_counter()
            thr = calibrate_lm(a, probe, n_aux=n_aux)
            cal_t.append(time.perf_counter() - t0)
            for b_id in ids:
                if b_id == a_id:
                    continue
                b = load_lm(zoo_dir / b_id, name=b_id)
                t0 = time.perf_counter()
                r = determine_lm(a, b, probe, threshold=thr)
                det_t.append(time.perf_counter() - t0)
                derived = truth[b_id]["weight_root"] == a_id
                rows.append((arch, a_id, b_id, derived, truth[b_id]["method"], r))
                print(f"lm {arch:11s} {a_id} -> {b_id:45s} {'derived' if derived else 'independent':11s} "
                      f"[{truth[b_id]['method']}] ens-barrier={r.ensemble_barrier:.4f} (thr {r.threshold:.4f}) "
                      f"loss-barrier={r.loss_barrier:.4f} err-barrier={r.error_barrier:.4f} {r.verdict}", flush=True)
    ok = sum((r[5].verdict == "same basin") == r[3] for r in rows)
    return {"kind": "causal-lm", "pairs": len(rows), "determine_separation": f"{ok}/{len(rows)}",
            "determine_separation_pct": round(100 * ok / max(1, len(rows)), 1),
            "calibration_s_per_root": round(sum(cal_t) / max(1, len(cal_t)), 1),
            "determine_s_per_pair": round(sum(det_t) / max(1, len(det_t)), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kinds", default="cnn,vit,text", help="any of mlp,cnn,vit,text")
    ap.add_argument("--roots", type=int, default=2, help="roots per image/vector kind")
    ap.add_argument("--text-roots", type=int, default=1, help="roots of the MiniLM text classifier")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lm-zoo", type=Path, default=None, help="a generated zoo (truth.json) for causal-LM determine")
    ap.add_argument("--lm-aux", type=int, default=2)
    ap.add_argument("--n-aux", type=int, default=N_AUX, help="auxiliary lineage and independent models per root")
    ap.add_argument("--quick", action="store_true", help="shorter text training (half the steps)")
    ap.add_argument("--json", type=Path, default=None, help="also write the summaries here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    summaries = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        for name in [k for k in args.kinds.split(",") if k]:
            roots = args.text_roots if name == "text" else args.roots
            summaries.append(bench_kind(name, KINDS[name], roots, tmp, args.quick, args.n_aux))
            print(json.dumps({k: v for k, v in summaries[-1].items() if k != "rows"}), flush=True)
            if args.json:
                args.json.write_text(json.dumps(summaries, indent=2))
    if args.lm_zoo is not None:
        summaries.append(bench_lms(args.lm_zoo, args.lm_aux))
        print(json.dumps(summaries[-1]), flush=True)
    print(f"\n== summary ({args.threads} threads)")
    for s in summaries:
        print(f"{s['kind']:10s} determine separation {s['determine_separation']} ({s['determine_separation_pct']}%)"
              + (f"  closeness AUC {s['closeness_auc_pooled']} (per root {s['closeness_auc_per_root']})  accuracy "
                 f"{s['closeness_accuracy']} ({s['closeness_accuracy_pct']}%)  distilled found {s['distilled_found']}"
                 if "closeness_auc_pooled" in s else "")
              + f"  per pair: determine {s['determine_s_per_pair']} s"
              + (f", closeness {s['closeness_s_per_pair']} s" if "closeness_s_per_pair" in s else "")
              + f"; calibration {s['calibration_s_per_root']} s per root"
              + (f"; params {s['params']:,}" if s.get("params") else ""))
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=2))


if __name__ == "__main__":
    main()
