"""Classifier models of the behaviour tier: safetensors I/O, training and cheap derivations.

The architectures live in ``archs`` (``mlp``, ``cnn``, ``vit``, ``text``; re-exported here as
``ARCHS``). A model directory holds ``config.json`` with a ``lineage_behaviour`` section (``arch``,
``arch_kwargs``, the synthetic ``task`` when the model was trained on one, and optionally
``input_norm`` = [mean, std] for image pixels scaled to [0, 1]) and one or more ``*.safetensors``
files; a text classifier's directory also carries its tokenizer (``tokenizer.json``).

Full weights are loaded ONLY from safetensors. ``load`` takes a local directory, or a Hub repo id
resolved in the local Hugging Face cache or downloaded with the user's consent (``fetch``). A
directory with only pickle checkpoints (``.bin/.pt/.pth/.ckpt``) raises ``UnsupportedFormatError``
and nothing is opened; a missing one raises ``UsageError``. int8 weights with a ``.SCB`` scale
(bitsandbytes layout) and fp16/bf16 weights are de-quantised to float32 on load.

The training helpers (``train``, ``train_fresh``, ``minilm_classifier``, ``finetune``,
``adversarial_finetune``, ``transfer``, ``distill``, ``prune``, ``round_fp16``,
``quantise_int8``) make the auxiliary models for calibration and the bench zoo.

Why this module is long: loading and the derivations share the ``Classifier`` record and its
safetensors layout, and the derivations are the calibration's auxiliary models.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lineage_index.behaviour.archs import (
    ARCHS,
    MLP,
    SmallCNN,
    SmallViT,
    TextClassifier,
    minilm_body,
    minilm_dir,
    walk_inputs,
    walk_logits,
)
from lineage_index.behaviour.probes import ProbeSet, TaskSpec, task_data
from lineage_index.config import notice
from lineage_index.errors import ModelReadError, UnsupportedFormatError, UsageError
from lineage_index.indexer.read.sources import PICKLE_SUFFIXES

CONFIG_KEY = "lineage_behaviour"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
# Adam learning rates per architecture: (from scratch, fine-tuning all layers).
LR = {"mlp": (1e-2, 3e-3), "cnn": (1e-2, 3e-3), "vit": (3e-3, 1e-3), "text": (3e-4, 5e-5),
      "hf-image": (3e-3, 1e-3), "hf-text": (1e-3, 3e-4), "hf-lm": (3e-3, 1e-3),
      "hf-timm": (3e-3, 1e-3)}
BATCH = {"mlp": 128, "cnn": 128, "vit": 128, "text": 32, "hf-image": 128, "hf-text": 32, "hf-lm": 32,
         "hf-timm": 128}

__all__ = ["ARCHS", "MLP", "SmallCNN", "SmallViT", "TextClassifier", "Classifier", "build", "save", "load",
           "dequantise", "train", "train_fresh", "minilm_classifier", "finetune", "adversarial_finetune",
           "transfer", "distill", "prune", "round_fp16", "quantise_int8", "aux_data", "make_aux",
           "walk_inputs", "walk_logits"]


@dataclass
class Classifier:
    """A loaded (or freshly built) classifier: the module plus what is needed to rebuild it.

    ``meta`` may hold ``quant`` (the stored weights' quantisation), ``dir`` (where it was loaded
    from: its tokenizer for text) and ``input_norm`` ((mean, std) for image pixels in [0, 1]).
    """

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
        meta = {k: v for k, v in self.meta.items() if k in ("dir", "input_norm")}
        return Classifier(module, self.arch, dict(self.arch_kwargs), self.task, name or self.name, meta)

    @property
    def classes(self) -> int:
        return int(self.module.head.out_features)  # type: ignore[union-attr]

    @property
    def head_prefix(self) -> str:
        """State-dict prefix of the last layer (``head.``; a Hugging Face model's classifier)."""
        return str(getattr(self.module, "head_prefix", "head."))

    @property
    def is_hf(self) -> bool:
        return self.arch.startswith("hf-")

    def body_signature(self) -> str:
        """The architecture without its label count: models that share a body compare."""
        kw = dict(self.arch_kwargs, classes=0)
        if self.is_hf:
            kw["config"] = {k: v for k, v in kw.get("config", {}).items()
                            if k not in ("num_labels", "id2label", "label2id", "architectures", "num_classes",
                                         "pretrained_cfg")}
            if isinstance(kw["config"].get("model_args"), dict):
                kw["config"]["model_args"] = {k: v for k, v in kw["config"]["model_args"].items()
                                              if k != "num_classes"}
        return json.dumps([self.arch, kw], sort_keys=True, default=str)

    @property
    def has_batchnorm(self) -> bool:
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.module.modules())

    @property
    def kind(self) -> str:
        """``vectors``, ``images`` or ``text``: what the model reads."""
        return {"mlp": "vectors", "text": "text", "hf-text": "text", "hf-lm": "text"}.get(self.arch, "images")

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """Shape of one input (without the batch dimension), where the architecture fixes it."""
        kw = self.arch_kwargs
        if self.arch == "mlp":
            return (int(kw.get("in_dim", 16)),)
        if self.arch in ("cnn", "vit"):
            size = int(kw.get("size", self.task.size if self.task else 8))
            return (int(kw.get("channels", 1)), size, size)
        if self.arch in ("hf-image", "hf-timm"):
            return (self.module.channels, self.module.image_size, self.module.image_size)  # type: ignore[union-attr]
        return None


def build(arch: str, *, seed: int, task: TaskSpec | None = None, name: str = "", **arch_kwargs: Any) -> Classifier:
    """A freshly initialised classifier of a registered architecture (deterministic in ``seed``)."""
    if arch not in ARCHS:
        raise UsageError(f"unknown architecture {arch!r}; registered: {', '.join(ARCHS)}")
    if task is not None:
        arch_kwargs.setdefault("classes", task.classes)
        if arch == "mlp":
            arch_kwargs.setdefault("in_dim", task.dim)
        elif arch in ("cnn", "vit", "hf-image", "hf-timm"):
            arch_kwargs.setdefault("channels", task.channels)
        if arch in ("vit", "hf-image", "hf-timm"):
            arch_kwargs.setdefault("size", task.size)
    torch.manual_seed(seed)
    module = ARCHS[arch](**arch_kwargs)
    module.eval()
    return Classifier(module, arch, arch_kwargs, task, name)


# --- safetensors I/O ---------------------------------------------------------------------


def save(model: Classifier, directory: str | Path, *, tensors: dict[str, torch.Tensor] | None = None,
         extra: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (``tensors`` overrides the state, e.g. int8);
    a text classifier also gets the tokenizer files."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if model.is_hf:
        return _save_hf(model, d, tensors)
    section: dict[str, Any] = {"arch": model.arch, "arch_kwargs": model.arch_kwargs}
    if model.task is not None:
        section["task"] = model.task.to_dict()
    if model.meta.get("input_norm") is not None:
        section["input_norm"] = list(model.meta["input_norm"])
    section.update(extra or {})
    config = {"model_type": f"lineage-behaviour-{model.arch}", CONFIG_KEY: section}
    (d / "config.json").write_text(json.dumps(config, indent=2))
    state = tensors if tensors is not None else model.state()
    save_file({k: v.contiguous() for k, v in state.items()}, str(d / "model.safetensors"))
    if model.arch == "text":
        src = Path(model.meta["dir"]) if model.meta.get("dir") else minilm_dir()
        if not (src / "tokenizer.json").is_file():
            src = minilm_dir()
        for name in TOKENIZER_FILES:
            if (src / name).is_file() and not (d / name).exists():
                shutil.copyfile(src / name, d / name)
    return d


def _save_hf(model: Classifier, d: Path, tensors: dict[str, torch.Tensor] | None) -> Path:
    """Hugging Face layout: transformers' config.json, model.safetensors under transformers' names,
    a preprocessor_config.json (images) or the tokenizer files (text)."""
    from safetensors.torch import save_file

    from lineage_index.behaviour import hf

    module: hf.HFModel = model.module  # type: ignore[assignment]
    if isinstance(module, hf.TimmImageClassifier):  # timm's layout: preprocessing inside config.json
        config = hf.timm_config_dict(module, model.arch_kwargs["config"], model.meta.get("input_norm"))
    else:
        config = hf.config_dict(module)
    (d / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    state = tensors if tensors is not None else model.state()
    save_file(hf.hf_tensors(state), str(d / "model.safetensors"), metadata={"format": "pt"})
    if model.arch == "hf-image":
        pre = hf.preprocessor_config(module.image_size, model.meta.get("input_norm"), module.channels)
        (d / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n")
    elif model.meta.get("dir"):
        src = Path(model.meta["dir"])
        for name in TOKENIZER_FILES:
            if (src / name).is_file() and not (d / name).exists():
                shutil.copyfile(src / name, d / name)
    return d


def dequantise(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float32 state dict: int8 ``W`` with ``W.SCB`` (per-row absmax) -> ``W * SCB / 127``.

    bitsandbytes bookkeeping tensors (``.SCB``, ``.weight_format``) are dropped.
    """
    out: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        if key.endswith((".SCB", ".weight_format")):
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


def safetensors_files(d: Path) -> list[Path]:
    """The ``*.safetensors`` weight files of a model directory; clear errors for pickle-only or empty."""
    if not d.exists():
        raise UsageError(f"model directory not found: {d}")
    if d.is_file():
        raise UsageError(f"{d}: pass the model directory (config.json + *.safetensors), not a file")
    files = sorted(f for f in d.glob("*.safetensors") if not f.name.startswith("adapter_"))
    if not files:
        pickles = sorted(p.name for p in d.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise UnsupportedFormatError(
                f"{d}: only pickle checkpoints ({', '.join(pickles)}); lineage-index never unpickles "
                "weights - convert them to safetensors first")
        raise ModelReadError(f"{d}: no *.safetensors weights found")
    return files


def read_tensors(d: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the directory's safetensors files (as stored: int8, fp16, ...)."""
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    try:
        for f in safetensors_files(d):
            tensors.update(load_file(str(f)))
    except (UsageError, ModelReadError):
        raise
    except Exception as exc:  # safetensors raises its own error types for bad files
        raise ModelReadError(f"{d}: unreadable safetensors ({exc})") from None
    return tensors


def load(ref: str | Path, name: str | None = None, *, hf_cache: str | Path | None = None,
         download: bool = False, max_download_mb: float | None = None, endpoint: str | None = None,
         token: str | bool | None = None) -> Classifier:
    """Load a classifier from safetensors (never pickle).

    ``ref`` is a local model directory, or a Hub repo id (``org/name``) looked up in the local
    Hugging Face cache (``hf_cache``: its directory, default the standard one) and, only with
    ``download=True``, fetched from the Hub within ``max_download_mb`` (see ``fetch``).
    """
    from lineage_index.behaviour.fetch import resolve

    d = resolve(ref, hf_cache=hf_cache, download=download, max_download_mb=max_download_mb,
                endpoint=endpoint, token=token)
    files = safetensors_files(d)
    cfg_path = d / "config.json"
    try:
        config = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise ModelReadError(f"{d}: no config.json naming the architecture") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelReadError(f"{cfg_path}: not JSON ({exc})") from None
    if isinstance(config, dict) and CONFIG_KEY not in config:
        from lineage_index.behaviour.archs import HF_ARCH_OF_KIND
        from lineage_index.behaviour.hf import hf_kind, is_timm_config

        kind = hf_kind(config)
        if kind is not None or is_timm_config(config):
            return _load_hf(d, config, HF_ARCH_OF_KIND[kind] if kind else "hf-timm", name or _display_name(ref, d))
    try:
        section = config[CONFIG_KEY]
        arch, arch_kwargs = section["arch"], dict(section.get("arch_kwargs", {}))
    except FileNotFoundError:
        raise ModelReadError(f"{d}: no config.json naming the architecture") from None
    except (KeyError, TypeError) as exc:
        raise ModelReadError(f"{cfg_path}: no usable '{CONFIG_KEY}' section ({exc}) and its 'architectures' name "
                             "no Hugging Face image or sequence classifier or causal LM") from None
    if arch not in ARCHS:
        raise ModelReadError(f"{d}: architecture {arch!r} is not in the registry ({', '.join(ARCHS)})")
    del files
    tensors = read_tensors(d)
    try:
        module = ARCHS[arch](**arch_kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelReadError(f"{d}: bad arch_kwargs for {arch!r}: {exc}") from None
    state = dequantise(tensors)
    own = module.state_dict()
    state.update({k: v for k, v in own.items() if k not in state and k.endswith("position_ids")})
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelReadError(f"{d}: weights do not fit architecture {arch!r}: {str(exc)[:300]}") from None
    module.eval()
    task = TaskSpec.from_dict(section["task"]) if section.get("task") else None
    meta: dict[str, Any] = {"quant": _quant_of(tensors), "dir": str(d)}
    if section.get("input_norm") is not None:
        meta["input_norm"] = tuple(float(v) for v in section["input_norm"])
    return Classifier(module, arch, arch_kwargs, task, name or _display_name(ref, d), meta)


def _quant_of(tensors: dict[str, torch.Tensor]) -> str | None:
    return "int8" if any(t.dtype == torch.int8 for t in tensors.values()) else (
        "fp16" if any(t.dtype in (torch.float16, torch.bfloat16) for t in tensors.values()) else None)


def _load_hf(d: Path, config: dict[str, Any], arch: str, name: str) -> Classifier:
    """A Hugging Face classifier or causal LM (``hf-*``: transformers Auto class; ``hf-timm``: a timm
    model by name) from safetensors."""
    from lineage_index.behaviour import hf

    norm, size = (hf.read_preprocessor(d) if arch == "hf-image" else hf.timm_preprocessor(config)
                  if arch == "hf-timm" else (None, None))
    kwargs: dict[str, Any] = {"config": {k: v for k, v in config.items() if k not in hf.DROP_KEYS}}
    if size is not None:
        kwargs["size"] = size
    tensors = read_tensors(d)
    module = ARCHS[arch](**kwargs)
    hf.load_state(module, dequantise(tensors), d)  # type: ignore[arg-type]
    meta: dict[str, Any] = {"quant": _quant_of(tensors), "dir": str(d)}
    if norm is not None:
        meta["input_norm"] = norm
    return Classifier(module, arch, kwargs, None, name, meta)


def _display_name(ref: str | Path, d: Path) -> str:
    return str(ref) if not Path(ref).exists() else d.name


# --- training and derivations ----------------------------------------------------------


def train(model: Classifier, data: ProbeSet, *, steps: int = 300, lr: float = 1e-2, seed: int = 0,
          batch: int | None = None, params: list[nn.Parameter] | None = None,
          soft_targets: torch.Tensor | None = None, temperature: float = 2.0) -> Classifier:
    """Adam on cross-entropy (or KL to ``soft_targets`` logits); in place, returns ``model``.

    With ``params`` only those are trained (the others get no gradient at all, which keeps
    last-layer training of a large encoder cheap).
    """
    if data.y is None and soft_targets is None:
        raise UsageError("training needs labels or soft targets")
    g = torch.Generator().manual_seed(seed)
    module = model.module
    batch = batch or BATCH.get(model.arch, 128)
    trained = params if params is not None else list(module.parameters())
    ids = {id(p) for p in trained}
    frozen = [p for p in module.parameters() if id(p) not in ids and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    opt = torch.optim.Adam(trained, lr=lr)
    module.train()
    n = len(data)
    try:
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
    finally:
        for p in frozen:
            p.requires_grad_(True)
        module.eval()
    return model


def train_fresh(arch: str, task: TaskSpec, *, seed: int, n: int = 2000, steps: int = 300,
                name: str = "", lr: float | None = None, **arch_kwargs: Any) -> Classifier:
    """A model of ``arch`` trained from scratch (init and data from ``seed``) on ``task``."""
    model = build(arch, seed=seed, task=task, name=name or f"{arch}-seed{seed}", **arch_kwargs)
    return train(model, task_data(task, n, seed=1000 + seed), steps=steps, seed=seed,
                 lr=lr if lr is not None else LR.get(arch, (1e-2, 3e-3))[0])


def minilm_classifier(task: TaskSpec, *, seed: int, n: int = 2000, head_steps: int = 150,
                      steps: int = 60, name: str = "") -> Classifier:
    """A text classifier on the real all-MiniLM-L6-v2: a head trained on the frozen encoder, then
    a short fine-tune of all layers (``steps``; 0 keeps the encoder as released)."""
    if task.kind != "text":
        raise UsageError("a MiniLM classifier needs a text task")
    model = build("text", seed=seed, task=task, name=name or f"minilm-cls{seed}")
    minilm_body(model.module)  # type: ignore[arg-type]
    data = task_data(task, n, seed=1000 + seed)
    train(model, data, steps=head_steps, lr=3e-3, seed=seed, params=list(model.module.head.parameters()))
    if steps:
        train(model, data, steps=steps, lr=LR["text"][1], seed=seed + 1)
    return model


def finetune(parent: Classifier, data: ProbeSet, *, seed: int, steps: int = 100, lr: float | None = None,
             last_layer_only: bool = False, reinit_head: bool = False, name: str = "") -> Classifier:
    """A fine-tuned copy of ``parent`` (all layers, the head only, or a re-initialised head)."""
    child = parent.with_state(parent.state(), name or f"{parent.name}-ft{seed}")
    head: nn.Linear = child.module.head  # type: ignore[assignment]
    if reinit_head:
        torch.manual_seed(seed)
        head.reset_parameters()
    head_only = last_layer_only or reinit_head
    params = list(head.parameters()) if head_only else None
    if lr is None:
        lr = 1e-2 if head_only else LR.get(parent.arch, (1e-2, 3e-3))[1]
    return train(child, data, steps=steps, lr=lr, seed=seed, params=params)


def adversarial_finetune(parent: Classifier, data: ProbeSet, *, seed: int, steps: int = 100,
                         lr: float | None = None, eps_share: float = 0.15, pgd_steps: int = 3,
                         batch: int | None = None, name: str = "") -> Classifier:
    """Fine-tune on batches half clean, half PGD examples in an L∞ ball of ``eps_share``·std of the
    walk space (the input; the word embeddings for text)."""
    child = parent.with_state(parent.state(), name or f"{parent.name}-adv{seed}")
    module = child.module
    g = torch.Generator().manual_seed(seed)
    batch = batch or BATCH.get(parent.arch, 128)
    with torch.no_grad():
        eps = eps_share * float(walk_inputs(module, data.x[:256])[0].std())
    alpha = 2.5 * eps / pgd_steps
    opt = torch.optim.Adam(module.parameters(), lr=lr if lr is not None else LR.get(parent.arch, (1e-2, 3e-3))[1])
    for _ in range(steps):
        idx = torch.randint(0, len(data), (min(batch, len(data)),), generator=g)
        x, y = data.x[idx], data.y[idx]  # type: ignore[index]
        module.eval()  # craft the attack with frozen BatchNorm statistics and no dropout
        with torch.no_grad():
            z, ctx = walk_inputs(module, x)
        delta = (torch.rand(z.shape, generator=g) * 2 - 1) * eps
        for _ in range(pgd_steps):
            delta.requires_grad_(True)
            loss = nn.functional.cross_entropy(walk_logits(module, z + delta, ctx), y)
            (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        module.train()
        z, ctx = walk_inputs(module, x)
        both = torch.cat([z, z + delta.detach()])
        loss = nn.functional.cross_entropy(walk_logits(module, both, None if ctx is None else torch.cat([ctx, ctx])),
                                           torch.cat([y, y]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    return child


def transfer(parent: Classifier, data: ProbeSet, classes: int, *, seed: int, steps: int = 200,
             head_steps: int = 100, lr: float | None = None, task: TaskSpec | None = None,
             name: str = "") -> Classifier:
    """Transfer learning: the parent's body under a new head for ``classes`` labels (``data.y``),
    the head trained first, then all layers."""
    kwargs = dict(parent.arch_kwargs, classes=classes)
    torch.manual_seed(seed)
    module = ARCHS[parent.arch](**kwargs)
    module.load_state_dict({k: v for k, v in parent.state().items() if not k.startswith(parent.head_prefix)},
                           strict=False)
    module.eval()
    child = Classifier(module, parent.arch, kwargs, task, name or f"{parent.name}-transfer{seed}",
                       {k: v for k, v in parent.meta.items() if k in ("dir", "input_norm")})
    train(child, data, steps=head_steps, lr=1e-2, seed=seed, params=list(module.head.parameters()))
    if steps:
        train(child, data, steps=steps, lr=lr if lr is not None else LR.get(parent.arch, (1e-2, 3e-3))[1],
              seed=seed + 1)
    return child


def distill(teacher: Classifier, data: ProbeSet, *, seed: int, steps: int = 400, name: str = "",
            lr: float | None = None, **arch_kwargs: Any) -> Classifier:
    """A fresh model (the teacher's architecture; ``arch_kwargs`` override it) trained on the
    teacher's logits only."""
    kwargs = dict(teacher.arch_kwargs, **arch_kwargs)
    student = build(teacher.arch, seed=seed, task=teacher.task, name=name or f"{teacher.name}-kd{seed}", **kwargs)
    student.meta.update({k: v for k, v in teacher.meta.items() if k in ("dir", "input_norm")})
    with torch.no_grad():
        logits = torch.cat([teacher.module(data.x[i:i + 512]) for i in range(0, len(data), 512)])
    return train(student, ProbeSet(data.x, None), steps=steps, seed=seed, soft_targets=logits,
                 lr=lr if lr is not None else LR.get(teacher.arch, (1e-2, 3e-3))[0])


def _weight_matrix(key: str, t: torch.Tensor) -> bool:
    """A layer weight that pruning and int8 touch (embedding tables stay as they are)."""
    return key.endswith("weight") and t.dim() >= 2 and "embeddings" not in key


def prune(parent: Classifier, fraction: float = 0.3, name: str = "") -> Classifier:
    """Magnitude pruning: the smallest ``fraction`` of each weight matrix set to zero."""
    state = parent.state()
    for key, t in state.items():
        if _weight_matrix(key, t):
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
        if _weight_matrix(key, t):
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


# Steps of the auxiliary models per architecture: (lineage fine-tunes, independent re-trainings).
AUX_STEPS = {"mlp": (1.0, 300), "cnn": (1.0, 300), "vit": (1.0, 400), "text": (0.2, 150),
             "hf-image": (1.0, 400), "hf-text": (0.5, 300), "hf-lm": (0.5, 300), "hf-timm": (1.0, 400)}


def _sample_for(source: Classifier, data: ProbeSet, seed: int) -> ProbeSet:
    """Training data of one auxiliary model: a fresh sample of the source's synthetic task, else a
    bootstrap resample of ``data`` (independent models of the real world see different data)."""
    if source.task is not None:
        return task_data(source.task, len(data), seed=seed)
    g = torch.Generator().manual_seed(seed)
    return data.subset(torch.randint(0, len(data), (len(data),), generator=g))


def make_aux(source: Classifier, data: ProbeSet, *, n_lineage: int, n_independent: int,
             seed: int = 0, steps: int | None = None) -> tuple[list[Classifier], list[Classifier]]:
    """Cheap derivations of the source (lineage) and same-arch re-trainings (no lineage).

    Lineage models cycle through a mild full fine-tune, a strong full fine-tune, a last-layer
    fine-tune and 30% magnitude pruning, so that calibration sees modifications of several
    strengths. Independent models are the source's architecture trained from scratch (other
    seeds). Each auxiliary model trains on its own sample of the data (``_sample_for``): models
    sharing one training sample share its quirks, and would make independent models look less
    alike than independently made ones are. Text encoders get shorter fine-tunes.
    """
    scale, fresh_steps = AUX_STEPS.get(source.arch, (1.0, 300))
    steps = steps if steps is not None else fresh_steps
    lr_ft = LR.get(source.arch, (1e-2, 3e-3))[1]
    recipes = [dict(steps=int(100 * scale), lr=lr_ft), dict(steps=int(200 * scale), lr=lr_ft * 5 / 3),
               dict(steps=int(150 * scale), lr=1e-2, last_layer_only=True)]
    lineage = []
    total, t0 = n_lineage + n_independent, time.perf_counter()

    def say(i: int, what: str) -> None:
        notice(f"calibration for {source.name}: auxiliary model {i}/{total} ({what}), "
               f"{time.perf_counter() - t0:.0f} s so far")

    for i in range(n_lineage):
        say(i + 1, "derived")
        if i % 4 == 3:
            lineage.append(prune(source, 0.3, name=f"aux-prune{i}"))
        else:
            lineage.append(finetune(source, _sample_for(source, data, seed + 501 + i), seed=seed + 101 + i,
                                    name=f"aux-ft{i}", **recipes[i % 4]))  # type: ignore[arg-type]
    independent = []
    for i in range(n_independent):
        say(n_lineage + i + 1, "independent re-training")
        model = build(source.arch, seed=seed + 9001 + i, task=source.task, name=f"aux-ind{i}",
                      **source.arch_kwargs)
        model.meta.update({k: v for k, v in source.meta.items() if k in ("dir", "input_norm")})
        independent.append(train(model, _sample_for(source, data, seed + 7001 + i), steps=steps,
                                 seed=seed + 9001 + i, lr=LR.get(source.arch, (1e-2, 3e-3))[0]))
    return lineage, independent
