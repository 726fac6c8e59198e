"""Candidate pairs by nearest-neighbour search over sketch embeddings, per family.

Index (``choose_index``, per family, from its size): exact ``IndexFlatL2`` below ``FLAT_MAX``
sketches; past it a compressed IVF index with 8-bit scalar-quantised residuals (``ivfsq8``:
256 bytes a vector instead of 1 KiB, ``nlist`` ~ 4 sqrt(n) cells), whose ``nprobe`` is tuned on
the family itself: doubled until, on a sample of queries, recall@k against exact search reaches
``TARGET_RECALL`` (and the exact nearest neighbour comes back for ``TARGET_NEAREST`` of them);
the shortlist of 2k is re-ranked on the exact vectors. Product quantisation (IVF-PQ) and
HNSW are available (``kind``) but not chosen: inside one family every sketch sits within ~1e-2
(squared, relative) of its parent while the family spans ~1, and 8-bit codes per 8 dimensions
cannot resolve that (bench/bench_scale.py prints the comparison). On a CUDA machine with
faiss-gpu the index is built on the GPU (``plan.gpu``); the code path is otherwise the same.

Near-duplicates (copies, dtype casts, 8-bit quantisations of one model: ``DUPLICATE_EPS``)
are collapsed before the search: a base with hundreds of quantised uploads would otherwise
fill its fine-tunes' k nearest with its own copies. Each group is searched through one
representative (unquantised, highest precision first), every member is paired with it, and
declared parents are always added. This module decides nothing about lineage: it only
proposes pairs for ``verify``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

import faiss
import numpy as np

from lineage_index.records import Candidate, Sketch

# Exact search below this many sketches in a family. FAISS's flat search is a BLAS product and
# holds its own against the IVF scan (training and tuning included) up to ~20-25k sketches on 2
# cores (bench/bench_scale.py --crossover: 20k sketches of one simulated family, flat 8.8 s CPU,
# IVF-SQ8 9.2 s; the IVF cost grows as n^1.5, flat as n^2).
FLAT_MAX = 24_000
DEFAULT_K = 10
TARGET_RECALL = 0.99  # recall@k against exact search that nprobe is tuned to reach ...
TARGET_NEAREST = 0.995  # ... with the exact nearest neighbour returned for this share of queries
TUNE_QUERIES = 1024
IVF_THRESHOLD = FLAT_MAX  # former name, kept for callers
# Near-duplicates: squared embedding distance below this share of the squared norm. Copies and
# dtype casts sit near 0, an 8-bit absmax quantisation at its rounding error (~6e-3)^2 ~ 4e-5;
# a fine-tune moves its weights by ~1e-1 (squared ~1e-2), its smallest updates by ~3e-2.
DUPLICATE_EPS = 1e-4
# The duplicate-finding first pass: near-duplicates share an IVF cell (they are ~1e-2 apart where
# cells are ~1e-1 wide), so past this size one probe of a sqrt(n)-cell IVF index finds them.
DUP_IVF_MIN = 4096
KMEANS_ITERATIONS = 10
# Members of a near-duplicate group each neighbour of its representative also meets (re-uploads,
# casts and quantised copies of one model: the original among them).
GROUP_FANOUT = 8
# Small flat families search once, SINGLE_PASS_WIDTH x k wide, for duplicates and neighbours alike
# (the k nearest other groups are the first distinct ones in the list unless groups crowd it).
SINGLE_PASS_WIDTH = 3


@dataclass(frozen=True)
class IndexPlan:
    """The index a family gets, and its parameters."""

    kind: str  # "flat" | "ivfsq8" | "ivfpq" | "hnsw" | "ivfflat" (the duplicate pass)
    n: int
    dim: int
    nlist: int = 0
    nprobe: int = 0
    m: int = 0  # PQ sub-quantisers / HNSW links
    refine: int = 1  # shortlist factor re-ranked on exact distances
    gpu: bool = False


def _gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def choose_index(n: int, dim: int, gpu: bool | None = None, flat_max: int | None = None,
                 kind: str | None = None) -> IndexPlan:
    """Exact while small, IVF-SQ8 past ``flat_max`` (or ``kind``); GPU when faiss-gpu sees one (or as forced)."""
    on_gpu = _gpu_available() if gpu is None else gpu
    flat_max = FLAT_MAX if flat_max is None else flat_max
    kind = kind or ("flat" if n < flat_max else "ivfsq8")
    if kind == "flat":
        return IndexPlan("flat", n, dim, gpu=on_gpu)
    nlist = int(min(65_536, max(16, 4 * math.sqrt(n))))
    if kind == "hnsw":
        return IndexPlan("hnsw", n, dim, nprobe=32, m=32, gpu=False)  # faiss has no GPU HNSW
    if kind == "ivfpq":
        m = next(x for x in (dim // 8, dim // 4, dim // 2, dim) if x > 0 and dim % x == 0)
        return IndexPlan("ivfpq", n, dim, nlist=nlist, nprobe=8, m=m, refine=4, gpu=on_gpu)
    return IndexPlan("ivfsq8", n, dim, nlist=nlist, nprobe=16, refine=2, gpu=on_gpu)


def _to_device(index: faiss.Index, plan: IndexPlan) -> faiss.Index:
    if not plan.gpu:
        return index
    resources = faiss.StandardGpuResources()  # pragma: no cover - GPU machines only
    return faiss.index_cpu_to_gpu(resources, 0, index)  # pragma: no cover


def _set_probe(index: faiss.Index, plan: IndexPlan) -> None:
    if plan.kind == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = plan.nprobe
    elif plan.kind != "flat":
        index.nprobe = plan.nprobe


def build_index(vectors: np.ndarray, plan: IndexPlan | None = None) -> faiss.Index:
    """The FAISS index ``plan`` names (chosen from the size when not given), with ``vectors`` added."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    plan = plan or choose_index(n, dim)
    if plan.kind == "flat":
        index = _to_device(faiss.IndexFlatL2(dim), plan)
    elif plan.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, plan.m)
    else:
        quantizer = faiss.IndexFlatL2(dim)
        if plan.kind == "ivfpq":
            cpu = faiss.IndexIVFPQ(quantizer, dim, plan.nlist, plan.m, 8)
        elif plan.kind == "ivfflat":
            cpu = faiss.IndexIVFFlat(quantizer, dim, plan.nlist)
        else:
            cpu = faiss.IndexIVFScalarQuantizer(quantizer, dim, plan.nlist, faiss.ScalarQuantizer.QT_8bit)
        cpu.cp.niter = KMEANS_ITERATIONS
        index = _to_device(cpu, plan)
        index.train(vectors if n <= 32 * plan.nlist else
                    vectors[np.random.default_rng(0).choice(n, 32 * plan.nlist, replace=False)])
    index.add(vectors)
    _set_probe(index, plan)
    return index


def _search(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, k: int, plan: IndexPlan
            ) -> tuple[np.ndarray, np.ndarray]:
    """k nearest (squared L2, row) of each query, re-ranked on exact vectors when ``plan.refine``."""
    kk = min(k * plan.refine, len(vectors))
    dist, idx = index.search(np.ascontiguousarray(queries), kk)
    if plan.refine == 1:
        return dist, idx
    safe = np.where(idx >= 0, idx, 0)
    exact = np.empty(idx.shape, dtype=np.float32)
    for lo in range(0, len(queries), 8192):
        diff = vectors[safe[lo:lo + 8192]] - queries[lo:lo + 8192, None, :]
        exact[lo:lo + 8192] = np.einsum("qkd,qkd->qk", diff, diff)
    exact[idx < 0] = np.inf
    order = np.argsort(exact, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(exact, order, 1), np.take_along_axis(idx, order, 1)


def exact_knn(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of ``vectors`` for ``queries`` (squared L2)."""
    index = faiss.IndexFlatL2(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(vectors)))


def found(approx: np.ndarray, exact_dist: np.ndarray, vectors: np.ndarray, queries: np.ndarray,
          ranks: int | None = None) -> np.ndarray:
    """Per query and exact rank (first ``ranks``): whether ``approx`` holds a row at most that far.

    Distances are compared to within the near-duplicate scale (``DUPLICATE_EPS`` x the query's
    squared norm): among copies and quantisations of one model any of them is the answer.
    """
    ranks = exact_dist.shape[1] if ranks is None else ranks
    safe = np.where(approx >= 0, approx, 0)
    diff = vectors[safe] - queries[:, None, :]
    d = np.where(approx >= 0, np.einsum("qkd,qkd->qk", diff, diff), np.inf)
    d.sort(axis=1)
    slack = DUPLICATE_EPS * np.einsum("qd,qd->q", queries, queries)[:, None]
    target = exact_dist[:, :ranks] * (1 + 1e-5) + slack + 1e-12
    # the r-th exact neighbour is found when approx holds at least r rows within its distance
    within = (d[:, None, :] <= target[:, :, None]).sum(axis=2)
    return within >= np.arange(1, ranks + 1)[None, :]


def recall_at_k(approx: np.ndarray, exact_dist: np.ndarray, vectors: np.ndarray, queries: np.ndarray) -> float:
    """Share of the exact k nearest found by ``approx`` (ties at equal distance count as found)."""
    return float(found(approx, exact_dist, vectors, queries).mean())


def tune(index: faiss.Index, vectors: np.ndarray, plan: IndexPlan, k: int, target: float = TARGET_RECALL,
         queries: int = TUNE_QUERIES) -> tuple[IndexPlan, float]:
    """Double ``nprobe`` until, on a sample of queries, recall@k against exact search reaches
    ``target`` and the exact nearest other row is returned for ``TARGET_NEAREST`` of them."""
    if plan.kind == "flat":
        return plan, 1.0
    rng = np.random.default_rng(1)
    q = vectors[rng.choice(len(vectors), size=min(queries, len(vectors)), replace=False)]
    ex_d, _ = exact_knn(vectors, q, k)
    cap = plan.nlist if plan.kind != "hnsw" else 1024
    while True:
        _set_probe(index, plan)
        _, got = _search(index, vectors, q, k, plan)
        hits = found(got, ex_d, vectors, q)
        recall = float(hits.mean())
        if (recall >= target and hits[:, 1].mean() >= TARGET_NEAREST) or plan.nprobe >= cap:
            return plan, recall
        plan = replace(plan, nprobe=min(cap, plan.nprobe * 2))


@dataclass(frozen=True)
class KnnResult:
    """Neighbours of every row (self excluded) and how they were found."""

    dist: np.ndarray  # (n, k) squared L2
    idx: np.ndarray  # (n, k) row numbers, -1 where fewer than k exist
    plan: IndexPlan
    tuned_recall: float


def knn(vectors: np.ndarray, k: int = DEFAULT_K, plan: IndexPlan | None = None) -> KnnResult:
    """For each row its k nearest other rows, with the index chosen (and tuned) automatically."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    dist = np.full((n, k), np.inf, dtype=np.float32)
    idx = np.full((n, k), -1, dtype=np.int64)
    if n < 2:
        return KnnResult(dist, idx, IndexPlan("flat", n, vectors.shape[1] if vectors.ndim == 2 else 0), 1.0)
    plan = plan or choose_index(n, vectors.shape[1])
    index = build_index(vectors, plan)
    plan, recall = tune(index, vectors, plan, k + 1)
    _set_probe(index, plan)
    kk = min(k + 1, n)
    for lo in range(0, n, 65_536):
        d, i = _search(index, vectors, vectors[lo:lo + 65_536], kk, plan)
        rows = np.arange(lo, lo + len(d))
        own = i == rows[:, None]
        # drop self (or, when the index did not return it, the farthest) and keep k
        drop = np.where(own.any(axis=1), np.argmax(own, axis=1), kk - 1)
        keep = np.ones_like(own)
        keep[np.arange(len(d)), drop] = False
        dist[lo:lo + len(d), : kk - 1] = d[keep].reshape(len(d), kk - 1)
        idx[lo:lo + len(d), : kk - 1] = i[keep].reshape(len(d), kk - 1)
    return KnnResult(dist, idx, plan, recall)


def duplicate_groups(vectors: np.ndarray, res: KnnResult, eps: float = DUPLICATE_EPS) -> np.ndarray:
    """Group label of each row (the smallest row of its group): rows joined, transitively, by a
    kNN edge shorter than ``eps`` x their squared norm."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(vectors)
    norms = np.einsum("ij,ij->i", vectors, vectors)
    safe = np.maximum(res.idx, 0)
    exact = np.empty(res.idx.shape, dtype=np.float32)  # compressed indexes return approximate distances
    for lo in range(0, n, 8192):
        diff = vectors[safe[lo:lo + 8192]] - vectors[lo:lo + 8192, None, :]
        exact[lo:lo + 8192] = np.einsum("qkd,qkd->qk", diff, diff)
    close = (res.idx >= 0) & (exact <= eps * np.minimum(norms[:, None], norms[safe]))
    rows, cols = np.nonzero(close)
    if len(rows) == 0:
        return np.arange(n, dtype=np.int64)
    links = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, res.idx[rows, cols])), shape=(n, n))
    _, component = connected_components(links, directed=False)
    smallest = np.full(int(component.max()) + 1, n, dtype=np.int64)
    np.minimum.at(smallest, component, np.arange(n))
    return smallest[component]


def representatives(groups: np.ndarray, priority: np.ndarray | None = None) -> np.ndarray:
    """Per row, the preferred row of its group (lowest ``priority``, then lowest row)."""
    n = len(groups)
    prio = np.zeros(n) if priority is None else np.asarray(priority, dtype=np.float64)
    order = np.lexsort((np.arange(n), prio, groups))
    first = np.ones(n, dtype=bool)
    first[1:] = groups[order][1:] != groups[order][:-1]
    rep_of_group = dict(zip(groups[order][first].tolist(), order[first].tolist(), strict=True))
    return np.asarray([rep_of_group[g] for g in groups.tolist()], dtype=np.int64)


def sketch_priority(dtypes: list[tuple[str, ...]] | list[str], quant: list[str | None]) -> np.ndarray:
    """Which of a group of near-duplicates to search through: unquantised, then higher precision
    (a candidate-search preference only; ``verify`` decides which is the copy)."""
    rank = {"F64": 0, "F32": 1, "BF16": 2, "F16": 2}
    out = []
    for dt, q in zip(dtypes, quant, strict=True):
        names = dt.split(",") if isinstance(dt, str) else dt
        out.append((10 if q else 0) + min((rank.get(d, 5) for d in names if d), default=5))
    return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True)
class CandidateRows:
    """Candidate pairs of one family as row numbers (a < b), and how the search went."""

    a: np.ndarray
    b: np.ndarray
    plan: IndexPlan
    tuned_recall: float
    representatives: int  # rows searched after collapsing near-duplicates


def candidate_rows(vectors: np.ndarray, k: int = DEFAULT_K, priority: np.ndarray | None = None,
                   declared: Iterable[tuple[int, int]] = (), plan: IndexPlan | None = None) -> CandidateRows:
    """Candidate pairs: near-duplicates to their representative, representatives to their k nearest.

    A first search groups near-duplicates (cheap past DUP_IVF_MIN: one probe of an IVF index,
    since duplicates share a cell); the second, chosen and tuned one runs over the representatives.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    if n <= k + 1:  # every other model is among the k nearest: all pairs, no index
        a, b = np.triu_indices(n, 1)
        return CandidateRows(a.astype(np.int64), b.astype(np.int64),
                             IndexPlan("flat", n, vectors.shape[1] if vectors.ndim == 2 else 0), 1.0, n)
    if n < DUP_IVF_MIN and (plan or choose_index(n, vectors.shape[1])).kind == "flat":
        # one exact search serves both passes: duplicates among each row's nearest, and each
        # representative's k nearest other groups as the first distinct groups of its list
        wide = knn(vectors, min(n - 1, SINGLE_PASS_WIDTH * k), choose_index(n, vectors.shape[1], kind="flat"))
        narrow = KnnResult(wide.dist[:, :k], wide.idx[:, :k], wide.plan, wide.tuned_recall)  # as the first pass
        rep = representatives(duplicate_groups(vectors, narrow), priority)
        reps = np.unique(rep)
        near = np.where(wide.idx[reps] >= 0, rep[np.maximum(wide.idx[reps], 0)], -1)
        near[near == reps[:, None]] = -1  # the row's own group
        near = _first_distinct(near, k)
        second = wide
    else:
        if n >= DUP_IVF_MIN:
            first_plan = IndexPlan("ivfflat", n, vectors.shape[1], nlist=max(16, int(math.sqrt(n))), nprobe=1)
            first = knn_with(build_index(vectors, first_plan), vectors, min(k, n - 1), first_plan)
        else:
            first = knn(vectors, min(k, n - 1), choose_index(n, vectors.shape[1], kind="flat"))
        rep = representatives(duplicate_groups(vectors, first), priority)
        reps = np.unique(rep)
        second = knn(vectors[reps], k, plan)
        near = np.where(second.idx >= 0, reps[np.maximum(second.idx, 0)], -1)
    near_a = np.repeat(reps, near.shape[1])
    near_b = near.reshape(-1)
    ok = near_b >= 0
    ga, gb = _group_members(near_a[ok], near_b[ok], rep, priority)
    a = [np.arange(n), near_a, ga]
    b = [rep, near_b, gb]
    extra = np.asarray(list(declared), dtype=np.int64).reshape(-1, 2)
    a.append(extra[:, 0])
    b.append(extra[:, 1])
    aa, bb = np.concatenate(a), np.concatenate(b)
    ok = (bb >= 0) & (aa != bb)
    lo, hi = np.minimum(aa[ok], bb[ok]), np.maximum(aa[ok], bb[ok])
    pairs = np.unique(lo * n + hi)
    return CandidateRows(pairs // n, pairs % n, second.plan, second.tuned_recall, len(reps))


def _first_distinct(m: np.ndarray, k: int) -> np.ndarray:
    """Per row, the first ``k`` distinct non-negative values in their order; -1 elsewhere."""
    order = np.argsort(m, axis=1, kind="stable")
    ordered = np.take_along_axis(m, order, axis=1)
    first_ordered = np.ones(m.shape, dtype=bool)
    first_ordered[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    first = np.empty_like(first_ordered)
    np.put_along_axis(first, order, first_ordered, axis=1)
    keep = first & (m >= 0)
    keep &= np.cumsum(keep, axis=1) <= k
    return np.where(keep, m, -1)


def _group_members(x: np.ndarray, r: np.ndarray, rep: np.ndarray, priority: np.ndarray | None,
                   cap: int = GROUP_FANOUT) -> tuple[np.ndarray, np.ndarray]:
    """For each pair of representatives (x, r), both ways: x with the other members of r's group.

    The search ran over representatives only, so without this a child of a re-upload would meet
    the group's representative but never the original when the two differ; each group passes at
    most ``cap`` members on (in ``representatives``' preference order).
    """
    n = len(rep)
    prio = np.zeros(n) if priority is None else np.asarray(priority, dtype=np.float64)
    order = np.lexsort((np.arange(n), prio, rep))
    order = order[order != rep[order]]  # members other than the representative, grouped by it
    if len(order) == 0 or len(x) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    grouped = rep[order]
    src = np.concatenate([x, r])  # both orientations of each pair
    dst = np.concatenate([r, x])
    start = np.searchsorted(grouped, dst, "left")
    size = np.minimum(np.searchsorted(grouped, dst, "right") - start, cap)
    has = size > 0
    src, start, size = src[has], start[has], size[has]
    offsets = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
    return np.repeat(src, size), order[np.repeat(start, size) + offsets]


def knn_with(index: faiss.Index, vectors: np.ndarray, k: int, plan: IndexPlan) -> KnnResult:
    """``knn`` on a built index, without tuning (the first, duplicate-finding pass)."""
    n = len(vectors)
    kk = min(k + 1, n)
    d, i = _search(index, vectors, vectors, kk, plan)
    own = i == np.arange(n)[:, None]
    drop = np.where(own.any(axis=1), np.argmax(own, axis=1), kk - 1)
    keep = np.ones_like(own)
    keep[np.arange(n), drop] = False
    return KnnResult(d[keep].reshape(n, kk - 1), i[keep].reshape(n, kk - 1), plan, float("nan"))


def nearest(sketches: list[Sketch], k: int = DEFAULT_K) -> list[list[tuple[int, float]]]:
    """For each sketch, its k nearest other sketches (index, squared L2) in the list."""
    if len(sketches) < 2:
        return [[] for _ in sketches]
    res = knn(np.stack([s.embedding for s in sketches]).astype(np.float32), k)
    return [[(int(j), float(d)) for j, d in zip(res.idx[i], res.dist[i], strict=True) if j >= 0]
            for i in range(len(sketches))]


def candidate_pairs(
    sketches: list[Sketch], declared: dict[str, tuple[str, ...]] | None = None, k: int = DEFAULT_K
) -> list[Candidate]:
    """Unordered candidate pairs within one family (``candidate_rows``) plus declared parents present.

    Column-windowed sketches (GPTQ, AWQ: ``sketch.window``) are left out of the embedding search
    (their embeddings count the columns they did not read as zeros) and meet instead their k
    nearest unwindowed members by ``window_distance`` on the columns both read, and their
    declared parents; the pairs among the others are exactly those of the family without them."""
    from lineage_index.indexer.sketch.window import is_windowed, window_distance

    windowed = [s for s in sketches if is_windowed(s)]
    if not windowed:
        return _embedding_pairs(sketches, declared, k)
    whole = [s for s in sketches if not is_windowed(s)]
    out = {(c.a, c.b): c for c in _embedding_pairs(whole, declared, k)}
    by_id = {s.model_id: s for s in sketches}
    win = {s.model_id for s in windowed}

    def add(x: str, y: str, d: float | None = None) -> None:
        a, b = sorted((x, y))
        if (a, b) not in out:
            out[(a, b)] = Candidate(a, b, window_distance(by_id[x], by_id[y]) if d is None else d)

    for w in windowed:
        for d, m in sorted((window_distance(w, s), s.model_id) for s in whole)[:k]:
            add(w.model_id, m, d)
    for c, ps in (declared or {}).items():
        for p in ps:
            if c in by_id and p in by_id and p != c and (c in win or p in win):
                add(c, p)
    return sorted(out.values(), key=lambda c: (c.a, c.b))


def _embedding_pairs(
    sketches: list[Sketch], declared: dict[str, tuple[str, ...]] | None = None, k: int = DEFAULT_K
) -> list[Candidate]:
    declared = declared or {}
    ids = [s.model_id for s in sketches]
    if not ids:
        return []
    position = {m: i for i, m in enumerate(ids)}
    vectors = np.stack([s.embedding for s in sketches]).astype(np.float32)
    rows = [(position[c], position[p]) for c, ps in declared.items() if c in position
            for p in ps if p in position and p != c]
    if len(ids) <= FLAT_MAX:
        # small families: every sketch's own k nearest (exact), no near-duplicate collapsing, so a
        # child of a re-uploaded model still meets both the original and the re-upload
        seen: dict[tuple[str, str], float] = {}
        for i, row in enumerate(nearest(sketches, k + 1)):
            for j, _ in [(j, d) for j, d in row if j != i][:k]:
                seen[tuple(sorted((ids[i], ids[j])))] = 0.0
        for a, b in rows:
            seen[tuple(sorted((ids[a], ids[b])))] = 0.0
        pairs = [(x, y) for x, y in seen]
        return sorted((Candidate(x, y, float(np.sum((vectors[position[x]] - vectors[position[y]]) ** 2)))
                       for x, y in pairs), key=lambda c: (c.a, c.b))
    found_rows = candidate_rows(vectors, k, sketch_priority([s.dtypes for s in sketches],
                                                            [s.quant for s in sketches]), rows)
    out = []
    for a, b in zip(found_rows.a.tolist(), found_rows.b.tolist(), strict=True):
        x, y = sorted((ids[a], ids[b]))
        out.append(Candidate(x, y, float(np.sum((vectors[a] - vectors[b]) ** 2))))
    return sorted(out, key=lambda c: (c.a, c.b))


def group_by_family(sketches: Iterable[Sketch]) -> dict[str, list[Sketch]]:
    groups: dict[str, list[Sketch]] = {}
    for s in sketches:
        groups.setdefault(s.family, []).append(s)
    return groups
