"""bitsandbytes 4-bit (NF4 / FP4, plain and double-quantised absmax), issue 23: files written by
bitsandbytes itself, read on the sampled rows only and dequantised exactly as
``bitsandbytes.functional.dequantize_4bit`` dequantises the whole tensor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

bnbf = pytest.importorskip("bitsandbytes.functional")

from lineage_index.indexer.read.packed import (  # noqa: E402
    aux_names,
    aux_rows,
    bnb_states,
    dequantize,
    logical_tensors,
    row_span,
    scheme_of,
)
from lineage_index.indexer.read.ranges import LocalReader  # noqa: E402
from lineage_index.indexer.read.safetensors import read_model_tensors  # noqa: E402
from lineage_index.zoo.formats import write_packed  # noqa: E402

NAME = "model.layers.0.mlp.down_proj.weight"


def _library_full(path: Path, name: str) -> np.ndarray:
    """The whole weight dequantised by bitsandbytes from the saved tensors (its own QuantState).

    Dequantised as the flat vector and reshaped: bitsandbytes 0.50's CPU ``dequantize_4bit`` of a
    2-D shape whose rows are not whole blocks (176 = 2.75 x 64 here) applies the wrong absmax from
    the second row on (its error to the weights grows past the quantisation step), while its
    quantiser and its flat dequantisation block the flattened tensor, as the format says."""
    from safetensors.torch import load_file

    t = load_file(str(path))
    qs = {k[len(name) + 1:]: v for k, v in t.items() if k.startswith(name + ".")}
    state = bnbf.QuantState.from_dict(qs, device=torch.device("cpu"))
    shape = tuple(state.shape)
    state.shape = torch.Size([int(np.prod(shape))])
    return bnbf.dequantize_4bit(t[name], state).float().numpy().reshape(shape)


@pytest.mark.parametrize("scheme", ["bnb-nf4", "bnb-nf4-dq", "bnb-fp4", "bnb-fp4-dq"])
def test_sampled_rows_equal_bitsandbytes_own_dequantisation(scheme: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    # in = 176: 64-element blocks straddle rows; 300 rows x 176 = 52,800 values = 825 absmax
    # blocks, more than one nested block of 256 when double-quantised
    w = rng.standard_normal((300, 176)).astype(np.float32) * 0.05
    write_packed(tmp_path, {NAME: w, "model.layers.0.input_layernorm.weight": np.ones(176, np.float32)}, scheme,
                 {"model_type": "llama"})
    reader = LocalReader(tmp_path)
    raw_tensors = read_model_tensors(reader, ["model.safetensors"])
    states = bnb_states(reader, raw_tensors)
    tensors = logical_tensors(raw_tensors, json.loads((tmp_path / "config.json").read_text()), states)
    by = {t.name: t for t in tensors}
    t = by[NAME]
    assert t.shape == (300, 176) and t.dtype == ("BNB_NF4" if "nf4" in scheme else "BNB_FP4")
    assert scheme_of(tensors) == scheme
    full = _library_full(tmp_path / "model.safetensors", NAME)
    for first, rows in ((0, 8), (141, 37), (292, 8)):  # block and nested-block boundaries, the last rows
        before = reader.bytes_read
        raw = reader.read_ranges(t.file, [row_span(t, first, rows)])[0]
        aux = {}
        for name in aux_names(t):
            a0, a1, af = aux_rows(t, by[name], first, rows)
            aux[name] = (by[name], reader.read_ranges(t.file, [(a0, a1)])[0], af)
        got = dequantize(t, raw, aux, first, rows)
        np.testing.assert_array_equal(got, full[first:first + rows])
        assert reader.bytes_read - before < 0.3 * (tmp_path / "model.safetensors").stat().st_size
        # NF4/FP4 with a per-64 absmax: an error below one code step of the block's absmax
        assert np.abs(got - w[first:first + rows]).max() <= 0.5 * np.abs(w).max()
        assert np.corrcoef(got.ravel(), w[first:first + rows].ravel())[0, 1] > 0.97


def test_a_4bit_model_without_its_quant_state_is_not_misread(tmp_path: Path) -> None:
    """Without the quant state (the logical shape lives only there) the packed bytes are never
    taken for a weight of the parent's shape."""
    rng = np.random.default_rng(6)
    write_packed(tmp_path, {NAME: rng.standard_normal((16, 64)).astype(np.float32)}, "bnb-nf4-dq",
                 {"model_type": "llama"})
    tensors = logical_tensors(read_model_tensors(LocalReader(tmp_path), ["model.safetensors"]), {})
    t = {x.name: x for x in tensors}[NAME]
    assert t.shape == (512, 1) and not t.layout
