"""Benchmark: sibling swarms against fine-tune chains (star or chain), per architecture.

    python bench/bench_swarm.py [--arch llama-nano --arch gpt2-nano ...] [--steps 30] [--siblings 4]

For each architecture: a root is really trained (CPU), then SIBLINGS fine-tunes of it with one
recipe and one dataset (only the seed differs: correlated updates) and a chain of three
fine-tunes on changing data, all written in Hub layout with cards that declare the true parent.
Prints edge precision/recall (with cards, and with the cards' base models removed), the true
declarations flagged contradicted, and the containment kappa of sibling and chain triples.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from lineage_index import api
from lineage_index.indexer.pipeline import asserted_edges, recover, sketch_all
from lineage_index.indexer.recover.verify import containment
from lineage_index.zoo.archs import load_into, make_model, state_of
from lineage_index.zoo.training import TrainSpec, train
from lineage_index.zoo.writing import write_model_repo


def _card(base: str | None) -> str:
    return "---\nlicense: apache-2.0\n" + (f"base_model: {base}\n" if base else "") + "---\n"


def build(out: Path, arch: str, steps: int, siblings: int) -> dict[str, str]:
    root = make_model(arch, 1)
    train(root, arch, TrainSpec(steps=60, lr=3e-3, tasks=((11,),), seed=1))
    state = state_of(root)
    write_model_repo(out / "org" / "root", arch, "F32", state, 1, _card(None))
    truth = {}
    for i in range(siblings):
        m = make_model(arch, 100 + i)
        load_into(m, state)
        train(m, arch, TrainSpec(steps=steps, lr=1e-3, tasks=((11, 5),), seed=100 + i))
        write_model_repo(out / "org" / f"sib{i}", arch, "F32", state_of(m), 1, _card("org/root"))
        truth[f"org/sib{i}"] = "org/root"
    prev, pstate = "org/root", state
    for j in range(3):
        m = make_model(arch, 200 + j)
        load_into(m, pstate)
        train(m, arch, TrainSpec(steps=steps, lr=1e-3, tasks=((11, 20 + j),), seed=200 + j))
        pstate = state_of(m)
        write_model_repo(out / "org" / f"chain{j}", arch, "F32", pstate, 1, _card(prev))
        truth[f"org/chain{j}"] = prev
        prev = f"org/chain{j}"
    return truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", action="append", default=None)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--siblings", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for arch in args.arch or ["llama-nano", "gpt2-nano", "qwen2-nano"]:
        with tempfile.TemporaryDirectory() as tmp:
            truth = build(Path(tmp), arch, args.steps, args.siblings)
            src = api.make_source(directory=Path(tmp))
            records, report = sketch_all(src.iter_records(), src.open_reader, None)
            true = set(truth.items())
            for name, recs in (("cards", records),
                               ("no cards", {m: replace(r, base_models=()) for m, r in records.items()})):
                edges = recover(recs, report.sketches).edges
                pred = {(e.child, e.parent) for e in asserted_edges(edges)}
                tp = len(pred & true)
                wrong = sum(1 for e in edges if e.contradicted and truth.get(e.child) == e.parent)
                print(f"{arch:12s} {name:9s} P {tp / max(1, len(pred)):.3f} R {tp / len(true):.3f} "
                      f"true declarations contradicted {wrong}")
            s = report.sketches
            sib = containment(s["org/root"], s["org/sib0"], s["org/sib1"])
            link = containment(s["org/chain0"], s["org/chain1"], s["org/chain2"])
            print(f"{arch:12s} kappa sibling {sib[0] if sib else float('nan'):.3f}  "
                  f"chain link {link[0] if link else float('nan'):.3f}")


if __name__ == "__main__":
    main()
