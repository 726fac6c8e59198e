"""Canonical tensor names and the architecture/family signature, from the header alone.

A tensor name such as ``model.layers.3.self_attn.q_proj.weight`` becomes the canonical key
``layers.3.self_attn.q_proj.weight`` with role ``self_attn.q_proj.weight`` and layer 3, so
wrappers and heads (``bert.``, ``base_model.model.``, ...) do not break alignment between
models. The rules are data (``data/canon.json``). This module reads no weight bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from lineage_index.records import TensorInfo


@dataclass(frozen=True)
class CanonRules:
    strip_prefixes: tuple[str, ...]
    layer_re: re.Pattern[str]
    quant_aux_suffixes: dict[str, str]
    adapter_markers: tuple[str, ...]
    vocab_roles: tuple[str, ...]
    head_roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class CanonName:
    key: str  # canonical key, unique within a model
    role: str  # key without the layer container and index
    layer: int | None


@lru_cache(maxsize=1)
def rules() -> CanonRules:
    text = resources.files("lineage_index.indexer.sketch").joinpath("data/canon.json").read_text()
    data = json.loads(text)
    containers = "|".join(re.escape(c) for c in data["layer_containers"])
    return CanonRules(
        strip_prefixes=tuple(data["strip_prefixes"]),
        layer_re=re.compile(rf"(?:^|\.)(?P<container>{containers})\.(?P<idx>\d+)\."),
        quant_aux_suffixes=dict(data["quant_aux_suffixes"]),
        adapter_markers=tuple(data["adapter_markers"]),
        vocab_roles=tuple(data["vocab_roles"]),
        head_roles=tuple(data.get("head_roles", ())),
    )


def canonical(name: str) -> CanonName:
    """Canonicalise one tensor name (see module docstring)."""
    r = rules()
    stripped = name
    changed = True
    while changed:  # wrappers nest: base_model.model.model.layers...
        changed = False
        for prefix in r.strip_prefixes:
            if stripped.startswith(prefix):
                stripped = stripped[len(prefix) :]
                changed = True
    m = r.layer_re.search(stripped)
    if m is None:
        return CanonName(key=stripped, role=stripped, layer=None)
    layer = int(m.group("idx"))
    role = stripped[: m.start()] + ("." if m.start() > 0 else "") + stripped[m.end() :]
    role = role.lstrip(".")
    return CanonName(key=stripped, role=role, layer=layer)


def quant_aux_kind(name: str) -> str | None:
    """The quantisation scheme a tensor name marks as aux data (``.SCB`` -> bnb-int8), if any."""
    for suffix, kind in rules().quant_aux_suffixes.items():
        if name.endswith(suffix):
            return kind
    return None


def is_adapter_tensor(name: str) -> bool:
    return any(f".{marker}" in name for marker in rules().adapter_markers)


def is_vocab_role(role: str) -> bool:
    first = role.split(".", 1)[0]
    return first in rules().vocab_roles or any(role.startswith(v + ".") for v in rules().vocab_roles)


def is_head_role(role: str) -> bool:
    """A task head (classifier output layer) of a model: ``head.weight``, ``classifier.bias``..."""
    return role.split(".", 1)[0] in rules().head_roles


def family_signature(tensors: tuple[TensorInfo, ...] | list[TensorInfo]) -> tuple[str, str]:
    """(hash, readable description) of the architecture, from names and shapes only.

    Only the repeated blocks (tensors with a layer index) count when there are any: task heads,
    poolers and vocabulary matrices differ between a base model and its fine-tunes. Dtypes and
    quantisation aux tensors are left out too, so an fp16 copy, an int8 quantisation or a
    fine-tune with a new head or a resized vocabulary stay in the family. Task heads
    (``head_roles``) are left out too: a transfer to another label space changes only them.
    """
    roles: dict[str, set[tuple[int, ...]]] = {}
    layers: set[int] = set()
    for t in tensors:
        if quant_aux_kind(t.name) or is_adapter_tensor(t.name):
            continue
        c = canonical(t.name)
        if c.layer is None and is_head_role(c.role):
            continue
        shape = tuple(t.shape)
        if is_vocab_role(c.role) and len(shape) == 2:
            shape = (-1, shape[1])
        if c.layer is not None:
            layers.add(c.layer)
        roles.setdefault(c.role, set()).add(shape)
    if not roles:
        return "empty", "empty"
    layered = {canonical(t.name).role for t in tensors if canonical(t.name).layer is not None}
    if layered:
        roles = {k: v for k, v in roles.items() if k in layered}
    parts = [f"L{len(layers)}"] + [
        f"{k}:{'|'.join('x'.join(map(str, s)) for s in sorted(v))}" for k, v in sorted(roles.items())
    ]
    desc = ";".join(parts)
    return hashlib.sha1(desc.encode()).hexdigest()[:16], desc


def adapter_target_signature(tensors: tuple[TensorInfo, ...] | list[TensorInfo]) -> dict[str, tuple[int, int]]:
    """For a PEFT adapter: canonical base role -> (out_features, in_features) from LoRA shapes."""
    a_in: dict[str, int] = {}
    b_out: dict[str, int] = {}
    for t in tensors:
        c = canonical(t.name)
        for marker, store, dim in (("lora_A", a_in, 1), ("lora_B", b_out, 0)):
            token = f".{marker}"
            if token in c.role and len(t.shape) == 2:
                base_role = c.role.split(token, 1)[0] + ".weight"
                store[base_role] = t.shape[dim]
    return {role: (b_out[role], a_in[role]) for role in a_in if role in b_out}


def describe_family(desc: str) -> str:
    """A sentence for a family signature (``L2;input_layernorm.weight:64;mlp.down_proj.weight:64x176;...``):
    the layer count, the hidden width and how many weight roles a layer has."""
    parts = [p for p in desc.split(";") if p]
    layers = next((p[1:] for p in parts if p.startswith("L") and p[1:].isdigit()), None)
    roles = [p.split(":", 1) for p in parts if ":" in p]
    widths = [int(s) for _, shape in roles for s in shape.split("x") if s.isdigit()]
    hidden = min(widths) if widths else None
    bits = [f"{layers} layers" if layers else "no repeated layers",
            f"width {hidden}" if hidden else None, f"{len(roles)} weight roles per layer" if roles else None]
    return ", ".join(b for b in bits if b)
