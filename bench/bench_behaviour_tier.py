"""Bench of the opt-in behaviour tier of ``ingest`` on the classifier zoo (issue 9).

Builds the classifier zoo (``zoo build --classifiers``, default size small) unless ``--zoo`` names
one, runs the weight tier (no graph), then the behaviour tier on its edges, and prints:

- distilled students: found by the behaviour tier (exact teacher, or a model of the teacher's
  weight family), and whether ANY weight-only signal links them (an asserted weight edge, the
  pair's weight relatedness test, a shared weight component);
- precision of the behaviour-only edges (exact, and "no false link": both ends share a true
  lineage root; an independent model linked is a false link);
- closeness and determine verdicts on the weight edges (true lineage: all should be lineage /
  same basin), and the candidate measurements judged lineage between truly unrelated models;
- time: calibration (auxiliary models), per measured pair, the whole tier, with the load average.

    .venv/bin/python bench/bench_behaviour_tier.py [--zoo DIR] [--size small] [--seed 0] [--n-aux 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lineage_index import api
from lineage_index.behaviour.closeness import N_AUX
from lineage_index.behaviour.tier import BehaviourOptions, run_tier, weight_components
from lineage_index.indexer.pipeline import index_scope, recover, sketch_all
from lineage_index.indexer.recover.verify import compare
from lineage_index.indexer.sketch.store import SketchStore
from lineage_index.zoo.classifiers import build_classifier_zoo


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", type=Path)
    ap.add_argument("--size", default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-aux", type=int, default=N_AUX)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the tier (its default: 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-behaviour-tier-"))
    zoo = args.zoo
    if zoo is None:
        zoo = tmp / "zoo"
        s = build_classifier_zoo(zoo, size=args.size, seed=args.seed, progress=False)
        print(f"zoo: {s.n_models} models, {s.relations}, groups {s.groups}, built in {s.seconds:.0f}s "
              f"(load {os.getloadavg()[0]:.1f})")
    truth = json.loads((zoo / "truth.json").read_text())
    info = truth["models"]

    # --- weight tier only -------------------------------------------------------------------
    store = SketchStore(tmp / "store")
    src = api.make_source(directory=zoo)
    t0 = time.perf_counter()
    recs, report = sketch_all(src.iter_records(), src.open_reader, store)
    records, sketches = index_scope(store, recs, report.sketches)
    weight = recover(records, sketches)
    t_weight = time.perf_counter() - t0
    asserted = {(e.child, e.parent) for e in weight.edges if e.source in ("recovered", "both") and not e.contradicted}
    comp = weight_components(records, weight.edges)

    # --- behaviour tier -----------------------------------------------------------------------
    load0 = os.getloadavg()[0]
    tier = run_tier(records, weight.edges, BehaviourOptions(n_aux=args.n_aux, seed=args.seed, threads=args.threads),
                    show_progress=False)
    load1 = os.getloadavg()[0]

    distill = [(e["child"], e["parent"]) for e in truth["edges"] if e["relation"] == "distill"]
    found = {(e.child, e.parent): e for e in tier.edges if e.source == "behaviour"}
    print(f"\n== distilled students ({len(distill)})")
    exact = family = weight_signal = 0
    for child, teacher in distill:
        e_child = [p for c, p in found if c == child]
        hit = (child, teacher) in found
        fam = any(comp.get(p) == comp.get(teacher) for p in e_child)
        f = compare(sketches[child], sketches[teacher]) if child in sketches and teacher in sketches else None
        weights = ((child, teacher) in asserted or (teacher, child) in asserted or comp[child] == comp[teacher]
                   or (f is not None and f.related))
        exact += hit
        family += fam
        weight_signal += weights
        print(f"  {child:42s} teacher {teacher:38s} behaviour: {'exact' if hit else 'family' if fam else 'MISSED':6s}"
              f" (linked to {', '.join(e_child) or '-'})  weight signal: {'YES' if weights else 'none'}"
              f" (z={f.z:.1f}, cos={f.cos_median:.3f})" if f else "")
    print(f"found by the behaviour tier: exact teacher {exact}/{len(distill)}, teacher's weight family "
          f"{family}/{len(distill)}; found by a weight-only signal: {weight_signal}/{len(distill)}")

    root = {m: v["root"] for m, v in info.items()}
    true_pairs = set(distill)
    n = len(found)
    ok_exact = sum(k in true_pairs for k in found)
    ok_lineage = sum(root.get(c) == root.get(p) for c, p in found)
    independent_linked = [k for k in found if root.get(k[0]) != root.get(k[1])]
    print(f"\n== behaviour-only (distill) edges: {n}")
    print(f"precision exact: {ok_exact}/{n}; no false link (both ends of one true lineage): {ok_lineage}/{n}; "
          f"independent/unrelated models linked: {len(independent_linked)} {independent_linked}")
    exact_found = [e for k, e in found.items() if k in true_pairs]
    dir_ok = [e for e in exact_found if e.behaviour and e.behaviour.reverse_closeness is not None
              and (e.behaviour.reverse_closeness - (e.behaviour.reverse_threshold or 0))
              > (e.behaviour.closeness or 0) - (e.behaviour.threshold or 0)]
    print(f"direction by boundary tracking alone (teacher scores the larger margin on the student's profile): "
          f"{len(dir_ok)}/{len(exact_found)} true distillations found (upload time decides first when known)")
    cands = {(a, b): (s, t, v) for a, b, s, t, v in tier.candidates}
    cand_false = [(a, b, s, t) for (a, b), (s, t, v) in cands.items() if v == "lineage" and root.get(a) != root.get(b)]
    cand_true = [(a, b) for a, b in cands if root.get(a) == root.get(b)]
    print(f"candidate measurements (directed pairs): {len(cands)}; truly related {len(cand_true)}; unrelated "
          f"judged lineage in that direction: {len(cand_false)} (a distill edge needs both directions)")
    for a, b, s, t in cand_false:
        print(f"    one-way false lineage: {b} vs source {a}: s={s:.3f} thr={t:.3f}")

    print("\n== weight edges with behaviour evidence")
    rows = [e for e in tier.edges if e.behaviour is not None and e.source != "behaviour"]
    true_w = {(e["child"], e["parent"]) for e in truth["edges"] if e["relation"] != "distill"}
    for e in rows:
        b = e.behaviour
        assert b is not None
        print(f"  {e.child:42s} <- {e.parent:38s} {'true' if (e.child, e.parent) in true_w else 'sibling/other':13s} "
              f"s={b.closeness:.3f} (thr {b.threshold:.3f}) {b.verdict:10s} barrier="
              + (f"{b.loss_barrier:.4f} (thr {b.barrier_threshold:.4f}) {b.basin}" if b.basin else "n/a")
              + (" indirect" if b.indirect else ""))
    lin = sum(e.behaviour.verdict == "lineage" for e in rows if e.behaviour)
    basin = [e for e in rows if e.behaviour and e.behaviour.basin]
    same = sum(e.behaviour.basin == "same basin" for e in basin if e.behaviour)
    print(f"closeness verdict lineage: {lin}/{len(rows)}; determine same basin: {same}/{len(basin)}")

    print("\n== time")
    ps = tier.pair_seconds
    print(f"weight tier (sketch + recover, {len(records)} models): {t_weight:.1f}s")
    print(f"behaviour tier: {tier.seconds:.1f}s total for {len(tier.loaded)} models, calibration (aux models) "
          f"{tier.calibration_seconds:.1f}s, {len(ps)} measured pairs (closeness or determine): mean "
          f"{statistics.mean(ps) * 1000:.0f} ms, median {statistics.median(ps) * 1000:.0f} ms per pair"
          if ps else "no pairs")
    print(f"load average: {load0:.1f} at start, {load1:.1f} at end ({os.cpu_count()} CPUs, {args.threads} torch "
          "thread(s) in the tier)")


if __name__ == "__main__":
    main()
