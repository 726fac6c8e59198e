"""Calibrated probabilities of ``check`` (issue 10): small logistic models fitted on zoos.

Three models, fitted by ``bench/fit_check_calibration.py`` on labelled pairs and verdicts
from generated zoos and shipped as ``check/data/calibration.json`` (coefficients, feature
names and provenance: zoo sizes and seeds, pair counts, date, command):

- ``related``: P(the candidate shares the target's weights at all) from the background
  z-scores (``features.RELATED_FEATURES``);
- ``parent``: P(the candidate is the target's parent | related) from the direction votes
  (``features.PARENT_FEATURES``); a candidate's probability is the product, normalised
  over the candidates when one parent is claimed (they compete for one place);
- ``verdict``: P(the verdict is right: class and parents) from the verdict's group and the
  pair probabilities behind it (Platt-style, per-group intercepts shrunk to a common one).

Missing features are imputed as 0, which every feature defines as "no evidence". The fit is
an L2-penalised logistic regression by L-BFGS (numpy/scipy only). This module decides no
verdict: ``verdict`` does, by rules; these models only say how sure to be.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from lineage_index.errors import ConfigError
from lineage_index.indexer.check.features import PARENT_FEATURES, RELATED_FEATURES

VERDICT_GROUPS = ("structural", "finetune", "merge", "adapter", "unresolved", "none", "insufficient")
GROUP_OF = {"copy": "structural", "quantized": "structural", "prune": "structural", "finetune": "finetune",
            "merge": "merge", "adapter": "adapter", "family_unresolved": "unresolved", "no_relative": "none",
            "insufficient": "insufficient"}
VERDICT_FEATURES = tuple(f"group_{g}" for g in VERDICT_GROUPS) + ("score", "margin", "time", "undated_twin")
LOGIT_CAP = 12.0  # |logit| beyond this (p within 6e-6 of 0 or 1) says nothing more
CALIBRATION_FILE = "calibration.json"


def logit(p: float) -> float:
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    return max(-LOGIT_CAP, min(LOGIT_CAP, math.log(p / (1.0 - p))))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@dataclass(frozen=True)
class Logistic:
    """p = sigmoid(intercept + coef . x) over named features (missing ones count 0)."""

    features: tuple[str, ...]
    intercept: float
    coef: tuple[float, ...]

    def logit(self, x: dict[str, float]) -> float:
        return self.intercept + sum(c * float(x.get(f, 0.0)) for f, c in zip(self.features, self.coef, strict=True))

    def __call__(self, x: dict[str, float]) -> float:
        return sigmoid(self.logit(x))

    def contributions(self, x: dict[str, float]) -> dict[str, float]:
        """Each feature's term in the logit (what ``explain`` shows)."""
        return {f: round(c * float(x.get(f, 0.0)), 4) for f, c in zip(self.features, self.coef, strict=True)}

    def as_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "intercept": self.intercept, "coef": list(self.coef)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Logistic:
        feats, coef = tuple(d["features"]), tuple(float(c) for c in d["coef"])
        if len(feats) != len(coef):
            raise ConfigError("check calibration: features and coefficients differ in length")
        return cls(feats, float(d["intercept"]), coef)


@dataclass(frozen=True)
class Calibration:
    related: Logistic
    parent: Logistic
    verdict: Logistic
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def neutral(cls) -> Calibration:
        """All coefficients 0 (p = 1/2 everywhere): what the fit runs check with."""
        def zero(feats: tuple[str, ...]) -> Logistic:
            return Logistic(feats, 0.0, tuple(0.0 for _ in feats))
        return cls(zero(RELATED_FEATURES), zero(PARENT_FEATURES), zero(VERDICT_FEATURES), {"neutral": True})

    def as_dict(self) -> dict[str, Any]:
        return {"provenance": self.provenance, "related": self.related.as_dict(),
                "parent": self.parent.as_dict(), "verdict": self.verdict.as_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        try:
            cal = cls(Logistic.from_dict(d["related"]), Logistic.from_dict(d["parent"]),
                      Logistic.from_dict(d["verdict"]), dict(d.get("provenance", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"check calibration is malformed: {exc}") from exc
        for model, names in ((cal.related, RELATED_FEATURES), (cal.parent, PARENT_FEATURES),
                             (cal.verdict, VERDICT_FEATURES)):
            if set(model.features) - set(names):
                raise ConfigError(f"check calibration names unknown features {set(model.features) - set(names)}; "
                                  "refit it with bench/fit_check_calibration.py")
        return cal


def load_calibration(path: Path | None = None) -> Calibration:
    """The shipped calibration (or the one at ``path``)."""
    try:
        text = Path(path).read_text() if path else \
            resources.files("lineage_index.indexer.check").joinpath("data", CALIBRATION_FILE).read_text()
    except OSError as exc:
        raise ConfigError(f"check calibration not readable: {exc}") from exc
    return Calibration.from_dict(json.loads(text))


# --- candidate and verdict probabilities -------------------------------------------------------


def candidate_probabilities(cal: Calibration, x: dict[str, dict[str, float]], gate: dict[str, bool],
                            verdict: str) -> tuple[dict[str, float], dict[str, float]]:
    """(P(related), P(parent)) per candidate from its feature vector ``x[c]``.

    P(parent) = P(related) * P(parent | related), 0 for a candidate that fails the z gate (the
    hard guarantee: no lineage without it). Unless the verdict is a merge there is one parent
    place: when the candidates' probabilities sum past 1 they are scaled to share it.
    """
    p_rel = {c: cal.related(v) for c, v in x.items()}
    raw = {c: p_rel[c] * cal.parent(v) if gate.get(c) else 0.0 for c, v in x.items()}
    total = sum(raw.values())
    norm = total if verdict != "merge" and total > 1.0 else 1.0
    return p_rel, {c: p / norm for c, p in raw.items()}


def score_verdict(cal: Calibration, x: dict[str, dict[str, float]], gate: dict[str, bool], verdict: str,
                  parents: list[str], merge_base: str | None = None,
                  ) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """(P(related), P(parent)) per candidate and the verdict's feature vector (check and the fit)."""
    p_rel, p_par = candidate_probabilities(cal, x, gate, verdict)
    claimed = [p_par[c] for c in parents if c in p_par]
    others = [p for c, p in p_par.items() if c not in parents and c != merge_base]
    return p_rel, p_par, verdict_vector(verdict, claimed, others, list(p_rel.values()),
                                        [x[c] for c in parents if c in x])


def verdict_probability(cal: Calibration, verdict: str, vx: dict[str, float], related_p: list[float]) -> float:
    """P(the verdict is right). 'insufficient' claims nothing the zoos can score: its number is
    P(no candidate is related) from the fitted pair model, 1/2 when there is no candidate at all."""
    if verdict == "insufficient":
        return math.prod(1.0 - p for p in related_p) if related_p else 0.5
    return cal.verdict(vx)


# --- verdict-level features -----------------------------------------------------------------


def verdict_vector(verdict: str, parent_p: list[float], other_p: list[float], related_p: list[float],
                   parent_x: list[dict[str, float]] | None = None) -> dict[str, float]:
    """Features of one verdict: its group, the pair probability behind it, and the competition.

    ``parent_p``: probabilities of the claimed parents; ``other_p``: of the other candidates;
    ``related_p``: P(related) of every candidate; ``parent_x``: the claimed parents' feature
    vectors. ``score`` is the logit of what the verdict rests on (the weakest claimed parent;
    for 'unresolved' the best relative; for 'none' that no candidate is related); ``margin`` how
    far the claimed parents stand above the rest; ``time`` the weakest upload-time vote of a
    claimed parent (0: no times); ``undated_twin`` 1 when a claimed parent is bit-identical to
    the target and no upload time says which of the two is the original.
    """
    group = GROUP_OF.get(verdict, "insufficient")
    x = {f"group_{g}": 1.0 if g == group else 0.0 for g in VERDICT_GROUPS}
    score = margin = 0.0
    if group in ("structural", "finetune", "merge") and parent_p:
        score = logit(min(parent_p))
        margin = score - logit(max(other_p)) if other_p else LOGIT_CAP
    elif group == "unresolved" and related_p:
        score = logit(max(related_p))
    elif group in ("none", "insufficient"):
        score = logit(math.prod(1.0 - p for p in related_p)) if related_p else 0.0
    x["score"], x["margin"] = score, margin
    px = parent_x or []
    x["time"] = min((v.get("time", 0.0) for v in px), default=0.0)
    x["undated_twin"] = 1.0 if any(v.get("same_copy") and not v.get("time") for v in px) else 0.0
    return x


# --- fitting ----------------------------------------------------------------------------------


def fit_logistic(x: np.ndarray, y: np.ndarray, names: tuple[str, ...], l2: float = 1.0,
                 weight: np.ndarray | None = None) -> Logistic:
    """L2-penalised logistic regression (intercept free), by L-BFGS on the exact gradient.

    The penalty keeps coefficients finite where the zoo separates the classes perfectly;
    ``weight`` weighs rows (pseudo-observations of a prior, see the fit bench).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = x.shape
    wt = np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = w[0] + x @ w[1:]
        ll = np.logaddexp(0.0, z) - y * z  # log(1 + e^z) - y z, stably
        g = wt * (1.0 / (1.0 + np.exp(-z)) - y)
        grad = np.concatenate([[g.sum()], x.T @ g + l2 * w[1:]])
        return float(np.sum(wt * ll) + 0.5 * l2 * np.sum(w[1:] ** 2)), grad

    res = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B")
    return Logistic(names, float(res.x[0]), tuple(float(v) for v in res.x[1:]))


def brier(p: list[float], y: list[bool]) -> float:
    return float(np.mean([(pi - float(yi)) ** 2 for pi, yi in zip(p, y, strict=True)])) if p else float("nan")


def reliability(p: list[float], y: list[bool], bins: int = 10) -> list[tuple[float, float, float, int]]:
    """(bin low, mean predicted, observed frequency, n) per non-empty probability bin."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = [(pi, yi) for pi, yi in zip(p, y, strict=True) if lo <= pi < hi or (hi == 1.0 and pi == 1.0)]
        if sel:
            rows.append((float(lo), float(np.mean([s[0] for s in sel])), float(np.mean([s[1] for s in sel])), len(sel)))
    return rows


def expected_calibration_error(p: list[float], y: list[bool], bins: int = 10) -> float:
    n = len(p)
    return float(sum(k / n * abs(m - o) for _, m, o, k in reliability(p, y, bins))) if n else float("nan")


# --- labels from a generated zoo's truth (the fit and the bench) ------------------------------


@dataclass(frozen=True)
class ZooTruth:
    """What a zoo's ``truth.json`` says about pairs and verdicts, in check's terms."""

    parents: dict[str, frozenset[str]]  # weight parents (a distilled student has none)
    relation: dict[str, str | None]
    tree: dict[str, str]  # weight root: models sharing it share weights
    adapters: frozenset[str] = frozenset()  # LoRA adapters: compared by shapes only, never as candidates

    @classmethod
    def from_json(cls, truth: dict[str, Any]) -> ZooTruth:
        models = truth["models"]
        rel = {m: i.get("relation") for m, i in models.items()}
        parents = {m: frozenset(i.get("parents") or ()) if rel[m] not in (None, "distill") else frozenset()
                   for m, i in models.items()}
        return cls(parents, rel, {m: i.get("weight_root") or i.get("root") or m for m, i in models.items()},
                   frozenset(m for m, i in models.items() if i.get("kind") == "adapter"))

    def pair_label(self, target: str, cand: str) -> str:
        """'parent', 'related' (same weights, not the parent) or 'unrelated'."""
        if cand in self.parents.get(target, ()):
            return "parent"
        return "related" if self.tree.get(target) == self.tree.get(cand, cand) else "unrelated"

    def expected(self, target: str, indexed: set[str]) -> tuple[str, frozenset[str]]:
        """The right verdict class and parents for ``target`` against an index of ``indexed``."""
        if self.parents.get(target):
            return str(self.relation[target]), self.parents[target]
        kin = any(self.tree.get(o) == self.tree.get(target) for o in indexed if o != target and o not in self.adapters)
        return ("family_unresolved" if kin else "no_relative"), frozenset()

    def verdict_right(self, target: str, verdict: str, parents: list[str], indexed: set[str]) -> bool:
        """Class right and every named parent a true one ('insufficient' is right only when no relative exists)."""
        cls, truth = self.expected(target, indexed)
        if verdict == "insufficient":
            return cls == "no_relative"
        return verdict == cls and (not truth or (bool(parents) and set(parents) <= truth))
