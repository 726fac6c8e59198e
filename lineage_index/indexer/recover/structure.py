"""Structural signatures of one model or one pair, read from aligned sketch samples.

Quantised and stored as floats (``grid_deviation``: the weights sit on an integer grid of one
scale per row or group; ``requant_violations``: which model's values that grid rounds), and
pruned then healed without the mask (``heal_asymmetry``: the parent's smallest weights pushed
towards zero). ``verify.compare`` turns them into the quantised / pruned child of a pair; the
thresholds are stated with the statistics of their null. No I/O here.
"""

from __future__ import annotations

import numpy as np

from lineage_index.records import Sketch

# Pruned and healed (retrained without the mask): no exact zeros are left, but the weights that
# were smallest in the parent became smaller still, relative to the reverse reading. r(a->b) =
# median |b| / median |a| over a's smallest HEAL_QUANTILE of each matrix; an update independent
# of the weights makes r(a->b) and r(b->a) exchangeable (log ratio ~0: |log| <= 0.15 on every
# fine-tune, merge and new head of both zoo recipes), pruning-then-healing gives 1.2-1.4. The
# child is claimed at a log ratio of HEAL_ASYM (a factor 1.65), about three times the null's spread.
HEAL_QUANTILE = 0.3
HEAL_ASYM = 0.5


def matrices(s: Sketch) -> dict[str, np.ndarray]:
    return {k: v.values for k, v in s.samples.items() if len(v.shape) >= 2 and v.values.shape[0] >= 1}


# Quantised and stored as floats: a row (or a group of its columns) quantised with one scale
# holds values v = (q - z) * s with integer q. For each hypothesis (symmetric 8-bit per row,
# asymmetric 8-bit per row, symmetric or asymmetric 4-bit per group of 32/64/128 columns) the
# scale is read off the row's extremes and t = v / s (or (v - min) / s) is compared with the
# nearest integer. Continuous weights give |t - round(t)| ~ Uniform(0, 0.5): mean 0.25, sd 0.144
# per element, so over the >= 64 non-zero elements of a matrix read the null's mean has sd <= 0.018 and
# GRID_DEV = 0.15 sits over 5 sd below it (the median over matrices is tighter still); a float container's rounding moves a quantised t by
# at most |t| * 2**-11 (F16) or 2**-9 (BF16): mean deviation <= 0.12 with 8 bits in BF16.
GRID_DEV = 0.15
GRID_ROWS = 4  # rows read per matrix, of at most GRID_MATRICES matrices (enough elements, cheap)
GRID_MATRICES = 8
# asymmetric grids with a rounded zero point may use one level fewer than 2**bits - 1 (the top
# code clamped away), so both level counts are tried
_GRID_HYPOTHESES = ((None, "sym", 127), (None, "asym", 255), (None, "asym", 254)) + tuple(
    (group, kind, levels) for group in (None, 128, 64, 32)  # None: per row (GPTQ group_size -1)
    for kind, levels in (("sym", 7), ("asym", 15), ("asym", 14)))


def _row_deviation(rows: list[np.ndarray], group: int | None, kind: str, levels: int) -> tuple[float, int]:
    dev, n = 0.0, 0
    for row in rows:
        if group is not None and (row.size % group or row.size < 2 * group):
            continue
        g = row.reshape(-1, group) if group is not None else row[None, :]
        if kind == "sym":
            lo = np.zeros((g.shape[0], 1))
            scale = np.abs(g).max(axis=1, keepdims=True) / levels
        else:
            lo = g.min(axis=1, keepdims=True)
            scale = (g.max(axis=1, keepdims=True) - lo) / levels
        ok = (g != 0) & (scale > 0)
        if ok.any():
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (g - lo) / scale
            d = np.abs(t - np.round(t))[ok]
            dev += float(d.sum())
            n += d.size
    return dev, n


def grid_deviation(mats: list[np.ndarray]) -> float:
    """Median over matrices of the mean distance of a matrix's weights from its best-fitting
    quantisation grid (see GRID_DEV): ~0.25 for continuous weights, ~0 for quantised ones
    stored as floats (a quantiser that left embeddings alone still has most matrices on a
    grid). Up to GRID_MATRICES matrices spread over ``mats``; exact zeros (pruned weights, zero
    points) are left out; 0.5 when nothing could be measured."""
    if len(mats) > GRID_MATRICES:
        mats = [mats[i] for i in np.linspace(0, len(mats) - 1, GRID_MATRICES).round().astype(int)]
    per_matrix = []
    for m in mats:
        rows = [m[i].astype(np.float64) for i in range(min(GRID_ROWS, m.shape[0]))]
        best = 0.5
        for hyp in _GRID_HYPOTHESES:
            dev, n = _row_deviation(rows, *hyp)
            if n >= 64:
                best = min(best, dev / n)
        per_matrix.append(best)
    return float(np.median(per_matrix)) if per_matrix else 0.5


def _grid_steps(m: np.ndarray) -> np.ndarray | None:
    """Per element of ``m``'s first GRID_ROWS rows, the step of its best-fitting grid (or None)."""
    rows = m[: GRID_ROWS].astype(np.float64)
    best, fit = 0.5, None
    for hyp in _GRID_HYPOTHESES:
        dev, n = _row_deviation(list(rows), *hyp)
        if n >= 64 and dev / n < best:
            best, fit = dev / n, hyp
    if fit is None or best >= GRID_DEV:
        return None
    group, kind, levels = fit
    g = rows.reshape(rows.shape[0], -1, group) if group is not None else rows[:, None, :]
    if kind == "sym":
        step = np.abs(g).max(axis=2, keepdims=True) / levels
    else:
        step = (g.max(axis=2, keepdims=True) - g.min(axis=2, keepdims=True)) / levels
    return np.broadcast_to(step, g.shape).reshape(rows.shape)


def requant_violations(parent: Sketch, child: Sketch) -> int | None:
    """How many of a grid-quantised ``child``'s sampled elements lie further from ``parent``'s
    value than rounding to the child's grid allows (half a step, plus a half-precision
    container's rounding). The model a child was quantised from gives ~0; a sibling that
    differs by a light fine-tune a handful; a pruned or distant relative many. None when the
    child sits on no grid or nothing aligns."""
    mc, mp = matrices(child), matrices(parent)
    keys = [k for k in mc if k in mp and mc[k].shape == mp[k].shape and child.samples[k].layer is not None]
    if len(keys) > GRID_MATRICES:
        keys = [keys[i] for i in np.linspace(0, len(keys) - 1, GRID_MATRICES).round().astype(int)]
    total, seen = 0, False
    for k in keys:
        step = _grid_steps(mc[k])
        if step is None:
            continue
        c = mc[k][: GRID_ROWS].astype(np.float64)
        p = mp[k][: GRID_ROWS].astype(np.float64)
        slack = 0.5 * step + np.abs(c) * 2.0**-8 + 1e-12
        total += int(np.count_nonzero(np.abs(c - p) > slack))
        seen = True
    return total if seen else None


def heal_asymmetry(a: Sketch, b: Sketch) -> float:
    """log(r(b->a) / r(a->b)), median over layered matrices (see HEAL_ASYM): > 0 when b's
    smallest weights were pushed towards zero (b pruned from a and healed), ~0 for updates
    independent of the weights."""
    ma, mb = matrices(a), matrices(b)
    out = []
    for k in ma:
        if k not in mb or ma[k].shape != mb[k].shape or a.samples[k].layer is None or ma[k].size < 64:
            continue
        x, y = np.abs(ma[k].astype(np.float64)).ravel(), np.abs(mb[k].astype(np.float64)).ravel()
        sx, sy = x <= np.quantile(x, HEAL_QUANTILE), y <= np.quantile(y, HEAL_QUANTILE)
        fwd = np.median(y[sx]) / max(np.median(x[sx]), 1e-30)
        rev = np.median(x[sy]) / max(np.median(y[sy]), 1e-30)
        if fwd > 0 and rev > 0:
            out.append(float(np.log(rev / fwd)))
    return float(np.median(out)) if out else 0.0
