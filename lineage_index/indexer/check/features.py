"""Features of ``check`` (issue 10): every candidate pair as numbers against its background.

The *background* is the null of the index itself: random stored pairs of the target's
architecture that ``verify.compare`` finds unrelated. Symmetric similarity features are
z-scores against it (the standard deviation never below the theoretical null 1/sqrt(n) of a
centred cosine over n independent elements), log-compressed (``slog``) because related pairs
reach z in the hundreds. Direction features have no background among unrelated pairs (there is
no direction there): they are signed votes in [-1, 1], + for "the candidate is the target's
parent", and **0 when the signal is missing** (no upload time, no structural signature, no
merge): a missing signal is never evidence, for or against.

These are exactly the numbers ``calibration`` turns into probabilities and that
``bench/fit_check_calibration.py`` fits on, so check and the fit cannot drift apart.
Pure functions; no I/O beyond loading stored sketches through the given loader.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from lineage_index.indexer.recover.assemble import time_vote
from lineage_index.indexer.recover.verify import (
    RELATED_MIN_COS,
    RELATED_Z,
    MergeFit,
    PairFeatures,
    matrix_cosines,
)
from lineage_index.records import ModelRecord, Sketch

BACKGROUND_PAIRS = 24  # random stored pairs of the family tried for the null
BACKGROUND_MODELS = 12  # drawn among this many random stored models of the family (66 pairs to pick from)
MIN_BACKGROUND = 3  # fewer unrelated pairs than this: fall back to the theoretical null
NEARNESS_CAP = 5.0  # |log distance ratio| beyond which "farther" (or nearer) says nothing more
DIST_FLOOR = 1e-7  # distances below this are bit-identical for the ratio

RELATED_FEATURES = ("z_cos", "z_cos_min")
PARENT_FEATURES = ("structural", "same_copy", "original", "growth", "kurtosis", "time", "nearest", "nearness",
                   "merge_input", "merge_base")


@dataclass(frozen=True)
class Background:
    """Null of the pair features among unrelated stored pairs of the target's architecture."""

    n_pairs: int
    cos_mean: float
    cos_sd: float
    source: str  # "store" | "theoretical"
    cos_min_mean: float = 0.0
    cos_min_sd: float = 0.0
    dist_mean: float = 1.0
    dist_sd: float = 0.0


THEORETICAL = Background(0, 0.0, 0.0, "theoretical")


@dataclass(frozen=True)
class NullPair:
    """The similarity of one background pair: what ``compare`` summarises, without the rest."""

    a: str
    b: str
    cos_median: float
    cos_min: float
    dist: float
    related: bool


def null_pair(a: Sketch, b: Sketch) -> NullPair:
    """``compare``'s cosine summary and related test for one pair (no kurtosis, copies, merges)."""
    rows = matrix_cosines(a, b)
    if not rows:
        return NullPair(a.model_id, b.model_id, 0.0, 0.0, 2.0, False)
    cos = [r[3] for r in rows]
    med = float(np.median(cos))
    z = med * math.sqrt(max(1.0, float(np.median([r[4] for r in rows]))))
    return NullPair(a.model_id, b.model_id, med, float(np.min(cos)), float(np.mean([1.0 - c for c in cos])),
                    bool(z >= RELATED_Z and med >= RELATED_MIN_COS))


def background(ids: list[str], load: Callable[[str], Sketch], seed: int = 0) -> tuple[Background, list[NullPair]]:
    """Null from up to ``BACKGROUND_PAIRS`` random stored pairs that are unrelated by ``compare``'s test."""
    if len(ids) < 2:
        return THEORETICAL, []
    rng = np.random.default_rng(seed)
    if len(ids) > BACKGROUND_MODELS:  # random pairs among a random few: few sketches to load
        ids = sorted(rng.choice(ids, BACKGROUND_MODELS, replace=False).tolist())
    pairs: set[tuple[str, str]] = set()
    max_pairs = len(ids) * (len(ids) - 1) // 2
    while len(pairs) < min(BACKGROUND_PAIRS, max_pairs):
        i, j = sorted(rng.choice(len(ids), 2, replace=False).tolist())
        pairs.add((ids[i], ids[j]))
    null = [f for a, b in sorted(pairs) if not (f := null_pair(load(a), load(b))).related]
    if len(null) < MIN_BACKGROUND:
        return Background(len(null), 0.0, 0.0, "theoretical"), null

    def stats(vals: list[float]) -> tuple[float, float]:
        return float(np.mean(vals)), float(np.std(vals, ddof=1))

    cm, cs = stats([f.cos_median for f in null])
    mm, ms = stats([f.cos_min for f in null])
    dm, ds = stats([f.dist for f in null])
    return Background(len(null), cm, cs, "store", mm, ms, dm, ds), null


def slog(x: float) -> float:
    """Sign-preserving log1p: keeps z in the hundreds on the scale of votes in [-1, 1]."""
    return math.copysign(math.log1p(abs(x)), x)


def _sd_theory(f: PairFeatures) -> float:
    return abs(f.cos_median / f.z) if f.z else 1.0  # compare's z = cos / (1/sqrt(n))


def calibrated_z(f: PairFeatures, bg: Background) -> float:
    """z of the pair's median centred cosine against the background (sd never below 1/sqrt(n))."""
    return (f.cos_median - bg.cos_mean) / max(bg.cos_sd, _sd_theory(f), 1e-12)


def calibrated_z_min(f: PairFeatures, bg: Background) -> float:
    """z of the pair's lowest matrix cosine against the background's lowest ones."""
    return (f.cos_min - bg.cos_min_mean) / max(bg.cos_min_sd, _sd_theory(f), 1e-12)


def related_vector(f: PairFeatures, bg: Background) -> dict[str, float]:
    return {"z_cos": slog(calibrated_z(f, bg)), "z_cos_min": slog(calibrated_z_min(f, bg))}


def structural_child(f: PairFeatures) -> str | None:
    """The model of the pair that carries a structural signature over the other, if one does."""
    return f.quant_child or (f.copy_child if f.copy_child != "same" else None) or f.prune_child


def parent_vector(f: PairFeatures, cand: str, target: str, *, nearest_dist: float | None,
                  merge: MergeFit | None, child_of_target: bool,
                  recs: Mapping[str, ModelRecord], reupload: bool = False) -> dict[str, float]:
    """Votes that ``cand`` is ``target``'s parent (+) or not (-); 0 where the signal is missing.

    ``nearest_dist``: the distance of the nearest related original (no re-upload) not shown to
    be the target's child (None: none); ``nearest`` marks it, ``nearness`` is the log ratio of
    the candidate's distance to it (a parent is the nearest ancestor).

    ``reupload``: ``cand`` is a copy of another candidate (``verdict.copy_sources``: a
    rounded, re-typed or quantised copy, or a bit-identical twin uploaded later): ``original``
    is then -1, else 0 (an original, or no way to tell).
    """
    child = structural_child(f)
    structural = 1.0 if child == target else -1.0 if (child == cand or child_of_target) else 0.0
    same = f.copy_child == "same"
    growth = 0.0
    if not structural and not same and f.norm_growth:
        growth = max(-1.0, min(1.0, f.norm_growth if f.a == cand else -f.norm_growth))
    kc, kt = (f.kurt_a, f.kurt_b) if f.a == cand else (f.kurt_b, f.kurt_a)
    kurt = math.copysign(1.0, kc - kt) if abs(kc - kt) > 1e-6 and not structural and not same else 0.0
    near = 0.0
    if nearest_dist is not None:
        ratio = math.log(max(f.dist, DIST_FLOOR) / max(nearest_dist, DIST_FLOOR))
        near = min(NEARNESS_CAP, max(-NEARNESS_CAP, ratio))
    return {
        "structural": structural,
        "same_copy": 1.0 if same else 0.0,
        "original": -1.0 if reupload else 0.0,
        "growth": growth,
        "kurtosis": kurt,
        "time": time_vote(cand, target, recs),
        "nearest": 1.0 if nearest_dist is not None and math.isclose(f.dist, nearest_dist, rel_tol=1e-9,
                                                                     abs_tol=1e-12) else 0.0,
        "nearness": near,
        "merge_input": 1.0 if merge is not None and cand in merge.parents else 0.0,
        "merge_base": 1.0 if merge is not None and merge.base == cand else 0.0,
    }

