"""Loading the graph: ``load_graph`` picks a path (``choose``) and runs it.

``bolt_load``: the batched Bolt writer. ``bulk_load``: the importer input files (``files``),
the managed server stopped, ``neo4j-admin database import full``, started again, the schema
applied and the values a CSV cell cannot carry set over Bolt afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lineage_index import config
from lineage_index.config import fault_point
from lineage_index.errors import GraphError
from lineage_index.schema.bulk.cells import EMPTY_MARKER, Edges, Rows, count_rows, reiterable
from lineage_index.schema.bulk.choose import GraphLoad, choose_method, managed_home_of
from lineage_index.schema.bulk.files import write_import_files

_FIXUP_BATCH = 10_000


# --- the entry point ---------------------------------------------------------------------------


def load_graph(
    conn,
    models: Rows,
    edges: Edges,
    *,
    child_ids: Iterable[str] | None = None,
    method: str | None = None,
    home: Path | str | None = None,
    min_rows: int | None = None,
    workdir: Path | str | None = None,
    keep_files: bool = False,
    n_models: int | None = None,
) -> GraphLoad:
    """Write ``models`` and ``edges`` into ``conn``'s database by bulk import or Bolt (see module doc).

    ``models`` and ``edges`` may be lists or zero-argument callables that return a fresh
    iterable (read twice by the bulk path, so 2M rows need not sit in memory). ``child_ids``:
    models whose DERIVED_FROM edges ``edges`` replace on the Bolt path (default: the model
    rows' ids). ``n_models``: the number of model rows when the caller knows it (spares a
    counting pass over a callable source). Returns a ``GraphLoad`` with the method, its reason
    and stage timings.
    """
    models_f, edges_f = reiterable(models), reiterable(edges)
    rows = (n_models if n_models is not None else count_rows(models, models_f)) + count_rows(edges, edges_f)
    chosen, reason = choose_method(conn, rows, method, home=home, min_rows=min_rows)
    if chosen == "bulk":
        return bulk_load(conn, models_f, edges_f, home=managed_home_of(conn, home), reason=reason,
                         workdir=workdir, keep_files=keep_files)
    return bolt_load(conn, models_f, edges_f, child_ids=child_ids, reason=reason)


WRITTEN_MARKS = ("sha", "status")  # the Model properties ``pipeline.changed_models`` compares


def bolt_load(conn, models, edges, *, child_ids: Iterable[str] | None = None, reason: str = "") -> GraphLoad:
    """The batched Bolt writer: schema, model upserts, edge replacement per child, licence refresh."""
    from lineage_index.queries import licenses
    from lineage_index.schema.graph import ensure_schema
    from lineage_index.schema.writer import GraphWriter

    models_f, edges_f = reiterable(models), reiterable(edges)
    t0 = time.monotonic()
    driver = conn.driver()
    ensure_schema(driver, conn.database)
    writer = GraphWriter(driver, conn.database)
    model_rows = list(models_f())
    edge_list = list(edges_f())
    t1 = time.monotonic()
    # A model counts as written (its sha and status, what the next ingest compares) only once its
    # edges are: the node is written without them (a new node has none, a changed one keeps its
    # old sha) and they are set after the edges, so a run killed in between leaves the changed
    # models stale and the rerun rewrites them and their families; unchanged models are left as
    # they were (same marks: nothing changes, not even updated_at).
    marks = {r["id"]: {k: r["props"][k] for k in WRITTEN_MARKS if k in (r.get("props") or {})} for r in model_rows}
    n_models = writer.upsert_models([{**r, "props": {k: v for k, v in (r.get("props") or {}).items()
                                                     if k not in WRITTEN_MARKS}} for r in model_rows])
    ids = [r["id"] for r in model_rows] if child_ids is None else list(child_ids)
    t2 = time.monotonic()
    fault_point("after-models")
    deleted, _ = writer.replace_edges_for_children(ids, edge_list)
    fault_point("after-edges")
    writer.upsert_models([{"id": m, "props": p} for m, p in marks.items() if p])
    t3 = time.monotonic()
    licenses.refresh(driver, conn.database)  # catalogue + inherited licences along the new edges
    t4 = time.monotonic()
    return GraphLoad("bolt", reason, n_models, len(edge_list), t4 - t0, deleted=deleted,
                     stages={"schema": t1 - t0, "models": t2 - t1, "edges": t3 - t2, "licenses": t4 - t3})


_SET_EMPTY_LISTS = f"""
MATCH (m:Model) WHERE m.{EMPTY_MARKER} IS NOT NULL
CALL (m) {{
  FOREACH (key IN m.{EMPTY_MARKER} | SET m[key] = [])
  REMOVE m.{EMPTY_MARKER}
}} IN TRANSACTIONS OF 20000 ROWS
"""


def _apply_fixups(driver, database: str, fixups: dict[str, list[dict[str, Any]]]) -> int:
    queries = {
        "Model": "UNWIND $rows AS row MATCH (x:Model {id: row.id}) SET x += row.props",
        "License": "UNWIND $rows AS row MATCH (x:License {id: row.id}) SET x += row.props",
    }
    n = 0
    for label, rows in fixups.items():
        for start in range(0, len(rows), _FIXUP_BATCH):
            driver.execute_query(queries[label], rows=rows[start:start + _FIXUP_BATCH], database_=database)
        n += len(rows)
    return n


def bulk_load(conn, models, edges, *, home: Path | str | None = None, reason: str = "forced",
              workdir: Path | str | None = None, keep_files: bool = False,
              import_heap: str | None = None) -> GraphLoad:
    """Initial load through ``neo4j-admin database import full`` on the managed Neo4j of ``home``.

    The caller checks that the database may be overwritten (``choose_method`` does). The
    server is stopped, imported into, started again; then the schema and the fixups follow.
    """
    from lineage_index.schema import local_neo4j
    from lineage_index.schema.graph import ensure_schema

    t0 = time.monotonic()
    home_p = Path(home) if home is not None else config.neo4j_home()
    base = Path(workdir) if workdir is not None else home_p / "import"
    base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="load-", dir=base))
    files = write_import_files(models, edges, folder)
    t1 = time.monotonic()
    conn.close()  # its connections die with the server
    heap = import_heap or os.environ.get(config.ENV_IMPORT_HEAP) or config.DEFAULT_IMPORT_HEAP
    threads = max(1, min(os.cpu_count() or 1, 4))
    run = local_neo4j.import_full(
        files.args + [f"--threads={threads}",
                      f"--max-off-heap-memory={os.environ.get(config.ENV_IMPORT_OFFHEAP) or config.DEFAULT_IMPORT_OFFHEAP}"],
        database=conn.database, home=home_p, heap=heap, cwd=folder)
    t2 = time.monotonic()
    driver = conn.driver()
    ensure_schema(driver, conn.database)
    t3 = time.monotonic()
    fixed = _apply_fixups(driver, conn.database, files.fixups)
    if files.empty_lists:
        with driver.session(database=conn.database) as session:  # CALL IN TRANSACTIONS: auto-commit
            session.run(_SET_EMPTY_LISTS).consume()
        fixed += files.empty_lists
    t4 = time.monotonic()
    records, _, _ = driver.execute_query("MATCH (m:Model) RETURN count(m) AS n", database_=conn.database)
    if int(records[0]["n"]) != files.models:
        raise GraphError(f"bulk import wrote {records[0]['n']} Model nodes, expected {files.models}; "
                         f"see {run.log_file} and {folder / 'import.report'}")
    if not keep_files:
        shutil.rmtree(folder, ignore_errors=True)
    return GraphLoad(
        "bulk", reason, files.model_rows, files.edge_rows, time.monotonic() - t0,
        stages={"csv": t1 - t0, **{f"csv: {k}": v for k, v in files.stages.items()}, "stop": run.stop_s, "import": run.seconds, "start": run.start_s,
                "schema": t3 - t2, "fixups": t4 - t3},
        import_peak_rss_bytes=run.peak_rss_bytes, fixups=fixed, csv_bytes=files.csv_bytes,
    )
