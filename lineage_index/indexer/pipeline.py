"""The whole flow of DESIGN.md as library calls: records -> sketches -> edges (-> graph).

``sketch_all`` fills the sketch store (reading only planned byte ranges, skipping models
whose (id, sha) is already stored); ``recover`` turns sketches into directed typed edges
(candidates -> verify -> assemble -> adapters -> declared reconciliation). Failures are
collected per model; nothing here raises for one bad model. The CLI only calls these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lineage_index.errors import LineageIndexError
from lineage_index.indexer.assemble import assemble_family
from lineage_index.indexer.candidates import DEFAULT_K, candidate_pairs, group_by_family
from lineage_index.indexer.canon import adapter_target_signature, canonical, quant_aux_kind
from lineage_index.indexer.sketch import sketch_model
from lineage_index.indexer.store import SketchStore
from lineage_index.indexer.verify import compare
from lineage_index.records import Edge, Failure, ModelRecord, Sketch

SAME_WEIGHTS = ("copy", "quantized")  # relations the weights cannot always tell apart


@dataclass
class SketchReport:
    sketches: dict[str, Sketch] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    from_store: int = 0
    bytes_read: int = 0
    requests: int = 0


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        disable=not enabled, transient=False,
    )


def sketch_all(
    records: Iterable[ModelRecord | Failure],
    open_reader: Callable[[ModelRecord], object],
    store: SketchStore | None = None,
    *,
    show_progress: bool = False,
    total: int | None = None,
) -> tuple[dict[str, ModelRecord], SketchReport]:
    """Sketch every record (or take its sketch from the store). Returns (records, report)."""
    out = SketchReport()
    recs: dict[str, ModelRecord] = {}
    with _progress(show_progress) as progress:
        task = progress.add_task("sketching", total=total)
        for item in records:
            progress.advance(task)
            if isinstance(item, Failure):
                out.failures.append(item)
                continue
            recs[item.id] = item
            if store is not None:
                store.put_record(item)
            cached = store.get(item.id, item.sha) if store is not None else None
            if cached is not None:
                out.sketches[item.id] = cached
                out.from_store += 1
                continue
            if not item.tensors:
                out.failures.append(Failure(item.id, "no_weights", f"no safetensors weights ({item.weight_format})"))
                continue
            try:
                reader = open_reader(item)
                try:
                    sk = sketch_model(item, reader)
                finally:
                    close = getattr(reader, "close", None)
                    if close is not None:
                        close()
            except LineageIndexError as exc:
                out.failures.append(Failure(item.id, getattr(exc, "kind", "error"), str(exc)))
                continue
            out.sketches[item.id] = sk
            out.bytes_read += sk.bytes_read
            out.requests += sk.requests
            if store is not None:
                store.put(sk)
    return recs, out


def index_scope(
    store: SketchStore, records: dict[str, ModelRecord], sketches: dict[str, Sketch]
) -> tuple[dict[str, ModelRecord], dict[str, Sketch]]:
    """This run's models plus every indexed model of the families they touch.

    Lineage crosses organisations and runs (`ingest --org A`, later `--org B`): recovery sees
    the whole index of each touched family, not only this run's listing. Adapters come along
    when their declared base is in scope.
    """
    families = {s.family for s in sketches.values()}
    all_records = {**store.records(), **records}
    scope_recs = dict(records)
    scope_sketches = dict(sketches)
    adapters = []
    for m, rec in all_records.items():
        if m in scope_recs:
            continue
        sk = store.get(m, rec.sha)
        if sk is None:
            continue
        if sk.family in families:
            scope_recs[m], scope_sketches[m] = rec, sk
        elif sk.kind == "adapter":
            adapters.append((rec, sk))
    for rec, sk in adapters:
        if any(p in scope_sketches for p in declared_parents(rec)):
            scope_recs[rec.id], scope_sketches[rec.id] = rec, sk
    return scope_recs, scope_sketches


def declared_parents(rec: ModelRecord) -> tuple[str, ...]:
    """Declared bases: an adapter's ``base_model_name_or_path`` first (what PEFT loads), then the card's."""
    parents = list(rec.base_models)
    if rec.adapter_config:
        base = rec.adapter_config.get("base_model_name_or_path")
        if isinstance(base, str) and base:
            parents = [base] + [p for p in parents if p != base]
    return tuple(p for p in parents if p != rec.id)


def _adapter_fits(adapter: ModelRecord, base: ModelRecord) -> bool:
    targets = adapter_target_signature(adapter.tensors)
    if not targets:
        return False
    shapes = {}
    for t in base.tensors:
        c = canonical(t.name)
        if len(t.shape) == 2:
            shapes[c.role] = (t.shape[0], t.shape[1])
    if any(quant_aux_kind(t.name) in ("bnb-4bit", "gptq") for t in base.tensors):
        return True  # 4-bit packed bases (QLoRA) hide their shapes: the weights cannot object
    # int8 weights keep the (out, in) shape; GPT-2's Conv1D stores (in, out)
    return all(shapes.get(role) in (shape, shape[::-1]) for role, shape in targets.items())


@dataclass
class Recovery:
    edges: list[Edge]
    roots: list[str]


def recover(
    records: dict[str, ModelRecord], sketches: dict[str, Sketch], *, k: int = DEFAULT_K
) -> Recovery:
    """Directed, typed edges from sketches, reconciled with the declared base models."""
    full = [s for s in sketches.values() if s.kind == "full"]
    declared = {m: declared_parents(r) for m, r in records.items()}
    edges: list[Edge] = []
    roots: list[str] = []
    for _family, members in sorted(group_by_family(full).items()):
        members.sort(key=lambda s: s.model_id)
        cands = candidate_pairs(members, declared, k=k)
        by_id = {s.model_id: s for s in members}
        pairs = [compare(by_id[c.a], by_id[c.b]) for c in cands]
        result = assemble_family(members, pairs, records)
        edges.extend(result.edges)
        roots.extend(result.roots)
    for s in sketches.values():  # adapters: the base is declared; the weights' shapes must fit it
        if s.kind != "adapter":
            continue
        rec = records.get(s.model_id)
        for parent in declared.get(s.model_id, ()):
            base = records.get(parent)
            if rec is not None and base is not None and parent in sketches and _adapter_fits(rec, base):
                edges.append(Edge(s.model_id, parent, "adapter", "both", 0.9, None,
                                  evidence="adapter: LoRA shapes fit the declared base"))
                break
    edges = reconcile_declared(edges, records, sketches)
    return Recovery(edges, roots)


def reconcile_declared(
    edges: list[Edge], records: dict[str, ModelRecord], sketches: dict[str, Sketch]
) -> list[Edge]:
    """Mark recovered edges the card also declares (``both``); keep and flag the others."""
    recovered = {(e.child, e.parent): e for e in edges}
    parents_of: dict[str, list[str]] = {}
    for e in edges:
        parents_of.setdefault(e.child, []).append(e.parent)
    out: list[Edge] = []
    declared_pairs: set[tuple[str, str]] = set()
    for child, rec in sorted(records.items()):
        for parent in declared_parents(rec):
            declared_pairs.add((child, parent))
            if (child, parent) in recovered:
                continue
            relation = rec.base_model_relation or ("adapter" if rec.is_adapter else "finetune")
            if parent not in sketches or child not in sketches:
                out.append(Edge(child, parent, relation, "declared", 0.5, None,
                                evidence="declared; weights of one side not indexed"))
                continue
            found = parents_of.get(child, [])
            a, b = sketches[child], sketches[parent]
            if a.kind == "adapter":
                base = records.get(parent)
                why = ("the LoRA shapes fit it, but another declared base was taken"
                       if base is not None and _adapter_fits(rec, base) else "the LoRA shapes do not fit it")
            elif a.family != b.family:
                why = "architectures differ"
            else:
                f = compare(a, b)
                why = f"related (cos={f.cos_median:.3f}) but not the direct parent" if f.related else (
                    f"weights unrelated (cos={f.cos_median:.3f})")
            out.append(Edge(child, parent, relation, "declared", 0.1, None, evidence=f"contradicted: {why}",
                            contradicted=True, recovered_parent=", ".join(found) or None))
    for e in edges:
        if (e.child, e.parent) in declared_pairs:
            relation = e.relation
            declared_rel = records[e.child].base_model_relation if e.child in records else None
            if relation in SAME_WEIGHTS and declared_rel in SAME_WEIGHTS:
                relation = declared_rel  # a plain dtype cast fits both: the card decides
            e = Edge(e.child, e.parent, relation, "both", e.confidence, e.closeness, e.evidence)
        out.append(e)
    return sorted(out, key=lambda e: (e.child, e.parent))


def asserted_edges(edges: Iterable[Edge]) -> list[Edge]:
    """The edges the weights support (what ``eval`` scores): recovered or confirmed ones.

    Declared-only edges stay in the graph as the card's claim, flagged when contradicted.
    """
    return [e for e in edges if e.source in ("recovered", "both") and not e.contradicted]
