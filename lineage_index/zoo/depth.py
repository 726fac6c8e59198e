"""The depth-changing zoo: ``lineage-index zoo build OUT --depth``.

Really trained tiny Llama models (hidden 64, the ``llama-nano`` blocks) whose lineage changes
the NUMBER OF LAYERS, as test data for cross-depth lineage detection:

- ``A``: a 6-layer root pretrained from scratch; ``A-ft``: its full fine-tune on a derived task;
- ``A-pruned``: layer pruning of ``A-ft`` (layers 3 and 4 dropped, the rest renumbered) -> 4
  layers, and ``A-pruned-ft``: a short healing fine-tune of it;
- ``frankenmerge``: a mergekit-style passthrough merge, layers 0..3 of ``A-ft`` then layers 2..5
  of ``A`` -> 8 layers (embeddings, final norm and head from ``A-ft``);
- ``B``: an independent 6-layer root (other seed, other task) and ``B-upscaled``: SOLAR-style
  depth up-scaling of ``B`` with itself, layers 0..4 then 1..5 -> 10 layers;
- ``C``: an independent 4-layer root (same block shapes as ``A-pruned``), linked to nothing.

Copied layers are bit-identical to their source layers (same dtype, no training after the
copy). ``truth.json`` has the zoo's format (``build.truth_entry``) plus ``num_hidden_layers``
and ``layer_sources`` (per layer: the model and layer index it was copied from, or null for
trained layers). Models, training, cards and files reuse the zoo's modules; this module only
decides the composition and moves layers between state dicts. One seed gives byte-identical
files (1 torch thread, deterministic kernels).
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import torch
import transformers
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lineage_index.config import stderr_console
from lineage_index.zoo import derive as D
from lineage_index.zoo.archs import Tensors, load_into, make_config, state_of
from lineage_index.zoo.build import _deterministic_torch, _prepare_out, truth_entry
from lineage_index.zoo.cards import Card, render_readme
from lineage_index.zoo.data import TaskPath, derive_seed
from lineage_index.zoo.plan import EPOCH, ModelSpec
from lineage_index.zoo.recipes import DELAY_DAYS
from lineage_index.zoo.training import TrainSpec, train
from lineage_index.zoo.writing import model_config, write_json, write_model_repo

GENERATOR_VERSION = 1
BASE_ARCH = "llama-nano"  # block shapes, vocabulary and training objective of every model here
LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
PRETRAIN_STEPS, FINETUNE_STEPS, HEAL_STEPS = 100, 40, 25
SEQ_LENGTH = 32  # shorter than the zoo's 48: the build (trained twice by its test) stays fast

A, A_FT, B = "depthlab/Llama-Nano-6L", "acme-ai/Llama-Nano-6L-chat", "openlm-research/open_llama_nano_6l"
A_PRUNED, A_PRUNED_FT = "shortgpt-lab/Llama-Nano-4L-pruned", "nadia-r/Llama-Nano-4L-pruned-healed"
FRANKEN, B_UP = "franken-merges/Llama-Nano-8L-passthrough", "upstage-lite/open_llama_nano_10l_dus"
C = "indie-ml/Llama-Nano-4L-scratch"

BODY = {
    "root-pretrain": "A small foundation model pretrained from scratch.",
    "finetune": "Fine-tuned end to end for a downstream task.",
    "layer-prune": "Layer-pruned: two of the six decoder layers were removed (no retraining).",
    "passthrough-merge": "A passthrough (frankenmerge) of decoder layers from two models, made with mergekit.",
    "depth-upscale": "Depth up-scaled: the model's layers stacked twice with an overlap, made with mergekit.",
}


@dataclass(frozen=True)
class DepthMember:
    """One model: ``op`` on ``parents``; ``layers`` lists, per output layer, (parent index, layer)."""

    id: str
    op: str
    parents: tuple[str, ...] = ()
    n_layers: int = 6
    layers: tuple[tuple[int, int], ...] = ()  # structural ops only
    steps: int = 0
    lr: float = 3e-4
    dtype: str = "BF16"
    license: str = "apache-2.0"
    declares_base: bool = False
    relation: str | None = None


MEMBERS: tuple[DepthMember, ...] = (
    DepthMember(A, "root-pretrain", steps=PRETRAIN_STEPS, lr=3e-3),
    DepthMember(B, "root-pretrain", steps=PRETRAIN_STEPS, lr=3e-3, dtype="F32", license="mit"),
    DepthMember(C, "root-pretrain", n_layers=4, steps=PRETRAIN_STEPS, lr=3e-3, dtype="F32"),
    DepthMember(A_FT, "finetune", (A,), steps=FINETUNE_STEPS, declares_base=True, relation="finetune"),
    DepthMember(A_PRUNED, "layer-prune", (A_FT,), 4, ((0, 0), (0, 1), (0, 2), (0, 5)), relation="prune"),
    DepthMember(A_PRUNED_FT, "finetune", (A_PRUNED,), 4, steps=HEAL_STEPS, dtype="F32", declares_base=True,
                relation="finetune"),
    DepthMember(FRANKEN, "passthrough-merge", (A_FT, A), 8,
                tuple((0, i) for i in range(4)) + tuple((1, i) for i in range(2, 6)),
                declares_base=True, relation="merge"),
    DepthMember(B_UP, "depth-upscale", (B,), 10, tuple((0, i) for i in range(5)) + tuple((0, i) for i in range(1, 6)),
                dtype="F32", license="mit", relation="merge"),
)


@dataclass(frozen=True)
class DepthZooSummary:
    """What a depth-zoo build produced."""

    out: Path
    seed: int
    n_models: int
    n_edges: int
    relations: dict[str, int]
    layers: dict[str, int]  # model id -> num_hidden_layers
    seconds: float
    bytes_written: int

    @property
    def truth_path(self) -> Path:
        return self.out / "truth.json"


def layer_index(name: str) -> int | None:
    """Decoder-layer index of a Llama tensor name, or None outside the layers."""
    m = LAYER_KEY.match(name)
    return int(m.group(1)) if m else None


def stack_layers(base: Tensors, sources: list[tuple[Tensors, int]]) -> Tensors:
    """``base``'s non-layer tensors with decoder layers ``sources`` (state, layer) renumbered
    0..n-1, in save_pretrained order (embeddings, layers, norm, head); tensors are cloned."""
    out: Tensors = {}
    placed = False
    for name, t in base.items():
        if layer_index(name) is None:
            out[name] = t.clone()
            continue
        if placed:
            continue
        placed = True
        for new, (state, old) in enumerate(sources):
            prefix = f"model.layers.{old}."
            got = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if not got:
                raise ValueError(f"source has no decoder layer {old}")
            for suffix, v in got.items():
                out[f"model.layers.{new}.{suffix}"] = v.clone()
    return out


def make_depth_model(n_layers: int, seed: int) -> torch.nn.Module:
    """A freshly initialised ``llama-nano`` with ``n_layers`` decoder layers."""
    cfg = make_config(BASE_ARCH)
    cfg.num_hidden_layers = n_layers
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg)


def _task(seed: int, model_id: str, base: TaskPath = ()) -> TaskPath:
    return base + (derive_seed(seed, "depth-task", model_id) % 1_000_000_007,)


def _plan(seed: int) -> tuple[list[ModelSpec], dict[str, DepthMember]]:
    """ModelSpecs (the zoo's planning record) with times, tasks and honest cards."""
    rng = random.Random(derive_seed("depth-plan", seed))
    specs: dict[str, ModelSpec] = {}
    for m in MEMBERS:
        parents = [specs[p] for p in m.parents]
        if parents:
            lo, hi = DELAY_DAYS["merge" if m.relation == "merge" else m.relation or "finetune"]
            created: datetime = max(p.created_at for p in parents) + timedelta(
                days=rng.uniform(lo, hi), seconds=rng.randint(60, 86399))
        else:
            created = EPOCH + timedelta(days=rng.uniform(0, 300), seconds=rng.randint(0, 86399))
        task = parents[0].task if parents else ()
        train_spec = None
        if m.steps:
            task = _task(seed, m.id, task)
            train_spec = TrainSpec(steps=m.steps, lr=m.lr, tasks=(task,),
                                   seed=derive_seed(seed, "depth-train", m.id) % 2**31,
                                   length=SEQ_LENGTH, weight_decay=0.01 if not parents else 0.0)
        root = parents[0].root if parents else m.id
        spec = ModelSpec(id=m.id, arch=BASE_ARCH, op=m.op, parents=m.parents, relation=m.relation, dtype=m.dtype,
                         depth=max((p.depth for p in parents), default=-1) + 1, root=root, weight_root=root,
                         created_at=created, train=train_spec, task=task, params={"layers": m.n_layers})
        bases: str | list[str] | None = None
        if m.declares_base:
            bases = m.parents[0] if len(m.parents) == 1 else list(m.parents)
        tags = ["text-generation", "llama"] + (["mergekit", "merge"] if m.relation == "merge" else [])
        tags += [f"base_model:{b}" for b in ([bases] if isinstance(bases, str) else bases or [])]
        spec.card = Card(license=m.license, license_name=None, declared_license=m.license,
                         declared_license_name=None, declared_base_model=bases,
                         declared_relation="merge" if bases and m.relation == "merge" else None,
                         pipeline_tag="text-generation", library_name="transformers", tags=tags,
                         mess={"license": "honest", "base_model": "correct" if bases else "none"})
        specs[m.id] = spec
    return list(specs.values()), {m.id: m for m in MEMBERS}


def _realise(spec: ModelSpec, member: DepthMember, states: dict[str, Tensors], seed: int) -> Tensors:
    init_seed = derive_seed(seed, "depth-init", spec.id) % 2**31
    if member.layers:  # structural: layers copied, no training
        parents = [states[p] for p in spec.parents]
        merged = stack_layers(parents[0], [(parents[i], layer) for i, layer in member.layers])
        return D.cast(merged, spec.dtype)
    model = make_depth_model(member.n_layers, init_seed)
    if spec.parents:
        load_into(model, states[spec.parents[0]])
    assert spec.train is not None
    train(model, BASE_ARCH, spec.train)
    return D.cast(state_of(model), spec.dtype)


def _write(spec: ModelSpec, member: DepthMember, repo: Path, tensors: Tensors) -> int:
    readme = render_readme(spec, body=f"# {spec.id.split('/', 1)[1]}\n\n{BODY[spec.op]}\n")
    written = write_model_repo(repo, BASE_ARCH, spec.dtype, tensors, 1, readme)
    cfg = model_config(BASE_ARCH, spec.dtype)
    cfg["num_hidden_layers"] = member.n_layers
    old = (repo / "config.json").stat().st_size
    return written - old + write_json(repo / "config.json", cfg)


def _layer_sources(member: DepthMember) -> list[list[Any] | None]:
    if member.layers:
        return [[member.parents[i], layer] for i, layer in member.layers]
    return [None] * member.n_layers


def build_depth_zoo(out: Path, seed: int = 0, progress: bool = False) -> DepthZooSummary:
    """Train and write the depth-changing zoo for ``seed`` into ``out`` (+ truth.json).

    ``out`` must be empty, absent, or an earlier zoo (which is replaced).
    """
    started = time.perf_counter()
    out = Path(out)
    specs, members = _plan(seed)
    _prepare_out(out)
    states: dict[str, Tensors] = {}
    written = 0
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with _deterministic_torch(), Progress(*columns, disable=not progress, transient=False, console=stderr_console()) as bar:
        task = bar.add_task(f"depth zoo seed {seed}", total=len(specs))
        for spec in specs:
            bar.update(task, description=f"{spec.op:<17} {spec.id}")
            states[spec.id] = _realise(spec, members[spec.id], states, seed)
            written += _write(spec, members[spec.id], out / spec.id, states[spec.id])
            bar.advance(task)
    models: dict[str, Any] = {}
    for s in specs:
        entry = truth_entry(s)
        entry["arch"] = f"{BASE_ARCH}-{members[s.id].n_layers}l"
        entry["num_hidden_layers"] = members[s.id].n_layers
        entry["layer_sources"] = _layer_sources(members[s.id])
        models[s.id] = entry
    edges = [{"child": s.id, "parent": p, "relation": s.relation} for s in specs for p in s.parents]
    truth = {"zoo": {"kind": "depth", "seed": seed, "generator_version": GENERATOR_VERSION},
             "models": models, "edges": edges, "conflicts": []}
    written += write_json(out / "truth.json", truth)
    return DepthZooSummary(out=out, seed=seed, n_models=len(specs), n_edges=len(edges),
                           relations=dict(Counter(e["relation"] for e in edges)),
                           layers={s.id: members[s.id].n_layers for s in specs},
                           seconds=round(time.perf_counter() - started, 1), bytes_written=written)
