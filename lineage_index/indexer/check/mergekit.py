"""A mergekit configuration that would rebuild a merge ``check`` found (``--mergekit``).

``verify.find_merge`` says how the target is explained: a convex combination (``linear``;
SLERP between near-parallel weights is indistinguishable from it on a sample), a base plus
scaled task vectors (``task_arithmetic``), or a base whose exact values the merge kept where
deltas were trimmed or dropped (``sparse``). A sparse merge is TIES when the deltas it dropped
are the small ones (magnitude trimming) and DARE when they are as large as the kept ones
(random drops); ``sparse_method`` measures that on the sampled elements, and the density from
the share of elements that left the base (an element leaves it when any input kept it). Coefficients are estimates from the sample, and the
YAML says so in a comment. No I/O here; the YAML is produced with pyyaml.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import yaml

from lineage_index.errors import UsageError
from lineage_index.records import Sketch

# Mean |delta| where the merge kept the base over where it did not: random drops (DARE) leave
# both alike (~1); magnitude trimming (TIES) leaves the small deltas (well below 1).
TRIM_RATIO = 0.75
DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float32"}


def _matrices(s: Sketch) -> dict[str, np.ndarray]:
    return {k: v.values.astype(np.float64) for k, v in s.samples.items() if len(v.shape) >= 2}


def sparse_method(child: Sketch, base: Sketch, parents: list[Sketch]) -> tuple[str, float, float, float]:
    """(``ties`` | ``dare_ties``, density, magnitude ratio, kept share) of a sparse merge over ``base``.

    The kept share is the fraction of changed elements that left the base (kept by any input).
    """
    mc, mb = _matrices(child), _matrices(base)
    keys = [k for k in mc if k in mb and mb[k].shape == mc[k].shape
            and all(k in p.samples and p.samples[k].values.shape == mc[k].shape for p in parents)]
    if not keys:
        return "ties", 1.0, float("nan"), 1.0
    c = np.concatenate([mc[k].ravel() for k in keys])
    b = np.concatenate([mb[k].ravel() for k in keys])
    deltas = [np.concatenate([p.samples[k].values.astype(np.float64).ravel() for k in keys]) - b for p in parents]
    changed = np.any(np.stack([d != 0 for d in deltas]), axis=0)
    kept = (c != b) & changed
    dropped = (c == b) & changed
    if not kept.any() or not dropped.any():
        return "ties", 1.0, float("nan"), 1.0
    mag = np.mean(np.stack([np.abs(d) for d in deltas]), axis=0)
    ratio = float(mag[dropped].mean() / max(mag[kept].mean(), 1e-30))
    share = float(kept.sum() / changed.sum())
    density = 1.0 - (1.0 - share) ** (1.0 / max(1, len(parents)))  # kept if any parent kept it
    return ("ties" if ratio < TRIM_RATIO else "dare_ties"), round(density, 3), round(ratio, 3), round(share, 3)


def mergekit_config(target: str, merge: dict[str, Any] | None, dtype: str | None = None) -> dict[str, Any]:
    """The mergekit config (as a dict) of a merge found by check (``CheckResult.merge``)."""
    if not merge:
        raise UsageError(f"{target}: the verdict is not a merge; --mergekit applies to merges only")
    method = merge.get("mergekit_method") or {"linear": "linear", "task-arithmetic": "task_arithmetic"}.get(
        merge["method"], "ties")
    density = merge.get("density")
    models = []
    for p, w in zip(merge["parents"], merge["weights"], strict=True):
        params: dict[str, Any] = {"weight": round(float(w), 3)}
        if method in ("ties", "dare_ties") and density:
            params["density"] = density
            if method == "dare_ties":
                # the fit's weight on kept elements is w_mergekit / density (mergekit's rescale) times
                # density / kept share (each input kept only part of the elements the fit sees)
                params["weight"] = round(float(w) * float(merge.get("kept_share", density)), 3)
        models.append({"model": p, "parameters": params})
    cfg: dict[str, Any] = {"merge_method": method}
    if merge.get("base") and method != "linear":
        cfg["base_model"] = merge["base"]
    cfg["models"] = models
    if method in ("ties", "dare_ties"):
        cfg["parameters"] = {"normalize": False}
    if dtype:
        cfg["dtype"] = dtype
    return cfg


def mergekit_yaml(target: str, merge: dict[str, Any] | None, dtype: str | None = None) -> str:
    cfg = mergekit_config(target, merge, dtype)
    note = (f"# mergekit config that would rebuild {target}, estimated by lineage-index check from a\n"
            f"# weight sample (fit residual {merge['residual_ratio']:.3f} of the best single parent's);"  # type: ignore[index]
            " coefficients are estimates.\n")
    return note + yaml.safe_dump(cfg, sort_keys=False)


def dtype_name(dtypes: tuple[str, ...] | list[str]) -> str | None:
    """mergekit's dtype for the target's weights (the widest float among them)."""
    order = ["F64", "F32", "BF16", "F16"]
    for d in order:
        if d in dtypes:
            return DTYPES[d]
    return None
