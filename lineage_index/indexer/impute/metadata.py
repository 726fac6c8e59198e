"""Impute stage: fill missing model metadata from config, header, files, tags and lineage.

SemFin-style (seeds/003): every model gets ``license``, ``reuse_method``, ``pipeline_tag``,
``model_type`` and ``library`` as an ``Imputed`` value with its ``source``:

* ``declared``  the card / config.json says it (never overwritten; ``flagged`` when one piece
  of strong evidence, confidence >= ``STRONG``, says something else);
* ``imputed``   the repository's own evidence: config.json (``model_type``, ``architectures``,
  ``quantization_config``), the safetensors header (tensor-name patterns, family signature
  shared with models whose type is known, quantisation aux tensors), files (adapter_config.json
  -> peft, config_sentence_transformers.json -> sentence-transformers, *.gguf -> gguf, LICENSE
  text -> licence), tags (``license:x``, pipeline / library / type tags), the verified edge;
* ``inherited`` the value comes from lineage neighbours (parents first, then siblings/children)
  along asserted edges only (recovered or both, never contradicted).

Votes are combined per value by noisy-OR; the winner's score, discounted by the runner-up,
is the confidence. Lineage votes (parent, grand-parents for licences, siblings, children, the
rest of the tree rooted at the same roots, one vote per neighbour) use the neighbours' current
values (declared, else imputed) scaled by their confidence, iterated so values travel along
chains; a hub-wide majority vote of tiny weight decides only when nothing else speaks. Licence
votes follow how licences travel: down the lineage a permissive claim is the weak one (cards
launder), a merge takes its most restrictive parent's, re-uploads (copy edges) speak weakly,
and a quantised child (same weights) speaks for its parent's licence, whatever it is.
Licence ``inherited`` here is a proposal:
``queries.licenses.apply_license_inheritance`` owns ``license_effective`` for inherited
licences; ``imputed_props`` writes ``license_effective`` only for licences imputed from the
repository's own evidence. Pure function of its inputs: no I/O, no Neo4j.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lineage_index.indexer.impute.evidence import (
    ARCH_TYPES,
    Vote,
    config_votes,
    family_of,
    file_votes,
    header_votes,
    tag_votes,
    text_or_none,
)
from lineage_index.indexer.impute.license_text import identify_license, read_license_texts
from lineage_index.records import Edge, ModelRecord

__all__ = ["FIELDS", "Imputed", "declared_value", "identify_license", "impute", "imputed_props",
           "read_license_texts"]

FIELDS: tuple[str, ...] = ("license", "reuse_method", "pipeline_tag", "model_type", "library")
STRONG = 0.85  # one vote at least this sure flags a declared value it contradicts
ROUNDS = 3  # lineage propagation rounds
PRIOR = 0.05  # confidence of the hub-wide majority, the vote of last resort
EFFECTIVE_MIN = 0.5  # an imputed licence weaker than this is not offered as the effective one


@dataclass(frozen=True)
class Imputed:
    """One metadata field of one model, with where it came from and how sure we are."""

    field: str
    value: str
    source: str  # declared | imputed | inherited
    confidence: float  # in [0, 1]
    evidence: str
    flagged: bool = False  # a declared value that strong evidence contradicts


def declared_value(rec: ModelRecord, field: str) -> str | None:
    """What the card (or config.json, for ``model_type``) says; None when it says nothing."""
    if field == "license":
        return text_or_none(rec.license)
    if field == "reuse_method":
        return text_or_none(rec.base_model_relation)
    if field == "pipeline_tag":
        return text_or_none(rec.pipeline_tag)
    if field == "model_type":
        return text_or_none(rec.config.get("model_type")) if isinstance(rec.config, dict) else None
    if field == "library":
        return text_or_none(rec.library_name)
    raise ValueError(f"unknown field {field!r}")


# ---- lineage ---------------------------------------------------------------------------------

_PARENT_CONF = {  # field -> (same-weights relations, other relations)
    "license": (0.85, 0.7), "model_type": (0.85, 0.85), "pipeline_tag": (0.85, 0.7), "library": (0.6, 0.55),
}  # fmt: skip


@dataclass
class _Graph:
    parents: dict[str, list[Edge]]
    children: dict[str, list[Edge]]
    tree: dict[str, set[str]]  # models of the same lineage tree more than one step away
    reuploads: set[str]  # copies: their licence claims are the least reliable (laundering)
    quantized: set[str]  # quantisations of one parent


def _graph(edges: Iterable[Edge], ids: set[str]) -> _Graph:
    parents: dict[str, list[Edge]] = defaultdict(list)
    children: dict[str, list[Edge]] = defaultdict(list)
    for e in edges:
        if e.source in ("recovered", "both") and not e.contradicted and e.child in ids and e.parent in ids:
            parents[e.child].append(e)
            children[e.parent].append(e)
    roots: dict[str, set[str]] = {}

    def roots_of(m: str, seen: frozenset[str] = frozenset()) -> set[str]:
        if m not in roots:
            ups = [e.parent for e in parents.get(m, []) if e.parent not in seen]
            roots[m] = set().union(*(roots_of(p, seen | {m}) for p in ups)) if ups else {m}
        return roots[m]

    by_root: dict[str, set[str]] = defaultdict(set)
    for m in sorted(set(parents) | set(children)):
        for r in roots_of(m):
            by_root[r].add(m)
    comp = {m: set().union(*(by_root[r] for r in roots_of(m))) for m in set(parents) | set(children)}
    tree = {}
    for m, members in comp.items():
        near = {m} | {e.parent for e in parents.get(m, [])} | {e.child for e in children.get(m, [])}
        near |= {s.child for e in parents.get(m, []) for s in children.get(e.parent, [])}
        tree[m] = members - near
    reuploads = {m for m, es in parents.items() if all(e.relation == "copy" for e in es)}
    quantized = {m for m, es in parents.items() if len(es) == 1 and es[0].relation == "quantized"}
    return _Graph(parents, children, tree, reuploads, quantized)


def _edge_votes(model: str, g: _Graph) -> list[Vote]:
    """The reuse method of ``model`` read off its verified incoming edge(s)."""
    ins = g.parents.get(model, [])
    if not ins:
        return []
    if len(ins) > 1 and any(e.relation == "merge" for e in ins):
        conf = max(e.confidence for e in ins)
        return [("merge", min(0.95, max(0.6, conf)), f"verified merge of {len(ins)} parents", False)]
    e = max(ins, key=lambda x: x.confidence)
    return [(e.relation, min(0.95, max(0.6, e.confidence)),
             f"verified edge from {e.parent} ({e.relation}, {e.source}, conf {e.confidence:.2f})", False)]


def _lineage_votes(model: str, rec: ModelRecord, field: str, g: _Graph,
                   current: Mapping[str, dict[str, tuple[str, float]]], rank: Any) -> list[Vote]:
    """Votes of the parents, siblings and children, each scaled by how sure its value is."""
    if field == "reuse_method":
        return []
    out: list[Vote] = []
    ins = g.parents.get(model, [])
    if field == "library" and rec.adapter_config is not None:
        ins = []  # an adapter's library is never its base's
    if field == "license" and len(ins) > 1:  # a merge: the most restrictive parent licence
        lic = [(current[e.parent][field], e) for e in ins if field in current[e.parent]]
        if lic:
            (value, c), e = max(lic, key=lambda x: (rank(x[0][0]), x[1].confidence))
            out.append((value, 0.75 * c, f"most restrictive parent licence ({e.parent})", True))
        ins = []
    same, other = _PARENT_CONF[field]
    for e in ins:
        if field in current[e.parent]:
            value, c = current[e.parent][field]
            conf = (same if e.relation in ("copy", "quantized") else other) * (0.5 + e.confidence / 2) * c
            out.append((value, conf, f"parent {e.parent} ({e.relation})", True))
    if field == "license":  # licence terms travel down the whole chain: grand-parents speak too
        for depth, anc in _ancestors(model, g, 2, 4):
            if field in current[anc]:
                value, c = current[anc][field]
                out.append((value, 0.6 * 0.8 ** (depth - 2) * c, f"ancestor {anc} ({depth} up)", True))
    sibs = [s.child for e in g.parents.get(model, []) for s in g.children.get(e.parent, []) if s.child != model]
    kids = [e.child for e in g.children.get(model, []) if field != "license" or e.relation != "merge"]
    groups = (("sibling", 0.3, sibs), ("child", 0.3 if ins else 0.4, kids),
              ("lineage-tree", 0.12 if field in ("license", "pipeline_tag", "model_type") else 0.0,
               sorted(g.tree.get(model, ()))))  # fmt: skip
    for name, weight, who in groups:  # one vote per neighbour: agreement accumulates (noisy-OR)
        for n in dict.fromkeys(who):
            if weight and field in current[n]:
                value, c = current[n][field]
                if field == "license":  # down the lineage permissive claims are the weak ones (laundering);
                    r = min(4, max(0, rank(value)))  # up it, restrictive ones (children may only tighten)
                    if name == "child" and n in g.quantized:
                        r = 0  # same weights re-encoded: it must carry its parent's licence, whatever it is
                    c *= (1.0 - 0.1 * r if name == "child" else 0.6 + 0.1 * r) * (0.4 if n in g.reuploads else 1.0)
                if name == "child" and n in g.quantized:  # same weights, re-encoded: mirrors its parent
                    c *= 1.8
                out.append((value, weight * c, f"{name} {n}", True))
    if field == "license":
        out = [(v, c if not ev.startswith(("parent", "ancestor", "most")) else
                c * (0.6 + 0.1 * min(4, max(0, rank(v)))), ev, lin) for v, c, ev, lin in out]
    return out


def _ancestors(model: str, g: _Graph, first: int, last: int) -> list[tuple[int, str]]:
    """(depth, id) of the ancestors ``first``..``last`` edges up, nearest first, no cycles."""
    out: list[tuple[int, str]] = []
    seen, layer = {model}, [model]
    for depth in range(1, last + 1):
        layer = [e.parent for m in layer for e in g.parents.get(m, []) if e.parent not in seen]
        seen.update(layer)
        if depth >= first:
            out.extend((depth, a) for a in dict.fromkeys(layer))
    return out


def _combine(votes: list[Vote]) -> tuple[str, float, str, bool, float] | None:
    """(value, confidence, evidence, from lineage, strongest single vote) of the winning value."""
    if not votes:
        return None
    miss: dict[str, float] = defaultdict(lambda: 1.0)
    for value, conf, _ev, _lin in votes:
        miss[value] *= 1.0 - max(0.0, min(0.99, conf))
    ranked = sorted(((1.0 - m, v) for v, m in miss.items()), key=lambda x: (-x[0], x[1]))
    score, value = ranked[0]
    runner = ranked[1][0] if len(ranked) > 1 else 0.0
    mine = sorted((v for v in votes if v[0] == value), key=lambda v: -v[1])
    evidence = "; ".join(dict.fromkeys(v[2] for v in mine[:3]))
    lineage_only = all(v[3] for v in mine if v[1] > PRIOR) and any(v[3] for v in mine)
    return value, round(score * (1.0 - runner / 2), 3), evidence, lineage_only, mine[0][1]


def _norm(value: str) -> str:
    return re.sub(r"\s+", "-", value.strip().lower())


def impute(records: Mapping[str, ModelRecord], edges: Iterable[Edge],
           license_texts: Mapping[str, str] | None = None) -> dict[str, dict[str, Imputed]]:
    """Declared, imputed or inherited value of every field of every model (see module doc).

    ``edges``: the recovery's edges (only asserted ones are used). ``license_texts``: model
    id -> text of its LICENSE/NOTICE files (``read_license_texts``). Fields no evidence speaks
    for are left out of a model's dict.
    """
    from lineage_index.queries.licenses import catalogue

    cat = catalogue()
    rank = lambda lic: 3 if lic == "other" else cat.rank(cat.resolve(lic) or lic)  # noqa: E731  custom: restrictive
    texts = license_texts or {}
    ids = set(records)
    g = _graph(edges, ids)
    declared = {m: {f: v for f in FIELDS if (v := declared_value(r, f))} for m, r in records.items()}
    fam_types: dict[str, Counter[str]] = defaultdict(Counter)
    for m, r in records.items():
        if (fam := family_of(r)) and (t := declared.get(m, {}).get("model_type")):
            fam_types[fam][_norm(t)] += 1
    known_types = frozenset(ARCH_TYPES.values()) | frozenset(t for c in fam_types.values() for t in c)
    own: dict[str, dict[str, list[Vote]]] = {}
    for m, r in records.items():
        own[m] = {}
        for f in FIELDS:
            votes = config_votes(r, f) + file_votes(r, f, texts.get(m)) + tag_votes(r, f, known_types)
            if f == "model_type":  # the header family vote must not count the model's own declared type
                peers = dict(fam_types)
                fam, mine = family_of(r), declared[m].get("model_type")
                if fam and mine:
                    peers[fam] = fam_types[fam] - Counter({_norm(mine): 1})
                votes += header_votes(r, f, peers)
            else:
                votes += header_votes(r, f, {})
            if f == "reuse_method":
                votes += _edge_votes(m, g)
            own[m][f] = votes
    for f in FIELDS:  # the hub-wide prior: decides only when nothing else speaks
        prior = Counter(_norm(v) if f != "license" else v for d in declared.values() if (v := d.get(f)))
        if prior:
            value, n = prior.most_common(1)[0]
            for m, r in records.items():
                if f != "reuse_method" or own[m][f] or r.base_models:
                    own[m][f].append((value, PRIOR, f"hub-wide majority ({n}/{sum(prior.values())})", False))
    current = {m: {f: (v, 1.0) for f, v in declared[m].items()} for m in records}
    result: dict[str, dict[str, Imputed]] = {}
    for _ in range(ROUNDS):
        nxt: dict[str, dict[str, tuple[str, float]]] = {}
        result = {}
        for m, r in records.items():
            result[m], nxt[m] = {}, {}
            for f in FIELDS:
                votes = own[m][f] + _lineage_votes(m, r, f, g, current, rank)
                item = _decide(f, declared[m].get(f), votes)
                if item is not None:
                    result[m][f] = item
                    nxt[m][f] = (item.value, item.confidence)
        current = nxt
    return result


def _decide(field: str, declared: str | None, votes: list[Vote]) -> Imputed | None:
    if declared is not None:
        against = [v for v in votes if _norm(v[0]) != _norm(declared) and v[1] >= STRONG]
        support = max((v[1] for v in votes if _norm(v[0]) == _norm(declared)), default=0.0)
        if against and max(v[1] for v in against) > support:
            top = max(against, key=lambda v: v[1])
            return Imputed(field, declared, "declared", 0.5,
                           f"declared; contradicted by {top[2]} -> {top[0]} ({top[1]:.2f})", True)
        return Imputed(field, declared, "declared", 1.0, "declared")
    best = _combine(votes)
    if best is None:
        return None
    value, conf, evidence, lineage_only, _strongest = best
    return Imputed(field, value, "inherited" if lineage_only else "imputed", conf, evidence)


def imputed_props(result: Mapping[str, Mapping[str, Imputed]]) -> dict[str, dict[str, Any]]:
    """Flat Neo4j properties per model: ``{field}_value/_source/_confidence/_flagged/_evidence``.

    Licence imputed from the repository's own evidence (LICENSE text, ``license:`` tag) with
    confidence >= ``EFFECTIVE_MIN`` also sets ``license_effective`` and ``license_source =
    'imputed'`` (what ``apply_license_inheritance`` keeps); a weaker imputed licence (say the
    hub-wide majority alone) is written as ``license_value`` without ``license_source`` (that
    property is shared with ``queries.licenses``, where 'imputed' means "effective"); an inherited
    licence is written as ``license_value`` / ``license_source = 'inherited'`` only, its
    ``license_effective`` being ``apply_license_inheritance``'s to compute.
    """
    out: dict[str, dict[str, Any]] = {}
    for model, fields in result.items():
        props: dict[str, Any] = {}
        for f in FIELDS:
            item = fields.get(f)
            props[f"{f}_value"] = item.value if item else None
            props[f"{f}_source"] = item.source if item else None
            props[f"{f}_confidence"] = float(item.confidence) if item else None
            props[f"{f}_flagged"] = bool(item.flagged) if item else False
            props[f"{f}_evidence"] = item.evidence if item else None
        lic = fields.get("license")
        if lic is not None and lic.source == "imputed" and lic.confidence >= EFFECTIVE_MIN:
            props["license_effective"] = lic.value
        elif lic is None or lic.source == "imputed":
            del props["license_source"]  # leave apply_license_inheritance's own value alone
        out[model] = props
    return out
