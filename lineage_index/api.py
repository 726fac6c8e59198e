"""Public library facade: what each CLI command does, as plain functions.

``make_source`` picks the source from the user's options, ``ingest`` runs the whole flow
and writes the graph, ``export_edges`` reads the edges back. The CLI only parses options,
calls one of these and formats the result; everything is scriptable from Python.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lineage_index.errors import UsageError
from lineage_index.indexer.impute import impute, imputed_props, read_license_texts
from lineage_index.indexer.pipeline import Recovery, index_scope, recover, sketch_all
from lineage_index.indexer.sources import DirSource, HfCacheSource, Source
from lineage_index.indexer.store import SketchStore
from lineage_index.records import Edge, Failure, ModelRecord, Sketch


def make_source(
    *,
    org: str | None = None,
    search: str | None = None,
    models: list[str] | None = None,
    directory: Path | None = None,
    hf_cache: bool | Path = False,
    endpoint: str | None = None,
    token: str | None = None,
    everything: bool = False,
) -> Source:
    """The one source the options name (exactly one of hub / dir / hf-cache)."""
    hub = bool(org or search or models or everything)
    chosen = sum([hub, directory is not None, bool(hf_cache)])
    if chosen != 1:
        raise UsageError("name exactly one source: --org/--search/--models/--all (Hub), --dir, or --hf-cache")
    if directory is not None:
        if not Path(directory).is_dir():
            raise UsageError(f"--dir {directory}: not a directory")
        return DirSource(directory)
    if hf_cache:
        return HfCacheSource(None if hf_cache is True else hf_cache)
    from lineage_index.indexer.sources_hub import HubSource

    return HubSource(org=org, search=search, models=models, endpoint=endpoint, token=token, everything=everything)


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

    def edges_by(self, attr: str) -> dict[str, int]:
        return dict(Counter(getattr(e, attr) for e in self.edges))

    @property
    def contradicted(self) -> list[Edge]:
        return [e for e in self.edges if e.contradicted]


def compute_roots(edges: list[Edge], model_ids: list[str]) -> dict[str, str]:
    """Root of each model along asserted parent edges (first parent; cycles stop safely)."""
    parent: dict[str, str] = {}
    for e in sorted(edges, key=lambda e: (e.child, -e.confidence, e.parent)):
        if not e.contradicted and e.child not in parent:
            parent[e.child] = e.parent
    roots: dict[str, str] = {}
    for m in model_ids:
        seen, cur = {m}, m
        while cur in parent and parent[cur] not in seen:
            cur = parent[cur]
            seen.add(cur)
        roots[m] = cur
    return roots


def model_props(rec: ModelRecord, sketch: Sketch | None, root: str | None) -> dict[str, Any]:
    cfg = rec.config or {}
    archs = cfg.get("architectures")
    return {
        "sha": rec.sha,
        "author": rec.author,
        "created_at": rec.created_at,
        "license": rec.license,
        "license_name": rec.license_name,
        "declared_base_models": list(rec.base_models),
        "base_model_relation": rec.base_model_relation,
        "pipeline_tag": rec.pipeline_tag,
        "library_name": rec.library_name,
        "model_type": cfg.get("model_type") if isinstance(cfg.get("model_type"), str) else None,
        "architectures": [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else None,
        "gated": bool(rec.gated),
        "private": bool(rec.private),
        "weight_format": rec.weight_format,
        "source": rec.source,
        "is_adapter": rec.is_adapter,
        "family": sketch.family if sketch else None,
        "kind": sketch.kind if sketch else None,
        "quant": sketch.quant if sketch else None,
        "dtypes": list(sketch.dtypes) if sketch else None,
        "sketch_bytes_read": sketch.bytes_read if sketch else None,
        "root": root,
        "status": "indexed" if sketch else "metadata-only",
    }


def write_graph(
    conn, records: dict[str, ModelRecord], sketches: dict[str, Sketch], failures: list[Failure],
    recovery: Recovery, license_texts: dict[str, str] | None = None,
) -> int:
    """Write models (with imputed metadata), failures and edges; returns stale edges deleted."""
    from lineage_index.schema.graph import ensure_schema
    from lineage_index.schema.writer import GraphWriter

    driver = conn.driver()
    ensure_schema(driver, conn.database)
    writer = GraphWriter(driver, conn.database)
    roots = compute_roots(recovery.edges, list(records))
    imp = imputed_props(impute(records, recovery.edges, license_texts))
    rows = [{"id": m, "props": {**model_props(r, sketches.get(m), roots.get(m)), **imp.get(m, {})}}
            for m, r in records.items()]
    rows += [{"id": f.model_id, "props": {"status": "failed", "failure": f.kind, "failure_message": f.message}}
             for f in failures]
    writer.upsert_models(rows)
    deleted, _ = writer.replace_edges_for_children(list(records), recovery.edges)
    from lineage_index.queries import licenses

    licenses.refresh(driver, conn.database)  # catalogue + inherited licences along the new edges
    return deleted


def ingest(
    source: Source,
    *,
    store: SketchStore | None = None,
    conn=None,
    show_progress: bool = False,
) -> IngestSummary:
    """Run sources -> sketch -> recover and, when ``conn`` is given, write the graph."""
    store = store if store is not None else SketchStore()
    run_records, report = sketch_all(source.iter_records(), source.open_reader, store, show_progress=show_progress)
    records, sketches = index_scope(store, run_records, report.sketches)
    recovery = recover(records, sketches)
    deleted = 0
    if conn is not None:
        deleted = write_graph(conn, records, sketches, report.failures, recovery,
                              read_license_texts(source, run_records.values()))
    return IngestSummary(
        models=len(run_records) + len([f for f in report.failures if f.model_id not in run_records]),
        sketched=len(report.sketches) - report.from_store,
        from_store=report.from_store,
        failures=report.failures,
        edges=recovery.edges,
        bytes_read=report.bytes_read,
        requests=report.requests,
        graph_written=conn is not None,
        deleted_edges=deleted,
        roots=recovery.roots,
    )


def export_edges(conn) -> list[Edge]:
    from lineage_index.schema.writer import GraphWriter

    return GraphWriter(conn.driver(), conn.database).read_edges()


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

