"""Behaviour tier (issue 9): closeness and same-basin determination on tiny classifiers.

Models are trained in seconds on a synthetic 16-D Gaussian-blob task (MLP 16→32→4) and an 8x8
synthetic image task (small CNN with BatchNorm). Nothing here ever unpickles.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from lineage_index.behaviour import closeness, determine
from lineage_index.behaviour import models as M
from lineage_index.behaviour.determine import calibrate
from lineage_index.behaviour.probes import (
    ProbeSet,
    TaskSpec,
    load_probes,
    save_probes,
    synthetic_probes,
    task_data,
)
from lineage_index.errors import ModelReadError, UnsupportedFormatError, UsageError

torch.set_num_threads(1)
TASK = TaskSpec(kind="blobs", classes=4, seed=3, dim=16, spread=1.0)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, M.Classifier]:
    root = M.train_fresh("mlp", TASK, seed=0, name="root")
    return {
        "root": root,
        "child": M.finetune(root, task_data(TASK, 2000, seed=77), seed=5, steps=150, name="child"),
        "other": M.train_fresh("mlp", TASK, seed=42, name="other"),
        "student": M.distill(root, task_data(TASK, 4000, seed=78), seed=9, steps=600, name="student"),
    }


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("profiles")


def test_finetuned_child_is_close_and_in_the_same_basin(zoo: dict[str, M.Classifier], cache: Path) -> None:
    r = closeness(zoo["root"], zoo["child"], cache_dir=cache)
    assert 0.0 <= r.score <= 1.0 and r.n_probes > 0
    assert r.verdict == "lineage", r
    d = determine(zoo["root"], zoo["child"])
    assert d.verdict == "same basin", d
    assert len(d.curve.loss) == 11 and d.loss_barrier < d.threshold


def test_independent_model_is_neither_close_nor_in_the_same_basin(zoo: dict[str, M.Classifier], cache: Path) -> None:
    r = closeness(zoo["root"], zoo["other"], cache_dir=cache)
    assert r.verdict == "no lineage", r
    assert any("cache" in n for n in r.notes)  # the source profile was reused
    assert determine(zoo["root"], zoo["other"]).verdict == "different basins"


def test_distilled_student_is_close_but_not_in_the_same_basin(zoo: dict[str, M.Classifier], cache: Path) -> None:
    r = closeness(zoo["root"], zoo["student"], cache_dir=cache)
    other = closeness(zoo["root"], zoo["other"], cache_dir=cache)
    assert r.verdict == "lineage" and r.score > other.score, (r, other)
    assert determine(zoo["root"], zoo["student"]).verdict == "different basins"


def test_calibration_states_a_threshold_between_the_groups(zoo: dict[str, M.Classifier]) -> None:
    probes = synthetic_probes(TASK, 600)
    thr = calibrate(zoo["root"], probes)
    assert thr.separated and max(thr.lineage_scores) < thr.value < min(thr.independent_scores)
    r = closeness(zoo["root"], zoo["child"], probes, k=60)
    assert r.threshold == r.calibration.value
    assert min(r.calibration.lineage_scores) >= r.threshold > max(r.calibration.independent_scores)
    assert any("auxiliary models made by the tool" in n for n in r.notes)


def test_user_auxiliary_models_are_used_for_calibration(zoo: dict[str, M.Classifier]) -> None:
    d = determine(zoo["root"], zoo["child"], derived_aux=[zoo["child"]], independent_aux=[zoo["other"]])
    assert d.calibration.lineage_scores == (d.loss_barrier,)


def test_indirect_mode_reheads_the_source_on_the_suspects_labels(zoo: dict[str, M.Classifier]) -> None:
    data = task_data(TASK, 2000, seed=90)
    two = ProbeSet(data.x, data.y % 2)  # transfer to another label space: 2 classes
    transfer = M.build("mlp", seed=1, task=TASK, classes=2)
    transfer.module.load_state_dict({**zoo["root"].state(), **{k: v for k, v in transfer.state().items()
                                                            if k.startswith("head.")}})
    transfer = M.train(transfer, two, steps=200, lr=3e-3, seed=1)
    fresh = M.train(M.build("mlp", seed=2, task=TASK, classes=2), two, steps=300, seed=2)
    r_t = closeness(zoo["root"], transfer, k=60)
    r_f = closeness(zoo["root"], fresh, k=60)
    assert r_t.indirect and r_f.indirect
    assert r_t.score > r_f.score
    d = determine(zoo["root"], transfer, n_aux=1)
    assert d.fixed_head and d.verdict == "same basin"


def test_pickle_only_or_missing_model_is_a_clear_error_and_nothing_is_unpickled(tmp_path: Path) -> None:
    sentinel = tmp_path / "UNPICKLED"

    class Bomb:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (sentinel.write_text, ("boom",))

    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"lineage_behaviour": {"arch": "mlp"}}))
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(Bomb()))
    with pytest.raises(UnsupportedFormatError, match="never unpickles"):
        M.load(d)
    assert not sentinel.exists()
    with pytest.raises(UsageError, match="not found"):
        M.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelReadError):
        M.load(tmp_path / "empty")


def test_int8_cnn_with_batchnorm_is_dequantised_and_same_basin(tmp_path: Path) -> None:
    task = TaskSpec(kind="images", classes=4, seed=1, spread=1.0)
    root = M.train_fresh("cnn", task, seed=0, steps=150, name="cnn-root")
    M.save(root, tmp_path / "q", tensors=M.quantise_int8(root))
    q = M.load(tmp_path / "q")
    assert q.meta["quant"] == "int8" and q.has_batchnorm
    probes = synthetic_probes(task, 400)
    d = determine(root, q, probes, n_aux=1)
    assert d.batchnorm_reestimated and d.verdict == "same basin", d


def test_cli_closeness_and_determine_run(zoo: dict[str, M.Classifier], tmp_path: Path) -> None:
    from lineage_index.cli.behaviour_cmd import register

    app = typer.Typer()
    register(app)
    src, sus = M.save(zoo["root"], tmp_path / "org" / "root"), M.save(zoo["child"], tmp_path / "org" / "child")
    probe = tmp_path / "probe.safetensors"
    save_probes(synthetic_probes(TASK, 300), probe)
    assert len(load_probes(probe)) == 300
    runner = CliRunner()
    res = runner.invoke(app, ["closeness", str(src), str(sus), "--probe", str(probe), "--k", "50", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["verdict"] == "lineage" and 0 <= out["score"] <= 1 and out["threshold"] > 0
    res = runner.invoke(app, ["determine", str(src), str(sus), "--probe", str(probe)])
    assert res.exit_code == 0, res.output
    assert "same basin" in res.output and "threshold" in res.output
