"""Hub-like organisation and repository names for the zoo's models.

Names follow Hub habits (same org for an official instruct tune, quantisers' orgs for quants,
user accounts for adapters, a new brand for laundered re-uploads). Pure functions of a
``random.Random``; this module must not know about weights, training or licences.
"""

from __future__ import annotations

import random

FINETUNE_ORGS = (
    "NousResearch",
    "teknium",
    "HuggingFaceH4",
    "allenai",
    "cognitivecomputations",
    "upstage",
    "nvidia",
    "ibm-granite",
    "argilla",
    "OpenAssistant",
    "lmsys",
    "WizardLMTeam",
    "Intel",
    "stabilityai",
    "databricks",
    "kaist-ai",
    "openchat",
    "berkeley-nest",
    "Open-Orca",
    "garage-bAInd",
)
ENCODER_ORGS = (
    "intfloat",
    "thenlper",
    "jinaai",
    "nomic-ai",
    "Alibaba-NLP",
    "mixedbread-ai",
    "BAAI",
)
QUANT_ORGS = ("TheBloke", "bartowski", "unsloth", "MaziyarPanahi", "QuantFactory", "RichardErkhov")
ADAPTER_USERS = (
    "jsmith",
    "lucas-ml",
    "priya-nlp",
    "ahmedk",
    "mei-lab",
    "tomasz-ai",
    "sofia-dev",
    "kenji-t",
    "nadia-r",
    "omar-lm",
    "yuki-h",
    "diego-nlp",
)
MERGE_ORGS = ("mlabonne", "Undi95", "Weyaxi", "jondurbin", "grimjim", "Sao10K")
MIRROR_ORGS = ("ModelHub-Mirror", "ai-reupload", "free-llm-hub", "opensource-models", "llm-archive")
DISTILL_ORGS = ("distil-labs", "TinyStudents", "h2oai", "Felladrin", "sshleifer")
BRANDS = ("Nova", "Aurora", "Zephyrine", "Helix", "Quasar", "Lumen", "Orion", "Vega", "Sable")

FINETUNE_SUFFIXES = (
    "Instruct",
    "chat",
    "sft",
    "dpo",
    "code",
    "math",
    "medical",
    "legal",
    "finance",
    "roleplay",
    "hermes",
    "orca",
    "ultrachat",
    "summarize",
    "de",
    "fr",
    "ja",
    "ko",
    "tool-use",
    "reasoning",
)
ENCODER_SUFFIXES = (
    "msmarco",
    "nli",
    "sts",
    "retrieval",
    "clustering",
    "qa",
    "multilingual",
    "code-search",
)
PARTIAL_SUFFIXES = ("domain-adapt", "ft-top", "continued", "specialized")
LORA_MERGED_SUFFIXES = ("lora-merged", "qlora-merged", "merged")
ADAPTER_SUFFIXES = ("lora", "qlora-adapter", "peft-lora", "LoRA")
INT8_SUFFIXES = ("8bit", "bnb-8bit", "int8")


def stem(model_id: str) -> str:
    """Repository name without the org."""
    return model_id.split("/", 1)[-1]


def short_stem(model_id: str, max_parts: int = 4) -> str:
    """A parent's name trimmed so chains of suffixes stay readable."""
    parts = stem(model_id).split("-")
    return "-".join(parts[:max_parts])


class NameBook:
    """Hands out unique ``org/name`` ids."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def claim(self, org: str, name: str) -> str:
        base = f"{org}/{name}"
        candidate, n = base, 2
        while candidate.lower() in self.used:
            candidate, n = f"{base}-v{n}", n + 1
        self.used.add(candidate.lower())
        return candidate

    def pick(self, pool: tuple[str, ...]) -> str:
        return self.rng.choice(pool)

    def child(self, op: str, parent: str, kind: str, extra: str = "") -> str:
        """A new id for a child made by ``op`` from ``parent``."""
        r = self.rng
        parent_org, base = parent.split("/", 1)[0], short_stem(parent)
        encoder = kind in ("encoder", "mlm")
        if op == "finetune":
            org = (
                parent_org
                if r.random() < 0.25
                else self.pick(ENCODER_ORGS if encoder else FINETUNE_ORGS)
            )
            suffix = self.pick(ENCODER_SUFFIXES if encoder else FINETUNE_SUFFIXES)
            return self.claim(org, f"{base}-{suffix}")
        if op == "partial":
            org = self.pick(ENCODER_ORGS if encoder else FINETUNE_ORGS)
            return self.claim(org, f"{base}-{self.pick(PARTIAL_SUFFIXES)}")
        if op == "lora-merge":
            return self.claim(self.pick(ADAPTER_USERS), f"{base}-{self.pick(LORA_MERGED_SUFFIXES)}")
        if op == "adapter":
            return self.claim(self.pick(ADAPTER_USERS), f"{base}-{self.pick(ADAPTER_SUFFIXES)}")
        if op == "quant-int8":
            return self.claim(self.pick(QUANT_ORGS), f"{stem(parent)}-{self.pick(INT8_SUFFIXES)}")
        if op == "quant-fp16":
            org = parent_org if r.random() < 0.5 else self.pick(QUANT_ORGS)
            return self.claim(org, f"{stem(parent)}-fp16")
        if op == "prune":
            return self.claim(self.pick(ADAPTER_USERS + FINETUNE_ORGS), f"{base}-pruned-{extra}")
        if op == "merge":
            return self.claim(self.pick(MERGE_ORGS), f"{base}-{extra}-linear-merge")
        if op == "copy":
            if extra == "rename":
                flavour = self.pick(("Chat", "Instruct", "Base", "LM", "Mini"))
                return self.claim(self.pick(MIRROR_ORGS), f"{self.pick(BRANDS)}-{flavour}-Nano")
            return self.claim(self.pick(MIRROR_ORGS), stem(parent))
        if op == "distill":
            return self.claim(self.pick(DISTILL_ORGS), f"{base}-distilled")
        raise ValueError(f"unknown op {op}")
