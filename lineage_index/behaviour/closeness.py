"""Lineage closeness of a suspect classifier to a source (seed 002): s = (1 - d̄) · Mr.

For each probe point x the walk direction is sign(∇ₓ CE(f(x), f's label)) of the SOURCE f. Along
it, a coarse grid (batched over points and steps) finds the first step where the label changes, and
bisection refines it: the boundary distance d (capped at ``cap``; beyond it the point fails). Token
ids have no continuous input space that models share (each has its own word embeddings, and a
distilled student's are fresh), so text is walked along a discrete path of token substitutions the
source's embedding gradient ranks (``token_paths``), d = substitutions to the first label change. A point
matches when f(x) = g(x), both cross within the cap, and both cross into the same class. Mr is the
matched fraction, d̄ = mean |d_f − d_g| / cap over matched points.

Probe selection follows the paper: drop points that fail to match auxiliary lineage models
(sensitive boundaries) and points that match independent models (common boundaries), then keep
the K points with the largest summed distance to the others. The decision threshold is calibrated
per source on a second, held-out set of auxiliary models (``models.make_aux``), never fixed: the
independent models' upper tail at a stated false-positive rate (``FPR``), because the product rule
is never to claim lineage between independently trained models; the lineage side only bounds it.

A second, calibrated test looks at what distillation copies: the teacher's soft labels ("dark
knowledge", Hinton et al. 2015). ``soft_agreement`` is the mean cosine between the source's and the
suspect's logits over the classes the source did NOT predict (each centred), on the probe data.
Independently trained models agree on the winning class but rank the others their own way; a
student trained on its teacher's logits ranks them as its teacher does, even where its boundaries
moved (on the HF zoo's ResNet family, held-out seed 7: distilled students 0.73-0.81, real
independents 0.36-0.41, the tool's independent re-trainings 0.20-0.39). Each test runs at half the
false-positive rate (Bonferroni: together at most ``FPR``); the verdict is lineage when either
passes. Indirect mode (another label space) has no soft test: the re-headed source's logits are the
tool's own. The boundary test stays at half the rate there too: at the full rate, indirect mode
joined a ResNet transfer to the ViT root of held-out HF zoo seed 7 (0.248 > 0.244) and found
nothing more on seeds 0, 7 and 11. This module only computes; it writes nothing but the optional profile cache.

Why this module is long: the walk, the probe selection, the threshold and the profile cache are
one method (seed 002) over one ``Profile`` record; each step is short and reads the others'.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import torch
from torch import nn

from lineage_index.behaviour.archs import (
    HFModel,
    batch_for,
    embed_table,
    pad_id,
    reads_tokens,
    walk_inputs,
    walk_logits,
)
from lineage_index.behaviour.models import Classifier
from lineage_index.behaviour.probes import ProbeSet

BATCH = 8192
# Calibrated false-positive rate of closeness: the share of independently trained models of the
# source's architecture that may score above the threshold (product rule: specificity first).
FPR = 0.05
# Auxiliary models of each kind the tool makes per source; with 8, each fold's selection drops the
# points any of 4 independent models share (common boundaries) and calibration sees 8 of each.
N_AUX = 8
# Labelled probes below which the tool's own independent re-trainings are measurably weaker than
# real independent models (a timm ResNet: its independent twin scored 0.31 against a threshold of
# 0.24 calibrated on 300 probes, 0.24 against 0.34 on 600); closeness says so in its notes.
FEW_PROBES = 500
# Smallest spread of the independent models' soft agreement (a few models' spread understates it).
SOFT_FLOOR = 0.05
TEXT_BATCH = 512
# Coarse grid points and bisection rounds of the boundary walk (text: each step is an encoder pass).
WALK_STEPS = {"default": (16, 8), "text": (10, 6)}
# How text is walked: "tokens" (a discrete path of token substitutions every model of the
# vocabulary shares) or "embeddings" (sign-gradient steps in each model's own word embeddings).
TEXT_WALK = "tokens"


def _batch(module: nn.Module) -> int:
    return TEXT_BATCH if reads_tokens(module) else batch_for(module, BATCH)


def walk_steps(module: nn.Module) -> tuple[int, int]:
    return WALK_STEPS["text" if reads_tokens(module) else "default"]


@torch.no_grad()
def predict(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted labels, in batches."""
    b = _batch(module)
    return torch.cat([module(x[i:i + b]).argmax(1) for i in range(0, len(x), b)]) if len(x) else \
        torch.zeros(0, dtype=torch.long)


@torch.no_grad()
def predict_walk(module: nn.Module, z: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """Predicted labels at walk-space points (``context``: the text attention mask), in batches."""
    b = _batch(module)
    out = [walk_logits(module, z[i:i + b], None if context is None else context[i:i + b]).argmax(1)
           for i in range(0, len(z), b)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def content_mask(x: torch.Tensor, module: nn.Module | None = None) -> torch.Tensor:
    """Token ids: the real tokens but the first and the last of each probe (a classifier's special
    tokens); a causal LM's probe keeps its last token, the one its next-token decision follows."""
    real = x != pad_id(module)
    content = real.clone()
    content[:, 0] = False
    if not (isinstance(module, HFModel) and module.KIND == "lm"):
        content[torch.arange(len(x)), real.long().cumsum(1).argmax(1)] = False
    return content


def token_paths(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The source's walk for token ids: per probe, (position, token) substitutions, most loss-raising
    first, shape (n, T, 2) with position -1 past a probe's content.

    The first-order gain of putting token v at position i is (E[v] − E[x_i]) · ∇_{E[x_i]} CE of the
    source's own label (the source's gradient, as in the continuous walk); candidates are the probes'
    own content tokens. Every model sharing the vocabulary walks the same discrete path, whatever its
    embeddings - a distilled student with fresh embeddings included.
    """
    content = content_mask(x, module)
    vocab = torch.unique(x[content]) if content.any() else torch.unique(x[x != pad_id(module)])
    emb = embed_table(module)
    cand = emb[vocab]  # (C, D)
    steps = max(1, int(content.sum(1).max()))
    out = []
    b = _batch(module) // 2 or 1
    for i in range(0, len(x), b):
        xb = x[i:i + b]
        with torch.no_grad():
            z, ctx = walk_inputs(module, xb)
        z = z.detach().clone().requires_grad_(True)
        logits = walk_logits(module, z, ctx)
        loss = nn.functional.cross_entropy(logits, logits.argmax(1).detach(), reduction="sum")
        (grad,) = torch.autograd.grad(loss, z)
        with torch.no_grad():
            gain = grad @ cand.T - (z * grad).sum(-1, keepdim=True)  # (n, L, C)
            gain[xb.unsqueeze(-1) == vocab] = float("-inf")  # a substitution changes the token
            best, which = gain.max(-1)
            best[~content[i:i + b]] = float("-inf")
            order = torch.argsort(best, dim=1, descending=True, stable=True)[:, :steps]
            ok = torch.gather(best, 1, order) > float("-inf")
            tok = vocab[torch.gather(which, 1, order)]
            out.append(torch.stack([torch.where(ok, order, -1), torch.where(ok, tok, 0)], -1))
    return torch.cat(out)


def directions(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """sign(∇ CE(f(x), f(x)'s label)) per point in the walk space (the source's own gradient);
    for token ids the source's discrete path of token substitutions (``token_paths``)."""
    if reads_tokens(module) and TEXT_WALK == "tokens":
        return token_paths(module, x)
    out_dirs = []
    b = _batch(module) // 2 or 1
    for i in range(0, len(x), b):
        with torch.no_grad():
            z, ctx = walk_inputs(module, x[i:i + b])
        z = z.detach().clone().requires_grad_(True)
        out = walk_logits(module, z, ctx)
        loss = nn.functional.cross_entropy(out, out.argmax(1).detach(), reduction="sum")
        (grad,) = torch.autograd.grad(loss, z)
        out_dirs.append(grad.sign())
    return torch.cat(out_dirs)


@torch.no_grad()
def walk(module: nn.Module, x: torch.Tensor, direction: torch.Tensor, cap: float,
         coarse: int = 16, refine: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boundary distance along ``direction`` from the raw inputs ``x`` (walked in ``module``'s own
    walk space): (d in units of cap, label beyond, crossed within cap). A token path (integer
    ``direction``) is walked substitution by substitution: d = substitutions to the first label
    change / the path's length."""
    if not direction.is_floating_point():
        return _token_walk(module, x, direction)
    z, ctx = walk_inputs(module, x)
    n = len(z)
    base = predict_walk(module, z, ctx)
    steps = torch.linspace(cap / coarse, cap, coarse)
    shape = (1, coarse) + (1,) * (z.dim() - 1)
    grid = (z.unsqueeze(1) + steps.reshape(shape) * direction.unsqueeze(1)).reshape(n * coarse, *z.shape[1:])
    grid_ctx = None if ctx is None else ctx.repeat_interleave(coarse, dim=0)
    labels = predict_walk(module, grid, grid_ctx).reshape(n, coarse)
    changed = labels != base.unsqueeze(1)
    crossed = changed.any(1)
    first = torch.where(crossed, changed.float().argmax(1), torch.full((n,), coarse - 1))
    hi = steps[first]
    lo = torch.where(first > 0, steps[(first - 1).clamp_min(0)], torch.zeros(n))
    view = (n,) + (1,) * (z.dim() - 1)
    for _ in range(refine):
        mid = (lo + hi) / 2
        moved = predict_walk(module, z + mid.reshape(view) * direction, ctx) != base
        hi, lo = torch.where(moved, mid, hi), torch.where(moved, lo, mid)
    beyond = predict_walk(module, z + hi.reshape(view) * direction, ctx)
    return hi / cap, beyond, crossed


@torch.no_grad()
def _token_walk(module: nn.Module, x: torch.Tensor, path: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, steps = path.shape[0], path.shape[1]
    base = predict(module, x)
    seqs = x.unsqueeze(1).repeat(1, steps, 1)  # (n, T, L): step t holds the first t + 1 substitutions
    rows = torch.arange(n)
    for t in range(steps):
        pos, tok = path[:, t, 0], path[:, t, 1]
        live = pos >= 0
        seqs[rows[live], t:, pos[live]] = tok[live].unsqueeze(1)
    labels = predict(module, seqs.reshape(n * steps, -1)).reshape(n, steps)
    changed = labels != base.unsqueeze(1)
    crossed = changed.any(1)
    first = torch.where(crossed, changed.float().argmax(1), torch.full((n,), steps - 1))
    beyond = labels[rows, first]
    return (first + 1).float() / steps, beyond, crossed


@dataclass
class Profile:
    """The source's side of the measurement on a probe set (reusable for every suspect).

    ``x`` holds the raw probe inputs (token ids for text), ``direction`` the walk direction in the
    walk space, ``cap`` the distance cap there, ``coarse``/``refine`` the walk's resolution.
    """

    x: torch.Tensor
    direction: torch.Tensor
    label: torch.Tensor
    d: torch.Tensor
    beyond: torch.Tensor
    crossed: torch.Tensor
    cap: float
    coarse: int = 16
    refine: int = 8


def default_cap(x: torch.Tensor) -> float:
    """Distance cap in walk-space units: the standard deviation of the probe points there (the
    walk's 'domain')."""
    return float(x.float().std().clamp_min(1e-6))


def walk_cap(module: nn.Module, x: torch.Tensor) -> float:
    """``default_cap`` of the probe points in ``module``'s walk space (text: the longest token path,
    in substitutions)."""
    if reads_tokens(module) and TEXT_WALK == "tokens":
        return float(max(1, int(content_mask(x, module).sum(1).max())))
    with torch.no_grad():
        z, ctx = walk_inputs(module, x[:2048])
    return default_cap(z[ctx.bool()] if ctx is not None else z)


def profile(source: nn.Module, probes: ProbeSet, cap: float | None = None) -> Profile:
    """Walk every probe point on the source model."""
    x = probes.x
    cap = cap if cap is not None else walk_cap(source, x)
    coarse, refine = walk_steps(source)
    direction = directions(source, x)
    d, beyond, crossed = walk(source, x, direction, cap, coarse, refine)
    return Profile(x, direction, predict(source, x), d, beyond, crossed, cap, coarse, refine)


def match(prof: Profile, suspect: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point: matched (Eq. 4 within the cap) and |d_f − d_g| (in units of the cap)."""
    d, beyond, crossed = walk(suspect, prof.x, prof.direction, prof.cap, prof.coarse, prof.refine)
    same = (predict(suspect, prof.x) == prof.label) & (beyond == prof.beyond) & crossed & prof.crossed
    return same, (d - prof.d).abs().clamp(max=1.0)


def score(prof: Profile, suspect: nn.Module) -> tuple[float, float, float, int]:
    """(s, Mr, d̄, matched count) of ``suspect`` against the profile."""
    same, diff = match(prof, suspect)
    k = int(same.sum())
    mr = k / max(1, len(same))
    dbar = float(diff[same].mean()) if k else 1.0
    return (1.0 - dbar) * mr, mr, dbar, k


@torch.no_grad()
def logits_of(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's logits on raw inputs ``x``, in batches."""
    b = _batch(module)
    return torch.cat([module(x[i:i + b]).float() for i in range(0, len(x), b)])


def soft_agreement(source_logits: torch.Tensor, suspect_logits: torch.Tensor) -> float:
    """Mean cosine of the two models' centred logits over the classes the source did not predict
    (its soft labels without the winner), per probe point. 1: the same ranking and spacing."""
    n, c = source_logits.shape
    if c < 3 or suspect_logits.shape != source_logits.shape:
        return float("nan")
    rest = torch.ones(n, c, dtype=torch.bool)
    rest[torch.arange(n), source_logits.argmax(1)] = False
    a, b = source_logits[rest].reshape(n, c - 1), suspect_logits[rest].reshape(n, c - 1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return float(nn.functional.cosine_similarity(a, b, dim=1, eps=1e-8).mean())


def select(prof: Profile, lineage: list[nn.Module], independent: list[nn.Module], k: int) -> torch.Tensor:
    """Indices of the K test points: valid (paper step 1), then mutually distant (step 2)."""
    keep = prof.crossed.clone()
    votes = torch.zeros(len(keep))
    for m in lineage:
        same, _ = match(prof, m)
        keep &= same
        votes += same.float()
    for m in independent:
        same, _ = match(prof, m)
        keep &= ~same
        votes -= same.float()
    idx = torch.nonzero(keep).flatten()
    if len(idx) < min(k, len(keep)) // 2:  # too few clean points: best-voted ones instead
        order = torch.argsort(votes + prof.crossed.float() * 0.5, descending=True, stable=True)
        idx = order[: max(k, len(idx))]
    if len(idx) <= k:
        return idx
    # mutually distant points: in the input space, or (token ids) as bags of hashed tokens
    flat = prof.x[idx].flatten(1).float() if prof.x.is_floating_point() else _bags(prof.x[idx])
    spread = torch.cdist(flat, flat).sum(1)
    return idx[torch.argsort(spread, descending=True, stable=True)[:k]]


def _bags(x: torch.Tensor, dim: int = 1024) -> torch.Tensor:
    """Token ids as bag-of-token count vectors (ids hashed into ``dim`` buckets; padding left out)."""
    out = torch.zeros(len(x), dim)
    out.scatter_add_(1, x % dim, (x != 0).float())
    return out


def subset(prof: Profile, idx: torch.Tensor) -> Profile:
    return Profile(prof.x[idx], prof.direction[idx], prof.label[idx], prof.d[idx], prof.beyond[idx],
                   prof.crossed[idx], prof.cap, prof.coarse, prof.refine)


def rehead(source: Classifier, x: torch.Tensor, labels: torch.Tensor, classes: int, *, seed: int = 0,
           steps: int = 300) -> Classifier:
    """Indirect mode: the source with a new last layer fitted to another label space.

    The head is trained on the source's fixed features of the probe points (``features``), so
    re-heading even a large encoder costs one pass over the probes.
    """
    state = {k: v for k, v in source.state().items() if not k.startswith(source.head_prefix)}
    kwargs = dict(source.arch_kwargs, classes=classes)
    from lineage_index.behaviour.models import ARCHS

    torch.manual_seed(seed)
    module = ARCHS[source.arch](**kwargs)
    module.load_state_dict(state, strict=False)
    module.eval()
    with torch.no_grad():
        b = _batch(module)
        feats = torch.cat([module.features(x[i:i + b]) for i in range(0, len(x), b)])  # type: ignore[operator]
    head: nn.Linear = module.head  # type: ignore[assignment]
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(feats), (min(256, len(feats)),), generator=g)
        loss = nn.functional.cross_entropy(head(feats[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    meta = {k: v for k, v in source.meta.items() if k in ("dir", "input_norm")}
    return Classifier(module, source.arch, kwargs, None, f"{source.name}-reheaded", meta)


@dataclass(frozen=True)
class Threshold:
    """A calibrated decision threshold and the auxiliary scores it came from."""

    value: float
    lineage_scores: tuple[float, ...]
    independent_scores: tuple[float, ...]
    separated: bool
    how: str


def threshold_between(lineage: list[float], independent: list[float], *, higher_is_lineage: bool = True,
                      spread_floor: float | None = None, fpr: float | None = None) -> Threshold:
    """A threshold between the calibration groups.

    Default: the midpoint of the gap between the groups (of their means when they overlap). With
    ``spread_floor`` (the measurement noise of one score): the equal-z point, where the threshold
    lies as many standard deviations from each group's mean (each group's deviation at least the
    floor) - it leans towards the tighter group, e.g. towards the independent models when the
    lineage group spans mild and strong modifications.

    With ``fpr`` as well (closeness scores only, higher = lineage): the independent group's upper
    tail, mean + z(1 - fpr) standard deviations (Gaussian; deviation at least the floor), so that an
    independently trained model is called lineage with probability about ``fpr`` whatever the
    lineage group looks like - the product rule puts specificity first. The lineage side only
    bounds it: never above the median of the lineage calibration scores (half the calibrated
    derivations must still be found; beyond that the groups are not separable at this rate, and the
    result says so).
    """
    lo_group, hi_group = (independent, lineage) if higher_is_lineage else (lineage, independent)
    if not lineage or not independent:
        raise ValueError("calibration needs at least one lineage and one independent model")
    gap = min(hi_group) - max(lo_group)

    def mean_sd(v: list[float], floor: float) -> tuple[float, float]:
        mu = sum(v) / len(v)
        sd = (sum((x - mu) ** 2 for x in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else 0.0
        return mu, max(sd, floor)

    if fpr is not None and higher_is_lineage:
        mu_i, sd_i = mean_sd(independent, spread_floor or 0.0)
        z = NormalDist().inv_cdf(1.0 - fpr)
        value = mu_i + z * sd_i
        median = statistics.median(lineage)
        how = (f"independent models' upper tail at {100 * fpr:g}% false positives (mean {mu_i:.3f} + {z:.3f} x sd "
               f"{sd_i:.3f}, sd at least the score noise {spread_floor or 0.0:.3f})")
        if value > median:
            value = median
            how += f"; capped at the lineage calibration median {median:.3f}: groups not separable at this rate"
        return Threshold(round(value, 6), tuple(round(v, 6) for v in lineage),
                         tuple(round(v, 6) for v in independent), gap > 0, how)
    if spread_floor is not None:
        (mu_lo, sd_lo), (mu_hi, sd_hi) = mean_sd(lo_group, spread_floor), mean_sd(hi_group, spread_floor)
        value = (mu_lo * sd_hi + mu_hi * sd_lo) / (sd_lo + sd_hi)
        if gap > 0 and not max(lo_group) < value < min(hi_group):
            value = (min(hi_group) + max(lo_group)) / 2  # never outside the gap the groups leave
        how = (f"equal-z point between the groups (mean±sd {mu_hi:.3f}±{sd_hi:.3f} vs {mu_lo:.3f}±{sd_lo:.3f}, "
               f"sd at least the score noise {spread_floor:.3f})")
    elif gap > 0:
        value, how = (min(hi_group) + max(lo_group)) / 2, "midpoint of the gap between the groups"
    else:
        value = (sum(hi_group) / len(hi_group) + sum(lo_group) / len(lo_group)) / 2
        how = "groups overlap: midpoint of the group means"
    return Threshold(round(value, 6), tuple(round(v, 6) for v in lineage),
                     tuple(round(v, 6) for v in independent), gap > 0, how)


@dataclass(frozen=True)
class ClosenessResult:
    """Closeness of ``suspect`` to ``source`` with the calibrated verdict."""

    source: str
    suspect: str
    score: float
    match_rate: float
    mean_distance_diff: float
    n_probes: int
    n_matched: int
    threshold: float
    verdict: str  # "lineage" | "no lineage"
    calibration: Threshold
    cap: float
    indirect: bool = False
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)
    soft_agreement: float | None = None  # the soft-label test (None: indirect mode, or under 3 classes)
    soft_threshold: float | None = None
    soft_calibration: Threshold | None = None
    signal: str = ""  # which test said lineage: "boundary", "soft labels", "boundary + soft labels"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def profile_key(source: Classifier, probes: ProbeSet, k: int, extra: str = "") -> str:
    """Cache key: source weights, probe points and settings."""
    h = hashlib.sha256()
    for name, t in sorted(source.module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().contiguous().numpy().tobytes())
    h.update(probes.x.contiguous().numpy().tobytes())
    h.update(f"{k}|{extra}".encode())
    return h.hexdigest()[:32]


def _digest(model: Classifier) -> str:
    """A short hash of a model's weights (auxiliary models given by the user key the cache)."""
    h = hashlib.sha256()
    for name, t in sorted(model.module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_profile(path: Path, profs: Profile | list[Profile], thr: Threshold, soft: Threshold | None = None) -> None:
    """Cache the selected profiles (one per fold), their threshold and the soft-label test's as
    safetensors (+ JSON metadata)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for i, prof in enumerate(profs if isinstance(profs, list) else [profs]):
        tensors.update({f"{i}.x": prof.x, f"{i}.direction": prof.direction, f"{i}.label": prof.label,
                        f"{i}.d": prof.d, f"{i}.beyond": prof.beyond, f"{i}.crossed": prof.crossed.to(torch.uint8)})
    first = profs[0] if isinstance(profs, list) else profs
    meta = {"cap": json.dumps(first.cap), "threshold": json.dumps(asdict(thr)),
            "walk": json.dumps([first.coarse, first.refine]), "soft": json.dumps(asdict(soft) if soft else None)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)


def _threshold(d: dict[str, Any]) -> Threshold:
    return Threshold(d["value"], tuple(d["lineage_scores"]), tuple(d["independent_scores"]), d["separated"], d["how"])


def load_profile(path: Path) -> tuple[list[Profile], Threshold, Threshold | None] | None:
    """Cached profiles, threshold and soft-label threshold, or None when absent or unreadable."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            t = {k: f.get_tensor(k) for k in f.keys()}
        thr = _threshold(json.loads(meta["threshold"]))
        soft = json.loads(meta.get("soft", "null"))
        coarse, refine = json.loads(meta.get("walk", "[16, 8]"))
        cap = json.loads(meta["cap"])
        folds = sorted({int(k.split(".", 1)[0]) for k in t})
        profs = [Profile(t[f"{i}.x"], t[f"{i}.direction"], t[f"{i}.label"], t[f"{i}.d"], t[f"{i}.beyond"],
                         t[f"{i}.crossed"].bool(), cap, int(coarse), int(refine)) for i in folds]
        return (profs, thr, _threshold(soft) if soft else None) if profs else None
    except Exception:  # a damaged cache entry is recomputed, never trusted
        return None


def background(x: torch.Tensor, seed: int, pad: int = 0) -> torch.Tensor:
    """As many points as ``x`` off the data but within its range.

    Float inputs: each feature drawn from a Gaussian with that feature's mean and standard
    deviation over ``x``. Token ids: every probe with its content tokens (all but the first and
    the last real token) replaced by tokens drawn from the probes' own token frequencies.
    """
    g = torch.Generator().manual_seed(50_000 + seed)
    if x.is_floating_point():
        return x.mean(0) + x.std(0) * torch.randn(x.shape, generator=g)
    real = x != pad
    last = real.long().cumsum(1).argmax(1)
    content = real.clone()
    content[:, 0] = False
    content[torch.arange(len(x)), last] = False
    tokens = x[content]
    if len(tokens) == 0:
        return x.clone()
    out = x.clone()
    out[content] = tokens[torch.randint(0, len(tokens), (int(content.sum()),), generator=g)]
    return out


def _folds(lin: list[Classifier], ind: list[Classifier]) -> list[tuple[list[nn.Module], ...]]:
    """Cross-fitting: (select lineage, select independent, calibrate lineage, calibrate independent)
    per fold; two folds with swapped halves when each group has two models or more."""
    lm, im = [m.module for m in lin], [m.module for m in ind]
    if len(lm) < 2 or len(im) < 2:
        return [(lm, im, lm, im)]
    return [(lm[0::2], im[0::2], lm[1::2], im[1::2]), (lm[1::2], im[1::2], lm[0::2], im[0::2])]


def calibrate_profiles(f: nn.Module, pool: ProbeSet, lin: list[Classifier], ind: list[Classifier],
                       k: int, fpr: float | None = None) -> tuple[list[Profile], Threshold]:
    """Walk the pool on the source ``f``, select K points per fold and calibrate the threshold.

    In each fold one half of the auxiliary models selects the points (paper step 1 and 2) and the
    other half is scored on them; the calibration scores of both folds set the threshold: the
    independent models' upper tail at ``fpr`` false positives (default ``FPR`` / 2: the soft-label
    test takes the other half), with the binomial noise of a match rate on K points as the smallest
    spread (``threshold_between``).
    """
    fpr = FPR / 2 if fpr is None else fpr
    full = profile(f, pool)
    profs: list[Profile] = []
    lin_scores: list[float] = []
    ind_scores: list[float] = []
    for sel_l, sel_i, cal_l, cal_i in _folds(lin, ind):
        prof = subset(full, select(full, sel_l, sel_i, k))
        profs.append(prof)
        lin_scores += [score(prof, m)[0] for m in cal_l]
        ind_scores += [score(prof, m)[0] for m in cal_i]
    n = sum(len(p.x) for p in profs) / len(profs)
    thr = threshold_between(lin_scores, ind_scores, spread_floor=0.5 / max(1.0, n) ** 0.5, fpr=fpr)
    return profs, thr


def calibrate_soft(f: nn.Module, x: torch.Tensor, lin: list[Classifier], ind: list[Classifier],
                   fpr: float | None = None) -> Threshold | None:
    """The soft-label test's threshold for source ``f`` on probe inputs ``x``: every independent
    auxiliary model's ``soft_agreement`` sets the upper tail at ``fpr`` (default ``FPR`` / 2), at
    least ``SOFT_FLOOR`` apart; None when the label space has fewer than three classes."""
    ref = logits_of(f, x)
    lin_s = [soft_agreement(ref, logits_of(m.module, x)) for m in lin]
    ind_s = [soft_agreement(ref, logits_of(m.module, x)) for m in ind]
    if not lin_s or not ind_s or any(v != v for v in lin_s + ind_s):
        return None
    return threshold_between(lin_s, ind_s, spread_floor=SOFT_FLOOR, fpr=FPR / 2 if fpr is None else fpr)


def closeness(source: Classifier, suspect: Classifier, probes: ProbeSet | None = None, *, k: int = 100,
              pool: int = 512, lineage_aux: list[Classifier] | None = None,
              independent_aux: list[Classifier] | None = None, n_aux: int = N_AUX, cache_dir: Path | None = None,
              seed: int = 0, background_points: bool = True) -> ClosenessResult:
    """Closeness of ``suspect`` to ``source`` with a threshold calibrated for this source.

    ``probes``: the probe data (default: ``pool`` points of the source's synthetic task); with
    ``background_points`` as many points off the data (``background``) join the pool, so that
    selection can also find points whose boundaries only a model's own lineage shares. Auxiliary
    models are the user's when given, else ``n_aux`` fine-tunes and ``n_aux`` independent
    re-trainings made here; in two cross-fitted folds half of them select the K probes and the
    other half calibrates the threshold; the score is the mean over the folds. A suspect with
    another number of classes is measured indirectly: the source (and every auxiliary model) is
    re-headed on the suspect's labels of the probe data first. For text the walk is a path of token
    substitutions chosen by the source's embedding gradient (``token_paths``), shared by every model
    of the vocabulary.
    """
    from lineage_index.behaviour.models import aux_data, make_aux
    from lineage_index.behaviour.probes import synthetic_probes
    from lineage_index.errors import UsageError

    t0 = time.perf_counter()
    notes: list[str] = []
    if probes is None:
        if source.task is None:
            raise UsageError(f"{source.name} names no synthetic task: pass probe data (--probe)")
        probes = synthetic_probes(source.task, pool, seed=12_345 + seed)
    if source.kind != suspect.kind:
        raise UsageError(f"{source.name} reads {source.kind} and {suspect.name} reads {suspect.kind}: "
                         "closeness needs the same input space")
    indirect = suspect.classes != source.classes
    aux_ids = "|".join(_digest(m) for m in (lineage_aux or []) + (independent_aux or []))
    key = profile_key(source, probes, k, f"{seed}|{n_aux}|{background_points}|v6|{FPR}|{aux_ids}")
    cached = None if (cache_dir is None or indirect) else load_profile(Path(cache_dir) / f"{key}.safetensors")
    soft: Threshold | None = None
    if cached is not None:
        profs, thr, soft = cached
        notes.append("source profiles and thresholds from cache")
    else:
        lin, ind = lineage_aux or [], independent_aux or []
        few = [what for what, given in (("derived", lin), ("independent", ind)) if len(given) == 1]
        if few:
            notes.append(f"one {' and one '.join(few)} auxiliary model given: its side of the threshold rests on one "
                         "score and the folds cannot cross-fit; give two or more of each kind")
        if not lin or not ind:
            made_lin, made_ind = make_aux(source, aux_data(source, probes), n_lineage=0 if lin else n_aux,
                                          n_independent=0 if ind else n_aux, seed=seed)
            lin, ind = lin or made_lin, ind or made_ind
            notes.append(f"auxiliary models made by the tool: {len(made_lin)} derivations, "
                         f"{len(made_ind)} independent re-trainings")
            if made_ind and source.task is None and len(probes) < FEW_PROBES:
                notes.append(f"the independent re-trainings learnt from {len(probes)} labelled probes, far less data "
                             "than real independent models see: they look less like the source than those do, so "
                             f"the threshold may be low; give {FEW_PROBES} or more labelled probes, or "
                             "--independent-aux models")
        f = source
        if indirect:
            labels = predict(suspect.module, probes.x)
            f = rehead(source, probes.x, labels, suspect.classes, seed=seed)
            lin = [rehead(m, probes.x, labels, suspect.classes, seed=seed) for m in lin]
            ind = [rehead(m, probes.x, labels, suspect.classes, seed=seed) for m in ind]
            notes.append(f"indirect mode: source re-headed on the suspect's {suspect.classes} labels")
        pool_set = probes
        if background_points:
            pool_set = ProbeSet(torch.cat([probes.x, background(probes.x, seed, pad_id(f.module))]), None,
                                probes.origin)
        profs, thr = calibrate_profiles(f.module, pool_set, lin, ind, k)
        if not indirect:
            soft = calibrate_soft(f.module, probes.x, lin, ind)
        if cache_dir is not None and not indirect:
            save_profile(Path(cache_dir) / f"{key}.safetensors", profs, thr, soft)
    parts = [score(p, suspect.module) for p in profs]
    s = sum(p[0] for p in parts) / len(parts)
    mr = sum(p[1] for p in parts) / len(parts)
    dbar = sum(p[2] for p in parts) / len(parts)
    matched = sum(p[3] for p in parts)
    if len(profs) > 1:
        notes.append(f"score = mean over {len(profs)} cross-fitted folds of {len(profs[0].x)} probe points each")
    if not thr.separated:
        notes.append("calibration groups overlap: the verdict is uncertain")
    agree = None
    if soft is not None:
        agree = soft_agreement(logits_of(source.module, probes.x), logits_of(suspect.module, probes.x))
        agree = None if agree != agree else agree  # NaN: no comparable soft labels
    fired = [name for name, hit in (("boundary", s >= thr.value),
                                    ("soft labels", agree is not None and soft is not None and agree >= soft.value)) if hit]
    return ClosenessResult(source.name, suspect.name, round(s, 6), round(mr, 6), round(dbar, 6),
                           sum(len(p.x) for p in profs), matched, thr.value,
                           "lineage" if fired else "no lineage", thr, profs[0].cap, indirect,
                           round(time.perf_counter() - t0, 4), tuple(notes),
                           None if agree is None else round(agree, 6), None if soft is None else soft.value, soft,
                           " + ".join(fired))
