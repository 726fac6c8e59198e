"""Samples read as a column window (GPTQ, AWQ: ``read.packed``), compared on the columns read.

A windowed weight's sample keeps the parent's ``(rows, in)`` shape, so the model stays in its
family and its store layout, with NaN in the columns it did not read. Every comparison of
sketches goes through ``joint_view``: each 2-D sample is restricted to the columns finite in all
the sketches compared, so a GPTQ upload and its full-precision parent are compared on the
window both hold, and sketches without NaN come back unchanged (the same objects).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from lineage_index.records import Sketch


def is_windowed(s: Sketch) -> bool:
    """Whether some sample of ``s`` has columns not read (memoised in ``s.derived``)."""
    if "windowed" not in s.derived:
        s.derived["windowed"] = float(any(v.values.size and np.isnan(v.values).any() for v in s.samples.values()))
    return bool(s.derived["windowed"])


def joint_view(*sketches: Sketch) -> list[Sketch]:
    """``sketches`` with every 2-D sample restricted to the columns every one of them read; the
    originals when none is windowed. Views carry no memo (``derived``) and no layer prints."""
    if not any(is_windowed(s) for s in sketches):
        return list(sketches)
    keys = set.intersection(*[set(s.samples) for s in sketches])
    masks: dict[str, np.ndarray] = {}
    for k in keys:
        vals = [s.samples[k].values for s in sketches]
        if vals[0].ndim != 2 or any(v.shape != vals[0].shape for v in vals):
            continue
        ok = np.logical_and.reduce([np.isfinite(v).all(axis=0) for v in vals])
        if not ok.all():
            masks[k] = ok
    out = []
    for s in sketches:
        samples = {k: replace(v, values=np.ascontiguousarray(v.values[:, masks[k]])) if k in masks else v
                   for k, v in s.samples.items()}
        out.append(replace(s, samples=samples, derived={}, layer_prints={}))
    return out


def window_distance(child: Sketch, other: Sketch) -> float:
    """Mean (1 - centred cosine) over the matrices both read: a windowed sketch's nearest
    neighbours (its embedding counts the columns it did not read as zeros)."""
    a, b = joint_view(child, other)
    cos = []
    for k, x in a.samples.items():
        y = b.samples.get(k)
        if y is None or x.values.ndim != 2 or x.values.shape != y.values.shape or x.values.size < 2:
            continue
        xc = x.values.astype(np.float64).ravel()
        yc = y.values.astype(np.float64).ravel()
        xc, yc = xc - xc.mean(), yc - yc.mean()
        den = float(np.sqrt((xc @ xc) * (yc @ yc)))
        cos.append(float(xc @ yc) / den if den > 0 else 0.0)
    return float(np.mean(1.0 - np.asarray(cos))) if cos else 2.0
