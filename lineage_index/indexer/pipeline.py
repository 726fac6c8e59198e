"""The whole flow of DESIGN.md as library calls: records -> sketches -> edges (-> graph).

``sketch_all`` fills the sketch store (reading only planned byte ranges, skipping models
whose (id, sha) is already stored), here or as Ray tasks (``fanout``: ``ingest --ray``; the
results are the same either way); ``recover`` turns sketches into directed typed edges
(candidates -> verify -> assemble -> adapters -> declared reconciliation). Failures are
collected per model; nothing here raises for one bad model. The CLI only calls these.

Incremental re-index: ``changed_models`` names the models of a run whose graph entry is stale
(new, newly read, or another sha / status in the graph than now), ``incremental_scope`` takes
them plus the indexed members of the families they touch (and declared parents as read-only
context), so a re-ingest after a few commits re-verifies only those families and rewrites
only their part of the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lineage_index.errors import LineageIndexError
from lineage_index.indexer.assemble import assemble_family, collection_time_share
from lineage_index.indexer.candidates import DEFAULT_K, candidate_pairs, group_by_family
from lineage_index.indexer.canon import adapter_target_signature, canonical, quant_aux_kind
from lineage_index.indexer.crossdepth import block_signature, cross_depth_edges
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
    fresh: list[str] = field(default_factory=list)  # ids read (sketched) in this run


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        disable=not enabled, transient=False,
    )


def source_records(source, store: SketchStore | None) -> Iterable[ModelRecord | Failure]:
    """The records of ``source``, without reading a Hub model again whose (id, sha) is known.

    A Hub listing names each model's commit sha; when the store holds that model's record at
    that sha (same endpoint), the record is taken from the store and no byte of the repository
    is read (headers and small files included). Other sources are read as they are (their
    records come from local files). Hub settings changed without a commit (gating) are picked
    up by a full re-ingest.
    """
    if store is None or not (hasattr(source, "iter_infos") and hasattr(source, "record")):
        return source.iter_records()
    from lineage_index.indexer.sources_hub import ordered_map

    known = store.records()

    def one(info):
        if (not isinstance(info, Failure) and not getattr(info, "disabled", False)
                and getattr(info, "sha", None) and getattr(info, "siblings", None) is not None):
            rec = known.get(info.id)
            if (rec is not None and rec.sha == info.sha and rec.source == source.name
                    and rec.location == source.endpoint):
                return rec
        return source.record(info)

    return ordered_map(one, source.iter_infos(), source.max_workers)


def sketch_one(record: ModelRecord, open_reader: Callable[[ModelRecord], object]) -> Sketch | Failure:
    """Sketch one record through a reader of its own; a read error becomes a ``Failure``."""
    try:
        reader = open_reader(record)
        try:
            return sketch_model(record, reader)
        finally:
            close = getattr(reader, "close", None)
            if close is not None:
                close()
    except LineageIndexError as exc:
        return Failure(record.id, getattr(exc, "kind", "error"), str(exc))


def sketch_all(
    records: Iterable[ModelRecord | Failure],
    open_reader: Callable[[ModelRecord], object],
    store: SketchStore | None = None,
    *,
    show_progress: bool = False,
    total: int | None = None,
    fanout=None,
) -> tuple[dict[str, ModelRecord], SketchReport]:
    """Sketch every record (or take its sketch from the store). Returns (records, report).

    ``fanout`` (an ``indexer.fanout.RaySketcher``) runs the reads as Ray tasks instead of
    here; the report is the same, in the same order (results are put in listing order).
    """
    out = SketchReport()
    recs: dict[str, ModelRecord] = {}
    slots: list[tuple[str, object]] = []  # ("failure", Failure) | ("store", Sketch) | ("read", id)
    results: dict[str, Sketch | Failure] = {}

    def finish(model_id: str, result: Sketch | Failure) -> None:
        results[model_id] = result
        if store is not None and isinstance(result, Sketch):
            store.put(result)

    with _progress(show_progress) as progress:
        task = progress.add_task("sketching", total=total)
        for item in records:
            if isinstance(item, Failure):
                slots.append(("failure", item))
                progress.advance(task)
                continue
            recs[item.id] = item
            if store is not None:
                store.put_record(item)
            cached = store.get(item.id, item.sha) if store is not None else None
            if cached is not None:
                slots.append(("store", cached))
                progress.advance(task)
                continue
            if not item.tensors:
                slots.append(("failure", Failure(item.id, "no_weights",
                                                 f"no safetensors weights ({item.weight_format})")))
                progress.advance(task)
                continue
            slots.append(("read", item.id))
            if fanout is None:
                finish(item.id, sketch_one(item, open_reader))
                progress.advance(task)
            else:
                for model_id, result in fanout.submit(item):
                    finish(model_id, result)
                    progress.advance(task)
        if fanout is not None:
            for model_id, result in fanout.finish():
                finish(model_id, result)
                progress.advance(task)
    for kind, value in slots:
        if kind == "failure":
            out.failures.append(value)  # type: ignore[arg-type]
        elif kind == "store":
            sk = value
            out.sketches[sk.model_id] = sk  # type: ignore[attr-defined]
            out.from_store += 1
        else:
            result = results[value]  # type: ignore[index]
            if isinstance(result, Failure):
                out.failures.append(result)
                continue
            out.sketches[result.model_id] = result
            out.fresh.append(result.model_id)
            out.bytes_read += result.bytes_read
            out.requests += result.requests
    return recs, out


def index_scope(
    store: SketchStore, records: dict[str, ModelRecord], sketches: dict[str, Sketch]
) -> tuple[dict[str, ModelRecord], dict[str, Sketch]]:
    """This run's models plus every indexed model of the families they touch.

    Lineage crosses organisations and runs (`ingest --org A`, later `--org B`): recovery sees
    the whole index of each touched family, not only this run's listing. Adapters come along
    when their declared base is in scope.
    """
    scope_recs, scope_sketches, _, _ = _family_scope(store, {**store.records(), **records}, records, sketches)
    return scope_recs, scope_sketches


def _family_scope(
    store: SketchStore, all_records: dict[str, ModelRecord], records: dict[str, ModelRecord],
    sketches: dict[str, Sketch],
) -> tuple[dict[str, ModelRecord], dict[str, Sketch], dict[str, ModelRecord], dict[str, Sketch]]:
    """Scope records and sketches, then the indexed models of the other families with the same
    block design (another depth: the sources a pruned or passthrough model is looked up in)."""
    families = {s.family for s in sketches.values()}
    blocks = {block_signature(s.family_desc) for s in sketches.values() if s.kind == "full"}
    scope_recs = dict(records)
    scope_sketches = dict(sketches)
    block_recs: dict[str, ModelRecord] = {}
    block_sketches: dict[str, Sketch] = {}
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
        elif block_signature(sk.family_desc) in blocks:
            block_recs[m], block_sketches[m] = rec, sk
    for rec, sk in adapters:
        if any(p in scope_sketches for p in declared_parents(rec)):
            scope_recs[rec.id], scope_sketches[rec.id] = rec, sk
    return scope_recs, scope_sketches, block_recs, block_sketches


def changed_models(
    records: dict[str, ModelRecord], report: SketchReport, graph_state: dict[str, tuple[str | None, str | None]]
) -> set[str]:
    """Models of this run whose graph entry is stale: read in this run, absent from the graph,
    or stored there with another sha or status (``graph_state``: id -> (sha, status))."""
    out = set(report.fresh)
    for m, rec in records.items():
        status = "indexed" if m in report.sketches else "metadata-only"
        if graph_state.get(m) != (rec.sha, status):
            out.add(m)
    return out


@dataclass
class Scope:
    """What an incremental re-index recovers and writes, and what it may only look at.

    ``records``/``sketches``: the changed models, every indexed member of the families they
    touch, and adapters whose declared base is among them: their nodes and edges are
    rewritten. ``context_records``/``context_sketches``: declared parents outside that set, and
    the indexed models of the same block design at other depths (sources of a pruned or
    passthrough root), read (to check a declaration or an adapter's fit, to match layers) but
    neither verified again nor written.
    """

    records: dict[str, ModelRecord]
    sketches: dict[str, Sketch]
    context_records: dict[str, ModelRecord]
    context_sketches: dict[str, Sketch]
    families: set[str]


def incremental_scope(
    store: SketchStore, records: dict[str, ModelRecord], sketches: dict[str, Sketch], changed: set[str]
) -> Scope:
    """The part of the index a re-ingest with ``changed`` models must recover again."""
    known = {**store.records(), **records}
    scope_recs, scope_sketches, ctx_recs, ctx_sketches = _family_scope(
        store, known, {m: r for m, r in records.items() if m in changed},
        {m: s for m, s in sketches.items() if m in changed})
    for rec in list(scope_recs.values()):
        for parent in declared_parents(rec):
            if parent in scope_recs or parent in ctx_recs or parent not in known:
                continue
            prec = known[parent]
            ctx_recs[parent] = prec
            sk = sketches.get(parent) or store.get(parent, prec.sha)
            if sk is not None:
                ctx_sketches[parent] = sk
    families = {s.family for s in scope_sketches.values() if s.kind == "full"}
    return Scope(scope_recs, scope_sketches, ctx_recs, ctx_sketches, families)


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
    families: list[str] = field(default_factory=list)  # families verified (candidates + verify)
    pairs: int = 0  # candidate pairs compared


def recover(
    records: dict[str, ModelRecord], sketches: dict[str, Sketch], *, k: int = DEFAULT_K,
    context_records: dict[str, ModelRecord] | None = None,
    context_sketches: dict[str, Sketch] | None = None,
) -> Recovery:
    """Directed, typed edges from sketches, reconciled with the declared base models.

    Edges are recovered for ``records``/``sketches``; ``context_*`` (declared parents outside
    them, see ``Scope``) are looked at to judge a declaration or an adapter's fit, never
    verified again.
    """
    records = resolve_declared_case(records, {*records, *sketches, *(context_records or {}), *(context_sketches or {})})
    all_records = {**(context_records or {}), **records}
    all_sketches = {**(context_sketches or {}), **sketches}
    full = [s for s in sketches.values() if s.kind == "full"]
    declared = {m: declared_parents(r) for m, r in records.items()}
    edges: list[Edge] = []
    roots: list[str] = []
    families: list[str] = []
    n_pairs = 0
    verified: list[tuple[str, list[Sketch], list]] = []
    for family, members in sorted(group_by_family(full).items()):
        members.sort(key=lambda s: s.model_id)
        cands = candidate_pairs(members, declared, k=k)
        by_id = {s.model_id: s for s in members}
        verified.append((family, members, [compare(by_id[c.a], by_id[c.b]) for c in cands]))
    time_prior = collection_time_share([pairs for _, _, pairs in verified], records)
    for family, members, pairs in verified:
        result = assemble_family(members, pairs, records, time_prior=time_prior)
        edges.extend(result.edges)
        roots.extend(result.roots)
        families.append(family)
        n_pairs += len(pairs)
    # a family is one depth: its roots may come from another depth (pruned, passthrough, up-scaled)
    copies = {e.child for e in edges if e.relation in SAME_WEIGHTS}
    pool = full + [s for m, s in (context_sketches or {}).items() if s.kind == "full" and m not in sketches]
    depth_edges = cross_depth_edges(pool, roots, all_records, time_prior, copies)
    edges.extend(depth_edges)
    depth_children = {e.child for e in depth_edges}
    roots = [r for r in roots if r not in depth_children]
    for s in sketches.values():  # adapters: the base is declared; the weights' shapes must fit it
        if s.kind != "adapter":
            continue
        rec = records.get(s.model_id)
        for parent in declared.get(s.model_id, ()):
            base = all_records.get(parent)
            if rec is not None and base is not None and parent in all_sketches and _adapter_fits(rec, base):
                edges.append(Edge(s.model_id, parent, "adapter", "both", 0.9, None,
                                  evidence="adapter: LoRA shapes fit the declared base"))
                break
    edges = reconcile_declared(edges, records, sketches, context_records, context_sketches)
    return Recovery(edges, roots, families, n_pairs)


def resolve_declared_case(records: dict[str, ModelRecord], known: set[str]) -> dict[str, ModelRecord]:
    """Declared base models spelled with another case than an indexed id (the Hub resolves repo
    ids case-insensitively: ``Meta-Llama/llama-3-8b`` is ``meta-llama/Llama-3-8B``) take the
    indexed spelling; an id matching several indexed ids by case is left as written."""
    lower: dict[str, list[str]] = {}
    for m in known:
        lower.setdefault(m.lower(), []).append(m)
    out = dict(records)
    for m, rec in records.items():
        fixed = tuple(b if b in known or len(lower.get(b.lower(), [])) != 1 else lower[b.lower()][0]
                      for b in rec.base_models)
        if fixed != rec.base_models:
            out[m] = replace(rec, base_models=tuple(dict.fromkeys(fixed)))
    return out


def reconcile_declared(
    edges: list[Edge], records: dict[str, ModelRecord], sketches: dict[str, Sketch],
    context_records: dict[str, ModelRecord] | None = None,
    context_sketches: dict[str, Sketch] | None = None,
) -> list[Edge]:
    """Mark recovered edges the card also declares (``both``); keep and flag the others.

    Declarations of ``records`` are judged; ``context_*`` only supply the parents' side.
    """
    all_records = {**(context_records or {}), **records}
    sketches = {**(context_sketches or {}), **sketches}
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
                base = all_records.get(parent)
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
