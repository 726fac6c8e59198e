"""Every shipped Cypher query on a really trained, ingested zoo, checked against its truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lineage_index import api
from lineage_index.indexer.sketch.store import SketchStore
from lineage_index.queries.runner import list_queries, run_query
from lineage_index.schema.connection import Connection

pytestmark = [pytest.mark.neo4j, pytest.mark.slow]


@pytest.fixture(scope="module")
def graph(tiny_zoo: Path, neo4j_server, neo4j_driver, tmp_path_factory: pytest.TempPathFactory):
    with neo4j_driver.session(database=neo4j_server.database) as s:
        s.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()
    conn = Connection(uri=neo4j_server.uri, user=neo4j_server.user, database=neo4j_server.database,
                      managed=False, password=neo4j_server.password)
    summary = api.ingest(api.make_source(directory=tiny_zoo), store=SketchStore(tmp_path_factory.mktemp("s")),
                         conn=conn)
    truth = json.loads((tiny_zoo / "truth.json").read_text())
    return neo4j_driver, neo4j_server.database, truth, summary


def _q(graph, name: str, **params):
    driver, db, _, _ = graph
    return run_query(driver, name, params, db).rows


def _true_parents(truth: dict) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for e in truth["edges"]:
        if e["relation"] != "distill":
            out.setdefault(e["child"], set()).add(e["parent"])
    return out


def _ancestors(truth: dict, model: str) -> set[str]:
    parents, seen, todo = _true_parents(truth), set(), [model]
    while todo:
        for p in parents.get(todo.pop(), ()):
            if p not in seen:
                seen.add(p)
                todo.append(p)
    return seen


def _deepest(truth: dict) -> str:
    return max(truth["models"], key=lambda m: (len(_ancestors(truth, m)), m))


def test_provenance_lists_the_true_ancestors(graph) -> None:
    truth = graph[2]
    model = _deepest(truth)
    rows = _q(graph, "provenance", model=model)
    recovered = {r["ancestor"] for r in rows if r["source"] in ("recovered", "both")}
    assert recovered == _ancestors(truth, model) and len(recovered) >= 2


def test_descendants_of_a_root_are_its_true_tree(graph) -> None:
    truth = graph[2]
    root = _deepest(truth)
    while _true_parents(truth).get(root):
        root = sorted(_true_parents(truth)[root])[0]
    tree = {m for m in truth["models"] if root in _ancestors(truth, m)}
    rows = _q(graph, "descendants", model=root)
    assert {r["descendant"] for r in rows if r["source"] in ("recovered", "both")} == tree


def test_family_has_one_root_and_contains_the_subject(graph) -> None:
    truth = graph[2]
    model = _deepest(truth)
    rows = _q(graph, "family", model=model)
    members = {r["model"] for r in rows}
    assert model in members and _ancestors(truth, model) <= members
    assert any(r["is_subject"] for r in rows if r["model"] == model)


def test_foundation_reach_counts_descendants_per_root(graph) -> None:
    truth = graph[2]
    rows = {r["root"]: r for r in _q(graph, "foundation_reach")}
    for root, row in rows.items():
        if root in truth["models"] and not _true_parents(truth).get(root):
            tree = {m for m in truth["models"] if root in _ancestors(truth, m)}
            assert row["descendants"] >= len(tree)


def test_contradicted_declarations_are_the_flagged_edges(graph) -> None:
    summary = graph[3]
    rows = _q(graph, "contradicted_declarations")
    assert {(r["child"], r["declared_parent"]) for r in rows} == {
        (e.child, e.parent) for e in summary.edges if e.contradicted}
    assert rows


def test_declarations_give_every_card_claim_its_verdict_and_only_lineage_is_derived_from(graph) -> None:
    summary = graph[3]
    rows = _q(graph, "declarations")
    declared = {(e.child, e.parent): e for e in summary.edges if e.source in ("declared", "both")}
    assert {(r["child"], r["declared_parent"]) for r in rows} == set(declared)
    for r in rows:
        e = declared[(r["child"], r["declared_parent"])]
        assert r["lineage"] == e.is_lineage
        assert r["verdict"] == ("supported" if e.source == "both" else e.verdict or "unverified")
    assert {r["verdict"] for r in rows} >= {"supported", "imprecise"}
    from lineage_index.schema.writer import GraphWriter

    exported = {(e.child, e.parent) for e in GraphWriter(graph[0], graph[1]).read_edges(lineage_only=True)}
    assert not exported & {k for k, e in declared.items() if not e.is_lineage}


def test_undeclared_lineage_is_recovered_but_not_declared(graph) -> None:
    truth = graph[2]
    rows = _q(graph, "undeclared_lineage", min_confidence=0.0)
    assert rows
    for r in rows:
        declared = truth["models"][r["child"]]["declared_base_model"] or []
        declared = [declared] if isinstance(declared, str) else declared
        assert r["parent"] not in declared


def test_licence_queries_report_the_planted_copies_and_conflicts(graph) -> None:
    truth = graph[2]
    planted = {(c["child"], c["parent"]) for c in truth["conflicts"] if c["verdict"] == "conflict"}
    conflicts = {(r["child"], r["parent"]) for r in _q(graph, "license_conflicts", adapter_leniency=False)
                 if r.get("parent")}
    assert conflicts == planted
    relicensed = {(r["child"], r["parent"]) for r in _q(graph, "relicensed_copies")}
    copies = {(c["child"], c["parent"]) for c in truth["conflicts"] if c["relation"] in ("copy", "quantized")}
    assert copies and copies <= relicensed
    checked = _q(graph, "license_check", model=None, adapter_leniency=False)
    assert {(r["child"], r["parent"]) for r in checked if r["code"] == "✗"} >= planted
    assert not (conflicts & {(r["child"], r["parent"]) for r in _q(graph, "license_warnings",
                                                                   adapter_leniency=False)})
    summary = _q(graph, "license_summary")
    assert sum(r["models"] for r in summary) >= len(truth["models"])
    llama = _q(graph, "derived_from_license_family", family="llama")
    assert llama and all(r["ancestor_license"].startswith("llama") for r in llama)


def test_lineage_nodes_feed_the_bom(graph) -> None:
    truth = graph[2]
    model = _deepest(truth)
    ids = {r["id"] for r in _q(graph, "lineage_nodes", model=model)}
    assert {model} | _ancestors(truth, model) <= ids


def test_every_shipped_query_is_exercised_here() -> None:
    text = Path(__file__).read_text()
    assert all(f'"{q}"' in text for q in (q.name for q in list_queries()))
