"""Training-free derivations of the zoo: dtype casts, bitsandbytes int8, pruning masks, linear
merges, LoRA merge-in and the PEFT adapter layout.

Functions take and return tensor dicts keyed by Hugging Face names; they are pure (inputs are
never modified) and deterministic. This module must not train models or write files.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from lineage_index.zoo.archs import Tensors, linear_weight_names
from lineage_index.zoo.training import LoraResult

DTYPES: dict[str, torch.dtype] = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}
TORCH_DTYPE_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def cast(state: Tensors, dtype: str) -> Tensors:
    """Every floating tensor cast to ``dtype`` (F32/F16/BF16); integer tensors untouched."""
    target = DTYPES[dtype]
    return {
        k: (v.to(target).contiguous() if v.is_floating_point() else v.clone())
        for k, v in state.items()
    }


def to_float(state: Tensors) -> Tensors:
    """Float32 view of a state (the values a child starts from)."""
    return {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}


def quantize_int8(state: Tensors, arch: str) -> Tensors:
    """bitsandbytes LLM.int8 serialisation of ``state``.

    Each linear weight W [out, in] becomes ``<module>.weight`` int8 = round(W / SCB * 127) and
    ``<module>.SCB`` float32 [out] = per-row absmax, plus ``<module>.weight_format`` (uint8
    scalar 0 = row-major), exactly as bitsandbytes' Linear8bitLt writes them. Everything else
    is stored as float16, as a model loaded with ``load_in_8bit`` is.
    """
    linear = set(linear_weight_names(arch))
    out: Tensors = {}
    for name, t in state.items():
        if name in linear and t.dim() == 2:
            w = t.to(torch.float32)
            scb = w.abs().amax(dim=1)
            safe = torch.where(scb > 0, scb, torch.ones_like(scb))
            q = torch.round(w / safe[:, None] * 127.0).clamp_(-127, 127).to(torch.int8)
            module = name[: -len(".weight")]
            out[name] = q.contiguous()
            out[f"{module}.SCB"] = scb.contiguous()
            out[f"{module}.weight_format"] = torch.tensor(0, dtype=torch.uint8)
        elif t.is_floating_point():
            out[name] = t.to(torch.float16).contiguous()
        else:
            out[name] = t.clone()
    return out


def dequantize_int8(state: Tensors) -> Tensors:
    """Float32 weights back from an int8 state (used by tests and by children of quants)."""
    out: Tensors = {}
    for name, t in state.items():
        if name.endswith(".SCB") or name.endswith(".weight_format"):
            continue
        scb_name = name[: -len(".weight")] + ".SCB" if name.endswith(".weight") else ""
        if t.dtype == torch.int8 and scb_name in state:
            out[name] = t.to(torch.float32) * state[scb_name][:, None] / 127.0
        else:
            out[name] = t.to(torch.float32) if t.is_floating_point() else t
    return out


def magnitude_masks(state: Tensors, arch: str, sparsity: float) -> dict[str, torch.Tensor]:
    """Per-tensor magnitude pruning masks: the ``sparsity`` smallest |w| of each linear weight
    get 0, the rest 1 (exact count, ties broken by position)."""
    masks: dict[str, torch.Tensor] = {}
    for name in linear_weight_names(arch):
        if name not in state:
            continue
        w = state[name].to(torch.float32)
        flat = w.abs().flatten()
        k = int(round(sparsity * flat.numel()))
        mask = torch.ones_like(flat)
        if k > 0:
            order = torch.argsort(flat, stable=True)
            mask[order[:k]] = 0.0
        masks[name] = mask.view_as(w)
    return masks


def linear_merge(a: Tensors, b: Tensors, alpha: float) -> Tensors:
    """child = alpha * A + (1 - alpha) * B for every tensor (float32 arithmetic)."""
    if a.keys() != b.keys():
        raise ValueError("merge parents have different tensor names")
    out: Tensors = {}
    for k in a:
        if a[k].is_floating_point():
            out[k] = alpha * a[k].to(torch.float32) + (1 - alpha) * b[k].to(torch.float32)
        else:
            out[k] = a[k].clone()
    return out


def merge_lora(state: Tensors, lora: LoraResult) -> Tensors:
    """W + scale * B A on every LoRA target (other tensors byte-identical)."""
    out = dict(state)
    for module, delta in lora.deltas.items():
        name = f"{module}.weight"
        base = state[name]
        out[name] = (base.to(torch.float32) + delta).to(base.dtype).contiguous()
    return out


def peft_tensors(lora: LoraResult) -> Tensors:
    """adapter_model.safetensors content in PEFT naming (adapter name stripped)."""
    out: Tensors = {}
    for module in sorted(lora.factors):
        a, b = lora.factors[module]
        out[f"base_model.model.{module}.lora_A.weight"] = a.contiguous()
        out[f"base_model.model.{module}.lora_B.weight"] = b.contiguous()
    return out


def peft_config(lora: LoraResult, base_model: str, task_type: str) -> dict[str, Any]:
    """adapter_config.json as PEFT writes it for a LoRA adapter."""
    return {
        "alpha_pattern": {},
        "auto_mapping": None,
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": lora.fan_in_fan_out,
        "inference_mode": True,
        "init_lora_weights": True,
        "layers_pattern": None,
        "layers_to_transform": None,
        "lora_alpha": lora.alpha,
        "lora_dropout": 0.05,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": lora.rank,
        "rank_pattern": {},
        "revision": None,
        "target_modules": sorted(lora.target_modules),
        "task_type": task_type,
        "use_dora": False,
        "use_rslora": False,
    }


_BLOCK = re.compile(r"(?:^|\.)(?:layers|layer|h)\.\d+\.")


def block_matrices(state: Tensors) -> list[str]:
    """2-D weights inside repeated blocks (``layers.N.`` / ``layer.N.`` / ``h.N.``): what
    quantisers and pruners touch (embeddings, heads and norms stay)."""
    return [k for k, v in state.items() if _BLOCK.search(k) and k.endswith(".weight") and v.dim() == 2]


def quantise_as_float(state: Tensors, bits: int, group: int | None) -> Tensors:
    """Round-to-nearest quantisation then de-quantised back to float (what a user who saves a
    quantised model with ``dequantize()`` uploads): ``bits`` symmetric per row (``group=None``, or a
    group that does not divide the row), or
    ``bits`` asymmetric per group of ``group`` input columns with a zero point."""
    out = {k: v.clone() for k, v in state.items()}
    for k in block_matrices(state):
        w = state[k].to(torch.float64)
        if group is None or w.shape[1] % group:  # a group must divide the row: else per row
            scale = w.abs().amax(dim=1, keepdim=True) / (2 ** (bits - 1) - 1)
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            out[k] = (torch.round(w / scale) * scale).to(torch.float32)
        else:
            g = w.reshape(w.shape[0], -1, group)
            lo, hi = g.amin(dim=2, keepdim=True), g.amax(dim=2, keepdim=True)
            scale = (hi - lo).clamp_min(1e-12) / (2**bits - 1)
            zero = torch.round(-lo / scale)
            q = torch.clamp(torch.round(g / scale) + zero, 0, 2**bits - 1)
            out[k] = ((q - zero) * scale).reshape(w.shape).to(torch.float32)
    return out


def block_magnitude_masks(state: Tensors, sparsity: float) -> dict[str, torch.Tensor]:
    """Per-matrix magnitude pruning of the block matrices: the ``sparsity`` smallest |w| go."""
    masks = {}
    for k in block_matrices(state):
        w = state[k].abs().flatten()
        cut = torch.kthvalue(w, max(1, int(sparsity * w.numel()))).values
        masks[k] = (state[k].abs() > cut).to(state[k].dtype)
    return masks


def two_four_masks(state: Tensors) -> dict[str, torch.Tensor]:
    """2:4 semi-structured sparsity: in every run of 4 input columns the 2 smallest |w| go."""
    masks = {}
    for k in block_matrices(state):
        w = state[k]
        groups = w.abs().reshape(w.shape[0], -1, 4)
        keep = torch.zeros_like(groups)
        keep.scatter_(2, groups.topk(2, dim=2).indices, 1.0)
        masks[k] = keep.reshape(w.shape)
    return masks


def ties_merge(base: Tensors, models: list[Tensors], density: float = 0.2, lam: float = 1.0) -> Tensors:
    """TIES: trim each task vector to its top ``density`` magnitudes, elect a sign per element
    by summed mass, average the agreeing values (Yadav et al. 2023)."""
    out = {}
    for k, b in base.items():
        taus = torch.stack([m[k].to(torch.float64) - b.to(torch.float64) for m in models])
        flat = taus.reshape(len(models), -1).abs()
        keep_n = max(1, int(density * flat.shape[1]))
        cut = flat.topk(keep_n, dim=1).values[:, -1:]
        taus = taus * (flat >= cut).reshape(taus.shape)
        sign = torch.sign(taus.sum(dim=0))
        agree = (torch.sign(taus) == sign) & (taus != 0)
        merged = (taus * agree).sum(dim=0) / agree.sum(dim=0).clamp_min(1)
        out[k] = (b.to(torch.float64) + lam * merged).to(b.dtype)
    return out


def dare_merge(base: Tensors, models: list[Tensors], drop: float, seed: int) -> Tensors:
    """DARE-linear: drop each task-vector element with probability ``drop``, rescale the rest by
    1/(1-drop), average (Yu et al. 2023)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, b in base.items():
        acc = torch.zeros_like(b, dtype=torch.float64)
        for m in models:
            tau = m[k].to(torch.float64) - b.to(torch.float64)
            keep = (torch.rand(tau.shape, generator=gen) >= drop).to(torch.float64)
            acc += tau * keep / (1 - drop)
        out[k] = (b.to(torch.float64) + acc / len(models)).to(b.dtype)
    return out
