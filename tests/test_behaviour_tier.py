"""The classifier zoo (``zoo build --classifiers``) and the opt-in behaviour tier of ``ingest``.

A tiny classifier zoo (a CNN root, its full fine-tune, its int8 copy, a distilled student and an
independent model, really trained) is ingested into a real Neo4j three times: without the tier,
with ``--behaviour``, and again (``--full``) without it. The tier must put closeness and
determination on the weight edges, find the distilled student (relation distill, source
behaviour) that the weights cannot see, link no independent model, and leave no trace when off.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lineage_index import api
from lineage_index.behaviour.tier import BehaviourOptions, weight_components
from lineage_index.indexer.sketch.store import SketchStore
from lineage_index.records import Edge
from lineage_index.zoo.classifiers import plan_classifiers, realise

ROOT = "visionlab/shapes-cnn"
FT = "acme-ai/shapes-cnn-finetuned"
INT8 = "QuantFactory/shapes-cnn-int8"
STUDENT = "TinyStudents/shapes-cnn-distilled"
INDEPENDENT = "indie-ml/shapes-cnn-scratch"


@pytest.fixture(scope="module")
def clf_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny classifier zoo, built through the CLI (``zoo build OUT --classifiers``)."""
    from typer.testing import CliRunner

    from lineage_index.cli.app import app

    out = tmp_path_factory.mktemp("clf") / "zoo"
    res = CliRunner().invoke(app, ["zoo", "build", str(out), "--classifiers", "--size", "tiny", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "5 classifiers" in res.output
    return out


@pytest.fixture(scope="module")
def tier_options(tmp_path_factory: pytest.TempPathFactory) -> BehaviourOptions:
    """Small calibration (2 + 2 auxiliary models) and a pair cache shared by this module's tests."""
    return BehaviourOptions(n_aux=2, aux_steps=150, cache_dir=tmp_path_factory.mktemp("tier-cache"))


def test_classifier_zoo_is_hub_layout_with_truth(clf_zoo: Path) -> None:
    truth = json.loads((clf_zoo / "truth.json").read_text())
    assert set(truth["models"]) == {ROOT, FT, INT8, STUDENT, INDEPENDENT}
    assert {(e["child"], e["parent"], e["relation"]) for e in truth["edges"]} == {
        (FT, ROOT, "finetune"), (INT8, ROOT, "quantized"), (STUDENT, ROOT, "distill")}
    assert truth["models"][STUDENT]["weight_root"] == STUDENT and truth["models"][STUDENT]["root"] == ROOT
    assert truth["models"][INDEPENDENT]["group"] == "independent"
    for model in truth["models"]:
        repo = clf_zoo / model
        assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in repo.iterdir()}
        assert (repo / "README.md").read_text().startswith("---\n")
        assert "lineage_behaviour" in json.loads((repo / "config.json").read_text())
    from safetensors import safe_open

    with safe_open(str(clf_zoo / INT8 / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("head.weight").dtype == torch.int8 and "head.SCB" in keys
    assert json.loads((clf_zoo / INT8 / "config.json").read_text())["quantization_config"]["load_in_8bit"]


def test_classifier_plan_and_training_are_deterministic_per_seed() -> None:
    a, b, c = plan_classifiers("tiny", 0), plan_classifiers("tiny", 0), plan_classifiers("tiny", 1)
    assert [(s.id, s.seed, s.created_at, s.card) for s in a] == [(s.id, s.seed, s.created_at, s.card) for s in b]
    assert [s.seed for s in a] != [s.seed for s in c]
    root = a[0]
    root.steps = 5
    x, _ = realise(root, {})
    y, _ = realise(root, {})
    assert all(torch.equal(v, y.state()[k]) for k, v in x.state().items())


def test_weight_tier_links_derived_classifiers_only(clf_zoo: Path, tmp_path: Path) -> None:
    s = api.ingest(api.make_source(directory=clf_zoo), store=SketchStore(tmp_path / "store"))
    asserted = {(e.child, e.parent): e.relation for e in s.edges if e.source in ("recovered", "both")
                and not e.contradicted}
    assert asserted == {(FT, ROOT): "finetune", (INT8, ROOT): "quantized"}
    comp = weight_components([ROOT, FT, INT8, STUDENT, INDEPENDENT], s.edges)
    assert comp[FT] == comp[INT8] == comp[ROOT] and len({comp[ROOT], comp[STUDENT], comp[INDEPENDENT]}) == 3


def _snapshot(driver, database: str) -> dict[str, object]:
    """Every node and relationship with its properties (``updated_at`` left out)."""
    with driver.session(database=database) as s:
        nodes = s.run("MATCH (n) RETURN labels(n) AS l, properties(n) AS p").data()
        rels = s.run("MATCH (a)-[r]->(b) RETURN a.id AS a, type(r) AS t, b.id AS b, properties(r) AS p").data()
    strip = lambda p: {k: v for k, v in p.items() if k != "updated_at"}  # noqa: E731
    return {"nodes": sorted((sorted(n["l"]), sorted(strip(n["p"]).items(), key=str)) for n in nodes),
            "rels": sorted((r["a"], r["t"], r["b"], sorted(strip(r["p"]).items(), key=str)) for r in rels)}


@pytest.mark.slow
@pytest.mark.neo4j
def test_ingest_behaviour_tier_writes_closeness_and_distill_edges_only_when_on(
        clf_zoo: Path, tier_options: BehaviourOptions, tmp_path: Path, neo4j_server, clean_graph) -> None:
    from lineage_index.schema.connection import Connection
    from lineage_index.schema.writer import GraphWriter

    conn = Connection(uri=neo4j_server.uri, user=neo4j_server.user, database=neo4j_server.database,
                      managed=False, password=neo4j_server.password)
    writer = GraphWriter(clean_graph, conn.database)
    store = SketchStore(tmp_path / "store")
    source = api.make_source(directory=clf_zoo)

    plain = api.ingest(source, store=store, conn=conn)
    assert plain.behaviour is None
    before = _snapshot(clean_graph, conn.database)
    assert not any(k.startswith("behaviour_") for r in before["rels"] for k, _ in r[3])
    assert {e.source for e in writer.read_edges()} <= {"recovered", "both", "declared"}

    on = api.ingest(source, store=store, conn=conn, behaviour=tier_options)
    assert on.behaviour is not None and on.behaviour.distill_edges == 1
    edges: dict[tuple[str, str], Edge] = {(e.child, e.parent): e for e in writer.read_edges()}
    for child in (FT, INT8):  # weight edges carry closeness and the barrier, calibrated for the parent
        e = edges[(child, ROOT)]
        assert e.source in ("recovered", "both") and e.behaviour is not None
        b = e.behaviour
        assert 0.0 <= b.closeness <= 1.0 and b.verdict == "lineage" and b.closeness >= b.threshold
        assert b.probes > 0 and 0.0 <= b.match_rate <= 1.0 and b.distance_diff >= 0.0
        assert b.basin == "same basin" and b.loss_barrier is not None and b.loss_barrier < b.barrier_threshold
    props = writer.edge_properties(FT, ROOT)
    assert props is not None and props["behaviour_verdict"] == "lineage" and "behaviour_closeness" in props
    kd = edges[(STUDENT, ROOT)]  # the distilled student: found by behaviour alone
    assert (kd.relation, kd.source, kd.contradicted) == ("distill", "behaviour", False)
    assert kd.behaviour is not None and kd.behaviour.closeness >= kd.behaviour.threshold
    assert kd.behaviour.reverse_closeness is not None and kd.behaviour.basin == "different basins"
    b = kd.behaviour  # a behaviour-only distillation needs the soft-label test in both directions
    assert b.soft_agreement is not None and b.soft_agreement >= b.soft_threshold, b  # type: ignore[operator]
    assert b.reverse_soft_agreement is not None and b.reverse_soft_agreement >= b.reverse_soft_threshold, b  # type: ignore[operator]
    assert writer.edge_properties(STUDENT, ROOT)["behaviour_soft_threshold"] is not None  # type: ignore[index]
    assert [k for k, e in edges.items() if e.source == "behaviour"] == [(STUDENT, ROOT)]
    assert not [k for k in edges if INDEPENDENT in k]  # the independent model stays unlinked

    off = api.ingest(source, store=store, conn=conn, full=True)  # the tier off again: the weight-only graph
    assert off.behaviour is None
    assert _snapshot(clean_graph, conn.database) == before


@pytest.mark.slow
def test_without_upload_times_the_teacher_is_the_model_tracking_the_other_better(
        clf_zoo: Path, tier_options: BehaviourOptions, tmp_path: Path) -> None:
    from dataclasses import replace

    from lineage_index.behaviour.tier import run_tier
    from lineage_index.indexer.pipeline import recover, sketch_all

    source = api.make_source(directory=clf_zoo)
    records, report = sketch_all(source.iter_records(), source.open_reader, SketchStore(tmp_path / "store"))
    weight = recover(records, report.sketches)
    undated = {m: replace(r, created_at=None) for m, r in records.items()}
    result = run_tier(undated, weight.edges, tier_options)
    kd = [e for e in result.edges if e.source == "behaviour"]
    assert [(e.child, e.parent, e.relation) for e in kd] == [(STUDENT, ROOT, "distill")]
    assert "tracks the other's boundary better" in kd[0].evidence
    b = kd[0].behaviour
    assert b is not None and b.reverse_closeness is not None and b.reverse_threshold is not None
    assert b.reverse_closeness - b.reverse_threshold > b.closeness - b.threshold  # the rule, on the record
    again = run_tier(undated, weight.edges, tier_options)  # a second run measures nothing again
    assert again.cached > 0 and not again.pair_seconds and again.edges == result.edges
