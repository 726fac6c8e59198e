"""Prints a zoo's composition and the declared-base_model-only baseline scores.

Usage: python bench/zoo_baseline.py ZOO_DIR [ZOO_DIR ...]
       python bench/zoo_baseline.py --build OUT --size small --seed 0   (build first, timed)

Figures only (a benchmark, not a test): number of models per relation / method / architecture,
roots, depth, card-mess counts, and the scores of the edges the cards declare.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from rich.console import Console

from lineage_index.evaluation import declared_baseline, score, scores_table


def describe(zoo: Path, console: Console) -> None:
    truth = json.loads((zoo / "truth.json").read_text())
    models, edges = truth["models"], truth["edges"]
    console.rule(f"{zoo}  ({truth.get('zoo', {})})")
    console.print(
        f"models {len(models)}, edges {len(edges)}, conflicts {len(truth.get('conflicts', []))}"
    )
    console.print("relations:", dict(Counter(e["relation"] for e in edges)))
    console.print("methods:", dict(Counter(v["method"] for v in models.values())))
    console.print("architectures:", dict(Counter(v["architecture"] for v in models.values())))
    roots = [m for m, v in models.items() if not v["parents"]]
    console.print(f"roots ({len(roots)}):", ", ".join(f"{r} [{models[r]['arch']}]" for r in roots))
    console.print("max depth:", max(v["depth"] for v in models.values()))
    console.print(
        "card base_model:", dict(Counter(v["mess"]["base_model"] for v in models.values()))
    )
    console.print("card licence:", dict(Counter(v["mess"]["license"] for v in models.values())))
    s = score(declared_baseline(truth), truth, name="declared-only")
    console.print(scores_table([s], title=f"declared-only baseline on {zoo.name}"))
    console.print(
        "per relation recall:", {k: round(v, 3) for k, v in s.per_relation_recall.items()}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoos", nargs="*", type=Path)
    parser.add_argument("--build", type=Path, help="build a zoo here first (timed)")
    parser.add_argument("--size", default="small")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console = Console(width=140)
    zoos = list(args.zoos)
    if args.build:
        from lineage_index.zoo import build_zoo

        started = time.perf_counter()
        summary = build_zoo(args.build, args.size, args.seed)
        console.print(
            f"built {args.size} seed {args.seed}: {summary.n_models} models in "
            f"{time.perf_counter() - started:.1f}s ({summary.bytes_written / 1e6:.0f} MB)"
        )
        zoos.append(args.build)
    for zoo in zoos:
        describe(zoo, console)


if __name__ == "__main__":
    main()
