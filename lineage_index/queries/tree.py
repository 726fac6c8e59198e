"""Tree data of a model's family (root and whole tree) or of its descendants.

``family_tree(driver, model)`` runs the shipped ``family`` query and nests its rows into
``TreeNode``s: one tree per root, each node with its licence (effective, its source and colour
family) and the relation, source and confidence of the edge to the parent it hangs under. A
merge child has several parents: it is shown under each, with ``also_under`` naming the
others. ``descendants_tree`` is the subtree at the model. Rendering (rich) is the CLI's job;
this module only reads the graph and must not print.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from neo4j import Driver

from lineage_index.errors import UsageError
from lineage_index.queries import licenses
from lineage_index.queries.runner import run_query


@dataclass
class TreeNode:
    id: str
    license: str | None
    license_source: str | None
    license_family: str
    colour: str
    relation: str | None = None  # edge to the parent this node hangs under
    source: str | None = None  # declared | recovered | both
    confidence: float | None = None
    is_subject: bool = False
    also_under: list[str] = field(default_factory=list)
    children: list[TreeNode] = field(default_factory=list)

    def walk(self) -> list[TreeNode]:
        """This node and every node below it, depth first."""
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "license": self.license,
            "license_source": self.license_source,
            "license_family": self.license_family,
            "relation": self.relation,
            "source": self.source,
            "confidence": self.confidence,
            "is_subject": self.is_subject,
            "also_under": list(self.also_under),
            "children": [c.as_dict() for c in self.children],
        }


def family_tree(driver: Driver, model: str, database: str | None = None) -> list[TreeNode]:
    """One tree per root of ``model``'s family (UsageError if the model is not in the graph)."""
    rows = run_query(driver, "family", {"model": model}, database).rows
    if not rows:
        raise UsageError(f"model {model!r} is not in the graph")
    cat = licenses.catalogue()
    info: dict[str, dict[str, Any]] = {}
    parents: dict[str, list[dict[str, Any]]] = defaultdict(list)
    roots: list[str] = []
    for r in rows:
        info.setdefault(r["model"], r)
        if r["depth"] == 0 and r["model"] == r["root"] and r["model"] not in roots:
            roots.append(r["model"])
        known = {e["parent"] for e in parents[r["model"]]}
        if r["parent"] is not None and r["parent"] not in known:
            parents[r["model"]].append(r)
    children: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for edges in parents.values():
        for e in edges:
            if e["parent"] in info:
                children[e["parent"]].append(e)

    def build(model_id: str, edge: dict[str, Any] | None, path: frozenset[str]) -> TreeNode:
        row = info[model_id]
        fam = cat.family_of(row["license"])
        node = TreeNode(
            id=model_id,
            license=row["license"],
            license_source=row["license_source"],
            license_family=fam.id,
            colour=fam.colour,
            relation=edge["relation"] if edge else None,
            source=edge["source"] if edge else None,
            confidence=edge["confidence"] if edge else None,
            is_subject=bool(row["is_subject"]),
        )
        if edge is not None:
            node.also_under = sorted(
                e["parent"] for e in parents[model_id] if e["parent"] != edge["parent"]
            )
        for e in sorted(children[model_id], key=lambda e: e["model"]):
            if e["model"] not in path:
                node.children.append(build(e["model"], e, path | {e["model"]}))
        return node

    return [build(root, None, frozenset({root})) for root in roots]


def descendants_tree(driver: Driver, model: str, database: str | None = None) -> TreeNode:
    """The subtree of ``model``: the model and everything derived from it."""
    for root in family_tree(driver, model, database):
        for node in root.walk():
            if node.id == model:
                return node
    raise UsageError(f"model {model!r} is not in its own family tree (depth over 20 hops?)")
