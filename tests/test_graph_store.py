"""Graph store behaviour against a real Neo4j: schema, idempotent writes, in-place updates,
re-ingest removing stale edges, and hostile strings that must stay data, never Cypher."""

from __future__ import annotations

import pytest
from neo4j import Driver
from neo4j.exceptions import ConstraintError

from lineage_index.records import RELATIONS, Edge
from lineage_index.schema import graph
from lineage_index.schema.writer import GraphWriter

pytestmark = pytest.mark.neo4j


def _chain_edges(n: int, org: str = "acme") -> list[Edge]:
    """n edges: model i+1 derives from model i // 2 (a binary-ish tree)."""
    return [
        Edge(
            child=f"{org}/m{i + 1}",
            parent=f"{org}/m{i // 2}",
            relation=RELATIONS[i % len(RELATIONS)],
            source=("declared", "recovered", "both")[i % 3],
            confidence=0.5 + (i % 50) / 100,
            closeness=None if i % 7 == 0 else (i % 100) / 100,
            evidence=f"rel-l2 {i}",
        )
        for i in range(n)
    ]


@pytest.fixture()
def writer(clean_graph: Driver, neo4j_database: str) -> GraphWriter:
    graph.ensure_schema(clean_graph, neo4j_database)
    return GraphWriter(clean_graph, neo4j_database)


def test_constraints_exist_after_ensure_schema_and_a_second_run_is_harmless(
    clean_graph: Driver, neo4j_database: str
) -> None:
    graph.ensure_schema(clean_graph, neo4j_database)
    graph.ensure_schema(clean_graph, neo4j_database)
    present = graph.existing_schema(clean_graph, neo4j_database)
    assert set(graph.CONSTRAINT_NAMES) <= present["constraints"]
    assert set(graph.INDEX_NAMES) <= present["indexes"]
    clean_graph.execute_query("CREATE (:Model {id: 'dup/x'})", database_=neo4j_database)
    with pytest.raises(ConstraintError):
        clean_graph.execute_query("CREATE (:Model {id: 'dup/x'})", database_=neo4j_database)


def test_writing_10k_edges_twice_leaves_node_and_edge_counts_unchanged(
    writer: GraphWriter,
) -> None:
    edges = _chain_edges(10_000)
    writer.upsert_models({"id": f"acme/m{i}", "props": {"license": "mit"}} for i in range(10_001))
    writer.upsert_edges(edges)
    first = writer.counts()
    stamp = writer.edge_properties("acme/m5000", "acme/m2499")
    writer.upsert_edges(edges)
    writer.upsert_models({"id": f"acme/m{i}", "props": {"license": "mit"}} for i in range(10_001))
    second = writer.counts()

    assert first == second
    assert first["models"] == 10_001
    assert first["derived_from"] == 10_000
    assert first["organizations"] == 1 and first["published_by"] == 10_001
    assert first["licenses"] == 1 and first["licensed_under"] == 10_001
    assert writer.edge_properties("acme/m5000", "acme/m2499") == stamp  # updated_at kept
    assert writer.read_edges() == sorted(edges, key=lambda e: (e.child, e.parent))


def test_edges_to_unknown_models_create_stub_models_with_their_organization(
    writer: GraphWriter,
) -> None:
    writer.upsert_edges([Edge("newco/child", "base/root", "finetune", "recovered", 0.9)])
    counts = writer.counts()
    assert counts["models"] == 2 and counts["organizations"] == 2
    assert counts["published_by"] == 2 and counts["derived_from"] == 1


def test_model_properties_update_in_place(writer: GraphWriter, neo4j_database: str) -> None:
    writer.upsert_models([{"id": "acme/llm", "props": {"license": "mit", "downloads": 1}}])
    (before,), _, _ = writer.driver.execute_query(
        "MATCH (m:Model {id: 'acme/llm'}) RETURN elementId(m) AS eid", database_=neo4j_database
    )
    props_before = writer.model_properties("acme/llm")
    writer.upsert_models([{"id": "acme/llm", "props": {"license": "mit", "downloads": 1}}])
    assert writer.model_properties("acme/llm") == props_before  # same data: nothing changes

    writer.upsert_models(
        [{"id": "acme/llm", "props": {"license": "apache-2.0", "downloads": 2, "tags": ["a"]}}]
    )
    (after,), _, _ = writer.driver.execute_query(
        "MATCH (m:Model {id: 'acme/llm'})-[:LICENSED_UNDER]->(l:License) "
        "RETURN elementId(m) AS eid",
        database_=neo4j_database,
    )
    props = writer.model_properties("acme/llm")
    assert props is not None and props_before is not None
    assert after["eid"] == before["eid"]
    assert props["downloads"] == 2 and props["license"] == "apache-2.0" and props["tags"] == ["a"]
    assert props["updated_at"] >= props_before["updated_at"]
    counts = writer.counts()
    assert counts["models"] == 1 and counts["licensed_under"] == 1  # old licence link replaced


def test_edge_properties_update_in_place_and_keep_one_edge_per_pair(writer: GraphWriter) -> None:
    edge = Edge("acme/ft", "acme/base", "finetune", "declared", 0.6, 0.8, "declared only")
    writer.upsert_edges([edge])
    newer = Edge("acme/ft", "acme/base", "adapter", "both", 0.95, None, "weights agree")
    writer.upsert_edges([newer])
    assert writer.read_edges() == [newer]
    assert writer.counts()["derived_from"] == 1


def test_a_declaration_the_weights_do_not_support_is_not_lineage_and_moves_when_judged_again(
    writer: GraphWriter,
) -> None:
    claim = Edge("acme/ft", "acme/base", "finetune", "declared", 0.5, None, "supported: near", verdict="supported")
    writer.upsert_edges([claim])
    assert writer.counts()["derived_from"] == 1 and writer.counts()["declares_base"] == 0
    for verdict, bad in (("imprecise", False), ("contradicted", True)):
        judged = Edge("acme/ft", "acme/base", "finetune", "declared", 0.1, None, f"{verdict}: x",
                      contradicted=bad, verdict=verdict)
        writer.upsert_edges([judged])
        counts = writer.counts()
        assert (counts["derived_from"], counts["declares_base"]) == (0, 1), verdict  # one edge, moved
        assert writer.read_edges() == [judged] and writer.read_edges(lineage_only=True) == []
    writer.upsert_edges([claim])  # judged supported again: back to lineage
    assert writer.read_edges(lineage_only=True) == [claim] and writer.counts()["declares_base"] == 0
    deleted, _ = writer.replace_edges_for_children(["acme/ft"], [])
    assert deleted == 1 and writer.read_edges() == []


def test_replace_edges_for_children_removes_stale_edges(writer: GraphWriter) -> None:
    old = [
        Edge("acme/merge", "acme/a", "merge", "recovered", 0.9),
        Edge("acme/merge", "acme/b", "merge", "recovered", 0.9),
        Edge("acme/other", "acme/a", "finetune", "recovered", 0.9),
    ]
    writer.upsert_edges(old)
    new = [Edge("acme/merge", "acme/c", "merge", "recovered", 0.8), old[0]]
    deleted, written = writer.replace_edges_for_children(["acme/merge", "acme/orphan"], new)
    assert (deleted, written) == (1, 2)
    pairs = {(e.child, e.parent) for e in writer.read_edges()}
    assert pairs == {("acme/merge", "acme/a"), ("acme/merge", "acme/c"), ("acme/other", "acme/a")}


HOSTILE = [
    "x'}) DETACH DELETE n //",
    'x"}) MATCH (n) DETACH DELETE n RETURN 1 //',
    "`Model`) DETACH DELETE n; //",
    "$rows ${x} {{id}} \\' \\\" \\u0027",
    "ünïcödé/模型-🚀",
    "line\nbreak\ttab\0nul",
]


def _key(text: str) -> str:
    """Neo4j token names (property keys) cannot hold NUL; values can."""
    return text.replace("\0", "")


def test_hostile_strings_in_parameters_are_harmless_and_stored_verbatim(
    writer: GraphWriter, neo4j_database: str
) -> None:
    writer.upsert_models([{"id": "sentinel/keep", "props": {"note": "must survive"}}])
    models = [
        {"id": f"{h}/{i}", "props": {"card": h, "license": h, _key(h): h}}
        for i, h in enumerate(HOSTILE)
    ]
    writer.upsert_models(models)
    edges = [
        Edge(
            child=m["id"],  # type: ignore[arg-type]
            parent="sentinel/keep",
            relation=h,
            source="declared",
            confidence=0.5,
            evidence=h,
            recovered_parent=h,
        )
        for m, h in zip(models, HOSTILE, strict=True)
    ]
    writer.upsert_edges(edges)

    assert writer.model_properties("sentinel/keep") is not None
    for model, h in zip(models, HOSTILE, strict=True):
        props = writer.model_properties(model["id"])  # type: ignore[arg-type]
        assert props is not None
        assert props["id"] == model["id"] and props["card"] == h and props[_key(h)] == h
    assert writer.read_edges() == sorted(edges, key=lambda e: (e.child, e.parent))
    counts = writer.counts()
    assert counts["models"] == len(HOSTILE) + 1
    assert counts["licenses"] == len(HOSTILE) and counts["derived_from"] == len(HOSTILE)
    (row,), _, _ = writer.driver.execute_query(
        "MATCH (l:License) RETURN collect(l.id) AS ids", database_=neo4j_database
    )
    assert sorted(row["ids"]) == sorted(HOSTILE)


def test_nested_property_values_are_rejected_before_writing(writer: GraphWriter) -> None:
    with pytest.raises(ValueError, match="primitive"):
        writer.upsert_models([{"id": "acme/bad", "props": {"config": {"nested": 1}}}])
    with pytest.raises(ValueError, match="NUL"):
        writer.upsert_models([{"id": "acme/bad", "props": {"a\0b": 1}}])
    assert writer.counts()["models"] == 0
