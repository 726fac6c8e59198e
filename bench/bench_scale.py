"""Benchmark: the index at hub scale on a simulated hub (sim build -> candidates -> verify -> assemble -> graph load).

    python bench/bench_scale.py --models 10000 --models 100000 --models 1000000 [--work /tmp/scale]
        [--graph/--no-graph] [--k 10] [--out bench/out]
    python bench/bench_scale.py --search-only /tmp/scale/n1000000   # the candidate search alone

For each N: builds a simulated hub (``lineage_index.sim``), recovers its lineage over the
packed store (``indexer.recover_batch``: candidates, verification of candidate pairs only,
assembly per family), scores the edges against the simulated truth, and loads models and edges
into Neo4j (``schema.bulk.load_graph``: the bulk importer for an empty managed database past
its threshold). Each stage runs in its own child process, so its peak memory is its own:
peak RSS is the child's ``ru_maxrss``; inside recovery, where three stages share a process, a
thread samples VmRSS (/proc) every 20 ms and keeps the peak of the stage running. Wall and CPU
seconds are both printed (CPU is what a busy shared machine does not inflate); the load
average is printed before and after each N.

Candidate recall: the share of true (child, parent) edges of the weights (not distillation)
whose pair is among the candidates, overall and, for the families that got a compressed index,
against exact search (the same families' candidates recomputed with a flat index, outside the
timed stage). Edge F1 is ``evaluation.score`` of the asserted edges against truth.json.

The graph load needs a managed Neo4j whose database it may overwrite: set
LINEAGE_INDEX_NEO4J_HOME / LINEAGE_INDEX_BOLT_PORT / LINEAGE_INDEX_HTTP_PORT to a private one
(it is emptied first). Results are appended to OUT/bench_scale.json; the plot of time against N
with an N log N reference line is written to OUT/bench_scale.png from every result there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

STAGES = ("sim build", "candidates", "verify", "assemble", "graph load")


def _rss_now() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _maxrss() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class _Monitor(threading.Thread):
    """Peak VmRSS per stage label, sampled every 20 ms."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.label = "setup"
        self.peak: dict[str, int] = {}
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            rss = _rss_now()
            self.peak[self.label] = max(self.peak.get(self.label, 0), rss)
            time.sleep(0.02)


# --- child stages ------------------------------------------------------------------------------


def stage_build(work: Path, n: int, seed: int) -> dict:
    from dataclasses import asdict

    from lineage_index.sim.build import build_sim

    w0, c0 = time.perf_counter(), time.process_time()
    summary = build_sim(work, n, seed=seed)
    return {"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0, "peak_rss": _maxrss(),
            "summary": asdict(summary)}


def stage_recover(work: Path, k: int, sample: int) -> dict:
    import numpy as np

    from lineage_index.indexer.recover import candidates
    from lineage_index.indexer.recover.batch import StageClock, edges_json, recover_packed
    from lineage_index.indexer.sketch.store import SketchStore

    monitor = _Monitor()
    monitor.start()

    class Clock(StageClock):
        def run(self, stage, fn, *args, **kwargs):
            previous, monitor.label = monitor.label, stage
            try:
                return super().run(stage, fn, *args, **kwargs)
            finally:
                monitor.label = previous

    truth_pairs = json.loads((work / "truth_pairs.json").read_text())
    by_child: dict[str, list[str]] = {}
    for c, p in truth_pairs:
        by_child.setdefault(c, []).append(p)
    hits = {"all": [0, 0], "compressed": [0, 0], "compressed_exact": [0, 0]}
    kinds: dict[str, int] = {}
    check_wall = [0.0]

    def on_family(fam, rows) -> None:
        w0 = time.perf_counter()
        pos = {m: i for i, m in enumerate(fam.model_ids)}
        pairs = set(zip(rows.a.tolist(), rows.b.tolist(), strict=True))
        mine = [(pos[c], pos[p]) for c in fam.model_ids for p in by_child.get(c, []) if p in pos]
        found = [(min(a, b), max(a, b)) in pairs for a, b in mine]
        hits["all"][0] += sum(found)
        hits["all"][1] += len(found)
        kinds[rows.plan.kind] = kinds.get(rows.plan.kind, 0) + len(fam)
        if rows.plan.kind != "flat" and mine:
            exact = candidates.candidate_rows(fam.embedding, k, candidates.sketch_priority(
                fam.meta["dtypes"], fam.meta["quant"]), plan=candidates.choose_index(len(fam), 256, kind="flat"))
            ex_pairs = set(zip(exact.a.tolist(), exact.b.tolist(), strict=True))
            rng = np.random.default_rng(0)
            pick = rng.choice(len(mine), size=min(sample, len(mine)), replace=False)
            for i in pick:
                a, b = mine[i]
                key = (min(a, b), max(a, b))
                hits["compressed"][0] += key in pairs
                hits["compressed"][1] += 1
                hits["compressed_exact"][0] += key in ex_pairs
                hits["compressed_exact"][1] += 1
        check_wall[0] += time.perf_counter() - w0

    result = recover_packed(SketchStore(work / "store"), k=k, on_family=on_family, clock=Clock())
    monitor.stop = True
    (work / "edges.json").write_text(edges_json(result.edges))
    return {
        "wall": result.clock.wall, "cpu": result.clock.cpu, "peak_rss": monitor.peak, "maxrss": _maxrss(),
        "families": result.families, "models": result.models, "pairs": result.pairs, "related": result.related,
        "merge_fits": result.merge_fits, "index_kinds": result.index_kinds, "models_by_index": kinds,
        "tuned_recall_min": result.tuned_recall_min, "largest_family": result.largest_family,
        "recall": hits, "recall_check_wall": check_wall[0], "edges": len(result.edges),
    }


def stage_eval(work: Path) -> dict:
    from lineage_index.cli.zoo_cmd import load_pred_edges
    from lineage_index.evaluation import score
    from lineage_index.indexer.pipeline import asserted_edges

    w0 = time.perf_counter()
    truth = json.loads((work / "truth.json").read_text())
    s = score(asserted_edges(load_pred_edges(work / "edges.json")), truth)
    return {"wall": time.perf_counter() - w0, "peak_rss": _maxrss(),
            "scores": {k: getattr(s, k) for k in ("precision", "recall", "f1", "direction_accuracy",
                                                    "relation_accuracy", "merges_complete", "ari", "n_pred",
                                                    "n_true")}}


def stage_graph(work: Path) -> dict:
    from lineage_index.api import compute_roots, model_props
    from lineage_index.cli.zoo_cmd import load_pred_edges
    from lineage_index.indexer.sketch.store import SketchStore
    from lineage_index.records import Sketch
    from lineage_index.schema.bulk import load_graph
    from lineage_index.schema.connection import resolve

    store = SketchStore(work / "store")
    edges = load_pred_edges(work / "edges.json")
    families = store.packed.families()
    ids = [m for f in families for m in store.packed.load_family(f, with_records=False).model_ids]
    roots = compute_roots(edges, ids)

    def rows():
        for f in families:
            fam = store.packed.load_family(f)
            for i, (m, rec) in enumerate(zip(fam.model_ids, fam.records, strict=True)):
                meta = fam.meta
                sk = Sketch(m, meta["sha"][i], 1, fam.family, fam.family_desc, fam.kind, {}, None,  # type: ignore[arg-type]
                            bytes_read=int(meta["bytes_read"][i]),
                            dtypes=tuple(x for x in meta["dtypes"][i].split(",") if x), quant=meta["quant"][i] or None)
                yield {"id": m, "props": model_props(rec, sk, roots.get(m))}

    conn = resolve()
    with conn.driver().session(database=conn.database) as session:  # the bulk path needs an empty database
        session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()
    w0, c0 = time.perf_counter(), time.process_time()
    load = load_graph(conn, rows, edges, n_models=len(ids))
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    records, _, _ = conn.driver().execute_query(
        "MATCH (m:Model) WITH count(m) AS models MATCH ()-[r:DERIVED_FROM]->() RETURN models, count(r) AS edges",
        database_=conn.database)
    return {"wall": wall, "cpu": cpu, "peak_rss": _maxrss(), "method": load.method, "reason": load.reason,
            "stages": load.stages, "import_peak_rss": load.import_peak_rss_bytes,
            "models_in_graph": records[0]["models"], "edges_in_graph": records[0]["edges"],
            "rows": load.models, "edges": load.edges}


def crossover(work: Path, sizes: list[int]) -> None:
    """Flat against IVF-SQ8 candidate search on subsets of the largest family of a built hub."""
    import numpy as np

    from lineage_index.indexer.recover import candidates
    from lineage_index.indexer.sketch.store import SketchStore

    packed = SketchStore(work / "store").packed
    names = [f for f in packed.families() if not f.startswith("adapter:")]
    biggest = max(names, key=lambda f: len(packed.load_family(f, with_records=False)))
    emb = np.asarray(packed.load_family(biggest, with_records=False).embedding)
    print(f"largest family of {work}: {len(emb):,} sketches (load average {_load()})")
    rng = np.random.default_rng(0)
    for n in [x for x in sizes if x <= len(emb)] + [len(emb)]:
        sub = emb[rng.choice(len(emb), n, replace=False)]
        for kind in ("flat", "ivfsq8"):
            plan = candidates.choose_index(n, sub.shape[1], kind=kind)
            w0, c0 = time.perf_counter(), time.process_time()
            rows = candidates.candidate_rows(sub, 10, plan=plan) if kind == "flat" else \
                _with_flat_max(candidates, 0, lambda sub=sub: candidates.candidate_rows(sub, 10))
            print(f"n {n:7,d} {kind:7s} cpu {time.process_time() - c0:7.2f} s wall {time.perf_counter() - w0:7.2f} s "
                  f"nprobe {rows.plan.nprobe}/{rows.plan.nlist} tuned recall@k {rows.tuned_recall:.4f}", flush=True)


def search_only(work: Path, k: int) -> None:
    """The candidate search alone over every family of a built hub (families loaded first, untimed)."""
    import faiss
    import numpy as np

    from lineage_index.indexer.recover import candidates
    from lineage_index.indexer.sketch.store import SketchStore

    packed = SketchStore(work / "store").packed
    fams = [packed.load_family(f, with_records=False) for f in packed.families() if not f.startswith("adapter:")]
    data = [(np.asarray(f.embedding), candidates.sketch_priority(f.meta["dtypes"], f.meta["quant"])) for f in fams]
    print(f"{sum(len(e) for e, _ in data):,} sketches in {len(data):,} families, largest {max(len(e) for e, _ in data):,};"
          f" faiss threads {faiss.omp_get_max_threads()}; load average {_load()}", flush=True)
    kinds: dict[str, int] = {}
    pairs = 0
    w0, c0 = time.perf_counter(), time.process_time()
    for emb, prio in data:
        rows = candidates.candidate_rows(emb, k, prio)
        kinds[rows.plan.kind] = kinds.get(rows.plan.kind, 0) + len(emb)
        pairs += len(rows.a)
    print(f"candidate search: wall {time.perf_counter() - w0:.1f} s, cpu {time.process_time() - c0:.1f} s;"
          f" {pairs:,} pairs; sketches per index {kinds}; load average after {_load()}")


def _with_flat_max(module, value: int, fn):
    old = module.FLAT_MAX
    module.FLAT_MAX = value
    try:
        return fn()
    finally:
        module.FLAT_MAX = old


def _child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"stage {args[:2]} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_point(n: int, work: Path, k: int, graph: bool, seed: int, sample: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    point: dict = {"n": n, "load_before": _load(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if not (work / "truth.json").exists():
        point["build"] = _child(["--stage", "build", "--work", str(work), "--n", str(n), "--seed", str(seed)])
    else:
        point["build"] = json.loads((work / "build_result.json").read_text())
    (work / "build_result.json").write_text(json.dumps(point["build"]))
    truth = json.loads((work / "truth.json").read_text())
    pairs = [(e["child"], e["parent"]) for e in truth["edges"] if e["relation"] not in ("distill", "adapter")]
    (work / "truth_pairs.json").write_text(json.dumps(pairs))
    del truth
    point["recover"] = _child(["--stage", "recover", "--work", str(work), "--k", str(k), "--sample", str(sample)])
    point["eval"] = _child(["--stage", "eval", "--work", str(work)])
    if graph:
        point["graph"] = _child(["--stage", "graph", "--work", str(work)])
    point["load_after"] = _load()
    return point


def table(point: dict) -> list[tuple[str, float, float, float]]:
    b, r = point["build"], point["recover"]
    rows = [("sim build", b["wall"], b["cpu"], b["peak_rss"])]
    for s in ("candidates", "verify", "assemble"):
        rows.append((s, r["wall"].get(s, 0.0), r["cpu"].get(s, 0.0), r["peak_rss"].get(s, 0)))
    if "graph" in point:
        g = point["graph"]
        rows.append(("graph load", g["wall"], g["cpu"], max(g["peak_rss"], g.get("import_peak_rss") or 0)))
    return rows


def report(point: dict) -> None:
    n = point["n"]
    print(f"\n=== N = {n:,}  (load average before: {point['load_before']}, after: {point['load_after']})")
    print(f"{'stage':12s} {'wall s':>9s} {'cpu s':>9s} {'peak RSS GiB':>13s}")
    for name, wall, cpu, rss in table(point):
        print(f"{name:12s} {wall:9.1f} {cpu:9.1f} {rss / 2**30:13.2f}")
    r, s = point["recover"], point["eval"]["scores"]
    h = r["recall"]

    def share(key: str) -> str:
        a, t = h[key]
        return f"{a / t:.4f} ({a}/{t})" if t else "n/a"

    print(f"families {r['families']:,}, largest {r['largest_family']:,}; models per index {r['models_by_index']}; "
          f"candidate pairs {r['pairs']:,}, related {r['related']:,}, merge fits {r['merge_fits']:,}")
    print(f"candidate recall of the true parent: all families {share('all')}; compressed-index families "
          f"{share('compressed')} vs exact search on the same {share('compressed_exact')}; "
          f"tuned recall@k (min over compressed families) {r['tuned_recall_min']:.4f}")
    print(f"edges: P {s['precision']:.4f} R {s['recall']:.4f} F1 {s['f1']:.4f} direction {s['direction_accuracy']} "
          f"relation {s['relation_accuracy']} merges complete {s['merges_complete']} ARI {s['ari']}")
    if "graph" in point:
        g = point["graph"]
        print(f"graph load: {g['method']} ({g['reason']}), {g['models_in_graph']:,} models and "
              f"{g['edges_in_graph']:,} edges in Neo4j; stages {g['stages']}")


def plot(results: list[dict], path: Path) -> None:
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_n: dict[int, dict] = {}
    for p in results:
        by_n[p["n"]] = p  # the latest run of each N
    ns = sorted(by_n)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for stage in STAGES:
        pts = [(n, dict((r[0], r[1]) for r in table(by_n[n])).get(stage)) for n in ns]
        pts = [(n, t) for n, t in pts if t]
        if pts:
            ax.plot([x for x, _ in pts], [t for _, t in pts], marker="o", label=f"{stage} (wall)")
    totals = [sum(r[1] for r in table(by_n[n]) if r[0] != "graph load") for n in ns]
    ax.plot(ns, totals, marker="s", color="black", label="build + recovery (wall)")
    if ns:
        c = totals[0] / (ns[0] * math.log(ns[0]))
        ref = [c * n * math.log(n) for n in ns]
        ax.plot(ns, ref, linestyle="--", color="grey", label="N log N (through the first total)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("simulated models N")
    ax.set_ylabel("seconds")
    ax.set_title("lineage-index at hub scale (2 shared cores)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, action="append", default=[])
    ap.add_argument("--work", type=Path, default=Path("/tmp/lineage-index-scale"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample", type=int, default=2000, help="true edges per compressed family checked vs exact")
    ap.add_argument("--graph", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--plot-only", action="store_true")
    ap.add_argument("--crossover", type=Path, help="a built hub: time flat vs IVF-SQ8 on its largest family")
    ap.add_argument("--search-only", type=Path, help="a built hub: time the candidate search alone")
    ap.add_argument("--stage")
    ap.add_argument("--n", type=int)
    args = ap.parse_args()
    if args.stage:  # a child process
        work = args.work
        res = {"build": lambda: stage_build(work, args.n, args.seed),
               "recover": lambda: stage_recover(work, args.k, args.sample),
               "eval": lambda: stage_eval(work), "graph": lambda: stage_graph(work)}[args.stage]()
        print("RESULT " + json.dumps(res))
        return
    if args.search_only:
        search_only(args.search_only, args.k)
        return
    if args.crossover:
        crossover(args.crossover, [5_000, 10_000, 20_000, 40_000])
        return
    out_json = args.out / "bench_scale.json"
    results = json.loads(out_json.read_text()) if out_json.exists() else []
    for n in ([] if args.plot_only else args.models):
        point = run_point(n, args.work / f"n{n}", args.k, args.graph, args.seed, args.sample)
        report(point)
        results.append(point)
        args.out.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(results, indent=1))
    if results:
        plot(results, args.out / "bench_scale.png")
        print(f"\nplot: {args.out / 'bench_scale.png'}")


if __name__ == "__main__":
    main()
