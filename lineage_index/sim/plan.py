"""Population of the simulated hub: architectures, trees, relations, metadata (no weights yet).

``plan_hub(n, seed)`` decides, for ``n`` models, which architecture and tree each belongs to,
its parent(s) and how it was derived (the operation ``op``), its dtype, upload time, true and
declared licence, and declared base models, following ``data/hub.json`` (cited shares and
stated assumptions). Everything is arrays indexed by model number, in an order where parents
come before children. ``sim.values`` turns the plan into sketch samples; this module draws
no weight values and writes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HUB_PATH = Path(__file__).parent / "data" / "hub.json"

# operations (how a model was made from its parents); the truth relation of each
OPS = ("root", "finetune", "partial", "lora", "linear", "slerp", "task-arithmetic", "ties", "dare",
       "prune", "int8", "fp16", "copy-same", "copy-round", "distill", "adapter")
OP = {name: i for i, name in enumerate(OPS)}
RELATION_OF_OP = {
    "root": None, "finetune": "finetune", "partial": "finetune", "lora": "finetune",
    "linear": "merge", "slerp": "merge", "task-arithmetic": "merge", "ties": "merge", "dare": "merge",
    "prune": "prune", "int8": "quantized", "fp16": "quantized", "copy-same": "copy", "copy-round": "copy",
    "distill": "distill", "adapter": "adapter",
}
MERGE_OPS = ("linear", "slerp", "task-arithmetic", "ties", "dare")
BASED_MERGES = ("task-arithmetic", "ties", "dare")  # merges of deltas over a shared base
LEAF_OPS = ("prune", "int8", "fp16", "copy-same", "copy-round", "adapter")
DTYPES = ("F32", "BF16", "F16", "I8")
DTYPE = {d: i for i, d in enumerate(DTYPES)}
NO_PARENT = -1
LOCAL_PATH = -2  # a declared base that is a local path (adapters), not a Hub id


@dataclass
class HubPlan:
    """The simulated population, indexed by model number (parents before children)."""

    n: int
    seed: int
    arch: np.ndarray  # int32, architecture index
    tree: np.ndarray  # int32, lineage tree index
    parents: list[tuple[int, ...]]  # truth parents (merges: every input; base of a based merge not included)
    merge_base: dict[int, int]  # based merges (task arithmetic, TIES, DARE): the shared base
    op: np.ndarray  # int8 code into OPS
    depth: np.ndarray  # int16
    gen: np.ndarray  # int32 topological generation (roots and distilled students 0)
    weight_root: np.ndarray  # int32, model whose fresh weights this one descends from
    dtype: np.ndarray  # int8 code into DTYPES
    created_at: np.ndarray  # int64 epoch seconds
    license: list[str]
    declared_license: list[str | None]
    declared_base: list[tuple[int, ...]]  # model numbers (LOCAL_PATH for a local path)
    declared_relation: list[str | None]
    mess_base: list[str]  # correct | missing | ancestor | unrelated | partial | local-path | none
    arch_names: list[str]
    ids: list[str]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_arch(self) -> int:
        return len(self.arch_names)

    def relation(self, i: int) -> str | None:
        return RELATION_OF_OP[OPS[int(self.op[i])]]


def load_hub_params(path: Path | None = None) -> dict[str, Any]:
    return json.loads(Path(path or HUB_PATH).read_text())


def _choice(rng: np.random.Generator, table: dict[str, float], size: int) -> np.ndarray:
    keys = list(table)
    p = np.asarray([table[k] for k in keys], dtype=np.float64)
    return np.asarray(keys, dtype=object)[rng.choice(len(keys), size=size, p=p / p.sum())]


def tree_sizes(n: int, rng: np.random.Generator, exponent: float, largest_share: float) -> list[int]:
    """Discrete power-law tree sizes summing to ``n`` (P(S >= s) ~ s^-(exponent - 1))."""
    cap = max(1, int(largest_share * n))
    sizes: list[int] = []
    total = 0
    while total < n:
        u = rng.random(4096)
        draw = np.floor(u ** (-1.0 / (exponent - 1.0))).astype(np.int64)
        for s in draw[(draw >= 1) & (draw <= cap)]:
            s = int(min(s, n - total))
            sizes.append(s)
            total += s
            if total >= n:
                break
    return sizes


def _assign_arches(n_trees: int, rng: np.random.Generator, theta: float) -> np.ndarray:
    """Chinese restaurant process over trees (random order): architecture per tree."""
    arch = np.empty(n_trees, dtype=np.int32)
    counts: list[int] = []
    owners: list[int] = []  # one entry per tree seated: picking uniformly is proportional to counts
    u = rng.random(n_trees)
    pick = rng.random(n_trees)
    for t in range(n_trees):
        if u[t] < theta / (theta + t):
            a = len(counts)
            counts.append(0)
        else:
            a = owners[int(pick[t] * len(owners))]
        counts[a] += 1
        owners.append(a)
        arch[t] = a
    return arch


class _TreeBuilder:
    """Grows one lineage tree node by node (preferential attachment, leaves stay leaves)."""

    def __init__(self, rng: np.random.Generator, hub: dict[str, Any], variants: dict[str, float]) -> None:
        self.rng = rng
        self.hub = hub
        total = sum(variants.values()) or 1.0
        self.partial_cut = variants.get("partial", 0.0) / total
        self.lora_cut = self.partial_cut + variants.get("lora-merge", 0.0) / total
        rel = hub["relation_mix"]
        self.rel_keys = list(rel)
        p = np.asarray([rel[k] for k in self.rel_keys], dtype=np.float64)
        self.rel_p = p / p.sum()
        self.quant_kinds = hub["quant_kinds"]
        self.merge_methods = hub["merge_methods"]
        self.merge_inputs = dict(hub["merge_inputs"])
        self.leaf_keep = 1.0 - float(hub["quantized_leaf_share"])
        self.attach = float(hub["attachment"])

    def grow(self, size: int, rel: np.ndarray, unif: np.ndarray) -> tuple[list[str], list[tuple[int, ...]], dict[int, int]]:
        """(op per node, parents per node, merge bases) for one tree; node 0 is the root.

        ``rel`` (relation index per node) and ``unif`` (uniforms, 6 per node) are drawn by the
        caller for the whole population at once.
        """
        ops = ["root"]
        parents: list[tuple[int, ...]] = [()]
        bases: dict[int, int] = {}
        eligible = [0]  # nodes that can have children
        self.is_eligible = [True]
        self.parent_of: dict[int, int] = {}
        bag = [0]  # one entry per eligible node + one per child it has: preferential attachment
        children: dict[int, list[int]] = {0: []}
        uniform_share = 1.0 / (1.0 + self.attach)
        for i in range(1, size):
            kind = self.rel_keys[rel[i]]
            u = unif[i]
            if u[0] < uniform_share:
                p = eligible[int(u[1] * len(eligible))]
            else:
                p = bag[int(u[1] * len(bag))]
            op, pars = self._derive(kind, p, eligible, children, bases, i, u)
            ops.append(op)
            parents.append(pars)
            self.parent_of[i] = pars[0]
            children[i] = []
            for q in pars:
                children[q].append(i)
                bag.append(q)
            # quantised models (and copies, prunes) are leaves but for a cited few; adapters always
            self.is_eligible.append(op not in LEAF_OPS or (op != "adapter" and u[2] < self.leaf_keep))
            if self.is_eligible[i]:
                eligible.append(i)
                bag.append(i)
        return ops, parents, bases

    def _derive(self, kind: str, p: int, eligible: list[int], children: dict[int, list[int]],
                bases: dict[int, int], i: int, u: np.ndarray) -> tuple[str, tuple[int, ...]]:
        if kind == "finetune":
            return ("partial" if u[3] < self.partial_cut else "lora" if u[3] < self.lora_cut else "finetune"), (p,)
        if kind == "quantized":
            return _pick(self.quant_kinds, u[3]), (p,)
        if kind == "copy":
            return "copy-same", (p,)  # rounded copies are decided with the dtypes
        if kind in ("prune", "distill", "adapter"):
            return kind, (p,)
        if kind == "merge" and len(eligible) >= 2:
            rng = self.rng
            method = _pick(self.merge_methods, u[3])
            k = int(_pick(self.merge_inputs, u[4]))
            if method in BASED_MERGES:
                kids = [c for c in children.get(p, []) if self.is_eligible[c]]
                if len(kids) >= 2:
                    pick = rng.choice(len(kids), size=min(k, len(kids)), replace=False)
                    bases[i] = p
                    return method, tuple(sorted(kids[j] for j in pick))
                method = "linear"
            # merges combine close relatives: a model with its children, its parent or its siblings
            up = self.parent_of.get(p)
            near = [q for q in children.get(p, []) if self.is_eligible[q]]
            if up is not None:
                near += [up] + [q for q in children.get(up, []) if q != p and self.is_eligible[q]]
            if len(near) >= k - 1:
                pick = rng.choice(len(near), size=k - 1, replace=False)
                return method, tuple(sorted({p, *(near[j] for j in pick)}))
        return "finetune", (p,)


def _pick(table: dict[str, float], u: float) -> str:
    """The key of ``table`` (weights) that the uniform ``u`` falls on."""
    total = sum(table.values())
    acc = 0.0
    for k, w in table.items():
        acc += w / total
        if u < acc:
            return k
    return k


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_SYL = ("ka", "lo", "mi", "ra", "ne", "to", "su", "vi", "da", "pe", "zo", "qu", "xi", "be", "fu", "ha",
        "jo", "ye", "wa", "ci", "gu", "mo", "ti", "re")
_SUFFIX = {"finetune": "sft", "partial": "ft-top", "lora": "lora-merged", "linear": "linear-merge",
           "slerp": "slerp", "task-arithmetic": "ta-merge", "ties": "ties", "dare": "dare", "prune": "pruned",
           "int8": "bnb-8bit", "fp16": "fp16", "copy-same": "mirror", "copy-round": "bf16", "distill": "distilled",
           "adapter": "LoRA", "root": "base"}


def _word(i: int, parts: int = 3) -> str:
    out = []
    for _ in range(parts):
        out.append(_SYL[i % len(_SYL)])
        i //= len(_SYL)
    return "".join(out)


def plan_hub(n: int, seed: int = 0, hub: dict[str, Any] | None = None,
             calibration: dict[str, Any] | None = None) -> HubPlan:
    """The simulated population of ``n`` models (deterministic in ``seed``)."""
    from lineage_index.sim.calibrate import load_calibration

    hub = hub or load_hub_params()
    calibration = calibration or load_calibration()
    rng = np.random.default_rng([seed, 0x5117])
    sizes = tree_sizes(n, rng, float(hub["tree_size_exponent"]), float(hub["largest_tree_share"]))
    tree_arch = _assign_arches(len(sizes), rng, float(hub["arch_theta"]))
    builder = _TreeBuilder(rng, hub, calibration["finetune"]["variant_share"])
    rel_all = rng.choice(len(builder.rel_keys), size=n, p=builder.rel_p)
    unif_all = rng.random((n, 6))
    ops: list[str] = []
    parents: list[tuple[int, ...]] = []
    merge_base: dict[int, int] = {}
    tree = np.empty(n, dtype=np.int32)
    arch = np.empty(n, dtype=np.int32)
    start = 0
    for t, size in enumerate(sizes):
        t_ops, t_par, t_bases = builder.grow(size, rel_all[start:start + size], unif_all[start:start + size])
        ops.extend(t_ops)
        parents.extend(tuple(start + q for q in pars) for pars in t_par)
        merge_base.update({start + k: start + v for k, v in t_bases.items()})
        tree[start:start + size] = t
        arch[start:start + size] = tree_arch[t]
        start += size
    op = np.asarray([OP[o] for o in ops], dtype=np.int8)
    depth = np.zeros(n, dtype=np.int16)
    gen = np.zeros(n, dtype=np.int32)
    weight_root = np.arange(n, dtype=np.int32)
    for i, pars in enumerate(parents):  # parents come first: one pass
        if pars:
            depth[i] = 1 + max(depth[q] for q in pars)
            base = merge_base.get(i)
            gen[i] = 1 + max(gen[q] for q in (*pars, *((base,) if base is not None else ())))
            if ops[i] != "distill":
                weight_root[i] = weight_root[pars[0]]
        if ops[i] == "distill":
            gen[i] = 0  # a distilled student starts from fresh weights
    dtype = _dtypes(rng, hub, ops, parents, n)
    for i in np.nonzero(op == OP["copy-same"])[0]:  # a copy into a lower precision is a rounded copy
        p = parents[i][0]
        if dtype[i] != dtype[p]:
            ops[i] = "copy-round"
            op[i] = OP["copy-round"]
    for i in np.nonzero(op == OP["fp16"])[0]:  # an F16 round trip is a quantisation of F32 weights only
        if dtype[parents[i][0]] != DTYPE["F32"]:
            ops[i] = "int8"
            op[i] = OP["int8"]
            dtype[i] = DTYPE["I8"]
    created = _times(rng, hub, parents, n)
    lic, dlic = _licences(rng, hub, ops, parents, weight_root, n)
    dbase, drel, mess = _declarations(rng, hub, ops, parents, depth, tree, weight_root, arch, n)
    arch_names = [f"sim-{_word(a, 2)}{a}" for a in range(int(arch.max()) + 1)]
    orgs = max(8, n // 25)
    org_of = rng.integers(0, orgs, size=n)
    ids = [f"{_word(int(org_of[i]) * 7 + 3)}-{'ai' if org_of[i] % 3 else 'lab'}/"
           f"{arch_names[arch[i]][4:]}-{_SUFFIX[ops[i]]}-{i:x}" for i in range(n)]
    return HubPlan(n=n, seed=seed, arch=arch, tree=tree, parents=parents, merge_base=merge_base, op=op,
                   depth=depth, gen=gen, weight_root=weight_root, dtype=dtype, created_at=created, license=lic,
                   declared_license=dlic, declared_base=dbase, declared_relation=drel, mess_base=mess,
                   arch_names=arch_names, ids=ids, params={"hub": hub, "tree_sizes": len(sizes)})


def _dtypes(rng: np.random.Generator, hub: dict[str, Any], ops: list[str], parents: list[tuple[int, ...]],
            n: int) -> np.ndarray:
    roots = _choice(rng, hub["root_dtypes"], n)
    other = _choice(rng, hub["root_dtypes"], n)
    keep = rng.random(n) < float(hub["keep_dtype_share"])
    lower = rng.random(n) < 0.5
    out = np.empty(n, dtype=np.int8)
    for i in range(n):
        o = ops[i]
        if not parents[i] or o == "distill":
            out[i] = DTYPE[roots[i]]
            continue
        pd = int(out[parents[i][0]])
        if o == "int8":
            out[i] = DTYPE["I8"]
        elif o == "fp16":
            out[i] = DTYPE["F32"]  # F16 values in an F32 container
        elif o == "copy-same":  # re-uploads: the same bytes, or cast down from F32
            out[i] = pd if pd != DTYPE["F32"] or not lower[i] else DTYPE["BF16" if keep[i] else "F16"]
        elif o in ("partial", "lora", "prune", "adapter"):
            out[i] = pd if pd != DTYPE["I8"] else DTYPE["BF16"]
        else:
            out[i] = pd if keep[i] and pd != DTYPE["I8"] else DTYPE[other[i]]
    return out


def _times(rng: np.random.Generator, hub: dict[str, Any], parents: list[tuple[int, ...]], n: int) -> np.ndarray:
    lo, hi = (int(datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()) for t in hub["time_window"])
    root_t = rng.integers(lo, lo + (hi - lo) // 2, size=n)
    gap = np.exp(np.log(float(hub["gap_days_median"]) * 86400.0) + float(hub["gap_days_log_sd"]) * rng.standard_normal(n))
    out = np.empty(n, dtype=np.int64)
    for i, pars in enumerate(parents):
        out[i] = root_t[i] if not pars else max(out[q] for q in pars) + int(gap[i]) + 60
    return out


def _licences(rng: np.random.Generator, hub: dict[str, Any], ops: list[str], parents: list[tuple[int, ...]],
              weight_root: np.ndarray, n: int) -> tuple[list[str], list[str | None]]:
    roots = _choice(rng, hub["root_licenses"], n)
    relabel = hub["relabel_to"]
    missing = rng.random(n) < float(hub["license_missing_share"])
    relabel_copy = rng.random(n) < float(hub["copy_relabel_share"])
    pick = rng.integers(0, len(relabel), size=n)
    lic: list[str] = []
    declared: list[str | None] = []
    for i in range(n):
        true = str(roots[i]) if not parents[i] else lic[parents[i][0]]
        lic.append(true)
        if missing[i]:
            declared.append(None)
        elif ops[i].startswith("copy") and relabel_copy[i]:
            declared.append(relabel[int(pick[i])])  # a re-upload relabelled (laundered)
        else:
            declared.append(true)
    return lic, declared


def _declarations(rng: np.random.Generator, hub: dict[str, Any], ops: list[str], parents: list[tuple[int, ...]],
                  depth: np.ndarray, tree: np.ndarray, weight_root: np.ndarray, arch: np.ndarray,
                  n: int) -> tuple[list[tuple[int, ...]], list[str | None], list[str]]:
    u = rng.random((n, 4))
    missing = float(hub["base_model_missing_share"])
    ancestor = float(hub["ancestor_share"])
    unrelated = float(hub["unrelated_share"])
    declared_rel = float(hub["relation_declared_share"])
    local = float(hub["local_path_share"])
    by_arch: dict[int, list[int]] = {}
    for i in range(n):
        if not parents[i]:
            by_arch.setdefault(int(arch[i]), []).append(i)
    bases: list[tuple[int, ...]] = []
    rels: list[str | None] = []
    mess: list[str] = []
    for i in range(n):
        pars = parents[i]
        o = ops[i]
        if not pars:
            bases.append(())
            rels.append(None)
            mess.append("none")
            continue
        if o == "adapter":  # adapter_config.json always names a base
            bases.append((LOCAL_PATH,) if u[i, 0] < local else pars)
            rels.append("adapter")
            mess.append("local-path" if u[i, 0] < local else "correct")
            continue
        if u[i, 0] < missing:
            bases.append(())
            rels.append(None)
            mess.append("missing")
            continue
        roots = by_arch.get(int(arch[i]), [])
        other = roots[int(u[i, 2] * len(roots))] if roots else None
        if depth[i] >= 2 and u[i, 1] < ancestor:
            r = int(weight_root[pars[0]])
            bases.append((r,))
            mess.append("ancestor")
        elif other is not None and tree[other] != tree[i] and u[i, 1] < ancestor + unrelated:
            bases.append((other,))  # a model of another tree of the same architecture
            mess.append("unrelated")
        else:
            bases.append(pars)
            mess.append("correct")
        relation = RELATION_OF_OP[o]
        rels.append(relation if relation in ("finetune", "quantized", "merge", "adapter") and u[i, 3] < declared_rel
                    else None)
    return bases, rels, mess


def iso_time(ts: int) -> str:
    """ISO 8601 UTC of an epoch second (the records' ``created_at``)."""
    return _iso(ts)
