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
             and t.get("method") != "adapter" and any((zoo / m).glob("*.safetensors"))]
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
