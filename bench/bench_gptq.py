"""Benchmark: bytes and range requests to sketch a 7B-shaped GPTQ 4-bit checkpoint, counted by the server.

    python bench/bench_gptq.py            # writes bench/out/formats_gptq.txt

Writes a sparse Llama-2-7B-shaped GPTQ 4-bit ``model.safetensors`` (32 layers, hidden 4096,
intermediate 11008, vocabulary 32,000; group size 128, symmetric, AutoGPTQ's tensors
``qweight``/``qzeros``/``scales``/``g_idx`` per linear layer, embeddings, head and norms F16; the
tensors in the order ``safetensors`` writes them: by dtype, then by name; ~3.9 GB, nothing but the
header and the ``g_idx`` written: act-order groups are a random permutation of the inputs), serves it with the test Hub (weight files redirected to a CDN), ingests it through
the real huggingface_hub client (``sketch_through_hub``) and prints the bytes the server sent and
the range requests it answered. Without act-order (``desc_act: false``) by default; the act-order
figure is printed beside it (the window's ``g_idx`` is read first, and its inputs then fall in
many groups, whose scale rows are read: over the 0.1% target, see the closing note of issue 23).
"""

from __future__ import annotations

import json
import struct
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from bench_pickle import sketch_through_hub  # noqa: E402

LAYERS, HIDDEN, INTER, VOCAB, GROUP = 32, 4096, 11008, 32000, 128
# safetensors orders tensors by dtype (descending in its enum) then name
_DTYPE_RANK = {"F32": 0, "I32": 1, "F16": 2}
_SIZE = {"F32": 4, "I32": 4, "F16": 2}


def _tensors(act_order: bool) -> list[tuple[str, str, tuple[int, ...]]]:
    out = [("model.embed_tokens.weight", "F16", (VOCAB, HIDDEN)), ("lm_head.weight", "F16", (VOCAB, HIDDEN)),
           ("model.norm.weight", "F16", (HIDDEN,))]
    linears = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (HIDDEN, HIDDEN),
               "self_attn.v_proj": (HIDDEN, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN),
               "mlp.gate_proj": (INTER, HIDDEN), "mlp.up_proj": (INTER, HIDDEN), "mlp.down_proj": (HIDDEN, INTER)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", "F16", (HIDDEN,)), (p + "post_attention_layernorm.weight", "F16", (HIDDEN,))]
        for m, (o, n) in linears.items():
            out += [(p + m + ".qweight", "I32", (n // 8, o)), (p + m + ".qzeros", "I32", (n // GROUP, o // 8)),
                    (p + m + ".scales", "F16", (n // GROUP, o)), (p + m + ".g_idx", "I32", (n,))]
    return sorted(out, key=lambda t: (_DTYPE_RANK[t[1]], t[0]))


def write_sparse_7b_gptq(repo: Path, act_order: bool = False) -> int:
    """``model.safetensors`` (header, then a hole) and ``config.json``; returns the file size."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in _tensors(act_order):
        n = _SIZE[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path = repo / "model.safetensors"
    rng = np.random.default_rng(0)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + offset)  # sparse: the data is a hole, never written ...
        for name, info in header.items():  # ... but the g_idx, whose act-order groups decide the reads
            if name.endswith(".g_idx"):
                n = info["shape"][0]  # type: ignore[index]
                rank = rng.permutation(n) if act_order else np.arange(n)
                fh.seek(8 + len(raw) + info["data_offsets"][0])  # type: ignore[index]
                fh.write((rank // GROUP).astype("<i4").tobytes())
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
           "intermediate_size": INTER, "num_hidden_layers": LAYERS, "num_attention_heads": 32,
           "num_key_value_heads": 32, "vocab_size": VOCAB, "torch_dtype": "float16",
           "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": GROUP, "desc_act": act_order,
                                   "sym": True, "checkpoint_format": "gptq", "true_sequential": True}}
    (repo / "config.json").write_text(json.dumps(cfg, indent=2))
    return path.stat().st_size


def main() -> None:
    lines = []
    for act_order in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            name = "Llama-2-7b-GPTQ" + ("-act-order" if act_order else "")
            repo = Path(tmp) / "hub" / "bench" / name
            repo.mkdir(parents=True)
            size = write_sparse_7b_gptq(repo, act_order)
            what = f"7B-shaped GPTQ 4-bit g128 {'act-order' if act_order else 'no act-order'} safetensors"
            lines.append(sketch_through_hub(Path(tmp), f"bench/{name}", what, size))
            print(lines[-1], flush=True)
    out = ROOT / "bench" / "out" / "formats_gptq.txt"
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
