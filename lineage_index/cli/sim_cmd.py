"""CLI for the simulated hub: ``sim build``, ``sim recover``, ``sim calibrate``.

Thin typer commands over ``lineage_index.sim`` (build, calibrate) and
``lineage_index.indexer.recover.batch`` (recovery over a packed store). They parse options,
call one library function and print its summary; nothing is computed here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lineage_index.cli.output import console, emit
from lineage_index.config import stderr_console

sim_app = typer.Typer(help="A simulated hub at the sketch level, for benchmarks at hub scale.",
                      no_args_is_help=True)


def _bar() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=stderr_console())


@sim_app.command("build")
def build(
    out: Annotated[Path, typer.Argument(help="Empty directory for the store, truth.json and sim.json.")],
    models: Annotated[int, typer.Option("--models", "-n", min=1, help="Number of simulated models.")],
    seed: Annotated[int, typer.Option(help="Seed (the same N and seed give the same hub).")] = 0,
    matrices: Annotated[int, typer.Option(min=1, max=4, help="Weight matrices sampled per model.")] = 4,
    rows: Annotated[int, typer.Option(min=1, help="Sampled rows per matrix.")] = 4,
    cols: Annotated[int, typer.Option(min=8, help="Sampled columns per row.")] = 64,
) -> None:
    """Write a simulated hub of N models: packed sketch store with records, and its truth."""
    from lineage_index.sim.build import build_sim
    from lineage_index.sim.values import Geometry

    with _bar() as bar:
        task = bar.add_task("simulating", total=models)
        summary = build_sim(out, models, seed=seed, geometry=Geometry(matrices, rows, cols),
                            progress=lambda done, total: bar.update(task, completed=done))
    console.print_json(json.dumps(dataclasses.asdict(summary)))


@sim_app.command("recover")
def recover(
    out: Annotated[Path, typer.Argument(help="A simulated hub (or any directory whose store/ is packed).")],
    edges_out: Annotated[Path | None, typer.Option(help="Edges as JSON (default OUT/edges.json).")] = None,
    k: Annotated[int, typer.Option("--neighbours", "--k", min=1, help="Candidates from the nearest-neighbour "
                                                                    "search, per model.")] = 10,
) -> None:
    """Recover lineage over the packed store, family by family; score with ``eval --pred``."""
    from lineage_index.indexer.recover.batch import edges_json, peak_rss_bytes, recover_packed
    from lineage_index.indexer.sketch.store import SketchStore

    store = SketchStore(out / "store" if (out / "store").is_dir() else out)
    if not out.is_dir() or not len(store.packed):
        from lineage_index.errors import UsageError

        raise UsageError(f"{out}: no packed sketch store here (build one with `lineage-index sim build`)")
    with _bar() as bar:
        task = bar.add_task("recovering", total=None)
        result = recover_packed(store, k=k, progress=lambda done, total: bar.update(task, completed=done, total=total))
    path = edges_out or out / "edges.json"
    path.write_text(edges_json(result.edges))
    rows = [{"stage": s, "wall_s": round(result.clock.wall[s], 1), "cpu_s": round(result.clock.cpu[s], 1)}
            for s in result.clock.wall]
    emit(rows, ["stage", "wall_s", "cpu_s"], "table", title="recovery stages")
    console.print(f"families: {result.families}  models: {result.models}  pairs: {result.pairs:,}  "
                  f"related: {result.related:,}  merge fits: {result.merge_fits:,}  indexes: {result.index_kinds}  "
                  f"peak RSS: {peak_rss_bytes() / 2**30:.2f} GiB")
    console.print(f"{len(result.edges):,} edges written to {path}")


@sim_app.command("calibrate")
def calibrate(
    zoo: Annotated[list[Path], typer.Option("--zoo", help="A zoo directory with truth.json (repeat).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write the fitted parameters "
                                                  "(default: the shipped calibration.json).")] = None,
    store: Annotated[Path | None, typer.Option(help="Sketch store to reuse for the zoos' sketches.")] = None,
    check: Annotated[Path | None, typer.Option(help="A simulated hub to compare with the zoos.")] = None,
) -> None:
    """Fit the simulation's per-relation parameters on real zoo sketches (and compare a simulation)."""
    from lineage_index.sim.calibrate import (
        compare_table,
        fit,
        measure_zoos,
        observe_sim,
        write_calibration,
    )

    obs = measure_zoos(zoo, store)
    path = write_calibration(fit(obs), out)
    console.print(f"calibration written to {path}")
    if check is not None:
        rows = compare_table(obs, observe_sim(check))
        emit(rows, ["method", "measure", "zoo_n", "zoo", "sim_n", "sim"], "table",
             title="median (10th..90th percentile): zoo sketches vs simulated sketches")
