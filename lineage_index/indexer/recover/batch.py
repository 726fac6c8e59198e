"""Recovery over a packed sketch store at hub scale: family by family, nothing global in memory.

``recover_packed(store)`` runs, for each full-model family of the packed layout, the stages of
``pipeline.recover`` with their batch forms: candidates (``candidates.candidate_rows``: the
index chosen and tuned per family, near-duplicates collapsed), verification of the candidate
pairs only (``vectorised.compare_pairs``, the same features as ``verify.compare``), assembly
(``assemble.assemble_family`` with the batch merge screen and the array arborescence) and the
reconciliation of declared base models (``declared.reconcile_declared`` on the family, with
out-of-family declared parents as context). Adapters come last: their declared base must be
indexed and its shapes must fit (``declared.adapter_fits``). One family's samples are in
memory at a time; the edges are the output. Per-stage wall and CPU seconds are recorded
(``StageClock``). Nothing here talks to Neo4j.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lineage_index.indexer.recover.arborescence import arborescence_edges
from lineage_index.indexer.recover.assemble import assemble_family
from lineage_index.indexer.recover.candidates import (
    DEFAULT_K,
    CandidateRows,
    candidate_rows,
    sketch_priority,
)
from lineage_index.indexer.recover.declared import (
    adapter_fits,
    declared_parents,
    reconcile_declared,
)
from lineage_index.indexer.recover.vectorised import compare_pairs, family_stats, merge_screen
from lineage_index.indexer.sketch.packed import PackedFamily
from lineage_index.indexer.sketch.store import SketchStore
from lineage_index.records import Edge, ModelRecord, Sketch


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


@dataclass
class StageClock:
    """Wall and CPU seconds per stage, accumulated over families."""

    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    def run(self, stage: str, fn: Callable, *args, **kwargs):
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            self.wall[stage] = self.wall.get(stage, 0.0) + time.perf_counter() - w0
            self.cpu[stage] = self.cpu.get(stage, 0.0) + time.process_time() - c0


@dataclass
class ScaleRecovery:
    edges: list[Edge]
    roots: list[str]
    clock: StageClock
    families: int = 0
    models: int = 0
    pairs: int = 0
    related: int = 0
    merge_fits: int = 0
    index_kinds: dict[str, int] = field(default_factory=dict)
    tuned_recall_min: float = 1.0
    largest_family: int = 0


def _stub(model_id: str, family: str, kind: str) -> Sketch:
    """A sketch that only says which family a model is in (what reconciliation looks at first)."""
    return Sketch(model_id, None, 0, family, family, kind, {}, np.zeros(0, dtype=np.float32))


def recover_packed(
    store: SketchStore, *, k: int = DEFAULT_K, on_family: Callable[[PackedFamily, CandidateRows], None] | None = None,
    progress: Callable[[int, int], None] | None = None, clock: StageClock | None = None,
) -> ScaleRecovery:
    """Directed typed edges for every model of ``store``'s packed layout (see the module docstring)."""
    packed = store.packed
    clock = clock if clock is not None else StageClock()
    out = ScaleRecovery([], [], clock)
    chunks = [(c["family"], c["kind"], c["n"]) for s in packed.manifest["shards"] for c in s["chunks"]]
    sizes: dict[str, int] = {}
    kinds: dict[str, str] = {}
    for fam_name, kind, n in chunks:
        sizes[fam_name] = sizes.get(fam_name, 0) + n
        kinds[fam_name] = kind
    family_of: dict[str, str] = {}
    # adapters first, as metadata: which full models their declared bases are
    adapter_recs: list[ModelRecord] = []
    for fam_name in (f for f, kd in kinds.items() if kd == "adapter"):  # manifest order: each shard read once
        fam = packed.load_family(fam_name)
        for m, rec in zip(fam.model_ids, fam.records, strict=True):
            family_of[m] = fam_name
            if rec is not None:
                adapter_recs.append(rec)
    wanted = {p for rec in adapter_recs for p in declared_parents(rec)}
    bases: dict[str, ModelRecord] = {}
    for fam_name in (f for f, kd in kinds.items() if kd == "full"):  # every model's family, for context
        for m in packed.load_family(fam_name, with_records=False).model_ids:
            family_of[m] = fam_name
    done = 0
    total = sum(sizes.values())
    for fam_name in (f for f, kd in kinds.items() if kd == "full"):
        fam = packed.load_family(fam_name)
        fam.values = np.asarray(fam.values)  # this family's samples in memory, once
        fam.embedding = np.asarray(fam.embedding)
        whole = ~np.isnan(fam.values).any(axis=1)
        if not whole.all():  # column windows (GPTQ, AWQ: sketch.window) are verified in memory only
            fam = fam.subset(np.nonzero(whole)[0])
        recs = {m: r for m, r in zip(fam.model_ids, fam.records, strict=True) if r is not None}
        bases.update({m: r for m, r in recs.items() if m in wanted})
        edges, roots = _recover_family(fam, recs, family_of, kinds, k, clock, out, on_family)
        out.edges.extend(edges)
        out.roots.extend(roots)
        out.families += 1
        out.models += len(fam)
        out.largest_family = max(out.largest_family, len(fam))
        done += len(fam)
        if progress is not None:
            progress(done, total)
        del fam
    clock.run("assemble", _adapters, out, adapter_recs, bases, family_of, kinds)
    return out


def _recover_family(fam: PackedFamily, recs: dict[str, ModelRecord], family_of: dict[str, str],
                    kinds: dict[str, str], k: int, clock: StageClock, out: ScaleRecovery,
                    on_family: Callable[[PackedFamily, CandidateRows], None] | None
                    ) -> tuple[list[Edge], list[str]]:
    pos = {m: i for i, m in enumerate(fam.model_ids)}
    declared_rows = [(pos[m], pos[p]) for m, r in recs.items() for p in declared_parents(r)
                     if p in pos and p != m]
    priority = sketch_priority(fam.meta["dtypes"], fam.meta["quant"])
    cands = clock.run("candidates", candidate_rows, fam.embedding, k, priority, declared_rows)
    out.index_kinds[cands.plan.kind] = out.index_kinds.get(cands.plan.kind, 0) + 1
    out.tuned_recall_min = min(out.tuned_recall_min, cands.tuned_recall)
    if on_family is not None:
        on_family(fam, cands)
    stats = clock.run("verify", family_stats, fam)
    table = clock.run("verify", compare_pairs, fam, cands.a, cands.b, stats)
    related_rows = np.nonzero(table.related)[0]
    out.pairs += len(table)
    out.related += len(related_rows)

    def assemble() -> tuple[list[Edge], list[str]]:
        pairs = [table.features(int(i)) for i in related_rows]
        sketches = fam.sketches()
        screened: list[int] = []

        def screen(queries: list[tuple[str, list[str]]]) -> set[str]:
            allowed = merge_screen(fam, queries)
            screened.append(len(allowed))
            return allowed

        result = assemble_family(sketches, pairs, recs, merge_screen=screen, arborescence=arborescence_edges)
        out.merge_fits += sum(screened)
        context_recs: dict[str, ModelRecord] = {}
        context_sk: dict[str, Sketch] = {}
        for r in recs.values():
            for p in declared_parents(r):
                if p not in pos and p in family_of:
                    context_sk[p] = _stub(p, family_of[p], kinds[family_of[p]])
        in_family = {s.model_id: s for s in sketches}
        edges = reconcile_declared(result.edges, recs, in_family, context_recs, context_sk)
        return edges, result.roots

    return clock.run("assemble", assemble)


def _adapters(out: ScaleRecovery, adapters: list[ModelRecord], bases: dict[str, ModelRecord],
              family_of: dict[str, str], kinds: dict[str, str]) -> None:
    """Adapter edges: the declared base is indexed and the LoRA shapes fit it (``pipeline.recover``)."""
    edges: list[Edge] = []
    for rec in adapters:
        for parent in declared_parents(rec):
            base = bases.get(parent)
            if base is not None and adapter_fits(rec, base):
                edges.append(Edge(rec.id, parent, "adapter", "both", 0.9, None,
                                  evidence="adapter: LoRA shapes fit the declared base"))
                break
    recs = {r.id: r for r in adapters}
    sketches = {r.id: _stub(r.id, family_of.get(r.id, "adapter"), "adapter") for r in adapters}
    context = {p: _stub(p, family_of[p], kinds[family_of[p]]) for r in adapters for p in declared_parents(r)
               if p in family_of and p not in sketches}
    out.edges.extend(reconcile_declared(edges, recs, sketches, dict(bases), context))


def edges_json(edges: list[Edge]) -> str:
    return json.dumps([e.__dict__ for e in edges])
