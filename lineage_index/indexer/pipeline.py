"""The whole flow of DESIGN.md as library calls: records -> sketches -> edges (-> graph).

``sketch_all`` fills the sketch store (reading only planned byte ranges, skipping models
whose (id, sha) is already stored), here or as Ray tasks (``fanout``: ``ingest --ray``; the
results are the same either way); ``recover`` (``recover.edges``) turns sketches into directed typed edges
(candidates -> verify -> assemble -> adapters -> declared reconciliation). Failures are
collected per model; nothing here raises for one bad model. The CLI only calls these.

Incremental re-index: ``changed_models`` names the models of a run whose graph entry is stale
(new, newly read, or another sha / status in the graph than now), ``incremental_scope`` takes
them plus the indexed members of the families they touch (and declared parents as read-only
context), so a re-ingest after a few commits re-verifies only those families and rewrites
only their part of the graph.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lineage_index.config import fault_point, stderr_console
from lineage_index.errors import LineageIndexError, TooLargeError
from lineage_index.indexer.recover.crossdepth import block_signature
from lineage_index.indexer.recover.declared import (  # noqa: F401  (the pipeline's public names)
    SAME_WEIGHTS,
    asserted_edges,
    declared_parents,
    reconcile_declared,
    resolve_declared_case,
)
from lineage_index.indexer.recover.edges import Recovery, recover  # noqa: F401
from lineage_index.indexer.sketch.sample import sketch_model
from lineage_index.indexer.sketch.store import SketchStore
from lineage_index.records import Failure, ModelRecord, Sketch

__all__ = [
    "SketchReport", "Scope", "Recovery", "sketch_all", "sketch_one", "source_records", "index_scope",
    "incremental_scope", "changed_models", "recover", "declared_parents", "reconcile_declared",
    "resolve_declared_case", "asserted_edges", "SAME_WEIGHTS",
]


@dataclass
class SketchReport:
    sketches: dict[str, Sketch] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    from_store: int = 0
    bytes_read: int = 0
    requests: int = 0
    fresh: list[str] = field(default_factory=list)  # ids read (sketched) in this run
    damaged: list[str] = field(default_factory=list)  # store entries found damaged and read again


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), TextColumn("{task.fields[status]}", markup=False),
        disable=not enabled, transient=False, console=stderr_console(),
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
    from lineage_index.indexer.read.hub import ordered_map

    known = store.records()

    def one(info):
        if (not isinstance(info, Failure) and not getattr(info, "disabled", False)
                and getattr(info, "sha", None) and getattr(info, "siblings", None) is not None):
            rec = known.get(info.id)
            if (rec is not None and rec.sha == info.sha and rec.source == source.name
                    and rec.location == source.endpoint):
                return rec
        rec = source.record(info)
        if isinstance(rec, ModelRecord):  # kept at once: a crawl killed later does not read it again
            with contextlib.suppress(TooLargeError):  # sketch_all makes that the model's failure
                store.put_record(rec)
        return rec

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
    except (ValueError, KeyError, IndexError, OverflowError) as exc:  # weights no decoder could make sense of
        return Failure(record.id, "bad_weights", f"{record.id}: its weights could not be decoded "
                                                 f"({type(exc).__name__}: {str(exc)[:160]})")


def sketch_all(
    records: Iterable[ModelRecord | Failure],
    open_reader: Callable[[ModelRecord], object],
    store: SketchStore | None = None,
    *,
    show_progress: bool = False,
    total: int | None = None,
    fanout=None,
    status: Callable[[], str] | None = None,
) -> tuple[dict[str, ModelRecord], SketchReport]:
    """Sketch every record (or take its sketch from the store). Returns (records, report).

    ``fanout`` (an ``indexer.fanout.RaySketcher``) runs the reads as Ray tasks instead of
    here; the report is the same, in the same order (results are put in listing order).
    ``status`` gives the progress line's text (the Hub's request budget spent so far).
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
        task = progress.add_task("sketching", total=total, status="")

        def step() -> None:
            progress.update(task, advance=1, **({"status": status()} if status is not None else {}))
        for item in records:
            if isinstance(item, Failure):
                slots.append(("failure", item))
                step()
                continue
            if store is not None:
                try:
                    store.put_record(item)
                except TooLargeError as exc:
                    slots.append(("failure", Failure(item.id, exc.kind, str(exc))))
                    step()
                    continue
            recs[item.id] = item
            cached = store.get(item.id, item.sha) if store is not None else None
            if cached is not None:
                slots.append(("store", cached))
                step()
                continue
            if not item.tensors:
                slots.append(("failure", Failure(item.id, item.weight_error_kind or "no_weights",
                                                 item.weight_error or f"no weights to read ({item.weight_format})")))
                step()
                continue
            slots.append(("read", item.id))
            if fanout is None:
                finish(item.id, sketch_one(item, open_reader))
                step()
                fault_point(f"after-sketch-{len(results)}")  # crash tests: kill -9 part-way through a crawl
            else:
                for model_id, result in fanout.submit(item):
                    finish(model_id, result)
                    step()
        if fanout is not None:
            for model_id, result in fanout.finish():
                finish(model_id, result)
                step()
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
    if store is not None:
        out.damaged = list(store.damaged)
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
