"""Calibration of the simulated hub against sketches of really trained zoo models.

What is measured. For every true edge of a zoo (``truth.json``) whose two ends are full-model
sketches of one family, the aligned sampled matrices of parent ``x`` and child ``y`` give, per
matrix: the relative update ``|y - x| / |x|``, the norm growth ``(|y|^2 - |x|^2) / |y - x|^2``
(what ``verify`` uses for direction), the centred cosine (what ``verify`` uses for relatedness),
whether the matrix is bit-identical, and the share of exact zeros. Siblings (two fine-tunes of
one parent) give the cosine between their updates; grandchildren give the cosine between their
update and their parent's. Models of one family with different weight roots give the null
(independently initialised) cosine. Roots give the excess kurtosis of their matrices. Each
observation is labelled with the zoo's ``method`` (finetune, partial, lora-merge, merge,
prune, quant-int8, quant-fp16, copy, distill).

How it is fitted (``fit``): fine-tune update sizes are log-normal, per model (mean and sd of
the log of the per-model median) with a per-matrix spread (sd of the log around that median);
norm growth per matrix is normal (median and 1.4826 MAD); partial fine-tunes and merged LoRAs
keep their measured share of bit-identical matrices; update correlations (sibling, chain) are
their medians; shares of each fine-tune variant, of copy kinds and of dtypes are counts. Merge
coefficients and prune sparsities come from the zoo's recorded parameters. Quantisation
(bitsandbytes int8 absmax per row, an F16 round trip), rounded copies and magnitude pruning are
reproduced by doing the operation itself on the simulated samples; their measured relative
errors and zero shares are kept in the data to check the simulation against (``check``).

``fit`` writes ``lineage_index/sim/data/calibration.json``; ``lineage-index sim calibrate``
reruns it. This module reads sketches and truth files only; it never trains or reads weights.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lineage_index.records import Sketch

CALIBRATION_PATH = Path(__file__).parent / "data" / "calibration.json"
FINETUNE_METHODS = ("finetune", "partial", "lora-merge")


@dataclass
class Observations:
    """Per-relation measurements on aligned sketch matrices (lists of floats)."""

    per_method: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    counts: Counter = field(default_factory=Counter)
    merge_alpha: list[float] = field(default_factory=list)
    prune_sparsity: list[float] = field(default_factory=list)
    root_dtypes: Counter = field(default_factory=Counter)
    child_dtypes: Counter = field(default_factory=Counter)
    zoos: list[str] = field(default_factory=list)

    def add(self, method: str, key: str, value: float) -> None:
        if np.isfinite(value):
            self.per_method[method][key].append(float(value))


def _mats(s: Sketch) -> dict[str, np.ndarray]:
    return {k: v.values.astype(np.float64) for k, v in s.samples.items() if len(v.shape) >= 2}


def _centred_cos(x: np.ndarray, y: np.ndarray) -> float:
    xc, yc = x - x.mean(), y - y.mean()
    d = float(np.sqrt(np.sum(xc * xc) * np.sum(yc * yc)))
    return float(np.sum(xc * yc) / d) if d > 0 else 0.0


def _kurt(x: np.ndarray) -> float:
    x = x.reshape(-1) - x.mean()
    v = float(np.mean(x * x))
    return float(np.mean(x**4) / v**2 - 3.0) if v > 0 else 0.0


def _common(a: Sketch, b: Sketch) -> list[str]:
    ma, mb = a.samples, b.samples
    return sorted(k for k in ma if k in mb and len(ma[k].shape) >= 2
                  and ma[k].values.shape == mb[k].values.shape)


def observe_pair(obs: Observations, method: str, parent: Sketch, child: Sketch) -> None:
    """Per-matrix measurements of one true (parent -> child) edge."""
    px, cy = _mats(parent), _mats(child)
    rels, growth, cos = [], [], []
    identical = 0
    keys = _common(parent, child)
    for k in keys:
        x, y = px[k], cy[k]
        if np.array_equal(x, y):
            identical += 1
            continue
        d2 = float(np.sum((y - x) ** 2))
        rels.append(np.sqrt(d2 / max(float(np.sum(x * x)), 1e-30)))
        growth.append((float(np.sum(y * y)) - float(np.sum(x * x))) / d2)
        keep = (x != 0) & (y != 0)
        cos.append(_centred_cos(x[keep], y[keep]) if keep.sum() >= 0.25 * keep.size else _centred_cos(x, y))
        obs.add(method, "matrix_zero_share", float(np.mean(y == 0)))
        kept = y != 0
        if np.mean(y == 0) > 0.05 and kept.any():  # a pruned matrix: how much the kept weights moved
            xk, yk = x[kept], y[kept]
            obs.add(method, "kept_log_rel", float(np.log(max(np.linalg.norm(yk - xk) / np.linalg.norm(xk), 1e-12))))
        obs.add(method, "matrix_log_rel", float(np.log(max(rels[-1], 1e-12))))
        obs.add(method, "matrix_growth", growth[-1])
    if not keys:
        return
    obs.counts[method] += 1
    obs.add(method, "identical_share", identical / len(keys))
    if rels:
        med = float(np.median(rels))
        obs.add(method, "model_log_rel", float(np.log(max(med, 1e-12))))
        for r in rels:
            obs.add(method, "matrix_log_rel_dev", float(np.log(max(r, 1e-12)) - np.log(max(med, 1e-12))))
        obs.add(method, "cos_median", float(np.median(cos)))
        obs.add(method, "growth_median", float(np.median(growth)))
    obs.child_dtypes[(parent.dtypes[0] if parent.dtypes else "?") + ">" + (child.dtypes[0] if child.dtypes else "?")] += 1


def _delta_cos(a: Sketch, b: Sketch, base: Sketch) -> list[float]:
    """Per changed matrix: cosine between (a - base) and (b - base)."""
    ma, mb, m0 = _mats(a), _mats(b), _mats(base)
    out = []
    for k in _common(a, b):
        if k not in m0 or m0[k].shape != ma[k].shape:
            continue
        da, db = ma[k] - m0[k], mb[k] - m0[k]
        na, nb = float(np.linalg.norm(da)), float(np.linalg.norm(db))
        if na > 0 and nb > 0:
            out.append(float(np.sum(da * db) / (na * nb)))
    return out


def observe_zoo(truth: dict[str, Any], sketches: dict[str, Sketch], obs: Observations | None = None) -> Observations:
    """Measure one zoo: every true edge, sibling and chain pair, null pair and root."""
    obs = obs or Observations()
    models = truth["models"]
    full = {m: s for m, s in sketches.items() if s.kind == "full"}
    parent_of: dict[str, str] = {}
    for e in truth["edges"]:
        c, p = full.get(e["child"]), full.get(e["parent"])
        info = models.get(e["child"], {})
        method = info.get("method", e["relation"])
        if e["relation"] == "merge" and info.get("params", {}).get("alpha") is not None:
            if e["parent"] == info["parents"][0]:
                obs.merge_alpha.append(float(info["params"]["alpha"]))
        if method == "prune" and "sparsity" in info.get("params", {}):
            obs.prune_sparsity.append(float(info["params"]["sparsity"]))
        if c is None or p is None or c.family != p.family:
            obs.counts[method + ":unsketched"] += 1
            continue
        observe_pair(obs, method, p, c)
        if method in FINETUNE_METHODS:
            parent_of[e["child"]] = e["parent"]
    children: dict[str, list[str]] = defaultdict(list)
    for c, p in parent_of.items():
        if models[c].get("method") == "finetune":
            children[p].append(c)
    for p, kids in children.items():
        for i, a in enumerate(kids):
            for b in kids[i + 1:]:
                for v in _delta_cos(full[a], full[b], full[p]):
                    obs.add("finetune", "sibling_delta_cos", v)
    for c, p in parent_of.items():
        g = parent_of.get(p)
        if g is None or models[c].get("method") != "finetune" or models[p].get("method") != "finetune":
            continue
        mc, mp, mg = _mats(full[c]), _mats(full[p]), _mats(full[g])
        for k in _common(full[c], full[p]):
            if k in mg and mg[k].shape == mc[k].shape:
                d1, d2 = mp[k] - mg[k], mc[k] - mp[k]
                n1, n2 = float(np.linalg.norm(d1)), float(np.linalg.norm(d2))
                if n1 > 0 and n2 > 0:
                    obs.add("finetune", "chain_delta_cos", float(np.sum(d1 * d2) / (n1 * n2)))
    by_family: dict[str, list[str]] = defaultdict(list)
    for m, s in full.items():
        by_family[s.family].append(m)
    for members in by_family.values():
        roots = {}
        for m in members:
            roots.setdefault(models.get(m, {}).get("weight_root") or m, m)
        reps = list(roots.values())
        for i, a in enumerate(reps):
            for b in reps[i + 1:]:
                ma, mb = _mats(full[a]), _mats(full[b])
                for k in _common(full[a], full[b]):
                    obs.add("null", "cos_sqrt_n", _centred_cos(ma[k], mb[k]) * np.sqrt(ma[k].size))
    for m, s in full.items():
        info = models.get(m, {})
        if not info.get("parents"):
            obs.root_dtypes[s.dtypes[0] if s.dtypes else "?"] += 1
            for v in _mats(s).values():
                obs.add("root", "kurtosis", _kurt(v))
    return obs


def _robust(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"n": 0, "median": 0.0, "sd": 0.0, "p10": 0.0, "p90": 0.0}
    med = float(np.median(v))
    mad = float(np.median(np.abs(v - med))) * 1.4826
    return {"n": int(v.size), "median": med, "sd": mad, "p10": float(np.percentile(v, 10)),
            "p90": float(np.percentile(v, 90))}


def fit(obs: Observations) -> dict[str, Any]:
    """Generator parameters from the observations (see the module docstring for the rules)."""
    pm = obs.per_method
    ft = pm["finetune"]
    n_ft = {m: obs.counts[m] for m in FINETUNE_METHODS}
    total_ft = max(1, sum(n_ft.values()))
    part, lora = pm["partial"], pm["lora-merge"]
    copies = pm["copy"]
    n_copy = max(1, len(copies["identical_share"]))
    identical_copies = sum(1 for v in copies["identical_share"] if v >= 0.999)
    prune = pm["prune"]
    sparsity = obs.prune_sparsity or [0.3, 0.4, 0.5]
    pruned_matrix = [v for v in prune["matrix_zero_share"]]
    return {
        "about": "Fitted by lineage_index.sim.calibrate from sketches of really trained zoo models; "
                 "see that module's docstring for what is measured and how it is fitted.",
        "zoos": obs.zoos,
        "counts": dict(sorted(obs.counts.items())),
        "finetune": {
            "model_log_rel": _robust(ft["model_log_rel"]),
            "matrix_log_rel_dev": _robust(ft["matrix_log_rel_dev"]),
            "matrix_growth": _robust(ft["matrix_growth"]),
            "sibling_delta_cos": _robust(ft["sibling_delta_cos"]),
            "chain_delta_cos": _robust(ft["chain_delta_cos"]),
            "variant_share": {m: n_ft[m] / total_ft for m in FINETUNE_METHODS},
            "partial_identical_share": _robust(part["identical_share"]),
            "partial_model_log_rel": _robust(part["model_log_rel"]),
            "partial_matrix_growth": _robust(part["matrix_growth"]),
            "lora_identical_share": _robust(lora["identical_share"]),
            "lora_model_log_rel": _robust(lora["model_log_rel"]),
            "lora_matrix_growth": _robust(lora["matrix_growth"]),
            "check_cos_median": _robust(ft["cos_median"]),
            "check_growth_median": _robust(ft["growth_median"]),
        },
        "merge": {
            "alpha": _robust(obs.merge_alpha),
            "alpha_range": [float(min(obs.merge_alpha, default=0.3)), float(max(obs.merge_alpha, default=0.7))],
            "check_cos_median": _robust(pm["merge"]["cos_median"]),
        },
        "prune": {
            "sparsity": sorted(set(sparsity)),
            "pruned_matrix_share": float(np.mean([v > 0.05 for v in pruned_matrix])) if pruned_matrix else 1.0,
            "kept_log_rel": _robust(prune["kept_log_rel"]),
            "check_zero_share": _robust(pruned_matrix),
            "check_cos_median": _robust(prune["cos_median"]),
        },
        "quant_int8": {"check_log_rel": _robust(pm["quant-int8"]["model_log_rel"])},
        "quant_fp16": {"check_log_rel": _robust(pm["quant-fp16"]["model_log_rel"])},
        "copy": {"identical_share": identical_copies / n_copy},
        "null": {"cos_sqrt_n": _robust(pm["null"]["cos_sqrt_n"])},
        "root": {"kurtosis": _robust(pm["root"]["kurtosis"]),
                 "dtypes": {k: v / max(1, sum(obs.root_dtypes.values())) for k, v in sorted(obs.root_dtypes.items())}},
        "child_dtypes": dict(sorted(obs.child_dtypes.items())),
    }


def measure_zoos(zoos: list[Path], store_root: Path | None = None) -> Observations:
    """Sketch each zoo (reusing a sketch store) and measure it."""
    from lineage_index.indexer.pipeline import sketch_all
    from lineage_index.indexer.read.sources import DirSource
    from lineage_index.indexer.sketch.store import SketchStore

    obs = Observations()
    for zoo in zoos:
        zoo = Path(zoo)
        truth = json.loads((zoo / "truth.json").read_text())
        store = SketchStore(Path(store_root) / zoo.name) if store_root is not None else None
        src = DirSource(zoo)
        _, report = sketch_all(src.iter_records(), src.open_reader, store)
        observe_zoo(truth, report.sketches, obs)
        obs.zoos.append(f"{zoo.name} ({truth.get('zoo', {}).get('size', '?')}, seed "
                        f"{truth.get('zoo', {}).get('seed', '?')}, {len(truth['models'])} models)")
    return obs


def load_calibration(path: Path | None = None) -> dict[str, Any]:
    return json.loads(Path(path or CALIBRATION_PATH).read_text())


def write_calibration(params: dict[str, Any], path: Path | None = None) -> Path:
    path = Path(path or CALIBRATION_PATH)
    path.write_text(json.dumps(params, indent=1, sort_keys=False) + "\n")
    return path


# simulated operations under the zoo's method names (the zoo's merges are linear)
SIM_TO_ZOO = {"int8": "quant-int8", "fp16": "quant-fp16", "copy-same": "copy", "copy-round": "copy",
              "linear": "merge", "lora": "lora-merge"}
CHECK_KEYS = ("model_log_rel", "growth_median", "cos_median", "identical_share", "matrix_zero_share")


def observe_sim(out: Path, per_method: int = 300, seed: int = 0) -> Observations:
    """The same measurements on a simulated hub's sketches (a sample of edges per method)."""
    from lineage_index.indexer.sketch.store import SketchStore

    truth = json.loads((Path(out) / "truth.json").read_text())
    store = SketchStore(Path(out) / "store")
    rng = np.random.default_rng(seed)
    by_method: dict[str, list[dict[str, str]]] = defaultdict(list)
    for e in truth["edges"]:
        by_method[truth["models"][e["child"]]["method"]].append(e)
    models = {m: {**info, "method": SIM_TO_ZOO.get(info["method"], info["method"])}
              for m, info in truth["models"].items()}
    picked: list[dict[str, str]] = []
    for edges in by_method.values():
        idx = rng.choice(len(edges), size=min(per_method, len(edges)), replace=False)
        picked.extend(edges[i] for i in idx)
    need = {m for e in picked for m in (e["child"], e["parent"])}
    sketches = {m: sk for m in need if (sk := store.latest(m)) is not None}
    sub = {"models": {m: models[m] for m in need}, "edges": picked}
    obs = observe_zoo(sub, sketches)
    obs.zoos.append(str(out))
    return obs


def compare_table(zoo: Observations, sim: Observations) -> list[dict[str, Any]]:
    """Median (10th-90th percentile) of each verifier-facing measurement, zoo next to simulation."""
    rows = []
    for method in sorted(set(zoo.per_method) & set(sim.per_method)):
        for key in CHECK_KEYS:
            a, b = zoo.per_method[method].get(key, []), sim.per_method[method].get(key, [])
            if not a or not b:
                continue
            ra, rb = _robust(a), _robust(b)
            rows.append({"method": method, "measure": key, "zoo_n": ra["n"],
                         "zoo": f"{ra['median']:.4g} ({ra['p10']:.3g}..{ra['p90']:.3g})", "sim_n": rb["n"],
                         "sim": f"{rb['median']:.4g} ({rb['p10']:.3g}..{rb['p90']:.3g})"})
    return rows
