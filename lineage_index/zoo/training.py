"""Real (CPU) training loops of the zoo: pretraining, fine-tuning, LoRA, masked recovery, distillation.

Every loop is deterministic for a given ``TrainSpec.seed`` (global torch seed for dropout, a
private generator for data). Objectives follow the architecture kind: next-token loss for
causal LMs, masked-LM loss for Bert MLMs, and sequence classification (mean pooling + a
throw-away linear head) for bare encoders. This module trains models in memory only: it must
not write files or decide what to train.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lineage_index.zoo.archs import ARCHS, MASK_TOKEN, MINILM_MASK_TOKEN, lora_module_names
from lineage_index.zoo.data import (
    MarkovTask,
    TaskPath,
    classification_batch,
    make_task,
    mask_tokens,
)


@dataclass(frozen=True)
class TrainSpec:
    """Hyper-parameters of one training run."""

    steps: int
    lr: float
    tasks: tuple[TaskPath, ...]  # causal/MLM: the first is used; encoder: one class per task
    seed: int
    batch: int = 16
    length: int = 48
    weight_decay: float = 0.0
    frozen: tuple[str, ...] = field(default=())  # parameter-name prefixes kept frozen


def _tasks(arch: str, spec: TrainSpec) -> list[MarkovTask]:
    a = ARCHS[arch]
    return [make_task(t, a.n_tokens, a.token_offset) for t in spec.tasks]


def _lr_at(step: int, spec: TrainSpec) -> float:
    warm = max(1, spec.steps // 10)
    if step < warm:
        return spec.lr * (step + 1) / warm
    progress = (step - warm) / max(1, spec.steps - warm)
    return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


class _Objective:
    """Loss of one batch for ``arch`` (owns the throw-away head of encoders)."""

    def __init__(self, model: nn.Module, arch: str, spec: TrainSpec, gen: torch.Generator):
        self.model, self.arch, self.spec, self.gen = model, arch, spec, gen
        self.kind = ARCHS[arch].kind
        self.tasks = _tasks(arch, spec)
        self.head: nn.Linear | None = None
        if self.kind == "encoder":
            hidden = model.config.hidden_size
            self.head = nn.Linear(hidden, max(2, len(self.tasks)))

    def batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        s = self.spec
        if self.kind == "encoder":
            return classification_batch(self.tasks, s.batch, s.length, self.gen)
        return self.tasks[0].sample(s.batch, s.length, self.gen), None

    def loss(self, ids: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.kind == "causal-lm":
            return self.model(input_ids=ids, labels=ids).loss
        if self.kind == "mlm":
            mask_id = MINILM_MASK_TOKEN if self.arch == "minilm" else MASK_TOKEN
            inputs, mlm_labels = mask_tokens(ids, mask_id, self.gen)
            return self.model(input_ids=inputs, labels=mlm_labels).loss
        assert self.head is not None and labels is not None
        pooled = self.model(input_ids=ids).last_hidden_state.mean(dim=1)
        return F.cross_entropy(self.head(pooled), labels)


def _run(
    model: nn.Module,
    params: list[nn.Parameter],
    objective: _Objective,
    spec: TrainSpec,
    masks: dict[str, torch.Tensor] | None = None,
) -> float:
    named = dict(model.named_parameters())
    if objective.head is not None:
        params = params + list(objective.head.parameters())
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    model.train()
    last = float("nan")
    for step in range(spec.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, spec)
        ids, labels = objective.batch()
        loss = objective.loss(ids, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if masks:
            with torch.no_grad():
                for name, mask in masks.items():
                    named[name].mul_(mask)
        last = float(loss.detach())
    model.eval()
    return last


def train(
    model: nn.Module, arch: str, spec: TrainSpec, masks: dict[str, torch.Tensor] | None = None
) -> float:
    """Train ``model`` in place; parameters under ``spec.frozen`` prefixes stay untouched.

    ``masks`` (parameter name -> 0/1 tensor) are re-applied after every step, so pruned
    weights stay exactly zero. Returns the last batch loss.
    """
    torch.manual_seed(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed + 1)
    params = []
    for name, p in model.named_parameters():
        trainable = not any(name.startswith(f) for f in spec.frozen)
        p.requires_grad_(trainable)
        if trainable:
            params.append(p)
    objective = _Objective(model, arch, spec, gen)
    return _run(model, params, objective, spec, masks)


class _LoraHook:
    """Adds scale * B(A(x)) to a Linear / Conv1D output; only A and B are trained."""

    def __init__(self, module: nn.Module, rank: int, alpha: float):
        w = module.weight
        self.conv1d = type(module).__name__ == "Conv1D"
        in_f, out_f = (w.shape[0], w.shape[1]) if self.conv1d else (w.shape[1], w.shape[0])
        self.A = nn.Parameter(torch.empty(rank, in_f))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(out_f, rank))
        self.scale = alpha / rank
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor):
        return out + self.scale * F.linear(F.linear(inputs[0], self.A), self.B)

    def delta(self) -> torch.Tensor:
        """The merged update in the module's own weight layout."""
        d = self.scale * (self.B.detach() @ self.A.detach())
        return d.T.contiguous() if self.conv1d else d


@dataclass
class LoraResult:
    """Trained LoRA factors per target module path, and their hyper-parameters."""

    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]  # module -> (A [r,in], B [out,r])
    deltas: dict[str, torch.Tensor]  # module -> delta in the weight's layout
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    fan_in_fan_out: bool


def train_lora(model: nn.Module, arch: str, spec: TrainSpec, rank: int, alpha: float) -> LoraResult:
    """Train LoRA factors on the q/v projections of a frozen ``model``; weights untouched."""
    torch.manual_seed(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed + 1)
    for p in model.parameters():
        p.requires_grad_(False)
    modules = dict(model.named_modules())
    hooks = {name: _LoraHook(modules[name], rank, alpha) for name in lora_module_names(model, arch)}
    params = [p for h in hooks.values() for p in (h.A, h.B)]
    objective = _Objective(model, arch, spec, gen)
    _run(model, params, objective, spec)
    for h in hooks.values():
        h.handle.remove()
    return LoraResult(
        factors={n: (h.A.detach().clone(), h.B.detach().clone()) for n, h in hooks.items()},
        deltas={n: h.delta() for n, h in hooks.items()},
        rank=rank,
        alpha=alpha,
        target_modules=ARCHS[arch].lora_targets,
        fan_in_fan_out=any(h.conv1d for h in hooks.values()),
    )


def distill(student: nn.Module, teacher: nn.Module, arch: str, spec: TrainSpec) -> float:
    """Train a freshly initialised ``student`` on ``teacher``'s outputs over the teacher's data.

    Causal LMs and MLMs match temperature-2 softened logits (KL); bare encoders match the
    last hidden states (MSE). The student never sees the teacher's weights.
    """
    torch.manual_seed(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed + 1)
    kind = ARCHS[arch].kind
    task = _tasks(arch, spec)[0]
    teacher.eval()
    params = [p for p in student.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    student.train()
    temp, last = 2.0, float("nan")
    for step in range(spec.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, spec)
        ids = task.sample(spec.batch, spec.length, gen)
        if kind == "mlm":
            ids, _ = mask_tokens(ids, MASK_TOKEN, gen)
        with torch.no_grad():
            t_out = teacher(input_ids=ids)
        s_out = student(input_ids=ids)
        if kind == "encoder":
            loss = F.mse_loss(s_out.last_hidden_state, t_out.last_hidden_state)
        else:
            t_logp = F.log_softmax(t_out.logits / temp, dim=-1)
            s_logp = F.log_softmax(s_out.logits / temp, dim=-1)
            loss = F.kl_div(s_logp, t_logp, log_target=True, reduction="batchmean") * temp**2
            loss = loss / ids.shape[1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        last = float(loss.detach())
    student.eval()
    return last
