"""Tiny classifier architectures, their safetensors I/O, training and cheap derivations.

The registry (``ARCHS``) holds architectures defined in code: ``mlp`` (vectors) and ``cnn``
(small synthetic images, with BatchNorm). A model directory holds ``config.json`` with a
``lineage_behaviour`` section (``arch``, ``arch_kwargs``, and the synthetic ``task`` when the model
was trained on one) and one or more ``*.safetensors`` files.

Full weights are loaded ONLY from safetensors files in a local directory. A directory with only
pickle checkpoints (``.bin/.pt/.pth/.ckpt``) raises ``UnsupportedFormatError`` and nothing is
opened; a missing directory raises ``UsageError``. int8 weights with a ``.SCB`` scale (bitsandbytes
layout) and fp16/bf16 weights are de-quantised to float32 on load.

The training helpers (``train``, ``finetune``, ``distill``, ``prune``, ``round_fp16``,
``quantise_int8``) make the auxiliary models for calibration and the bench zoo.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lineage_index.behaviour.probes import ProbeSet, TaskSpec, task_data
from lineage_index.errors import ModelReadError, UnsupportedFormatError, UsageError
from lineage_index.indexer.sources import PICKLE_SUFFIXES

CONFIG_KEY = "lineage_behaviour"


class MLP(nn.Module):
    """``in_dim -> hidden (x depth, ReLU) -> classes``; the last layer is ``head``."""

    def __init__(self, in_dim: int = 16, hidden: int = 32, classes: int = 4, depth: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x.flatten(1)))


class SmallCNN(nn.Module):
    """Two 3x3 conv blocks with BatchNorm, global average pooling, linear ``head``."""

    def __init__(self, channels: int = 1, width: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


ARCHS: dict[str, Callable[..., nn.Module]] = {"mlp": MLP, "cnn": SmallCNN}


@dataclass
class Classifier:
    """A loaded (or freshly built) classifier: the module plus what is needed to rebuild it."""

    module: nn.Module
    arch: str
    arch_kwargs: dict[str, Any]
    task: TaskSpec | None = None
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def with_state(self, state: dict[str, torch.Tensor], name: str = "") -> Classifier:
        """A new classifier of the same architecture carrying ``state``."""
        module = ARCHS[self.arch](**self.arch_kwargs)
        module.load_state_dict(state)
        module.eval()
        return Classifier(module, self.arch, dict(self.arch_kwargs), self.task, name or self.name)

    @property
    def classes(self) -> int:
        return int(self.module.head.out_features)  # type: ignore[union-attr]

    @property
    def has_batchnorm(self) -> bool:
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.module.modules())


def build(arch: str, *, seed: int, task: TaskSpec | None = None, name: str = "", **arch_kwargs: Any) -> Classifier:
    """A freshly initialised classifier of a registered architecture (deterministic in ``seed``)."""
    if arch not in ARCHS:
        raise UsageError(f"unknown architecture {arch!r}; registered: {', '.join(ARCHS)}")
    if task is not None:
        arch_kwargs.setdefault("classes", task.classes)
        if arch == "mlp":
            arch_kwargs.setdefault("in_dim", task.dim)
        else:
            arch_kwargs.setdefault("channels", task.channels)
    torch.manual_seed(seed)
    module = ARCHS[arch](**arch_kwargs)
    module.eval()
    return Classifier(module, arch, arch_kwargs, task, name)


# --- safetensors I/O ---------------------------------------------------------------------


def save(model: Classifier, directory: str | Path, *, tensors: dict[str, torch.Tensor] | None = None,
         extra: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (``tensors`` overrides the state, e.g. int8)."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    section: dict[str, Any] = {"arch": model.arch, "arch_kwargs": model.arch_kwargs}
    if model.task is not None:
        section["task"] = model.task.to_dict()
    section.update(extra or {})
    config = {"model_type": f"lineage-behaviour-{model.arch}", CONFIG_KEY: section}
    (d / "config.json").write_text(json.dumps(config, indent=2))
    state = tensors if tensors is not None else model.state()
    save_file({k: v.contiguous() for k, v in state.items()}, str(d / "model.safetensors"))
    return d


def dequantise(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float32 state dict: int8 ``W`` with ``W.SCB`` (per-row absmax) -> ``W * SCB / 127``."""
    out: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        if key.endswith(".SCB"):
            continue
        scb = tensors.get(f"{key}.SCB")
        if scb is None and key.endswith(".weight"):
            scb = tensors.get(f"{key[: -len('.weight')]}.SCB")
        if t.dtype == torch.int8 and scb is not None:
            t = t.float() * (scb.float().reshape(-1, *([1] * (t.dim() - 1))) / 127.0)
        elif t.is_floating_point():
            t = t.float()
        out[key] = t
    return out


def load(directory: str | Path, name: str | None = None) -> Classifier:
    """Load a classifier from a local directory of safetensors files (never pickle)."""
    d = Path(directory)
    if not d.exists():
        raise UsageError(f"model directory not found: {d}")
    if d.is_file():
        raise UsageError(f"{d}: pass the model directory (config.json + *.safetensors), not a file")
    files = sorted(d.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for p in d.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise UnsupportedFormatError(
                f"{d}: only pickle checkpoints ({', '.join(pickles)}); lineage-index never unpickles "
                "weights - convert them to safetensors first")
        raise ModelReadError(f"{d}: no *.safetensors weights found")
    cfg_path = d / "config.json"
    try:
        section = json.loads(cfg_path.read_text())[CONFIG_KEY]
        arch, arch_kwargs = section["arch"], dict(section.get("arch_kwargs", {}))
    except FileNotFoundError:
        raise ModelReadError(f"{d}: no config.json naming the architecture") from None
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ModelReadError(f"{cfg_path}: no usable '{CONFIG_KEY}' section ({exc})") from None
    if arch not in ARCHS:
        raise ModelReadError(f"{d}: architecture {arch!r} is not in the registry ({', '.join(ARCHS)})")
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    try:
        for f in files:
            tensors.update(load_file(str(f)))
    except Exception as exc:  # safetensors raises its own error types for bad files
        raise ModelReadError(f"{d}: unreadable safetensors ({exc})") from None
    module = ARCHS[arch](**arch_kwargs)
    try:
        module.load_state_dict(dequantise(tensors))
    except RuntimeError as exc:
        raise ModelReadError(f"{d}: weights do not fit architecture {arch!r}: {str(exc)[:300]}") from None
    module.eval()
    task = TaskSpec.from_dict(section["task"]) if section.get("task") else None
    quant = "int8" if any(t.dtype == torch.int8 for t in tensors.values()) else None
    return Classifier(module, arch, arch_kwargs, task, name or d.name, {"quant": quant})


# --- training and derivations ----------------------------------------------------------


def train(model: Classifier, data: ProbeSet, *, steps: int = 300, lr: float = 1e-2, seed: int = 0,
          batch: int = 128, params: list[nn.Parameter] | None = None,
          soft_targets: torch.Tensor | None = None, temperature: float = 2.0) -> Classifier:
    """Adam on cross-entropy (or KL to ``soft_targets`` logits); in place, returns ``model``."""
    if data.y is None and soft_targets is None:
        raise UsageError("training needs labels or soft targets")
    g = torch.Generator().manual_seed(seed)
    module = model.module
    opt = torch.optim.Adam(params if params is not None else list(module.parameters()), lr=lr)
    module.train()
    n = len(data)
    for _ in range(steps):
        idx = torch.randint(0, n, (min(batch, n),), generator=g)
        out = module(data.x[idx])
        if soft_targets is not None:
            target = torch.softmax(soft_targets[idx] / temperature, dim=1)
            loss = nn.functional.kl_div(torch.log_softmax(out / temperature, dim=1), target,
                                        reduction="batchmean")
        else:
            loss = nn.functional.cross_entropy(out, data.y[idx])  # type: ignore[index]
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    return model


def train_fresh(arch: str, task: TaskSpec, *, seed: int, n: int = 2000, steps: int = 300,
                name: str = "", **arch_kwargs: Any) -> Classifier:
    """A model of ``arch`` trained from scratch (init and data from ``seed``) on ``task``."""
    model = build(arch, seed=seed, task=task, name=name or f"{arch}-seed{seed}", **arch_kwargs)
    return train(model, task_data(task, n, seed=1000 + seed), steps=steps, seed=seed)


def finetune(parent: Classifier, data: ProbeSet, *, seed: int, steps: int = 100, lr: float = 3e-3,
             last_layer_only: bool = False, reinit_head: bool = False, name: str = "") -> Classifier:
    """A fine-tuned copy of ``parent`` (all layers, the head only, or a re-initialised head)."""
    child = parent.with_state(parent.state(), name or f"{parent.name}-ft{seed}")
    head: nn.Linear = child.module.head  # type: ignore[assignment]
    if reinit_head:
        torch.manual_seed(seed)
        head.reset_parameters()
    params = list(head.parameters()) if (last_layer_only or reinit_head) else None
    return train(child, data, steps=steps, lr=lr, seed=seed, params=params)


def distill(teacher: Classifier, data: ProbeSet, *, seed: int, steps: int = 400, name: str = "") -> Classifier:
    """A fresh model of the teacher's architecture trained on the teacher's logits only."""
    student = build(teacher.arch, seed=seed, task=teacher.task, name=name or f"{teacher.name}-kd{seed}",
                    **teacher.arch_kwargs)
    with torch.no_grad():
        logits = teacher.module(data.x)
    return train(student, ProbeSet(data.x, None), steps=steps, seed=seed, soft_targets=logits)


def prune(parent: Classifier, fraction: float = 0.3, name: str = "") -> Classifier:
    """Magnitude pruning: the smallest ``fraction`` of each weight matrix set to zero."""
    state = parent.state()
    for key, t in state.items():
        if key.endswith("weight") and t.dim() >= 2:
            k = max(1, int(t.numel() * fraction))
            cut = t.abs().flatten().kthvalue(k).values
            state[key] = torch.where(t.abs() <= cut, torch.zeros_like(t), t)
    return parent.with_state(state, name or f"{parent.name}-pruned")


def round_fp16(parent: Classifier, name: str = "") -> Classifier:
    """Weights rounded through float16."""
    state = {k: (v.half().float() if v.is_floating_point() else v) for k, v in parent.state().items()}
    return parent.with_state(state, name or f"{parent.name}-fp16")


def quantise_int8(parent: Classifier) -> dict[str, torch.Tensor]:
    """bitsandbytes-style int8 tensors: each weight matrix as int8 rows plus ``.SCB`` absmax."""
    out: dict[str, torch.Tensor] = {}
    for key, t in parent.state().items():
        if key.endswith("weight") and t.dim() >= 2:
            scb = t.abs().flatten(1).amax(dim=1).clamp_min(1e-8)
            q = torch.round(t / scb.reshape(-1, *([1] * (t.dim() - 1))) * 127).clamp(-127, 127)
            out[key], out[f"{key[: -len('.weight')]}.SCB"] = q.to(torch.int8), scb
        else:
            out[key] = t
    return out


def aux_data(source: Classifier, probes: ProbeSet | None, n: int = 2000, seed: int = 777) -> ProbeSet:
    """Training data for auxiliary models: the source's synthetic task, else labelled probes."""
    if source.task is not None:
        return task_data(source.task, n, seed=seed)
    if probes is not None and probes.y is not None:
        return probes
    raise UsageError("the source names no synthetic task and the probe data has no labels 'y': "
                     "pass auxiliary models (--lineage-aux / --independent-aux) or labelled probes")


def make_aux(source: Classifier, data: ProbeSet, *, n_lineage: int, n_independent: int,
             seed: int = 0, steps: int = 300) -> tuple[list[Classifier], list[Classifier]]:
    """Cheap derivations of the source (lineage) and same-arch re-trainings (no lineage).

    Lineage models cycle through a mild full fine-tune, a strong full fine-tune, a last-layer
    fine-tune and 30% magnitude pruning, so that calibration sees modifications of several strengths.
    """
    recipes = [dict(steps=100, lr=3e-3), dict(steps=200, lr=5e-3), dict(steps=150, lr=1e-2, last_layer_only=True)]
    lineage = []
    for i in range(n_lineage):
        if i % 4 == 3:
            lineage.append(prune(source, 0.3, name=f"aux-prune{i}"))
        else:
            lineage.append(finetune(source, data, seed=seed + 101 + i, name=f"aux-ft{i}",
                                    **recipes[i % 4]))  # type: ignore[arg-type]
    independent = []
    for i in range(n_independent):
        model = build(source.arch, seed=seed + 9001 + i, task=source.task, name=f"aux-ind{i}",
                      **source.arch_kwargs)
        independent.append(train(model, data, steps=steps, seed=seed + 9001 + i))
    return lineage, independent
