"""Evaluation arithmetic on hand-made truths: every figure checked against a hand computation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lineage_index.cli.zoo_cmd import eval_command, load_pred_edges
from lineage_index.evaluation import (
    Truth,
    adjusted_rand_index,
    declared_baseline,
    score,
    scores_json,
    scores_table,
)
from lineage_index.records import Edge, ModelRecord

# family 1: A -> B -> C (quantized), A -> F, M = merge(B, F); family 2: D -> E (adapter);
# S is distilled from A (its weights are its own: a family of one).
TRUE_EDGES = [
    ("B", "A", "finetune"),
    ("C", "B", "quantized"),
    ("F", "A", "finetune"),
    ("M", "B", "merge"),
    ("M", "F", "merge"),
    ("E", "D", "adapter"),
    ("S", "A", "distill"),
]
SCORED = [e for e in TRUE_EDGES if e[2] != "distill"]


def _truth(declared: dict[str, dict] | None = None) -> dict:
    models = {m: {"license": "mit", "root": "D" if m in "DE" else "A"} for m in "ABCFMDES"}
    for m, extra in (declared or {}).items():
        models[m].update(extra)
    return {
        "models": models,
        "edges": [{"child": c, "parent": p, "relation": r} for c, p, r in TRUE_EDGES],
    }


def test_perfect_prediction_scores_one_everywhere() -> None:
    s = score(SCORED, _truth())
    assert (s.precision, s.recall, s.f1) == (1.0, 1.0, 1.0)
    assert s.direction_accuracy == 1.0 and s.relation_accuracy == 1.0
    assert s.merges_complete == 1.0 and s.merges_n == 1
    assert s.cross_tree_edges == 0 and s.ari == pytest.approx(1.0)
    assert (s.tp, s.fp, s.fn, s.n_true) == (6, 0, 0, 6)


def test_predicted_distill_edges_are_neither_hits_nor_misses() -> None:
    s = score([*SCORED, ("S", "A", "distill"), ("A", "S", "finetune")], _truth())
    assert (s.precision, s.recall, s.ari) == (1.0, 1.0, pytest.approx(1.0))
    assert s.n_distill_ignored == 2 and s.n_pred == 6


def test_reversed_edge_costs_precision_recall_and_direction() -> None:
    pred = [("A", "B", "finetune")] + SCORED[1:]
    s = score(pred, _truth())
    assert s.precision == pytest.approx(5 / 6) and s.recall == pytest.approx(5 / 6)
    assert s.direction_accuracy == pytest.approx(5 / 6) and s.direction_n == 6
    assert s.relation_accuracy == 1.0
    assert s.ari == pytest.approx(1.0)  # same clusters


def test_wrong_relation_only_lowers_relation_accuracy() -> None:
    pred = [(c, p, "finetune" if (c, p) == ("C", "B") else r) for c, p, r in SCORED]
    s = score(pred, _truth())
    assert s.f1 == 1.0 and s.direction_accuracy == 1.0
    assert s.relation_accuracy == pytest.approx(5 / 6)
    assert s.per_relation_recall["quantized"] == 1.0  # the pair was found ...
    assert s.per_relation_typed_recall["quantized"] == 0.0  # ... with the wrong type
    assert s.per_relation_typed_recall["merge"] == 1.0


def test_missing_merge_parent_makes_the_merge_incomplete() -> None:
    pred = [e for e in SCORED if e[:2] != ("M", "F")]
    s = score(pred, _truth())
    assert s.precision == 1.0 and s.recall == pytest.approx(5 / 6)
    assert s.merges_complete == 0.0


def test_cross_tree_edge_is_counted_and_breaks_clustering() -> None:
    s = score([*SCORED, ("E", "C", "finetune")], _truth())
    assert s.cross_tree_edges == 1
    assert s.precision == pytest.approx(6 / 7)
    # by hand: truth {ABCFM}{DE}{S} vs prediction {ABCFMDE}{S} over 8 models:
    # index = C(5,2)+C(2,2) = 11, rows = 11, cols = C(7,2) = 21, expected = 11*21/28 = 8.25,
    # max = (11+21)/2 = 16, ARI = (11-8.25)/(16-8.25)
    assert s.ari == pytest.approx(2.75 / 7.75)


def test_edge_to_a_model_outside_the_truth_is_a_false_positive() -> None:
    s = score([*SCORED, ("B", "elsewhere/model", "finetune")], _truth())
    assert s.n_out_of_scope == 1 and s.fp == 1 and s.precision == pytest.approx(6 / 7)
    assert s.ari == pytest.approx(1.0)


def test_empty_prediction() -> None:
    s = score([], _truth())
    assert (s.precision, s.recall, s.f1) == (0.0, 0.0, 0.0)
    assert s.direction_accuracy is None and s.relation_accuracy is None
    assert s.merges_complete == 0.0
    # every model alone vs three families: ARI 0 (nothing agrees beyond chance)
    assert s.ari == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2], 0.8 / 3.3),  # by hand: (2-1.2)/(4.5-1.2)
        ([0, 0, 1, 1], [0, 0, 1, 2], (1 - 1 / 3) / (1.5 - 1 / 3)),
        ([0, 0, 1, 1], [5, 5, 7, 7], 1.0),  # relabelled
        ([0, 1, 2, 3], [0, 1, 2, 3], 1.0),  # all singletons, identical
        ([0, 0, 0, 0], [1, 1, 1, 1], 1.0),  # one cluster, identical
        ([0, 1, 2, 3], [0, 0, 0, 0], 0.0),
    ],
)
def test_adjusted_rand_index_known_partitions(a: list[int], b: list[int], expected: float) -> None:
    assert adjusted_rand_index(a, b) == pytest.approx(expected)
    assert adjusted_rand_index(b, a) == pytest.approx(expected)


def test_scorer_accepts_records_mappings_and_tuples() -> None:
    as_edges = [Edge(c, p, r, source="recovered", confidence=0.9) for c, p, r in SCORED]
    as_dicts = [{"child": c, "parent": p, "relation": r} for c, p, r in SCORED]
    truth = Truth.load(_truth())
    assert score(as_edges, truth).f1 == score(as_dicts, truth).f1 == score(SCORED, truth).f1 == 1.0


def test_declared_baseline_from_truth_cards() -> None:
    truth = _truth(
        {
            "B": {"declared_base_model": "A"},
            "C": {"declared_base_model": "A", "declared_base_model_relation": "quantized"},
            "M": {"declared_base_model": ["B", "F"]},
            "F": {"declared_base_model": "elsewhere/foundation"},
            "S": {"declared_base_model": "A"},
        }
    )
    edges = declared_baseline(truth)
    got = {(e.child, e.parent, e.relation) for e in edges}
    assert got == {
        ("B", "A", "finetune"),
        ("C", "A", "quantized"),
        ("M", "B", "merge"),
        ("M", "F", "merge"),
        ("F", "elsewhere/foundation", "finetune"),
        ("S", "A", "finetune"),
    }
    assert all(e.source == "declared" for e in edges)
    s = score(edges, truth, name="declared")
    # scored: B-A, C-A, M-B, M-F, F-elsewhere (S-A is a distill pair: ignored)
    assert (s.tp, s.n_pred, s.n_out_of_scope, s.n_distill_ignored) == (3, 5, 1, 1)
    assert s.recall == pytest.approx(3 / 6) and s.merges_complete == 1.0


def test_declared_baseline_from_model_records() -> None:
    records = [
        ModelRecord(id="B", source="dir", base_models=("A",), base_model_relation="finetune"),
        ModelRecord(id="E", source="dir", base_models=("D",), base_model_relation="adapter"),
        ModelRecord(id="A", source="dir"),
    ]
    got = {(e.child, e.parent, e.relation) for e in declared_baseline(records)}
    assert got == {("B", "A", "finetune"), ("E", "D", "adapter")}


def test_prediction_files_csv_and_json(tmp_path: Path) -> None:
    csv_path = tmp_path / "pred.csv"
    csv_path.write_text(
        "child,parent,relation,source,confidence,closeness\n"
        "B,A,finetune,recovered,0.9,0.8\nC,B,quantized,both,,\n"
    )
    edges = load_pred_edges(csv_path)
    assert [(e.child, e.parent, e.relation) for e in edges] == [
        ("B", "A", "finetune"),
        ("C", "B", "quantized"),
    ]
    assert edges[0].confidence == 0.9 and edges[0].closeness == 0.8 and edges[1].closeness is None
    json_path = tmp_path / "pred.json"
    json_path.write_text(json.dumps([{"child": "B", "parent": "A", "relation": "finetune"}]))
    assert [(e.child, e.parent) for e in load_pred_edges(json_path)] == [("B", "A")]


def test_eval_command_prints_prediction_and_baseline(tmp_path: Path) -> None:
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps(_truth({"B": {"declared_base_model": "A"}})))
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps([{"child": c, "parent": p, "relation": r} for c, p, r in SCORED]))
    app = typer.Typer()
    app.command("eval")(eval_command)
    app.command("noop")(lambda: None)  # keeps "eval" a sub-command
    result = CliRunner().invoke(
        app, ["eval", "--truth", str(truth), "--pred", str(pred), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == ["pred.json", "declared-only"]
    assert rows[0]["f1"] == 1.0 and rows[1]["tp"] == 1
    table = CliRunner().invoke(app, ["eval", "--truth", str(truth)])
    assert table.exit_code == 0 and "declared-only" in table.output


def test_table_and_json_render() -> None:
    rows = [score(SCORED, _truth(), name="x")]
    assert json.loads(scores_json(rows))[0]["name"] == "x"
    assert scores_table(rows).row_count == 1
