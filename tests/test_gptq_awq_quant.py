"""GPTQ (2/3/4/8-bit, act-order ``g_idx``, v1 zero points) and AWQ GEMM 4-bit, issue 23: a column
window of the packed weight (a few ``qweight`` rows, all outputs) read and dequantised on the
sampled rows equals a whole-tensor dequantisation written here from the documented layouts
(independently of ``read.packed``); the columns not read are NaN, and comparisons use the
columns both sides read. No GPTQ/AWQ library installs and runs on a CPU here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lineage_index.indexer.read.packed import (
    aux_names,
    aux_rows,
    col_window,
    dequantize,
    gidx_span,
    logical_tensors,
    parse_layout,
    scheme_of,
    window_span,
)
from lineage_index.indexer.read.ranges import LocalReader
from lineage_index.indexer.read.safetensors import read_model_tensors
from lineage_index.zoo.formats import write_packed

NAME = "model.layers.0.mlp.up_proj"


def _bits_le(words: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Rows of uint32 words as one little-endian bit stream each, cut into ``count`` values."""
    out = np.zeros((words.shape[0], count), np.int64)
    for i in range(count):
        for b in range(bits):
            pos = i * bits + b
            out[:, i] |= ((words[:, pos // 32] >> np.uint32(pos % 32)) & np.uint32(1)).astype(np.int64) << b
    return out


def _full_reference(path: Path, scheme: str, cfg: dict) -> np.ndarray:
    from safetensors.numpy import load_file

    t = load_file(str(path))
    qw, qz = t[NAME + ".qweight"].view(np.uint32), t[NAME + ".qzeros"].view(np.uint32)
    s = t[NAME + ".scales"].astype(np.float32)
    ng, out = s.shape
    qc = cfg["quantization_config"]
    bits = qc["bits"]
    if scheme.startswith("gptq"):
        inn = qw.shape[0] * 32 // bits
        q = _bits_le(np.ascontiguousarray(qw.T), bits, inn)  # [out, in]
        z = _bits_le(qz, bits, out) + 1  # v1: stored minus one
        if qc["sym"]:
            z = np.full_like(z, 1 << (bits - 1))
        g = t[NAME + ".g_idx"].astype(np.int64)
    else:
        inn = qw.shape[0]
        order = [0, 2, 4, 6, 1, 3, 5, 7]

        def unpack(w: np.ndarray) -> np.ndarray:
            v = np.zeros((w.shape[0], w.shape[1] * 8), np.int64)
            for k in range(w.shape[1]):
                for p in range(8):
                    v[:, 8 * k + order[p]] = (w[:, k] >> np.uint32(4 * p)) & np.uint32(15)
            return v

        q, z = unpack(qw).T, unpack(qz)
        g = np.arange(inn) // qc["group_size"]
    return (q - z[g].T) * s[g].T


SCHEMES = ["gptq-4-act", "gptq-4", "gptq-3", "gptq-3-act", "gptq-2", "gptq-8", "awq-4"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_column_window_equals_the_full_dequantisation(scheme: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    w = (rng.standard_normal((512, 512)) * 0.05).astype(np.float32)
    write_packed(tmp_path, {NAME + ".weight": w}, scheme, {"model_type": "llama"})
    cfg = json.loads((tmp_path / "config.json").read_text())
    reader = LocalReader(tmp_path)
    tensors = logical_tensors(read_model_tensors(reader, ["model.safetensors"]), cfg)
    by = {t.name: t for t in tensors}
    t = by[NAME + ".weight"]
    bits = int(scheme.split("-")[1])
    assert t.shape == (512, 512) and scheme_of(tensors) == f"{scheme.split('-')[0]}-int{bits}"
    c0, m = col_window(t)
    assert 0 < m < 512  # a window, not the whole tensor
    fields = parse_layout(t.layout or "")[2]
    assert ("gidx" in fields) == scheme.endswith("-act")
    full = _full_reference(tmp_path / "model.safetensors", scheme, cfg)
    before = reader.bytes_read
    gidx = None
    aux = {}
    if "gidx" in fields:
        gi = by[fields["gidx"]]
        graw = reader.read_ranges(t.file, [gidx_span(t, gi)])[0]
        gidx = np.frombuffer(graw, "<i4")
        aux[gi.name] = (gi, graw, c0)
    raw = reader.read_ranges(t.file, [window_span(t)])[0]
    for name in aux_names(t):
        if name not in aux:
            a0, a1, af = aux_rows(t, by[name], 0, 0, gidx)
            aux[name] = (by[name], reader.read_ranges(t.file, [(a0, a1)])[0], af)
    for first, rows in ((0, 8), (203, 40), (504, 8)):
        got = dequantize(t, raw, aux, first, rows)
        assert got.shape == (rows, 512)
        assert np.isnan(got[:, c0 + m:]).all() and np.isfinite(got[:, c0:c0 + m]).all()
        np.testing.assert_allclose(got[:, c0:c0 + m], full[first:first + rows, c0:c0 + m], rtol=0, atol=1e-6)
        # round to nearest: within one step of the weight (a step is the group's range / 2^bits - 1)
        err = np.abs(got[:, c0:c0 + m] - w[first:first + rows, c0:c0 + m])
        assert err.max() <= 2 * np.abs(w).max() / ((1 << bits) - 1) * 1.01
    # act-order: the window's inputs fall in (almost) every group, whose scale rows are all read
    share = m / 512 + (0.25 if scheme.endswith("-act") else 0.1)
    assert reader.bytes_read - before < share * (tmp_path / "model.safetensors").stat().st_size


def test_a_gptq_sketch_is_compared_on_the_columns_it_read(tmp_path: Path) -> None:
    """A GPTQ upload of a model and of an unrelated one, sketched through the row plan: related to
    its parent (quantised child) on the window both hold, unrelated to the other; a sketch
    without NaN is compared exactly as before (``joint_view`` returns it unchanged)."""
    from lineage_index.indexer.read.sources import FileEntry, build_record
    from lineage_index.indexer.recover.verify import compare
    from lineage_index.indexer.sketch.sample import sketch_model
    from lineage_index.indexer.sketch.window import is_windowed, joint_view
    from lineage_index.zoo.formats import write_packed as wp

    rng = np.random.default_rng(12)
    shapes = {"self_attn.q_proj": (512, 256), "mlp.up_proj": (512, 256), "mlp.down_proj": (256, 512)}
    base = {f"model.layers.{i}.{k}.weight": (rng.standard_normal(s) * 0.05).astype(np.float32)
            for i in range(2) for k, s in shapes.items()}
    other = {k: (rng.standard_normal(v.shape) * 0.05).astype(np.float32) for k, v in base.items()}
    tuned = {k: v + (rng.standard_normal(v.shape) * 0.01).astype(np.float32) for k, v in base.items()}
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}
    sketches, records = {}, {}
    for name, state, scheme in (("base", base, "bf16"), ("q", base, "gptq-4-act"), ("o", other, "awq-4"),
                                ("ft", tuned, "bf16"), ("ftq", tuned, "awq-4")):
        d = tmp_path / name
        d.mkdir()
        if scheme == "bf16":
            import torch
            from safetensors.torch import save_file

            save_file({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in state.items()}, str(d / "model.safetensors"))
            (d / "config.json").write_text(json.dumps(cfg))
        else:
            wp(d, state, scheme, cfg)
        reader = LocalReader(d)
        rec = build_record(f"zoo/{name}", "dir", reader, [FileEntry("config.json", None), FileEntry("model.safetensors", None)],
                           sha=None, location=str(d), card=None)
        sketches[name] = sketch_model(rec, reader)
        records[name] = rec
    b, q, o = sketches["base"], sketches["q"], sketches["o"]
    assert is_windowed(sketches["ftq"]) and any(0 < np.isnan(v.values).mean() < 1 for v in q.samples.values())
    assert b.family == q.family == o.family and is_windowed(q) and not is_windowed(b)
    assert q.quant == "gptq-int4" and o.quant == "awq-int4"
    assert not q.layer_prints  # no whole print rows from a window
    f = compare(b, q)
    assert f.related and f.quant_child == "zoo/q" and f.cos_median > 0.95
    assert not compare(b, o).related and not compare(q, o).related
    assert joint_view(b, b)[0] is b
    # recovery, with no card declaring anything: the window meets its parent by window_distance
    from lineage_index.indexer.recover.edges import recover

    r = recover({s.model_id: records[k] for k, s in sketches.items()}, {s.model_id: s for s in sketches.values()})
    # ... and a quantised fine-tune hangs under the fine-tune, not under the base
    assert {(e.child, e.parent, e.relation) for e in r.edges if e.child in ("zoo/q", "zoo/ftq", "zoo/o")} == {
        ("zoo/q", "zoo/base", "quantized"), ("zoo/ftq", "zoo/ft", "quantized")}


def test_check_on_a_windowed_upload_names_its_parent_and_the_scheme(tmp_path: Path) -> None:
    """``check`` of an AWQ upload (a column window, no card) against a store holding the base and
    its fine-tune: the fine-tune is named as its parent, with the scheme."""
    import subprocess
    import sys

    import torch
    from safetensors.torch import save_file

    rng = np.random.default_rng(13)
    shapes = {"self_attn.q_proj": (512, 256), "mlp.up_proj": (512, 256), "mlp.down_proj": (256, 512)}
    base = {f"model.layers.{i}.{k}.weight": (rng.standard_normal(s) * 0.05).astype(np.float32)
            for i in range(2) for k, s in shapes.items()}
    tuned = {k: v + (rng.standard_normal(v.shape) * 0.01).astype(np.float32) for k, v in base.items()}
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}
    zoo = tmp_path / "zoo"
    for name, state in (("org/base", base), ("org/tuned", tuned)):
        (zoo / name).mkdir(parents=True)
        save_file({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in state.items()},
                  str(zoo / name / "model.safetensors"))
        (zoo / name / "config.json").write_text(json.dumps(cfg))
    up = tmp_path / "upload" / "someone" / "tuned-AWQ"
    up.mkdir(parents=True)
    write_packed(up, tuned, "awq-4", cfg)
    cli = [sys.executable, "-m", "lineage_index.cli.app"]
    store = str(tmp_path / "s")
    r = subprocess.run([*cli, "ingest", "--dir", str(zoo), "--store", store, "--no-graph"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*cli, "check", str(up), "--store", store], capture_output=True, text=True, timeout=300)
    first = r.stdout.splitlines()[0]
    assert "quantised copy" in first and "awq-int4" in first and "org/tuned" in first, r.stdout
