"""GGUF by range reads (issue 22): header, names, Q/K un-permutation, sampled-row dequantisation
equal to the ``gguf`` package's full-tensor result, hostile headers, and GGUF uploads placed under
their full-precision parent in the same ingest as their safetensors relatives."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf.constants import GGML_QUANT_SIZES  # noqa: E402
from gguf.constants import GGMLQuantizationType as Q  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from lineage_index.errors import HeaderError  # noqa: E402
from lineage_index.indexer.pipeline import recover, sketch_all  # noqa: E402
from lineage_index.indexer.read.gguf import dequantize_rows, gguf_rows, read_gguf_header, row_bytes  # noqa: E402
from lineage_index.indexer.read.ranges import LocalReader  # noqa: E402
from lineage_index.indexer.read.sources import DirSource  # noqa: E402
from lineage_index.records import ModelRecord  # noqa: E402
from lineage_index.zoo.formats import write_gguf  # noqa: E402


@pytest.fixture(scope="module")
def nano(tiny_zoo: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    repo = tiny_zoo / "meta-llama" / "Llama-3.1-Nano"
    state = {k: v.float().numpy() for f in sorted(repo.glob("*.safetensors")) for k, v in load_file(str(f)).items()}
    return state, json.loads((repo / "config.json").read_text())


def test_header_names_shapes_and_the_rope_permutation_undone(nano, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    state, cfg = nano
    path = tmp_path / "m.gguf"
    write_gguf(path, state, Q.F32, heads=cfg["num_attention_heads"], kv_heads=cfg["num_key_value_heads"])
    reader = LocalReader(tmp_path)
    h = read_gguf_header(reader, "m.gguf")
    by = {t.name: t for t in h.tensors}
    assert set(by) == set(state) and not h.unmapped
    assert all(by[n].shape == state[n].shape for n in state)
    q = by["model.layers.0.self_attn.q_proj.weight"]
    assert q.layout == f"gguf:F32;rope:{cfg['num_attention_heads']}"
    rows = range(3, 19)  # across a head boundary
    raw = b"".join(reader.read_ranges("m.gguf", [(q.start + r * row_bytes(q), q.start + (r + 1) * row_bytes(q))
                                                 for r in gguf_rows(q, rows)]))
    got = dequantize_rows(raw, q, len(rows))
    np.testing.assert_array_equal(got, state[q.name][3:19])  # rows of the Hugging Face parent


ALL_TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K,
             Q.Q6_K, Q.IQ2_XXS, Q.IQ2_XS, Q.IQ2_S, Q.IQ3_XXS, Q.IQ3_S, Q.IQ1_S, Q.IQ1_M, Q.IQ4_NL, Q.IQ4_XS]


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=[q.name for q in ALL_TYPES])
def test_sampled_rows_equal_the_same_rows_of_the_full_dequantisation(qtype: Q, tmp_path: Path) -> None:
    rng = np.random.default_rng(int(qtype))
    rows, cols = 12, 512
    block, type_size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(rows, cols // block * type_size), dtype=np.uint8)
    if qtype in (Q.F16, Q.BF16, Q.F32):  # finite values in float containers
        raw = np.ascontiguousarray(rng.standard_normal((rows, cols)).astype(
            {Q.F16: np.float16, Q.F32: np.float32}.get(qtype, np.float32)))
        if qtype == Q.BF16:
            raw = (raw.view(np.uint32) >> 16).astype(np.uint16)
        raw = raw.view(np.uint8).reshape(rows, -1)
    w = gguf.GGUFWriter(str(tmp_path / "t.gguf"), "llama")
    w.add_tensor("blk.0.ffn_up.weight", raw, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    reader = LocalReader(tmp_path)
    (t,) = read_gguf_header(reader, "t.gguf").tensors
    assert t.name == "model.layers.0.mlp.up_proj.weight" and t.shape == (rows, cols)
    with np.errstate(all="ignore"):  # random blocks: some scales are inf/nan, on both sides alike
        full = gguf.quants.dequantize(raw, qtype).reshape(rows, cols).astype(np.float32)
    picked = [1, 2, 7, 11]
    got = dequantize_rows(b"".join(reader.read_ranges("t.gguf", [(t.start + r * row_bytes(t),
                                                                  t.start + (r + 1) * row_bytes(t)) for r in picked])),
                          t, len(picked))
    np.testing.assert_array_equal(got, full[picked])


def test_truncated_and_lying_gguf_headers_are_clear_errors(nano, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    state, cfg = nano
    path = tmp_path / "m.gguf"
    write_gguf(path, state, Q.Q8_0, heads=cfg["num_attention_heads"], kv_heads=cfg["num_key_value_heads"])
    data = path.read_bytes()
    (tmp_path / "short.gguf").write_bytes(data[:200])
    with pytest.raises(HeaderError, match="truncated GGUF header"):
        read_gguf_header(LocalReader(tmp_path), "short.gguf")
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) - 4096])  # header whole, tensors cut
    with pytest.raises(HeaderError, match="outside the file"):
        read_gguf_header(LocalReader(tmp_path), "cut.gguf")
    # a tensor offset that points past the end of the file
    h = read_gguf_header(LocalReader(tmp_path), "m.gguf")
    last = h.tensors[-1]
    rel = last.start - h.data_start
    lying = bytearray(data)
    at = bytes(data).rfind(struct.pack("<Q", rel), 0, h.header_bytes)
    lying[at:at + 8] = struct.pack("<Q", rel + 10 * len(data) // 32 * 32)
    (tmp_path / "lying.gguf").write_bytes(bytes(lying))
    with pytest.raises(HeaderError, match="outside the file"):
        read_gguf_header(LocalReader(tmp_path), "lying.gguf")
    (tmp_path / "notgguf.gguf").write_bytes(b"GGML" + data[4:100])
    with pytest.raises(HeaderError, match="not a GGUF file"):
        read_gguf_header(LocalReader(tmp_path), "notgguf.gguf")


def _files_read(rec: ModelRecord) -> set[str]:
    return {t.file for t in rec.tensors}


def test_gguf_uploads_are_placed_under_their_parent_with_the_right_relation(nano, tiny_zoo: Path,  # type: ignore[no-untyped-def]
                                                                           tmp_path: Path) -> None:
    state, cfg = nano
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hub = tmp_path / "hub"
    shutil.copytree(tiny_zoo / "meta-llama" / "Llama-3.1-Nano", hub / "meta-llama" / "Llama-3.1-Nano")
    shutil.copytree(tiny_zoo / "Intel" / "Llama-3.1-Nano-fr", hub / "Intel" / "Llama-3.1-Nano-fr")
    base_meta = {"general.base_model.count": 1, "general.base_model.0.repo_url":
                 "https://huggingface.co/meta-llama/Llama-3.1-Nano", "general.license": "llama3.1"}
    q = hub / "bartowski" / "Llama-3.1-Nano-GGUF"
    q.mkdir(parents=True)
    for level in (Q.Q8_0, Q.Q4_0):  # one repo, two quantisation levels
        write_gguf(q / f"Llama-3.1-Nano-{level.name}.gguf", state, level, heads=heads, kv_heads=kv, meta=base_meta)
    f16 = hub / "lmstudio" / "Llama-3.1-Nano-F16-GGUF"
    f16.mkdir(parents=True)
    write_gguf(f16 / "nano-f16.gguf", state, Q.F16, heads=heads, kv_heads=kv)  # no metadata: weights only
    rng = np.random.default_rng(5)
    stranger = {k: (rng.standard_normal(v.shape) * v.std()).astype(np.float32) for k, v in state.items()}
    ind = hub / "someone" / "Nano-lookalike-GGUF"
    ind.mkdir(parents=True)
    write_gguf(ind / "lookalike.Q8_0.gguf", stranger, Q.Q8_0, heads=heads, kv_heads=kv, meta=base_meta)

    source = DirSource(hub)
    records, report = sketch_all(source.iter_records(), source.open_reader, None)
    assert not report.failures, report.failures
    rec = records["bartowski/Llama-3.1-Nano-GGUF"]
    assert isinstance(rec, ModelRecord) and rec.weight_format == "gguf"
    assert rec.base_models == ("meta-llama/Llama-3.1-Nano",) and rec.license == "llama3.1"
    assert rec.config["gguf"]["file"] == "Llama-3.1-Nano-Q8_0.gguf"  # the variant read: the most bits
    assert sorted(v["file"] for v in rec.config["gguf"]["variants"]) == ["Llama-3.1-Nano-Q4_0.gguf",
                                                                        "Llama-3.1-Nano-Q8_0.gguf"]
    sk = report.sketches["bartowski/Llama-3.1-Nano-GGUF"]
    assert sk.family == report.sketches["meta-llama/Llama-3.1-Nano"].family  # the same family as its parent
    assert not any(f.endswith("Q4_0.gguf") for f in _files_read(rec))  # the other level costs nothing
    edges = {(e.child, e.parent): e for e in recover(records, report.sketches).edges}
    assert edges[("bartowski/Llama-3.1-Nano-GGUF", "meta-llama/Llama-3.1-Nano")].relation == "quantized"
    assert edges[("lmstudio/Llama-3.1-Nano-F16-GGUF", "meta-llama/Llama-3.1-Nano")].relation == "copy"
    assert ("Intel/Llama-3.1-Nano-fr", "meta-llama/Llama-3.1-Nano") in edges
    stranger_edges = [k for k, e in edges.items() if "someone/Nano-lookalike-GGUF" in k and e.source != "declared"]
    assert not stranger_edges  # an independent model quantised the same way is not placed by its weights
