"""The generated zoo: determinism, Hub layout, and that each derivation leaves its real signature.

Builds the ``tiny`` zoo (really trained, ~10 s each) three times: twice with seed 0, once with
seed 1. The ``small`` zoo is built only when LINEAGE_INDEX_TEST_SMALL_ZOO=1 (a few minutes).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from typer.testing import CliRunner

from lineage_index.errors import UsageError
from lineage_index.records import RELATIONS
from lineage_index.zoo import build_zoo, plan_zoo
from lineage_index.zoo.archs import ARCHS, linear_weight_names, make_model, minilm_dir, state_of
from lineage_index.zoo.cards import assign_cards

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------------------------- helpers


def read_tensors(repo: Path) -> dict[str, torch.Tensor]:
    """All tensors of a repo (single file, shards, or adapter)."""
    out: dict[str, torch.Tensor] = {}
    for f in sorted(repo.glob("*.safetensors")):
        with safe_open(str(f), "pt") as h:
            for k in h.keys():
                out[k] = h.get_tensor(k)
    return out


def front_matter(repo: Path) -> dict:
    text = (repo / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---", 2)[1])


def by_method(truth: dict, method: str) -> list[tuple[str, dict]]:
    return [(m, v) for m, v in truth["models"].items() if v["method"] == method]


def rel_delta(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm())


def strip_bert(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("bert."): v for k, v in state.items()}


# --------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zoo") / "tiny"
    summary = build_zoo(out, "tiny", seed=0, progress=False)
    assert summary.n_models == len(json.loads((out / "truth.json").read_text())["models"])
    return out


@pytest.fixture(scope="module")
def truth(zoo: Path) -> dict:
    return json.loads((zoo / "truth.json").read_text())


# ---------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_truth_and_tensor_bytes(zoo: Path, tmp_path: Path) -> None:
    from lineage_index.cli.zoo_cmd import zoo_app

    again = tmp_path / "again"
    result = CliRunner().invoke(zoo_app, ["build", str(again), "--size", "tiny", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (again / "truth.json").read_bytes() == (zoo / "truth.json").read_bytes()
    files = sorted(p.relative_to(zoo) for p in zoo.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (zoo / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_different_seed_gives_a_different_zoo(zoo: Path, truth: dict, tmp_path: Path) -> None:
    other = tmp_path / "seed1"
    build_zoo(other, "tiny", seed=1, progress=False)
    truth1 = json.loads((other / "truth.json").read_text())
    assert truth1 != truth
    root = "meta-llama/Llama-3.1-Nano"
    a, b = read_tensors(zoo / root), read_tensors(other / root)
    assert a.keys() == b.keys()
    assert not any(torch.equal(a[k], b[k]) for k in a if a[k].dim() == 2)


# ---------------------------------------------------------------------------------- truth


def test_truth_describes_a_lineage_forest(truth: dict) -> None:
    models, edges = truth["models"], truth["edges"]
    assert {e["relation"] for e in edges} == set(RELATIONS)
    for e in edges:
        assert e["child"] in models and e["parent"] in models
        child_t = datetime.fromisoformat(models[e["child"]]["created_at"])
        assert child_t > datetime.fromisoformat(models[e["parent"]]["created_at"])
    merges = [m for m, v in models.items() if v["relation"] == "merge"]
    assert merges and all(len(models[m]["parents"]) == 2 for m in merges)
    assert max(v["depth"] for v in models.values()) >= 3
    roots = [m for m, v in models.items() if not v["parents"]]
    assert len({models[r]["arch"] for r in roots}) < len(roots)  # unrelated roots, same config
    for m, v in models.items():
        for key in ("license", "root", "architecture", "declared_license", "declared_base_model"):
            assert key in v, (m, key)
    for c in truth["conflicts"]:
        assert c["verdict"] in ("conflict", "warning") and c["child"] in models


def test_plans_for_small_and_medium(tmp_path: Path) -> None:
    for size, lo, hi in (("small", 20, 32), ("medium", 100, 400)):
        specs = plan_zoo(size, 0)
        assign_cards(specs, 0)
        assert lo <= len(specs) <= hi
        assert {s.relation for s in specs if s.relation} == set(RELATIONS)
        roots = [s for s in specs if not s.parents]
        assert any(s.arch == "minilm" for s in roots)
        assert len({s.arch for s in roots}) < len(roots)
        assert max(s.depth for s in specs) >= 3
        assert len({s.id for s in specs}) == len(specs)
        by_id = {s.id: s for s in specs}
        assert all(s.created_at > by_id[p].created_at for s in specs for p in s.parents)
        assert plan_zoo(size, 0)[-1].id == specs[-1].id  # deterministic


def test_build_refuses_a_non_empty_directory_without_a_zoo(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(UsageError):
        build_zoo(tmp_path, "tiny", seed=0, progress=False)
    assert (tmp_path / "precious.txt").exists()


# ---------------------------------------------------------------------------------- layout


def test_every_model_has_hub_layout(zoo: Path, truth: dict) -> None:
    for model_id, v in truth["models"].items():
        repo = zoo / model_id
        fm = front_matter(repo)
        assert fm["created_at"] == v["created_at"]
        assert fm.get("license") == v["declared_license"]
        assert fm.get("base_model") == v["declared_base_model"]
        tensors = read_tensors(repo)
        assert tensors
        if v["kind"] == "adapter":
            assert (repo / "adapter_config.json").is_file() and not (repo / "config.json").exists()
            continue
        config = json.loads((repo / "config.json").read_text())
        assert config["model_type"] == v["model_type"]
        assert config["architectures"] == [v["architecture"]]
        assert (
            config["dtype"]
            == {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "I8": "float16"}[v["dtype"]]
        )


def test_sharded_checkpoints_have_a_consistent_index(zoo: Path, truth: dict) -> None:
    sharded = [m for m, v in truth["models"].items() if v["shards"] > 1]
    assert sharded
    for model_id in sharded:
        repo = zoo / model_id
        index = json.loads((repo / "model.safetensors.index.json").read_text())
        assert not (repo / "model.safetensors").exists()
        shards = sorted(repo.glob("model-*-of-*.safetensors"))
        assert len(shards) == truth["models"][model_id]["shards"]
        seen, total = {}, 0
        for f in shards:
            with safe_open(str(f), "pt") as h:
                for k in h.keys():
                    seen[k] = f.name
                    t = h.get_tensor(k)
                    total += t.numel() * t.element_size()
        assert index["weight_map"] == seen
        assert index["metadata"]["total_size"] == total


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_tensor_names_are_what_save_pretrained_writes(arch: str, tmp_path: Path) -> None:
    model = make_model(arch, 0)
    model.save_pretrained(tmp_path, safe_serialization=True)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as h:
        assert set(h.keys()) == set(state_of(model))


def test_full_models_carry_their_architecture_tensor_names(zoo: Path, truth: dict) -> None:
    for model_id, v in truth["models"].items():
        if v["kind"] == "model" and v["dtype"] != "I8":
            expected = set(state_of(make_model(v["arch"], 0)))
            assert set(read_tensors(zoo / model_id)) == expected, model_id


# ------------------------------------------------------------------------ derivation signatures


def test_peft_adapters_have_peft_layout(zoo: Path, truth: dict) -> None:
    adapters = by_method(truth, "adapter")
    assert adapters
    for model_id, v in adapters:
        cfg = json.loads((zoo / model_id / "adapter_config.json").read_text())
        assert cfg["peft_type"] == "LORA" and cfg["base_model_name_or_path"] == v["parents"][0]
        assert cfg["r"] == v["params"]["rank"] and cfg["lora_alpha"] == v["params"]["lora_alpha"]
        assert cfg["target_modules"] == ["q_proj", "v_proj"]
        tensors = read_tensors(zoo / model_id)
        assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in tensors
        for name, t in tensors.items():
            assert name.startswith("base_model.model.model.layers.")
            assert name.endswith((".lora_A.weight", ".lora_B.weight"))
            assert cfg["r"] in (t.shape[0] if "lora_A" in name else t.shape[1],)
        assert any(float(t.abs().max()) > 0 for n, t in tensors.items() if "lora_B" in n)


def test_int8_models_store_bitsandbytes_rows_and_scales(zoo: Path, truth: dict) -> None:
    quants = by_method(truth, "quant-int8")
    assert quants
    for model_id, v in quants:
        config = json.loads((zoo / model_id / "config.json").read_text())
        assert config["quantization_config"]["quant_method"] == "bitsandbytes"
        assert config["quantization_config"]["load_in_8bit"] is True
        child, parent = read_tensors(zoo / model_id), read_tensors(zoo / v["parents"][0])
        linear = linear_weight_names(v["arch"])
        assert linear
        for name in linear:
            module = name.removesuffix(".weight")
            q, scb = child[name], child[f"{module}.SCB"]
            assert q.dtype == torch.int8 and scb.dtype == torch.float32
            assert (
                scb.shape == (q.shape[0],) and child[f"{module}.weight_format"].dtype == torch.uint8
            )
            assert int(q.abs().max()) == 127
            w = parent[name].float()
            assert torch.allclose(scb, w.abs().amax(dim=1))
            err = (q.float() * scb[:, None] / 127 - w).abs()
            assert bool((err <= scb[:, None] / 254 + 1e-6).all())
        others = [
            k
            for k, t in child.items()
            if k not in linear and t.is_floating_point() and not k.endswith(".SCB")
        ]
        assert others and all(child[k].dtype == torch.float16 for k in others)


def test_pruned_models_have_many_exact_zeros(zoo: Path, truth: dict) -> None:
    pruned = by_method(truth, "prune")
    assert pruned
    for model_id, v in pruned:
        child, parent = read_tensors(zoo / model_id), read_tensors(zoo / v["parents"][0])
        for name in linear_weight_names(v["arch"]):
            zeros = float((child[name] == 0).float().mean())
            assert zeros >= v["params"]["sparsity"] - 0.01, (name, zeros)
            assert float((parent[name] == 0).float().mean()) < 0.01


def test_partial_finetunes_keep_frozen_tensors_byte_identical(zoo: Path, truth: dict) -> None:
    partials = by_method(truth, "partial")
    assert partials
    for model_id, v in partials:
        child, parent = read_tensors(zoo / model_id), read_tensors(zoo / v["parents"][0])
        same = {k for k in child if torch.equal(child[k], parent[k])}
        assert (
            "model.embed_tokens.weight" in same and "model.layers.0.self_attn.q_proj.weight" in same
        )
        assert "model.layers.1.self_attn.q_proj.weight" not in same


def test_lora_merges_change_only_q_and_v_by_a_low_rank_delta(zoo: Path, truth: dict) -> None:
    merged = by_method(truth, "lora-merge")
    assert merged
    for model_id, v in merged:
        child, parent = read_tensors(zoo / model_id), read_tensors(zoo / v["parents"][0])
        for k in child:
            changed = not torch.equal(child[k], parent[k])
            assert changed == (k.endswith(("q_proj.weight", "v_proj.weight"))), k
            if changed:
                s = torch.linalg.svdvals(child[k].float() - parent[k].float())
                r = v["params"]["rank"]
                assert float((s[:r] ** 2).sum() / (s**2).sum()) > 0.95


def test_copies_are_within_bf16_rounding(zoo: Path, truth: dict) -> None:
    copies = by_method(truth, "copy") + by_method(truth, "quant-fp16")
    assert copies
    for model_id, v in copies:
        child, parent = read_tensors(zoo / model_id), read_tensors(zoo / v["parents"][0])
        assert child.keys() == parent.keys()
        for k in child:
            a, b = child[k].float(), parent[k].float()
            # relative rounding of bf16/fp16, plus fp16's subnormal spacing near zero
            excess = float(((a - b).abs() - b.abs() * 2**-8 - 2**-24).max())
            assert excess <= 0, (model_id, k, excess)


def test_merges_are_convex_combinations_of_their_parents(zoo: Path, truth: dict) -> None:
    for model_id, v in by_method(truth, "merge"):
        child = read_tensors(zoo / model_id)
        a, b = (read_tensors(zoo / p) for p in v["parents"])
        alpha = v["params"]["alpha"]
        for k in child:
            expected = alpha * a[k].float() + (1 - alpha) * b[k].float()
            assert torch.allclose(child[k].float(), expected, rtol=2**-7, atol=1e-6), k


def test_training_really_moves_weights(zoo: Path, truth: dict) -> None:
    for model_id, v in truth["models"].items():
        if v["method"] not in ("finetune", "distill"):
            continue
        child, parent = read_tensors(zoo / model_id), read_tensors(zoo / v["parents"][0])
        deltas = [rel_delta(child[k], parent[k]) for k in child if child[k].dim() == 2]
        mean = sum(deltas) / len(deltas)
        if v["method"] == "finetune":
            assert 0.005 < mean < 0.8, (model_id, mean)
        else:
            assert mean > 0.8, (model_id, mean)  # a fresh student shares nothing with its teacher


# ------------------------------------------------------------------------------ small zoo


@pytest.mark.skipif(
    os.environ.get("LINEAGE_INDEX_TEST_SMALL_ZOO") != "1",
    reason="builds the small zoo (minutes); set LINEAGE_INDEX_TEST_SMALL_ZOO=1",
)
def test_small_zoo_builds_with_the_real_minilm(tmp_path: Path) -> None:
    summary = build_zoo(tmp_path, "small", seed=0, progress=False)
    truth = json.loads(summary.truth_path.read_text())
    assert 20 <= summary.n_models <= 32 and set(summary.relations) == set(RELATIONS)
    root = tmp_path / "sentence-transformers/all-MiniLM-L6-v2"
    assert (root / "model.safetensors").read_bytes() == (
        minilm_dir() / "model.safetensors"
    ).read_bytes()
    original = read_tensors(root)
    for model_id, v in truth["models"].items():
        tensors = read_tensors(tmp_path / model_id)
        if v["arch"] == "minilm" and v["method"] == "finetune":
            deltas = [rel_delta(tensors[k], original[k]) for k in tensors if tensors[k].dim() == 2]
            assert 1e-4 < sum(deltas) / len(deltas) < 0.1
        if v["arch"] == "bert-nano":
            assert not any(k.startswith(("bert.", "cls.")) for k in tensors)
        if v["arch"] == "bert-nano-mlm" and v["kind"] == "model" and v["dtype"] != "I8":
            assert "bert.encoder.layer.0.attention.self.query.weight" in tensors
        if v["arch"] == "gpt2-nano" and v["kind"] == "model":
            assert "transformer.h.0.attn.c_attn.weight" in tensors
