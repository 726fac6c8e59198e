"""CLI commands for generated zoos and evaluation: ``zoo build`` and ``eval``.

``zoo_app`` (typer) holds ``build``; ``eval_command`` is a plain typer-ready function the main
app registers as ``lineage-index eval``. Both only parse options and call library functions
(``lineage_index.zoo.build_zoo``, ``lineage_index.evaluation``); ``load_pred_edges`` reads a
CSV or JSON prediction file. Nothing here trains, scores or formats on its own.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lineage_index.errors import UsageError

if TYPE_CHECKING:
    from lineage_index.records import Edge

zoo_app = typer.Typer(
    help="Generate model zoos with known lineage (test and benchmark data).", no_args_is_help=True
)


@zoo_app.callback()
def zoo_callback() -> None:
    """Generate model zoos with known lineage (test and benchmark data)."""


def _float_or_none(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


def _edge(row: dict[str, Any]) -> Edge:
    from lineage_index.records import Edge

    try:
        child, parent = str(row["child"]).strip(), str(row["parent"]).strip()
    except KeyError as exc:
        raise UsageError(f"prediction row lacks {exc.args[0]!r}: {row}") from exc
    confidence = _float_or_none(row.get("confidence"))
    return Edge(
        child=child,
        parent=parent,
        relation=str(row.get("relation") or "finetune").strip(),
        source=str(row.get("source") or "recovered").strip(),
        confidence=1.0 if confidence is None else confidence,
        closeness=_float_or_none(row.get("closeness")),
    )


def load_pred_edges(path: Path) -> list[Edge]:
    """Predicted edges from a CSV (header child,parent,relation[,source,confidence,closeness])
    or a JSON file (a list of objects, or an object with an ``edges`` list)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"prediction file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        data = json.loads(text)
        rows = data.get("edges", []) if isinstance(data, dict) else data
        return [_edge(r) for r in rows]
    return [_edge(r) for r in csv.DictReader(text.splitlines())]


@zoo_app.command("build")
def build_command(
    out: Annotated[
        Path, typer.Argument(help="Output directory (empty, absent, or an earlier zoo).")
    ],
    size: Annotated[
        str, typer.Option(help="tiny | small (~30 models, minutes) | medium (>=100 models).")
    ] = "small",
    seed: Annotated[int, typer.Option(help="Same seed, same zoo (byte-identical tensors).")] = 0,
    progress: Annotated[bool, typer.Option(help="Show progress.")] = True,
    classifiers: Annotated[bool, typer.Option(
        "--classifiers", help="The classifier family instead (behaviour tier): image classifiers (CNN, ViT) "
                              "and, with --size medium, a MiniLM text classifier; fine-tunes, pruning, int8, "
                              "fp16, adversarial, transfer, distilled students, independent models.")] = False,
    recipe: Annotated[str, typer.Option(
        help="default | wild: the second recipe, made to differ from the default on purpose (GPT-NeoX, a wider "
             "Llama and the real MiniLM as roots; sibling swarms, quantised-as-float, healed and 2:4 pruning, "
             "vocabulary extension, new heads, TIES/DARE merges of siblings; 35 models, --size ignored). "
             "Seed 7 is held out of every threshold choice.")] = "default",
    depth: Annotated[bool, typer.Option(
        "--depth", help="The depth-changing Llama zoo instead (8 models, --size ignored): layer pruning, "
                        "a passthrough frankenmerge, depth up-scaling, independent roots.")] = False,
    hf_format: Annotated[bool, typer.Option(
        "--hf-format", help="With --classifiers: transformers ViT and ResNet families saved in Hugging Face layout "
                            "(config.json of the model type, preprocessor_config.json, transformers tensor names), "
                            "three independent models per family, and labelled probe images in OUT/.probes.")] = False,
    formats: Annotated[bool, typer.Option(
        "--formats", help="Also derive other weight formats from the zoo's Llama models: GGUF repos of several "
                          "quantisation levels, F16 GGUF, pickle checkpoints (single and sharded), a hostile "
                          "pickle and an independent look-alike.")] = False,
) -> None:
    """Build a zoo of really trained tiny models in Hub layout, with truth.json."""
    from rich.console import Console

    from lineage_index.zoo import SIZES, build_zoo

    if recipe not in ("default", "wild"):
        raise UsageError("--recipe must be default or wild")
    if recipe == "wild":
        from lineage_index.zoo.wild import build_wild

        w = build_wild(out, seed=seed, progress=progress)
        Console().print(f"[bold]{w['models']}[/] models, {w['edges']} edges, {w['bytes'] / 1e6:.1f} MB in "
                        f"{w['seconds']:.0f}s -> {out / 'truth.json'}")
        return
    if depth:
        from lineage_index.zoo.depth import build_depth_zoo

        d = build_depth_zoo(out, seed=seed, progress=progress)
        Console().print(f"[bold]{d.n_models}[/] models, {d.n_edges} edges ({d.relations}), layers "
                        f"{sorted(set(d.layers.values()))}, {d.bytes_written / 1e6:.1f} MB in {d.seconds:.0f}s "
                        f"-> {d.truth_path}")
        return
    if classifiers:
        from lineage_index.zoo.classifiers import build_classifier_zoo

        c = build_classifier_zoo(out, size=size, seed=seed, progress=progress, hf_format=hf_format)
        Console().print(f"[bold]{c.n_models}[/] classifiers, {c.n_edges} edges ({c.relations}), groups {c.groups}, "
                        f"{c.bytes_written / 1e6:.1f} MB in {c.seconds:.0f}s -> {c.truth_path}")
        if hf_format:
            Console().print(f"labelled probe images: {out / '.probes'}")
        return
    if hf_format:
        raise UsageError("--hf-format goes with --classifiers")
    if size not in SIZES:
        raise UsageError(f"--size must be one of {', '.join(SIZES)}")
    summary = build_zoo(out, size=size, seed=seed, progress=progress)
    console = Console()
    if formats:
        from lineage_index.zoo.formats import derive_formats

        f = derive_formats(out, seed=seed)
        console.print(f"formats: [bold]{f['models']}[/] models added ({f['edges']} edges) from {', '.join(f['parents'])}")
    console.print(
        f"[bold]{summary.n_models}[/] models, {summary.n_edges} edges, depth {summary.max_depth}, "
        f"{summary.bytes_written / 1e6:.1f} MB in {summary.seconds:.0f}s -> {summary.truth_path}"
    )
    console.print(
        "relations: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.relations.items()))
    )


def eval_command(
    truth: Annotated[Path, typer.Option(help="truth.json of a generated zoo.")],
    pred: Annotated[
        Path | None,
        typer.Option(help="Predicted edges: CSV or JSON rows child,parent,relation[,...]."),
    ] = None,
    baseline: Annotated[
        bool, typer.Option(help="Also score the declared-base_model-only baseline.")
    ] = True,
    format: Annotated[str, typer.Option("--format", help="table | json")] = "table",
) -> None:
    """Score predicted lineage edges (and the declared-only baseline) against a zoo's truth."""
    from lineage_index.evaluation import declared_baseline, score, scores_json, scores_table

    if format not in ("table", "json"):
        raise UsageError("--format must be table or json")
    if not truth.is_file():
        raise UsageError(f"truth file not found: {truth}")
    rows = []
    if pred is not None:
        rows.append(score(load_pred_edges(pred), truth, name=pred.name))
    if baseline or pred is None:
        rows.append(score(declared_baseline(truth), truth, name="declared-only"))
    if format == "json":
        typer.echo(scores_json(rows))
    else:
        from rich.console import Console

        console = Console()
        if not console.is_terminal:  # piped: do not squeeze the table into 80 columns
            console = Console(width=160)
        console.print(scores_table(rows, title=f"lineage evaluation vs {truth}"))
