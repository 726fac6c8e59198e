"""``lineage-index check TARGET``: one calibrated lineage verdict for one model (issue 10).

A thin typer command over ``indexer.check.check``: it parses options, calls the library,
prints a rich summary (or ``--json``) and exits with the result's code (0 supported / lineage
found, 3 contradicted or a policy failure, 4 lineage unknown, 2 usage or read error).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lineage_index.cli.output import console, err_console
from lineage_index.errors import LineageIndexError
from lineage_index.indexer.check import CheckResult, check
from lineage_index.indexer.store import SketchStore
from lineage_index.records import ModelRecord

LABELS = {
    "copy": "exact or re-upload copy", "quantized": "quantised copy", "adapter": "adapter",
    "finetune": "fine-tune", "merge": "merge", "prune": "pruned",
    "family_unresolved": "same family, parent unresolved", "no_relative": "no known relative",
    "insufficient": "insufficient evidence",
}


def _records(directory: Path | None) -> dict[str, ModelRecord] | None:
    if directory is None:
        return None
    from lineage_index.indexer.sources import DirSource

    return {r.id: r for r in DirSource(directory).iter_records() if isinstance(r, ModelRecord)}


def print_result(r: CheckResult) -> None:
    """Rich terminal summary of one check."""
    parents = ", ".join(f"{p} ({w:.2f})" for p, w in zip(r.parents, r.coefficients, strict=False)) \
        if r.coefficients else ", ".join(r.parents)
    console.print(f"[bold]{r.target}[/]: [bold cyan]{LABELS.get(r.verdict, r.verdict)}[/]"
                  f"{' of ' + parents if parents else ''}  (p = {r.probability:.2f})")
    style = {"supported": "green", "contradicted": "red"}.get(r.claim.status, "yellow")
    declared = ", ".join(r.claim.declared) or "nothing"
    console.print(f"card declares {declared}: [{style}]{r.claim.status}[/] {r.claim.reason}")
    for line in r.evidence:
        console.print(f"  - {line}")
    if r.candidates:
        table = Table(title="best candidates")
        for col in ("model", "relation", "p", "cos", "z (calibrated)", "dist", "evidence"):
            table.add_column(col)
        for c in r.candidates[:5]:
            table.add_row(c.model_id, c.relation, f"{c.probability:.2f}", f"{c.cos_median:.4f}", f"{c.z:.1f}",
                          f"{c.dist:.4f}", c.evidence)
        console.print(table)
    if r.license_chain:
        console.print("parent chain licences: " + ", ".join(f"{m} ({lic or 'unknown'})" for m, lic in r.license_chain))
    for f in r.policy_failures:
        console.print(f"[red]policy:[/] {f}")
    console.print(f"read {r.bytes_read:,} bytes in {r.requests} requests, {r.seconds:.2f} s"
                  f"{'; sketch added to the store' if r.added else ''}; exit {r.exit_code}")


def register(app: typer.Typer) -> None:
    """Add the ``check`` command to ``app``."""

    @app.command("check")
    def check_cmd(
        target: Annotated[str, typer.Argument(help="Hub id, model directory, .safetensors file or sharded index.")],
        store: Annotated[Path | None, typer.Option(help="Sketch store (else LINEAGE_INDEX_CACHE).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
        add: Annotated[bool, typer.Option("--add", help="Write the target's sketch into the store.")] = False,
        model_id: Annotated[str | None, typer.Option("--id", help="Id for a local target.")] = None,
        records: Annotated[Path | None, typer.Option(
            "--records", help="Hub-layout directory whose cards give stored models' licences and times.")] = None,
        fail_on_license: Annotated[str | None, typer.Option(
            "--fail-on-license", help="Exit 3 when the recovered parent chain carries this licence.")] = None,
        fail_on_undeclared: Annotated[bool, typer.Option(
            "--fail-on-undeclared", help="Exit 3 on lineage the card does not declare.")] = False,
        endpoint: Annotated[str | None, typer.Option(help="Hub endpoint (else HF_ENDPOINT).")] = None,
        k: Annotated[int, typer.Option(help="Candidates from the nearest-neighbour search.")] = 10,
    ) -> None:
        """Check one model against the index: copy, quantised, adapter, fine-tune, merge, pruned, or not."""
        try:
            result = check(target, SketchStore(store) if store else SketchStore(), model_id=model_id, k=k,
                           records=_records(records), fail_on_license=fail_on_license,
                           fail_on_undeclared=fail_on_undeclared, add=add, endpoint=endpoint,
                           token=os.environ.get("HF_TOKEN"))
        except LineageIndexError as exc:
            err_console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(exc.exit_code) from None
        if as_json:
            print(result.to_json())
        else:
            print_result(result)
        raise typer.Exit(result.exit_code)
