"""Writes zoo repositories in Hugging Face Hub layout, and truth.json.

A full model: ``config.json``, ``model.safetensors`` or ``model-0000i-of-0000n.safetensors`` +
``model.safetensors.index.json``, ``README.md`` (+ ``generation_config.json`` for causal LMs,
sentence-transformers files for MiniLM descendants). A PEFT adapter: ``adapter_config.json``,
``adapter_model.safetensors``, ``README.md``. Output bytes depend only on the inputs. This
module writes files only: it must not train, derive weights or decide card contents.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from lineage_index.zoo.archs import ARCHS, MINILM_REPO_FILES, Tensors, config_dict, minilm_dir
from lineage_index.zoo.derive import TORCH_DTYPE_NAMES

SAFETENSORS_METADATA = {"format": "pt"}
BNB_INT8_CONFIG: dict[str, Any] = {
    "_load_in_4bit": False,
    "_load_in_8bit": True,
    "bnb_4bit_compute_dtype": "float32",
    "bnb_4bit_quant_storage": "uint8",
    "bnb_4bit_quant_type": "fp4",
    "bnb_4bit_use_double_quant": False,
    "llm_int8_enable_fp32_cpu_offload": False,
    "llm_int8_has_fp16_weight": False,
    "llm_int8_skip_modules": None,
    "llm_int8_threshold": 6.0,
    "load_in_4bit": False,
    "load_in_8bit": True,
    "quant_method": "bitsandbytes",
}


def write_json(path: Path, obj: Any) -> int:
    """Write ``obj`` as indented JSON; returns bytes written."""
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return len(text.encode())


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def split_shards(tensors: Tensors, shards: int) -> list[list[str]]:
    """Tensor names split, in order, into ``shards`` groups of roughly equal bytes."""
    names = list(tensors)
    if shards <= 1:
        return [names]
    total = sum(_nbytes(t) for t in tensors.values())
    groups: list[list[str]] = [[]]
    acc = 0
    for name in names:
        limit = total * len(groups) / shards
        if groups[-1] and acc >= limit and len(groups) < shards:
            groups.append([])
        groups[-1].append(name)
        acc += _nbytes(tensors[name])
    return groups


def write_safetensors(repo: Path, tensors: Tensors, shards: int = 1, stem: str = "model") -> int:
    """Write tensors as one file or as HF shards + index; returns bytes written."""
    groups = split_shards(tensors, shards)
    written = 0
    if len(groups) == 1:
        path = repo / f"{stem}.safetensors"
        save_file(tensors, str(path), metadata=SAFETENSORS_METADATA)
        return path.stat().st_size
    weight_map: dict[str, str] = {}
    for i, names in enumerate(groups, start=1):
        fname = f"{stem}-{i:05d}-of-{len(groups):05d}.safetensors"
        save_file({n: tensors[n] for n in names}, str(repo / fname), metadata=SAFETENSORS_METADATA)
        written += (repo / fname).stat().st_size
        weight_map.update({n: fname for n in names})
    index = {
        "metadata": {"total_size": sum(_nbytes(t) for t in tensors.values())},
        "weight_map": dict(sorted(weight_map.items())),
    }
    return written + write_json(repo / f"{stem}.safetensors.index.json", index)


def model_config(arch: str, dtype: str) -> dict[str, Any]:
    """config.json content for a full model stored as ``dtype`` (F32/F16/BF16/I8)."""
    cfg = config_dict(arch)
    if dtype == "I8":
        cfg["dtype"] = "float16"
        cfg["quantization_config"] = dict(BNB_INT8_CONFIG)
    else:
        cfg["dtype"] = TORCH_DTYPE_NAMES[dtype]
    return dict(sorted(cfg.items()))


def write_model_repo(
    repo: Path, arch: str, dtype: str, tensors: Tensors, shards: int, readme: str
) -> int:
    """A full model repository; returns bytes written."""
    repo.mkdir(parents=True, exist_ok=True)
    written = write_json(repo / "config.json", model_config(arch, dtype))
    written += write_safetensors(repo, tensors, shards)
    if ARCHS[arch].kind == "causal-lm":
        gen = {
            "_from_model_config": True,
            "transformers_version": config_dict(arch).get("transformers_version"),
        }
        written += write_json(repo / "generation_config.json", gen)
    if arch == "minilm":
        for rel in MINILM_REPO_FILES:
            if rel in ("config.json", "model.safetensors"):
                continue
            dst = repo / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(minilm_dir() / rel, dst)
            written += dst.stat().st_size
    (repo / "README.md").write_text(readme, encoding="utf-8")
    return written + len(readme.encode())


def write_real_root(repo: Path, readme: str) -> int:
    """The real all-MiniLM-L6-v2 repository, byte for byte, with our README."""
    repo.mkdir(parents=True, exist_ok=True)
    written = 0
    for rel in MINILM_REPO_FILES:
        dst = repo / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(minilm_dir() / rel, dst)
        written += dst.stat().st_size
    (repo / "README.md").write_text(readme, encoding="utf-8")
    return written + len(readme.encode())


def write_adapter_repo(
    repo: Path, tensors: Tensors, adapter_config: dict[str, Any], readme: str
) -> int:
    """A PEFT LoRA adapter repository; returns bytes written."""
    repo.mkdir(parents=True, exist_ok=True)
    written = write_json(repo / "adapter_config.json", adapter_config)
    save_file(tensors, str(repo / "adapter_model.safetensors"), metadata=SAFETENSORS_METADATA)
    written += (repo / "adapter_model.safetensors").stat().st_size
    (repo / "README.md").write_text(readme, encoding="utf-8")
    return written + len(readme.encode())


def minilm_readme_body() -> tuple[dict[str, Any], str]:
    """Front matter and body of the real all-MiniLM-L6-v2 card."""
    import yaml

    text = (minilm_dir() / "README.md").read_text(encoding="utf-8")
    _, fm, body = text.split("---", 2)
    return yaml.safe_load(fm), body.lstrip("\n")
