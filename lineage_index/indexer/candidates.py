"""Candidate pairs by nearest-neighbour search over sketch embeddings, per family.

FAISS, exact (``IndexFlatL2``) while a family is small and IVF-Flat past ``IVF_THRESHOLD``
sketches; on a CUDA machine with faiss-gpu the index is moved to the GPU automatically.
Declared parents are always added as candidates. This module decides nothing about lineage:
it only proposes pairs for ``verify``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import faiss
import numpy as np

from lineage_index.records import Candidate, Sketch

IVF_THRESHOLD = 20_000  # exact search below this many sketches in a family
DEFAULT_K = 10


def _gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def build_index(vectors: np.ndarray) -> faiss.Index:
    """A FAISS index for one family: exact when small, IVF when large, on the GPU if present."""
    n, dim = vectors.shape
    if n < IVF_THRESHOLD:
        index: faiss.Index = faiss.IndexFlatL2(dim)
    else:
        nlist = int(4 * math.sqrt(n))
        quantizer = faiss.IndexFlatL2(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist)
        index.train(vectors)
        index.nprobe = max(8, nlist // 16)
    if _gpu_available():  # pragma: no cover - exercised on GPU machines only
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(vectors)
    return index


def nearest(sketches: list[Sketch], k: int = DEFAULT_K) -> list[list[tuple[int, float]]]:
    """For each sketch, its k nearest other sketches (index, squared L2) in the list."""
    if len(sketches) < 2:
        return [[] for _ in sketches]
    vectors = np.ascontiguousarray(np.stack([s.embedding for s in sketches]).astype(np.float32))
    index = build_index(vectors)
    kk = min(k + 1, len(sketches))
    dist, idx = index.search(vectors, kk)
    out: list[list[tuple[int, float]]] = []
    for i in range(len(sketches)):
        row = [(int(j), float(d)) for j, d in zip(idx[i], dist[i], strict=True) if j >= 0 and j != i]
        out.append(row[:k])
    return out


def candidate_pairs(
    sketches: list[Sketch], declared: dict[str, tuple[str, ...]] | None = None, k: int = DEFAULT_K
) -> list[Candidate]:
    """Unordered candidate pairs within one family: kNN pairs plus declared parents present."""
    declared = declared or {}
    ids = [s.model_id for s in sketches]
    position = {m: i for i, m in enumerate(ids)}
    seen: dict[tuple[str, str], float] = {}
    for i, row in enumerate(nearest(sketches, k)):
        for j, d in row:
            pair = tuple(sorted((ids[i], ids[j])))
            seen[pair] = min(d, seen.get(pair, math.inf))  # type: ignore[index]
    for child, parents in declared.items():
        for parent in parents:
            if child in position and parent in position and child != parent:
                pair = tuple(sorted((child, parent)))
                if pair not in seen:
                    a, b = sketches[position[child]], sketches[position[parent]]
                    seen[pair] = float(np.sum((a.embedding - b.embedding) ** 2))  # type: ignore[index]
    return [Candidate(a, b, d) for (a, b), d in sorted(seen.items())]


def group_by_family(sketches: Iterable[Sketch]) -> dict[str, list[Sketch]]:
    groups: dict[str, list[Sketch]] = {}
    for s in sketches:
        groups.setdefault(s.family, []).append(s)
    return groups
