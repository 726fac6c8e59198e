"""The ``lineage-index`` command line: thin typer commands over library functions.

Each command parses options, calls one public function (``lineage_index.api`` and the
stage modules) and formats the result with ``cli.output``. Errors of the one hierarchy
(``lineage_index.errors``) are mapped to exit codes here, and only here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from lineage_index.cli.behaviour_cmd import register as register_behaviour_commands
from lineage_index.cli.check_cmd import register as register_check_command
from lineage_index.cli.neo4j_cmd import app as neo4j_app
from lineage_index.cli.output import FORMATS, console, emit, err_console
from lineage_index.cli.query_cmd import register as register_query_commands
from lineage_index.cli.sim_cmd import sim_app
from lineage_index.cli.zoo_cmd import zoo_app
from lineage_index.errors import GraphError, LineageIndexError, UsageError, redact

if TYPE_CHECKING:
    from lineage_index import api

app = typer.Typer(
    name="lineage-index",
    help=(
        "Recover which model was derived from which, from the weights, into Neo4j.\n\n"
        "Configuration (flags win over environment): NEO4J_URI / NEO4J_USER / NEO4J_PASSWORD / "
        "NEO4J_DATABASE (else the managed local Neo4j, started on demand); HF_ENDPOINT / HF_TOKEN / "
        "HF_HOME (huggingface_hub's own); LINEAGE_INDEX_CACHE (sketch store); "
        "LINEAGE_INDEX_NEO4J_HOME, LINEAGE_INDEX_BOLT_PORT, LINEAGE_INDEX_HTTP_PORT (managed Neo4j).\n\n"
        "Exit codes: 0 ok; 1 unexpected error; 2 wrong input (a bad argument, a model that cannot be read); "
        "3 a check gate failed (licence, undeclared or contradicted lineage); 4 check found no known relative; "
        "5 Neo4j unreachable or failed."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(neo4j_app, name="neo4j", help="Manage the local Neo4j (the embedded default).")
app.add_typer(zoo_app, name="zoo", help="Generate model zoos with known lineage.")
app.add_typer(sim_app, name="sim", help="Simulated hub at the sketch level (scale benchmarks).")
register_query_commands(app)
register_check_command(app)


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False) -> None:
    if version:
        from lineage_index import __version__

        print(f"lineage-index {__version__}")
        raise typer.Exit(0)
register_behaviour_commands(app)

NeoUri = Annotated[str | None, typer.Option("--neo4j-uri", help="Bolt URI (else NEO4J_URI, else managed).")]
Fmt = Annotated[str, typer.Option("--format", "-f", help="table | json | csv")]


def _connect(uri: str | None):
    from lineage_index.schema.connection import resolve

    return resolve(uri=uri)


def _check_format(fmt: str, allowed: tuple[str, ...] = FORMATS) -> None:
    if fmt not in allowed:
        raise typer.BadParameter(f"--format must be one of {', '.join(allowed)}")


@app.command()
def ingest(
    org: Annotated[list[str] | None, typer.Option("--org", help="Hub organisation / user to list (repeat).")] = None,
    search: Annotated[str | None, typer.Option(help="Hub search string.")] = None,
    models: Annotated[list[str] | None, typer.Option("--models", help="Hub model ids (repeat).")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every model the Hub endpoint lists.")] = False,
    directory: Annotated[Path | None, typer.Option("--dir", help="Local directory in Hub layout.")] = None,
    hf_cache: Annotated[bool, typer.Option("--hf-cache", help="The local Hugging Face cache.")] = False,
    endpoint: Annotated[str | None, typer.Option(help="Hub endpoint (else HF_ENDPOINT).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="List at most this many models (Hub listings).")] = None,
    store: Annotated[Path | None, typer.Option(help="Sketch store (else LINEAGE_INDEX_CACHE).")] = None,
    neo4j_uri: NeoUri = None,
    no_graph: Annotated[bool, typer.Option("--no-graph", help="Recover edges without writing Neo4j.")] = False,
    edges_out: Annotated[Path | None, typer.Option(help="Also write the edges as JSON here.")] = None,
    ray: Annotated[bool, typer.Option("--ray", help="Read the sketches as Ray tasks (a local Ray "
                                      "started on demand unless --ray-address).")] = False,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to fan out to (implies --ray), "
                                                    "e.g. ray://head:10001 or auto.")] = None,
    graph_load: Annotated[str | None, typer.Option(help="auto | bulk | bolt (else LINEAGE_INDEX_GRAPH_LOAD, "
                                                   "auto: bulk import for a large first load).")] = None,
    full: Annotated[bool, typer.Option("--full", help="Re-verify and rewrite every listed model, "
                                       "not only those changed since the graph was written.")] = False,
    behaviour: Annotated[bool, typer.Option("--behaviour", help="Opt-in behaviour tier for models whose full "
                                            "weights are local: closeness/determine on weight edges, "
                                            "distillations as relation distill, source behaviour.")] = False,
    behaviour_probe: Annotated[Path | None, typer.Option(help="Probe data for the behaviour tier (models "
                                                         "without a synthetic task): file or image folder.")] = None,
    max_requests: Annotated[str | None, typer.Option(
        "--max-requests", help="The Hub's rate limits to pace requests at, e.g. 'api=1000,resolvers=5000,window=300' "
                               "(else LINEAGE_INDEX_RATE_LIMITS, else the published limits: anonymous 500/3000, with "
                               "a token 1000/5000 per 5 min; the server's RateLimit headers win).")] = None,
    plan: Annotated[bool, typer.Option("--plan", help="List the models and print the Hub requests an ingest would "
                                       "send per bucket and the time the rate limits make them take; read no weights.")]
    = False,
) -> None:
    """List models, sketch their weights by range reads, recover lineage, write Neo4j."""
    from lineage_index import api
    from lineage_index.indexer.sketch.store import SketchStore
    from lineage_index.schema.bulk.choose import METHODS

    if graph_load is not None and graph_load.lower() not in METHODS:  # refused before any work
        raise UsageError(f"--graph-load must be one of {', '.join(METHODS)}, got {graph_load!r}")
    if max_requests is not None:
        from lineage_index.indexer.read.budget import Limits

        Limits.parse(max_requests)  # a bad value is refused before any request
    source = api.make_source(org=org, search=search, models=models, directory=directory,
                             hf_cache=hf_cache, endpoint=endpoint, token=os.environ.get("HF_TOKEN"),
                             everything=everything, limit=limit, max_requests=max_requests)
    if plan:
        _print_plan(api.plan(source, SketchStore(store) if store else None))
        return
    conn = None if no_graph else _connect(neo4j_uri)
    tier = None
    if behaviour:
        from lineage_index.behaviour.tier import BehaviourOptions

        tier = BehaviourOptions(probe=behaviour_probe)
    summary = api.ingest(source, store=SketchStore(store) if store else None, conn=conn, show_progress=True,
                         ray=ray_address or ray, graph_load=graph_load, full=full, behaviour=tier)
    _print_summary(summary)
    if edges_out:
        edges_out.write_text(json.dumps([dataclasses.asdict(e) for e in summary.edges], indent=2))


def _print_plan(p: api.CrawlPlan) -> None:
    console.print(f"[bold]models[/]: {p.models}  already in the store: {p.from_store}  to read: "
                  f"{p.models - p.from_store}  bad listing entries: {p.failures}")
    rows = [{"bucket": b, "requests": p.requests.get(b, 0), "per model": round(p.requests.get(b, 0) / max(1, p.models - p.from_store), 2),
             "limit": f"{p.quotas[b]:,} per {p.window_s:.0f} s" if b in p.quotas else "none",
             "time at the limit": _duration(p.seconds(b))} for b in sorted({*p.requests, *p.quotas})]
    emit(rows, list(rows[0]) if rows else [], "table", title="Hub requests the ingest will send")
    console.print("Range reads of weights go to the CDN the Hub redirects to (no bucket); where a server does not "
                  "redirect, each range read is one more resolver request.")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 172800 else f"{seconds / 86400:.1f} days"


def _print_summary(s: api.IngestSummary) -> None:
    console.print(f"[bold]models[/]: {s.models}  sketched: {s.sketched}  from store: {s.from_store}  "
                  f"failures: {len(s.failures)}  bytes read: {s.bytes_read:,}  requests: {s.requests:,}")
    if s.hub_requests:
        console.print("Hub requests: " + "  ".join(f"{k}: {v:,}" for k, v in sorted(s.hub_requests.items())))
    console.print(f"[bold]edges[/]: {len(s.edges)}  by relation: {escape(str(s.edges_by('relation')))}  "
                  f"by source: {escape(str(s.edges_by('source')))}")
    if s.contradicted:
        rows = [{"child": e.child, "declared parent": e.parent, "recovered parent": e.recovered_parent,
                 "why": e.evidence} for e in s.contradicted]
        emit(rows, list(rows[0]), "table", title="Contradicted declarations")
    if s.damaged:
        err_console.print(f"[yellow]warning:[/] {len(s.damaged)} damaged sketch-store entr"
                          f"{'y' if len(s.damaged) == 1 else 'ies'} moved aside (*.bad) and read again:")
        for line in s.damaged[:20]:
            err_console.print(f"  {escape(line)}", highlight=False)
    if s.failures:
        rows = [{"model": f.model_id, "kind": f.kind, "message": redact(f.message)[:120]} for f in s.failures]
        emit(rows, ["model", "kind", "message"], "table", title="Failures")
    if s.behaviour is not None:
        from lineage_index.behaviour.tier import summary_rows

        b = s.behaviour
        console.print(f"[bold]behaviour tier[/]: {len(b.loaded)} models loaded ({len(b.skipped)} skipped), "
                      f"{b.measured_edges} weight edges measured, {b.candidate_pairs} candidate measurements, "
                      f"{b.distill_edges} distill edges, {b.seconds:.1f}s (calibration {b.calibration_seconds:.1f}s)")
        rows = summary_rows(b)
        if rows:
            emit(rows, list(rows[0]), "table", title="Behaviour evidence")
    if s.graph_written:
        console.print(f"graph written ({s.graph_load}): {len(s.rewritten)} models rewritten, "
                      f"families re-verified: {len(s.reverified_families)}")
    else:
        console.print("graph unchanged (nothing new)" if s.rewritten == [] and s.models else
                      "graph not written (--no-graph)")


EDGE_COLUMNS = ["child", "parent", "relation", "source", "confidence", "closeness"]


@app.command()
def edges(neo4j_uri: NeoUri = None, fmt: Fmt = "csv") -> None:
    """Export the lineage (DERIVED_FROM) edges: child, parent, relation, source, confidence,
    closeness (+ the declaration verdict, evidence and the behaviour tier's closeness/verdict/basin
    in json and csv). Card claims the weights do not support are not lineage: see the
    ``declarations`` query."""
    from lineage_index.schema.writer import GraphWriter

    _check_format(fmt)
    conn = _connect(neo4j_uri)
    lineage = GraphWriter(conn.driver(), conn.database).read_edges(lineage_only=True)
    rows = [{**e.__dict__, **{f"behaviour_{k}": v for k, v in dataclasses.asdict(e.behaviour).items()}}
            if e.behaviour else e.__dict__ for e in lineage]
    extra = ["verdict", "evidence", "behaviour_closeness", "behaviour_threshold", "behaviour_verdict",
             "behaviour_loss_barrier", "behaviour_basin"]
    emit(rows, EDGE_COLUMNS + (extra if fmt != "table" else []), fmt)


@app.command("eval")
def eval_(
    truth: Annotated[Path, typer.Option(help="truth.json of a generated zoo.")],
    pred: Annotated[Path | None, typer.Option(help="Predicted edges (CSV/JSON); else read the graph.")] = None,
    store: Annotated[Path | None, typer.Option(help="Sketch store for the MoTHer baseline.")] = None,
    neo4j_uri: NeoUri = None,
    fmt: Fmt = "table",
) -> None:
    """Score lineage edges against a zoo's truth, next to MoTHer and the declared-only baseline."""
    from lineage_index import api
    from lineage_index.cli.zoo_cmd import load_pred_edges
    from lineage_index.evaluation import scores_json, scores_table
    from lineage_index.indexer.pipeline import asserted_edges
    from lineage_index.indexer.sketch.store import SketchStore

    _check_format(fmt, ("table", "json"))
    if pred is not None:
        edges_list, name = asserted_edges(load_pred_edges(pred)), pred.name
    else:
        edges_list, name = asserted_edges(api.export_edges(_connect(neo4j_uri))), "lineage-index"
    rows = api.evaluate(truth, edges_list, SketchStore(store) if store else None, name=name)
    if fmt == "json":
        print(scores_json(rows))
    else:
        console.print(scores_table(rows, title=f"lineage evaluation vs {truth}"))


@app.command()
def demo(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to build the demo zoo.")] = None,
    seed: int = 0,
    neo4j_uri: NeoUri = None,
) -> None:
    """The main job on the embedded default: build a small zoo, ingest it into Neo4j, score it."""
    from lineage_index import api
    from lineage_index.config import user_cache_root
    from lineage_index.zoo import build_zoo

    out = out or user_cache_root() / f"demo-zoo-{seed}"
    if not (out / "truth.json").exists():
        console.print(f"building the small zoo into {out} (real training on the CPU, a few minutes)")
        build_zoo(out, size="small", seed=seed)
    conn = _connect(neo4j_uri)
    console.print(f"Neo4j: {conn.describe()}")
    summary = api.ingest(api.make_source(directory=out), conn=conn, show_progress=True)
    _print_summary(summary)
    eval_(truth=out / "truth.json", pred=None, neo4j_uri=neo4j_uri, fmt="table")
    if conn.managed:
        from lineage_index.schema import local_neo4j

        console.print(f"Open Neo4j Browser at [bold]{local_neo4j.status().browser_url}[/] "
                      "(no authentication) and run: MATCH p=(:Model)-[:DERIVED_FROM*]->(:Model) RETURN p")


def main() -> None:
    from neo4j.exceptions import DriverError, Neo4jError

    from lineage_index import config

    config.NOTICES.append(lambda text: err_console.print(f"[yellow]{escape(redact(text))}[/]"))
    try:
        app()
    except LineageIndexError as exc:
        err_console.print(f"[red]error:[/] {escape(redact(str(exc)))}")
        sys.exit(exc.exit_code)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        # a path the user gave that is not there or not readable: a wrong input, not a crash
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        err_console.print(f"[red]error:[/] {escape(exc.strerror or type(exc).__name__)}{escape(str(where))}")
        sys.exit(UsageError.exit_code)
    except (DriverError, Neo4jError) as exc:  # Neo4j went away or failed mid-run: not a bug of ours
        err_console.print(f"[red]error:[/] Neo4j failed during the run ({type(exc).__name__}: "
                          f"{escape(redact(str(exc)))}). What was written stays consistent: rerun the "
                          "same command to finish.")
        sys.exit(GraphError.exit_code)


if __name__ == "__main__":
    main()
