"""Lineage across a change of depth: layer pruning, passthrough merges, depth up-scaling.

A family is one architecture *and depth*, so a model with layers dropped (pruning), stacked
from slices of other models (a mergekit passthrough "frankenmerge") or repeated (depth
up-scaling) lands in a family of its own, where per-family verification never meets its
source. Each sketch carries a *print* of every layer: the same rows of one matrix role in every
layer (``sketch.sample.plan_prints``), so layer i of one model compares with layer j of another.
Layers of independent models print at cos ~ N(0, 1/d); a copied layer at cos 1, a fine-tuned
one close to it.

Run after per-family assembly, over the roots of the family trees only (a model with a parent
in its own family has its origin there), against every model of the other families with the
same block design (``block_signature``: the family description without its depth):

- each of the root's layers is matched to the layers printing closest to it (``PRINT_Z`` and
  ``MIN_COS``); the models that explain the most layers are taken greedily (a set cover), so a
  model is not called a merge of a layer's several copies;
- two or more sources, each explaining ``MIN_PARENT_SHARE`` of the layers: a passthrough **merge**;
- one source, fewer layers, an injective order-preserving map and one process for every layer
  (all copied, or none: a pruned model "healed" by fine-tuning): **prune**;
- one source, more layers, some of its layers used twice: depth up-scaling, a **merge** with one
  parent;
- anything else (for instance the source of a frankenmerge looking "pruned" from it: its layers
  match at two levels, some copied and some only related) makes no claim. Claims that would
  close a cycle between families are dropped weakest first, and trusted upload times (the
  collection's time share, ``assemble.TIME_TRUST_MIN``) veto a parent uploaded after its child.

Not run at hub scale (``recover.batch``), nor by ``check``: see the README's limits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import networkx as nx
import numpy as np

from lineage_index.indexer.recover.assemble import TIME_MIN_S, TIME_TRUST_MIN, upload_time
from lineage_index.records import Edge, ModelRecord, Sketch

PRINT_Z = 8.0  # a layer match needs cos * sqrt(d) above this (independent layers: about N(0, 1))
MIN_COS = 0.5  # ... and a cosine a fine-tune keeps
MIN_SHARE = 0.5  # share of the root's layers its cross-depth source(s) must explain
MIN_PARENT_SHARE = 0.15  # share of the root's layers each further source of a merge must explain
EXACT = 1e-9  # 1 - cos below this: a copied layer (identical values; float64 rounding only)
LEVEL_SPREAD = 3.0  # matches whose changes (1 - cos) lie within this factor explain a layer equally well


def _as_good(c: float, best: float) -> bool:
    """A match as good as the best one: its change (1 - cos) within a factor of the best's."""
    return 1.0 - c <= LEVEL_SPREAD * (1.0 - best) + EXACT

_DEPTH = re.compile(r"^L\d+;")


def block_signature(family_desc: str) -> str:
    """The family description without the layer count: one block design at any depth."""
    return _DEPTH.sub("", family_desc)


@dataclass(frozen=True)
class DepthClaim:
    child: str
    parents: tuple[str, ...]
    relation: str  # "prune" | "merge"
    layers: dict[str, list[tuple[int, int, float]]]  # parent -> (child layer, parent layer, cos)
    strength: float  # mean cosine of the matched layers
    share: float  # share of the child's layers its parents explain

    def evidence(self) -> str:
        parts = []
        for p in self.parents:
            pairs = self.layers[p]
            parts.append(f"{p} layers {','.join(str(j) for _, j, _ in pairs)} -> "
                         f"{','.join(str(i) for i, _, _ in pairs)}")
        return f"cross-depth {self.relation}: " + "; ".join(parts) + f" (mean cos {self.strength:.3f})"


def _unit_prints(s: Sketch) -> tuple[list[int], np.ndarray]:
    """Unit-length prints of a model's layers; a constant print (a zero or frozen matrix, the same
    in every model of the design) says nothing about lineage and is left out."""
    usable = {i: v for i, v in s.layer_prints.items() if v.size > 1 and float(np.std(v)) > 1e-12}
    sizes = [v.size for v in usable.values()]
    common = max(set(sizes), key=lambda n: (sizes.count(n), n)) if sizes else 0
    # layers of another width (a design whose blocks vary in size) print at another length: only
    # the commonest length is compared
    layers = sorted(i for i, v in usable.items() if v.size == common)
    if not layers:
        return [], np.zeros((0, 0), np.float32)
    m = np.stack([s.layer_prints[i].astype(np.float64) for i in layers])
    m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    return layers, m


def _claim(root: Sketch, others: list[Sketch], prints: dict[str, tuple[list[int], np.ndarray]],
           copies: set[str]) -> DepthClaim | None:
    r_layers, q = prints[root.model_id]
    if len(r_layers) < 2:
        return None
    d = q.shape[1]
    # per child layer: every (model, layer, cos) passing the thresholds
    options: list[dict[str, tuple[int, float]]] = [dict() for _ in r_layers]
    best = np.full(len(r_layers), -1.0)
    for o in others:
        o_layers, x = prints[o.model_id]
        if x.shape[1:] != q.shape[1:]:
            continue
        sim = q @ x.T  # (child layers, other's layers)
        j = sim.argmax(axis=1)
        c = sim[np.arange(len(r_layers)), j]
        for i in range(len(r_layers)):
            if c[i] >= MIN_COS and c[i] * math.sqrt(d) >= PRINT_Z:
                options[i][o.model_id] = (o_layers[int(j[i])], float(c[i]))
                best[i] = max(best[i], c[i])
    # greedy set cover: the model explaining most of the still unexplained layers first
    cover: dict[str, set[int]] = {}
    for i, opts in enumerate(options):
        for m, (_, c) in opts.items():
            if _as_good(c, best[i]):
                cover.setdefault(m, set()).add(i)
    explained: set[int] = set()
    parents: list[str] = []
    min_layers = max(1, math.ceil(MIN_PARENT_SHARE * len(r_layers)))
    while True:
        gain = {m: len(v - explained) for m, v in cover.items() if m not in parents}
        if not gain:
            break
        # ties: an original before its re-uploads and quantised copies, then the closer, then by id
        m = min(gain, key=lambda k: (-gain[k], k in copies, -sum(options[i][k][1] for i in cover[k]), k))
        if gain[m] < (min_layers if parents else 1):
            break
        parents.append(m)
        explained |= cover[m]
    if len(explained) < max(2, math.ceil(MIN_SHARE * len(r_layers))):
        return None
    layers = {p: sorted((r_layers[i], *options[i][p]) for i in cover[p]) for p in parents}
    strength = float(np.mean([c for p in parents for _, _, c in layers[p]]))
    share = len(explained) / len(r_layers)
    if len(parents) >= 2:
        return DepthClaim(root.model_id, tuple(parents), "merge", layers, strength, share)
    (p,) = parents
    pairs = layers[p]
    change = np.array([1.0 - c for _, _, c in pairs])
    copied = change <= EXACT
    if copied.any() and not copied.all():
        return None  # some layers copied, some only related: not one derivation of the whole
    px = prints[p][1]
    targets = [j for _, j, _ in pairs]
    source = next(o for o in others if o.model_id == p)
    if len(root.layer_prints) < len(source.layer_prints):  # depth: every layer, printable or not
        # pruned: each kept layer appears once in the source (a repeated one means the source is
        # the up-scaled model), in the same order
        sim = q @ px.T
        row = {layer: k for k, layer in enumerate(r_layers)}
        twice = any(sum(_as_good(float(x), c) for x in sim[row[i]]) > 1 for i, _, c in pairs)
        if twice or targets != sorted(set(targets)):
            return None
        return DepthClaim(root.model_id, (p,), "prune", layers, strength, share)
    if len(set(targets)) < len(targets):  # some source layer used twice: depth up-scaling
        return DepthClaim(root.model_id, (p,), "merge", layers, strength, share)
    return None


def cross_depth_claims(
    sketches: Iterable[Sketch], roots: Iterable[str], records: dict[str, ModelRecord],
    time_share: float | None = None, copies: Iterable[str] = (),
) -> list[DepthClaim]:
    """Claims of cross-depth parents for the family roots in ``roots`` (module docstring);
    ``copies``: models found to be re-uploads or quantised copies in their family (an original
    is preferred to them as a source)."""
    full = [s for s in sketches if s.kind == "full" and s.layer_prints]
    by_block: dict[str, list[Sketch]] = {}
    for s in full:
        by_block.setdefault(block_signature(s.family_desc), []).append(s)
    root_set, copy_set = set(roots), set(copies)
    use_time = time_share is not None and time_share >= TIME_TRUST_MIN
    claims: list[DepthClaim] = []
    for members in by_block.values():
        if len({s.family for s in members}) < 2:
            continue
        prints = {s.model_id: _unit_prints(s) for s in members}
        for r in (s for s in members if s.model_id in root_set):
            others = [s for s in members if s.family != r.family]
            claim = _claim(r, others, prints, copy_set)
            if claim is None:
                continue
            if use_time:
                tc = upload_time(records.get(r.model_id))
                late = [p for p in claim.parents if tc is not None and (tp := upload_time(records.get(p))) is not None
                        and (tp - tc).total_seconds() >= TIME_MIN_S]
                if late:
                    continue
            claims.append(claim)
    # no cycle between families: strongest claims first
    family_of = {s.model_id: s.family for s in full}
    g = nx.DiGraph()
    kept: list[DepthClaim] = []
    for c in sorted(claims, key=lambda c: (-c.strength, -sum(len(v) for v in c.layers.values()), c.child)):
        arcs = [(family_of[p], family_of[c.child]) for p in c.parents]
        g.add_edges_from(arcs)
        if nx.is_directed_acyclic_graph(g):
            kept.append(c)
        else:
            g.remove_edges_from(arcs)
    return sorted(kept, key=lambda c: c.child)


def cross_depth_edges(
    sketches: Iterable[Sketch], roots: Iterable[str], records: dict[str, ModelRecord],
    time_share: float | None = None, copies: Iterable[str] = (),
) -> list[Edge]:
    """Directed typed edges of the cross-depth claims (``cross_depth_claims``)."""
    edges: list[Edge] = []
    for c in cross_depth_claims(sketches, roots, records, time_share, copies):
        conf = 0.9 if c.share >= 0.9 else 0.75
        for p in c.parents:
            closeness = round(float(np.mean([x for _, _, x in c.layers[p]])), 4)
            edges.append(Edge(c.child, p, c.relation, "recovered", conf, closeness, evidence=c.evidence()))
    return edges
