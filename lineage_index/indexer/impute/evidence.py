"""Repository evidence for the impute stage: config.json, safetensors header, files, tags.

Each ``*_votes(rec, field, ...)`` returns ``Vote`` tuples (value, confidence, evidence, False)
read from one model's own repository: config.json (``architectures``, ``model_type``,
``quantization_config``), the safetensors header (tensor-name patterns, family signature shared
with models of known type, quantisation aux tensors), repository files (adapter_config.json,
sentence-transformers files, GGUF, LICENSE text) and tags. Lineage lives in ``impute``; this
module reads nothing from disk and never looks at other models except through ``peers``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from lineage_index.indexer.impute.license_text import identify_license
from lineage_index.indexer.sketch.canon import family_signature, quant_aux_kind
from lineage_index.records import ModelRecord

Vote = tuple[str, float, str, bool]  # value, confidence, evidence, from lineage


def text_or_none(x: Any) -> str | None:
    """``x`` stripped when it is a non-empty string, else None."""
    return x.strip() if isinstance(x, str) and x.strip() else None

PIPELINES = frozenset("""text-generation fill-mask feature-extraction sentence-similarity text-classification
token-classification question-answering text2text-generation summarization translation image-classification
image-text-to-text zero-shot-classification automatic-speech-recognition text-to-image""".split())
LIBRARIES = frozenset("peft sentence-transformers gguf transformers diffusers mlx timm open_clip onnx".split())
ARCH_TYPES = {"gpt2": "gpt2", "bert": "bert", "llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
               "gemma": "gemma", "gemma2": "gemma2", "gemma3": "gemma3", "mistral": "mistral",
               "mixtral": "mixtral", "phi": "phi", "phi3": "phi3", "roberta": "roberta",
               "xlmroberta": "xlm-roberta", "distilbert": "distilbert", "t5": "t5", "gptneox": "gpt_neox",
               "falcon": "falcon", "mpnet": "mpnet", "qwen2moe": "qwen2_moe", "olmo": "olmo"}  # fmt: skip
_HEADS = (("ForCausalLM", "text-generation", 0.85), ("LMHeadModel", "text-generation", 0.85),
          ("ForMaskedLM", "fill-mask", 0.85), ("ForSequenceClassification", "text-classification", 0.85),
          ("ForTokenClassification", "token-classification", 0.85),
          ("ForQuestionAnswering", "question-answering", 0.85),
          ("ForConditionalGeneration", "text2text-generation", 0.5), ("Model", "feature-extraction", 0.6))  # fmt: skip
_TASKS = {"CAUSAL_LM": "text-generation", "FEATURE_EXTRACTION": "feature-extraction", "SEQ_CLS":
          "text-classification", "TOKEN_CLS": "token-classification", "QUESTION_ANS": "question-answering",
          "SEQ_2_SEQ_LM": "text2text-generation"}  # fmt: skip
_ST_FILES = ("config_sentence_transformers.json", "sentence_bert_config.json", "modules.json")
_REUSE_TAGS = {"mergekit": "merge", "merge": "merge", "sparse": "prune", "pruned": "prune", "8-bit": "quantized",
               "4-bit": "quantized", "bitsandbytes": "quantized", "gptq": "quantized", "awq": "quantized",
               "gguf": "quantized", "lora": "adapter", "distillation": "distill"}  # fmt: skip
_HEADER_TYPES = (("c_attn", "gpt2"), ("attention.self.query", "bert"), ("self_attn.q_norm", "qwen3"),
                 ("self_attn.q_proj.bias", "qwen2"))  # fmt: skip


def _arch_type(arch: str) -> str | None:
    for _suffix, _pipe, _c in _HEADS:
        if arch.endswith(_suffix) and len(arch) > len(_suffix):
            key = arch[: -len(_suffix)].lower()
            return ARCH_TYPES.get(key, key)
    return None


def config_votes(rec: ModelRecord, field: str) -> list[Vote]:
    cfg = rec.config if isinstance(rec.config, dict) else {}
    archs = [a for a in cfg.get("architectures") or [] if isinstance(a, str)] if isinstance(
        cfg.get("architectures"), list) else []
    out: list[Vote] = []
    for arch in archs[:2]:
        if field == "model_type" and (t := _arch_type(arch)):
            out.append((t, 0.9, f"config.json architectures {arch}", False))
        if field == "pipeline_tag":
            for suffix, pipe, conf in _HEADS:
                if arch.endswith(suffix):
                    out.append((pipe, conf, f"config.json architectures {arch}", False))
                    break
    qc = cfg.get("quantization_config")
    if field == "reuse_method" and isinstance(qc, dict):
        out.append(("quantized", 0.9, f"config.json quantization_config ({qc.get('quant_method', '?')})", False))
    if field == "library" and (archs or text_or_none(cfg.get("model_type"))):
        out.append(("transformers", 0.7, "config.json with architectures/model_type", False))
    return out


def header_votes(rec: ModelRecord, field: str, peers: Mapping[str, Counter[str]]) -> list[Vote]:
    names = [t.name for t in rec.tensors]
    out: list[Vote] = []
    if field == "model_type":
        for pattern, mtype in _HEADER_TYPES:
            if any(pattern in n for n in names):
                out.append((mtype, 0.8, f"safetensors header: '{pattern}' tensors", False))
                break
        fam = family_of(rec)
        if fam and peers.get(fam):
            value, n = peers[fam].most_common(1)[0]
            out.append((value, 0.85 * n / sum(peers[fam].values()),
                        f"header family {fam} shared with {n} model(s) of type {value}", False))
    if field == "reuse_method":
        kinds = {k for n in names if (k := quant_aux_kind(n))}
        if kinds:
            out.append(("quantized", 0.85, f"safetensors header: quantisation tensors ({', '.join(sorted(kinds))})", False))
    return out


def file_votes(rec: ModelRecord, field: str, license_text: str | None) -> list[Vote]:
    paths = {f.path.rsplit("/", 1)[-1].lower() for f in rec.files}
    out: list[Vote] = []
    adapter = rec.adapter_config is not None or "adapter_config.json" in paths
    st = [p for p in _ST_FILES if p in paths]
    gguf = any(p.endswith(".gguf") for p in paths)
    if field == "library":
        if adapter:
            out.append(("peft", 0.95, "adapter_config.json", False))
        if st:
            out.append(("sentence-transformers", 0.95, st[0], False))
        if gguf:
            out.append(("gguf", 0.9, "GGUF weight files", False))
    elif field == "reuse_method":
        if adapter:
            out.append(("adapter", 0.95, "adapter_config.json", False))
        if gguf:
            out.append(("quantized", 0.75, "GGUF weight files", False))
        if "mergekit_config.yml" in paths:
            out.append(("merge", 0.9, "mergekit_config.yml", False))
    elif field == "pipeline_tag":
        if st:
            out.append(("sentence-similarity", 0.9, st[0], False))
        task = text_or_none((rec.adapter_config or {}).get("task_type"))
        if task and task.upper() in _TASKS:
            out.append((_TASKS[task.upper()], 0.8, f"adapter_config.json task_type {task}", False))
    elif field == "license" and license_text:
        m = identify_license(license_text)
        if m is not None:
            out.append((m.license, min(0.95, 0.5 + m.score / 2),
                        f"LICENSE text matches {m.license} (score {m.score:.2f})", False))
    return out


def tag_votes(rec: ModelRecord, field: str, known_types: frozenset[str]) -> list[Vote]:
    tags = [t.strip().lower() for t in rec.tags if isinstance(t, str) and t.strip()]
    out: list[Vote] = []
    for t in tags:
        if field == "license" and t.startswith("license:") and len(t) > 8:
            out.append((t[8:], 0.9, f"tag {t}", False))
        elif field == "pipeline_tag" and t in PIPELINES:
            out.append((t, 0.85, f"tag {t}", False))
        elif field == "library" and t in LIBRARIES:
            out.append((t, 0.6 if t == "transformers" else 0.8, f"tag {t}", False))
        elif field == "model_type" and t in known_types:
            out.append((t, 0.8, f"tag {t}", False))
        elif field == "reuse_method" and t in _REUSE_TAGS:
            out.append((_REUSE_TAGS[t], 0.6, f"tag {t}", False))
    if field == "reuse_method" and (rec.base_models or rec.adapter_config) and not out:
        out.append(("finetune", 0.3, "declares a base model, no other reuse evidence", False))
    return out


def family_of(rec: ModelRecord) -> str | None:
    if not rec.tensors or rec.adapter_config is not None:
        return None
    try:
        fam, _ = family_signature(rec.tensors)
    except (ValueError, KeyError, TypeError):
        return None
    return None if fam == "empty" else fam
