"""Verdict rules of ``check`` (issue 10): relation, parents, the card's claim, licences, exit code.

Pure functions over verified ``PairFeatures`` and stored sketches, reusing ``assemble``'s
direction votes and ``verify.find_merge``: structural signatures first (copy, quantised,
pruned: the child carries the signature), then merges, then fine-tune direction. A missing
signal (no record, no time, base not stored) is never evidence. The rules choose; how sure to
be is ``calibration``'s job (fitted, not written here). No I/O and no printing here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lineage_index.indexer.recover.assemble import MERGE_NEIGHBOURS, direction_score
from lineage_index.indexer.recover.declared import declared_parents, judge_weights
from lineage_index.indexer.recover.verify import (
    RELATED_Z,
    MergeFit,
    PairFeatures,
    compare,
    find_merge,
)
from lineage_index.indexer.sketch.canon import adapter_target_signature
from lineage_index.records import ModelRecord, Sketch

# A best candidate with calibrated z between GREY_Z and RELATED_Z is neither related nor clearly
# independent (4 sd above the background: p < 1e-4 under the null, yet short of the related bar).
GREY_Z = 4.0
LINEAGE_VERDICTS = ("copy", "quantized", "adapter", "finetune", "merge", "prune")
EXIT_CODES = {"ok": 0, "usage": 2, "contradicted": 3, "unknown": 4}
Load = Callable[[str], Sketch]  # stored sketch by model id (must exist)
Find = Callable[[str], "Sketch | None"]  # stored sketch by model id, None when absent
Compare = Callable[[Sketch, Sketch], PairFeatures]


class PairCache:
    """``verify.compare`` memoised by (model, sha) pair within one check."""

    def __init__(self) -> None:
        self.memo: dict[tuple, PairFeatures] = {}

    def __call__(self, a: Sketch, b: Sketch) -> PairFeatures:
        key = (a.model_id, a.sha, b.model_id, b.sha)
        if key not in self.memo:
            self.memo[key] = compare(a, b)
        return self.memo[key]


@dataclass(frozen=True)
class Claim:
    """The card's base_model claim against the weights."""

    declared: tuple[str, ...]
    # "none" | "supported" | "imprecise" | "contradicted" | "unverified": the verdicts ``ingest``
    # gives (``recover.declared``), from the same function where the weights decide
    status: str
    reason: str = ""


def _structural(f: PairFeatures, child: str) -> str | None:
    """The relation when ``child`` carries a structural signature over the other side."""
    if f.quant_child == child:
        return "quantized"
    if f.copy_child in (child, "same"):
        return "copy"
    if f.prune_child == child:
        return "prune"
    return None


@dataclass
class Decision:
    """What the rules chose: verdict, parents, merge coefficients, and each candidate's role."""

    verdict: str
    parents: list[str]
    coefficients: list[float] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    relation_of: dict[str, str] = field(default_factory=dict)  # candidate -> its relation to the target
    children: set[str] = field(default_factory=set)  # candidates shown to derive from the target
    merge_children: set[str] = field(default_factory=set)  # stored merges with the target among their inputs
    merge: MergeFit | None = None


def adapter_verdict(rec: ModelRecord, find: Find) -> Decision:
    """Adapters: the declared base must be stored and its matrix shapes must fit the LoRA."""
    targets = adapter_target_signature(rec.tensors)
    for base in declared_parents(rec):
        sk = find(base)
        if sk is None:
            continue
        shapes = {s.role: tuple(s.shape) for s in sk.samples.values() if len(s.shape) == 2}
        if targets and all(shapes.get(r) in (sh, sh[::-1]) for r, sh in targets.items()):
            return Decision("adapter", [base], evidence=[f"LoRA shapes fit the stored base {base}"],
                            relation_of={base: "adapter"})
        return Decision("insufficient", [], evidence=[f"LoRA shapes do not fit the declared base {base}"])
    return Decision("insufficient", [], evidence=["adapter whose declared base is not in the index"])


def decide(sk: Sketch, related: list[str], feats: dict[str, PairFeatures], load: Load,
           recs: Mapping[str, ModelRecord], declared: tuple[str, ...], cmp: Compare = compare) -> Decision:
    """The verdict on the target from its related candidates (nearest first).

    Structural signatures first (the target is a copy / quantised / pruned child of one
    candidate), then a merge fit over the non-structural relatives, then fine-tune direction.
    A candidate that is itself explained as a merge with the target among its inputs, or
    carries a structural signature over the target, is the target's child, never its parent.
    """
    me = sk.model_id
    d = Decision("no_relative", [], relation_of={c: "related" for c in related})
    if not related:
        return d
    d.children = {c for c in related if _structural(feats[c], c) and feats[c].copy_child != "same"}
    for c in related:  # a bit-identical pair: the newer upload (when times are known) is the copy
        if feats[c].copy_child == "same" and _older(me, c, recs):
            d.children.add(c)
    for c in related:  # structural: the target carries the signature over its nearest source
        rel = _structural(feats[c], me)
        if rel and c not in d.children:
            c = _prefer(c, related, load, declared, recs, cmp)
            same = " (bit-identical: which upload is the original is not in the weights)" \
                if feats[c].copy_child == "same" and not _dated(me, c, recs) else ""
            d.verdict, d.parents, d.relation_of[c] = rel, [c], rel
            d.evidence.append(f"{rel} of {c}: {describe(feats[c], me)}{same}")
            return _mark_children(d)
    pool = _merge_inputs([c for c in related if c not in d.children][:MERGE_NEIGHBOURS], load, cmp)
    for c in pool:  # a stored merge of the target with others is a child (norm growth is biased there)
        fit = find_merge(load(c), [sk] + [load(o) for o in pool if o != c])
        if fit is not None and me in fit.parents:
            d.children.add(c)
            d.merge_children.add(c)
    inputs = [c for c in pool if c not in d.children]
    if len(inputs) >= 2:
        fit = find_merge(sk, [load(c) for c in inputs])
        if fit is not None:
            d.verdict, d.parents, d.coefficients, d.merge = "merge", list(fit.parents), list(fit.weights), fit
            for c in fit.parents:
                d.relation_of[c] = "merge"
            if fit.base:
                d.relation_of[fit.base] = "merge base"
            base = f" over base {fit.base}" if fit.base else ""
            d.evidence.append(f"{fit.method} merge{base}, fit residual {fit.ratio:.3f}")
            return _mark_children(d)
    ahead = [c for c in inputs if direction_score(feats[c], c, me, recs, True) > 0]
    for c in inputs:
        d.relation_of[c] = "related" if c in ahead else "child"
        if c not in ahead:
            d.children.add(c)
    if ahead:
        c = _prefer(ahead[0], related, load, declared, recs, cmp)
        d.verdict, d.parents, d.relation_of[c] = "finetune", [c], "finetune"
        d.evidence.append(f"fine-tune of {c}: {describe(feats[c], me)}")
        return _mark_children(d)
    d.verdict = "family_unresolved"
    d.evidence.append(f"related to {len(related)} stored model(s), all of which look derived from the target")
    return _mark_children(d)


def _mark_children(d: Decision) -> Decision:
    for c in d.children:
        d.relation_of[c] = "child"
    return d


def _dated(a: str, b: str, recs: Mapping[str, ModelRecord]) -> bool:
    return bool(recs.get(a) and recs[a].created_at and recs.get(b) and recs[b].created_at)


def _older(a: str, b: str, recs: Mapping[str, ModelRecord]) -> bool:
    ta, tb = (recs[m].created_at if m in recs else None for m in (a, b))
    return bool(ta and tb and ta < tb)


def copy_sources(c: str, pool: list[str], load: Load, recs: Mapping[str, ModelRecord],
                 cmp: Compare = compare) -> list[str]:
    """Candidates in ``pool`` of which ``c`` is a re-upload: ``c`` is their rounded, re-typed or
    quantised copy (the weights say so), or a bit-identical twin uploaded later (times say so)."""
    out = []
    for o in pool:
        if o == c:
            continue
        f = cmp(load(o), load(c))
        if f.copy_child == c or f.quant_child == c or (f.copy_child == "same" and _older(o, c, recs)):
            out.append(o)
    return out


def _prefer(c: str, pool: list[str], load: Load, declared: tuple[str, ...], recs: Mapping[str, ModelRecord],
            cmp: Compare = compare) -> str:
    """The original behind ``c``: models are derived from originals, not from their re-uploads.

    Follows ``copy_sources`` (declared first, else the oldest, else the nearest) while ``c`` is
    a copy of another candidate; then among bit-identical twins with unknown times, the declared
    one, else ``c``.
    """
    seen = {c}
    while src := [o for o in copy_sources(c, pool, load, recs, cmp) if o not in seen]:
        dated = sorted((recs[m].created_at or "", m) for m in src if m in recs and recs[m].created_at)
        c = next((d for d in declared if d in src), dated[0][1] if dated else src[0])
        seen.add(c)
    same = [c] + [o for o in pool if o != c and cmp(load(c), load(o)).copy_child == "same"]
    for d in declared:
        if d in same:
            return d
    return c


def _merge_inputs(cands: list[str], load: Load, cmp: Compare = compare) -> list[str]:
    """Candidates that are not structural copies of another candidate (they add no direction)."""
    keep: list[str] = []
    for c in cands:
        pairs = (cmp(load(k), load(c)) for k in keep)
        if not any(f.copy_child in (c, "same") or f.quant_child == c for f in pairs):
            keep.append(c)
    return keep


def describe(f: PairFeatures, me: str) -> str:
    bits = [f"cos={f.cos_median:.4f}", f"z={f.z:.0f}", f"dist={f.dist:.4f}"]
    if f.identical_share:
        bits.append(f"identical={f.identical_share:.2f}")
    if f.low_rank_share:
        bits.append(f"lowrank={f.low_rank_share:.2f}")
    for name, who in (("copy", f.copy_child), ("quantized", f.quant_child), ("pruned", f.prune_child)):
        if who:
            bits.append(f"{name}:{'target' if who == me else 'same' if who == 'same' else 'candidate'}")
    if f.norm_growth:
        bits.append(f"norm_growth={f.norm_growth if f.b == me else -f.norm_growth:+.2f}")
    return " ".join(bits)


def judge_claim(sk: Sketch, declared: tuple[str, ...], verdict: str, parents: list[str], find: Find,
                zscore: Callable[[PairFeatures], float]) -> Claim:
    """Does the weights' evidence support, contradict, or not judge the card's base_model?"""
    if not declared:
        return Claim((), "none", "the card declares no base model")
    if set(declared) & set(parents):
        return Claim(declared, "supported", f"recovered parent {', '.join(parents)} is declared")
    if sk.kind == "adapter":
        if any(find(d) for d in declared):
            return Claim(declared, "contradicted", "the LoRA shapes do not fit the declared base")
        return Claim(declared, "unverified", "no declared base is in the index")
    parent_sks = [p for p in (find(m) for m in parents) if p is not None]
    for d in declared:
        base = find(d)
        if base is None:
            continue
        f = compare(sk, base)
        if f.related and (_structural(f, sk.model_id) or f.copy_child == "same"):
            return Claim(declared, "supported", f"{d}: the target is a {_structural(f, sk.model_id)} of it")
        if f.related and _structural(f, d):  # a structural signature is a confident direction
            return Claim(declared, "contradicted", f"{d}: it is a {_structural(f, d)} of the target")
        status, why = judge_weights(sk, base, parent_sks, related=lambda f: f.related and zscore(f) >= RELATED_Z)
        return Claim(declared, status, f"{d}: {why}")
    return Claim(declared, "unverified", "no declared base is in the index")


def license_chain(parents: list[str], recs: Mapping[str, ModelRecord]) -> list[tuple[str, str | None]]:
    """Licences up the recovered parents, then their declared parents, as far as records go."""
    chain: list[tuple[str, str | None]] = []
    todo, seen = list(parents), set()
    while todo:
        m = todo.pop(0)
        if m in seen:
            continue
        seen.add(m)
        r = recs.get(m)
        chain.append((m, (r.license_name or r.license) if r else None))
        if r is not None:
            todo += list(declared_parents(r))
    return chain


def declared_ancestry(parents: list[str], recs: Mapping[str, ModelRecord], limit: int = 20) -> list[tuple[str, str, str]]:
    """(child, declared base, 'declared') up the recovered parents' cards, as far as records go."""
    edges: list[tuple[str, str, str]] = []
    todo, seen = list(parents), set()
    while todo and len(edges) < limit:
        m = todo.pop(0)
        if m in seen or m not in recs:
            continue
        seen.add(m)
        for base in declared_parents(recs[m]):
            edges.append((m, base, "declared"))
            todo.append(base)
    return edges


def license_conflicts(rec: ModelRecord, parents: list[str], recs: Mapping[str, ModelRecord]) -> list[str]:
    """The recovered parents whose licence does not allow the target's (code ✗ of the licence
    catalogue, the code ``report licenses`` lists as a conflict); unknown licences are no conflict."""
    from lineage_index.queries.licenses import catalogue

    cat = catalogue()
    child = cat.resolve(rec.license, rec.license_name)
    out = []
    for p in parents:
        if p in recs:
            parent = cat.resolve(recs[p].license, recs[p].license_name)
            if cat.code(parent, child) == "✗":
                out.append(f"{p} ({parent}) does not allow {child}")
    return out


def exit_code(verdict: str, parents: list[str], claim: Claim, chain: list[tuple[str, str | None]],
               fail_on_license: str | None, fail_on_undeclared: bool,
               conflicts: list[str] | None = None) -> tuple[int, list[str]]:
    failures: list[str] = [f"licence conflict: {c}" for c in conflicts or []]
    if fail_on_license:
        from lineage_index.queries.licenses import catalogue

        ids = {i.lower() for i in (catalogue().gate(fail_on_license) or {fail_on_license})}
        hits = [m for m, lic in chain if lic and lic.lower() in ids]
        if hits:
            failures.append(f"parent chain carries licence {fail_on_license}: {', '.join(hits)}")
    if fail_on_undeclared and verdict in LINEAGE_VERDICTS and claim.status in ("none", "unverified"):
        failures.append(f"undeclared lineage: {verdict} of {', '.join(parents)}")
    if claim.status == "contradicted":
        return EXIT_CODES["contradicted"], failures
    if failures:
        return EXIT_CODES["contradicted"], failures
    if claim.status in ("supported", "imprecise") or verdict in LINEAGE_VERDICTS or verdict == "family_unresolved":
        return EXIT_CODES["ok"], failures
    return EXIT_CODES["unknown"], failures
