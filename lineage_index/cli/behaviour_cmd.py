"""``lineage-index closeness`` and ``lineage-index determine``: the behaviour tier (issue 9).

Thin typer commands over ``lineage_index.behaviour.commands``: model references (a local
directory, a repo id in the HF cache, or a Hub download with ``--download``), probe data (a tensor
file, a folder of images, a text file; default: the source's synthetic task, or text sampled from
the LM), one library call, and a rich summary or ``--json``. Thresholds are always printed. Errors
of the one hierarchy propagate to ``cli.app.main``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape as esc

from lineage_index.cli.output import console

ProbeOpt = Annotated[Path | None, typer.Option(
    "--probe", help="Probe data: a folder of PNG/JPEG images (sub-folders = classes), a text file (one probe "
                    "per line, optionally 'label<TAB>text'; token ids per line for an LM without tokenizer), or "
                    ".safetensors (tensor 'x', optional labels 'y') / .npz / .npy; default: the source's "
                    "synthetic task (LMs: text sampled from model A).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
LinAux = Annotated[list[str] | None, typer.Option(
    "--lineage-aux", help="Your own derived (lineage) model for calibration (directory or repo id; repeat).")]
IndAux = Annotated[list[str] | None, typer.Option(
    "--independent-aux", help="Your own independent model for calibration (directory or repo id; repeat).")]
HfCache = Annotated[Path | None, typer.Option(
    "--hf-cache", help="Hugging Face cache directory to look repo ids up in (default: the standard cache).")]
Download = Annotated[bool, typer.Option(
    "--download", help="Consent to download a repo id's safetensors weights from the Hub (HF_ENDPOINT honoured) "
                       "when it is not in the HF cache. Pickle weights are never downloaded.")]
MaxMb = Annotated[float, typer.Option("--max-download-mb", help="Refuse downloads of larger weights.")]
Seed = Annotated[int, typer.Option(help="Seed of the auxiliary models and synthetic probes.")]
CacheOpt = Annotated[Path | None, typer.Option(
    "--cache", help="Directory caching calibrations per source (default: <user cache>/lineage-index/calibration).")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Calibrate again and keep nothing (no cache read or written).")]


def _cache(cache: Path | None, no_cache: bool) -> Path | None:
    from lineage_index.config import calibration_cache_dir

    return None if no_cache else (cache or calibration_cache_dir())


def _fetch(hf_cache: Path | None, download: bool, max_download_mb: float):  # type: ignore[no-untyped-def]
    from lineage_index.behaviour.commands import Fetch

    return Fetch(hf_cache=hf_cache, download=download, max_download_mb=max_download_mb)


def _threshold_line(thr, higher: bool, what: str) -> str:  # type: ignore[no-untyped-def]
    op = "≥" if higher else "<"
    return (f"threshold: {what} {op} {thr.value:.4f} (calibrated for this source: {thr.how}; lineage/derived "
            f"{list(thr.lineage_scores)}, independent {list(thr.independent_scores)})")


def register(app: typer.Typer) -> None:
    """Add ``closeness`` and ``determine`` to ``app``."""

    @app.command()
    def closeness(
        source: Annotated[str, typer.Argument(help="Source model: directory (config.json + *.safetensors) or repo id.")],
        suspect: Annotated[str, typer.Argument(help="Suspect model: directory or repo id.")],
        probe: ProbeOpt = None,
        k: Annotated[int, typer.Option("--probes-per-fold", "--k", help="Probe points kept per fold after selection.")] = 100,
        n_aux: Annotated[int, typer.Option("--n-aux", help="Auxiliary models of each kind the tool makes.")] = 8,
        lineage_aux: LinAux = None,
        independent_aux: IndAux = None,
        cache: CacheOpt = None,
        no_cache: NoCache = False,
        hf_cache: HfCache = None,
        download: Download = False,
        max_download_mb: MaxMb = 2048.0,
        seed: Seed = 0,
        as_json: JsonOpt = False,
    ) -> None:
        """Lineage closeness s = (1 − d̄)·Mr of SUSPECT to SOURCE, with a calibrated verdict."""
        from lineage_index.behaviour.commands import measure_closeness

        r = measure_closeness(source, suspect, probe, k=k, lineage_aux=lineage_aux, independent_aux=independent_aux,
                              n_aux=n_aux, cache=_cache(cache, no_cache), fetch=_fetch(hf_cache, download, max_download_mb), seed=seed)
        if as_json:
            print(json.dumps(r.to_dict(), indent=2))
            return
        style = "green" if r.verdict == "lineage" else "yellow"
        console.print(f"[bold]{esc(str(r.suspect))}[/] vs source [bold]{esc(str(r.source))}[/]: [{style}]{r.verdict}[/]"
                      f"{' (indirect: source re-headed)' if r.indirect else ''}")
        console.print(f"closeness s = {r.score:.4f}   Mr = {r.match_rate:.4f}   d̄ = {r.mean_distance_diff:.4f}"
                      f"   probes N = {r.n_probes} (matched {r.n_matched}, cap {r.cap:.3g})")
        console.print(_threshold_line(r.calibration, True, "s"))
        if r.soft_agreement is not None and r.soft_calibration is not None:
            console.print(f"soft-label agreement a = {r.soft_agreement:.4f} (the classes the source did not predict)")
            console.print(_threshold_line(r.soft_calibration, True, "a"))
        if r.signal:
            console.print(f"lineage by: {r.signal}")
        for note in r.notes:
            console.print(f"  - {esc(str(note))}")

    @app.command()
    def determine(
        a: Annotated[str, typer.Argument(help="Model A (the one calibrated): directory or repo id.")],
        b: Annotated[str, typer.Argument(help="Model B: directory or repo id.")],
        probe: ProbeOpt = None,
        points: Annotated[int, typer.Option(help="Points on the linear path.")] = 11,
        n_aux: Annotated[int, typer.Option("--n-aux", help="Auxiliary models of each kind the tool makes.")] = 2,
        lineage_aux: LinAux = None,
        independent_aux: IndAux = None,
        cache: CacheOpt = None,
        no_cache: NoCache = False,
        hf_cache: HfCache = None,
        download: Download = False,
        max_download_mb: MaxMb = 2048.0,
        seed: Seed = 0,
        as_json: JsonOpt = False,
    ) -> None:
        """Loss and error barrier on the linear path from A to B (classifiers or causal LMs): same basin or not."""
        from lineage_index.behaviour.commands import measure_determine

        r = measure_determine(a, b, probe, points=points, lineage_aux=lineage_aux, independent_aux=independent_aux,
                              n_aux=n_aux, fetch=_fetch(hf_cache, download, max_download_mb), seed=seed,
                              cache=_cache(cache, no_cache))
        if as_json:
            print(json.dumps(r.to_dict(), indent=2))
            return
        style = "green" if r.verdict == "same basin" else "yellow"
        console.print(f"[bold]{esc(str(r.a))}[/] ↔ [bold]{esc(str(r.b))}[/]: [{style}]{r.verdict}[/]")
        console.print(f"loss barrier = {r.loss_barrier:.4f}   error barrier = {r.error_barrier:.4f}   "
                      f"barrier vs output mixture = {r.ensemble_barrier:.4f}   probes = {r.n_probes}   "
                      f"BatchNorm re-estimated: {r.batchnorm_reestimated}")
        console.print("loss along t: " + " ".join(f"{v:.3f}" for v in r.curve.loss))
        what = {"loss": "loss barrier", "ensemble": "barrier vs output mixture", "error": "error barrier"}[r.statistic]
        console.print(_threshold_line(r.calibration, False, what).replace("lineage/derived", "derived"))
        for note in r.notes:
            console.print(f"  - {esc(str(note))}")
