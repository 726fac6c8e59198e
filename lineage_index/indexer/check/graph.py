"""``check`` and the lineage graph: ``--add`` writes the checked model, the report reads context.

``add_to_graph`` writes the target's ``Model`` node (the same properties ingest writes,
``schema.graph.model_props``) and its ``DERIVED_FROM`` edges: the recovered parent(s) with the
verdict's relation and calibrated probability, reconciled with the card's declarations exactly
as ingest reconciles them (``recover.declared.reconcile_declared``: both / declared / contradicted),
through the one ``GraphWriter``; then licence inheritance is refreshed. ``graph_context``
reads what the graph knows around the verdict (the parents' ancestors and the target's
siblings) with the shipped ``provenance`` and ``descendants`` queries. Every query is
parameterised; the connection is resolved by the caller (``schema.connection``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lineage_index.indexer.check.verdict import LINEAGE_VERDICTS
from lineage_index.indexer.recover.declared import reconcile_declared
from lineage_index.records import Edge, ModelRecord, Sketch

MAX_SIBLINGS = 8  # siblings drawn around the target in the report


@dataclass
class GraphContext:
    """Lineage around a checked model, from the graph: (child, parent, relation) and licences."""

    edges: list[tuple[str, str, str]] = field(default_factory=list)
    licenses: dict[str, str | None] = field(default_factory=dict)
    siblings: list[str] = field(default_factory=list)
    source: str = "graph"


def recovered_edges(result, sketches: dict[str, Sketch]) -> list[Edge]:
    """The target's recovered DERIVED_FROM edges (before reconciliation with its card)."""
    if result.verdict not in LINEAGE_VERDICTS:
        return []
    closeness = {c.model_id: round(max(0.0, c.cos_median), 4) for c in result.candidates}
    weights = dict(zip(result.parents, result.coefficients, strict=False))
    edges = []
    for p in result.parents:
        why = result.evidence[2] if len(result.evidence) > 2 else result.verdict
        if p in weights:
            why = f"{why}; weight {weights[p]:.2f}"
        edges.append(Edge(result.target, p, result.verdict, "recovered", result.probability, closeness.get(p),
                          evidence=f"check: {why}"[:300]))
    return edges


def add_to_graph(conn, rec: ModelRecord, sk: Sketch, result, parent_sketches: dict[str, Sketch]) -> list[Edge]:
    """Write the target's Model node and its reconciled DERIVED_FROM edges; returns the edges."""
    from lineage_index.queries import licenses
    from lineage_index.schema.graph import ensure_schema, model_props
    from lineage_index.schema.writer import GraphWriter

    driver = conn.driver()
    ensure_schema(driver, conn.database)
    writer = GraphWriter(driver, conn.database)
    sketches = {rec.id: sk, **parent_sketches}
    edges = reconcile_declared(recovered_edges(result, sketches), {rec.id: rec}, sketches)
    root = None
    asserted = [e for e in edges if e.source in ("recovered", "both") and not e.contradicted]
    if asserted:
        props = writer.model_properties(asserted[0].parent) or {}
        root = props.get("root") or asserted[0].parent
    writer.upsert_models([{"id": rec.id, "props": {**model_props(rec, sk, root or rec.id),
                                                   "check_verdict": result.verdict,
                                                   "check_probability": result.probability}}])
    writer.replace_edges_for_children([rec.id], edges)
    licenses.refresh(driver, conn.database)
    return edges


def graph_context(conn, target: str, parents: list[str]) -> GraphContext:
    """Ancestors of the parents and the target's siblings, as the graph has them."""
    from lineage_index.queries.runner import run_query

    ctx = GraphContext()
    driver = conn.driver()
    for p in parents:
        for r in run_query(driver, "provenance", {"model": p}, conn.database).rows:
            ctx.edges.append((r["child"], r["ancestor"], r["relation"] or "derived"))
            ctx.licenses.setdefault(r["ancestor"], r["license"])
        for r in run_query(driver, "descendants", {"model": p}, conn.database).rows:
            if r["depth"] == 1 and r["descendant"] != target and len(ctx.siblings) < MAX_SIBLINGS:
                ctx.siblings.append(r["descendant"])
                ctx.edges.append((r["descendant"], p, r["relation"] or "derived"))
                ctx.licenses.setdefault(r["descendant"], r["license"])
    ctx.edges = list(dict.fromkeys(ctx.edges))
    return ctx
