"""Declared base models against recovered lineage: what a card claims, judged by the weights.

In: recovered ``Edge`` lists, the ``ModelRecord``s whose cards declare bases, their ``Sketch``es.
Out: the same edges marked ``both`` where the card agrees, plus ``declared`` edges for the other
claims (flagged ``contradicted`` with the reason when the weights disagree). Also the helpers
every path shares: which bases a record declares (``declared_parents``), whether an adapter's
shapes fit a base (``adapter_fits``), declared ids in another case than an indexed one, and
which edges the weights support (``asserted_edges``). Pure functions; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from lineage_index.indexer.recover.verify import PairFeatures, compare
from lineage_index.indexer.sketch.canon import adapter_target_signature, canonical, quant_aux_kind
from lineage_index.records import Edge, ModelRecord, Sketch

SAME_WEIGHTS = ("copy", "quantized")  # relations the weights cannot always tell apart
# A declared base within this factor of the recovered parent's distance is "about as near": the
# weights then prefer the recovered parent by a margin too small to overrule the card's claim
# (the assembly's own tie-break lets the card decide between equally near parents too).
NEAR_AS_PARENT = 1.1
# A card is called false for naming a descendant only when every edge of the recovered path
# down to it has a confident direction (at least two agreeing direction signals, or a
# structural one); a path resting on one weak vote leaves the card unverified instead.
REVERSED_MIN_CONFIDENCE = 0.9


def declared_parents(rec: ModelRecord) -> tuple[str, ...]:
    """Declared bases: an adapter's ``base_model_name_or_path`` first (what PEFT loads), then the card's."""
    parents = list(rec.base_models)
    if rec.adapter_config:
        base = rec.adapter_config.get("base_model_name_or_path")
        if isinstance(base, str) and base:
            parents = [base] + [p for p in parents if p != base]
    return tuple(p for p in parents if p != rec.id)


def adapter_fits(adapter: ModelRecord, base: ModelRecord) -> bool:
    targets = adapter_target_signature(adapter.tensors)
    if not targets:
        return False
    shapes = {}
    for t in base.tensors:
        c = canonical(t.name)
        if len(t.shape) == 2:
            shapes[c.role] = (t.shape[0], t.shape[1])
    if any(quant_aux_kind(t.name) in ("bnb-4bit", "gptq") for t in base.tensors):
        return True  # 4-bit packed bases (QLoRA) hide their shapes: the weights cannot object
    # int8 weights keep the (out, in) shape; GPT-2's Conv1D stores (in, out)
    return all(shapes.get(role) in (shape, shape[::-1]) for role, shape in targets.items())


def resolve_declared_case(records: dict[str, ModelRecord], known: set[str]) -> dict[str, ModelRecord]:
    """Declared base models spelled with another case than an indexed id (the Hub resolves repo
    ids case-insensitively: ``Meta-Llama/llama-3-8b`` is ``meta-llama/Llama-3-8B``) take the
    indexed spelling; an id matching several indexed ids by case is left as written."""
    lower: dict[str, list[str]] = {}
    for m in known:
        lower.setdefault(m.lower(), []).append(m)
    out = dict(records)
    for m, rec in records.items():
        fixed = tuple(b if b in known or len(lower.get(b.lower(), [])) != 1 else lower[b.lower()][0]
                      for b in rec.base_models)
        if fixed != rec.base_models:
            out[m] = replace(rec, base_models=tuple(dict.fromkeys(fixed)))
    return out


def reconcile_declared(
    edges: list[Edge], records: dict[str, ModelRecord], sketches: dict[str, Sketch],
    context_records: dict[str, ModelRecord] | None = None,
    context_sketches: dict[str, Sketch] | None = None,
) -> list[Edge]:
    """Mark recovered edges the card also declares (``both``, verdict supported); keep the
    others as ``declared`` edges with the verdict (``_judge``: supported, imprecise, unverified,
    contradicted) in ``verdict`` and at the start of the evidence; only a contradicted one is
    flagged ``contradicted``. Imprecise and contradicted ones are not lineage (``Edge.is_lineage``).

    Declarations of ``records`` are judged; ``context_*`` only supply the parents' side.
    """
    all_records = {**(context_records or {}), **records}
    sketches = {**(context_sketches or {}), **sketches}
    recovered = {(e.child, e.parent): e for e in edges}
    parents_of: dict[str, list[str]] = {}
    children_of: dict[str, list[str]] = {}
    confidence = {(e.parent, e.child): e.confidence for e in edges}
    for e in edges:
        parents_of.setdefault(e.child, []).append(e.parent)
        children_of.setdefault(e.parent, []).append(e.child)
    out: list[Edge] = []
    declared_pairs: set[tuple[str, str]] = set()
    for child, rec in sorted(records.items()):
        for parent in declared_parents(rec):
            declared_pairs.add((child, parent))
            if (child, parent) in recovered:
                continue
            relation = rec.base_model_relation or ("adapter" if rec.is_adapter else "finetune")
            if parent not in sketches or child not in sketches:
                out.append(Edge(child, parent, relation, "declared", 0.5, None,
                                evidence="declared; weights of one side not indexed", verdict="unverified"))
                continue
            found = parents_of.get(child, [])
            verdict, why = _judge(rec, parent, sketches, all_records, parents_of, children_of, found,
                                  confidence)
            bad = verdict == "contradicted"
            out.append(Edge(child, parent, relation, "declared", 0.1 if bad else 0.5, None,
                            evidence=f"{verdict}: {why}", contradicted=bad,
                            recovered_parent=", ".join(found) or None, verdict=verdict))
    for e in edges:
        if (e.child, e.parent) in declared_pairs:
            relation = e.relation
            declared_rel = records[e.child].base_model_relation if e.child in records else None
            if relation in SAME_WEIGHTS and declared_rel in SAME_WEIGHTS:
                relation = declared_rel  # a plain dtype cast fits both: the card decides
            e = Edge(e.child, e.parent, relation, "both", e.confidence, e.closeness, e.evidence,
                     verdict="supported")
        out.append(e)
    return sorted(out, key=lambda e: (e.child, e.parent))


def _lineage(start: str, step: dict[str, list[str]]) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for n in step.get(todo.pop(), ()):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def _path(top: str, bottom: str, children_of: dict[str, list[str]]) -> list[tuple[str, str]]:
    """The (parent, child) steps from ``top`` down to ``bottom`` (breadth first), or []."""
    back: dict[str, str] = {}
    todo = [top]
    while todo:
        nxt = []
        for n in todo:
            for k in children_of.get(n, ()):
                if k not in back and k != top:
                    back[k] = n
                    nxt.append(k)
        todo = nxt
    steps, cur = [], bottom
    while cur in back:
        steps.append((back[cur], cur))
        cur = back[cur]
    return steps[::-1] if cur == top else []


def _judge(rec: ModelRecord, parent: str, sketches: dict[str, Sketch], records: dict[str, ModelRecord],
           parents_of: dict[str, list[str]], children_of: dict[str, list[str]],
           found: list[str], confidence: dict[tuple[str, str], float] | None = None) -> tuple[str, str]:
    """(verdict, reason) for a declared base the recovery did not take as ``rec``'s parent.

    A card is contradicted only when the weights show the declared model unrelated, or a
    descendant of the model declaring it. A recovered ancestor is an imprecise declaration; a
    related model about as near as the recovered parent (``NEAR_AS_PARENT``) supports the card;
    models the weights cannot compare (another architecture or depth) leave it unverified.
    """
    child = rec.id
    a, b = sketches[child], sketches[parent]
    if a.kind == "adapter":
        base = records.get(parent)
        if base is not None and adapter_fits(rec, base):
            return "imprecise", "the LoRA shapes fit it, but another declared base was taken"
        return "contradicted", "the LoRA shapes do not fit it"
    if parent in _lineage(child, parents_of):
        return "imprecise", "an ancestor in the recovered lineage, not the direct parent"
    if parent in _lineage(child, children_of):
        path = _path(child, parent, children_of)
        weakest = min(((confidence or {}).get(step, 1.0) for step in path), default=1.0)
        if weakest >= REVERSED_MIN_CONFIDENCE:
            return "contradicted", "the declared base descends from this model in the recovered lineage"
        return "unverified", (f"the declared base sits below this model in the recovered lineage, but on a "
                              f"direction of confidence {weakest:.2f} only")
    return judge_weights(a, b, [sketches[p] for p in found if p in sketches])


def judge_weights(child: Sketch, base: Sketch, parents: list[Sketch],
                  related: Callable[[PairFeatures], bool] | None = None) -> tuple[str, str]:
    """(verdict, reason) the weights give on "``child`` declares ``base``" where neither lineage
    nor structure decides: another architecture leaves it unverified, unrelated weights
    contradict it, related and about as near as the recovered parent (``NEAR_AS_PARENT``)
    support it, related but farther is imprecise. Shared by ``ingest`` (after the recovered
    lineage is consulted, ``_judge``) and ``check`` (``check.verdict.judge_claim``); ``related``
    decides relatedness instead of the pair's own test (``check`` calibrates it per architecture)."""
    if child.family != base.family:
        return "unverified", "architectures differ; the weights cannot compare them"
    f = compare(child, base)
    if not (f.related if related is None else related(f)):
        return "contradicted", f"weights unrelated (cos={f.cos_median:.3f})"
    near = [compare(child, p).dist for p in parents if p.family == child.family]
    if not near or f.dist <= NEAR_AS_PARENT * min(near):
        return "supported", f"related (cos={f.cos_median:.3f}) and about as near as the recovered parent"
    return "imprecise", f"related (cos={f.cos_median:.3f}) but not the direct parent"


def asserted_edges(edges: Iterable[Edge]) -> list[Edge]:
    """The edges the weights support (what ``eval`` scores): recovered or confirmed ones.

    Declared-only edges stay in the graph as the card's claim, flagged when contradicted.
    """
    return [e for e in edges if e.source in ("recovered", "both") and not e.contradicted]
