"""Sketch samples of simulated models: how each relation changes the sampled weights.

A simulated sketch holds ``matrices`` weight samples of ``rows x cols`` values (the rows the
real sketch would read from four roles of three layers). Models are generated in topological
generations, vectorised over every model of a generation that shares an operation:

* root / distilled student: fresh N(0, sigma^2) weights (independent initialisation: the
  verifier's null), rounded to the model's dtype;
* fine-tune: ``y = (1 + beta) x + eps`` per matrix, with ``|y - x| / |x| = r`` drawn from the
  fitted log-normal (per model, then per matrix), ``eps`` orthogonal to ``x`` and ``beta`` set
  so the norm growth ``(|y|^2 - |x|^2) / |y - x|^2`` equals a draw from the fitted growth;
  ``eps`` carries the measured correlations with the parent's own update (chain) and with a
  direction shared by siblings. Partial fine-tunes keep their measured share of matrices
  bit-identical; merged LoRAs change one target matrix by a low-rank update;
* merges: linear (alpha in the zoo's range, or Dirichlet weights for 3-4 inputs), SLERP, and
  over a shared base: task arithmetic, TIES (trim to density 0.5, elect sign, disjoint mean),
  DARE (drop 0.5, rescale);
* prune: magnitude pruning at the zoo's sparsities on the measured share of matrices, the kept
  weights moved by the measured amount;
* int8: bitsandbytes absmax per row (values as the sketch decodes them); fp16: an F16 round
  trip in an F32 container; copies: the same bytes or a cast to a lower precision.

Random draws come from one generator per batch (keyed by the seed and the batch's first model;
batches are fixed by the plan, so a build is deterministic), except the direction siblings
share, keyed by their parent. ``embed_batch`` is ``sketch.embed`` for a batch (the same
buckets and signs). This module writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from lineage_index.indexer.sketch.sample import EMBED_DIM, _buckets
from lineage_index.sim.plan import DTYPES, OP, OPS, HubPlan

SIGMA = 0.02  # weight scale of a root matrix (irrelevant to the verifier, which is scale-free)
TIES_DENSITY = 0.5
DARE_DROP = 0.5


@dataclass(frozen=True)
class Geometry:
    """Shape of a simulated sketch: ``matrices`` samples of ``rows x cols``."""

    matrices: int = 4
    rows: int = 4
    cols: int = 64

    @property
    def n(self) -> int:
        return self.rows * self.cols


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """Values rounded to ``dtype`` (round to nearest even), returned as float32."""
    x = np.asarray(x, dtype=np.float32)
    if dtype == "F16":
        return x.astype(np.float16).astype(np.float32)
    if dtype == "BF16":
        bits = x.view(np.uint32).astype(np.uint64)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        return rounded.astype(np.uint32).view(np.float32)
    return x


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)


class ValueModel:
    """Draws sample values for the models of a plan, one topological generation at a time."""

    def __init__(self, plan: HubPlan, calibration: dict[str, Any], geometry: Geometry, seed: int) -> None:
        self.plan = plan
        self.cal = calibration
        self.geo = geometry
        self.seed = seed
        ft = calibration["finetune"]
        self.chain = float(np.clip(ft["chain_delta_cos"]["median"], 0.0, 0.9))
        self.sib = float(np.sqrt(np.clip(ft["sibling_delta_cos"]["median"], 0.0, 0.8)))
        self.has_delta = {OP[o] for o in ("finetune", "partial", "lora")}

    # -- the batch ---------------------------------------------------------------------------

    def _normal(self, models: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return self.rng.standard_normal((len(models), *shape))

    def _uniform(self, models: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return self.rng.random((len(models), *shape))

    def _shared(self, parents: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """One direction per parent (whatever batch or group its children fall in)."""
        uniq, inv = np.unique(parents, return_inverse=True)
        dirs = np.stack([np.random.default_rng([self.seed, 5, int(p)]).standard_normal(shape) for p in uniq])
        return dirs[inv]

    def generate(self, members: np.ndarray) -> np.ndarray:
        """Values (len(members), matrices, rows*cols) float32 for ``members`` (closed under parents)."""
        plan, geo = self.plan, self.geo
        self.rng = np.random.default_rng([self.seed, 1, int(members[0]) if len(members) else 0])
        pos = {int(m): r for r, m in enumerate(members)}
        out = np.zeros((len(members), geo.matrices, geo.n), dtype=np.float32)
        gens = plan.gen[members]
        for g in np.unique(gens):
            rows = np.nonzero(gens == g)[0]
            ops = plan.op[members[rows]]
            for code in np.unique(ops):
                sel = rows[ops == code]
                out[sel] = self._apply(OPS[int(code)], members[sel], out, pos)
        return out

    def _x(self, out: np.ndarray, pos: dict[int, int], models: np.ndarray, k: int = 0) -> np.ndarray:
        return out[[pos[self.plan.parents[int(m)][k]] for m in models]].astype(np.float64)

    def _finish(self, y: np.ndarray, models: np.ndarray) -> np.ndarray:
        res = np.empty(y.shape, dtype=np.float32)
        dts = self.plan.dtype[models]
        for code in np.unique(dts):
            sel = dts == code
            name = DTYPES[int(code)]
            res[sel] = round_to(y[sel], name if name != "I8" else "F32")
        return res

    def _apply(self, op: str, models: np.ndarray, out: np.ndarray, pos: dict[int, int]) -> np.ndarray:
        geo = self.geo
        if op in ("root", "distill", "adapter"):
            return self._finish(SIGMA * self._normal(models, (geo.matrices, geo.n)), models)
        if op in ("finetune", "partial", "lora"):
            return self._finish(self._finetune(op, models, out, pos), models)
        if op in ("linear", "slerp", "task-arithmetic", "ties", "dare"):
            return self._finish(self._merge(op, models, out, pos), models)
        x = self._x(out, pos, models)
        if op == "prune":
            return self._finish(self._prune(x, models), models)
        if op == "int8":
            return self._int8(x)
        if op == "fp16":
            return round_to(x, "F16")
        if op in ("copy-same", "copy-round"):
            return self._finish(x, models)
        raise ValueError(f"unknown operation {op}")

    # -- operations ----------------------------------------------------------------------------

    def _update(self, x: np.ndarray, models: np.ndarray, log_rel: dict[str, float], out: np.ndarray,
                pos: dict[int, int], growth_fit: dict[str, float] | None = None) -> np.ndarray:
        """A fine-tuning update of ``x`` with the fitted size, growth and correlations."""
        ft = self.cal["finetune"]
        m_n = self.geo.matrices
        z = self._normal(models, (m_n + 1,))
        log_r = log_rel["median"] + log_rel["sd"] * z[:, :1] + ft["matrix_log_rel_dev"]["sd"] * z[:, 1:]
        r = np.exp(log_r)[..., None]  # (g, m, 1)
        gf = growth_fit or ft["matrix_growth"]
        growth = gf["median"] + gf["sd"] * self._normal(models, (m_n,))
        growth = growth[..., None]
        beta = (growth - 1.0) * r * r / 2.0
        eps_share = np.sqrt(np.clip(1.0 - beta * beta / (r * r), 0.0, 1.0))
        w = self._normal(models, (m_n, self.geo.n))
        parents = np.asarray([self.plan.parents[int(m)][0] for m in models])
        shared = self._shared(parents, (m_n, self.geo.n))  # one direction per parent: siblings share it
        chain = np.zeros_like(w)
        has = np.asarray([int(self.plan.op[p]) in self.has_delta for p in parents])
        if has.any():
            gp = [pos[self.plan.parents[int(p)][0]] for p in parents[has]]
            chain[has] = x[has] - out[gp].astype(np.float64)
        a = np.where(has, self.chain, 0.0)[:, None, None]
        b = self.sib
        c = np.sqrt(np.clip(1.0 - a * a - b * b, 0.0, 1.0))
        eps = a * _unit(chain) + b * _unit(shared) + c * _unit(w)
        xu = _unit(x)
        eps = eps - np.sum(eps * xu, axis=-1, keepdims=True) * xu  # orthogonal to x
        xn = np.linalg.norm(x, axis=-1, keepdims=True)
        return (1.0 + beta) * x + _unit(eps) * (r * xn * eps_share)

    def _finetune(self, op: str, models: np.ndarray, out: np.ndarray, pos: dict[int, int]) -> np.ndarray:
        ft = self.cal["finetune"]
        x = self._x(out, pos, models)
        if op == "finetune":
            return self._update(x, models, ft["model_log_rel"], out, pos)
        m_n = self.geo.matrices
        if op == "partial":
            y = self._update(x, models, ft["partial_model_log_rel"], out, pos, ft.get("partial_matrix_growth"))
            share = float(ft["partial_identical_share"]["median"])
            u = self._uniform(models, (m_n,))
            frozen = u < share
            frozen[np.arange(len(models)), np.argmax(u, axis=1)] = False  # at least one matrix changes
            y[frozen] = x[frozen]
            return y
        # merged LoRA: one target matrix (the first) changes, by a low-rank update
        y = x.copy()
        rank = 2
        rows, cols = self.geo.rows, self.geo.cols
        ua = self._normal(models, (rows, rank))
        va = self._normal(models, (rank, cols))
        delta = np.einsum("grk,gkc->grc", ua, va).reshape(len(models), -1)
        rel = np.exp(ft["lora_model_log_rel"]["median"] + ft["lora_model_log_rel"]["sd"]
                     * self._normal(models, (1,)))
        x0 = x[:, 0]
        y[:, 0] = x0 + _unit(delta) * (rel * np.linalg.norm(x0, axis=-1, keepdims=True))
        return y

    def _merge(self, op: str, models: np.ndarray, out: np.ndarray, pos: dict[int, int]) -> np.ndarray:
        plan = self.plan
        lo, hi = self.cal["merge"]["alpha_range"]
        res = np.empty((len(models), self.geo.matrices, self.geo.n), dtype=np.float64)
        for r, m in enumerate(models):
            m = int(m)
            ins = np.stack([out[pos[p]].astype(np.float64) for p in plan.parents[m]])
            g = self.rng
            k = len(ins)
            if op in ("task-arithmetic", "ties", "dare") and m in plan.merge_base:
                base = out[pos[plan.merge_base[m]]].astype(np.float64)
                deltas = ins - base
                if op == "task-arithmetic":
                    lam = g.uniform(0.5, 1.0, size=k)
                    res[r] = base + np.tensordot(lam, deltas, axes=1)
                elif op == "ties":
                    thr = np.quantile(np.abs(deltas), 1.0 - TIES_DENSITY, axis=-1, keepdims=True)
                    trimmed = np.where(np.abs(deltas) >= thr, deltas, 0.0)
                    sign = np.sign(trimmed.sum(axis=0))
                    agree = (np.sign(trimmed) == sign) & (trimmed != 0)
                    count = agree.sum(axis=0)
                    merged = np.where(count > 0, (trimmed * agree).sum(axis=0) / np.maximum(count, 1), 0.0)
                    res[r] = base + merged
                else:
                    keep = g.random(deltas.shape) >= DARE_DROP
                    lam = g.uniform(0.5, 1.0, size=k)
                    res[r] = base + np.tensordot(lam, deltas * keep / (1.0 - DARE_DROP), axes=1)
                continue
            if op == "slerp" and k == 2:
                t = g.uniform(0.3, 0.7)
                a, b = ins[0], ins[1]
                cos = np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
                theta = np.arccos(np.clip(cos, -1.0, 1.0))[:, None]
                s = np.sin(theta)
                safe = s > 1e-8
                wa = np.where(safe, np.sin((1 - t) * theta) / np.where(safe, s, 1.0), 1 - t)
                wb = np.where(safe, np.sin(t * theta) / np.where(safe, s, 1.0), t)
                res[r] = wa * a + wb * b
                continue
            w = np.array([g.uniform(lo, hi), 0.0]) if k == 2 else g.dirichlet(np.full(k, 4.0))
            if k == 2:
                w[1] = 1.0 - w[0]
            res[r] = np.tensordot(w, ins, axes=1)
        return res

    def _prune(self, x: np.ndarray, models: np.ndarray) -> np.ndarray:
        pr = self.cal["prune"]
        g_n, m_n, n = x.shape
        levels = np.asarray(pr["sparsity"], dtype=np.float64)
        u = self._uniform(models, (m_n + 1,))
        sparsity = levels[np.minimum((u[:, 0] * len(levels)).astype(int), len(levels) - 1)]
        pruned = u[:, 1:] < float(pr["pruned_matrix_share"])
        kept = np.exp(pr["kept_log_rel"]["median"] + pr["kept_log_rel"]["sd"] * self._normal(models, (1,)))
        noise = _unit(self._normal(models, (m_n, n)))
        y = x + noise * (kept[:, :, None] * np.linalg.norm(x, axis=-1, keepdims=True))
        k = np.maximum((sparsity * n).astype(int), 1)  # the k smallest |x| of each pruned matrix
        order = np.sort(np.abs(x), axis=-1)
        thr = np.take_along_axis(order, np.broadcast_to((k - 1)[:, None, None], (g_n, m_n, 1)), axis=-1)
        return np.where(pruned[..., None] & (np.abs(x) <= thr), 0.0, y)

    def _int8(self, x: np.ndarray) -> np.ndarray:
        """bitsandbytes LLM.int8: q = round(w / absmax_row * 127); the sketch decodes q * SCB / 127."""
        g_n, m_n = x.shape[:2]
        rows = x.astype(np.float32).reshape(g_n, m_n, self.geo.rows, self.geo.cols)
        scb = np.abs(rows).max(axis=-1, keepdims=True)
        safe = np.where(scb > 0, scb, np.float32(1.0))
        q = np.clip(np.round(rows / safe * np.float32(127.0)), -127, 127).astype(np.int8)
        vals = q.astype(np.float32) * (scb.astype(np.float32) / np.float32(127.0))
        return vals.reshape(g_n, m_n, -1)


@lru_cache(maxsize=1024)
def _projection(key: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The count-sketch of ``sketch.embed`` for one sample (key, size), as sorted buckets.

    (element order by bucket, signs in that order, start of each non-empty bucket, bucket ids).
    """
    idx, sign = _buckets(key, n)
    idx, sign = idx.numpy(), sign.numpy().astype(np.float32)
    order = np.argsort(idx, kind="stable")
    buckets, starts = np.unique(idx[order], return_index=True)
    return order, sign[order], starts, buckets


def embed_batch(values: np.ndarray, keys: list[str]) -> np.ndarray:
    """``sketch.embed`` for a batch: values (models, len(keys), n) -> (models, EMBED_DIM).

    Each sample is divided by its RMS and sqrt(elements x samples), multiplied by its signs
    and summed per bucket (a segmented sum: no BLAS, which small batches do not need).
    """
    models, m_n, n = values.shape
    out = np.zeros((models, EMBED_DIM), dtype=np.float32)
    for j, key in enumerate(keys):
        order, sign, starts, buckets = _projection(key, n)
        v = values[:, j, :].astype(np.float32)
        rms = np.sqrt(np.mean(v * v, axis=1, keepdims=True)).clip(1e-12)
        scaled = (v / (rms * np.float32(np.sqrt(n * m_n))))[:, order] * sign
        out[:, buckets] += np.add.reduceat(scaled, starts, axis=1)
    return out
