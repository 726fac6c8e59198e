"""The zoo's recipe: which models exist, how each is derived, in what order (a pure plan).

``plan_zoo(size, seed)`` returns ``ModelSpec``s in topological order (parents first) with
the derivation op, parents, truth relation, dtype, sharding, training hyper-parameters and
creation time. The plan is a deterministic function of (size, seed). This module must not
touch tensors or files; card metadata (licences, declared base models) is added by ``cards``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from lineage_index.zoo.archs import ARCHS
from lineage_index.zoo.data import TaskPath, derive_seed
from lineage_index.zoo.names import NameBook
from lineage_index.zoo.recipes import DELAY_DAYS, RECIPES, RootDef
from lineage_index.zoo.training import TrainSpec

# op -> truth relation
RELATION_OF = {
    "finetune": "finetune",
    "partial": "finetune",
    "lora-merge": "finetune",
    "adapter": "adapter",
    "quant-int8": "quantized",
    "quant-fp16": "quantized",
    "prune": "prune",
    "merge": "merge",
    "copy": "copy",
    "distill": "distill",
}
STRUCTURAL_OPS = ("finetune", "partial", "lora-merge", "distill")
LEAF_OPS = ("adapter", "quant-int8", "quant-fp16", "prune", "copy")
CAN_PARENT = ("root-pretrain", "root-real", "finetune", "partial", "lora-merge", "distill", "merge")
EPOCH = datetime(2023, 1, 16, tzinfo=UTC)


@dataclass
class ModelSpec:
    """One model of the plan (mutable only while planning and carding)."""

    id: str
    arch: str
    op: str
    parents: tuple[str, ...]
    relation: str | None
    dtype: str
    depth: int
    root: str  # lineage root, following distill edges
    weight_root: str  # root of the weight-visible family (distilled students start one)
    created_at: datetime
    shards: int = 1
    train: TrainSpec | None = None
    task: TaskPath = ()  # task the model was last trained on (its data distribution)
    params: dict[str, Any] = field(default_factory=dict)
    card: Any = None  # cards.Card, set by cards.assign_cards

    @property
    def created_at_iso(self) -> str:
        return self.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")


def frozen_prefixes(arch: str) -> tuple[str, ...]:
    """Parameter-name prefixes a partial fine-tune freezes: embeddings and the lower half."""
    spec = ARCHS[arch]
    n_layers = dict(spec.config).get("num_hidden_layers", dict(spec.config).get("n_layer", 6))
    lower = range(max(1, n_layers // 2))
    if spec.model_type == "gpt2":
        return ("transformer.wte", "transformer.wpe") + tuple(f"transformer.h.{i}." for i in lower)
    if spec.model_type == "bert":
        pre = "bert." if spec.kind == "mlm" else ""
        return (f"{pre}embeddings.",) + tuple(f"{pre}encoder.layer.{i}." for i in lower)
    return ("model.embed_tokens",) + tuple(f"model.layers.{i}." for i in lower)


class _Planner:
    def __init__(self, size: str, seed: int):
        self.recipe = RECIPES[size]
        self.seed = seed
        self.rng = random.Random(derive_seed("plan", size, seed))
        self.names = NameBook(random.Random(derive_seed("names", size, seed)))
        self.specs: dict[str, ModelSpec] = {}
        self.root_weight: dict[str, float] = {}
        self.minilm_trained = 0
        self.merged: set[tuple[str, str]] = set()

    def new_task_id(self, model_id: str) -> int:
        return derive_seed(self.seed, "task", model_id) % 1_000_000_007

    def train_spec(
        self, model_id: str, arch: str, base: TaskPath, steps: int, lr: float, **kw: Any
    ) -> TrainSpec:
        """Training on a task derived from ``base`` (a fresh chain when ``base`` is empty)."""
        path = base + (self.new_task_id(model_id),)
        if ARCHS[arch].kind == "encoder":
            tasks = tuple(
                path + (derive_seed(path[-1], "class", i) % 1_000_000_007,) for i in range(4)
            )
        else:
            tasks = (path,)
        if arch == "minilm":
            kw.setdefault("batch", 8)
            kw.setdefault("length", 16)
        seed = derive_seed(self.seed, "train", model_id) % 2**31
        return TrainSpec(steps=steps, lr=lr, tasks=tasks, seed=seed, **kw)

    def add(self, spec: ModelSpec) -> ModelSpec:
        self.specs[spec.id] = spec
        return spec

    def add_root(self, r: RootDef) -> None:
        created = EPOCH + timedelta(
            days=self.rng.uniform(0, 300), seconds=self.rng.randint(0, 86399)
        )
        spec = ModelSpec(
            id=self.names.claim(*r.model_id.split("/", 1)),
            arch=r.arch,
            op="root-real" if r.arch == "minilm" else "root-pretrain",
            parents=(),
            relation=None,
            dtype=r.dtype,
            depth=0,
            root=r.model_id,
            weight_root=r.model_id,
            created_at=created,
            shards=r.shards,
            params={"license": r.license, "license_name": r.license_name},
        )
        if spec.op == "root-pretrain":
            spec.train = self.train_spec(
                spec.id, r.arch, (), self.recipe.pretrain_steps, 3e-3, weight_decay=0.01
            )
            spec.task = spec.train.tasks[0]
        self.root_weight[spec.id] = r.weight
        self.add(spec)

    def child_time(self, op: str, parents: list[ModelSpec]) -> datetime:
        lo, hi = DELAY_DAYS[op]
        start = max(p.created_at for p in parents)
        return start + timedelta(days=self.rng.uniform(lo, hi), seconds=self.rng.randint(60, 86399))

    def eligible(self, op: str) -> list[ModelSpec]:
        out = []
        for s in self.specs.values():
            if s.op not in CAN_PARENT:
                continue
            kind = ARCHS[s.arch].kind
            if s.arch == "minilm":
                if op not in ("finetune", "partial", "quant-int8", "copy"):
                    continue
                if (
                    op in ("finetune", "partial")
                    and self.minilm_trained >= self.recipe.minilm_max_trained
                ):
                    continue
            if op == "quant-int8" and not ARCHS[s.arch].int8_ok:
                continue
            if op == "quant-fp16" and s.dtype != "F32":
                continue
            if op == "distill" and (kind == "encoder" or s.op == "distill"):
                continue
            out.append(s)
        return out

    def weighted(self, cands: list[ModelSpec], depth_bias: float = 1.0) -> ModelSpec:
        """A family first (by its root's weight, so families stay balanced), then a member of
        it, deeper members preferred (so trees grow deep)."""
        families: dict[str, list[ModelSpec]] = {}
        for c in cands:
            families.setdefault(c.weight_root, []).append(c)
        keys = sorted(families)
        fam_w = [self.root_weight.get(k, 0.5) for k in keys]
        members = families[self.rng.choices(keys, weights=fam_w, k=1)[0]]
        weights = [1.0 + depth_bias * c.depth for c in members]
        return self.rng.choices(members, weights=weights, k=1)[0]

    def derive(self, op: str, parent: ModelSpec) -> ModelSpec:
        r, rec = self.rng, self.recipe
        arch = parent.arch
        if op == "finetune" and ARCHS[arch].kind == "mlm" and r.random() < 0.6:
            arch = "bert-nano"  # sentence-embedding fine-tune saved as a bare BertModel
        extra = ""
        if op == "prune":
            extra = str(r.choice((30, 40, 50)))
        elif op == "copy":
            extra = "rename" if r.random() < 0.3 else ""
        model_id = self.names.child(op, parent.id, ARCHS[arch].kind, extra)
        dtype = parent.dtype
        if op == "finetune" and r.random() < 0.25 and parent.dtype in ("F32", "BF16"):
            dtype = "BF16" if parent.dtype == "F32" else "F32"
        elif op == "quant-fp16":
            dtype = "F32"  # a round trip through fp16 keeps the F32 container (an fp16 re-upload is a copy)
        elif op == "quant-int8":
            dtype = "I8"
        elif op == "copy" and parent.dtype == "F32" and r.random() < 0.5:
            dtype = "BF16"
        elif op == "distill":
            dtype = r.choice(("F32", "BF16"))
        spec = ModelSpec(
            id=model_id,
            arch=arch,
            op=op,
            parents=(parent.id,),
            relation=RELATION_OF[op],
            dtype=dtype,
            depth=parent.depth + 1,
            root=parent.root,
            weight_root=model_id if op == "distill" else parent.weight_root,
            created_at=self.child_time(op, [parent]),
            task=parent.task,
            shards=2 if (op in ("finetune", "distill") and r.random() < 0.15) else 1,
        )
        steps = rec.minilm_steps if arch == "minilm" else rec.finetune_steps
        lr = 2e-4 if arch == "minilm" else 3e-4
        base = parent.task
        if op in ("finetune", "partial"):
            spec.train = self.train_spec(
                model_id,
                arch,
                base,
                steps,
                lr,
                frozen=frozen_prefixes(arch) if op == "partial" else (),
            )
            if arch == "minilm":
                self.minilm_trained += 1
        elif op in ("lora-merge", "adapter"):
            spec.train = self.train_spec(model_id, arch, base, steps, 1e-3)
            spec.params = {"rank": r.choice((4, 8)), "lora_alpha": r.choice((8, 16))}
        elif op == "prune":
            spec.params = {"sparsity": int(extra) / 100}
            spec.train = self.train_spec(model_id, arch, base, max(4, steps // 2), 3e-4)
        elif op == "distill":
            seed = derive_seed(self.seed, "train", model_id) % 2**31
            spec.train = TrainSpec(
                steps=rec.distill_steps, lr=3e-3, tasks=(parent.task,), seed=seed
            )
            spec.params = {"init_seed": derive_seed(self.seed, "init", model_id) % 2**31}
        if spec.train is not None and op != "distill":
            spec.task = spec.train.tasks[0]
        return self.add(spec)

    def merge(self) -> ModelSpec | None:
        groups: dict[tuple[str, str], list[ModelSpec]] = {}
        for s in self.specs.values():
            if s.op in ("finetune", "partial", "lora-merge", "merge") and s.arch != "minilm":
                groups.setdefault((s.weight_root, s.arch), []).append(s)
        pairs = []
        for members in groups.values():
            for i, a in enumerate(members):
                for b in members[i + 1 :]:
                    if a.id in b.parents or b.id in a.parents or (a.id, b.id) in self.merged:
                        continue
                    pairs.append((a, b))
        if not pairs:
            # no two unrelated fine-tunes share a family yet: give one a sibling, then merge
            base = next(
                (
                    s
                    for s in self.specs.values()
                    if s.op == "finetune"
                    and s.arch != "minilm"
                    and self.specs[s.parents[0]].op in CAN_PARENT
                ),
                None,
            )
            if base is None:
                return None
            a, b = base, self.derive("finetune", self.specs[base.parents[0]])
            pairs = [(a, b)] if a.arch == b.arch else []
            if not pairs:
                return None
        a, b = self.rng.choice(pairs)
        self.merged.add((a.id, b.id))
        partner = b.id.split("/", 1)[1].split("-")[-1]
        model_id = self.names.child("merge", a.id, ARCHS[a.arch].kind, partner)
        alpha = round(self.rng.uniform(0.3, 0.7), 2)
        spec = ModelSpec(
            id=model_id,
            arch=a.arch,
            op="merge",
            parents=(a.id, b.id),
            relation="merge",
            dtype=a.dtype,
            depth=max(a.depth, b.depth) + 1,
            root=a.root,
            weight_root=a.weight_root,
            created_at=self.child_time("merge", [a, b]),
            task=a.task,
            params={"alpha": alpha},
        )
        return self.add(spec)

    def run(self) -> list[ModelSpec]:
        for r in self.recipe.roots:
            self.add_root(r)
        counts = dict(self.recipe.ops)
        # every root gets one fine-tune first, so every family has children
        roots = [s for s in self.specs.values() if not s.parents]
        for root in roots:
            if counts.get("finetune", 0) > 0 and root in self.eligible("finetune"):
                self.derive("finetune", root)
                counts["finetune"] -= 1
        structural = [op for op in STRUCTURAL_OPS for _ in range(counts.get(op, 0))]
        self.rng.shuffle(structural)
        for op in structural:
            self.derive(op, self.weighted(self.eligible(op), depth_bias=1.5))
        for _ in range(counts.get("merge", 0)):
            self.merge()
        leaves = [op for op in LEAF_OPS for _ in range(counts.get(op, 0))]
        self.rng.shuffle(leaves)
        for op in leaves:
            cands = self.eligible(op)
            if cands:
                self.derive(op, self.weighted(cands, depth_bias=0.5))
        return list(self.specs.values())


def plan_zoo(size: str, seed: int) -> list[ModelSpec]:
    """The zoo's models in topological order (deterministic in (size, seed))."""
    if size not in RECIPES:
        raise ValueError(f"unknown zoo size {size!r}; choose one of {sorted(RECIPES)}")
    return _Planner(size, seed).run()
