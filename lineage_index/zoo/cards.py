"""Model-card metadata of the zoo, as messy as the Hub's, and the truth about that mess.

``assign_cards`` decides, per model, the TRUE licence and what the card DECLARES (licence
present / missing / wrong / laundered; ``base_model`` correct / missing / naming an ancestor /
an unrelated model / a model outside the zoo; ``base_model_relation`` sometimes), then lists
the licence conflicts along true edges. ``render_readme`` writes the card. The licence check
here is a small tag-level reading of LICENSES.md for labelling the truth only; it is not the
product's licence engine. This module must not touch tensors or files.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import yaml

from lineage_index.zoo.archs import ARCHS
from lineage_index.zoo.data import derive_seed
from lineage_index.zoo.plan import ModelSpec

PERMISSIVE = ("apache-2.0", "mit", "bsd-3-clause", "cc-by-4.0")
RAIL = (
    "openrail",
    "creativeml-openrail-m",
    "bigscience-openrail-m",
    "bigcode-openrail-m",
    "openrail++",
)
LLAMA3 = ("llama3", "llama3.1", "llama3.2", "llama3.3", "llama4")
RELICENSE_TO = ("apache-2.0", "mit", "cc-by-nc-4.0", "cc-by-sa-4.0", "openrail", "cc-by-4.0")
# restrictiveness, for the licence of a merge of differently licensed parents
_RANK = {
    "cc-by-nc-sa-4.0": 6,
    "cc-by-nc-4.0": 5,
    "cc-by-sa-4.0": 4,
    "gemma": 3,
    "llama2": 3,
    **{k: 3 for k in LLAMA3},
    **{k: 2 for k in RAIL},
    "other": 3,
    "cc-by-4.0": 1,
}
# (P(base_model names the true parent), P(base_model missing)) per op; the rest is wrong
_BASE_PROBS = {
    "adapter": (0.85, 0.05), "quant-int8": (0.7, 0.1), "quant-fp16": (0.7, 0.1),
    "copy": (0.3, 0.7), "distill": (0.4, 0.5),
}  # fmt: skip
HF_RELATION = {
    "finetune": "finetune",
    "adapter": "adapter",
    "quantized": "quantized",
    "merge": "merge",
}


@dataclass
class Card:
    """What a model card says, next to the truth it hides."""

    license: str
    license_name: str | None
    declared_license: str | None
    declared_license_name: str | None
    declared_base_model: str | list[str] | None
    declared_relation: str | None
    pipeline_tag: str | None
    library_name: str | None
    tags: list[str] = field(default_factory=list)
    mess: dict[str, str] = field(default_factory=dict)


def compat(parent: str | None, child: str | None, relation: str) -> str:
    """Tag-level verdict for a parent -> child licence pair: ok | warning | conflict | unknown."""
    if parent in PERMISSIVE:
        verdict = "ok"
    elif parent in (None, "other", "unknown") or child in (None, "other", "unknown"):
        return "unknown"
    elif parent in ("cc-by-sa-4.0", "cc-by-nc-sa-4.0", "llama2", "gemma"):
        verdict = "ok" if child == parent else "conflict"
    elif parent == "cc-by-nc-4.0":
        verdict = "ok" if child in ("cc-by-nc-4.0", "cc-by-nc-sa-4.0") else "conflict"
    elif parent in RAIL:
        verdict = "ok" if child == parent else ("warning" if child in RAIL else "conflict")
    elif parent in LLAMA3:
        verdict = "ok" if child == parent else ("warning" if child in LLAMA3 else "conflict")
    else:
        return "unknown"
    if verdict == "ok" and relation in ("quantized", "copy") and child not in (None, parent):
        verdict = "warning"  # same weights, no new authorship: the licence should be the parent's
    return verdict


def _true_license(
    spec: ModelSpec, parents: list[ModelSpec], rng: random.Random
) -> tuple[str, str | None]:
    if not parents:
        return spec.params["license"], spec.params.get("license_name")
    lic = [(p.card.license, p.card.license_name) for p in parents]
    best = max(lic, key=lambda x: _RANK.get(x[0], 0))
    if spec.relation in ("copy", "quantized"):
        return best
    if best[0] in PERMISSIVE and spec.relation != "merge" and rng.random() < 0.2:
        return rng.choice(RELICENSE_TO), None
    return best


def _declared_license(spec: ModelSpec, card: Card, rng: random.Random) -> None:
    true = card.license
    if not spec.parents:
        card.declared_license, card.declared_license_name = true, card.license_name
        card.mess["license"] = "honest"
        return
    x = rng.random()
    laundering = spec.op == "copy"
    if (laundering and x < 0.5) or (not laundering and x < 0.2):
        if true in PERMISSIVE:
            card.declared_license = rng.choice([p for p in PERMISSIVE if p != true])
            card.mess["license"] = "wrong"
        else:
            card.declared_license = rng.choice(("apache-2.0", "mit"))
            card.mess["license"] = "laundered" if laundering else "conflict"
    elif x < (0.7 if laundering else 0.4):
        card.mess["license"] = "missing"
    else:
        card.declared_license, card.declared_license_name = true, card.license_name
        card.mess["license"] = "honest"


def _external_name(root: str, ids: set[str]) -> str:
    name = root.replace("Nano", "8B").replace("nano", "7b")
    return name if name not in ids else f"{root}-large"


def _declared_base(
    spec: ModelSpec, specs: dict[str, ModelSpec], card: Card, rng: random.Random
) -> None:
    if not spec.parents:
        card.mess["base_model"] = "none"
        return
    parent = specs[spec.parents[0]]
    x = rng.random()
    if spec.op == "merge":
        if x < 0.6:
            card.declared_base_model, card.mess["base_model"] = list(spec.parents), "correct"
        elif x < 0.75:
            card.declared_base_model, card.mess["base_model"] = spec.parents[0], "partial"
        elif x < 0.9 and parent.root in specs and parent.root not in spec.parents:
            card.declared_base_model, card.mess["base_model"] = parent.root, "ancestor"
        else:
            card.mess["base_model"] = "missing"
        return
    p_ok, p_missing = _BASE_PROBS.get(spec.op, (0.45, 0.3))
    if x < p_ok:
        card.declared_base_model, card.mess["base_model"] = parent.id, "correct"
        return
    if x < p_ok + p_missing:
        card.mess["base_model"] = "missing"
        return
    # a wrong declaration: most often the foundation / grand-parent instead of the real parent
    y = rng.random()
    ancestors = [a for a in dict.fromkeys((parent.parents[0] if parent.parents else None, parent.root))
                 if a and a in specs and a != parent.id]  # fmt: skip
    unrelated = [
        s.id
        for s in specs.values()
        if not s.parents and s.arch == spec.arch and s.id != parent.root
    ]
    if ancestors and y < 0.7:
        card.declared_base_model, card.mess["base_model"] = rng.choice(ancestors), "ancestor"
    elif unrelated and y < (0.82 if ancestors else 0.35):
        card.declared_base_model, card.mess["base_model"] = rng.choice(unrelated), "unrelated"
    elif parent.root in specs:
        card.declared_base_model = _external_name(parent.root, set(specs))
        card.mess["base_model"] = "external"
    else:
        card.mess["base_model"] = "missing"


def _flavour(spec: ModelSpec, card: Card, rng: random.Random) -> None:
    arch = ARCHS[spec.arch]
    adapter = spec.op == "adapter"
    if rng.random() < 0.8 or not spec.parents:
        card.pipeline_tag = arch.pipeline_tag
    if adapter:
        card.library_name = "peft"
    elif rng.random() < 0.75 or not spec.parents:
        card.library_name = "sentence-transformers" if spec.arch == "minilm" else "transformers"
    tags = [arch.model_type] + ([card.pipeline_tag] if card.pipeline_tag else [])
    extra = {
        "quant-int8": ["8-bit", "bitsandbytes"],
        "merge": ["mergekit", "merge"],
        "adapter": ["lora", "peft"],
        "quant-fp16": ["fp16"],
        "distill": ["distillation"],
        "prune": ["sparse"],
    }.get(spec.op, [])
    if arch.kind == "causal-lm" and rng.random() < 0.5:
        extra.append("conversational")
    tags += extra
    bases = card.declared_base_model
    for b in [bases] if isinstance(bases, str) else (bases or []):
        tags.append(f"base_model:{b}")
        tags.append(f"base_model:{card.declared_relation or 'finetune'}:{b}")
    card.tags = tags


def _ensure_conflicts(
    specs: list[ModelSpec], by_id: dict[str, ModelSpec], rng: random.Random
) -> None:
    """Plant licence conflicts until there are at least ``max(2, n/15)`` (every zoo, any seed,
    has some for the licence checks to find): a child of a restrictively licensed parent
    declares a permissive licence."""
    wanted = max(2, len(specs) // 15)
    planted = [s for s in specs if s.card.mess.get("license") in ("conflict", "laundered")
               and compat(by_id[s.parents[0]].card.license, s.card.declared_license, s.relation or "") == "conflict"]  # fmt: skip
    candidates = [
        s for s in specs
        if s.parents and s.card.mess.get("license") in ("honest", "missing")
        and compat(by_id[s.parents[0]].card.license, "apache-2.0", s.relation or "") == "conflict"
    ]  # fmt: skip
    rng.shuffle(candidates)
    for s in candidates[: max(0, wanted - len(planted))]:
        s.card.declared_license = rng.choice(("apache-2.0", "mit"))
        s.card.declared_license_name = None
        s.card.mess["license"] = "laundered" if s.op == "copy" else "conflict"


def assign_cards(specs: list[ModelSpec], seed: int) -> list[dict[str, Any]]:
    """Set ``spec.card`` for every model; return the licence conflicts along true edges."""
    by_id = {s.id: s for s in specs}
    for s in specs:
        rng = random.Random(derive_seed("card", seed, s.id))
        parents = [by_id[p] for p in s.parents]
        lic, lic_name = _true_license(s, parents, rng)
        card = Card(
            license=lic,
            license_name=lic_name if lic == "other" else None,
            declared_license=None,
            declared_license_name=None,
            declared_base_model=None,
            declared_relation=None,
            pipeline_tag=None,
            library_name=None,
        )
        _declared_license(s, card, rng)
        _declared_base(s, by_id, card, rng)
        rel = HF_RELATION.get(s.relation or "")
        if (
            card.declared_base_model is not None
            and rel
            and rng.random() < (0.6 if s.op == "adapter" else 0.4)
        ):
            card.declared_relation = rel
        _flavour(s, card, rng)
        s.card = card
    _ensure_conflicts(specs, by_id, random.Random(derive_seed("conflicts", seed)))
    conflicts = []
    for s in specs:
        for p in s.parents:
            parent = by_id[p]
            verdict = compat(parent.card.license, s.card.declared_license, s.relation or "")
            if verdict in ("conflict", "warning"):
                conflicts.append(
                    {
                        "child": s.id,
                        "parent": p,
                        "relation": s.relation,
                        "parent_license": parent.card.license,
                        "child_declared_license": s.card.declared_license,
                        "verdict": verdict,
                        "planted": s.card.mess.get("license") in ("conflict", "laundered", "wrong"),
                    }
                )
    return conflicts


def front_matter(spec: ModelSpec) -> dict[str, Any]:
    """The YAML front matter of the card (keys absent when the card does not say)."""
    c: Card = spec.card
    fm: dict[str, Any] = {}
    if c.declared_license:
        fm["license"] = c.declared_license
        if c.declared_license == "other" and c.declared_license_name:
            fm["license_name"] = c.declared_license_name
            fm["license_link"] = "LICENSE"
    if c.declared_base_model is not None:
        fm["base_model"] = c.declared_base_model
    if c.declared_relation:
        fm["base_model_relation"] = c.declared_relation
    if c.pipeline_tag:
        fm["pipeline_tag"] = c.pipeline_tag
    if c.library_name:
        fm["library_name"] = c.library_name
    fm["tags"] = c.tags
    fm["created_at"] = spec.created_at_iso
    return fm


_BODY = {
    "root-pretrain": "A small foundation model pretrained from scratch.",
    "root-real": "A sentence-transformers model mapping sentences to a 384-dimensional vector space.",
    "finetune": "Fine-tuned for a downstream task.",
    "partial": "Continued training of the upper layers on domain data.",
    "lora-merge": "LoRA fine-tune, merged into the weights.",
    "adapter": "A LoRA adapter. Load it on top of its base model with PEFT.",
    "quant-int8": "8-bit (bitsandbytes LLM.int8) quantised weights.",
    "quant-fp16": "Half-precision weights.",
    "prune": "Magnitude-pruned and briefly retrained.",
    "merge": "A linear merge of two models made with mergekit.",
    "copy": "Model weights.",
    "distill": "A compact model trained to imitate a larger one.",
}


def render_readme(spec: ModelSpec, body: str | None = None) -> str:
    """README.md text: YAML front matter then a short body (or ``body`` when given)."""
    fm = yaml.safe_dump(
        front_matter(spec), sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    text = body if body is not None else f"# {spec.id.split('/', 1)[1]}\n\n{_BODY[spec.op]}\n"
    return f"---\n{fm}---\n\n{text}"
