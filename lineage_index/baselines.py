"""Baselines scored next to lineage-index by ``eval``: MoTHer and declared-only.

MoTHer (Horwitz et al., ICLR 2025), re-implemented from the paper's equations in
METHODS.md, never from its code: distance D(i,j) = mean over square 2-D attention matrices of
RMS(W_i - W_j) (over every sampled tensor for models without square matrices, e.g. CNNs); direction from K(m) = sum of excess kurtosis (the parent has the higher
kurtosis); edge cost i->j = D(i,j) + lambda * mean(D) * [K(j) > K(i)], lambda = 0.3; a minimum
spanning arborescence per tree; trees split by Ward clustering with the number of trees given
(MoTHer's own assumption, which favours it). It runs on the same sketches as lineage-index,
so it sees exactly the same sampled weights. Every MoTHer edge is typed "finetune".
"""

from __future__ import annotations

import networkx as nx
import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from lineage_index.indexer.recover.candidates import group_by_family
from lineage_index.indexer.recover.verify import excess_kurtosis
from lineage_index.records import Edge, Sketch

MOTHER_LAMBDA = 0.3


def _attention_keys(s: Sketch) -> list[str]:
    keys = [k for k, v in s.samples.items() if len(v.shape) == 2 and v.shape[0] == v.shape[1]]
    attn = [k for k in keys if "attn" in k or "attention" in k]
    # a model with no square matrix (a CNN): every sampled tensor, so the baseline still runs
    return attn or keys or sorted(s.samples)


def mother_distance(a: Sketch, b: Sketch) -> float:
    keys = [k for k in _attention_keys(a) if k in b.samples and b.samples[k].values.shape == a.samples[k].values.shape]
    if not keys:
        return float("inf")
    return float(np.mean([np.sqrt(np.mean((a.samples[k].values - b.samples[k].values) ** 2)) for k in keys]))


def mother_kurtosis(s: Sketch) -> float:
    return float(sum(excess_kurtosis(s.samples[k].values) for k in _attention_keys(s)))


def _tree(ids: list[str], d: np.ndarray, kurt: dict[str, float]) -> list[Edge]:
    if len(ids) < 2:
        return []
    g = nx.DiGraph()
    mean_d = float(np.mean(d[np.triu_indices(len(ids), 1)]))
    for i, a in enumerate(ids):
        for j, b in enumerate(ids):
            if i != j:
                g.add_edge(a, b, weight=d[i, j] + MOTHER_LAMBDA * mean_d * float(kurt[b] > kurt[a]))
    tree = nx.minimum_spanning_arborescence(g, attr="weight")
    return [Edge(c, p, "finetune", "recovered", 0.5) for p, c in tree.edges()]


def mother_edges(sketches: dict[str, Sketch], n_trees: dict[str, int] | None = None) -> list[Edge]:
    """MoTHer's edges over all full-model sketches; ``n_trees`` per family (default 1)."""
    edges: list[Edge] = []
    for family, members in group_by_family(s for s in sketches.values() if s.kind == "full").items():
        ids = sorted(s.model_id for s in members)
        by_id = {s.model_id: s for s in members}
        n = len(ids)
        d = np.zeros((n, n))
        for i in range(n):
            for j in range(i + 1, n):
                d[i, j] = d[j, i] = mother_distance(by_id[ids[i]], by_id[ids[j]])
        kurt = {m: mother_kurtosis(by_id[m]) for m in ids}
        k = max(1, min(n, (n_trees or {}).get(family, 1)))
        labels = np.ones(n, dtype=int) if k == 1 or n < 2 else fcluster(linkage(squareform(d), "ward"), k, "maxclust")
        for label in sorted(set(labels)):
            idx = [i for i in range(n) if labels[i] == label]
            edges.extend(_tree([ids[i] for i in idx], d[np.ix_(idx, idx)], kurt))
    return edges
