"""Builds a model zoo with known lineage: plan -> cards -> train/derive each model -> write.

``build_zoo(out, size, seed)`` realises the plan in topological order, keeps a parent's tensors
in memory only until its last child is made, writes every repository and ``truth.json``, and
shows rich progress. Torch runs on 1 thread (robust on a shared CPU) with deterministic algorithms, so one seed gives
byte-identical tensors. This module orchestrates; it must not define training objectives,
tensor transforms, card mess or file layout itself.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import load_file

from lineage_index.config import stderr_console
from lineage_index.zoo import derive as D
from lineage_index.zoo.archs import (
    ARCHS,
    Tensors,
    adapt_state,
    load_into,
    make_model,
    minilm_dir,
    state_of,
)
from lineage_index.zoo.cards import assign_cards, render_readme
from lineage_index.zoo.data import derive_seed
from lineage_index.zoo.plan import ModelSpec, plan_zoo
from lineage_index.zoo.training import distill, train, train_lora
from lineage_index.zoo.writing import (
    minilm_readme_body,
    write_adapter_repo,
    write_json,
    write_model_repo,
    write_real_root,
)

GENERATOR_VERSION = 1
THREADS = 1  # tiny models gain nothing from more; 2+ threads collapse when the CPU is shared


@dataclass(frozen=True)
class ZooSummary:
    """What a build produced."""

    out: Path
    size: str
    seed: int
    n_models: int
    n_edges: int
    relations: dict[str, int]
    ops: dict[str, int]
    roots: tuple[str, ...]
    architectures: dict[str, int]
    max_depth: int
    n_conflicts: int
    seconds: float
    bytes_written: int

    @property
    def truth_path(self) -> Path:
        return self.out / "truth.json"


@contextmanager
def _deterministic_torch() -> Iterator[None]:
    """Fixed threads, deterministic kernels, transformers' per-model warnings silenced."""
    from transformers.utils import logging as hf_logging

    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    verbosity = hf_logging.get_verbosity()
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)
        hf_logging.set_verbosity(verbosity)


def _model_from(spec: ModelSpec, parent: ModelSpec, state: Tensors, seed: int) -> torch.nn.Module:
    model = make_model(spec.arch, derive_seed(seed, "init", spec.id) % 2**31)
    load_into(model, adapt_state(state, parent.arch, spec.arch))
    return model


def _realise(
    spec: ModelSpec, specs: dict[str, ModelSpec], states: dict[str, Tensors], seed: int
) -> Any:
    """Tensors of ``spec`` (or, for an adapter, (tensors, adapter_config))."""
    op = spec.op
    if op == "root-real":
        return load_file(str(minilm_dir() / "model.safetensors"))
    if op == "root-pretrain":
        model = make_model(spec.arch, derive_seed(seed, "init", spec.id) % 2**31)
        train(model, spec.arch, spec.train)
        return D.cast(state_of(model), spec.dtype)
    parent = specs[spec.parents[0]]
    pstate = states[parent.id]
    if op in ("finetune", "partial"):
        model = _model_from(spec, parent, pstate, seed)
        train(model, spec.arch, spec.train)
        return D.cast(state_of(model), spec.dtype)
    if op in ("lora-merge", "adapter"):
        model = _model_from(spec, parent, pstate, seed)
        lora = train_lora(
            model, spec.arch, spec.train, spec.params["rank"], spec.params["lora_alpha"]
        )
        if op == "adapter":
            task = "CAUSAL_LM" if ARCHS[spec.arch].kind == "causal-lm" else "FEATURE_EXTRACTION"
            return D.peft_tensors(lora), D.peft_config(lora, parent.id, task)
        return D.cast(D.merge_lora(pstate, lora), spec.dtype)
    if op == "quant-int8":
        return D.quantize_int8(pstate, spec.arch)
    if op == "quant-fp16":  # fp16 round trip: values on the fp16 grid, stored at full precision
        return D.cast(D.cast(pstate, "F16"), spec.dtype)
    if op == "copy":
        return (
            D.cast(pstate, spec.dtype)
            if spec.dtype != parent.dtype
            else {k: v.clone() for k, v in pstate.items()}
        )
    if op == "prune":
        model = _model_from(spec, parent, pstate, seed)
        masks = D.magnitude_masks(state_of(model), spec.arch, spec.params["sparsity"])
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, mask in masks.items():
                params[name].mul_(mask)
        train(model, spec.arch, spec.train, masks=masks)
        return D.cast(state_of(model), spec.dtype)
    if op == "merge":
        merged = D.linear_merge(pstate, states[spec.parents[1]], spec.params["alpha"])
        return D.cast(merged, spec.dtype)
    if op == "distill":
        teacher = _model_from(spec, parent, pstate, seed)
        student = make_model(spec.arch, spec.params["init_seed"])
        distill(student, teacher, spec.arch, spec.train)
        return D.cast(state_of(student), spec.dtype)
    raise ValueError(f"unknown op {op}")


def _write(spec: ModelSpec, repo: Path, result: Any) -> int:
    if spec.op == "root-real":
        fm, body = minilm_readme_body()
        fm["created_at"] = spec.created_at_iso
        text = "---\n" + yaml.safe_dump(fm, sort_keys=False, allow_unicode=True) + "---\n\n" + body
        return write_real_root(repo, text)
    readme = render_readme(spec)
    if spec.op == "adapter":
        tensors, adapter_config = result
        return write_adapter_repo(repo, tensors, adapter_config, readme)
    return write_model_repo(repo, spec.arch, spec.dtype, result, spec.shards, readme)


def truth_entry(spec: ModelSpec) -> dict[str, Any]:
    """The truth.json record of one model."""
    c = spec.card
    return {
        "license": c.license,
        "license_name": c.license_name,
        "root": spec.root,
        "weight_root": spec.weight_root,
        "architecture": ARCHS[spec.arch].model_class,
        "model_type": ARCHS[spec.arch].model_type,
        "arch": spec.arch,
        "kind": "adapter" if spec.op == "adapter" else "model",
        "method": spec.op,
        "relation": spec.relation,
        "parents": list(spec.parents),
        "depth": spec.depth,
        "dtype": "F32" if spec.op == "adapter" else spec.dtype,
        "shards": spec.shards,
        "params": {
            k: v for k, v in spec.params.items() if k in ("alpha", "sparsity", "rank", "lora_alpha")
        },
        "declared_license": c.declared_license,
        "declared_license_name": c.declared_license_name,
        "declared_base_model": c.declared_base_model,
        "declared_base_model_relation": c.declared_relation,
        "pipeline_tag": c.pipeline_tag,
        "library_name": c.library_name,
        "created_at": spec.created_at_iso,
        "mess": dict(c.mess),
    }


def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        truth = out / "truth.json"
        if not truth.exists():
            from lineage_index.errors import UsageError

            raise UsageError(
                f"{out} is not empty and holds no zoo (no truth.json); refusing to overwrite"
            )
        import json

        old = json.loads(truth.read_text())
        for model_id in old.get("models", {}):
            shutil.rmtree(out / model_id, ignore_errors=True)
        for org in {m.split("/", 1)[0] for m in old.get("models", {})}:
            if (out / org).is_dir() and not any((out / org).iterdir()):
                (out / org).rmdir()
        truth.unlink()
    out.mkdir(parents=True, exist_ok=True)


def build_zoo(out: Path, size: str = "small", seed: int = 0, progress: bool = True) -> ZooSummary:
    """Build the zoo ``size`` (tiny | small | medium) for ``seed`` into ``out``.

    ``out`` must be empty, absent, or an earlier zoo (which is replaced).
    """
    started = time.perf_counter()
    out = Path(out)
    specs = plan_zoo(size, seed)
    conflicts = assign_cards(specs, seed)
    by_id = {s.id: s for s in specs}
    _prepare_out(out)
    pending = Counter(p for s in specs for p in s.parents)
    states: dict[str, Tensors] = {}
    written = 0
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with _deterministic_torch(), Progress(*columns, disable=not progress, transient=False, console=stderr_console()) as bar:
        task = bar.add_task(f"zoo {size} seed {seed}", total=len(specs))
        for spec in specs:
            bar.update(task, description=f"{spec.op:<13} {spec.id}")
            result = _realise(spec, by_id, states, seed)
            written += _write(spec, out / spec.id, result)
            if pending[spec.id] > 0 and spec.op != "adapter":
                states[spec.id] = result
            for p in spec.parents:
                pending[p] -= 1
                if pending[p] == 0:
                    states.pop(p, None)
            bar.advance(task)
        bar.update(task, description=f"zoo {size} seed {seed}: done")
    edges = [{"child": s.id, "parent": p, "relation": s.relation} for s in specs for p in s.parents]
    truth = {
        "zoo": {"size": size, "seed": seed, "generator_version": GENERATOR_VERSION},
        "models": {s.id: truth_entry(s) for s in specs},
        "edges": edges,
        "conflicts": conflicts,
    }
    written += write_json(out / "truth.json", truth)
    return ZooSummary(
        out=out,
        size=size,
        seed=seed,
        n_models=len(specs),
        n_edges=len(edges),
        relations=dict(Counter(e["relation"] for e in edges)),
        ops=dict(Counter(s.op for s in specs)),
        roots=tuple(s.id for s in specs if not s.parents),
        architectures=dict(Counter(ARCHS[s.arch].model_class for s in specs)),
        max_depth=max(s.depth for s in specs),
        n_conflicts=len(conflicts),
        seconds=round(time.perf_counter() - started, 1),
        bytes_written=written,
    )
