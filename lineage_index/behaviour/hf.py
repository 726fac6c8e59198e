"""Hugging Face models for the behaviour tier: transformers Auto classes from ``config.json``.

A model directory in Hugging Face layout (``config.json`` naming ``model_type`` and
``architectures``, ``*.safetensors`` weights, and a ``preprocessor_config.json`` or tokenizer)
is rebuilt with transformers' Auto class for its task, from the configuration alone, and its
weights are loaded from safetensors only. Nothing is ever taken from remote code: a config with
``auto_map`` (a model that needs ``trust_remote_code``) is refused, as is a ``model_type``
transformers does not ship.

``HFModel`` wraps the transformers module so that the behaviour tier sees the interface of its
own architectures (``archs``): ``forward(x) -> logits``, a linear ``head`` (the classifier's
last layer, found by its output size), ``features(x)`` (what the head reads: a forward hook on
it), and for text ``embed`` / ``mask`` / ``classify`` (the walk space is the input word
embeddings). Three kinds, one subclass each so that ``ARCHS`` names them:

- ``hf-image`` (``*ForImageClassification``: ViT, ResNet, ConvNeXt, ...): ``pixel_values``;
- ``hf-text`` (``*ForSequenceClassification``: BERT family, ...): token ids, attention mask ids != pad;
- ``hf-lm`` (``*ForCausalLM`` / ``*LMHeadModel``): token ids; the logits are the next-token
  decision after the last real token, so closeness walks a language model's next-token choices.

The module's keyword arguments are JSON-able (``config``: the config dict; ``classes``,
``channels``, ``size`` override the label count, input channels and image size), so
``Classifier.with_state`` and the derivations rebuild it like any other architecture.
Preprocessing: ``preprocessor_config.json`` gives the image size and the per-channel
``image_mean``/``image_std`` applied to probe images scaled to [0, 1] (``read_preprocessor``).

timm image models in their Hub layout (``config.json`` with ``architecture``, ``model_args`` and
``pretrained_cfg``: no ``model_type``) are the fourth kind, ``hf-timm`` (``TimmImageClassifier``):
built by name with ``timm.create_model`` (never a pretrained download), head from
``get_classifier()``, preprocessing from ``pretrained_cfg`` (mean, std, input size).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lineage_index.errors import ModelReadError, UnsupportedFormatError

# architectures suffix -> (kind, transformers Auto class)
KINDS: dict[str, tuple[str, str]] = {
    "ForImageClassification": ("image", "AutoModelForImageClassification"),
    "ForSequenceClassification": ("text", "AutoModelForSequenceClassification"),
    "ForCausalLM": ("lm", "AutoModelForCausalLM"),
    "LMHeadModel": ("lm", "AutoModelForCausalLM"),
}
AUTO_OF_KIND = {kind: auto for kind, auto in KINDS.values()}
# transformers bookkeeping that is no configuration of the architecture
DROP_KEYS = ("quantization_config", "transformers_version", "_name_or_path", "torch_dtype", "dtype")
LABEL_KEYS = ("id2label", "label2id")
DEFAULT_IMAGE_SIZE = 224


def hf_kind(config: dict[str, Any] | None) -> str | None:
    """``image``, ``text`` or ``lm`` for a Hugging Face config whose ``architectures`` name a
    classifier or causal LM head, else None."""
    archs = (config or {}).get("architectures") or []
    if not isinstance(archs, list):
        return None
    for arch in archs:
        for suffix, (kind, _) in KINDS.items():
            if str(arch).endswith(suffix):
                return kind
    return None


def hf_config(config: dict[str, Any]) -> Any:
    """A transformers config object of ``config`` (a dict), never from remote code."""
    import transformers

    if config.get("auto_map"):
        raise UnsupportedFormatError("config.json has 'auto_map': the model needs remote code "
                                     "(trust_remote_code), which lineage-index never runs")
    data = {k: v for k, v in config.items() if k not in DROP_KEYS}
    model_type = data.pop("model_type", None)
    if not model_type:
        raise ModelReadError("config.json names no model_type")
    try:
        return transformers.AutoConfig.for_model(str(model_type), **data)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelReadError(f"transformers does not know model_type {model_type!r}: {exc}") from None


def build_auto(config: dict[str, Any], kind: str) -> nn.Module:
    """A float32 transformers model of ``config`` for ``kind`` (random initialisation)."""
    import transformers

    auto = getattr(transformers, AUTO_OF_KIND[kind])
    try:
        module = auto.from_config(hf_config(config), dtype=torch.float32, attn_implementation="eager")
    except (ValueError, KeyError) as exc:
        raise ModelReadError(f"{config.get('model_type')}: no {AUTO_OF_KIND[kind]} architecture ({exc})") from None
    module.eval()
    return module


class HFModel(nn.Module):
    """A transformers classifier or causal LM behind the behaviour tier's module interface."""

    KIND = "image"

    def __init__(self, config: dict[str, Any], classes: int | None = None, channels: int | None = None,
                 size: int | None = None) -> None:
        super().__init__()
        cfg = dict(config)
        if classes is not None and self.KIND != "lm" and int(classes) != int(cfg.get("num_labels", -1)):
            cfg["num_labels"] = int(classes)
            for key in LABEL_KEYS:
                cfg.pop(key, None)
        if classes is not None and self.KIND != "lm" and "num_labels" not in cfg:
            cfg["num_labels"] = int(classes)
        if channels is not None:
            cfg["num_channels"] = int(channels)
        if size is not None and "image_size" in cfg:
            cfg["image_size"] = int(size)
        self.model = build_auto(cfg, self.KIND)
        self.image_size = int(size or cfg.get("image_size") or DEFAULT_IMAGE_SIZE)
        self.head_name = self._find_head()
        self.pad_id = self._pad_id()

    def _pad_id(self) -> int:
        """The padding id of the probes: the config's ``pad_token_id``; a causal LM without one
        (GPT-2) pads with its end-of-text id, as its tokenizer users do - id 0 is a real token
        there ("!"), which padding with 0 would hide."""
        cfg = self.model.config
        ids = [getattr(cfg, "pad_token_id", None)] + ([getattr(cfg, "eos_token_id", None)] if self.KIND == "lm" else [])
        for value in ids:
            value = value[0] if isinstance(value, list) and value else value  # eos may be a list
            if isinstance(value, int):
                return value
        return 0

    def _find_head(self) -> str:
        if self.KIND == "lm":
            out = self.model.get_output_embeddings()
            names = [n for n, m in self.model.named_modules() if m is out]
            if names:
                return names[0]
            raise ModelReadError("causal LM without an output layer")
        labels = int(self.model.config.num_labels)
        linear = [n for n, m in self.model.named_modules() if isinstance(m, nn.Linear) and m.out_features == labels]
        if not linear:
            raise ModelReadError(f"{type(self.model).__name__}: no linear classifier layer with {labels} outputs")
        return linear[-1]

    @property
    def head(self) -> nn.Linear:
        return self.model.get_submodule(self.head_name)  # type: ignore[return-value]

    @property
    def head_prefix(self) -> str:
        return f"model.{self.head_name}."

    @property
    def channels(self) -> int:
        return int(getattr(self.model.config, "num_channels", 3))

    # text: the walk space is the input word embeddings
    def mask(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids != self.pad_id).long()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def embed_table(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight.detach()

    def _logits(self, out: Any, mask: torch.Tensor | None) -> torch.Tensor:
        logits = out.logits
        if self.KIND == "lm":  # the next-token decision after the last real token
            last = (mask.sum(1) - 1).clamp_min(0) if mask is not None else torch.full(
                (len(logits),), logits.shape[1] - 1)
            logits = logits[torch.arange(len(logits)), last]
        return logits

    def classify(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self._logits(self.model(inputs_embeds=z, attention_mask=mask), mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.KIND == "image":
            return self.model(pixel_values=x).logits
        mask = self.mask(x)
        return self._logits(self.model(input_ids=x, attention_mask=mask), mask)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the head reads for inputs ``x`` (for an LM: at the last real token)."""
        seen: list[torch.Tensor] = []
        hook = self.head.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
        try:
            self.forward(x)
        finally:
            hook.remove()
        feats = seen[-1]
        if self.KIND == "lm":
            last = (self.mask(x).sum(1) - 1).clamp_min(0)
            feats = feats[torch.arange(len(feats)), last]
        return feats.reshape(len(x), -1)


class HFImageClassifier(HFModel):
    KIND = "image"


class HFTextClassifier(HFModel):
    KIND = "text"


class HFCausalLM(HFModel):
    KIND = "lm"


# --- timm image models (config.json with "architecture" and "pretrained_cfg") -------------


def is_timm_config(config: dict[str, Any] | None) -> bool:
    """Whether ``config`` is a timm model's config.json (timm's Hub layout): a timm model name
    under ``architecture`` with ``pretrained_cfg`` or ``num_classes``, and no transformers
    ``model_type``."""
    return (isinstance(config, dict) and isinstance(config.get("architecture"), str) and "model_type" not in config
            and ("pretrained_cfg" in config or "num_classes" in config))


def timm_args(config: dict[str, Any], classes: int | None = None, channels: int | None = None,
              size: int | None = None) -> dict[str, Any]:
    """Keyword arguments of ``timm.create_model`` for a timm config.json (``model_args``, the label
    count, input channels and, for models that fix it, the image size)."""
    args = dict(config.get("model_args") or {})
    labels = classes if classes is not None else config.get("num_classes", args.get("num_classes"))
    if labels is not None:
        args["num_classes"] = int(labels)
    if config.get("global_pool") is not None:
        args.setdefault("global_pool", config["global_pool"])
    if channels is not None:
        args["in_chans"] = int(channels)
    if size is not None and "img_size" in args:
        args["img_size"] = int(size)
    return args


class TimmImageClassifier(HFModel):
    """A timm image classifier (``timm.create_model`` by name, no pretrained download) behind the
    same interface; the head is timm's ``get_classifier()``."""

    KIND = "image"

    def __init__(self, config: dict[str, Any], classes: int | None = None, channels: int | None = None,
                 size: int | None = None) -> None:
        nn.Module.__init__(self)
        try:
            import timm
        except ImportError:
            raise UnsupportedFormatError("a timm model: install timm (pip install timm) to read it") from None
        name = str(config["architecture"])
        if not timm.is_model(name):
            raise ModelReadError(f"timm does not know architecture {name!r}")
        args = timm_args(config, classes, channels, size)
        try:
            self.model = timm.create_model(name, pretrained=False, **args)
        except (TypeError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelReadError(f"timm {name}: cannot build it from config.json ({exc})") from None
        self.model.eval()
        pre = config.get("pretrained_cfg") or {}
        input_size = pre.get("input_size") or [3, DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE]
        img = args.get("img_size")
        self.image_size = int(size or (img[-1] if isinstance(img, list | tuple) else img) or input_size[-1])
        self._channels = int(args.get("in_chans", input_size[0]))
        self.head_name = self._find_head()
        self.pad_id = 0

    def _find_head(self) -> str:
        head = self.model.get_classifier()
        names = [n for n, m in self.model.named_modules() if m is head and isinstance(m, nn.Linear)]
        if not names:
            raise ModelReadError(f"timm {type(self.model).__name__}: no linear classifier head "
                                 "(a feature extractor without num_classes?)")
        return names[0]

    @property
    def channels(self) -> int:
        return self._channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def timm_preprocessor(config: dict[str, Any]) -> tuple[tuple[list[float], list[float]] | None, int | None]:
    """(per-channel (mean, std) for pixels in [0, 1], image size) from a timm ``pretrained_cfg``."""
    pre = config.get("pretrained_cfg") or {}
    mean, std, size = pre.get("mean"), pre.get("std"), pre.get("input_size")
    norm = ([float(v) for v in mean], [float(v) for v in std]) if isinstance(mean, list) and isinstance(std, list) \
        else None
    return norm, int(size[-1]) if isinstance(size, list) and size else None


def timm_config_dict(module: TimmImageClassifier, config: dict[str, Any],
                     norm: tuple[Any, Any] | None) -> dict[str, Any]:
    """The config.json of a timm model as timm's Hub export writes it (the label count and
    preprocessing of ``module``)."""
    head = module.head
    cfg = {k: v for k, v in config.items() if k not in ("num_classes", "model_args", "pretrained_cfg")}
    args = dict(config.get("model_args") or {}, num_classes=head.out_features)
    pre = dict(config.get("pretrained_cfg") or {})
    mean, std = norm if norm is not None else (pre.get("mean", [0.5] * module.channels),
                                               pre.get("std", [0.5] * module.channels))
    pre.update(num_classes=head.out_features, classifier=module.head_name, mean=list(mean), std=list(std),
               input_size=[module.channels, module.image_size, module.image_size])
    return dict(cfg, num_classes=head.out_features, num_features=head.in_features, model_args=args,
                pretrained_cfg=pre)



def read_preprocessor(d: Path) -> tuple[tuple[list[float], list[float]] | None, int | None]:
    """(per-channel (mean, std) for pixels in [0, 1], image size) from ``preprocessor_config.json``."""
    path = d / "preprocessor_config.json"
    if not path.is_file():
        return None, None
    try:
        pre = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelReadError(f"{path}: not JSON ({exc})") from None
    norm = None
    if pre.get("do_normalize", True) and pre.get("image_mean") is not None and pre.get("image_std") is not None:
        mean, std = pre["image_mean"], pre["image_std"]
        norm = ([float(v) for v in mean] if isinstance(mean, list) else [float(mean)],
                [float(v) for v in std] if isinstance(std, list) else [float(std)])
    size = pre.get("crop_size") if pre.get("do_center_crop") else pre.get("size")
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge") or size.get("width")
    return norm, int(size) if isinstance(size, int | float) else None


# buffers and tied tables a safetensors file may leave out
IGNORABLE_MISSING = ("position_ids", "num_batches_tracked", "masked_bias", ".attn.bias")


def check_fit(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], d: Path, what: str,
              tied_prefix: str | None = None) -> None:
    """Raise ModelReadError unless ``state`` fits the module state ``own``: no unknown tensor, no
    missing one (but buffers, rotary caches and a tied output table under ``tied_prefix``), and
    every shape as the config says."""
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state and not k.endswith(IGNORABLE_MISSING) and "rotary" not in k
               and not (tied_prefix and k.startswith(tied_prefix))]
    if unexpected or missing:
        raise ModelReadError(f"{d}: weights do not fit {what} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise ModelReadError(f"{d}: {k} has shape {tuple(v.shape)}, the config says {tuple(own[k].shape)}")


def load_state(module: HFModel, tensors: dict[str, torch.Tensor], d: Path) -> None:
    """Load de-quantised Hugging Face ``tensors`` into ``module`` (its ``model.`` prefix added);
    tied output embeddings and non-persistent buffers may be absent from the files."""
    tied = bool(getattr(getattr(module.model, "config", None), "tie_word_embeddings", False))
    check_fit(module.model.state_dict(), tensors, d, type(module.model).__name__,
              module.head_prefix[len("model."):] if tied else None)
    module.load_state_dict({f"model.{k}": v for k, v in tensors.items()}, strict=False)
    if tied:
        module.model.tie_weights()
    module.eval()


def config_dict(module: HFModel) -> dict[str, Any]:
    """The config.json of ``module`` as transformers writes it."""
    cfg = module.model.config.to_dict()
    cfg["architectures"] = [type(module.model).__name__]
    for key in ("transformers_version", "_name_or_path"):
        cfg.pop(key, None)
    return cfg


def hf_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of an ``HFModel`` under the transformers names (``model.`` prefix dropped;
    tied tensors stored once each, as their own copies)."""
    return {k[len("model."):] if k.startswith("model.") else k: v.detach().clone().contiguous()
            for k, v in state.items()}


def preprocessor_config(size: int, norm: tuple[Any, Any] | None, channels: int = 3) -> dict[str, Any]:
    """A ViT-style ``preprocessor_config.json``: resize to ``size``, rescale to [0, 1], normalise."""
    mean, std = norm if norm is not None else ([0.5] * channels, [0.5] * channels)
    as_list = lambda v: [float(x) for x in v] if isinstance(v, list | tuple) else [float(v)] * channels  # noqa: E731
    return {"image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": size, "width": size},
            "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": as_list(mean), "image_std": as_list(std)}
