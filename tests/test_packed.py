"""Packed quantised safetensors (issue 23): FP8 (block and channel scales), compressed-tensors int4
and MLX 2/3/4/6/8-bit, read on the sampled rows only and dequantised exactly as a full
dequantisation of the tensor would (MLX: also files written by ``mx.quantize``, against
``mx.dequantize``). bitsandbytes 4-bit: tests/test_bnb4_quant.py; GPTQ/AWQ: tests/test_gptq_awq_quant.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lineage_index.indexer.read.packed import (
    aux_names,
    aux_rows,
    dequantize,
    logical_tensors,
    row_span,
)
from lineage_index.indexer.read.ranges import LocalReader
from lineage_index.indexer.read.safetensors import read_model_tensors
from lineage_index.zoo.formats import write_packed


def _full_reference(path: Path, name: str, scheme: str) -> np.ndarray:
    """The whole tensor dequantised from the documented layout, independently of read.packed."""
    from safetensors.torch import load_file

    t = load_file(str(path))
    m = name[: -len(".weight")]
    if scheme.startswith("fp8"):
        w = t[name].float().numpy()
        if scheme == "fp8-block":
            s = t[m + ".weight_scale_inv"].numpy()
            s = np.repeat(np.repeat(s, 16, axis=0), 16, axis=1)[: w.shape[0], : w.shape[1]]
        else:
            s = t[m + ".weight_scale"].numpy()
        return w * s
    if scheme.startswith("ct"):  # compressed-tensors: the library's own unpacking
        from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

        shape = torch.Size(t[m + ".weight_shape"].tolist())
        q = unpack_from_int32(t[m + ".weight_packed"], 4, shape).float().numpy()
        scale = t[m + ".weight_scale"].float().numpy()
        g = np.arange(q.shape[1]) // 16
        zero = np.zeros_like(scale)
        if m + ".weight_zero_point" in t:
            zero = unpack_from_int32(t[m + ".weight_zero_point"], 4, scale.shape, packed_dim=0).float().numpy()
        return (q - zero[:, g]) * scale[:, g]
    bits = int(scheme.split("-")[1])
    words = t[name].view(torch.int32).numpy().view(np.uint32)
    # each row one little-endian bit stream: value i is bits [i*bits, (i+1)*bits) of the row
    stream = np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")
    scales, biases = t[m + ".scales"].float().numpy(), t[m + ".biases"].float().numpy()
    cols = scales.shape[1] * 16  # the zoo's groups of 16 (a row padded to whole words)
    q = stream[:, : cols * bits].reshape(words.shape[0], cols, bits).astype(np.int64) @ (1 << np.arange(bits))
    g = np.arange(q.shape[1]) // 16
    return q * scales[:, g] + biases[:, g]


@pytest.mark.parametrize("scheme", ["fp8-block", "fp8-channel", "mlx-4", "ct-int4", "ct-int4-asym", "mlx-2", "mlx-3",
                                    "mlx-6", "mlx-8"])
def test_sampled_rows_equal_the_full_dequantisation_and_stay_close_to_the_weights(scheme: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    state = {"model.layers.0.mlp.up_proj.weight": rng.standard_normal((48, 80)).astype(np.float32) * 0.05,
             "model.layers.0.input_layernorm.weight": np.ones(80, np.float32)}
    write_packed(tmp_path, state, scheme, {"model_type": "llama"})
    reader = LocalReader(tmp_path)
    import json

    cfg = json.loads((tmp_path / "config.json").read_text())
    tensors = logical_tensors(read_model_tensors(reader, ["model.safetensors"]), cfg)
    by = {t.name: t for t in tensors}
    w = by["model.layers.0.mlp.up_proj.weight"]
    assert w.shape == (48, 80) and w.layout  # the logical shape of the parent's weight
    first, rows = 13, 20  # across block and group boundaries
    before = reader.bytes_read
    raw = reader.read_ranges(w.file, [row_span(w, first, rows)])[0]
    aux = {}
    for name in aux_names(w):
        a0, a1, af = aux_rows(w, by[name], first, rows)
        aux[name] = (by[name], reader.read_ranges(w.file, [(a0, a1)])[0], af)
    got = dequantize(w, raw, aux, first, rows)
    full = _full_reference(tmp_path / "model.safetensors", w.name, scheme)
    np.testing.assert_allclose(got, full[first:first + rows], rtol=0, atol=1e-6)
    # the scheme's own error bound: fp8 e4m3 keeps 3 mantissa bits; 4-bit affine: half a step
    truth = state[w.name][first:first + rows]
    steps = 7 if scheme == "ct-int4" else 15 if not scheme.startswith("mlx") else (1 << int(scheme[4:])) - 1
    bound = 0.07 * np.abs(truth).max() if scheme.startswith("fp8") else 0.6 * np.ptp(truth) / steps
    assert np.abs(got - truth).max() <= bound
    assert reader.bytes_read - before < 0.6 * (tmp_path / "model.safetensors").stat().st_size  # rows, not the file


def test_a_packed_model_is_in_its_parents_family(tmp_path: Path) -> None:
    from lineage_index.indexer.sketch.canon import family_signature

    rng = np.random.default_rng(4)
    state = {f"model.layers.{i}.self_attn.q_proj.weight": rng.standard_normal((32, 32)).astype(np.float32)
             for i in range(2)}
    torch.manual_seed(0)
    for scheme in ("fp8-block", "mlx-4"):
        d = tmp_path / scheme
        d.mkdir()
        write_packed(d, state, scheme, {"model_type": "llama"})
    import json

    fams = set()
    for scheme in ("fp8-block", "mlx-4"):
        d = tmp_path / scheme
        tensors = logical_tensors(read_model_tensors(LocalReader(d), ["model.safetensors"]),
                                  json.loads((d / "config.json").read_text()))
        fams.add(family_signature(tensors)[0])
    from lineage_index.records import TensorInfo

    plain = tuple(TensorInfo(n, "BF16", (32, 32), "m", 0, 2048) for n in state)
    assert fams == {family_signature(plain)[0]}


def test_the_zoo_packer_is_compressed_tensors_own_layout() -> None:
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    from lineage_index.zoo.formats import pack_bits

    rng = np.random.default_rng(7)
    q = rng.integers(-8, 8, size=(5, 48), dtype=np.int8)
    ours = pack_bits((q.astype(np.int32) + 8).astype(np.uint32), 4).view(np.int32)
    theirs = pack_to_int32(torch.from_numpy(q), 4).numpy()
    np.testing.assert_array_equal(ours, theirs)
    ours0 = pack_bits((q.T.astype(np.int32) + 8).astype(np.uint32), 4).T.view(np.int32)
    np.testing.assert_array_equal(ours0, pack_to_int32(torch.from_numpy(q), 4, packed_dim=0).numpy())


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_a_file_written_by_mlx_reads_as_mx_dequantize_gives_it(bits: int, tmp_path: Path) -> None:
    """MLX's own ``mx.quantize`` writes the weight (3- and 6-bit values span words); the sampled
    rows read back through ``read.packed`` equal ``mx.dequantize`` of the whole tensor."""
    mx = pytest.importorskip("mlx.core")
    import json

    from safetensors.numpy import save_file

    rng = np.random.default_rng(bits)
    w = (rng.standard_normal((40, 192)) * 0.05).astype(np.float16)
    q, scales, biases = mx.quantize(mx.array(w), group_size=32, bits=bits)
    name = "model.layers.0.self_attn.o_proj"
    save_file({name + ".weight": np.array(q), name + ".scales": np.array(scales), name + ".biases": np.array(biases)},
              str(tmp_path / "model.safetensors"))
    cfg = {"model_type": "llama", "quantization": {"group_size": 64, "bits": 4, name: {"group_size": 32, "bits": bits}}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    reader = LocalReader(tmp_path)
    tensors = logical_tensors(read_model_tensors(reader, ["model.safetensors"]), cfg)  # the per-module override
    by = {t.name: t for t in tensors}
    t = by[name + ".weight"]
    assert t.shape == (40, 192) and t.dtype == f"MLX_Q{bits}"
    full = np.array(mx.dequantize(q, scales, biases, group_size=32, bits=bits)).astype(np.float32)
    first, rows = 11, 23
    raw = reader.read_ranges(t.file, [row_span(t, first, rows)])[0]
    aux = {}
    for n in aux_names(t):
        a0, a1, af = aux_rows(t, by[n], first, rows)
        aux[n] = (by[n], reader.read_ranges(t.file, [(a0, a1)])[0], af)
    got = dequantize(t, raw, aux, first, rows)
    np.testing.assert_allclose(got, full[first:first + rows], rtol=0, atol=2e-3 * np.abs(full).max())
