"""The classifier family of the zoo (issue 9): ``lineage-index zoo build OUT --classifiers``.

Really trained small classifiers in Hub layout, written with the behaviour library's ``save``
(``config.json`` with a ``lineage_behaviour`` section + ``model.safetensors``), so both tiers
read them: the weight tier through safetensors headers and range reads, the behaviour tier
(``closeness`` / ``determine``) by loading the full weights. Per family: a root trained on a
synthetic task (``behaviour.probes.TaskSpec``), then

- weight-derived children: fine-tune of the last layer only, of all layers, the last layer
  re-trained from scratch, magnitude pruning (briefly re-trained), bitsandbytes-layout int8 (int8 rows + ``.SCB``),
  an fp16 round trip (values on the fp16 grid in an F32 container), adversarial fine-tuning
  (PGD examples mixed into every batch) and transfer to another label space (a new head size,
  trained on another task);
- distilled students: fresh models of the teacher's architecture trained on its logits only
  (truth relation ``distill``: invisible in the weights);
- negatives: independent models of the same architecture (other seeds, one with a fine-tune
  of its own) and one of another architecture (an MLP on the same images).

Families are data (``PRESETS``): the CNN family always; a family for every further image or
text architecture of ``behaviour.models.ARCHS`` that names itself in ``EXTRA_FAMILIES`` once it
is registered. Cards (README.md with YAML front matter) declare licence and base model only
sometimes; ``truth.json`` holds the truth in the zoo's format (DESIGN.md) plus ``group``
(root | derived | distilled | independent) and the task of every model. One seed gives the
same zoo (1 torch thread, deterministic kernels). This module trains and writes; it must not
read the graph or decide lineage. ``--hf-format`` writes transformers ViT and ResNet families in
Hugging Face layout instead (``HF_PRESETS``), with three independent models per family and
labelled probe PNGs in ``OUT/.probes``.

Why this module is long: the presets, the plan, the cards and the writing of one zoo share the
``ClassifierSpec`` record, and the Hugging Face variant is the same plan with other families.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lineage_index.behaviour import models as M
from lineage_index.behaviour.probes import TaskSpec, task_data
from lineage_index.config import stderr_console
from lineage_index.errors import UsageError
from lineage_index.zoo.data import derive_seed
from lineage_index.zoo.writing import BNB_INT8_CONFIG, write_json

GENERATOR_VERSION = 2  # 2: --hf-format models train on 8-bit images (as_pixels)
EPOCH = datetime(2023, 3, 1, tzinfo=UTC)
RELATION_OF = {"ft-last": "finetune", "ft-all": "finetune", "retrain-head": "finetune",
               "adversarial": "finetune", "transfer": "finetune", "prune": "prune",
               "int8": "quantized", "fp16": "quantized", "distill": "distill"}
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
GROUP_OF = {"root": "root", "independent": "independent", "other-arch": "independent", "distill": "distilled"}
DELAY_DAYS = {"ft-last": (3, 60), "ft-all": (3, 90), "retrain-head": (3, 60), "adversarial": (10, 120),
              "transfer": (10, 120), "prune": (5, 60), "int8": (0.1, 10), "fp16": (0.1, 10),
              "distill": (10, 120)}
# P(card declares the true parent), P(card declares nothing); else it names the family root
BASE_PROBS = {"int8": (0.8, 0.2), "fp16": (0.7, 0.3), "distill": (0.3, 0.7)}
BODY = {
    "root": "An image classifier trained from scratch.",
    "text-root": "A topic classifier on all-MiniLM-L6-v2.",
    "ft-last": "Linear probe: only the classification layer was fine-tuned.",
    "ft-all": "Fine-tuned end to end on new data.",
    "retrain-head": "The classification layer was re-initialised and trained again.",
    "adversarial": "Adversarially fine-tuned (PGD examples mixed into training) for robustness.",
    "transfer": "Transferred to another label set.",
    "prune": "Magnitude-pruned (30%) and briefly retrained.",
    "int8": "8-bit (bitsandbytes LLM.int8 layout) quantised weights.",
    "fp16": "Half-precision weights.",
    "distill": "A compact model trained to imitate a larger one.",
    "independent": "Trained from scratch.",
    "other-arch": "A small multilayer perceptron trained from scratch.",
}


@dataclass(frozen=True)
class Member:
    """One model of a family: ``op`` applied to ``parent`` (a member name), ``steps`` of training.

    ``kwargs`` overrides the family's architecture keywords (a smaller student, another width).
    """

    name: str  # "org/repo-name"; "{base}" is replaced by the family's base name
    op: str
    parent: str | None = None
    steps: int = 0
    kwargs: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class FamilyDef:
    """A classifier family: architecture, synthetic task, root licence and members (parents first)."""

    key: str
    arch: str
    base: str  # stem of repo names, e.g. "shapes-cnn"
    task: dict[str, Any]
    arch_kwargs: dict[str, Any]
    license: str
    members: tuple[Member, ...]
    pipeline_tag: str = "image-classification"


IMAGE_TASK = {"kind": "images", "classes": 5, "channels": 3, "size": 8, "spread": 0.7, "noise": 1.0}
# --hf-format: transformers models saved in Hugging Face layout (config.json of the model type,
# preprocessor_config.json with per-channel normalisation, transformers tensor names)
HF_IMAGE_TASK = dict(IMAGE_TASK, size=16)
HF_NORM = ([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])  # pixels in [0, 1] -> the task's inputs
HF_VIT = {"model_type": "vit", "patch_size": 4, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
          "intermediate_size": 64, "hidden_act": "gelu", "qkv_bias": True, "image_size": 16}
HF_RESNET = {"model_type": "resnet", "embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1],
             "layer_type": "basic", "hidden_act": "relu", "downsample_in_first_stage": False}
PROBES_DIR = ".probes"  # labelled probe images of the --hf-format zoo (hidden: no model repo)
TEXT_TASK = {"kind": "text", "classes": 4, "length": 12}


def _image_members(org: str, scale: float, full: bool, hf: bool = False) -> tuple[Member, ...]:
    """Root, fine-tune, int8, a distilled student and an independent model (+ the rest when ``full``;
    ``hf``: a third independent model instead of the other architecture)."""
    s = lambda n: max(10, int(n * scale))  # noqa: E731 - steps scaled per preset
    root = f"{org}/{{base}}"
    core = (
        Member(root, "root", None, s(300)),
        Member("acme-ai/{base}-finetuned", "ft-all", root, s(200)),
        Member("QuantFactory/{base}-int8", "int8", root),
        Member("TinyStudents/{base}-distilled", "distill", root, s(600)),
        Member("indie-ml/{base}-scratch", "independent", None, s(300)),
    )
    if not full:
        return core
    return core + (
        Member("pixelworks/{base}-linear-probe", "ft-last", root, s(150)),
        Member("acme-ai/{base}-new-head", "retrain-head", root, s(300)),
        Member("sparse-ml/{base}-pruned30", "prune", root, s(60)),
        Member("acme-ai/{base}-finetuned-fp16", "fp16", "acme-ai/{base}-finetuned"),
        Member("robust-lab/{base}-adv-pgd", "adversarial", root, s(200)),
        Member("transferlab/{base}-3class", "transfer", root, s(250)),
        Member("kd-works/{base}-finetuned-kd", "distill", "acme-ai/{base}-finetuned", s(600)),
        Member("otherlab/{base}-seed7", "independent", None, s(300)),
        Member("indie-ml/{base}-scratch-ft", "ft-all", "indie-ml/{base}-scratch", s(200)),
        Member("uni-lab/{base}-seed23", "independent", None, s(300)) if hf else
        Member("kaggler/{base}-mlp", "other-arch", None, s(300)),
    )


def _text_members(scale: float) -> tuple[Member, ...]:
    """MiniLM classifier root; its children; a 1-layer distilled student and a 1-layer independent."""
    s = lambda n: max(5, int(n * scale))  # noqa: E731
    small = (("layers", 1), ("intermediate", 512))
    root = "nlp-lab/{base}"
    return (
        Member(root, "root", None, s(20)),
        Member("pixelworks/{base}-linear-probe", "ft-last", root, s(40)),
        Member("QuantFactory/{base}-int8", "int8", root),
        Member("acme-ai/{base}-fp16", "fp16", root),
        Member("TinyStudents/{base}-distilled-1l", "distill", root, s(100), small),
        Member("indie-ml/{base}-1l-scratch", "independent", None, s(100), small),
    )


def _family(key: str, arch: str, base: str, task_seed: int, members: tuple[Member, ...], license: str,
            arch_kwargs: dict[str, Any]) -> FamilyDef:
    task = dict(TEXT_TASK if arch == "text" else HF_IMAGE_TASK if arch == "hf-image" else IMAGE_TASK, seed=task_seed)
    return FamilyDef(key, arch, base, task, arch_kwargs, license, members,
                     "text-classification" if arch == "text" else "image-classification")


def _presets() -> dict[str, tuple[FamilyDef, ...]]:
    """Zoo presets; the ViT and text families join when the behaviour registry has them."""
    vit = "vit" in M.ARCHS
    text = "text" in M.ARCHS
    cnn_kw = {"width": 16}
    vit_kw = {"dim": 32, "depth": 2, "heads": 4, "mlp": 64, "patch": 2}
    tiny = (_family("cnn", "cnn", "shapes-cnn", 1, _image_members("visionlab", 0.5, False), "apache-2.0",
                    {"width": 8}),)
    small = (_family("cnn", "cnn", "shapes-cnn", 1, _image_members("visionlab", 1.0, True), "apache-2.0", cnn_kw),)
    if vit:
        small += (_family("vit", "vit", "shapes-vit", 1, _image_members("google-lite", 1.0, False), "mit", vit_kw),)
    medium = small + (_family("cnn2", "cnn", "glyphs-cnn", 2, _image_members("glyphworks", 1.0, True),
                              "cc-by-nc-4.0", cnn_kw),)
    if text:
        medium += (_family("text", "text", "topics-minilm", 3, _text_members(1.0), "apache-2.0", {}),)
    return {"tiny": tiny, "small": small, "medium": medium}


def _hf_presets() -> dict[str, tuple[FamilyDef, ...]]:
    """--hf-format: a transformers ViT and ResNet family on one image task (so one labelled probe
    folder serves the whole zoo)."""
    def fams(scale: float, full: bool) -> tuple[FamilyDef, ...]:
        return (_family("hf-vit", "hf-image", "shapes-vit-hf", 1, _image_members("google-lite", scale, full, hf=True),
                        "apache-2.0", {"config": HF_VIT}),
                _family("hf-resnet", "hf-image", "shapes-resnet-hf", 1,
                        _image_members("microsoft-lite", scale, full, hf=True), "mit", {"config": HF_RESNET}))
    return {"tiny": fams(0.5, False), "small": fams(1.0, True), "medium": fams(1.0, True)}


PRESETS: dict[str, tuple[FamilyDef, ...]] = _presets()
HF_PRESETS: dict[str, tuple[FamilyDef, ...]] = _hf_presets()
SIZES: tuple[str, ...] = tuple(PRESETS)


@dataclass
class ClassifierSpec:
    """One planned model of the classifier zoo."""

    id: str
    family: str
    arch: str
    op: str
    parent: str | None
    relation: str | None
    group: str
    steps: int
    seed: int
    task: TaskSpec
    arch_kwargs: dict[str, Any]
    created_at: datetime
    depth: int
    root: str  # lineage root, following distill edges
    weight_root: str  # root of the weight-visible family (a distilled student starts its own)
    license: str
    card: dict[str, Any] = field(default_factory=dict)
    mess: dict[str, str] = field(default_factory=dict)
    pipeline_tag: str = "image-classification"

    @property
    def created_at_iso(self) -> str:
        return self.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")


def plan_classifiers(size: str = "small", seed: int = 0, hf_format: bool = False) -> list[ClassifierSpec]:
    """The models of the preset, parents first; a pure function of (size, seed, hf_format)."""
    presets = HF_PRESETS if hf_format else PRESETS
    if size not in presets:
        raise UsageError(f"--size must be one of {', '.join(presets)} for --classifiers")
    rng = random.Random(derive_seed("classifiers", size, seed, "hf" if hf_format else ""))
    specs: dict[str, ClassifierSpec] = {}
    for fam in presets[size]:
        task = TaskSpec(**{**fam.task, "seed": derive_seed(seed, "task", fam.task["seed"]) % 100_003})
        other_task = replace(task, classes=3, seed=derive_seed(seed, "transfer-task", fam.key) % 100_003)
        root_time = EPOCH + timedelta(days=rng.uniform(0, 200), seconds=rng.randint(0, 86399))
        for m in fam.members:
            mid = m.name.format(base=fam.base)
            parent = specs[m.parent.format(base=fam.base)] if m.parent else None
            if parent is None:
                created = root_time if m.op == "root" else root_time + timedelta(days=rng.uniform(-150, 250))
            else:
                lo, hi = DELAY_DAYS[m.op]
                created = parent.created_at + timedelta(days=rng.uniform(lo, hi), seconds=rng.randint(60, 86399))
            arch, kwargs, t = fam.arch, dict(fam.arch_kwargs, **dict(m.kwargs)), task
            if m.op == "other-arch":
                arch, kwargs = "mlp", {"in_dim": task.channels * task.size * task.size, "hidden": 32}
            elif m.op == "transfer":
                t = other_task
            elif parent is not None:
                t = parent.task
            weight_parent = parent if parent is not None and m.op != "distill" else None
            specs[mid] = ClassifierSpec(
                id=mid, family=fam.key, arch=arch, op=m.op, parent=parent.id if parent else None,
                relation=RELATION_OF.get(m.op), group=GROUP_OF.get(m.op, "derived" if parent else "root"),
                steps=m.steps, seed=derive_seed(seed, "model", mid) % 2**31, task=t, arch_kwargs=kwargs,
                created_at=created, depth=parent.depth + 1 if parent else 0,
                root=parent.root if parent else mid,
                weight_root=weight_parent.weight_root if weight_parent else mid,
                license=parent.license if parent else fam.license, pipeline_tag=fam.pipeline_tag)
    out = list(specs.values())
    for s in out:
        _card(s, specs, random.Random(derive_seed("classifier-card", seed, s.id)))
    return out


def _card(spec: ClassifierSpec, specs: dict[str, ClassifierSpec], rng: random.Random) -> None:
    """What the card declares (licence and base model, sometimes missing or naming the root)."""
    fm: dict[str, Any] = {}
    if spec.parent is None or rng.random() < 0.7:
        fm["license"], spec.mess["license"] = spec.license, "honest"
    else:
        spec.mess["license"] = "missing"
    if spec.parent is None:
        spec.mess["base_model"] = "none"
    else:
        p_ok, p_missing = BASE_PROBS.get(spec.op, (0.5, 0.3))
        x = rng.random()
        grand = specs[spec.parent].parent
        if x < p_ok:
            fm["base_model"], spec.mess["base_model"] = spec.parent, "correct"
        elif x < p_ok + p_missing or grand is None:
            spec.mess["base_model"] = "missing"
        else:
            fm["base_model"], spec.mess["base_model"] = grand, "ancestor"
        if "base_model" in fm and spec.relation == "quantized" and rng.random() < 0.5:
            fm["base_model_relation"] = "quantized"
    if spec.parent is None and spec.op == "root" and spec.arch == "text":
        fm["base_model"] = MINILM_ID  # the true, released ancestor (outside the zoo)
    fm["pipeline_tag"] = spec.pipeline_tag
    fm["library_name"] = "transformers" if spec.arch.startswith("hf-") else "pytorch"
    extra = {"int8": ["8-bit", "bitsandbytes"], "fp16": ["fp16"], "distill": ["distillation"],
             "prune": ["sparse"], "adversarial": ["adversarial-training", "robustness"]}.get(spec.op, [])
    fm["tags"] = [spec.pipeline_tag, _hf_model_type(spec) or f"lineage-behaviour-{spec.arch}"] + extra
    fm["created_at"] = spec.created_at_iso
    spec.card = fm


def _hf_model_type(spec: ClassifierSpec) -> str | None:
    return str(spec.arch_kwargs["config"]["model_type"]) if spec.arch.startswith("hf-") else None


def _hf_architecture(spec: ClassifierSpec) -> str | None:
    model_type = _hf_model_type(spec)
    return {"vit": "ViTForImageClassification", "resnet": "ResNetForImageClassification"}.get(model_type or "")


# --- training and derivations (on top of the behaviour library) ---------------------------


def prune_retrain(parent: M.Classifier, data: Any, *, seed: int, steps: int, fraction: float = 0.3,
                  lr: float = 1e-3) -> M.Classifier:
    """30% magnitude pruning, a brief re-training, then the pruned positions zeroed again."""
    pruned = M.prune(parent, fraction)
    mask = {k: v == 0 for k, v in pruned.state().items() if k.endswith("weight") and v.dim() >= 2}
    M.train(pruned, data, steps=steps, lr=lr, seed=seed)
    state = pruned.state()
    for k, zero in mask.items():
        state[k] = torch.where(zero, torch.zeros_like(state[k]), state[k])
    return pruned.with_state(state)


def realise(spec: ClassifierSpec, models: dict[str, M.Classifier]) -> tuple[M.Classifier, dict[str, torch.Tensor] | None]:
    """(model, tensors to store instead of its state) for one spec; parents are in ``models``."""
    model, tensors = _realise(spec, models)
    if spec.arch == "hf-image" and model.meta.get("input_norm") is None:
        model.meta["input_norm"] = HF_NORM
    return model, tensors


def as_pixels(data: Any) -> Any:
    """``data`` as the 8-bit images of ``HF_NORM`` would hold it (pixels clipped to [0, 1] and
    rounded to 1/255, normalised back): Hugging Face image models are trained on real images, the
    same kind the probe PNGs (``write_probe_images``) are."""
    from lineage_index.behaviour.probes import through_pixels

    return type(data)(through_pixels(data.x, HF_NORM), data.y, data.origin)


def _data(spec: ClassifierSpec, n: int, seed: int) -> Any:
    data = task_data(spec.task, n, seed=seed)
    return as_pixels(data) if spec.arch == "hf-image" else data


def _realise(spec: ClassifierSpec, models: dict[str, M.Classifier]) -> tuple[M.Classifier, dict[str, torch.Tensor] | None]:
    data_seed = spec.seed % 100_000
    if spec.parent is None:
        if spec.op == "root" and spec.arch == "text":  # a classifier on the real MiniLM
            return M.minilm_classifier(spec.task, seed=spec.seed, head_steps=3 * spec.steps, steps=spec.steps,
                                       name=spec.id), None
        if spec.arch == "hf-image":  # M.train_fresh's recipe on images
            model = M.build(spec.arch, seed=spec.seed, task=spec.task, name=spec.id, **spec.arch_kwargs)
            return M.train(model, _data(spec, 2000, 1000 + spec.seed), steps=spec.steps, seed=spec.seed,
                           lr=M.LR[spec.arch][0]), None
        model = M.train_fresh(spec.arch, spec.task, seed=spec.seed, steps=spec.steps, name=spec.id,
                              **spec.arch_kwargs)
        return model, None
    parent = models[spec.parent]
    data = _data(spec, 2000, data_seed)
    op = spec.op
    if op == "ft-all":
        return M.finetune(parent, data, seed=spec.seed, steps=spec.steps), None
    if op == "ft-last":
        return M.finetune(parent, data, seed=spec.seed, steps=spec.steps, last_layer_only=True), None
    if op == "retrain-head":
        return M.finetune(parent, data, seed=spec.seed, steps=spec.steps, reinit_head=True), None
    if op == "adversarial":
        return M.adversarial_finetune(parent, data, seed=spec.seed, steps=spec.steps), None
    if op == "transfer":
        return M.transfer(parent, data, spec.task.classes, seed=spec.seed, steps=spec.steps,
                          head_steps=spec.steps // 2, task=spec.task), None
    if op == "prune":
        return prune_retrain(parent, data, seed=spec.seed, steps=spec.steps), None
    if op == "fp16":
        return M.round_fp16(parent), None
    if op == "int8":
        tensors = M.quantise_int8(parent)
        return parent.with_state(M.dequantise(tensors)), tensors
    if op == "distill":
        big = _data(spec, 4000, data_seed)
        override = {k: v for k, v in spec.arch_kwargs.items() if parent.arch_kwargs.get(k) != v}
        return M.distill(parent, big, seed=spec.seed, steps=spec.steps, **override), None
    raise ValueError(f"unknown classifier op {op}")


# --- writing -------------------------------------------------------------------------------


def write_repo(spec: ClassifierSpec, repo: Path, model: M.Classifier, tensors: dict[str, torch.Tensor] | None) -> int:
    """config.json + model.safetensors (the behaviour library's ``save``) and README.md."""
    M.save(model, repo, tensors=tensors)
    cfg_path = repo / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if not model.is_hf:
        cfg["architectures"] = [type(model.module).__name__]
        cfg["num_labels"] = model.classes
    if spec.op == "int8":
        cfg["quantization_config"] = dict(BNB_INT8_CONFIG)
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    body = BODY["text-root" if spec.op == "root" and spec.arch == "text" else spec.op]
    readme = ("---\n" + yaml.safe_dump(spec.card, sort_keys=False, default_flow_style=False) + "---\n\n"
              + f"# {spec.id.split('/', 1)[1]}\n\n{body}\n")
    (repo / "README.md").write_text(readme, encoding="utf-8")
    return sum(p.stat().st_size for p in repo.iterdir())


def truth_entry(spec: ClassifierSpec) -> dict[str, Any]:
    card = spec.card
    return {
        "license": spec.license, "license_name": None, "root": spec.root, "weight_root": spec.weight_root,
        "architecture": _hf_architecture(spec) or M.ARCHS[spec.arch].__name__,
        "model_type": _hf_model_type(spec) or f"lineage-behaviour-{spec.arch}", "arch": spec.arch, "kind": "model",
        "method": spec.op, "relation": spec.relation, "parents": [spec.parent] if spec.parent else [],
        "depth": spec.depth, "dtype": "I8" if spec.op == "int8" else "F32", "shards": 1, "params": {},
        "group": spec.group, "family": spec.family, "task": spec.task.to_dict(),
        "declared_license": card.get("license"), "declared_license_name": None,
        "declared_base_model": card.get("base_model"),
        "declared_base_model_relation": card.get("base_model_relation"),
        "pipeline_tag": spec.pipeline_tag, "library_name": card.get("library_name"),
        "created_at": spec.created_at_iso, "mess": dict(spec.mess),
    }


@dataclass(frozen=True)
class ClassifierZooSummary:
    out: Path
    size: str
    seed: int
    n_models: int
    n_edges: int
    relations: dict[str, int]
    groups: dict[str, int]
    seconds: float
    bytes_written: int

    @property
    def truth_path(self) -> Path:
        return self.out / "truth.json"


@contextmanager
def _deterministic_torch() -> Iterator[None]:
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)


def write_probe_images(task: TaskSpec, folder: Path, n: int, seed: int) -> Path:
    """``n`` labelled probe PNGs of ``task`` (a sample no model trained on), one sub-folder per
    class, scaled to pixels with ``HF_NORM`` as the models' preprocessor_config.json says."""
    from lineage_index.behaviour.probes import write_image_folder

    shutil.rmtree(folder, ignore_errors=True)
    data = task_data(task, n, seed=derive_seed(seed, "probes") % 100_000 + 500_000)
    return write_image_folder(data, folder, HF_NORM, by_label=True)


def _prepare(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        truth = out / "truth.json"
        if not truth.exists():
            raise UsageError(f"{out} is not empty and holds no zoo (no truth.json); refusing to overwrite")
        old = json.loads(truth.read_text())
        for model_id in old.get("models", {}):
            shutil.rmtree(out / model_id, ignore_errors=True)
        for org in {m.split("/", 1)[0] for m in old.get("models", {})}:
            if (out / org).is_dir() and not any((out / org).iterdir()):
                (out / org).rmdir()
        truth.unlink()
    out.mkdir(parents=True, exist_ok=True)


def build_classifier_zoo(out: Path, size: str = "small", seed: int = 0, progress: bool = True,
                         hf_format: bool = False, probes: int = 600) -> ClassifierZooSummary:
    """Train and write the classifier zoo ``size`` for ``seed`` into ``out`` (+ truth.json); with
    ``hf_format`` transformers ViT and ResNet families in Hugging Face layout, and ``probes``
    labelled probe images of their task in ``out/.probes/classNNN/``."""
    started = time.perf_counter()
    out = Path(out)
    specs = plan_classifiers(size, seed, hf_format)
    _prepare(out)
    if hf_format:
        write_probe_images(specs[0].task, out / PROBES_DIR, probes, seed)
    pending = Counter(s.parent for s in specs if s.parent)
    models: dict[str, M.Classifier] = {}
    written = 0
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with _deterministic_torch(), Progress(*columns, disable=not progress, transient=False, console=stderr_console()) as bar:
        task = bar.add_task(f"classifier zoo {size} seed {seed}", total=len(specs))
        for spec in specs:
            bar.update(task, description=f"{spec.op:<12} {spec.id}")
            model, tensors = realise(spec, models)
            model.name = spec.id
            written += write_repo(spec, out / spec.id, model, tensors)
            if pending[spec.id]:
                models[spec.id] = model
            if spec.parent:
                pending[spec.parent] -= 1
                if pending[spec.parent] == 0:
                    models.pop(spec.parent, None)
            bar.advance(task)
    edges = [{"child": s.id, "parent": s.parent, "relation": s.relation} for s in specs if s.parent]
    zoo = {"kind": "classifiers", "size": size, "seed": seed, "generator_version": GENERATOR_VERSION}
    if hf_format:
        zoo.update(format="huggingface", probes=PROBES_DIR)
    truth = {"zoo": zoo,
             "models": {s.id: truth_entry(s) for s in specs}, "edges": edges, "conflicts": []}
    written += write_json(out / "truth.json", truth)
    return ClassifierZooSummary(out, size, seed, len(specs), len(edges), dict(Counter(e["relation"] for e in edges)),
                                dict(Counter(s.group for s in specs)), round(time.perf_counter() - started, 1),
                                written)
