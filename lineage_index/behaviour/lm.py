"""Same-basin determination for causal language models (seed 001 on LM loss).

Two causal LMs in Hugging Face layout (``config.json`` + ``*.safetensors``; Llama, GPT-2, Qwen2 ...)
are loaded through transformers from their configuration and safetensors weights only (never
pickle), de-quantised first (bitsandbytes int8 + ``.SCB`` rows, fp16/bf16 to float32). Along the
linear path θ(t) = (1−t)·θ_A + t·θ_B (11 points) the next-token loss and the token error (1 − top-1
accuracy) on probe text are measured; the loss barrier decides "same basin" against a threshold
calibrated for A from auxiliary LMs made here (short fine-tunes of A on its own samples, and
re-trainings of A's architecture from scratch on those samples), or given by the user.

Probe text: a text file (one probe per line; tokenised with the model's ``tokenizer.json``, or,
for a model without a tokenizer, whitespace-separated token ids per line), else sequences sampled
from A itself (temperature 1, fixed seed) - A's own distribution, which needs no tokenizer.

Embedding or output tables of another shape (another vocabulary) are taken from A (the shared
body with one fixed head); every other tensor must agree in name and shape. This module only
computes; it writes nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lineage_index.behaviour.calcache import load_threshold, save_threshold, weights_key
from lineage_index.behaviour.closeness import Threshold, threshold_between
from lineage_index.behaviour.determine import PathCurve, make_curve
from lineage_index.behaviour.fetch import resolve
from lineage_index.behaviour.hf import build_auto, check_fit
from lineage_index.behaviour.models import dequantise, read_tensors
from lineage_index.config import notice
from lineage_index.errors import ModelReadError, UsageError

BATCH = 16
END_TENSORS = ("embed", "wte", "lm_head", "word_embeddings", "output.weight")
# Re-training independent calibration models is only offered below this size (CPU minutes).
MAX_AUX_PARAMS = 50_000_000
STATISTIC = "ensemble"


@dataclass
class CausalLM:
    """A loaded causal LM: the transformers module, its config and where it came from."""

    module: nn.Module
    name: str
    model_type: str
    config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    @property
    def vocab_size(self) -> int:
        return int(self.module.get_input_embeddings().weight.shape[0])  # type: ignore[operator]

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def with_state(self, state: dict[str, torch.Tensor], name: str = "") -> CausalLM:
        module = build_module(self.config)
        module.load_state_dict(state, strict=False)
        module.eval()
        return CausalLM(module, name or self.name, self.model_type, dict(self.config), {"dir": self.meta.get("dir")})


def build_module(config: dict[str, Any]) -> nn.Module:
    """A float32 transformers causal LM of ``config`` (quantisation settings ignored: weights are
    de-quantised before loading; never remote code: ``hf.build_auto``)."""
    return build_auto(config, "lm")


def load_lm(ref: str | Path, name: str | None = None, *, hf_cache: str | Path | None = None,
            download: bool = False, max_download_mb: float | None = None, endpoint: str | None = None,
            token: str | bool | None = None) -> CausalLM:
    """Load a causal LM from safetensors (local directory, HF cache, or the Hub with consent)."""
    d = resolve(ref, hf_cache=hf_cache, download=download, max_download_mb=max_download_mb,
                endpoint=endpoint, token=token)
    tensors = read_tensors(d)
    try:
        config = json.loads((d / "config.json").read_text())
    except FileNotFoundError:
        raise ModelReadError(f"{d}: no config.json") from None
    except json.JSONDecodeError as exc:
        raise ModelReadError(f"{d}/config.json: not JSON ({exc})") from None
    module = build_module(config)
    state = dequantise(tensors)
    tied = bool(config.get("tie_word_embeddings", True))
    check_fit(module.state_dict(), state, d, str(config.get("model_type")), "lm_head" if tied else None)
    module.load_state_dict(state, strict=False)
    if tied and hasattr(module, "tie_weights"):
        module.tie_weights()
    module.eval()
    quant = "int8" if any(t.dtype == torch.int8 for t in tensors.values()) else (
        "fp16" if any(t.dtype in (torch.float16, torch.bfloat16) for t in tensors.values()) else None)
    return CausalLM(module, name or (str(ref) if not Path(ref).exists() else d.name), str(config["model_type"]),
                    config, {"dir": str(d), "quant": quant})


# --- probe text --------------------------------------------------------------------------


@torch.no_grad()
def sample_probes(lm: CausalLM, n: int = 64, length: int = 32, seed: int = 0) -> torch.Tensor:
    """``n`` token sequences sampled from the model itself (temperature 1), ``length`` tokens each."""
    g = torch.Generator().manual_seed(seed)
    bos = lm.config.get("bos_token_id")
    vocab = lm.vocab_size
    if isinstance(bos, int) and 0 <= bos < vocab:
        seq = torch.full((n, 1), bos, dtype=torch.long)
    else:
        seq = torch.randint(0, vocab, (n, 1), generator=g)
    for _ in range(length - 1):
        logits = lm.module(input_ids=seq).logits[:, -1].float()
        nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=g)
        seq = torch.cat([seq, nxt], dim=1)
    return seq


def text_probes(lm: CausalLM, path: str | Path, max_length: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids, attention mask) of a probe text file for ``lm``."""
    from lineage_index.behaviour.probes import token_rows

    rows = token_rows(path, lm.meta.get("dir"), lm.vocab_size, lm.name, max_length)
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    return ids, mask


# --- the path ----------------------------------------------------------------------------


@torch.no_grad()
def lm_eval(module: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[float, float, torch.Tensor]:
    """(mean next-token cross-entropy, token error, log-probability of every target token)."""
    mask = torch.ones_like(ids) if mask is None else mask
    wrong = 0
    lps = []
    for i in range(0, len(ids), BATCH):
        x, m = ids[i:i + BATCH], mask[i:i + BATCH]
        logits = module(input_ids=x, attention_mask=m).logits[:, :-1].float()
        target, keep = x[:, 1:], m[:, 1:].bool()
        lp = torch.log_softmax(logits, dim=-1).gather(-1, target[..., None]).squeeze(-1)
        lps.append(lp[keep])
        wrong += int((logits.argmax(-1) != target)[keep].sum())
    lp_all = torch.cat(lps)
    return float(-lp_all.mean()), wrong / max(1, len(lp_all)), lp_all


def aligned_states(a: CausalLM, b: CausalLM) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], bool]:
    """State dicts of A and B on A's architecture; end tables of another shape are A's."""
    if a.model_type != b.model_type:
        raise UsageError(f"{a.name} ({a.model_type}) and {b.name} ({b.model_type}) have different "
                         "architectures: there is no linear path between them")
    sa, sb = a.state(), b.state()
    if sa.keys() != sb.keys():
        raise UsageError(f"{a.name} and {b.name} have different tensor names")
    fixed = False
    for k in sa:
        if sa[k].shape != sb[k].shape:
            if not any(e in k for e in END_TENSORS):
                raise UsageError(f"{a.name} and {b.name} differ in the shape of {k}")
            fixed = True
            sb[k] = sa[k]
    return sa, sb, fixed


def lm_path(a: CausalLM, b: CausalLM, ids: torch.Tensor, mask: torch.Tensor | None = None,
            points: int = 11) -> tuple[PathCurve, bool]:
    """(curve, head fixed) of the LM loss and token error along θ(t)."""
    sa, sb, fixed = aligned_states(a, b)
    module = build_module(a.config)
    ts = [i / (points - 1) for i in range(points)]
    losses, errors, lps = [], [], []
    for t in ts:
        state = {k: ((1 - t) * v + t * sb[k]) if v.is_floating_point() else v for k, v in sa.items()}
        module.load_state_dict(state, strict=False)
        module.eval()
        loss, err, lp = lm_eval(module, ids, mask)
        losses.append(loss)
        errors.append(err)
        lps.append(lp if t in (0.0, 1.0) else None)
    return make_curve(ts, losses, errors, lps[0], lps[-1]), fixed


# --- calibration -------------------------------------------------------------------------


def train_lm(lm: CausalLM, ids: torch.Tensor, *, steps: int, lr: float, seed: int, batch: int = 16) -> CausalLM:
    """Adam on next-token loss over ``ids`` (in place)."""
    g = torch.Generator().manual_seed(seed)
    module = lm.module
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    for _ in range(steps):
        idx = torch.randint(0, len(ids), (min(batch, len(ids)),), generator=g)
        x = ids[idx]
        loss = module(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    return lm


def make_lm_aux(a: CausalLM, *, n_aux: int = 2, seed: int = 0, n_samples: int = 256, length: int = 32,
                ft_steps: int = 30, fresh_steps: int = 300) -> tuple[list[CausalLM], list[CausalLM]]:
    """Derived LMs (A fine-tuned on its own samples) and independent ones (A's architecture from
    scratch, trained on the same samples)."""
    if a.n_params > MAX_AUX_PARAMS:
        raise UsageError(f"{a.name} has {a.n_params / 1e6:.0f}M parameters: too large to re-train calibration "
                         "models here; pass your own (--lineage-aux / --independent-aux)")
    data = sample_probes(a, n_samples, length, seed=seed + 31)
    t0 = time.perf_counter()

    def say(i: int, what: str) -> None:
        notice(f"calibration for {a.name}: auxiliary LM {i}/{2 * n_aux} ({what}), "
               f"{time.perf_counter() - t0:.0f} s so far")

    derived = []
    for i in range(n_aux):
        say(i + 1, "derived")
        derived.append(train_lm(a.with_state(a.state(), f"aux-ft{i}"), data, steps=ft_steps * (i + 1), lr=1e-3,
                                seed=seed + 101 + i))
    independent = []
    for i in range(n_aux):
        say(n_aux + i + 1, "independent re-training")
        torch.manual_seed(seed + 9001 + i)
        fresh = CausalLM(build_module(a.config), f"aux-ind{i}", a.model_type, dict(a.config), dict(a.meta))
        independent.append(train_lm(fresh, data, steps=fresh_steps, lr=3e-3, seed=seed + 9001 + i))
    return derived, independent


@dataclass(frozen=True)
class LMDetermineResult:
    """Same-basin verdict for causal LMs A and B."""

    a: str
    b: str
    loss_barrier: float
    error_barrier: float
    threshold: float  # on the barrier named by ``statistic``
    verdict: str  # "same basin" | "different basins"
    curve: PathCurve
    calibration: Threshold
    n_probes: int
    fixed_head: bool
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)
    statistic: str = "ensemble"
    ensemble_barrier: float = 0.0
    batchnorm_reestimated: bool = False

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def calibrate_lm(a: CausalLM, ids: torch.Tensor, mask: torch.Tensor | None = None, *,
                 derived: list[CausalLM] | None = None, independent: list[CausalLM] | None = None,
                 n_aux: int = 2, seed: int = 0, statistic: str = STATISTIC) -> Threshold:
    """Barrier threshold for A from derived and independent auxiliary LMs."""
    derived, independent = derived or [], independent or []
    if not derived or not independent:
        made_d, made_i = make_lm_aux(a, n_aux=n_aux, seed=seed)
        derived, independent = derived or made_d, independent or made_i
    d = [lm_path(a, m, ids, mask)[0].statistic(statistic) for m in derived]
    i = [lm_path(a, m, ids, mask)[0].statistic(statistic) for m in independent]
    return threshold_between(d, i, higher_is_lineage=False)


def determine_lm(a: CausalLM, b: CausalLM, ids: torch.Tensor | None = None, mask: torch.Tensor | None = None, *,
                 points: int = 11, derived_aux: list[CausalLM] | None = None,
                 independent_aux: list[CausalLM] | None = None, n_aux: int = 2, seed: int = 0,
                 threshold: Threshold | None = None, n_probes: int = 64, length: int = 32,
                 statistic: str = STATISTIC, cache_dir: Path | None = None) -> LMDetermineResult:
    """LM loss/error barrier between A and B and the calibrated same-basin verdict.

    The verdict is taken on ``statistic`` (default ``ensemble``: the loss barrier against the
    endpoints' output mixture, see ``determine.PathCurve``), because two LMs trained on different
    text are confidently wrong on each other's text: the chord of the classic barrier is then far
    above the path and hides the basin boundary. The classic loss and error barriers are reported.
    """
    t0 = time.perf_counter()
    notes: list[str] = []
    if ids is None:
        ids = sample_probes(a, n_probes, length, seed=4242 + seed)
        mask = None
        notes.append(f"probe text: {len(ids)} sequences of {length} tokens sampled from {a.name}")
    curve, fixed = lm_path(a, b, ids, mask, points)
    key = weights_key([*sorted(a.state().items()), ("ids", ids), ("mask", mask if mask is not None else ids)],
                      "lm", n_aux, seed, statistic,
                      *(weights_key(sorted(m.state().items())) for m in (derived_aux or []) + (independent_aux or [])))
    cached = load_threshold(cache_dir, key) if threshold is None else None
    if cached is not None:
        threshold = cached
        notes.append("threshold from the calibration cache (--no-cache recalibrates)")
    if threshold is None:
        threshold = calibrate_lm(a, ids, mask, derived=derived_aux, independent=independent_aux,
                                 n_aux=n_aux, seed=seed, statistic=statistic)
        save_threshold(cache_dir, key, threshold)
        if not (derived_aux and independent_aux):
            notes.append("threshold calibrated on auxiliary LMs made here (fine-tunes of A on its own samples, "
                         "A's architecture re-trained from scratch on them)")
    if not threshold.separated:
        notes.append("calibration groups overlap: the verdict is uncertain")
    if fixed:
        notes.append("different vocabularies: shared body compared with A's embedding/output tables fixed")
    for m, q in ((a, a.meta.get("quant")), (b, b.meta.get("quant"))):
        if q:
            notes.append(f"{m.name}: {q} weights de-quantised to float32")
    verdict = "same basin" if curve.statistic(statistic) < threshold.value else "different basins"
    return LMDetermineResult(a.name, b.name, curve.loss_barrier, curve.error_barrier, threshold.value, verdict,
                             curve, threshold, len(ids), fixed, round(time.perf_counter() - t0, 4), tuple(notes),
                             statistic, curve.ensemble_barrier)


def is_causal_lm_dir(path: str | Path) -> bool:
    """Whether a local model directory is a Hugging Face causal LM (not a behaviour classifier)."""
    cfg = Path(path) / "config.json"
    try:
        data = json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    archs = data.get("architectures") or []
    return "lineage_behaviour" not in data and any(str(x).endswith(("ForCausalLM", "LMHeadModel")) for x in archs)
