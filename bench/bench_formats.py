"""Benchmark: bytes and requests to sketch a 7B-shaped GGUF (Q4_K_M-sized), counted by the server.

    python bench/bench_formats.py

Writes a sparse Llama-2-7B-shaped GGUF (32 layers, hidden 4096, intermediate 11008, vocabulary
32,000 with a tokenizer of that size in its metadata; matrices Q4_K, embeddings and output Q6_K
as llama.cpp's Q4_K_M; ~3.9 GB on disk, nothing but the header written), serves it with the test
Hub (weight files redirected to a CDN, as the real Hub does), ingests it through the real
huggingface_hub client, and prints the bytes the server sent and the requests it answered, as a
fraction of the file. Pickle checkpoints are not read yet (see the closing notes).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import gguf  # noqa: E402
import numpy as np  # noqa: E402
from bench_pickle import sketch_through_hub  # noqa: E402
from gguf.constants import GGML_QUANT_SIZES  # noqa: E402
from gguf.constants import GGMLQuantizationType as Q  # noqa: E402

LAYERS, HIDDEN, INTER, VOCAB, HEADS, KV_HEADS = 32, 4096, 11008, 32000, 32, 32


def write_sparse_7b_gguf(path: Path) -> int:
    """The header as llama.cpp writes it, then a hole for the data; returns the file size."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("llama.attention.head_count", HEADS)
    w.add_uint32("llama.attention.head_count_kv", KV_HEADS)
    w.add_uint32("llama.block_count", LAYERS)
    w.add_string("general.name", "Llama 2 7B shaped")
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<tok{i}>" for i in range(VOCAB)])
    w.add_token_scores([0.0] * VOCAB)
    w.add_token_types([1] * VOCAB)
    sizes: list[int] = []

    def info(name: str, rows: int, cols: int, qtype: Q) -> None:
        block, type_size = GGML_QUANT_SIZES[qtype]
        nbytes = rows * (cols // block) * type_size
        w.add_tensor_info(name, (rows, cols // block * type_size), np.dtype(np.uint8), nbytes, raw_dtype=qtype)
        sizes.append(nbytes)

    def vector(name: str) -> None:
        w.add_tensor_info(name, (HIDDEN,), np.dtype(np.float32), HIDDEN * 4)
        sizes.append(HIDDEN * 4)

    info("token_embd.weight", VOCAB, HIDDEN, Q.Q6_K)
    for i in range(LAYERS):
        p = f"blk.{i}."
        for t in ("attn_q", "attn_k", "attn_v", "attn_output"):
            info(p + t + ".weight", HIDDEN, HIDDEN, Q.Q4_K)
        info(p + "ffn_gate.weight", INTER, HIDDEN, Q.Q4_K)
        info(p + "ffn_up.weight", INTER, HIDDEN, Q.Q4_K)
        info(p + "ffn_down.weight", HIDDEN, INTER, Q.Q6_K)
        vector(p + "attn_norm.weight")
        vector(p + "ffn_norm.weight")
    vector("output_norm.weight")
    info("output.weight", VOCAB, HIDDEN, Q.Q6_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    header = path.stat().st_size
    total = -(-header // 32) * 32 + sum(-(-n // 32) * 32 for n in sizes)
    with open(path, "r+b") as fh:
        fh.truncate(total)  # sparse: the data is a hole, never written
    return total


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "hub" / "bench" / "Llama-2-7b-GGUF"
        repo.mkdir(parents=True)
        path = repo / "llama-2-7b.Q4_K_M.gguf"
        size = write_sparse_7b_gguf(path)
        print(sketch_through_hub(Path(tmp), "bench/Llama-2-7b-GGUF", "7B-shaped Q4_K_M GGUF", size))

if __name__ == "__main__":
    main()
