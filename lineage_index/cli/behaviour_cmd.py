"""``lineage-index closeness`` and ``lineage-index determine``: the behaviour tier (issue 9).

Thin typer commands over ``lineage_index.behaviour``: load the models (safetensors directories
only), read the probe data (or use the source's synthetic task), call one library function, and
print a rich summary or ``--json``. Errors of the one hierarchy propagate to ``cli.app.main``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from lineage_index.cli.output import console

ProbeOpt = Annotated[Path | None, typer.Option(
    "--probe", help="Probe data: .safetensors (tensor 'x', optional labels 'y'), .npz or .npy; "
                    "default: the source's synthetic task.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
LinAux = Annotated[list[Path] | None, typer.Option(
    "--lineage-aux", help="Your own derived (lineage) model dir for calibration (repeat).")]
IndAux = Annotated[list[Path] | None, typer.Option(
    "--independent-aux", help="Your own independent model dir for calibration (repeat).")]


def _probes(path: Path | None, model):  # type: ignore[no-untyped-def]
    if path is None:
        return None
    from lineage_index.behaviour.probes import load_probes

    return load_probes(path, tuple(model.task.input_shape) if model.task else None)


def _load_all(paths: list[Path] | None):  # type: ignore[no-untyped-def]
    from lineage_index.behaviour.models import load

    return [load(p) for p in paths or []] or None


def _threshold_line(thr, higher: bool) -> str:  # type: ignore[no-untyped-def]
    op = "≥" if higher else "<"
    return (f"threshold {op} {thr.value:.4f} (calibrated for this source: {thr.how}; lineage/derived "
            f"{list(thr.lineage_scores)}, independent {list(thr.independent_scores)})")


def register(app: typer.Typer) -> None:
    """Add ``closeness`` and ``determine`` to ``app``."""

    @app.command()
    def closeness(
        source: Annotated[Path, typer.Argument(help="Source model directory (config.json + *.safetensors).")],
        suspect: Annotated[Path, typer.Argument(help="Suspect model directory.")],
        probe: ProbeOpt = None,
        k: Annotated[int, typer.Option("--k", help="Probe points kept after selection.")] = 100,
        lineage_aux: LinAux = None,
        independent_aux: IndAux = None,
        cache: Annotated[Path | None, typer.Option(help="Directory caching source profiles.")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Lineage closeness s = (1 − d̄)·Mr of SUSPECT to SOURCE, with a calibrated verdict."""
        from lineage_index.behaviour import closeness as run
        from lineage_index.behaviour.models import load

        src, sus = load(source), load(suspect)
        r = run(src, sus, _probes(probe, src), k=k, lineage_aux=_load_all(lineage_aux),
                independent_aux=_load_all(independent_aux), cache_dir=cache)
        if as_json:
            print(json.dumps(r.to_dict(), indent=2))
            return
        style = "green" if r.verdict == "lineage" else "yellow"
        console.print(f"[bold]{r.suspect}[/] vs source [bold]{r.source}[/]: [{style}]{r.verdict}[/]"
                      f"{' (indirect: source re-headed)' if r.indirect else ''}")
        console.print(f"closeness s = {r.score:.4f}   Mr = {r.match_rate:.4f}   d̄ = {r.mean_distance_diff:.4f}"
                      f"   probes N = {r.n_probes} (matched {r.n_matched}, cap {r.cap:.3g})")
        console.print(_threshold_line(r.calibration, True))
        for note in r.notes:
            console.print(f"  - {note}")

    @app.command()
    def determine(
        a: Annotated[Path, typer.Argument(help="Model A directory (the one calibrated).")],
        b: Annotated[Path, typer.Argument(help="Model B directory.")],
        probe: ProbeOpt = None,
        points: Annotated[int, typer.Option(help="Points on the linear path.")] = 11,
        lineage_aux: LinAux = None,
        independent_aux: IndAux = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Loss and error barrier on the linear path from A to B: same basin or not."""
        from lineage_index.behaviour import determine as run
        from lineage_index.behaviour.models import load

        ma, mb = load(a), load(b)
        r = run(ma, mb, _probes(probe, ma), points=points, derived_aux=_load_all(lineage_aux),
                independent_aux=_load_all(independent_aux))
        if as_json:
            print(json.dumps(r.to_dict(), indent=2))
            return
        style = "green" if r.verdict == "same basin" else "yellow"
        console.print(f"[bold]{r.a}[/] ↔ [bold]{r.b}[/]: [{style}]{r.verdict}[/]")
        console.print(f"loss barrier = {r.loss_barrier:.4f}   error barrier = {r.error_barrier:.4f}   "
                      f"probes = {r.n_probes}   BatchNorm re-estimated: {r.batchnorm_reestimated}")
        console.print("loss along t: " + " ".join(f"{v:.3f}" for v in r.curve.loss))
        console.print(_threshold_line(r.calibration, False).replace("lineage/derived", "derived"))
        for note in r.notes:
            console.print(f"  - {note}")
