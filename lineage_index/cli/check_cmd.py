"""``lineage-index check TARGET`` and ``lineage-index explain TARGET`` (issue 10).

Thin typer commands over ``indexer.check``: ``check`` parses options, calls the library,
prints a rich summary (or ``--json``, or the ``--mergekit`` YAML), writes the ``--report``
HTML page, and exits with the result's code (0 supported / lineage found, 3 contradicted or a
policy failure, 4 lineage unknown, 2 usage or read error). ``explain`` prints the raw numbers
the last check of a target kept (features per candidate, background, calibration terms).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape as esc
from rich.table import Table
from rich.text import Text

from lineage_index.cli.output import console, err_console
from lineage_index.errors import GraphError, LineageIndexError, redact

if TYPE_CHECKING:
    from lineage_index.indexer.check.run import CheckResult
    from lineage_index.records import ModelRecord


def _records(directory: Path | None) -> dict[str, ModelRecord] | None:
    from lineage_index.records import ModelRecord

    if directory is None:
        return None
    from lineage_index.indexer.read.sources import DirSource

    return {r.id: r for r in DirSource(directory).iter_records() if isinstance(r, ModelRecord)}


def _graph(uri: str | None, required: bool):
    """A Neo4j connection when one is reachable (never starts the managed one); None otherwise.

    With ``required`` (an explicit --neo4j-uri or NEO4J_URI for --add), an unreachable server
    is an error; otherwise it only means there is no graph to read or write.
    """
    from lineage_index.schema.connection import resolve

    try:
        return resolve(uri=uri, start_managed=False)
    except GraphError:
        if required:
            raise
        return None


def print_result(r: CheckResult) -> None:
    """Rich terminal summary of one check."""
    from lineage_index.indexer.check.report import label

    parents = ", ".join(f"{p} ({w:.2f})" for p, w in zip(r.parents, r.coefficients, strict=False)) \
        if r.coefficients else ", ".join(r.parents)
    scheme = f" ({esc(r.quant)}, {esc(r.weight_format)})" if r.quant else ""
    console.print(f"[bold]{esc(r.target)}[/]: [bold cyan]{label(r.verdict)}[/]{scheme}"
                  f"{' of ' + esc(parents) if parents else ''}  (p = {r.probability:.2f})")
    style = {"supported": "green", "contradicted": "red"}.get(r.claim.status, "yellow")
    declared = ", ".join(r.claim.declared) or "nothing"
    console.print(f"card declares {esc(declared)}: [{style}]{r.claim.status}[/] {esc(r.claim.reason)}")
    for line in r.evidence:
        console.print(f"  - {esc(line)}")
    if r.candidates:
        table = Table(title="best candidates")
        for col in ("model", "relation", "P(parent)", "P(related)", "cos", "z (calibrated)", "dist", "evidence"):
            table.add_column(col)
        for c in r.candidates[:5]:
            table.add_row(Text(c.model_id), Text(c.relation), f"{c.probability:.2f}", f"{c.p_related:.2f}",
                          f"{c.cos_median:.4f}", f"{c.z:.1f}", f"{c.dist:.4f}", Text(c.evidence))
        console.print(table)
    if r.license_chain:
        console.print("parent chain licences: " + esc(", ".join(f"{m} ({lic or 'unknown'})" for m, lic in r.license_chain)))
    for f in r.policy_failures:
        console.print(f"[red]policy:[/] {esc(f)}")
    console.print(f"read {r.bytes_read:,} bytes in {r.requests} requests, {r.seconds:.2f} s"
                  f"{'; sketch added to the store' if r.added else ''}; exit {r.exit_code}")
    if r.graph:
        console.print(esc(r.graph))


def print_explain(rec: dict[str, Any]) -> None:
    """Rich tables of a saved check: background, features and logit terms, verdict terms."""
    from lineage_index.indexer.check.report import label

    r = rec["result"]
    console.print(f"[bold]{esc(r['target'])}[/] (checked {esc(rec['saved_at'])} as {esc(rec['target'])}): "
                  f"[bold cyan]{label(r['verdict'])}[/] {esc(', '.join(r['parents']))}  p = {r['probability']:.4f}, "
                  f"exit {r['exit_code']}")
    bg = Table(title="background: unrelated stored pairs of the architecture")
    for col in ("pairs", "source", "cos mean", "cos sd", "cos_min mean", "cos_min sd", "dist mean", "dist sd"):
        bg.add_column(col)
    b = r["background"]
    bg.add_row(str(b["n_pairs"]), b["source"], *(f"{b[k]:+.5f}" for k in (
        "cos_mean", "cos_sd", "cos_min_mean", "cos_min_sd", "dist_mean", "dist_sd")))
    console.print(bg)
    cands = r["candidates"]
    if cands:
        t = Table(title="candidates")
        for col in ("model", "relation", "gate", "cos", "z", "dist", "matrices", "P(related)", "P(parent)"):
            t.add_column(col)
        for c in cands:
            t.add_row(c["model_id"], c["relation"], "pass" if c["passes_gate"] else "fail", f"{c['cos_median']:.5f}",
                      f"{c['z']:.1f}", f"{c['dist']:.5f}", str(c["n_matrices"]), f"{c['p_related']:.4f}",
                      f"{c['probability']:.4f}")
        console.print(t)
        cal = rec["calibration"]
        for model in ("related", "parent"):
            m = cal[model]
            t = Table(title=f"P({model}{' | related' if model == 'parent' else ''}): feature value (logit term); "
                            f"intercept {m['intercept']:+.3f}; 0 = no evidence")
            t.add_column("model")
            for f in m["features"]:
                t.add_column(f)
            for c in cands:
                terms = rec["terms"].get(c["model_id"], {}).get(model, {})
                t.add_row(c["model_id"], *(f"{c['features'].get(f, 0.0):+.2f} ({terms.get(f, 0.0):+.2f})"
                                           for f in m["features"]))
            console.print(t)
    v = Table(title=f"verdict: logit {rec['verdict_logit']:+.3f} -> p {r['probability']:.4f} "
                    f"(intercept {rec['calibration']['verdict']['intercept']:+.3f})")
    for col in ("feature", "value", "term"):
        v.add_column(col)
    for f, val in r["verdict_features"].items():
        v.add_row(f, f"{val:+.4f}", f"{rec['verdict_terms'].get(f, 0.0):+.4f}")
    console.print(v)
    if r.get("merge"):
        console.print(f"merge fit: {json.dumps(r['merge'])}")
    prov = rec["calibration"].get("provenance", {})
    zoos = ", ".join(f"{z.get('size')} seed {z.get('seed')}" for z in prov.get("zoos", []))
    console.print(f"calibration: fitted {prov.get('created', '?')} on {prov.get('n_pairs', '?')} pairs from "
                  f"zoos {zoos or '?'}")


def register(app: typer.Typer) -> None:
    """Add the ``check`` and ``explain`` commands to ``app``."""

    @app.command("check")
    def check_cmd(
        target: Annotated[str, typer.Argument(help="Hub id, model directory, .safetensors file or sharded index.")],
        store: Annotated[Path | None, typer.Option(help="Sketch store (else LINEAGE_INDEX_CACHE).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
        add: Annotated[bool, typer.Option(
            "--add", help="Write the target into the index: the store, and the graph when a Neo4j is reachable.")] = False,
        report: Annotated[Path | None, typer.Option(
            "--report", help="Write a self-contained HTML evidence page here.")] = None,
        mergekit: Annotated[bool, typer.Option(
            "--mergekit", help="For a merge: print a mergekit YAML config that would rebuild it (summary to stderr).")
        ] = False,
        model_id: Annotated[str | None, typer.Option("--id", help="Id for a local target.")] = None,
        records: Annotated[Path | None, typer.Option(
            "--records", help="Hub-layout directory whose cards give stored models' licences and times "
                              "(default: the records ingest kept in the store).")] = None,
        fail_on_license: Annotated[str | None, typer.Option(
            "--fail-on-license", help="Exit 3 when the recovered parent chain carries this licence.")] = None,
        fail_on_conflict: Annotated[bool, typer.Option(
            "--fail-on-conflict", help="Exit 3 when the target's licence conflicts with a recovered parent's "
                                       "(the conflicts `report licenses` lists).")] = False,
        fail_on_undeclared: Annotated[bool, typer.Option(
            "--fail-on-undeclared", help="Exit 3 on lineage the card does not declare.")] = False,
        endpoint: Annotated[str | None, typer.Option(help="Hub endpoint (else HF_ENDPOINT).")] = None,
        neo4j_uri: Annotated[str | None, typer.Option(
            "--neo4j-uri", help="Bolt URI (else NEO4J_URI, else the managed Neo4j if it runs).")] = None,
        no_graph: Annotated[bool, typer.Option("--no-graph", help="Neither read nor write Neo4j.")] = False,
        k: Annotated[int, typer.Option("--neighbours", "--k", min=1,
                                       help="Candidates from the nearest-neighbour search.")] = 10,
    ) -> None:
        """Check one model against the index: copy, quantised, adapter, fine-tune, merge, pruned, or not."""
        from lineage_index.indexer.check.report import label
        from lineage_index.indexer.check.run import check
        from lineage_index.indexer.sketch.store import SketchStore
        from lineage_index.queries.licenses import catalogue

        if fail_on_license is not None and catalogue().gate(fail_on_license) is None:
            cat = catalogue()
            err_console.print(f"[red]error:[/] --fail-on-license {esc(fail_on_license)!r}: not a licence id, SPDX id "
                              f"or licence family of the catalogue (families: {esc(', '.join(sorted(cat.families)))})")
            raise typer.Exit(2)
        try:
            conn = None
            if not no_graph and (add or report):
                conn = _graph(neo4j_uri, required=add and bool(neo4j_uri or os.environ.get("NEO4J_URI")))
            sketch_store = SketchStore(store) if store else SketchStore()
            result = check(target, sketch_store, model_id=model_id, k=k, records=_records(records),
                           fail_on_license=fail_on_license, fail_on_undeclared=fail_on_undeclared,
                           fail_on_conflict=fail_on_conflict, add=add,
                           endpoint=endpoint, token=os.environ.get("HF_TOKEN"), conn=conn if add else None)
            if add and no_graph:
                result.graph = "graph not written (--no-graph)"
            if report:
                from lineage_index.indexer.check.graph import graph_context
                from lineage_index.indexer.check.report import render_report

                ctx = graph_context(conn, result.target, result.parents).__dict__ if conn else None
                report.write_text(render_report(result.to_dict(), ctx))
        except LineageIndexError as exc:
            err_console.print(f"[red]error:[/] {esc(redact(str(exc)))}")
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:
            err_console.print(f"[red]error:[/] {esc(redact(str(exc)))}")
            raise typer.Exit(2) from None
        if mergekit:
            from lineage_index.indexer.check.mergekit import mergekit_yaml

            if result.merge:
                print(mergekit_yaml(result.target, result.merge, result.merge.get("dtype")), end="")
            else:
                err_console.print(f"[yellow]no mergekit config:[/] the verdict is {label(result.verdict)}, not a merge")
            err_console.print(f"{esc(result.target)}: {label(result.verdict)} (p = {result.probability:.2f}), "
                              f"exit {result.exit_code}")
        elif as_json:
            print(result.to_json())
        else:
            print_result(result)
        if report:
            (err_console if (as_json or mergekit) else console).print(f"evidence page: {esc(str(report))}")
        raise typer.Exit(result.exit_code)

    @app.command("explain")
    def explain_cmd(
        target: Annotated[str, typer.Argument(help="The target as given to check (path or Hub id), or its model id.")],
        store: Annotated[Path | None, typer.Option(help="Sketch store (else LINEAGE_INDEX_CACHE).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the saved record as JSON.")] = False,
    ) -> None:
        """Show the raw numbers of the last check of TARGET: features, background, calibration terms."""
        from lineage_index.indexer.check.run import last_result
        from lineage_index.indexer.sketch.store import SketchStore

        try:
            rec = last_result(SketchStore(store) if store else SketchStore(), target)
        except LineageIndexError as exc:
            err_console.print(f"[red]error:[/] {esc(redact(str(exc)))}")
            raise typer.Exit(exc.exit_code) from None
        if as_json:
            print(json.dumps(rec, indent=2))
        else:
            print_explain(rec)
