"""Recovery in memory: sketches in, directed typed edges out (the path ``ingest`` and ``check`` use).

In: the ``ModelRecord``s and ``Sketch``es of a scope (plus read-only context: declared parents
outside it). Out: a ``Recovery`` (edges, family roots, families verified, pairs compared).
The steps, each in its own module: candidates -> verify -> assemble (per family) ->
cross-depth matching of family roots -> adapters -> declared reconciliation. The hub-scale
path over a packed store is ``batch``; both produce the same features and edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lineage_index.indexer.recover.assemble import assemble_family, collection_time_share
from lineage_index.indexer.recover.candidates import DEFAULT_K, candidate_pairs, group_by_family
from lineage_index.indexer.recover.crossdepth import cross_depth_edges
from lineage_index.indexer.recover.declared import (
    SAME_WEIGHTS,
    adapter_fits,
    declared_parents,
    reconcile_declared,
    resolve_declared_case,
)
from lineage_index.indexer.recover.verify import compare
from lineage_index.records import Edge, ModelRecord, Sketch


@dataclass
class Recovery:
    edges: list[Edge]
    roots: list[str]
    families: list[str] = field(default_factory=list)  # families verified (candidates + verify)
    pairs: int = 0  # candidate pairs compared


def recover(
    records: dict[str, ModelRecord], sketches: dict[str, Sketch], *, k: int = DEFAULT_K,
    context_records: dict[str, ModelRecord] | None = None,
    context_sketches: dict[str, Sketch] | None = None,
) -> Recovery:
    """Directed, typed edges from sketches, reconciled with the declared base models.

    Edges are recovered for ``records``/``sketches``; ``context_*`` (declared parents outside
    them, see ``Scope``) are looked at to judge a declaration or an adapter's fit, never
    verified again.
    """
    records = resolve_declared_case(records, {*records, *sketches, *(context_records or {}), *(context_sketches or {})})
    all_records = {**(context_records or {}), **records}
    all_sketches = {**(context_sketches or {}), **sketches}
    full = [s for s in sketches.values() if s.kind == "full"]
    declared = {m: declared_parents(r) for m, r in records.items()}
    edges: list[Edge] = []
    roots: list[str] = []
    families: list[str] = []
    n_pairs = 0
    verified: list[tuple[str, list[Sketch], list]] = []
    for family, members in sorted(group_by_family(full).items()):
        members.sort(key=lambda s: s.model_id)
        cands = candidate_pairs(members, declared, k=k)
        by_id = {s.model_id: s for s in members}
        verified.append((family, members, [compare(by_id[c.a], by_id[c.b]) for c in cands]))
    time_prior = collection_time_share([pairs for _, _, pairs in verified], records)
    for family, members, pairs in verified:
        result = assemble_family(members, pairs, records, time_prior=time_prior)
        edges.extend(result.edges)
        roots.extend(result.roots)
        families.append(family)
        n_pairs += len(pairs)
    # a family is one depth: its roots may come from another depth (pruned, passthrough, up-scaled)
    copies = {e.child for e in edges if e.relation in SAME_WEIGHTS}
    pool = full + [s for m, s in (context_sketches or {}).items() if s.kind == "full" and m not in sketches]
    depth_edges = cross_depth_edges(pool, roots, all_records, time_prior, copies)
    edges.extend(depth_edges)
    depth_children = {e.child for e in depth_edges}
    roots = [r for r in roots if r not in depth_children]
    for s in sketches.values():  # adapters: the base is declared; the weights' shapes must fit it
        if s.kind != "adapter":
            continue
        rec = records.get(s.model_id)
        for parent in declared.get(s.model_id, ()):
            base = all_records.get(parent)
            if rec is not None and base is not None and parent in all_sketches and adapter_fits(rec, base):
                edges.append(Edge(s.model_id, parent, "adapter", "both", 0.9, None,
                                  evidence="adapter: LoRA shapes fit the declared base"))
                break
    edges = reconcile_declared(edges, records, sketches, context_records, context_sketches)
    return Recovery(edges, roots, families, n_pairs)
