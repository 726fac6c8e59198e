"""Benchmark: bytes read, requests and speed of the weight sketch.

    python bench/bench_sketch.py --zoo /path/to/medium-zoo      # zoo built by `lineage-index zoo build`
    python bench/bench_sketch.py --seven-b                     # synthetic 7B-shaped checkpoint only

Prints, for every model of the zoo (read from local disk) and for a synthetic Llama-2-7B-shaped
checkpoint (a sparse file with the real header layout, BF16, two shards): bytes read per model
(headers included) and as a fraction of the model's size, requests per model, and models per
second sketched from local disk. The 7B checkpoint is also read through the local Hub test
server (real huggingface_hub HTTP client, HTTP Range requests) to count HTTP requests.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lineage_index.indexer.pipeline import sketch_all
from lineage_index.indexer.read.sources import DirSource

LLAMA7B = dict(layers=32, hidden=4096, inter=11008, vocab=32000)


def write_sparse_llama7b(repo: Path) -> int:
    """A 7B-shaped checkpoint in two BF16 shards: real header, sparse (unwritten) data."""
    h, i, v, n = LLAMA7B["hidden"], LLAMA7B["inter"], LLAMA7B["vocab"], LLAMA7B["layers"]
    tensors: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (v, h))]
    for layer in range(n):
        p = f"model.layers.{layer}."
        tensors += [(p + f"self_attn.{x}_proj.weight", (h, h)) for x in "qkvo"]
        tensors += [(p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                    (p + "mlp.down_proj.weight", (h, i))]
        tensors += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,))]
    tensors += [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]
    repo.mkdir(parents=True, exist_ok=True)
    half = len(tensors) // 2
    weight_map, total = {}, 0
    for shard, chunk in enumerate((tensors[:half], tensors[half:]), start=1):
        name = f"model-{shard:05d}-of-00002.safetensors"
        header, offset = {}, 0
        for tname, shape in chunk:
            size = int(np.prod(shape)) * 2
            header[tname] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
            weight_map[tname] = name
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with open(repo / name, "wb") as fh:
            fh.write(struct.pack("<Q", len(raw)) + raw)
            fh.truncate(8 + len(raw) + offset)  # sparse: no data blocks written
        total += 8 + len(raw) + offset
    (repo / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (repo / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    return total


def report(label: str, sketches: list, seconds: float | None) -> None:
    b = np.array([s.bytes_read for s in sketches], dtype=float)
    size = np.array([s.model_bytes for s in sketches], dtype=float)
    req = np.array([s.requests for s in sketches], dtype=float)
    frac = b / size * 100
    print(f"{label}: {len(sketches)} models")
    print(f"  bytes read / model: mean {b.mean():,.0f}  max {b.max():,.0f}")
    print(f"  fraction of model size: mean {frac.mean():.4f}%  max {frac.max():.4f}%")
    print(f"  requests / model: mean {req.mean():.1f}  max {req.max():.0f}")
    if seconds is not None:
        print(f"  sketch speed: {len(sketches) / seconds:.1f} models/s ({seconds:.2f} s)")


def bench_zoo(zoo: Path) -> None:
    src = DirSource(zoo)
    records = list(src.iter_records())  # headers are read here too; timed below with the sketches
    t0 = time.perf_counter()
    _, rep = sketch_all(iter(records), src.open_reader, None)
    t_sketch = time.perf_counter() - t0
    t0 = time.perf_counter()
    src2 = DirSource(zoo)
    _, rep2 = sketch_all(src2.iter_records(), src2.open_reader, None)
    t_all = time.perf_counter() - t0
    report(f"zoo {zoo}", list(rep.sketches.values()), t_sketch)
    print(f"  end to end incl. listing and header parsing: {len(rep2.sketches) / t_all:.1f} models/s")
    if rep.failures:
        print(f"  failures: {rep.failures}")


def bench_seven_b() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "hub"
        total = write_sparse_llama7b(root / "synthetic" / "llama-2-7b-shaped")
        print(f"synthetic 7B checkpoint: {total / 1e9:.2f} GB (sparse on disk)")
        src = DirSource(root)
        _, rep = sketch_all(src.iter_records(), src.open_reader, None)
        report("7B from local disk (pread)", list(rep.sketches.values()), None)
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        try:
            from hubserver import LocalHub

            from lineage_index.indexer.read.hub import HubSource
        except ImportError as exc:  # pragma: no cover
            print(f"  (HTTP run skipped: {exc})")
            return
        with LocalHub(root) as hub:
            hsrc = HubSource(models=["synthetic/llama-2-7b-shaped"], endpoint=hub.url, token=False)
            _, hrep = sketch_all(hsrc.iter_records(), hsrc.open_reader, None)
            report("7B over HTTP (local Hub test server)", list(hrep.sketches.values()), None)
            print(f"  resolve requests seen by the server: {len(hub.requests_for(route='resolve'))}, "
                  f"weight/header bytes served: {hub.bytes_served():,}")
            if hrep.failures:
                print(f"  failures: {hrep.failures}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", type=Path)
    ap.add_argument("--seven-b", action="store_true")
    args = ap.parse_args()
    if args.zoo:
        bench_zoo(args.zoo)
    if args.seven_b or not args.zoo:
        bench_seven_b()


if __name__ == "__main__":
    main()
