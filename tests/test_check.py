"""``lineage-index check`` on a really trained tiny zoo: each model is checked against an index
(a sketch store) of all the others; verdict classes, parents, merge coefficients, the card's
claim against the weights, exit codes 0/2/3/4, policies, --json and --add."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lineage_index import api
from lineage_index.cli.check_cmd import register
from lineage_index.indexer.check import check
from lineage_index.indexer.pipeline import sketch_all
from lineage_index.indexer.store import SketchStore, load_meta_id
from lineage_index.records import ModelRecord

LLAMA_TREE = ("meta-llama/Llama-3.1-Nano", "Intel/Llama-3.1-Nano-fr", "berkeley-nest/Llama-3.1-Nano-fr-ft-top",
              "unsloth/Llama-3.1-Nano-int8", "free-llm-hub/Llama-3.1-Nano")


@pytest.fixture(scope="module")
def zoo(tiny_zoo: Path) -> Path:
    return tiny_zoo


@pytest.fixture(scope="module")
def full_store(zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, ModelRecord]]:
    root = tmp_path_factory.mktemp("store-all")
    src = api.make_source(directory=zoo)
    records, report = sketch_all(src.iter_records(), src.open_reader, SketchStore(root))
    assert not report.failures
    return root, records


def _store(full: Path, dest: Path, keep) -> SketchStore:
    """A copy of the full store holding only the models ``keep(model_id)`` accepts."""
    for p in SketchStore(full):
        if keep(load_meta_id(p)):
            (dest / p.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dest / p.parent.name / p.name)
    return SketchStore(dest)


def _run(args: list[str]):
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps "check" a sub-command
    return CliRunner().invoke(app, ["check", *args])


CASES = [  # target, verdict, acceptable parents, claim status, exit code
    ("Intel/Llama-3.1-Nano-fr", "finetune", {"meta-llama/Llama-3.1-Nano"}, "cannot_judge", 0),
    ("yuki-h/open_llama_nano-lora-merged", "finetune", {"openlm-research/open_llama_nano"}, "supported", 0),
    ("openlm-research/open_llama_nano-math", "finetune", {"openlm-research/open_llama_nano"}, "none", 0),
    ("berkeley-nest/Llama-3.1-Nano-fr-ft-top", "finetune", {"Intel/Llama-3.1-Nano-fr"}, "contradicted", 3),
    ("unsloth/Llama-3.1-Nano-int8", "quantized", {"meta-llama/Llama-3.1-Nano"}, "supported", 0),
    ("unsloth/Llama-3.1-Nano-fr-distilled-fp16", "quantized", {"distil-labs/Llama-3.1-Nano-fr-distilled"},
     "supported", 0),
    ("ai-reupload/Lumen-Instruct-Nano", "copy", {"distil-labs/Llama-3.1-Nano-fr-distilled"}, "none", 0),
    ("free-llm-hub/Llama-3.1-Nano", "copy", {"meta-llama/Llama-3.1-Nano"}, "none", 0),
    ("garage-bAInd/open_llama_nano-lora-merged-pruned-40", "prune", {"yuki-h/open_llama_nano-lora-merged"},
     "supported", 0),
    ("nadia-r/Llama-3.1-Nano-fr-LoRA", "adapter", {"distil-labs/Llama-3.1-Nano-fr-distilled"}, "supported", 0),
    ("openlm-research/open_llama_nano", "family_unresolved", set(), "none", 0),
]


@pytest.mark.slow
@pytest.mark.parametrize(("target", "verdict", "parents", "claim", "code"), CASES, ids=[c[0] for c in CASES])
def test_each_model_against_all_others_gets_its_verdict(zoo, full_store, tmp_path, target, verdict, parents,
                                                        claim, code) -> None:
    full, records = full_store
    store = _store(full, tmp_path, lambda m: m != target)
    others = {m: r for m, r in records.items() if m != target}
    r = check(str(zoo / target), store, records=others)
    assert (r.verdict, set(r.parents), r.claim.status, r.exit_code) == (verdict, parents, claim, code), r.evidence
    if verdict in ("copy", "quantized", "prune", "finetune", "merge", "adapter"):
        assert r.probability > 0.5
    assert r.background.source == "store" or verdict == "adapter"


@pytest.mark.slow
def test_merge_names_its_parents_and_coefficients(zoo, full_store, tmp_path) -> None:
    target = "mlabonne/open_llama_nano-math-merged-linear-merge"
    full, records = full_store
    r = check(str(zoo / target), _store(full, tmp_path, lambda m: m != target))
    weights = dict(zip(r.parents, r.coefficients, strict=True))
    assert r.verdict == "merge" and set(weights) == {"openlm-research/open_llama_nano-math",
                                                      "yuki-h/open_llama_nano-lora-merged"}
    assert weights["openlm-research/open_llama_nano-math"] == pytest.approx(0.35, abs=0.05)
    assert r.claim.status == "supported" and r.exit_code == 0  # the card declares the root: an ancestor


@pytest.mark.slow
@pytest.mark.parametrize(("target", "other_root"), [
    ("openlm-research/open_llama_nano", "distil-labs/Llama-3.1-Nano-fr-distilled"),
    ("distil-labs/Llama-3.1-Nano-fr-distilled", "openlm-research/open_llama_nano"),
    ("yuki-h/open_llama_nano-lora-merged", "distil-labs/Llama-3.1-Nano-fr-distilled"),
])
def test_independently_trained_models_of_the_same_architecture_get_no_lineage(zoo, full_store, tmp_path,
                                                                              target, other_root) -> None:
    # the index: one weight tree plus another independent root (so the background has unrelated pairs)
    store = _store(full_store[0], tmp_path, lambda m: m in LLAMA_TREE or m == other_root)
    result = _run([str(zoo / target), "--store", str(store.root), "--json"])
    out = json.loads(result.stdout)
    assert result.exit_code == 4, result.stdout
    assert out["verdict"] == "no_relative" and out["parents"] == []
    assert all(c["relation"] == "unrelated" for c in out["candidates"])
    assert out["background"]["n_pairs"] >= 3


@pytest.mark.slow
def test_json_output_carries_verdict_candidates_evidence_and_claim(zoo, full_store, tmp_path) -> None:
    target = "unsloth/Llama-3.1-Nano-int8"
    store = _store(full_store[0], tmp_path, lambda m: m != target)
    result = _run([str(zoo / target / "model.safetensors"), "--store", str(store.root), "--json"])
    assert result.exit_code == 0, result.stdout
    out = json.loads(result.stdout)
    assert out["target"] == target and out["verdict"] == "quantized"
    assert out["parents"][0] in ("meta-llama/Llama-3.1-Nano", "free-llm-hub/Llama-3.1-Nano")
    assert out["claim"]["declared"] == ["meta-llama/Llama-3.1-Nano"] and out["claim"]["status"] == "supported"
    best = out["candidates"][0]
    assert {"model_id", "relation", "probability", "cos_median", "z", "evidence"} <= set(best)
    assert out["evidence"] and out["bytes_read"] > 0


@pytest.mark.slow
def test_sharded_index_target_is_read_like_ingest(zoo, full_store, tmp_path) -> None:
    target = "meta-llama/Llama-3.1-Nano"
    index = next((zoo / target).glob("*.safetensors.index.json"))
    full, records = full_store
    r = check(str(index), _store(full, tmp_path, lambda m: m != target),
              records={m: rec for m, rec in records.items() if m != target})
    assert r.target == target and r.verdict == "family_unresolved"  # its copy and children are newer


@pytest.mark.slow
def test_policies_fail_on_licence_and_undeclared_lineage(zoo, full_store, tmp_path) -> None:
    full, _ = full_store
    target = "unsloth/Llama-3.1-Nano-int8"
    store = _store(full, tmp_path, lambda m: m != target)
    ok = _run([str(zoo / target), "--store", str(store.root), "--records", str(zoo)])
    assert ok.exit_code == 0, ok.stdout
    bad = _run([str(zoo / target), "--store", str(store.root), "--records", str(zoo),
                "--fail-on-license", "llama3.1"])
    assert bad.exit_code == 3 and "llama3.1" in bad.stdout
    copy = "ai-reupload/Lumen-Instruct-Nano"
    undeclared = _run([str(zoo / copy), "--store", str(store.root), "--fail-on-undeclared", "--json"])
    assert undeclared.exit_code == 3
    assert json.loads(undeclared.stdout)["policy_failures"]


@pytest.mark.slow
def test_add_writes_the_checked_sketch_into_the_store(zoo, full_store, tmp_path) -> None:
    target = "openlm-research/open_llama_nano-math"
    store = _store(full_store[0], tmp_path, lambda m: m != target)
    assert store.latest(target) is None
    result = _run([str(zoo / target), "--store", str(store.root), "--add"])
    assert result.exit_code == 0, result.stdout
    assert store.latest(target) is not None


def test_unreadable_targets_exit_2(zoo, tmp_path) -> None:
    src = zoo / "openlm-research/open_llama_nano/model.safetensors"
    cut = tmp_path / "org" / "cut"
    cut.mkdir(parents=True)
    (cut / "model.safetensors").write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    truncated = _run([str(cut / "model.safetensors"), "--store", str(tmp_path / "store")])
    assert truncated.exit_code == 2 and "error" in truncated.stderr
    missing = _run([str(tmp_path / "nope.safetensors"), "--store", str(tmp_path / "store")])
    assert missing.exit_code == 2
    empty_dir = _run([str(tmp_path / "store-less"), "--store", str(tmp_path / "store")])
    assert empty_dir.exit_code == 2
