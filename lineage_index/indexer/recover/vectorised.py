"""``verify.compare`` for many candidate pairs of one packed family at once (numpy, chunked).

``compare`` costs about a millisecond per pair in Python; a million-model index has millions of
candidate pairs. Here every model of a family has the same sample layout (``PackedFamily``),
so each feature ``compare`` computes is a segmented reduction over the rows of two matrices:
centred cosine per weight matrix (on the elements neither model zeroed, when they are at
least a quarter), identical matrices, norm growth, distance, z against the 1/sqrt(n) null,
rounded copies, F16/BF16 round trips, quantisation grids and pruning zeros. The thresholds are
``verify``'s own (imported, not restated), and ``PairTable.features(i)`` is the PairFeatures
``compare`` returns for that pair (the test suite checks they agree). Low-rank evidence is
computed per pair, only where ``compare`` computes it (related, with >= 25% identical matrices).

``merge_screen`` is a necessary condition for ``verify.find_merge`` computed in batch: the
affine least-squares fit over all of a model's merge candidates (no fit over a subset explains
it better) against the farthest candidate, and the share of exactly kept values a TIES/DARE
base leaves. Models that fail it cannot be merges, so assembly skips the full fit for them.
No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lineage_index.indexer.read.quant_error import quant_tolerance
from lineage_index.indexer.recover.structure import GRID_DEV, grid_deviation
from lineage_index.indexer.recover.verify import (
    _PRECISION,
    COPY_MATCH,
    MERGE_MAX_PARENTS,
    MERGE_RATIO,
    PRUNE_ZERO_GAIN,
    RELATED_MIN_COS,
    RELATED_Z,
    SPARSE_EQUAL,
    PairFeatures,
    _round_to,
    low_rank_share,
)
from lineage_index.indexer.sketch.packed import PackedFamily

CHUNK_PAIRS = 4096  # pairs per vectorised chunk (two chunk x width float64 arrays in memory)
SCREEN_MARGIN = 1.01  # the merge screen lets through ratios up to 1% above MERGE_RATIO (rounding)
_NO, _A, _B, _SAME = 0, 1, 2, 3  # which side is the (copy / quantised / pruned) child


@dataclass
class FamilyStats:
    """Per-model statistics of a packed family that ``compare`` derives from one sketch."""

    zero_share: np.ndarray
    kurtosis: np.ndarray
    grid: np.ndarray  # quantisation grid or marker
    precision: np.ndarray  # (models, matrices) verify._PRECISION of each matrix sample's dtype
    dtype_code: np.ndarray  # (models, matrices) index into DTYPE_NAMES
    quant: np.ndarray  # bool: the sketch carries a quantisation marker
    dtypes: list[str]
    sx: np.ndarray  # (models, matrices) sum of the values
    sxx: np.ndarray  # (models, matrices) sum of squares
    zeros: np.ndarray  # (models, matrices) count of exact zeros
    digest: np.ndarray  # (models, matrices) uint64 checksum of the values (equal samples, equal digests)


DTYPE_NAMES = ("F64", "F32", "BF16", "F16", "I8", "U8")


def _segments(fam: PackedFamily) -> list[tuple[int, int, int, int]]:
    """(start, end, rows, cols) of each weight-matrix sample in a model's row of values."""
    lay, off = fam.layout, fam.layout.offsets
    return [(int(off[j]), int(off[j + 1]), lay.rows[j], lay.cols[j]) for j in lay.matrices if lay.rows[j] >= 1]


def family_stats(fam: PackedFamily, chunk: int = 16_384) -> FamilyStats:
    """Zero share, mean excess kurtosis and grid flag of every model (as ``verify`` computes them)."""
    segs = _segments(fam)
    n = len(fam)
    zeros = np.zeros(n)
    total = sum(e - s for s, e, _, _ in segs)
    kurt = np.zeros(n)
    m = len(segs)
    sx, sxx, zc = np.zeros((n, m)), np.zeros((n, m)), np.zeros((n, m), dtype=np.int64)
    digest = np.zeros((n, m), dtype=np.uint64)
    width = max((e - s for s, e, _, _ in segs), default=0)
    weights = np.random.default_rng(0x5EED).integers(1, 2**62, size=width, dtype=np.uint64) | np.uint64(1)
    grid = np.zeros(n, dtype=bool)
    lay = fam.layout
    layered = [(int(lay.offsets[j]), int(lay.offsets[j + 1]), lay.rows[j], lay.cols[j])
               for j in lay.matrices if lay.rows[j] >= 1 and lay.layers[j] is not None] or segs
    for lo in range(0, n, chunk):
        v = np.asarray(fam.values[lo:lo + chunk], dtype=np.float64)
        ks = []
        rows = slice(lo, lo + len(v))
        for j, (s, e, _, _) in enumerate(segs):
            x = v[:, s:e]
            zc[rows, j] = np.count_nonzero(x == 0, axis=1)
            zeros[rows] += zc[rows, j]
            sx[rows, j] = x.sum(axis=1)
            sxx[rows, j] = np.einsum("ij,ij->i", x, x)
            bits = (np.asarray(fam.values[lo:lo + chunk, s:e], dtype=np.float32) + np.float32(0.0)).view(np.uint32)
            with np.errstate(over="ignore"):
                digest[rows, j] = (bits.astype(np.uint64) * weights[: e - s]).sum(axis=1, dtype=np.uint64)
            xc = x - x.mean(axis=1, keepdims=True)
            var = np.mean(xc * xc, axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                ks.append(np.where(var > 0, np.mean(xc**4, axis=1) / var**2 - 3.0, 0.0))
        kurt[lo:lo + len(v)] = np.mean(ks, axis=0) if ks else 0.0
        for i in range(len(v)):
            grid[lo + i] = grid_deviation([v[i, s:e].reshape(r, c) for s, e, r, c in layered]) < GRID_DEV
    quant = np.asarray([bool(q) for q in fam.meta["quant"]])
    codes = {d: i for i, d in enumerate(DTYPE_NAMES)}
    mat_idx = [j for j in fam.layout.matrices if fam.layout.rows[j] >= 1]
    dcode = np.asarray([[codes.get(sd.split(",")[j], 4) for j in mat_idx] for sd in fam.meta["sample_dtypes"]],
                       dtype=np.int8).reshape(n, len(mat_idx))
    prec = np.vectorize(lambda c: _PRECISION.get(DTYPE_NAMES[c], 0))(dcode) if dcode.size else dcode
    return FamilyStats(zeros / total if total else zeros, kurt, grid | quant, prec, dcode, quant,
                       list(fam.meta["dtypes"]), sx, sxx, zc, digest)


@dataclass
class PairTable:
    """Features of pairs (a[i], b[i]) of one family, as arrays (see ``features``)."""

    fam: PackedFamily
    stats: FamilyStats
    a: np.ndarray
    b: np.ndarray
    n_matrices: int
    cos_median: np.ndarray
    cos_min: np.ndarray
    z: np.ndarray
    related: np.ndarray
    dist: np.ndarray
    identical_share: np.ndarray
    copy_child: np.ndarray  # _NO / _A / _B / _SAME
    quant_child: np.ndarray
    prune_child: np.ndarray
    norm_growth: np.ndarray
    low_rank: np.ndarray  # low_rank_share where compare computes it, else 0
    sq_dist: np.ndarray  # squared L2 between the flattened matrix samples

    def __len__(self) -> int:
        return len(self.a)

    def _child(self, code: int, i: int) -> str | None:
        ids = self.fam.model_ids
        return {_NO: None, _A: ids[self.a[i]], _B: ids[self.b[i]], _SAME: "same"}[int(code)]

    def features(self, i: int) -> PairFeatures:
        """The PairFeatures ``verify.compare`` gives for pair ``i``."""
        a, b, st = int(self.a[i]), int(self.b[i]), self.stats
        ids = self.fam.model_ids
        if self.n_matrices == 0:
            return PairFeatures(ids[a], ids[b], 0, 0.0, 0.0, 0.0, False, 2.0, 0.0, 0.0,
                                None, None, None, 0.0, 0.0, 0.0, 0.0)
        return PairFeatures(
            a=ids[a], b=ids[b], n_matrices=self.n_matrices, cos_median=float(self.cos_median[i]),
            cos_min=float(self.cos_min[i]), z=float(self.z[i]), related=bool(self.related[i]),
            dist=float(self.dist[i]), identical_share=float(self.identical_share[i]),
            low_rank_share=float(self.low_rank[i]), copy_child=self._child(self.copy_child[i], i),
            quant_child=self._child(self.quant_child[i], i), prune_child=self._child(self.prune_child[i], i),
            zero_a=float(st.zero_share[a]), zero_b=float(st.zero_share[b]), kurt_a=float(st.kurtosis[a]),
            kurt_b=float(st.kurtosis[b]), norm_growth=float(self.norm_growth[i]),
        )


def _match_share(x: np.ndarray, y: np.ndarray, dtype_codes: np.ndarray) -> np.ndarray:
    """Per row: share of y equal to x rounded to the dtype in ``dtype_codes`` (per row)."""
    out = np.zeros(len(x))
    for code in np.unique(dtype_codes):
        rows = dtype_codes == code
        rounded = _round_to(x[rows].astype(np.float32), DTYPE_NAMES[int(code)])
        out[rows] = np.count_nonzero(rounded == y[rows], axis=1)
    return out


def compare_pairs(fam: PackedFamily, a: np.ndarray, b: np.ndarray, stats: FamilyStats | None = None,
                  chunk: int = CHUNK_PAIRS) -> PairTable:
    """``verify.compare`` for the pairs (a[i], b[i]) (row numbers into ``fam``)."""
    st = stats if stats is not None else family_stats(fam)
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    segs = _segments(fam)
    p, m = len(a), len(segs)
    cos = np.ones((p, m))
    n_el = np.zeros((p, m))
    growth = np.full((p, m), np.nan)
    ident = np.zeros((p, m), dtype=bool)
    rel_a, rel_b = np.zeros((p, m)), np.zeros((p, m))  # ||b - a|| / ||a|| and / ||b|| per matrix
    sq = np.zeros(p)
    for lo in range(0, p, chunk):
        ia, ib = a[lo:lo + chunk], b[lo:lo + chunk]
        va = np.asarray(fam.values[ia], dtype=np.float64)
        vb = np.asarray(fam.values[ib], dtype=np.float64)
        sl = slice(lo, lo + len(ia))
        for j, (s, e, _, _) in enumerate(segs):
            x, y = va[:, s:e], vb[:, s:e]
            size = e - s
            same = st.digest[ia, j] == st.digest[ib, j]
            if same.any():  # equal digests: confirm on the values
                rows = np.nonzero(same)[0]
                same[rows] = np.all(x[rows] == y[rows], axis=1)
            sxy = np.einsum("ij,ij->i", x, y)
            ax, ay = st.sxx[ia, j], st.sxx[ib, j]
            d2 = ax + ay - 2.0 * sxy
            close = d2 <= 1e-6 * (ax + ay)  # cancellation: measure the difference itself
            if close.any():
                rows = np.nonzero(close)[0]
                d = y[rows] - x[rows]
                d2[rows] = np.einsum("ij,ij->i", d, d)
            sq[sl] += d2
            dist = np.sqrt(np.maximum(d2, 0.0))
            rel_a[sl, j] = dist / np.maximum(np.sqrt(ax), 1e-30)
            rel_b[sl, j] = dist / np.maximum(np.sqrt(ay), 1e-30)
            with np.errstate(divide="ignore", invalid="ignore"):
                growth[sl, j] = np.where(~same & (d2 > 0), (ay - ax) / d2, np.nan)
                mx, my = st.sx[ia, j], st.sx[ib, j]
                cov = sxy - mx * my / size
                den = np.sqrt((ax - mx * mx / size) * (ay - my * my / size))
                c = np.where(den > 0, cov / den, 0.0)
            cnt = np.full(len(ia), float(size))
            zero = (st.zeros[ia, j] > 0) | (st.zeros[ib, j] > 0)
            if zero.any():  # pruned weights: the cosine on the elements both kept (verify.centred_cosine)
                rows = np.nonzero(zero)[0]
                c[rows], cnt[rows] = _masked_cos(x[rows], y[rows])
            cos[sl, j] = np.where(same, 1.0, c)
            n_el[sl, j] = np.where(same, size, cnt)
            ident[sl, j] = same
    if m == 0:
        z0 = np.zeros(p)
        return PairTable(fam, st, a, b, 0, z0, z0, z0, np.zeros(p, bool), z0 + 2.0, z0,
                         np.zeros(p, np.int8), np.zeros(p, np.int8), np.zeros(p, np.int8), z0, z0, sq)
    cos_med = np.median(cos, axis=1)
    z = cos_med * np.sqrt(np.maximum(1.0, np.median(n_el, axis=1)))
    related = (z >= RELATED_Z) & (cos_med >= RELATED_MIN_COS)
    with np.errstate(all="ignore"):
        has_g = ~np.all(np.isnan(growth), axis=1)
        g_med = np.zeros(p)
        if has_g.any():
            g_med[has_g] = np.nanmedian(growth[has_g], axis=1)
    identical = ident.sum(axis=1)
    za, zb = st.zero_share[a], st.zero_share[b]
    copy = np.zeros(p, dtype=np.int8)
    quant = np.zeros(p, dtype=np.int8)
    near = np.nonzero(related & (cos_med > 0.99))[0]
    if len(near):
        copy[near] = _copies(fam, st, a[near], b[near], segs)
    rel = np.nonzero(related)[0]
    qa, qb = st.grid[a[rel]], st.grid[b[rel]]
    quant[rel] = np.where(qb & ~qa, _B, np.where(qa & ~qb, _A, _NO))
    for i in np.nonzero(quant != _NO)[0]:  # within the scheme's rounding error of the other (verify.compare)
        q_row = int(b[i]) if quant[i] == _B else int(a[i])
        err = float(np.median(rel_a[i] if quant[i] == _B else rel_b[i]))
        if err > quant_tolerance(fam.meta["quant"][q_row] or None):
            quant[i] = _NO
    trip = np.nonzero(related & (cos_med > 0.99) & (quant == _NO) & (copy == _NO))[0]
    if len(trip):
        quant[trip] = _roundtrips(fam, st, a[trip], b[trip], segs)
    prune = np.where(related & (np.abs(za - zb) >= PRUNE_ZERO_GAIN), np.where(za > zb, _A, _B), _NO).astype(np.int8)
    low = np.zeros(p)
    for i in np.nonzero(related & (identical >= 0.25 * m))[0]:
        low[i] = low_rank_share(fam.sketch(int(a[i])), fam.sketch(int(b[i])))
    return PairTable(fam, st, a, b, m, cos_med, cos.min(axis=1), z, related, np.mean(1.0 - cos, axis=1),
                     identical / m, copy, quant, prune, g_med, low, sq)


def _masked_cos(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise verify.centred_cosine: (cosine, elements used)."""
    size = x.shape[1]
    nz = (x != 0) & (y != 0)
    kc = np.count_nonzero(nz, axis=1)
    use = kc >= 0.25 * size
    w = np.where(use[:, None], nz, True)
    cnt = np.where(use, kc, size).astype(np.float64)
    xw, yw = np.where(w, x, 0.0), np.where(w, y, 0.0)
    mx, my = xw.sum(1) / np.maximum(cnt, 1), yw.sum(1) / np.maximum(cnt, 1)
    xc, yc = np.where(w, x - mx[:, None], 0.0), np.where(w, y - my[:, None], 0.0)
    num = np.sum(xc * yc, axis=1)
    den = np.sqrt(np.sum(xc * xc, axis=1) * np.sum(yc * yc, axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, 0.0), cnt


def _copies(fam: PackedFamily, st: FamilyStats, a: np.ndarray, b: np.ndarray,
            segs: list[tuple[int, int, int, int]]) -> np.ndarray:
    """verify._copy_child for the pairs (a, b): _A / _B (the copy), _SAME or _NO."""
    out = np.zeros(len(a), dtype=np.int8)
    va, vb = np.asarray(fam.values[a], dtype=np.float32), np.asarray(fam.values[b], dtype=np.float32)
    total = sum(e - s for s, e, _, _ in segs)
    for parent, child, vp, vc, code in ((a, b, va, vb, _B), (b, a, vb, va, _A)):
        todo = (out == _NO) & ~st.quant[child]
        ok = todo & np.all(st.precision[child] <= st.precision[parent], axis=1)
        matched = np.zeros(len(a))
        for j, (s, e, _, _) in enumerate(segs):
            rows = np.nonzero(ok)[0]
            matched[rows] += _match_share(vp[rows, s:e], vc[rows, s:e], st.dtype_code[child[rows], j])
        hit = ok & (matched / total >= COPY_MATCH)
        same = np.asarray([st.dtypes[p] == st.dtypes[c] for p, c in zip(parent, child, strict=True)])
        out[hit] = np.where(same[hit], _SAME, code)
    return out


def _roundtrips(fam: PackedFamily, st: FamilyStats, a: np.ndarray, b: np.ndarray,
                segs: list[tuple[int, int, int, int]]) -> np.ndarray:
    """verify._roundtrip_child: which side holds the other's values on an F16/BF16 grid in F32."""
    out = np.zeros(len(a), dtype=np.int8)
    va, vb = np.asarray(fam.values[a], dtype=np.float32), np.asarray(fam.values[b], dtype=np.float32)
    total = sum(e - s for s, e, _, _ in segs)
    full = {DTYPE_NAMES.index("F32"), DTYPE_NAMES.index("F64")}
    for child, vp, vc, code in ((b, va, vb, _B), (a, vb, va, _A)):
        ok = np.all(np.isin(st.dtype_code[child], list(full)), axis=1)
        for dt in ("F16", "BF16"):
            todo = ok & (out == _NO)
            rows = np.nonzero(todo)[0]
            matched = np.zeros(len(a))
            codes = np.full(len(rows), DTYPE_NAMES.index(dt))
            for s, e, _, _ in segs:
                matched[rows] += _match_share(vp[rows, s:e], vc[rows, s:e], codes)
            out[todo & (matched / total >= COPY_MATCH)] = code
    return out


def _subsets(k: int, size: int) -> np.ndarray:
    from itertools import combinations

    return np.asarray(list(combinations(range(k), min(k, size))), dtype=np.int64)


def merge_screen(fam: PackedFamily, queries: list[tuple[str, list[str]]]) -> set[str]:
    """Models that may be merges of their candidates (a superset of what ``find_merge`` accepts).

    A linear or task-arithmetic merge that ``find_merge`` accepts is a fit of the model on a set
    S of at most MERGE_MAX_PARENTS + 1 of its candidates (the parents and at most one negative
    base) with weights summing to 1, whose residual over the distance to the nearest candidate
    it was given is below MERGE_RATIO. For every such S inside a set T of that size, the residual
    is at least T's (the affine least squares over T: 1 / (1' A+ 1) with A the Gram matrix of the
    candidates minus the model) and that nearest distance at most T's second largest: the lowest
    of these bounds over all T is a lower bound on any ratio ``find_merge`` can report. A TIES/DARE
    base keeps at least SPARSE_EQUAL of the model's values exactly on the matrices that changed;
    the models passing neither test are no merges. Computed for every model at once.
    """
    index = {m: i for i, m in enumerate(fam.model_ids)}
    segs = _segments(fam)
    if not segs:
        return set()
    size = MERGE_MAX_PARENTS + 1
    cols = np.concatenate([np.arange(s, e) for s, e, _, _ in segs])
    bounds = np.cumsum([0] + [e - s for s, e, _, _ in segs])
    out: set[str] = set()
    by_len: dict[int, list[tuple[str, list[str]]]] = {}
    for m, cands in queries:
        if len(cands) >= 2:
            by_len.setdefault(len(cands), []).append((m, cands))
    for k, group in by_len.items():
        combos = _subsets(k, size)  # (t, s)
        for lo in range(0, len(group), 1024):
            part = group[lo:lo + 1024]
            c = np.asarray(fam.values[[index[m] for m, _ in part]], dtype=np.float64)[:, cols]
            v = np.asarray(fam.values[[index[x] for _, cands in part for x in cands]],
                           dtype=np.float64)[:, cols].reshape(len(part), k, -1)
            eq = v == c[:, None, :]
            equal = np.zeros((len(part), k))
            changed = np.zeros((len(part), k))
            for j in range(len(segs)):
                seg = eq[:, :, bounds[j]:bounds[j + 1]]
                moved = ~seg.all(axis=2)
                equal += np.where(moved, seg.sum(axis=2), 0)
                changed += np.where(moved, bounds[j + 1] - bounds[j], 0)
            sparse = np.any((changed > 0) & (equal >= SPARSE_EQUAL * np.maximum(changed, 1)), axis=1)
            diff = v - c[:, None, :]
            gram = np.einsum("qid,qjd->qij", diff, diff)  # (q, k, k)
            sub = gram[:, combos[:, :, None], combos[:, None, :]]  # (q, t, s, s)
            ones = np.ones(combos.shape[1])
            with np.errstate(divide="ignore", invalid="ignore"):
                quad = np.einsum("i,qtij,j->qt", ones, np.linalg.pinv(sub, hermitian=True), ones)
                resid = np.sqrt(np.where(quad > 0, 1.0 / quad, 0.0))
                dist = np.sort(np.sqrt(np.clip(np.diagonal(sub, axis1=2, axis2=3), 0.0, None)), axis=2)
                second_far = dist[:, :, -2]
                ratio = np.where(second_far > 0, resid / second_far, np.inf)
            linear = ratio.min(axis=1) < MERGE_RATIO * SCREEN_MARGIN
            out.update(m for (m, _), ok in zip(part, sparse | linear, strict=True) if ok)
    return out
