"""Fit the calibration of `lineage-index check` on generated zoos and ship it with the package.

    python bench/fit_check_calibration.py --zoo Z1 --zoo Z2 ... [--out PATH] [--rows ROWS.json]

For every zoo (built with `lineage-index zoo build OUT --size S --seed N`; each has truth.json):
the zoo is sketched into a temporary index, and every model is checked against all the others
(its own sketch left out), with the calibration switched off (check's rules do not depend on
it), twice: with the index's records (upload times, declarations) and from the weights alone. Every candidate check compared is one labelled pair, featurised exactly as check
featurises it (check_features: z-scores against the index's own background of unrelated pairs
of the architecture, direction votes, 0 = no evidence):

    parent    the candidate is the target's parent in truth.json
    related   same weights (one weight tree), not the parent
    unrelated another weight tree of the same architecture

Three L2-penalised logistic models are fitted (numpy/scipy): P(related) on all pairs,
P(parent | related) on the pairs that pass check's z gate, and P(verdict right) on the
verdicts, from their group and the fitted pair probabilities behind them (with one right and
one wrong pseudo-verdict per group: Laplace's rule, so no group is ever certain). Coefficients,
feature names and provenance (zoo sizes and seeds, counts, date, this command) are written
to lineage_index/indexer/check/data/calibration.json. It also prints leave-one-zoo-out Brier
scores, so the fit is judged on zoos it did not see. --rows DIR keeps (or reuses) the rows
collected per zoo, so the fit can be redone without re-checking.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from lineage_index.indexer.check.calibration import (
    PARENT_FEATURES,
    RELATED_FEATURES,
    VERDICT_FEATURES,
    VERDICT_GROUPS,
    Calibration,
    ZooTruth,
    brier,
    expected_calibration_error,
    fit_logistic,
    score_verdict,
    verdict_probability,
)
from lineage_index.indexer.check.run import check
from lineage_index.indexer.pipeline import sketch_all
from lineage_index.indexer.read.sources import DirSource
from lineage_index.indexer.sketch.store import SketchStore

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "lineage_index" / "indexer" / "check" / "data" / "calibration.json"
L2 = 1.0  # ridge strength: keeps coefficients finite where a zoo separates the classes perfectly


def collect(zoo: Path) -> dict:
    """Rows of one zoo: per target its verdict, parents and candidates (features, gate, label)."""
    raw = json.loads((zoo / "truth.json").read_text())
    truth = ZooTruth.from_json(raw)
    neutral = Calibration.neutral()
    targets = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = SketchStore(Path(tmp))
        src = DirSource(zoo)
        records, report = sketch_all(src.iter_records(), src.open_reader, store)
        indexed = set(report.sketches)
        for m in sorted(raw["models"]):
            if m not in indexed:
                continue
            # as a registry runs it (the index's cards: upload times, declarations) and from the
            # weights alone (no records): the fit sees both, so a missing signal stays neutral
            for recs in (records, {}):
                r = check(str(zoo / m), store, model_id=m, records=recs, calibration=neutral, save=False)
                targets.append({
                    "target": m, "metadata": bool(recs), "verdict": r.verdict, "parents": r.parents,
                    "merge_base": (r.merge or {}).get("base"),
                    "right": truth.verdict_right(m, r.verdict, r.parents, indexed - {m}),
                    "candidates": [{"id": c.model_id, "gate": c.passes_gate, "x": c.features,
                                    "label": truth.pair_label(m, c.model_id)} for c in r.candidates],
                })
    print(f"  {zoo}: {len(targets)} targets checked in {time.perf_counter() - t0:.0f} s", flush=True)
    return {"zoo": str(zoo), "size": raw["zoo"].get("size"), "seed": raw["zoo"].get("seed"), "targets": targets}


def collect_cached(zoo: Path, rows: Path | None) -> dict:
    """``collect``, kept in (and reused from) ``rows``/<size>-s<seed>.json when a folder is given."""
    if rows is None:
        return collect(zoo)
    meta = json.loads((zoo / "truth.json").read_text())["zoo"]
    path = rows / f"{meta.get('size')}-s{meta.get('seed')}.json"
    if path.exists():
        print(f"  {zoo}: rows from {path}")
        return json.loads(path.read_text())
    out = collect(zoo)
    rows.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def _matrix(rows: list[dict], names: tuple[str, ...]) -> np.ndarray:
    return np.array([[float(r["x"].get(n, 0.0)) for n in names] for r in rows]).reshape(len(rows), len(names))


def fit(zoos: list[dict]) -> tuple[Calibration, dict]:
    pairs = [c for z in zoos for t in z["targets"] for c in t["candidates"]]
    related = fit_logistic(_matrix(pairs, RELATED_FEATURES), np.array([c["label"] != "unrelated" for c in pairs]),
                           RELATED_FEATURES, L2)
    gated = [c for c in pairs if c["gate"]]
    parent = fit_logistic(_matrix(gated, PARENT_FEATURES), np.array([c["label"] == "parent" for c in gated]),
                          PARENT_FEATURES, L2)
    cal = Calibration(related, parent, Calibration.neutral().verdict)
    vrows = [(verdict_features(cal, t), t["right"]) for z in zoos for t in z["targets"] if t["verdict"] != "insufficient"]
    xv = np.array([[x[n] for n in VERDICT_FEATURES] for x, _ in vrows])
    yv = np.array([y for _, y in vrows], dtype=float)
    # Laplace's rule of succession per verdict group: one right and one wrong pseudo-verdict at
    # the group's mean features, so a group the zoos never got wrong gets (n+1)/(n+2), not 1
    prior = []
    for g in VERDICT_GROUPS:
        sel = xv[:, VERDICT_FEATURES.index(f"group_{g}")] == 1.0
        if sel.any():
            prior += [(xv[sel].mean(axis=0), 1.0), (xv[sel].mean(axis=0), 0.0)]
    xp = np.vstack([xv, np.array([p for p, _ in prior])]) if prior else xv
    yp = np.concatenate([yv, [y for _, y in prior]])
    verdict = fit_logistic(xp, yp, VERDICT_FEATURES, L2)
    counts = {"pairs": len(pairs), "parent": sum(c["label"] == "parent" for c in pairs),
              "related": sum(c["label"] == "related" for c in pairs),
              "unrelated": sum(c["label"] == "unrelated" for c in pairs), "gated_pairs": len(gated),
              "verdicts": len(vrows), "verdicts_right": sum(y for _, y in vrows)}
    return Calibration(related, parent, verdict), counts


def verdict_features(cal: Calibration, t: dict) -> dict[str, float]:
    x = {c["id"]: c["x"] for c in t["candidates"]}
    gate = {c["id"]: c["gate"] for c in t["candidates"]}
    return score_verdict(cal, x, gate, t["verdict"], t["parents"], t["merge_base"])[2]


def evaluate(cal: Calibration, zoos: list[dict]) -> dict[str, float]:
    """Brier / ECE of verdict probabilities and of per-candidate parent probabilities."""
    pv, yv, pc, yc = [], [], [], []
    for z in zoos:
        for t in z["targets"]:
            x = {c["id"]: c["x"] for c in t["candidates"]}
            gate = {c["id"]: c["gate"] for c in t["candidates"]}
            p_rel, p_par, vx = score_verdict(cal, x, gate, t["verdict"], t["parents"], t["merge_base"])
            pv.append(verdict_probability(cal, t["verdict"], vx, list(p_rel.values())))
            yv.append(t["right"])
            for c in t["candidates"]:
                pc.append(p_par[c["id"]])
                yc.append(c["label"] == "parent")
    return {"verdict_brier": brier(pv, yv), "verdict_ece": expected_calibration_error(pv, yv),
            "verdict_mean_p": float(np.mean(pv)), "verdict_right": float(np.mean(yv)),
            "candidate_brier": brier(pc, yc), "candidate_ece": expected_calibration_error(pc, yc), "n": len(pv)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", type=Path, action="append", default=[], help="a generated zoo (repeat)")
    ap.add_argument("--rows", type=Path, help="folder of collected rows per zoo: reused when present, else written")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    if not args.zoo:
        ap.error("name at least one --zoo")
    print("checking every model of each zoo against the others (calibration off)")
    zoos = [collect_cached(z, args.rows) for z in args.zoo]
    cal, counts = fit(zoos)
    print(f"pairs: {counts}")
    for name, model in (("related", cal.related), ("parent", cal.parent), ("verdict", cal.verdict)):
        terms = ", ".join(f"{f} {c:+.2f}" for f, c in zip(model.features, model.coef, strict=True))
        print(f"  {name}: intercept {model.intercept:+.2f}; {terms}")
    train = evaluate(cal, zoos)
    print(f"on the fitted zoos: {_fmt(train)}")
    if len(zoos) > 1:
        for i, z in enumerate(zoos):
            held, _ = fit(zoos[:i] + zoos[i + 1:])
            print(f"leave-one-zoo-out, {z['size']} seed {z['seed']}: {_fmt(evaluate(held, [z]))}")
    provenance = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python bench/fit_check_calibration.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "zoos": [{"size": z["size"], "seed": z["seed"]} for z in zoos],
        "n_pairs": counts["pairs"], "n_verdicts": counts["verdicts"], "counts": counts, "l2": L2,
        "training_scores": {k: round(v, 4) for k, v in train.items()},
        "labels": "parent | related (same weight tree, not parent) | unrelated (same architecture)",
    }
    out = Calibration(cal.related, cal.parent, cal.verdict, provenance)
    args.out.write_text(json.dumps(out.as_dict(), indent=1) + "\n")
    print(f"wrote {args.out}")


def _fmt(s: dict[str, float]) -> str:
    return (f"verdict Brier {s['verdict_brier']:.4f} ECE {s['verdict_ece']:.3f} (mean p {s['verdict_mean_p']:.3f}, "
            f"right {s['verdict_right']:.3f}, n {s['n']}); candidate Brier {s['candidate_brier']:.4f} "
            f"ECE {s['candidate_ece']:.3f}")


if __name__ == "__main__":
    main()
