"""Zoo sizes as data: the foundation models and the derivation budget of each size.

``RECIPES[size]`` lists the roots (architecture, Hub id, licence, dtype, sharding) and how many
models each derivation op adds, plus training steps and the creation-delay ranges. Pure data;
no logic beyond the dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RootDef:
    """A foundation model of the zoo."""

    arch: str
    model_id: str
    license: str
    license_name: str | None = None
    dtype: str = "F32"
    shards: int = 1
    weight: float = 1.0  # how often it is picked as an ancestor


@dataclass(frozen=True)
class Recipe:
    """Composition and training budget of one zoo size."""

    roots: tuple[RootDef, ...]
    ops: tuple[tuple[str, int], ...]
    pretrain_steps: int
    finetune_steps: int
    distill_steps: int
    minilm_steps: int
    minilm_max_trained: int


_BASE_ROOTS = (
    RootDef("llama-nano", "meta-llama/Llama-3.1-Nano", "llama3.1", dtype="BF16", shards=2),
    RootDef("llama-nano", "openlm-research/open_llama_nano", "apache-2.0"),
    RootDef("gpt2-nano", "openai-community/gpt2-nano", "mit"),
    RootDef("qwen2-nano", "Qwen/Qwen2.5-Nano", "other", "qwen-research", dtype="BF16"),
    RootDef("bert-nano-mlm", "google-bert/bert-nano-uncased", "apache-2.0"),
    RootDef("minilm", "sentence-transformers/all-MiniLM-L6-v2", "apache-2.0", weight=0.4),
)
_MEDIUM_ROOTS = _BASE_ROOTS + (
    RootDef("mistral-nano", "mistralai/Mistral-Nano-v0.1", "apache-2.0", dtype="BF16", shards=3),
    RootDef("gemma-nano", "google/gemma-nano", "gemma", dtype="BF16"),
    RootDef("gpt2-nano", "stanford-crfm/alias-gpt2-nano-x21", "apache-2.0"),
    RootDef("llama-nano", "CohereForAI/aya-nano", "cc-by-nc-4.0", dtype="BF16"),
    RootDef("llama-nano", "HuggingFaceTB/SmolLM-Nano", "apache-2.0"),
    RootDef("bert-nano", "BAAI/bge-nano-en-v1.5", "mit"),
)

RECIPES: dict[str, Recipe] = {
    "tiny": Recipe(
        roots=(
            _BASE_ROOTS[0],
            RootDef("llama-nano", "openlm-research/open_llama_nano", "apache-2.0"),
        ),
        ops=(
            ("finetune", 2),
            ("partial", 1),
            ("lora-merge", 1),
            ("distill", 1),
            ("merge", 1),
            ("adapter", 1),
            ("quant-int8", 1),
            ("quant-fp16", 1),
            ("prune", 1),
            ("copy", 2),
        ),
        pretrain_steps=40,
        finetune_steps=12,
        distill_steps=20,
        minilm_steps=2,
        minilm_max_trained=0,
    ),
    "small": Recipe(
        roots=_BASE_ROOTS,
        ops=(
            ("finetune", 7),
            ("partial", 2),
            ("lora-merge", 2),
            ("distill", 1),
            ("merge", 2),
            ("adapter", 2),
            ("quant-int8", 2),
            ("quant-fp16", 1),
            ("prune", 1),
            ("copy", 3),
        ),
        pretrain_steps=200,
        finetune_steps=50,
        distill_steps=150,
        minilm_steps=8,
        minilm_max_trained=1,
    ),
    "medium": Recipe(
        roots=_MEDIUM_ROOTS,
        ops=(
            ("finetune", 28),
            ("partial", 7),
            ("lora-merge", 7),
            ("distill", 4),
            ("merge", 7),
            ("adapter", 9),
            ("quant-int8", 8),
            ("quant-fp16", 4),
            ("prune", 5),
            ("copy", 10),
        ),
        pretrain_steps=300,
        finetune_steps=60,
        distill_steps=200,
        minilm_steps=8,
        minilm_max_trained=3,
    ),
}

# days from parent to child: (min, max)
DELAY_DAYS = {
    "finetune": (3, 90),
    "partial": (3, 90),
    "lora-merge": (2, 60),
    "adapter": (1, 60),
    "quant-int8": (0.05, 10),
    "quant-fp16": (0.05, 5),
    "prune": (5, 90),
    "merge": (1, 30),
    "copy": (0.5, 200),
    "distill": (10, 120),
}
