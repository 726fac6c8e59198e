"""Public library facade: what each CLI command does, as plain functions.

``make_source`` picks the source from the user's options, ``ingest`` runs the whole flow
and writes the graph, ``export_edges`` reads the edges back. The CLI only parses options,
calls one of these and formats the result; everything is scriptable from Python.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lineage_index.errors import UsageError, redact
from lineage_index.indexer.impute.metadata import impute, imputed_props, read_license_texts
from lineage_index.indexer.pipeline import (
    Recovery,
    changed_models,
    incremental_scope,
    recover,
    sketch_all,
    source_records,
)
from lineage_index.indexer.read.sources import DirSource, HfCacheSource, Source
from lineage_index.indexer.sketch.store import SketchStore
from lineage_index.records import Edge, Failure, ModelRecord, Sketch
from lineage_index.schema.graph import model_props  # noqa: F401  (public here too)


def make_source(
    *,
    org: str | list[str] | None = None,
    search: str | None = None,
    models: list[str] | None = None,
    directory: Path | None = None,
    hf_cache: bool | Path = False,
    endpoint: str | None = None,
    token: str | None = None,
    everything: bool = False,
    limit: int | None = None,
    max_requests: str | None = None,
) -> Source:
    """The one source the options name (exactly one of hub / dir / hf-cache)."""
    hub = bool(org or search or models or everything)
    chosen = sum([hub, directory is not None, bool(hf_cache)])
    if chosen != 1:
        raise UsageError("name exactly one source: --org/--search/--models/--all (Hub), --dir, or --hf-cache")
    if limit is not None and not (org or search or everything):
        raise UsageError("--limit applies to a Hub listing (--org, --search or --all)")
    if directory is not None:
        if not Path(directory).is_dir():
            raise UsageError(f"--dir {directory}: not a directory")
        return DirSource(directory)
    if hf_cache:
        return HfCacheSource(None if hf_cache is True else hf_cache)
    from lineage_index.indexer.read.hub import HubSource

    for model in models or ():
        from lineage_index.indexer.read.hub import listing_info

        bad = listing_info({"id": model})
        if getattr(bad, "kind", None) == "bad_listing_entry":
            raise UsageError(f"--models {model[:100]!r}: not a Hub model id (org/name, letters, digits, '-', '_', '.')")
    return HubSource(org=org, search=search, models=models, endpoint=endpoint, token=token, everything=everything,
                     limit=limit, max_requests=max_requests)


@dataclass
class CrawlPlan:
    """What ingesting a Hub listing will cost, estimated before reading any weight."""

    models: int
    from_store: int  # listed models whose (id, sha) the store already holds: no request
    failures: int  # listing entries that cannot be read
    requests: dict[str, int]  # bucket -> requests (the listing's own pages included)
    quotas: dict[str, int]
    window_s: float

    def seconds(self, bucket: str) -> float:
        """Time the bucket's requests take at its quota: the first window's worth goes at once."""
        quota = self.quotas.get(bucket)
        need = self.requests.get(bucket, 0)
        return 0.0 if not quota or need <= quota else (need - quota) / quota * self.window_s


def plan(source: Source, store: SketchStore | None = None) -> CrawlPlan:
    """List ``source`` (a Hub source) and estimate the requests its ingest will send per bucket
    and how long the Hub's rate limits make them take; reads no file."""
    if not hasattr(source, "planned_requests"):
        raise UsageError("--plan estimates Hub requests: use it with --org, --search, --models or --all")
    store = store if store is not None else SketchStore()
    known = store.records()
    budget = source.budget  # type: ignore[attr-defined]
    before = dict(budget.sent)
    totals: dict[str, int] = {}
    models = stored = failures = 0
    for info in source.iter_infos():  # type: ignore[attr-defined]
        if isinstance(info, Failure):
            failures += 1
            continue
        models += 1
        rec = known.get(info.id)
        if rec is not None and rec.sha == info.sha and rec.location == source.endpoint:  # type: ignore[attr-defined]
            stored += 1
            continue
        for bucket, n in source.planned_requests(info).items():  # type: ignore[attr-defined]
            totals[bucket] = totals.get(bucket, 0) + n
    for bucket, n in budget.sent.items():  # the listing pages just spent
        if bucket != "cdn":
            totals[bucket] = totals.get(bucket, 0) + n - before.get(bucket, 0)
    return CrawlPlan(models, stored, failures, totals, dict(budget.limits.quotas), budget.limits.window_s)


@dataclass
class IngestSummary:
    models: int
    sketched: int
    from_store: int
    failures: list[Failure]
    edges: list[Edge]
    bytes_read: int
    requests: int
    graph_written: bool
    deleted_edges: int = 0
    roots: list[str] = field(default_factory=list)
    graph_load: str | None = None  # "bulk" | "bolt" | None (nothing written)
    rewritten: list[str] = field(default_factory=list)  # models whose nodes and edges were rewritten
    reverified_families: list[str] = field(default_factory=list)
    behaviour: Any = None  # behaviour.tier.TierResult when the opt-in behaviour tier ran
    damaged: list[str] = field(default_factory=list)  # sketch-store entries found damaged and read again
    hub_requests: dict[str, int] = field(default_factory=dict)  # Hub requests sent, by bucket (api, resolvers, cdn)

    def edges_by(self, attr: str) -> dict[str, int]:
        return dict(Counter(getattr(e, attr) for e in self.edges))

    @property
    def contradicted(self) -> list[Edge]:
        return [e for e in self.edges if e.contradicted]


def compute_roots(
    edges: list[Edge], model_ids: list[str], known_roots: dict[str, str] | None = None
) -> dict[str, str]:
    """Root of each model along asserted parent edges (first parent; cycles stop safely).

    A walk that leaves ``model_ids`` ends at that model's stored root (``known_roots``) if known.
    """
    parent: dict[str, str] = {}
    for e in sorted(edges, key=lambda e: (e.child, -e.confidence, e.parent)):
        if e.is_lineage and e.child not in parent:
            parent[e.child] = e.parent
    roots: dict[str, str] = {}
    for m in model_ids:
        seen, cur = {m}, m
        while cur in parent and parent[cur] not in seen:
            cur = parent[cur]
            seen.add(cur)
        roots[m] = (known_roots or {}).get(cur, cur)
    return roots


def write_graph(
    conn, records: dict[str, ModelRecord], sketches: dict[str, Sketch], failures: list[Failure],
    recovery: Recovery, license_texts: dict[str, str] | None = None, *,
    graph_load: str | None = None, known_roots: dict[str, str] | None = None,
    impute_records: dict[str, ModelRecord] | None = None,
):
    """Write models (with imputed metadata), failures and edges; returns the ``bulk.GraphLoad``.

    ``graph_load``: auto | bulk | bolt (``schema.bulk.choose_method``: the initial load of a large
    index into the empty managed Neo4j goes through neo4j-admin's bulk importer, the rest through
    the batched Bolt writer). ``impute_records``: the records imputation sees (hub-wide votes),
    when more than ``records`` (an incremental re-index writes fewer models than it lists).
    """
    from lineage_index.schema.bulk import load_graph

    roots = compute_roots(recovery.edges, list(records), known_roots)
    imp = imputed_props(impute({**(impute_records or {}), **records}, recovery.edges, license_texts))
    rows = [{"id": m, "props": {**model_props(r, sketches.get(m), roots.get(m)), **imp.get(m, {})}}
            for m, r in records.items()]
    rows += [{"id": f.model_id, "props": {"status": "failed", "failure": f.kind, "failure_message": redact(f.message)}}
             for f in failures if not f.model_id.startswith("<")]  # "<listing>" names the run, not a model
    return load_graph(conn, rows, recovery.edges, child_ids=list(records), method=graph_load)


def ingest(
    source: Source,
    *,
    store: SketchStore | None = None,
    conn=None,
    show_progress: bool = False,
    ray: bool | str = False,
    graph_load: str | None = None,
    full: bool = False,
    behaviour: Any = None,
) -> IngestSummary:
    """Run sources -> sketch -> recover and, when ``conn`` is given, write the graph.

    ``ray``: read the sketches as Ray tasks (True: a local Ray started on demand; a string: the
    cluster address). With a graph, only models whose graph entry is stale (new, re-read, other
    sha or status) and the families they touch are recovered and rewritten (``full``: all).
    ``behaviour`` (True or ``behaviour.tier.BehaviourOptions``): the opt-in behaviour tier runs on
    every listed model (as with ``full``) whose full weights are at hand locally; without it the
    graph is exactly the weight tier's.
    """
    store = store if store is not None else SketchStore()
    fanout = None
    if ray:
        from lineage_index.indexer.sketch.fanout import make_sketcher

        fanout = make_sketcher(source, address=ray if isinstance(ray, str) else None)
    try:
        budget = getattr(source, "budget", None)
        run_records, report = sketch_all(source_records(source, store), source.open_reader, store,
                                         show_progress=show_progress, fanout=fanout,
                                         status=budget.describe if budget is not None else None)
    finally:
        if fanout is not None:
            fanout.close()
    changed = set(run_records)
    writer = None
    if conn is not None:
        from lineage_index.schema.writer import GraphWriter

        writer = GraphWriter(conn.driver(), conn.database)
        if not full and not behaviour:
            changed = changed_models(run_records, report, writer.model_state(list(run_records)))
    scope = incremental_scope(store, run_records, report.sketches, changed)
    recovery = recover(scope.records, scope.sketches, context_records=scope.context_records,
                       context_sketches=scope.context_sketches)
    tier = None
    if behaviour:
        from lineage_index.behaviour.tier import BehaviourOptions, run_tier

        opts = behaviour if isinstance(behaviour, BehaviourOptions) else BehaviourOptions()
        if opts.cache_dir is None:
            opts = replace(opts, cache_dir=store.root)
        tier = run_tier({**scope.context_records, **scope.records}, recovery.edges, opts, show_progress=show_progress)
        recovery = replace(recovery, edges=tier.edges)
        graph_load = "bolt"  # the bulk importer's edge columns carry no behaviour properties
    load = None
    edges = recovery.edges
    if writer is not None:
        outside = {e.parent for e in recovery.edges if e.parent not in scope.records}
        if scope.records or report.failures:
            load = write_graph(conn, scope.records, scope.sketches, report.failures, recovery,
                               read_license_texts(source, run_records.values()), graph_load=graph_load,
                               known_roots=writer.model_roots(sorted(outside)), impute_records=run_records)
        skipped = [m for m in run_records if m not in scope.records]
        if skipped:  # unchanged models: their edges as the graph holds them
            edges = sorted(edges + GraphWriter(conn.driver(), conn.database).read_edges(skipped),
                           key=lambda e: (e.child, e.parent))
    return IngestSummary(
        models=len(run_records) + len([f for f in report.failures if f.model_id not in run_records]),
        sketched=len(report.sketches) - report.from_store,
        from_store=report.from_store,
        failures=report.failures,
        edges=edges,
        bytes_read=report.bytes_read,
        requests=report.requests,
        graph_written=load is not None,
        deleted_edges=load.deleted if load is not None else 0,
        roots=recovery.roots,
        graph_load=load.method if load is not None else None,
        rewritten=sorted(scope.records),
        reverified_families=recovery.families,
        behaviour=tier,
        damaged=report.damaged,
        hub_requests=dict(getattr(getattr(source, "budget", None), "sent", {}) or {}),
    )


def export_edges(conn) -> list[Edge]:
    from lineage_index.schema.writer import GraphWriter

    return GraphWriter(conn.driver(), conn.database).read_edges(lineage_only=True)


def evaluate(truth: Path, edges: list[Edge], store: SketchStore | None = None, name: str = "lineage-index"):
    """Score ``edges`` against a zoo truth, side by side with MoTHer and declared-only.

    MoTHer runs on the same sketches (from the store) and is given the true number of trees
    per family, as in its paper; models without a stored sketch are left out of its input.
    """
    import json

    from lineage_index.baselines import mother_edges
    from lineage_index.evaluation import declared_baseline, score

    raw = json.loads(Path(truth).read_text())
    store = store if store is not None else SketchStore()
    sketches = {m: sk for m in raw["models"] if (sk := store.latest(m)) is not None}
    roots_per_family: dict[str, set[str]] = {}
    for m, sk in sketches.items():
        info = raw["models"][m]
        roots_per_family.setdefault(sk.family, set()).add(info.get("weight_root") or info.get("root") or m)
    known = set(raw["models"])  # the graph may hold other collections too: score this zoo only
    rows = [score([e for e in edges if e.child in known], raw, name=name)]
    if sketches:
        n_trees = {f: len(r) for f, r in roots_per_family.items()}
        rows.append(score(mother_edges(sketches, n_trees), raw, name="MoTHer (same sketches)"))
    rows.append(score(declared_baseline(raw), raw, name="declared-only"))
    return rows

