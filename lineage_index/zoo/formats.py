"""The formats zoo: other weight formats derived from a trained zoo, with their lineage in truth.json.

``derive_formats(zoo)`` adds to a zoo built by ``build_zoo`` (``zoo build OUT --formats``), from its
Llama-family full models (the root, a fine-tune, a merge where present):

* GGUF repos as llama.cpp's converter writes them (``gguf`` package's writer and quantisers):
  several quantisation levels in one repo (Q8_0, Q5_1, Q4_0; a matrix whose rows are not whole
  blocks stays F16, as llama.cpp falls back), an F16 conversion (a copy), one written as another
  architecture (no Q/K permutation), with ``general.base_model.*`` metadata that is right,
  missing, or names the parent's parent;
* PyTorch pickle checkpoints (``torch.save`` of the state dict): one ``pytorch_model.bin``, and an
  F32 copy in two shards with ``pytorch_model.bin.index.json``;
* packed quantised safetensors (``read.packed``): FP8 with block scales, FP8 per channel
  (compressed-tensors), compressed-tensors int4 (symmetric and asymmetric), MLX 3/4/6-bit and,
  where bitsandbytes imports, bitsandbytes 4-bit (double-quantised NF4, FP4; written by
  bitsandbytes itself), GPTQ (4-bit act-order, 3-bit asymmetric, v1 zero points) and AWQ GEMM
  4-bit (round to nearest, written to the documented layouts: AutoGPTQ and AutoAWQ do not import
  against this transformers, see ``read.packed``) of the root, FP8, int4, act-order GPTQ and NF4 of a fine-tune (the fine-tune's children,
  not the root's), one with a card naming the wrong base, and an NF4 of the independent model;
* a hostile checkpoint (unpickling it would create ``HOSTILE_MARKER`` in the zoo) and an
  independent model (same shapes, its own random weights) as pickle, with its GGUF quantisation,
  whose metadata falsely names a zoo model as its base (``independent`` in truth).

Quantised GGUF levels are ``quantized`` children, float conversions ``copy`` children; truth
carries the format of every new model (``format``) and the failure the hostile one must give.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

HOSTILE_MARKER = "HOSTILE-PICKLE-RAN"
HF_TO_GGUF = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output",
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


class Hostile:
    """Pickled into a checkpoint: unpickling it would run a shell command (it must never be)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch '{self.marker}'",))


def gguf_name(hf: str) -> str:
    """llama.cpp's name of a Hugging Face Llama tensor name."""
    stem, suffix = hf.rsplit(".", 1)
    if stem.startswith("model.layers."):
        n, rest = stem[len("model.layers."):].split(".", 1)
        return f"blk.{n}.{HF_TO_GGUF[rest]}.{suffix}"
    return f"{HF_TO_GGUF[stem]}.{suffix}"


def rope_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """The row permutation llama.cpp's converter applies to LLaMA Q/K projections."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: Path, state: dict[str, np.ndarray], qtype: Any, *, heads: int, kv_heads: int,
               meta: dict[str, object] | None = None, arch: str = "llama") -> None:
    """A GGUF of a Llama state dict: matrices in ``qtype`` where their rows are whole blocks (F16
    otherwise), vectors F32, Q/K rows permuted when ``arch`` is llama."""
    import gguf
    from gguf.constants import GGML_QUANT_SIZES
    from gguf.constants import GGMLQuantizationType as Q

    floats = {Q.F32: np.float32, Q.F16: np.float16}
    w = gguf.GGUFWriter(str(path), arch)
    w.add_uint32(f"{arch}.attention.head_count", heads)
    w.add_uint32(f"{arch}.attention.head_count_kv", kv_heads)
    for key, value in (meta or {}).items():
        if isinstance(value, int):
            w.add_uint32(key, value)
        else:
            w.add_string(key, str(value))
    for name, arr in sorted(state.items()):
        arr = np.asarray(arr, dtype=np.float32)
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            arr = rope_permute(arr, heads if "q_proj" in name else kv_heads)
        if arr.ndim == 1:
            w.add_tensor(gguf_name(name), arr)
        elif qtype in floats:
            w.add_tensor(gguf_name(name), arr.astype(floats[qtype]))
        elif arr.shape[1] % GGML_QUANT_SIZES[qtype][0] == 0:
            w.add_tensor(gguf_name(name), gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(gguf_name(name), arr.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


#: the linear weights packed quantised checkpoints quantise (embeddings, head and norms stay float)
LINEAR = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "gate_proj.weight",
          "up_proj.weight", "down_proj.weight")


def fp8_quantise(w: np.ndarray, block: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(float8 e4m3 weight as uint8 bytes, scale) by round to nearest: per ``block`` x ``block``
    tile (``scale = max|w| / 448``, stored as ``weight_scale_inv``, the factor that dequantises),
    or per output row when ``block`` is None (compressed-tensors' channel strategy)."""
    import torch

    out, inn = w.shape
    if block is None:
        scale = np.maximum(np.abs(w).max(axis=1, keepdims=True), 1e-12) / 448.0
        full = np.repeat(scale, inn, axis=1)
    else:
        nb_r, nb_c = -(-out // block), -(-inn // block)
        scale = np.zeros((nb_r, nb_c), np.float32)
        for i in range(nb_r):
            for j in range(nb_c):
                tile = w[i * block:(i + 1) * block, j * block:(j + 1) * block]
                scale[i, j] = max(float(np.abs(tile).max()), 1e-12) / 448.0
        full = np.repeat(np.repeat(scale, block, axis=0), block, axis=1)[:out, :inn]
    q = torch.from_numpy((w / full).astype(np.float32)).to(torch.float8_e4m3fn)
    return q.view(torch.uint8).numpy(), scale.astype(np.float32)


def mlx_quantise(w: np.ndarray, bits: int, group: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint32 words [out, in*bits/32], scales, biases [out, in/group]) as ``mx.quantize`` lays
    them out: per group ``w ~ q * scale + bias`` with ``q`` in [0, 2^bits), each row a dense
    little-endian bit stream (the first value in the lowest bits; 3- and 6-bit values span words).
    Written here because ``mx.quantize`` takes groups of 32 or more and the zoo's rows are shorter;
    tests/test_packed.py reads a file ``mx.quantize`` wrote with the same reader."""
    out, inn = w.shape
    g = w.reshape(out, inn // group, group)
    lo, hi = g.min(axis=2), g.max(axis=2)
    scale = np.maximum(hi - lo, 1e-8) / ((1 << bits) - 1)
    q = np.clip(np.rint((g - lo[..., None]) / scale[..., None]), 0, (1 << bits) - 1).astype(np.uint32)
    words = pack_bits(q.reshape(out, inn), bits).view(np.uint32)
    return words, scale.astype(np.float16), lo.astype(np.float16)


def bnb4_quantise(w: np.ndarray, name: str, quant_type: str, double: bool) -> dict[str, Any]:
    """The tensors transformers saves for a bitsandbytes 4-bit ``Params4bit`` weight ``name``,
    quantised by bitsandbytes itself (its CPU path): ``name`` uint8 ``[numel/2, 1]`` and
    ``name.absmax``, ``name.quant_map``, (``name.nested_absmax``, ``name.nested_quant_map``) and
    ``name.quant_state.bitsandbytes__<type>`` from ``QuantState.as_dict(packed=True)``."""
    import bitsandbytes.functional as bnbf
    import torch

    q, state = bnbf.quantize_4bit(torch.from_numpy(np.ascontiguousarray(w)).to(torch.bfloat16), blocksize=64,
                                  quant_type=quant_type, compress_statistics=double)
    return {name: q} | {f"{name}.{k}": v for k, v in state.as_dict(packed=True).items()}


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Rows of unsigned ``bits``-bit values as dense little-endian bit streams in uint32 words
    (value ``i`` at bit ``i * bits``), as compressed-tensors' ``pack_to_int32`` lays them out."""
    rows, cols = values.shape
    bitplanes = ((values[:, :, None].astype(np.uint32) >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    stream = bitplanes.reshape(rows, cols * bits)
    words = -(-cols * bits // 32)
    stream = np.pad(stream, ((0, 0), (0, words * 32 - cols * bits)))
    return np.packbits(stream, axis=1, bitorder="little").view("<u4").reshape(rows, words)


def ct_quantise(w: np.ndarray, group: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(weight_packed int32, weight_scale, weight_zero_point packed along the rows or None): int4
    per ``group`` of inputs, round to nearest, values stored with the +8 offset."""
    out, inn = w.shape
    g = w.reshape(out, inn // group, group)
    if symmetric:
        scale = np.maximum(np.abs(g).max(axis=2), 1e-8) / 7.0
        zp = np.zeros_like(scale)
    else:
        lo, hi = g.min(axis=2), g.max(axis=2)
        scale = np.maximum(hi - lo, 1e-8) / 15.0
        zp = np.clip(np.rint(-8 - lo / scale), -8, 7)
    q = np.clip(np.rint(g / scale[..., None]) + zp[..., None], -8, 7).reshape(out, inn)
    packed = pack_bits((q + 8).astype(np.uint32), 4).view(np.int32)
    zpacked = None if symmetric else pack_bits((zp.T + 8).astype(np.uint32), 4).T.copy().view(np.int32)
    return packed, scale.astype(np.float16), zpacked


def _int_groups(w: np.ndarray, groups: np.ndarray, bits: int, sym: bool) -> tuple[np.ndarray, ...]:
    """Round-to-nearest ``bits``-bit codes of ``w`` [out, in] with one scale and zero point per
    (input group, output), GPTQ's convention: ``q = clamp(round(w / s) + z, 0, 2^bits - 1)``,
    symmetric ``z = 2^(bits-1)``. Returns (q [out, in], scales [groups, out], zeros [groups, out])."""
    maxq = (1 << bits) - 1
    ng = int(groups.max()) + 1
    scales = np.zeros((ng, w.shape[0]), np.float32)
    zeros = np.zeros((ng, w.shape[0]), np.float32)
    for g in range(ng):
        cols = w[:, groups == g]
        lo, hi = np.minimum(cols.min(axis=1), 0), np.maximum(cols.max(axis=1), 0)
        if sym:
            amax = np.maximum(np.abs(lo), hi)
            scales[g] = np.maximum(2 * amax / maxq, 1e-8)
            zeros[g] = (maxq + 1) // 2
        else:
            scales[g] = np.maximum((hi - lo) / maxq, 1e-8)
            zeros[g] = np.clip(np.rint(-lo / scales[g]), 0, maxq)
    scales = scales.astype(np.float16).astype(np.float32)  # the stored scales quantise
    q = np.clip(np.rint(w / scales[groups].T) + zeros[groups].T, 0, maxq).astype(np.uint32)
    return q, scales.astype(np.float16), zeros.astype(np.uint32)


def gptq_quantise(w: np.ndarray, bits: int, group: int, *, act_order: bool, sym: bool,
                  v1: bool = True) -> dict[str, np.ndarray]:
    """``qweight`` [in*bits/32, out], ``qzeros`` [groups, out*bits/32] (v1: stored minus one),
    ``scales`` [groups, out], ``g_idx`` [in] as AutoGPTQ's ``QuantLinear`` lays them out (each
    output's column of ``qweight`` a dense little-endian bit stream along the inputs); act-order
    groups the inputs by descending column norm (GPTQ orders by its Hessian's diagonal)."""
    out, inn = w.shape
    order = np.argsort(-np.linalg.norm(w, axis=0), kind="stable") if act_order else np.arange(inn)
    rank = np.empty(inn, np.int64)
    rank[order] = np.arange(inn)
    g_idx = (rank // group).astype(np.int32)
    q, scales, zeros = _int_groups(w, g_idx, bits, sym)
    stored = (zeros - 1) & np.uint32((1 << bits) - 1) if v1 else zeros
    return {"qweight": pack_bits(q, bits).T.copy().view(np.int32), "qzeros": pack_bits(stored, bits).view(np.int32),
            "scales": scales, "g_idx": g_idx}


def awq_quantise(w: np.ndarray, group: int) -> dict[str, np.ndarray]:
    """AutoAWQ GEMM 4-bit: ``qweight`` [in, out/8] with the outputs of each word interleaved
    [0, 2, 4, 6, 1, 3, 5, 7] (nibble p holds output 8k + order[p]), ``qzeros`` [groups, out/8] the
    same way, ``scales`` [groups, out]; asymmetric zero points."""
    from lineage_index.indexer.read.packed import AWQ_ORDER

    out, inn = w.shape
    groups = np.arange(inn) // group
    q, scales, zeros = _int_groups(w, groups, 4, sym=False)

    def pack(v: np.ndarray) -> np.ndarray:  # [rows, out] -> [rows, out/8]
        v = v.reshape(v.shape[0], -1, 8)
        words = np.zeros(v.shape[:2], np.uint32)
        for p, o in enumerate(AWQ_ORDER):
            words |= v[:, :, o].astype(np.uint32) << np.uint32(4 * p)
        return words.view(np.int32)

    return {"qweight": pack(q.T.copy()), "qzeros": pack(zeros), "scales": scales}


def write_packed(repo: Path, state: dict[str, np.ndarray], scheme: str, config: dict[str, Any]) -> None:
    """A packed quantised checkpoint of ``state``: ``fp8-block`` (DeepSeek/Qwen FP8 layout,
    16 x 16 tiles at this scale), ``fp8-channel`` (compressed-tensors float-quantized), ``ct-int4``
    (``-asym``), ``mlx-<bits>`` (2/3/4/6/8) or ``bnb-nf4``/``bnb-fp4`` (``-dq``: double-quantised)."""
    import torch
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    cfg = dict(config)
    for name, w in sorted(state.items()):
        if not name.endswith(LINEAR):
            tensors[name] = torch.from_numpy(np.ascontiguousarray(w)).to(torch.bfloat16)
            continue
        m = name[: -len(".weight")]
        if scheme.startswith(("gptq", "awq")):
            bits = int(scheme.split("-")[1])
            if (w.shape[0] * bits) % 32 or (w.shape[1] * bits) % 32:
                # not whole packed words: the quantisers leave such a layer in float
                tensors[name] = torch.from_numpy(np.ascontiguousarray(w)).to(torch.bfloat16)
                continue
            parts = awq_quantise(w, 32) if scheme.startswith("awq") else gptq_quantise(
                w, bits, 32, act_order=scheme.endswith("-act"), sym=bits == 4)
            tensors |= {f"{m}.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in parts.items()}
        elif scheme.startswith("ct-int4"):
            packed, scale, zpacked = ct_quantise(w, 16, symmetric=scheme == "ct-int4")
            tensors[m + ".weight_packed"] = torch.from_numpy(packed)
            tensors[m + ".weight_scale"] = torch.from_numpy(scale)
            tensors[m + ".weight_shape"] = torch.tensor(list(w.shape), dtype=torch.int64)
            if zpacked is not None:
                tensors[m + ".weight_zero_point"] = torch.from_numpy(zpacked)
        elif scheme.startswith("fp8"):
            q, scale = fp8_quantise(w, 16 if scheme == "fp8-block" else None)
            tensors[name] = torch.from_numpy(q).view(torch.float8_e4m3fn)
            key = ".weight_scale_inv" if scheme == "fp8-block" else ".weight_scale"
            tensors[m + key] = torch.from_numpy(scale)
        elif scheme.startswith("bnb-"):
            tensors |= bnb4_quantise(w, name, scheme.split("-")[1], scheme.endswith("-dq"))
        else:
            words, scales, biases = mlx_quantise(w, int(scheme.split("-")[1]), 16)
            tensors[name] = torch.from_numpy(words.view(np.int32)).view(torch.uint32)
            tensors[m + ".scales"] = torch.from_numpy(scales)
            tensors[m + ".biases"] = torch.from_numpy(biases)
    if scheme == "fp8-block":
        cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                      "weight_block_size": [16, 16]}
    elif scheme == "fp8-channel":
        cfg["quantization_config"] = {"quant_method": "compressed-tensors", "format": "float-quantized",
                                      "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                                          "num_bits": 8, "type": "float", "strategy": "channel"}}}}
    elif scheme.startswith("ct-int4"):
        cfg["quantization_config"] = {"quant_method": "compressed-tensors", "format": "pack-quantized",
                                      "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                                          "num_bits": 4, "type": "int", "symmetric": scheme == "ct-int4",
                                          "strategy": "group", "group_size": 16}}}}
    elif scheme.startswith("gptq"):
        cfg["quantization_config"] = {"quant_method": "gptq", "bits": int(scheme.split("-")[1]), "group_size": 32,
                                      "desc_act": scheme.endswith("-act"), "sym": scheme.split("-")[1] == "4",
                                      "checkpoint_format": "gptq", "true_sequential": True, "damp_percent": 0.01}
    elif scheme.startswith("awq"):
        cfg["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": True,
                                      "version": "gemm"}
    elif scheme.startswith("bnb-"):
        cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
                                      "bnb_4bit_quant_type": scheme.split("-")[1],
                                      "bnb_4bit_use_double_quant": scheme.endswith("-dq"),
                                      "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_quant_storage": "uint8"}
    else:
        cfg["quantization"] = {"group_size": 16, "bits": int(scheme.split("-")[1])}
    save_file(tensors, str(repo / "model.safetensors"), metadata={"format": "pt"})
    (repo / "config.json").write_text(json.dumps(cfg, indent=2))


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _state(repo: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return {k: v for f in sorted(repo.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def _card(path: Path, fields: dict[str, Any], title: str) -> None:
    import yaml

    path.write_text(f"---\n{yaml.safe_dump(fields, sort_keys=True)}---\n# {title}\n", encoding="utf-8")


def _later(iso: str, days: int) -> str:
    from datetime import datetime, timedelta

    t = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ") + timedelta(days=days)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def derive_formats(zoo: Path, *, seed: int = 0) -> dict[str, Any]:
    """Add the formats models to the zoo at ``zoo`` (its truth.json updated); returns a summary."""
    import torch
    from gguf.constants import GGMLQuantizationType as Q

    zoo = Path(zoo)
    truth = json.loads((zoo / "truth.json").read_text())
    models = truth["models"]
    llama = [m for m, t in models.items() if t.get("model_type") == "llama" and t.get("kind") == "model"
             and t.get("method") in ("root-pretrain", "finetune") and any((zoo / m).glob("*.safetensors"))]
    parents = sorted(llama, key=lambda m: (len(models[m].get("parents", [])), m))[:3]
    if not parents:
        raise ValueError(f"{zoo}: no Llama model to derive formats from")
    added: list[tuple[str, dict[str, Any]]] = []

    def add(model_id: str, parent: str | None, relation: str | None, fmt: str, **extra: Any) -> Path:
        repo = zoo / model_id
        if repo.exists():
            shutil.rmtree(repo)
        repo.mkdir(parents=True)
        base = models[parent] if parent else {}
        entry = {"license": base.get("license"), "root": base.get("root", model_id),
                 "weight_root": base.get("weight_root", model_id), "architecture": "LlamaForCausalLM",
                 "model_type": "llama", "kind": "model", "method": f"convert-{fmt}", "relation": relation,
                 "parents": [parent] if parent else [], "format": fmt, "mess": {"license": "honest"}, **extra}
        added.append((model_id, entry))
        return repo

    for i, parent in enumerate(parents):
        pdir = zoo / parent
        cfg = json.loads((pdir / "config.json").read_text())
        heads, kv = int(cfg["num_attention_heads"]), int(cfg.get("num_key_value_heads", cfg["num_attention_heads"]))
        state = {k: v.float().numpy() for k, v in _state(pdir).items()}
        name = parent.split("/", 1)[1]
        created = models[parent].get("created_at") or "2024-01-01T00:00:00Z"
        lic = models[parent].get("license")
        grand = (models[parent].get("parents") or [None])[0]
        declared = [parent, None, grand or parent][i % 3]  # right, missing, the parent's parent
        meta = {"general.name": name, "general.license": lic or "other", "general.quantized_by": "zoo"}
        if declared:
            meta |= {"general.base_model.count": 1,
                     "general.base_model.0.repo_url": f"https://huggingface.co/{declared}"}
        repo = add(f"gguf-hub/{name}-GGUF", parent, "quantized", "gguf", declared_base_model=declared,
                   created_at=_later(created, 30))
        for level in (Q.Q8_0, Q.Q5_1, Q.Q4_0):
            write_gguf(repo / f"{name}.{level.name}.gguf", state, level, heads=heads, kv_heads=kv, meta=meta)
        _card(repo / "README.md", {"created_at": _later(created, 30), "license": lic or "other",
                                   "tags": ["gguf"]}, f"{name} GGUF")
        repo = add(f"lmstudio-zoo/{name}-F16-GGUF", parent, "copy", "gguf", declared_base_model=None,
                   created_at=_later(created, 31))
        write_gguf(repo / f"{name}-f16.gguf", state, Q.F16, heads=heads, kv_heads=kv)
        if i == 0:  # written as another architecture: llama.cpp permutes Q/K only for llama
            repo = add(f"gguf-hub/{name}-unpermuted-GGUF", parent, "quantized", "gguf",
                       created_at=_later(created, 32))
            write_gguf(repo / f"{name}.Q8_0.gguf", state, Q.Q8_0, heads=heads, kv_heads=kv, arch="qwen2")
        repo = add(f"legacy-lab/{name}-bin", parent, "copy", "pickle", created_at=_later(created, 40))
        torch.save({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in state.items()}, repo / "pytorch_model.bin")
        shutil.copy(pdir / "config.json", repo / "config.json")
        _card(repo / "README.md", {"created_at": _later(created, 40), "license": lic or "other"}, f"{name} (bin)")
        if i == 0:
            repo = add(f"legacy-lab/{name}-fp32-sharded", parent, "copy", "pickle", created_at=_later(created, 41))
            names = sorted(state)
            weight_map = {}
            for s, part in enumerate((names[::2], names[1::2]), start=1):
                shard = f"pytorch_model-{s:05d}-of-00002.bin"
                torch.save({n: torch.from_numpy(state[n]) for n in part}, repo / shard)
                weight_map |= {n: shard for n in part}
            (repo / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
            shutil.copy(pdir / "config.json", repo / "config.json")
            _card(repo / "README.md", {"created_at": _later(created, 41)}, f"{name} (sharded bin)")

    # packed quantised safetensors of the root, of a fine-tune (a fine-tune-then-quantise), and
    # one whose card names the wrong base; bitsandbytes 4-bit where bitsandbytes imports
    bnb4 = ("bnb-nf4-dq", "bnb-fp4") if _has("bitsandbytes") else ()
    for i, parent in enumerate([parents[0]] + [m for m in parents if models[m].get("parents")][:1]):
        pdir = zoo / parent
        cfg = json.loads((pdir / "config.json").read_text())
        state = {k: v.float().numpy() for k, v in _state(pdir).items()}
        name = parent.split("/", 1)[1]
        created = models[parent].get("created_at") or "2024-01-01T00:00:00Z"
        lic = models[parent].get("license") or "other"
        schemes = ("fp8-block", "fp8-channel", "mlx-4", "ct-int4", "ct-int4-asym", "mlx-3", "mlx-6", "gptq-4-act",
                   "gptq-3", "awq-4") + bnb4 if i == 0 else ("fp8-block", "ct-int4", "gptq-4-act") + bnb4[:1]
        for j, scheme in enumerate(schemes):
            org = {"fp8-block": "neuralmagic-zoo", "fp8-channel": "redhat-zoo", "ct-int4": "redhat-zoo",
                   "ct-int4-asym": "neuralmagic-zoo"}.get(scheme) or (
                "mlx-community-zoo" if scheme.startswith("mlx") else "TheBloke-zoo" if scheme.startswith(("gptq", "awq"))
                else "unsloth-zoo")
            wrong = i == 0 and scheme == "fp8-channel"  # the card names another zoo model as the base
            declared = (parents[1] if len(parents) > 1 else parent) if wrong else parent
            repo = add(f"{org}/{name}-{scheme}", parent, "quantized", scheme, declared_base_model=declared,
                       declared_kind="wrong" if wrong else "true", created_at=_later(created, 50 + j))
            write_packed(repo, state, scheme, cfg)
            _card(repo / "README.md", {"created_at": _later(created, 50 + j), "license": lic,
                                       "base_model": declared, "base_model_relation": "quantized"},
                  f"{name} {scheme}")

    # an independent model of the same shapes, as GGUF (its metadata falsely naming the root) and pickle
    parent = parents[0]
    cfg = json.loads((zoo / parent / "config.json").read_text())
    rng = np.random.default_rng(seed + 9091)
    state = {k: (rng.standard_normal(v.shape) * float(v.float().std())).astype(np.float32)
             for k, v in _state(zoo / parent).items()}
    repo = add("someone/Nano-lookalike-bin", None, None, "pickle", created_at="2025-06-01T00:00:00Z",
               independent=True)
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, repo / "pytorch_model.bin")
    shutil.copy(zoo / parent / "config.json", repo / "config.json")
    models["someone/Nano-lookalike-bin"] = dict(added[-1][1], root="someone/Nano-lookalike-bin",
                                                weight_root="someone/Nano-lookalike-bin", license=None)
    repo = add("someone/Nano-lookalike-GGUF", "someone/Nano-lookalike-bin", "quantized", "gguf",
               declared_base_model=parent, created_at="2025-06-02T00:00:00Z", independent=True)
    write_gguf(repo / "lookalike.Q8_0.gguf", state, Q.Q8_0, heads=int(cfg["num_attention_heads"]),
               kv_heads=int(cfg.get("num_key_value_heads", cfg["num_attention_heads"])),
               meta={"general.base_model.count": 1, "general.base_model.0.repo_url": f"https://huggingface.co/{parent}"})
    if bnb4:  # the independent model quantised as its own uploader would: no edge to the zoo
        repo = add("someone/Nano-lookalike-bnb-4bit", "someone/Nano-lookalike-bin", "quantized", bnb4[0],
                   declared_base_model=parent, declared_kind="wrong", created_at="2025-06-02T12:00:00Z",
                   independent=True)
        write_packed(repo, state, bnb4[0], cfg)
        _card(repo / "README.md", {"created_at": "2025-06-02T12:00:00Z", "base_model": parent,
                                   "base_model_relation": "quantized"}, "lookalike bnb 4-bit")
    repo = add("evil-org/free-weights", None, None, "pickle", expect_failure="hostile_pickle",
               created_at="2025-06-03T00:00:00Z")
    torch.save({"w": torch.zeros(4, 4), "payload": Hostile(zoo.resolve() / HOSTILE_MARKER)},
               repo / "pytorch_model.bin")

    for model_id, entry in added:
        models[model_id] = entry
    truth["edges"] = [e for e in truth["edges"] if e["child"] not in dict(added)] + [
        {"child": m, "parent": p, "relation": e["relation"]} for m, e in added for p in e["parents"]]
    truth["zoo"]["formats"] = {"seed": seed, "models": [m for m, _ in added]}
    (zoo / "truth.json").write_text(json.dumps(truth, indent=2))
    return {"models": len(added), "edges": sum(len(e["parents"]) for _, e in added), "parents": parents}
