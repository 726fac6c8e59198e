"""Same-basin determination (seed 001): the loss barrier on the linear path between two models.

θ(t) = (1−t)·θ_A + t·θ_B at ``points`` evenly spaced t (default 11). At each t the probe loss
L(t) (cross-entropy) and error rate E(t) are measured; BatchNorm running statistics are
re-estimated on the probe data first when the architecture has BatchNorm (an average of two sets
of statistics means nothing). Barrier = max_t L(θ(t)) − ((1−t)·L(θ_A) + t·L(θ_B)) (the same for
the error). Weights were de-quantised on load (``models.load``: int8 + SCB, fp16). Also reported:
the barrier against the endpoints' output mixture (``PathCurve.ensemble_barrier``), the statistic
``lm.determine_lm`` decides on, because independent LMs are confidently wrong on each other's text.

Models with different heads (another label space) are compared on the shared body with A's head
fixed. The verdict "same basin" needs the loss barrier below a threshold calibrated for A: derived
pairs (A with cheap fine-tunes of itself) against independent pairs (A with same-architecture
re-trainings), stated in the result. Distilled students start from fresh weights: they sit in
another basin, which is why the closeness score exists. This module only computes.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from lineage_index.behaviour.archs import batch_for, reads_tokens
from lineage_index.behaviour.calcache import load_threshold, save_threshold, weights_key
from lineage_index.behaviour.closeness import Threshold, threshold_between
from lineage_index.behaviour.models import ARCHS, Classifier, aux_data, make_aux
from lineage_index.behaviour.probes import ProbeSet, synthetic_probes
from lineage_index.errors import UsageError

BATCH = 4096
STATISTIC = "loss"
DEFAULT_PROBES = {"text": 256}  # synthetic probe points when none are given (default 1000)


@dataclass(frozen=True)
class PathCurve:
    """Loss and error along the linear path, and the barriers.

    ``ensemble_loss``: the loss of the endpoints' output mixture (1−t)·p_A + t·p_B at each t;
    ``ensemble_barrier`` = max_t L(θ(t)) − L(mixture_t): how much worse weight interpolation is
    than output interpolation. It is never below the classic barrier (the mixture's loss is below
    the chord, by convexity) and stays meaningful when one endpoint is confidently wrong on the
    probes, where the chord itself is high and the classic barrier vanishes.
    """

    t: tuple[float, ...]
    loss: tuple[float, ...]
    error: tuple[float, ...]
    loss_barrier: float
    error_barrier: float
    ensemble_loss: tuple[float, ...] = ()
    ensemble_barrier: float = 0.0

    def statistic(self, name: str) -> float:
        """The barrier a verdict is taken on: ``loss``, ``error`` or ``ensemble``."""
        return {"loss": self.loss_barrier, "error": self.error_barrier, "ensemble": self.ensemble_barrier}[name]


def make_curve(ts: list[float], losses: list[float], errors: list[float], lp0: torch.Tensor,
               lp1: torch.Tensor) -> PathCurve:
    """The curve from per-t loss/error and the endpoints' log-probabilities of the probe targets."""
    ens = []
    for t in ts:
        if t <= 0.0:
            mix = lp0
        elif t >= 1.0:
            mix = lp1
        else:
            mix = torch.logaddexp(lp0 + math.log(1 - t), lp1 + math.log(t))
        ens.append(float(-mix.mean()))
    gap = max(v - e for v, e in zip(losses, ens, strict=True))
    return PathCurve(tuple(ts), tuple(round(v, 6) for v in losses), tuple(round(v, 6) for v in errors),
                     round(barrier(losses, ts), 6), round(barrier(errors, ts), 6),
                     tuple(round(v, 6) for v in ens), round(max(0.0, gap), 6))


@dataclass(frozen=True)
class DetermineResult:
    """Same-basin verdict for models A and B."""

    a: str
    b: str
    loss_barrier: float
    error_barrier: float
    threshold: float  # on the barrier named by ``statistic``
    verdict: str  # "same basin" | "different basins"
    curve: PathCurve
    calibration: Threshold
    n_probes: int
    batchnorm_reestimated: bool
    fixed_head: bool
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)
    statistic: str = "loss"
    ensemble_barrier: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _aligned(a: Classifier, b: Classifier) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], bool]:
    """State dicts of A and B on A's architecture; a head of another shape is replaced by A's."""
    if a.arch != b.arch:
        raise UsageError(f"{a.name} ({a.arch}) and {b.name} ({b.arch}) have different architectures")
    sa, sb = a.state(), b.state()
    if sa.keys() != sb.keys():
        raise UsageError(f"{a.name} and {b.name} have different tensor names")
    fixed_head = False
    head = a.head_prefix
    for key in sa:
        if sa[key].shape != sb[key].shape:
            if not key.startswith(head):
                raise UsageError(f"{a.name} and {b.name} differ in the shape of {key}")
            fixed_head = True
    if fixed_head:
        sb = {k: (sa[k] if k.startswith(head) else v) for k, v in sb.items()}
    return sa, sb, fixed_head


def barrier(values: list[float], ts: list[float]) -> float:
    """max_t v(t) − ((1−t)·v(0) + t·v(1)): how far the path rises above the straight line."""
    return max(values[i] - ((1 - t) * values[0] + t * values[-1]) for i, t in enumerate(ts))


def _batch(module: nn.Module) -> int:
    return 256 if reads_tokens(module) else batch_for(module, BATCH)


@torch.no_grad()
def _reestimate_bn(module: nn.Module, x: torch.Tensor) -> None:
    """Recompute BatchNorm running statistics on ``x`` (cumulative average)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    module.train()
    b = _batch(module)
    for i in range(0, len(x), b):
        module(x[i:i + b])
    module.eval()


@torch.no_grad()
def _evaluate(module: nn.Module, probes: ProbeSet) -> tuple[float, float, torch.Tensor]:
    """(mean cross-entropy, error rate, log-probability of each probe's label)."""
    wrong = 0
    b = _batch(module)
    lps = []
    for i in range(0, len(probes), b):
        out = module(probes.x[i:i + b])
        y = probes.y[i:i + b]  # type: ignore[index]
        lps.append(torch.log_softmax(out.float(), dim=1).gather(1, y[:, None]).squeeze(1))
        wrong += int((out.argmax(1) != y).sum())
    lp = torch.cat(lps)
    return float(-lp.mean()), wrong / len(probes), lp


def path_curve(a: Classifier, b: Classifier, probes: ProbeSet, points: int = 11) -> tuple[PathCurve, bool, bool]:
    """(curve, BatchNorm re-estimated, head fixed) along θ(t) = (1−t)θ_A + tθ_B."""
    sa, sb, fixed_head = _aligned(a, b)
    module = ARCHS[a.arch](**a.arch_kwargs)
    bn = a.has_batchnorm
    ts = [i / (points - 1) for i in range(points)]
    losses, errors, lps = [], [], []
    for t in ts:
        state = {k: ((1 - t) * v + t * sb[k]) if v.is_floating_point() else v for k, v in sa.items()}
        module.load_state_dict(state)
        if bn:
            _reestimate_bn(module, probes.x)
        module.eval()
        loss, err, lp = _evaluate(module, probes)
        losses.append(loss)
        errors.append(err)
        lps.append(lp)
    return make_curve(ts, losses, errors, lps[0], lps[-1]), bn, fixed_head


def calibrate(a: Classifier, probes: ProbeSet, *, derived: list[Classifier] | None = None,
              independent: list[Classifier] | None = None, n_aux: int = 2, seed: int = 0,
              statistic: str = STATISTIC) -> Threshold:
    """Barrier threshold for A: derived pairs (A, fine-tune) vs independent pairs (A, re-training)."""
    derived, independent = derived or [], independent or []
    if not derived or not independent:
        made_d, made_i = make_aux(a, aux_data(a, probes), n_lineage=n_aux, n_independent=n_aux, seed=seed + 50)
        derived, independent = derived or made_d, independent or made_i
    d = [path_curve(a, m, probes)[0].statistic(statistic) for m in derived]
    i = [path_curve(a, m, probes)[0].statistic(statistic) for m in independent]
    return threshold_between(d, i, higher_is_lineage=False)


def determine(a: Classifier, b: Classifier, probes: ProbeSet | None = None, *, points: int = 11,
              derived_aux: list[Classifier] | None = None, independent_aux: list[Classifier] | None = None,
              n_aux: int = 2, seed: int = 0, threshold: Threshold | None = None,
              statistic: str = STATISTIC, cache_dir: Path | None = None) -> DetermineResult:
    """Loss/error barrier between A and B and the calibrated same-basin verdict.

    Probe labels: the probe data's ``y`` when present, else A's own predictions (stated in notes).
    ``threshold`` skips calibration (e.g. one calibration reused for many B against one A); it
    must have been calibrated on the same ``statistic`` (``loss``: the classic barrier, default;
    ``ensemble``: against the endpoints' output mixture; ``error``).
    """
    t0 = time.perf_counter()
    notes: list[str] = []
    if probes is None:
        if a.task is None:
            raise UsageError(f"{a.name} names no synthetic task: pass probe data (--probe)")
        probes = synthetic_probes(a.task, DEFAULT_PROBES.get(a.arch, 1000), seed=4242 + seed)
    if probes.y is None:
        b = _batch(a.module)
        with torch.no_grad():
            labels = torch.cat([a.module(probes.x[i:i + b]).argmax(1) for i in range(0, len(probes), b)])
        probes = ProbeSet(probes.x, labels, probes.origin, probes.texts)
        notes.append("probe data has no labels: A's predictions are the labels")
    curve, bn, fixed_head = path_curve(a, b, probes, points)
    key = weights_key([*sorted(a.module.state_dict().items()), ("x", probes.x), ("y", probes.y)],
                      "classifier", n_aux, seed, statistic,
                      *(weights_key(sorted(m.module.state_dict().items()))
                        for m in (derived_aux or []) + (independent_aux or [])))
    cached = load_threshold(cache_dir, key) if threshold is None else None
    if cached is not None:
        threshold = cached
        notes.append("threshold from the calibration cache (--no-cache recalibrates)")
    if threshold is None:
        threshold = calibrate(a, probes, derived=derived_aux, independent=independent_aux, n_aux=n_aux, seed=seed,
                              statistic=statistic)
        save_threshold(cache_dir, key, threshold)
    if not threshold.separated:
        notes.append("calibration groups overlap: the verdict is uncertain")
    if fixed_head:
        notes.append("different heads: shared body compared with A's head fixed")
    verdict = "same basin" if curve.statistic(statistic) < threshold.value else "different basins"
    return DetermineResult(a.name, b.name, curve.loss_barrier, curve.error_barrier, threshold.value, verdict,
                           curve, threshold, len(probes), bn, fixed_head,
                           round(time.perf_counter() - t0, 4), tuple(notes), statistic, curve.ensemble_barrier)
