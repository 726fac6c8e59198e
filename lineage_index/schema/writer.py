"""Idempotent batched writes of the lineage graph into Neo4j.

``GraphWriter`` upserts ``Model`` nodes (with their ``Organization`` and ``License``),
``DERIVED_FROM`` edges (lineage) and ``DECLARES_BASE`` edges (card claims the weights do not
support as the direct parent: ``Edge.is_lineage``) in parameterised ``UNWIND $rows`` batches, one managed transaction per
batch (``execute_write``, so transient errors are retried). Endpoints are looked up by id under
the uniqueness constraint; a missing endpoint is created as a stub ``Model`` first. Writing the
same data twice changes nothing: ``updated_at`` (ISO 8601 UTC string) is set only when a node's
or edge's properties really change.

This module must not build Cypher from its input (every value is a parameter) and must not
create schema: call ``graph.ensure_schema`` first, or MERGE by id degrades to label scans.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from itertools import islice
from typing import Any, TypeVar

from neo4j import Driver, ManagedTransaction

from lineage_index import config
from lineage_index.records import BehaviourEvidence, Edge

T = TypeVar("T")
Primitive = str | int | float | bool
_PRIMITIVES = (str, int, float, bool)

# A key counts as changed unless old and new are equal or both null.
_CHANGED = "NOT (x[k] = row.props[k]) OR (x[k] IS NULL) <> (row.props[k] IS NULL)"

# Nodes are written in two steps: _ENSURE_MODELS creates the Models that do not exist yet
# (with their Organization); for the common case, a node that exists, it is a read-only
# index seek. _SET_MODEL_PROPS then updates properties by MATCH under the constraint.
_ENSURE_MODELS = """
UNWIND $rows AS row
OPTIONAL MATCH (known:Model {id: row.id})
WITH row, known
WHERE known IS NULL
   OR (row.org IS NOT NULL AND NOT EXISTS { (known)-[:PUBLISHED_BY]->() })
MERGE (m:Model {id: row.id})
ON CREATE SET m.updated_at = $now
WITH m, row WHERE row.org IS NOT NULL
MERGE (o:Organization {id: row.org})
MERGE (m)-[:PUBLISHED_BY]->(o)
"""

# FOREACH (not WITH ... WHERE) keeps the planner from adding an Eager barrier for the
# read-then-write of the same properties, which would halve the write rate.
_SET_MODEL_PROPS = f"""
UNWIND $rows AS row
MATCH (x:Model {{id: row.id}})
FOREACH (_ IN CASE WHEN x.updated_at IS NULL OR any(k IN keys(row.props) WHERE {_CHANGED})
                   THEN [1] ELSE [] END |
  SET x += row.props, x.updated_at = $now)
"""

# Only models whose licence link differs from row.license are touched.
_LINK_LICENSES = """
UNWIND $rows AS row
MATCH (m:Model {id: row.id})
WITH m, row
WHERE CASE WHEN row.license IS NULL THEN EXISTS { (m)-[:LICENSED_UNDER]->() }
      ELSE COUNT { (m)-[:LICENSED_UNDER]->() } <> 1
           OR NOT EXISTS { (m)-[:LICENSED_UNDER]->(:License {id: row.license}) } END
OPTIONAL MATCH (m)-[old:LICENSED_UNDER]->()
DELETE old
WITH DISTINCT m, row WHERE row.license IS NOT NULL
MERGE (l:License {id: row.license})
MERGE (m)-[:LICENSED_UNDER]->(l)
"""

_UPSERT_LICENSES = f"""
UNWIND $rows AS row
MERGE (x:License {{id: row.id}})
FOREACH (_ IN CASE WHEN x.updated_at IS NULL OR any(k IN keys(row.props) WHERE {_CHANGED})
                   THEN [1] ELSE [] END |
  SET x += row.props, x.updated_at = $now)
"""

# Edge rows are lists [child, parent, relation, source, confidence, closeness, evidence,
# contradicted, recovered_parent, behaviour_*...] (cheaper to send than maps); see upsert_edges.
# The behaviour_* columns hold the opt-in behaviour tier's measurements (records.BehaviourEvidence);
# they are null (absent) on every edge of a run without the tier.
BEHAVIOUR_COLUMNS = {  # property -> BehaviourEvidence field
    "behaviour_closeness": "closeness", "behaviour_match_rate": "match_rate",
    "behaviour_distance_diff": "distance_diff", "behaviour_probes": "probes",
    "behaviour_threshold": "threshold", "behaviour_verdict": "verdict", "behaviour_indirect": "indirect",
    "behaviour_reverse_closeness": "reverse_closeness", "behaviour_reverse_threshold": "reverse_threshold",
    "behaviour_loss_barrier": "loss_barrier", "behaviour_error_barrier": "error_barrier",
    "behaviour_barrier_threshold": "barrier_threshold", "behaviour_basin": "basin",
    "behaviour_barrier_statistic": "barrier_statistic", "behaviour_ensemble_barrier": "ensemble_barrier",
    "behaviour_soft_agreement": "soft_agreement", "behaviour_soft_threshold": "soft_threshold",
    "behaviour_reverse_soft_agreement": "reverse_soft_agreement",
    "behaviour_reverse_soft_threshold": "reverse_soft_threshold",
}
_EDGE_COLUMNS = ("relation", "source", "confidence", "closeness", "evidence", "contradicted",
                 "recovered_parent", "verdict", *BEHAVIOUR_COLUMNS)  # fmt: skip
_EDGE_CHANGED = " OR ".join(
    f"NOT coalesce(x.{c} = row[{i}], x.{c} IS NULL AND row[{i}] IS NULL)"
    for i, c in enumerate(_EDGE_COLUMNS, start=2)
)
_EDGE_SET = ", ".join(f"x.{c} = row[{i}]" for i, c in enumerate(_EDGE_COLUMNS, start=2))
# One (child, parent) pair holds one of the two types: lineage (DERIVED_FROM) or a card's
# claim the weights do not support as the direct parent (DECLARES_BASE); writing one removes
# the other, so a re-ingest that changes a verdict moves the edge.
_UPSERT_EDGES = {
    rel: f"""
UNWIND $rows AS row
MATCH (c:Model {{id: row[0]}})
MATCH (p:Model {{id: row[1]}})
OPTIONAL MATCH (c)-[o:{other}]->(p)
DELETE o
MERGE (c)-[x:{rel}]->(p)
FOREACH (_ IN CASE WHEN x.updated_at IS NULL OR {_EDGE_CHANGED} THEN [1] ELSE [] END |
  SET {_EDGE_SET}, x.updated_at = $now)
"""
    for rel, other in (("DERIVED_FROM", "DECLARES_BASE"), ("DECLARES_BASE", "DERIVED_FROM"))
}

_DELETE_STALE_EDGES = """
UNWIND $rows AS row
MATCH (c:Model {id: row.child})-[r:DERIVED_FROM|DECLARES_BASE]->(p:Model)
WHERE NOT p.id IN row.parents
DELETE r
RETURN count(r) AS deleted
"""


_UPSERT_LICENSE_RULES = """
UNWIND $rows AS row
MERGE (a:License {id: row.src})
MERGE (b:License {id: row.dst})
MERGE (a)-[:ALLOWS_DERIVATIVE_UNDER]->(b)
"""

_READ_EDGES = """
MATCH (c:Model)-[r:DERIVED_FROM|DECLARES_BASE]->(p:Model)
WHERE ($ids IS NULL OR c.id IN $ids) AND ($lineage = false OR type(r) = 'DERIVED_FROM')
RETURN c.id AS child, p.id AS parent, properties(r) AS props
ORDER BY child, parent
"""

_COUNTS = {
    "models": "MATCH (n:Model) RETURN count(n) AS n",
    "licenses": "MATCH (n:License) RETURN count(n) AS n",
    "organizations": "MATCH (n:Organization) RETURN count(n) AS n",
    "derived_from": "MATCH ()-[r:DERIVED_FROM]->() RETURN count(r) AS n",
    "declares_base": "MATCH ()-[r:DECLARES_BASE]->() RETURN count(r) AS n",
    "licensed_under": "MATCH ()-[r:LICENSED_UNDER]->() RETURN count(r) AS n",
    "published_by": "MATCH ()-[r:PUBLISHED_BY]->() RETURN count(r) AS n",
    "allows_derivative_under": "MATCH ()-[r:ALLOWS_DERIVATIVE_UNDER]->() RETURN count(r) AS n",
}


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def org_of(model_id: str) -> str | None:
    """The organization part of ``org/name`` ids; None for ids without a slash."""
    org, sep, _ = model_id.partition("/")
    return org if sep and org else None


def _check_props(owner: str, props: Mapping[str, Any]) -> dict[str, Any]:
    """Props must be flat: primitives, None (removes the property) or lists of primitives."""
    out: dict[str, Any] = {}
    for key, value in props.items():
        if not isinstance(key, str) or not key or "\0" in key:
            raise ValueError(
                f"{owner}: property names must be non-empty strings without NUL, got {key!r}"
            )
        if key == "id":
            continue  # the key is not a settable property
        if isinstance(value, tuple):
            value = list(value)
        if value is None or isinstance(value, _PRIMITIVES):
            out[key] = value
        elif isinstance(value, list) and all(isinstance(v, _PRIMITIVES) for v in value):
            out[key] = value
        else:
            raise ValueError(
                f"{owner}: property {key!r} must be a primitive or a list of primitives, "
                f"got {type(value).__name__}"
            )
    return out


def edge_props(edge: Edge) -> dict[str, Any]:
    """The DERIVED_FROM properties of an Edge (None values remove the property)."""
    return {
        "relation": edge.relation,
        "source": edge.source,
        "confidence": float(edge.confidence),
        "closeness": None if edge.closeness is None else float(edge.closeness),
        "evidence": edge.evidence,
        "contradicted": bool(edge.contradicted),
        "recovered_parent": edge.recovered_parent,
        "verdict": edge.verdict or ("contradicted" if edge.contradicted else None),
        **{k: None if edge.behaviour is None else getattr(edge.behaviour, f) for k, f in BEHAVIOUR_COLUMNS.items()},
    }


def _edge_from(child: str, parent: str, props: Mapping[str, Any]) -> Edge:
    closeness = props.get("closeness")
    return Edge(
        child=child,
        parent=parent,
        relation=str(props.get("relation", "")),
        source=str(props.get("source", "")),
        confidence=float(props.get("confidence", 0.0)),
        closeness=None if closeness is None else float(closeness),
        evidence=str(props.get("evidence", "")),
        contradicted=bool(props.get("contradicted", False)),
        recovered_parent=props.get("recovered_parent"),
        behaviour=_behaviour_from(props),
        verdict=props.get("verdict"),
    )


def _behaviour_from(props: Mapping[str, Any]) -> BehaviourEvidence | None:
    if all(props.get(k) is None for k in BEHAVIOUR_COLUMNS):
        return None
    values = {f: props.get(k) for k, f in BEHAVIOUR_COLUMNS.items()}
    return BehaviourEvidence(**{**values, "indirect": bool(values["indirect"])})


class GraphWriter:
    """Batched, idempotent writer of the lineage graph (one database of one driver)."""

    def __init__(
        self, driver: Driver, database: str | None = None, batch_rows: int | None = None
    ) -> None:
        self.driver = driver
        self.database = database or config.DEFAULT_DATABASE
        self.batch_rows = batch_rows or config.WRITE_BATCH_ROWS

    def __repr__(self) -> str:
        return f"GraphWriter(database={self.database!r}, batch_rows={self.batch_rows})"

    # --- nodes --------------------------------------------------------------------------

    def upsert_models(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """MERGE Model nodes by id and SET their props; link Organization and License.

        Each row is ``{"id": "org/name", "props": {...}}``. A ``license`` prop (string)
        links ``LICENSED_UNDER`` to ``License {id}`` (replacing a previous licence link);
        ``license: None`` removes it. Returns the number of rows written.
        """
        written = 0
        for batch in _batches(rows, self.batch_rows):
            models: dict[str, dict[str, Any]] = {}
            for row in batch:
                model_id = row.get("id")
                if not isinstance(model_id, str) or not model_id:
                    raise ValueError(f"a model row needs a non-empty string id, got {model_id!r}")
                models.setdefault(model_id, {}).update(
                    _check_props(model_id, row.get("props") or {})
                )
            node_rows = [{"id": k, "org": org_of(k)} for k in models]
            prop_rows = [{"id": k, "props": v} for k, v in models.items()]
            license_rows = [
                {"id": k, "license": v["license"] if isinstance(v["license"], str) else None}
                for k, v in models.items()
                if "license" in v
            ]
            self._write(
                [
                    (_ENSURE_MODELS, node_rows),
                    (_SET_MODEL_PROPS, prop_rows),
                    (_LINK_LICENSES, license_rows),
                ]
            )
            written += len(batch)
        return written

    def upsert_licenses(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """MERGE License nodes ``{"id": spdx-or-name, "props": {...}}``; returns rows written."""
        written = 0
        for batch in _batches(rows, self.batch_rows):
            payload = [
                {"id": str(r["id"]), "props": _check_props(str(r["id"]), r.get("props") or {})}
                for r in batch
            ]
            self._write([(_UPSERT_LICENSES, payload)])
            written += len(batch)
        return written

    def upsert_license_rules(self, rules: Iterable[tuple[str, str]]) -> int:
        """MERGE ``(a:License)-[:ALLOWS_DERIVATIVE_UNDER]->(b:License)`` for each (a, b)."""
        written = 0
        for batch in _batches(rules, self.batch_rows):
            self._write([(_UPSERT_LICENSE_RULES, [{"src": a, "dst": b} for a, b in batch])])
            written += len(batch)
        return written

    # --- edges --------------------------------------------------------------------------

    def upsert_edges(self, edges: Iterable[Edge]) -> int:
        """Write ``(child)-[:DERIVED_FROM {...}]->(parent)``: one edge per (child, parent).

        MERGE on the pair, SET the properties (``updated_at`` only when they change).
        Endpoints not yet in the graph are created as stub Models (with their
        Organization). Within one batch a repeated pair keeps its last Edge.
        Returns the number of edges given.
        """
        written = 0
        for batch in _batches(edges, self.batch_rows):
            pairs: dict[tuple[str, str], tuple[bool, dict[str, Any]]] = {}
            for edge in batch:
                pairs[(edge.child, edge.parent)] = (edge.is_lineage, edge_props(edge))
            ids = {i for pair in pairs for i in pair}
            node_rows = [{"id": i, "org": org_of(i)} for i in sorted(ids)]
            rows: dict[str, list[list[Any]]] = {"DERIVED_FROM": [], "DECLARES_BASE": []}
            for (c, p), (lineage, v) in pairs.items():
                rows["DERIVED_FROM" if lineage else "DECLARES_BASE"].append([c, p, *(v[k] for k in _EDGE_COLUMNS)])
            self._write([(_ENSURE_MODELS, node_rows)]
                        + [(_UPSERT_EDGES[rel], r) for rel, r in rows.items() if r])
            written += len(batch)
        return written

    def replace_edges_for_children(
        self, child_ids: Iterable[str], edges: Iterable[Edge]
    ) -> tuple[int, int]:
        """Make ``edges`` the complete set of DERIVED_FROM edges of ``child_ids``.

        Edges of those children to parents not in ``edges`` are deleted (re-ingest removes
        stale edges), then ``edges`` are upserted. Children of ``edges`` count as listed.
        Each batch is atomic, the whole call is not. Returns (deleted, written).
        """
        edge_list = list(edges)
        parents: dict[str, list[str]] = {c: [] for c in child_ids}
        for edge in edge_list:
            parents.setdefault(edge.child, []).append(edge.parent)
        deleted = 0
        for batch in _batches(parents.items(), self.batch_rows):
            rows = [{"child": c, "parents": ps} for c, ps in batch]
            deleted += self._write_counting(_DELETE_STALE_EDGES, rows)
        return deleted, self.upsert_edges(edge_list)

    # --- reads --------------------------------------------------------------------------

    def read_edges(self, child_ids: Iterable[str] | None = None, lineage_only: bool = False) -> list[Edge]:
        """All DERIVED_FROM and DECLARES_BASE edges (or those of ``child_ids``; with
        ``lineage_only`` DERIVED_FROM alone), sorted by (child, parent)."""
        ids = None if child_ids is None else list(child_ids)
        records, _, _ = self.driver.execute_query(
            _READ_EDGES, ids=ids, lineage=lineage_only, database_=self.database, routing_="r"
        )
        return [_edge_from(r["child"], r["parent"], r["props"]) for r in records]

    def edge_properties(self, child: str, parent: str) -> dict[str, Any] | None:
        """All stored properties of one DERIVED_FROM edge (incl. updated_at), or None."""
        records, _, _ = self.driver.execute_query(
            "MATCH (:Model {id: $c})-[r:DERIVED_FROM|DECLARES_BASE]->(:Model {id: $p}) RETURN properties(r) AS p",
            c=child,
            p=parent,
            database_=self.database,
            routing_="r",
        )
        return dict(records[0]["p"]) if records else None

    def model_properties(self, model_id: str) -> dict[str, Any] | None:
        """All stored properties of one Model node (incl. id and updated_at), or None."""
        records, _, _ = self.driver.execute_query(
            "MATCH (m:Model {id: $id}) RETURN properties(m) AS p",
            id=model_id,
            database_=self.database,
            routing_="r",
        )
        return dict(records[0]["p"]) if records else None

    def model_state(self, model_ids: Iterable[str]) -> dict[str, tuple[Any, Any]]:
        """``id -> (sha, status)`` of those of ``model_ids`` that are Model nodes (incremental re-index)."""
        out: dict[str, tuple[Any, Any]] = {}
        for batch in _batches(model_ids, self.batch_rows):
            records, _, _ = self.driver.execute_query(
                "UNWIND $ids AS id MATCH (m:Model {id: id}) RETURN m.id AS id, m.sha AS sha, "
                "m.status AS status",
                ids=batch, database_=self.database, routing_="r",
            )
            out.update({r["id"]: (r["sha"], r["status"]) for r in records})
        return out

    def model_roots(self, model_ids: Iterable[str]) -> dict[str, str]:
        """``id -> root`` as stored, for those of ``model_ids`` that have one."""
        out: dict[str, str] = {}
        for batch in _batches(model_ids, self.batch_rows):
            records, _, _ = self.driver.execute_query(
                "UNWIND $ids AS id MATCH (m:Model {id: id}) WHERE m.root IS NOT NULL "
                "RETURN m.id AS id, m.root AS root",
                ids=batch, database_=self.database, routing_="r",
            )
            out.update({r["id"]: r["root"] for r in records})
        return out

    def counts(self) -> dict[str, int]:
        """Node and relationship counts by label / type (from Neo4j's count store)."""
        out: dict[str, int] = {}
        with self.driver.session(  # a type not yet written would raise a warning: mute it
            database=self.database, default_access_mode="READ", notifications_min_severity="OFF"
        ) as s:
            for name, query in _COUNTS.items():
                record = s.run(query).single()
                out[name] = int(record["n"]) if record else 0
        return out

    # --- transactions -----------------------------------------------------------------

    def _write(self, steps: Sequence[tuple[str, list[dict[str, Any]]]]) -> None:
        """Run the (query, rows) steps in one managed write transaction (retried if transient)."""
        now = _now()

        def work(tx: ManagedTransaction) -> None:
            for query, rows in steps:
                if rows:
                    tx.run(query, rows=rows, now=now).consume()

        with self.driver.session(database=self.database) as session:
            session.execute_write(work)

    def _write_counting(self, query: str, rows: list[dict[str, Any]]) -> int:
        def work(tx: ManagedTransaction) -> int:
            record = tx.run(query, rows=rows).single()
            return int(record[0]) if record else 0

        with self.driver.session(database=self.database) as session:
            return session.execute_write(work)
