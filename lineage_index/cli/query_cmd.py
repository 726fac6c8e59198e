"""CLI commands over the query library: ``query``, ``tree``, ``bom`` and ``report licenses``.

``register(app)`` adds them to the main typer app. Each command parses options, resolves the
Neo4j connection (``schema.connection.resolve``), calls one library function of
``lineage_index.queries`` and prints through ``cli.output``; nothing here touches Cypher.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.tree import Tree

from lineage_index.cli.output import FORMATS, console, emit
from lineage_index.errors import UsageError

NeoUri = Annotated[
    str | None, typer.Option("--neo4j-uri", help="Bolt URI (else NEO4J_URI, else managed).")
]
REPORT_FORMATS = ("md", "html", "csv", "json")


def _connect(uri: str | None) -> Any:
    from lineage_index.schema.connection import resolve

    return resolve(uri=uri)


def _cell(value: Any) -> Any:
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


def query(
    name: Annotated[
        str | None, typer.Argument(help="Shipped query name; omit to list them.")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Query parameter key=value (repeat).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json | csv")] = "table",
    neo4j_uri: NeoUri = None,
) -> None:
    """Run a shipped Cypher query (lineage_index/queries/*.cypher) with parameters."""
    from lineage_index.queries import runner

    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}")
    if name is None:
        rows = [
            {
                "query": q.name,
                "params": ", ".join(
                    f"{p.name}:{p.type}" + ("" if p.required else f"={json.dumps(p.default)}")
                    for p in q.params
                ),
                "answers": q.summary,
            }
            for q in runner.list_queries()
        ]
        emit(rows, ["query", "params", "answers"], fmt, title="Shipped queries")
        return
    params = runner.parse_params(name, param or [])
    conn = _connect(neo4j_uri)
    try:
        result = runner.run_query(conn.driver(), name, params, conn.database)
        model = params.get("model")
        if not result.rows and isinstance(model, str) and not _in_graph(conn, model):
            raise UsageError(f"model {model!r} is not in the graph (ingest it first, or check the id)")
    finally:
        conn.close()
    rows = (
        result.rows if fmt == "json" else [{k: _cell(v) for k, v in r.items()} for r in result.rows]
    )
    emit(rows, result.columns, fmt, title=name)


def _in_graph(conn, model: str) -> bool:  # type: ignore[no-untyped-def]
    records, _, _ = conn.driver().execute_query("MATCH (m:Model {id: $id}) RETURN count(m) AS n", id=model,
                                                database_=conn.database, routing_="r")
    return bool(records and records[0]["n"])


def tree(
    model: Annotated[str, typer.Argument(help="Model id, e.g. org/name.")],
    descendants: Annotated[
        bool, typer.Option("--descendants", help="Only the model and what derives from it.")
    ] = False,
    neo4j_uri: NeoUri = None,
) -> None:
    """Show a model's family tree (roots down) with relation, source and licence per node."""
    from lineage_index.queries import tree as tree_lib

    conn = _connect(neo4j_uri)
    try:
        driver = conn.driver()
        roots = (
            [tree_lib.descendants_tree(driver, model, conn.database)]
            if descendants
            else tree_lib.family_tree(driver, model, conn.database)
        )
    finally:
        conn.close()
    for root in roots:
        console.print(_rich_tree(root))


def _label(node: Any) -> str:
    name = (
        f"[bold underline]{escape(node.id)}[/]"
        if node.is_subject
        else f"[bold]{escape(node.id)}[/]"
    )
    lic = escape(node.license or "no licence")
    if node.license_source and node.license_source != "declared":
        lic += f" ({escape(node.license_source)})"
    text = f"{name}  [{node.colour}]■ {lic}[/]"
    if node.relation:
        conf = f" {node.confidence:.2f}" if isinstance(node.confidence, float) else ""
        text += f"  [dim]{escape(node.relation)} · {escape(node.source or '?')}{conf}[/]"
    if node.also_under:
        text += f"  [dim](merge; also under {escape(', '.join(node.also_under))})[/]"
    return text


def _rich_tree(root: Any) -> Tree:
    out = Tree(_label(root))

    def add(branch: Tree, node: Any) -> None:
        for child in node.children:
            add(branch.add(_label(child)), child)

    add(out, root)
    return out


def report_licenses(
    fmt: Annotated[str, typer.Option("--format", "-f", help="md | html | csv | json")] = "md",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here (else stdout).")
    ] = None,
    adapter_leniency: Annotated[
        bool,
        typer.Option(
            "--adapter-leniency", help="Permissive adapter tags: W instead of ✗ (LICENSES.md)."
        ),
    ] = False,
    no_refresh: Annotated[
        bool,
        typer.Option(
            "--no-refresh", help="Do not reload the licence catalogue / inheritance first."
        ),
    ] = False,
    max_pictures: Annotated[
        int, typer.Option("--max-pictures", help="HTML: draw at most this many lineages.")
    ] = 100,
    neo4j_uri: NeoUri = None,
) -> None:
    """Licence report: conflicts (✗), warnings (W, C) and edges to review (?), separately."""
    from lineage_index.queries import report

    if fmt not in REPORT_FORMATS:
        raise UsageError(f"--format must be one of {', '.join(REPORT_FORMATS)}")
    conn = _connect(neo4j_uri)
    try:
        rep = report.build_report(
            conn.driver(),
            conn.database,
            adapter_leniency=adapter_leniency,
            refresh=not no_refresh,
            max_pictures=max_pictures if fmt == "html" else 0,
        )
    finally:
        conn.close()
    _write(report.render(rep, fmt), out)


def bom(
    model: Annotated[str, typer.Argument(help="Model id, e.g. org/name.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here (else stdout).")
    ] = None,
    no_refresh: Annotated[
        bool,
        typer.Option(
            "--no-refresh", help="Do not reload the licence catalogue / inheritance first."
        ),
    ] = False,
    neo4j_uri: NeoUri = None,
) -> None:
    """CycloneDX 1.6 AI bill of materials of one model, with its lineage as pedigree."""
    from lineage_index.queries import bom as bom_lib
    from lineage_index.queries import licenses

    conn = _connect(neo4j_uri)
    try:
        if not no_refresh:
            licenses.refresh(conn.driver(), conn.database)
        doc = bom_lib.build_bom(conn.driver(), model, conn.database)
    finally:
        conn.close()
    _write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", out)


def _write(text: str, out: Path | None) -> None:
    if out is None:
        print(text, end="")
        return
    out.write_text(text, encoding="utf-8")
    console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Add ``query``, ``tree``, ``bom`` and ``report licenses`` to ``app``."""
    app.command("query")(query)
    app.command("tree")(tree)
    app.command("bom")(bom)
    report_app = typer.Typer(help="Reports over the lineage graph.", no_args_is_help=True)
    report_app.command("licenses")(report_licenses)
    app.add_typer(report_app, name="report")
