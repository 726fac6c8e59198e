"""The sketch: an aligned, dtype-independent sampling plan; exact decoding; the store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lineage_index.indexer.read.sources import DirSource
from lineage_index.indexer.sketch.canon import canonical, family_signature
from lineage_index.indexer.sketch.sample import MAX_LAYERS, plan_reads, sketch_model
from lineage_index.indexer.sketch.store import SketchStore


def _weights(seed: int, layers: int = 3, d: int = 64, vocab: int = 300) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = {"model.embed_tokens.weight": torch.randn(vocab, d, generator=g), "model.norm.weight": torch.ones(d)}
    for i in range(layers):
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            w[f"model.layers.{i}.self_attn.{name}.weight"] = torch.randn(d, d, generator=g) * 0.05
        w[f"model.layers.{i}.mlp.down_proj.weight"] = torch.randn(d, 4 * d, generator=g) * 0.05
    return w


def _write(root: Path, model_id: str, tensors: dict[str, torch.Tensor]) -> None:
    path = root / model_id
    path.mkdir(parents=True)
    save_file(tensors, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))


def _records(root: Path) -> dict[str, object]:
    src = DirSource(root)
    return {r.id: r for r in src.iter_records()}, src


def test_canonical_names_strip_wrappers_and_find_layers() -> None:
    c = canonical("base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight")
    assert (c.key, c.role, c.layer) == ("layers.7.self_attn.q_proj.lora_A.weight", "self_attn.q_proj.lora_A.weight", 7)
    assert canonical("bert.encoder.layer.2.attention.self.query.weight").layer == 2
    assert canonical("transformer.h.0.attn.c_attn.weight").role == "attn.c_attn.weight"
    assert canonical("lm_head.weight").layer is None


def test_plan_is_aligned_across_dtypes_and_quantisation(tmp_path: Path) -> None:
    w = _weights(0)
    _write(tmp_path, "org/f32", w)
    _write(tmp_path, "org/bf16", {k: v.to(torch.bfloat16) for k, v in w.items()})
    recs, _ = _records(tmp_path)
    p32 = [(p.key, p.row_start, p.rows, p.cols) for p in plan_reads(recs["org/f32"].tensors)]
    p16 = [(p.key, p.row_start, p.rows, p.cols) for p in plan_reads(recs["org/bf16"].tensors)]
    assert p32 == p16
    assert family_signature(recs["org/f32"].tensors) == family_signature(recs["org/bf16"].tensors)


def test_resized_vocabulary_stays_in_family_and_aligned(tmp_path: Path) -> None:
    w = _weights(0)
    bigger = dict(w)
    bigger["model.embed_tokens.weight"] = torch.cat([w["model.embed_tokens.weight"], torch.randn(20, 64)])
    _write(tmp_path, "org/a", w)
    _write(tmp_path, "org/b", bigger)
    recs, src = _records(tmp_path)
    assert family_signature(recs["org/a"].tensors)[0] == family_signature(recs["org/b"].tensors)[0]
    sa = sketch_model(recs["org/a"], src.open_reader(recs["org/a"]))
    sb = sketch_model(recs["org/b"], src.open_reader(recs["org/b"]))
    key = "embed_tokens.weight"
    np.testing.assert_array_equal(sa.samples[key].values, sb.samples[key].values)


def test_sketch_decodes_exact_values_and_reads_only_planned_bytes(tmp_path: Path) -> None:
    w = _weights(1)
    _write(tmp_path, "org/m", {k: v.to(torch.float16) for k, v in w.items()})
    recs, src = _records(tmp_path)
    rec = recs["org/m"]
    reader = src.open_reader(rec)
    sk = sketch_model(rec, reader)
    s = sk.samples["layers.1.self_attn.q_proj.weight"]
    expect = w["model.layers.1.self_attn.q_proj.weight"].to(torch.float16).float().numpy()
    np.testing.assert_array_equal(s.values, expect[s.row_start : s.row_start + s.values.shape[0]])
    planned = sum(p.rows * p.cols * 2 for p in plan_reads(rec.tensors))
    assert reader.bytes_read >= planned
    assert reader.bytes_read < (tmp_path / "org/m/model.safetensors").stat().st_size


def test_bitsandbytes_int8_is_dequantised_with_row_scales(tmp_path: Path) -> None:
    w = _weights(2)
    q = {}
    for k, v in w.items():
        if v.ndim == 2 and "layers" in k:
            scb = v.abs().amax(dim=1).clamp_min(1e-8)
            q[k] = torch.round(v / scb[:, None] * 127).to(torch.int8)
            q[k + ".SCB"] = scb.float()
        else:
            q[k] = v
    _write(tmp_path, "org/int8", q)
    recs, src = _records(tmp_path)
    sk = sketch_model(recs["org/int8"], src.open_reader(recs["org/int8"]))
    s = sk.samples["layers.0.self_attn.v_proj.weight"]
    assert sk.quant == "bnb-int8" and s.quant == "bnb-int8"
    ref = w["model.layers.0.self_attn.v_proj.weight"].numpy()[s.row_start : s.row_start + s.values.shape[0]]
    step = np.abs(ref).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(s.values - ref) <= step / 2 + 1e-6)


def test_layers_are_subsampled_for_deep_models(tmp_path: Path) -> None:
    _write(tmp_path, "org/deep", _weights(3, layers=20, d=16, vocab=50))
    recs, _ = _records(tmp_path)
    layers = {p.layer for p in plan_reads(recs["org/deep"].tensors) if p.layer is not None}
    assert len(layers) == MAX_LAYERS and {0, 19} <= layers


def test_store_round_trip_is_atomic_and_keyed_by_sha(tmp_path: Path) -> None:
    _write(tmp_path / "zoo", "org/m", _weights(4))
    recs, src = _records(tmp_path / "zoo")
    sk = sketch_model(recs["org/m"], src.open_reader(recs["org/m"]))
    store = SketchStore(tmp_path / "store")
    path = store.put(sk)
    assert not list(path.parent.glob(".tmp-*"))
    back = store.get("org/m", sk.sha)
    assert back is not None and back.family == sk.family
    np.testing.assert_array_equal(back.embedding, sk.embedding)
    assert set(back.samples) == set(sk.samples)
    assert store.get("org/m", "another-sha") is None


@pytest.mark.parametrize("noise,related", [(0.01, True), (None, False)])
def test_embedding_distance_separates_related_from_independent(tmp_path: Path, noise, related) -> None:
    w = _weights(5)
    other = {k: v + noise * torch.randn_like(v) for k, v in w.items()} if noise else _weights(6)
    _write(tmp_path, "org/a", w)
    _write(tmp_path, "org/b", other)
    recs, src = _records(tmp_path)
    ea = sketch_model(recs["org/a"], src.open_reader(recs["org/a"])).embedding
    eb = sketch_model(recs["org/b"], src.open_reader(recs["org/b"])).embedding
    d2 = float(np.sum((ea - eb) ** 2))
    assert (d2 < 0.2) == related


def test_duplicate_weight_sets_are_read_once(tmp_path: Path) -> None:
    from lineage_index.indexer.read.safetensors import primary_weight_files

    assert primary_weight_files(["consolidated.safetensors", "model.safetensors", "config.json"]) == [
        "model.safetensors"]
    assert primary_weight_files(["consolidated.safetensors", "weights-a.safetensors"]) == ["weights-a.safetensors"]
    # a Mistral-style repo: HF weights plus consolidated.safetensors with other names
    w = _weights(7)
    _write(tmp_path, "org/m", w)
    save_file({k.replace("model.layers", "layers").replace("self_attn.q_proj", "attention.wq"): v
               for k, v in w.items()}, str(tmp_path / "org/m/consolidated.safetensors"))
    recs, src = _records(tmp_path)
    rec = recs["org/m"]
    assert {t.file for t in rec.tensors} == {"model.safetensors"}
