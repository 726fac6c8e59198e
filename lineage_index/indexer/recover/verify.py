"""Pairwise verification on aligned sketch samples: related?, relation signature, direction.

Only 2-D weight matrices decide relatedness: their initialisation is random, so two
independently trained models have centred cosine ~ N(0, 1/n) per matrix (n = sampled
elements), whatever their architecture; 1-D tensors (norms start at 1, biases at 0) would
look related by construction. Every threshold below is stated with its reason; ``bench/``
shows how they separate the generated zoos. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lineage_index.indexer.read.quant_error import quant_tolerance
from lineage_index.indexer.recover.structure import (
    GRID_DEV,
    HEAL_ASYM,
    grid_deviation,
    heal_asymmetry,
)
from lineage_index.indexer.recover.structure import matrices as _matrices
from lineage_index.indexer.sketch.window import is_windowed, joint_view
from lineage_index.records import Sketch

# --- thresholds (stated, with their reason) -----------------------------------------------
# Related when the median centred cosine over matrices exceeds RELATED_Z standard deviations
# of the null (independent weights: sd = 1/sqrt(n)), and at least RELATED_MIN_COS.
RELATED_Z = 8.0
RELATED_MIN_COS = 0.05
# Copy: the lower-precision model equals the higher-precision one rounded to its dtype on
# this share of elements (a re-upload), or is bit-identical.
COPY_MATCH = 0.999
# Quantised: the child's matrices carry int8/4-bit markers (bnb SCB, GPTQ) or sit on a
# quantisation grid (``structure.grid_deviation`` < GRID_DEV) while the parent does not.
# Pruned: the child's share of exact zeros in matrices exceeds the parent's by this much (or it
# was healed: ``structure.heal_asymmetry`` >= HEAL_ASYM).
PRUNE_ZERO_GAIN = 0.05
# Low rank: a changed matrix's delta block has numerical rank below this share of its rows.
LOW_RANK_SHARE = 0.5
# Direction (norm growth): a fine-tuning update d is nearly orthogonal to the parent P, so
# |P + d|^2 - |P|^2 ~ |d|^2: the child is the endpoint whose norm grew by about |d|^2.
# ``norm_growth`` is that growth over |d|^2, ~ +1 for a -> b and ~ -1 for b -> a.


@dataclass(frozen=True)
class PairFeatures:
    """Symmetric and directional features of one pair (a, b)."""

    a: str
    b: str
    n_matrices: int
    cos_median: float
    cos_min: float
    z: float
    related: bool
    dist: float  # mean (1 - cos) over matrices: additive along a fine-tuning path
    identical_share: float  # share of matrices bit-identical
    low_rank_share: float  # among changed matrices, share with low-rank delta (partial updates only)
    copy_child: str | None  # the model that is a (rounded) copy of the other, if any
    quant_child: str | None
    prune_child: str | None
    zero_a: float
    zero_b: float
    kurt_a: float
    kurt_b: float
    norm_growth: float = 0.0  # median over matrices of (|b|^2 - |a|^2) / |b - a|^2: > 0 means a -> b
    extra: dict[str, float] = field(default_factory=dict)


def excess_kurtosis(x: np.ndarray) -> float:
    x = x.astype(np.float64).reshape(-1)
    x = x - x.mean()
    var = float(np.mean(x * x))
    if var <= 0:
        return 0.0
    return float(np.mean(x**4) / var**2 - 3.0)


def model_kurtosis(s: Sketch) -> float:
    """Mean excess kurtosis over the sampled matrices (MoTHer's direction signal)."""
    if "kurtosis" not in s.derived:
        vals = [excess_kurtosis(v) for v in _matrices(s).values()]
        s.derived["kurtosis"] = float(np.mean(vals)) if vals else 0.0
    return s.derived["kurtosis"]


def zero_share(s: Sketch) -> float:
    """Share of exact zeros in the sampled matrices (pruning signal)."""
    if "zero_share" not in s.derived:
        mats = list(_matrices(s).values())
        total = sum(m.size for m in mats)
        s.derived["zero_share"] = float(sum(int(np.count_nonzero(m == 0)) for m in mats) / total) if total else 0.0
    return s.derived["zero_share"]


def _round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "F16":
        return x.astype(np.float16).astype(np.float32)
    if dtype == "BF16":
        bits = x.astype(np.float32).view(np.uint32)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        return rounded.astype(np.uint32).view(np.float32)
    return x


_PRECISION = {"F64": 3, "F32": 2, "BF16": 1, "F16": 1, "I8": 0, "U8": 0}


def _copy_child(a: Sketch, b: Sketch, common: list[str]) -> str | None:
    """Which of a, b is a copy of the other (same values, perhaps another dtype), if either.

    A copy holds its parent's values rounded to its own dtype: a lower-precision copy rounds, a
    higher-precision container (a BF16 model saved as F32, a pickle or GGUF upcast) holds them
    exactly, every value on the parent's grid, which an original trained at the higher precision
    never does. When both directions fit, that upcast decides; otherwise (equal dtypes, or BF16
    against F16 with every value exact in both) it is "same" and upload dates or cards decide.
    """
    fits: dict[str, bool] = {}  # child id -> it is an upcast copy
    for parent, child in ((a, b), (b, a)):
        if child.quant:
            continue
        matched = total = 0
        upcast = False
        for k in common:
            ps, cs = parent.samples[k], child.samples[k]
            if _PRECISION.get(cs.dtype, 0) > _PRECISION.get(ps.dtype, 0):
                if not np.array_equal(_round_to(cs.values, ps.dtype), cs.values):
                    break  # values off the parent's grid: not an upcast of it
                upcast = True
            rounded = _round_to(ps.values, cs.dtype)
            matched += int(np.count_nonzero(rounded == cs.values))
            total += cs.values.size
        else:
            if total and matched / total >= COPY_MATCH:
                fits[child.model_id] = upcast
    if not fits:
        return None
    if len(fits) == 1:
        (child_id,) = fits
        return "same" if a.dtypes == b.dtypes else child_id
    upcasts = [m for m, up in fits.items() if up]
    return upcasts[0] if len(upcasts) == 1 else "same"


def _roundtrip_child(a: Sketch, b: Sketch, common: list[str]) -> str | None:
    """Which of a, b holds the other's values rounded to F16/BF16 but stored at full precision.

    A conversion to a lower-precision dtype is a re-upload (copy); values degraded to the
    F16/BF16 grid while the container keeps F32 are a quantisation round trip.
    """
    for parent, child in ((a, b), (b, a)):
        for dtype in ("F16", "BF16"):
            matched = total = 0
            for k in common:
                cs = child.samples[k]
                if cs.dtype not in ("F32", "F64"):
                    break
                matched += int(np.count_nonzero(_round_to(parent.samples[k].values, dtype) == cs.values))
                total += cs.values.size
            else:
                if total and matched / total >= COPY_MATCH:
                    return child.model_id
    return None


def _grid_quantised(s: Sketch) -> bool:
    if s.quant:
        return True
    if "grid_dev" not in s.derived:
        mats = _matrices(s)
        layered = [v for k, v in mats.items() if s.samples[k].layer is not None]
        s.derived["grid_dev"] = grid_deviation(layered or list(mats.values()))
    return s.derived["grid_dev"] < GRID_DEV


def _low_rank(delta: np.ndarray) -> bool:
    rows = min(delta.shape)
    if rows < 4:
        return False
    d = delta.astype(np.float64)
    gram = d @ d.T if d.shape[0] <= d.shape[1] else d.T @ d  # eigenvalues = squared singular values
    ev = np.clip(np.linalg.eigvalsh(gram), 0.0, None)
    if ev[-1] <= 0:
        return False
    rank = int(np.count_nonzero(ev > ev[-1] * 1e-6))
    return rank < LOW_RANK_SHARE * rows


def centred_cosine(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """Centred cosine of two aligned matrices (float64) and the number of elements it used.

    Positions pruned (exact zero) in either model say nothing about fine-tuning distance: a
    pruned child is compared with its source on the weights it kept.
    """
    keep = (x != 0) & (y != 0)
    if keep.sum() >= 0.25 * keep.size:
        x, y = x[keep], y[keep]
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt(np.sum(xc * xc) * np.sum(yc * yc))
    return (float(np.sum(xc * yc) / denom) if denom > 0 else 0.0), int(x.size)


def matrix_cosines(a: Sketch, b: Sketch) -> list[tuple[str, int | None, str, float, int]]:
    """Per aligned matrix (key, layer, role, centred cosine, elements): what ``compare`` summarises."""
    ma, mb = _matrices(a), _matrices(b)
    out = []
    for k in sorted(k for k in ma if k in mb and ma[k].shape == mb[k].shape):
        c, n = centred_cosine(ma[k].astype(np.float64), mb[k].astype(np.float64))
        out.append((k, a.samples[k].layer, a.samples[k].role, c, n))
    return out


def compare(a: Sketch, b: Sketch) -> PairFeatures:
    """Features of the pair (a, b) over their common aligned matrices (over the columns both
    read where one is a column window: ``sketch.window``)."""
    a, b = joint_view(a, b)
    ma, mb = _matrices(a), _matrices(b)
    common = sorted(k for k in ma if k in mb and ma[k].shape == mb[k].shape)
    cos, dist, n_el, growth = [], [], [], []
    rel_to_a, rel_to_b = [], []  # ||b - a|| / ||a|| and / ||b|| per matrix
    identical = changed = 0
    for k in common:
        x, y = ma[k].astype(np.float64), mb[k].astype(np.float64)
        d = float(np.sqrt(np.sum((y - x) ** 2)))
        rel_to_a.append(d / max(float(np.sqrt(np.sum(x * x))), 1e-30))
        rel_to_b.append(d / max(float(np.sqrt(np.sum(y * y))), 1e-30))
        if np.array_equal(x, y):
            identical += 1
            cos.append(1.0)
            dist.append(0.0)
            n_el.append(x.size)
            continue
        changed += 1
        delta2 = float(np.sum((y - x) ** 2))
        if delta2 > 0:
            growth.append((float(np.sum(y * y)) - float(np.sum(x * x))) / delta2)
        c, size = centred_cosine(x, y)
        cos.append(c)
        dist.append(1.0 - c)
        n_el.append(size)
    n = len(common)
    if n == 0:
        return PairFeatures(a.model_id, b.model_id, 0, 0.0, 0.0, 0.0, False, 2.0, 0.0, 0.0,
                            None, None, None, 0.0, 0.0, 0.0, 0.0)
    cos_med = float(np.median(cos))
    sd_null = 1.0 / np.sqrt(max(1.0, float(np.median(n_el))))
    z = cos_med / sd_null
    related = z >= RELATED_Z and cos_med >= RELATED_MIN_COS
    za, zb = zero_share(a), zero_share(b)
    quant_child = None
    copy_child = _copy_child(a, b, common) if related and cos_med > 0.99 else None
    if related:
        qa, qb = _grid_quantised(a), _grid_quantised(b)
        quant_child = b.model_id if qb and not qa else a.model_id if qa and not qb else None
        if quant_child is not None:  # within the scheme's rounding error of the other, or no quantised copy
            q = b if quant_child == b.model_id else a
            rel = float(np.median(rel_to_a if q is b else rel_to_b))
            if rel > quant_tolerance(q.quant):
                quant_child = None
        if quant_child is None and copy_child is None and cos_med > 0.99:
            quant_child = _roundtrip_child(a, b, common)
    prune_child = None
    if related and abs(za - zb) >= PRUNE_ZERO_GAIN:
        prune_child = a.model_id if za > zb else b.model_id
    elif related and quant_child is None and copy_child is None:
        asym = heal_asymmetry(a, b)
        if abs(asym) >= HEAL_ASYM:
            prune_child = b.model_id if asym > 0 else a.model_id
    return PairFeatures(
        a=a.model_id, b=b.model_id, n_matrices=n, cos_median=cos_med, cos_min=float(np.min(cos)),
        z=float(z), related=bool(related), dist=float(np.mean(dist)),
        identical_share=identical / n,
        low_rank_share=low_rank_share(a, b) if related and identical >= 0.25 * n else 0.0,
        copy_child=copy_child, quant_child=quant_child, prune_child=prune_child,
        zero_a=za, zero_b=zb, kurt_a=model_kurtosis(a), kurt_b=model_kurtosis(b),
        norm_growth=float(np.median(growth)) if growth else 0.0,
    )


def low_rank_share(a: Sketch, b: Sketch) -> float:
    """Among the matrices that changed between a and b, the share whose delta is low rank
    (a merged LoRA). Computed for chosen edges only: it is evidence, not a decision."""
    a, b = joint_view(a, b)
    ma, mb = _matrices(a), _matrices(b)
    changed = low = 0
    for k in ma:
        if k in mb and ma[k].shape == mb[k].shape and not np.array_equal(ma[k], mb[k]):
            changed += 1
            low += _low_rank(mb[k].astype(np.float64) - ma[k])
    return low / changed if changed else 0.0


def _flat(s: Sketch, keys: list[str]) -> np.ndarray:
    return np.concatenate([s.samples[k].values.reshape(-1).astype(np.float64) for k in keys])


def merge_fit(
    child: Sketch, parents: list[Sketch], min_weight: float = 0.1, allow_negative: bool = False
) -> tuple[list[str], list[float], float]:
    """Fit child ~ sum_i w_i parent_i with sum w = 1 by least squares over common matrices.

    Candidates whose weight (|weight| with ``allow_negative``) falls below ``min_weight`` are
    dropped and the fit repeated; with ``allow_negative`` a clearly negative weight is the base
    of a task-arithmetic merge (base + sum of scaled deltas).
    Returns (ids, weights, residual relative to the best single-candidate residual): a merge
    explains the child far better than any one model does (ratio well below 1).
    """
    if len(parents) < 2:
        return [], [], 1.0
    keys = sorted(set.intersection(*[set(_matrices(p)) for p in parents]) & set(_matrices(child)))
    keys = [k for k in keys if all(p.samples[k].values.shape == child.samples[k].values.shape for p in parents)]
    if not keys or len(parents) < 2:
        return [], [], 1.0
    c = _flat(child, keys)
    vecs = {p.model_id: _flat(p, keys) for p in parents}
    single = min(float(np.linalg.norm(c - v)) for v in vecs.values())
    ids = list(vecs)
    while len(ids) >= 2:
        ref = vecs[ids[0]]
        basis = np.stack([vecs[i] - ref for i in ids[1:]], axis=1)
        w_rest, *_ = np.linalg.lstsq(basis, c - ref, rcond=None)
        weights = np.concatenate([[1.0 - w_rest.sum()], w_rest])
        # with allow_negative, a clearly negative weight is a task-arithmetic base
        weakest = int(np.argmin(np.abs(weights) if allow_negative else weights))
        if (abs(weights[weakest]) if allow_negative else weights[weakest]) < min_weight:
            ids.pop(weakest)
            continue
        resid = float(np.linalg.norm(c - ref - basis @ w_rest))
        return ids, [float(w) for w in weights], resid / single if single > 0 else 1.0
    return [], [], 1.0


# Merges (thresholds stated): a linear / SLERP / task-arithmetic merge leaves a residual below
# MERGE_RATIO of the best single model's (a parent explained by k >= 2 of its own children
# leaves 1/sqrt(k) >= 0.5 with at most 4 inputs). TIES / DARE merges keep the base's exact
# values on many elements (trimmed or dropped deltas): at least SPARSE_EQUAL of the changed
# elements, where a fine-tune keeps ~0; the kept elements then load on >= 2 inputs' deltas with
# weight >= SPARSE_WEIGHT each (a fine-tune of the base loads < 0.1 on its siblings).
MERGE_RATIO = 0.3
MERGE_MAX_PARENTS = 4  # model soups; a parent explained by 4 of its children still leaves 0.5
TASK_WEIGHT = 0.5  # task arithmetic: one base with a negative weight, each task vector scaled >= 0.5
SPARSE_EQUAL = 0.15
SPARSE_WEIGHT = 0.3
SPARSE_WEIGHT_MAX = 2.0  # task vectors are scaled by at most ~2 (DARE rescales by 1/(1-p))
SPARSE_RESIDUAL = 0.7  # kept deltas explained to within 70% (TIES ~0.45, DARE p=0.5 ~0.56)
SPARSE_MIN_KEPT = 1_000  # changed elements needed before a sparse merge is claimed


@dataclass(frozen=True)
class MergeFit:
    parents: list[str]
    weights: list[float]
    ratio: float
    method: str  # "linear" | "task-arithmetic" | "sparse"
    base: str | None = None


def find_merge(child: Sketch, candidates: list[Sketch]) -> MergeFit | None:
    """The merge that explains ``child`` from ``candidates`` (nearest first), if there is one.
    A column-windowed sketch (GPTQ, AWQ upload) is neither a merge nor a merge's input here."""
    if is_windowed(child):
        return None
    candidates = [c for c in candidates if not is_windowed(c)]
    by_id = {c.model_id: c for c in candidates}
    for allow_negative in (False, True):  # the simplest explanation first: a convex combination
        ids, weights, ratio = merge_fit(child, candidates, allow_negative=allow_negative)
        while sum(w > 0 for w in weights) > MERGE_MAX_PARENTS:
            ids.pop(weights.index(min(w for w in weights if w > 0)))
            ids, weights, ratio = merge_fit(child, [by_id[i] for i in ids], allow_negative=allow_negative)
        parents = [(i, w) for i, w in zip(ids, weights, strict=True) if w > 0]
        base = [i for i, w in zip(ids, weights, strict=True) if w < 0]
        if allow_negative and (len(base) != 1 or min((w for _, w in parents), default=0.0) < TASK_WEIGHT):
            continue
        if len(parents) >= 2 and ratio < MERGE_RATIO:
            return MergeFit([i for i, _ in parents], [w for _, w in parents], ratio,
                            "task-arithmetic" if base else "linear", base[0] if base else None)
    return sparse_merge_fit(child, candidates)


def sparse_merge_fit(child: Sketch, candidates: list[Sketch]) -> MergeFit | None:
    """TIES/DARE-style merges: base values kept exactly where deltas were trimmed or dropped."""
    mc = _matrices(child)
    bases: list[tuple[float, int, Sketch, list[str]]] = []
    for i, cand in enumerate(candidates):  # the base is a model whose exact values the child kept
        mb = _matrices(cand)
        keys = [k for k in mc if k in mb and mb[k].shape == mc[k].shape and not np.array_equal(mb[k], mc[k])]
        if keys:
            equal = float(np.mean(_flat(child, keys) == _flat(cand, keys)))
            if equal >= SPARSE_EQUAL:
                bases.append((-equal, i, cand, keys))
    for _, _, base, keys in sorted(bases, key=lambda t: (t[0], t[1])):
        others = [o for o in candidates if o is not base and all(
            k in o.samples and o.samples[k].values.shape == mc[k].shape for k in keys)]
        if len(others) < 2:
            continue
        c, b = _flat(child, keys), _flat(base, keys)
        xs = [_flat(o, keys) for o in others]
        w, resid, kept = _sparse_fit(c, b, xs)
        chosen = [(o.model_id, float(wi)) for o, wi in zip(others, w, strict=True)
                  if SPARSE_WEIGHT <= wi <= SPARSE_WEIGHT_MAX]
        inputs = [o for o in others if o.model_id in {i for i, _ in chosen}]
        # the base is where the inputs were fine-tuned from: their norms grew from it (a merge's
        # own base would be the merge's parent, and a TIES/DARE merge's inputs shrink towards it)
        if inputs and float(np.median([compare(base, o).norm_growth for o in inputs])) <= 0:
            continue
        if len(chosen) >= 2 and resid <= SPARSE_RESIDUAL and kept >= SPARSE_MIN_KEPT:
            chosen = sorted(chosen, key=lambda t: -t[1])[:MERGE_MAX_PARENTS]
            return MergeFit([i for i, _ in chosen], [wi for _, wi in chosen], resid, "sparse", base.model_id)
    return None


def _sparse_fit(c: np.ndarray, b: np.ndarray, xs: list[np.ndarray]) -> tuple[np.ndarray, float, int]:
    """Least-squares weights of the inputs' deltas from ``b`` on the elements where ``c``
    differs from ``b``, the relative residual, and how many elements that was."""
    kept = c != b
    x = np.stack([o[kept] - b[kept] for o in xs], axis=1)
    y = c[kept] - b[kept]
    w, *_ = np.linalg.lstsq(x, y, rcond=None)
    return w, float(np.linalg.norm(y - x @ w) / max(np.linalg.norm(y), 1e-12)), int(kept.sum())


def containment(grand: Sketch, parent: Sketch, child: Sketch) -> tuple[float, int] | None:
    """How much of ``parent``'s update from ``grand`` ``child`` carries: median over matrices of
    kappa = <child - grand, parent - grand> / |parent - grand|^2, and the number of matrices.

    A chain grand -> parent -> child gives kappa = 1 + <e, d>/|d|^2 with e the child's own update,
    about 1 when e is unrelated to d; siblings with updates d, d' of correlation rho give
    rho * |d'|/|d|. Matrices that ``parent`` did not change are left out. None when fewer than
    two matrices of the three align.
    """
    grand, parent, child = joint_view(grand, parent, child)
    mg, mp, mc = _matrices(grand), _matrices(parent), _matrices(child)
    kappas = []
    for k in mg:
        if k not in mp or k not in mc or not (mg[k].shape == mp[k].shape == mc[k].shape):
            continue
        g = mg[k].astype(np.float64)
        d = mp[k].astype(np.float64) - g
        dd = float(np.sum(d * d))
        if dd <= 0.0:
            continue
        kappas.append(float(np.sum((mc[k].astype(np.float64) - g) * d)) / dd)
    if len(kappas) < 2:
        return None
    return float(np.median(kappas)), len(kappas)


NEAR_COPY = 0.1  # a reference within sqrt(0.1) ~ 0.32 of p's update norm from p is a copy of p


def partial_containment(
    grand: Sketch, parent: Sketch, child: Sketch, refs: list[Sketch]
) -> tuple[float, int] | None:
    """How much of ``parent``'s *own* update from ``grand`` ``child`` carries, beyond what other
    descendants of ``grand`` (``refs``, none in the parent's or child's subtree) share.

    Fine-tunes of one model share a common component (weight decay, the same continued
    pretraining direction, similar data): siblings then carry 0.8-1.0 of each other's update
    and plain ``containment`` cannot tell them from a chain. Per matrix, c - g is regressed on
    [p - g, r_1 - g, ..., r_k - g] by least squares and beta_p, p's coefficient, is kept; the
    median over matrices is returned. In a chain g -> p -> c, c - g = (p - g) + e with e the
    child's own update, independent of the refs: beta_p ~ 1 whatever the refs. For siblings
    sharing a common component with k exchangeable sibling refs, beta_p ~ 1/(k + 1) <= 0.5.
    None without refs or with fewer than two aligned matrices.
    """
    if not refs:
        return None
    grand, parent, child, *refs = joint_view(grand, parent, child, *refs)
    mg, mp, mc = _matrices(grand), _matrices(parent), _matrices(child)
    mrs = [_matrices(r) for r in refs]
    betas = []
    for k, g in mg.items():
        if k not in mp or k not in mc or not (g.shape == mp[k].shape == mc[k].shape):
            continue
        g64 = g.astype(np.float64).reshape(-1)
        d = mp[k].astype(np.float64).reshape(-1) - g64
        if not np.any(d):
            continue
        dd = float(d @ d)
        cols = [d]
        for mr in mrs:
            if k in mr and mr[k].shape == g.shape:
                r = mr[k].astype(np.float64).reshape(-1) - g64
                diff = r - d
                # a near copy of p (quantised, re-saved) is collinear with p: it would share beta_p
                if np.any(r) and float(diff @ diff) >= NEAR_COPY * dd:
                    cols.append(r)
        if len(cols) < 2:
            continue
        beta, *_ = np.linalg.lstsq(np.stack(cols, axis=1), mc[k].astype(np.float64).reshape(-1) - g64, rcond=None)
        betas.append(float(beta[0]))
    if len(betas) < 2:
        return None
    return float(np.median(betas)), len(betas)
