"""Scores predicted lineage edges against a zoo's truth.json, and the declared-only baseline.

Protocol (decided here, used by every benchmark):

* Edges are DIRECTED (child, parent). Duplicated predictions count once (the first relation
  wins); self-loops are ignored.
* ``distill`` edges are invisible in weights, so they are dropped from the truth, and a
  predicted edge whose unordered pair is a true distill pair is ignored (neither TP nor FP).
* The truth is closed-world (every true parent is in the zoo), so a predicted edge with an
  endpoint outside the truth's models (e.g. a declared base model that is not in the
  collection) is a false positive; ``n_out_of_scope`` counts them. Such edges play no part
  in direction, relation, cross-tree or clustering figures.
* precision = TP / predicted, recall = TP / true, F1 their harmonic mean (empty prediction:
  precision 0, or 1 when the truth has no edges too).
* direction accuracy: among predicted edges whose unordered pair is a true edge, the share
  pointing the right way. relation accuracy: among correctly directed predictions, the share
  with the true relation. merges complete: share of true merge children whose every parent is
  predicted (as a parent of that child, any relation).
* cross-tree edges: predicted edges joining two different true families.
* families and ARI: families are the connected components of the true non-distill edges over
  all models of the truth (a distilled student starts its own family, as its weights are
  independent); the prediction's clusters are the components of its scored edges. ARI is
  computed from the contingency table (1.0 for identical partitions in degenerate cases).

This module reads truth and predictions; it must not read weights or talk to Neo4j.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lineage_index.records import RELATIONS, Edge, ModelRecord

Pair = tuple[str, str]


@dataclass(frozen=True)
class Truth:
    """The parts of truth.json the scorer needs."""

    models: tuple[str, ...]
    edges: tuple[tuple[str, str, str], ...]  # (child, parent, relation)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, source: Truth | Mapping[str, Any] | str | Path) -> Truth:
        """From a Truth, a truth.json mapping, or a path to truth.json."""
        if isinstance(source, Truth):
            return source
        raw = json.loads(Path(source).read_text()) if isinstance(source, str | Path) else source
        edges = tuple((e["child"], e["parent"], e["relation"]) for e in raw.get("edges", []))
        models = list(raw.get("models", {}))
        seen = set(models)
        for c, p, _ in edges:
            for m in (c, p):
                if m not in seen:
                    seen.add(m)
                    models.append(m)
        return cls(models=tuple(models), edges=edges, raw=raw)


@dataclass(frozen=True)
class Scores:
    """Every figure of one prediction against one truth."""

    name: str
    n_pred: int
    n_true: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    direction_accuracy: float | None
    direction_n: int
    relation_accuracy: float | None
    relation_n: int
    merges_complete: float | None
    merges_n: int
    cross_tree_edges: int
    ari: float
    n_distill_ignored: int = 0
    n_out_of_scope: int = 0
    # per true relation: share of its edges predicted (directed pair), and with the right type
    per_relation_recall: dict[str, float] = field(default_factory=dict)
    per_relation_typed_recall: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    if isinstance(obj, Sequence) and not isinstance(obj, str):
        index = {"child": 0, "parent": 1, "relation": 2}[name]
        return obj[index] if len(obj) > index else None
    return getattr(obj, name, None)


def _normalise(pred_edges: Iterable[Any]) -> list[tuple[str, str, str]]:
    """(child, parent, relation) triples, first occurrence of a directed pair wins."""
    out: dict[Pair, str] = {}
    for e in pred_edges:
        child, parent = str(_field(e, "child")), str(_field(e, "parent"))
        if child == parent or (child, parent) in out:
            continue
        out[(child, parent)] = str(_field(e, "relation") or "finetune")
    return [(c, p, r) for (c, p), r in out.items()]


class _UnionFind:
    def __init__(self, items: Iterable[str]):
        self.parent = {i: i for i in items}

    def find(self, x: str) -> str:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def families(models: Iterable[str], edges: Iterable[Pair]) -> dict[str, str]:
    """Model -> family label (smallest id of its connected component)."""
    uf = _UnionFind(models)
    for a, b in edges:
        if a in uf.parent and b in uf.parent:
            uf.union(a, b)
    return {m: uf.find(m) for m in uf.parent}


def _comb2(n: int) -> float:
    return n * (n - 1) / 2


def adjusted_rand_index(labels_a: Sequence[Hashable], labels_b: Sequence[Hashable]) -> float:
    """Adjusted Rand index of two labelings of the same items (Hubert & Arabie)."""
    if len(labels_a) != len(labels_b):
        raise ValueError("labelings differ in length")
    n = len(labels_a)
    if n < 2:
        return 1.0
    contingency = Counter(zip(labels_a, labels_b, strict=True))
    index = sum(_comb2(v) for v in contingency.values())
    sum_a = sum(_comb2(v) for v in Counter(labels_a).values())
    sum_b = sum(_comb2(v) for v in Counter(labels_b).values())
    expected = sum_a * sum_b / _comb2(n)
    maximum = (sum_a + sum_b) / 2
    if maximum == expected:  # both trivial (all singletons or one cluster)
        same = len(contingency) == len(set(labels_a)) == len(set(labels_b))
        return 1.0 if same else 0.0
    return (index - expected) / (maximum - expected)


def score(
    pred_edges: Iterable[Any],
    truth: Truth | Mapping[str, Any] | str | Path,
    name: str = "prediction",
) -> Scores:
    """Score predicted edges (records.Edge, mappings, or (child, parent, relation) tuples)."""
    t = Truth.load(truth)
    known = set(t.models)
    true_rel: dict[Pair, str] = {}
    distill_pairs: set[frozenset[str]] = set()
    for c, p, r in t.edges:
        if r == "distill":
            distill_pairs.add(frozenset((c, p)))
        else:
            true_rel[(c, p)] = r
    true_undirected = {frozenset(k) for k in true_rel}

    pred: list[tuple[str, str, str]] = []  # in-scope predictions
    ignored_distill = out_of_scope = 0
    for c, p, r in _normalise(pred_edges):
        if c not in known or p not in known:
            out_of_scope += 1  # false positive, see the module docstring
        elif frozenset((c, p)) in distill_pairs:
            ignored_distill += 1
        else:
            pred.append((c, p, r))
    pred_pairs = {(c, p) for c, p, _ in pred}

    hits = [(c, p, r) for c, p, r in pred if (c, p) in true_rel]
    tp, n_pred, n_true = len(hits), len(pred) + out_of_scope, len(true_rel)
    precision = tp / n_pred if n_pred else (1.0 if n_true == 0 else 0.0)
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0

    on_true_pair = [(c, p) for c, p, _ in pred if frozenset((c, p)) in true_undirected]
    direction = (
        sum((c, p) in true_rel for c, p in on_true_pair) / len(on_true_pair)
        if on_true_pair
        else None
    )
    relation = sum(r == true_rel[(c, p)] for c, p, r in hits) / len(hits) if hits else None

    merge_parents: dict[str, set[str]] = defaultdict(set)
    for (c, p), r in true_rel.items():
        if r == "merge":
            merge_parents[c].add(p)
    complete = sum(all((c, p) in pred_pairs for p in ps) for c, ps in merge_parents.items())
    merges = complete / len(merge_parents) if merge_parents else None

    true_fam = families(t.models, true_rel)
    cross = sum(true_fam[c] != true_fam[p] for c, p, _ in pred)
    pred_fam = families(t.models, pred_pairs)
    ari = adjusted_rand_index([true_fam[m] for m in t.models], [pred_fam[m] for m in t.models])

    per_rel_true = Counter(true_rel.values())
    per_rel_hit = Counter(true_rel[(c, p)] for c, p, _ in hits)
    per_rel_typed = Counter(r for c, p, r in hits if r == true_rel[(c, p)])
    per_relation = {r: per_rel_hit[r] / n for r, n in sorted(per_rel_true.items())}
    per_typed = {r: per_rel_typed[r] / n for r, n in sorted(per_rel_true.items())}
    return Scores(
        name=name, n_pred=n_pred, n_true=n_true, tp=tp, fp=n_pred - tp, fn=n_true - tp,
        precision=precision, recall=recall, f1=f1,
        direction_accuracy=direction, direction_n=len(on_true_pair),
        relation_accuracy=relation, relation_n=len(hits),
        merges_complete=merges, merges_n=len(merge_parents),
        cross_tree_edges=cross, ari=ari, n_distill_ignored=ignored_distill,
        n_out_of_scope=out_of_scope, per_relation_recall=per_relation,
        per_relation_typed_recall=per_typed,
    )  # fmt: skip


def _declared_relation(relation: str | None, n_bases: int) -> str:
    if relation in RELATIONS:
        return str(relation)
    return "merge" if n_bases > 1 else "finetune"


def declared_baseline(
    source: Truth | Mapping[str, Any] | str | Path | Iterable[ModelRecord],
) -> list[Edge]:
    """Edges from declared ``base_model`` alone (what the Hub's model tree shows).

    ``source`` is a truth.json (path or mapping; its ``declared_base_model`` and
    ``declared_base_model_relation`` fields) or ModelRecords from any source. The relation is
    the declared ``base_model_relation``, else ``merge`` for several bases, else ``finetune``.
    """
    rows: list[tuple[str, list[str], str | None]] = []
    if isinstance(source, Truth | Mapping | str | Path):
        raw = Truth.load(source).raw
        for model_id, m in raw.get("models", {}).items():
            bases = m.get("declared_base_model")
            bases = [bases] if isinstance(bases, str) else list(bases or [])
            rows.append((model_id, bases, m.get("declared_base_model_relation")))
    else:
        for rec in source:
            rows.append((rec.id, list(rec.base_models), rec.base_model_relation))
    edges = []
    for model_id, bases, rel in rows:
        relation = _declared_relation(rel, len(bases))
        for base in bases:
            if base and base != model_id:
                edges.append(Edge(child=model_id, parent=base, relation=relation, source="declared",
                                  confidence=1.0, evidence="card base_model"))  # fmt: skip
    return edges


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def scores_table(rows: Sequence[Scores], title: str = "lineage evaluation") -> Any:
    """A rich Table with one row per Scores."""
    from rich.table import Table

    table = Table(title=title)
    columns = (
        "run",
        "pred",
        "true",
        "P",
        "R",
        "F1",
        "dir acc",
        "rel acc",
        "merges",
        "cross-tree",
        "ARI",
    )
    for col in columns:
        table.add_column(col, justify="left" if col == "run" else "right", no_wrap=True)
    for s in rows:
        table.add_row(
            s.name, str(s.n_pred), str(s.n_true), _fmt(s.precision), _fmt(s.recall), _fmt(s.f1),
            _fmt(s.direction_accuracy), _fmt(s.relation_accuracy), _fmt(s.merges_complete),
            str(s.cross_tree_edges), _fmt(s.ari),
        )  # fmt: skip
    return table


def scores_json(rows: Sequence[Scores]) -> str:
    """JSON list of every Scores as a dict."""
    return json.dumps([s.to_dict() for s in rows], indent=2)
