"""``lineage-index neo4j ...``: build, start, stop and inspect the managed local Neo4j.

A thin typer sub-app: every command calls one function of ``lineage_index.schema.local_neo4j``
and prints its status with rich. It must not hold logic of its own; errors propagate to the
main app, which maps them to exit codes in one place.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lineage_index import config
from lineage_index.schema import local_neo4j
from lineage_index.schema.local_neo4j import Neo4jStatus

app = typer.Typer(
    help=(
        "The managed local Neo4j (Neo4j Community "
        f"{config.NEO4J_VERSION} from Maven Central, in its own JVM on 127.0.0.1, auth off). "
        f"Home: ${config.ENV_NEO4J_HOME}; ports: ${config.ENV_BOLT_PORT} / ${config.ENV_HTTP_PORT}. "
        "Ignored when NEO4J_URI is set."
    ),
    no_args_is_help=True,
)
console = Console()

BoltPort = Annotated[
    int | None,
    typer.Option("--bolt-port", envvar=config.ENV_BOLT_PORT, help="Bolt port (default 7687)."),
]
HttpPort = Annotated[
    int | None,
    typer.Option(
        "--http-port", envvar=config.ENV_HTTP_PORT, help="HTTP/Browser port (default 7474)."
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the status as JSON.")]


def _as_dict(st: Neo4jStatus) -> dict[str, object]:
    out: dict[str, object] = {k: str(v) if k in ("home", "data_dir", "log_file") else v
                              for k, v in asdict(st).items()}  # fmt: skip
    out["log_tail"] = list(st.log_tail)
    out.update(bolt_uri=st.bolt_uri, http_url=st.http_url, browser_url=st.browser_url)
    return out


def _show(st: Neo4jStatus, as_json: bool = False, tail: bool = False) -> None:
    if as_json:
        console.print_json(json.dumps(_as_dict(st)))
        return
    state = "[green]running[/green]" if st.running else "[yellow]stopped[/yellow]"
    if st.stale:
        state += " (stale state file removed on next start/stop)"
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("state", state)
    if st.running:
        table.add_row("pid", str(st.pid))
    table.add_row("bolt", st.bolt_uri)
    table.add_row("browser", st.browser_url)
    table.add_row("http", st.http_url)
    table.add_row("home", str(st.home))
    table.add_row("data", str(st.data_dir))
    table.add_row("log", str(st.log_file))
    table.add_row("built", f"yes (Neo4j {config.NEO4J_VERSION})" if st.built else "no")
    console.print(table)
    if tail and st.log_tail:
        console.rule("log tail")
        console.print("\n".join(st.log_tail), markup=False, highlight=False)


@app.command()
def build(force: Annotated[bool, typer.Option(help="Rebuild even if built.")] = False) -> None:
    """Assemble Neo4j from Maven Central into the home's lib/ (needs Java 17+ and Maven)."""
    lib = local_neo4j.build(force=force)
    console.print(f"Neo4j {config.NEO4J_VERSION} built in {lib}")


@app.command()
def start(
    bolt_port: BoltPort = None,
    http_port: HttpPort = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for Bolt.")] = (
        config.NEO4J_START_TIMEOUT_S
    ),
    as_json: AsJson = False,
) -> None:
    """Start the managed Neo4j (building it first if needed); no-op when it runs."""
    _show(local_neo4j.start(bolt_port=bolt_port, http_port=http_port, wait_s=wait), as_json)


@app.command()
def stop(as_json: AsJson = False) -> None:
    """Stop the managed Neo4j (SIGTERM, then SIGKILL after a timeout). Data is kept."""
    _show(local_neo4j.stop(), as_json)


@app.command()
def status(
    as_json: AsJson = False,
    log: Annotated[bool, typer.Option("--log", help="Also print the log tail.")] = False,
) -> None:
    """Show whether the managed Neo4j runs, its URIs, pid, data directory and log."""
    _show(local_neo4j.status(), as_json, tail=log)
