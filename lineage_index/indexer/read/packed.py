"""Packed quantised safetensors read as the weights they stand for, on the sampled rows only.

A quantised upload stores a linear weight under other dtypes and shapes than its full-precision
parent. ``logical_tensors`` recognises a scheme from the tensor names, dtypes and the config's
``quantization_config`` / ``quantization`` and gives each packed weight its **logical** shape
(the parent's ``[out, in]``) and a ``layout`` naming the scheme and its aux tensors, so the model
lands in its parent's family and the sketch samples the same rows. Every scheme here keeps a
weight's output rows contiguous, so a sampled row is read as its own bytes plus the matching rows
of its scales (``aux_rows``) and dequantised (``dequantize``):

* **FP8** (``F8_E4M3``/``F8_E5M2`` weights; DeepSeek-V3 / Qwen3-FP8 block scales
  ``weight_scale_inv`` of shape ``[ceil(out/b), ceil(in/b)]`` from ``weight_block_size``, or
  compressed-tensors ``float-quantized`` per-channel ``weight_scale [out, 1]`` or per-tensor):
  ``w = fp8 * scale`` (Hugging Face transformers' ``finegrained_fp8`` and compressed-tensors'
  formats).
* **MLX** (``mlx-lm`` ``quantize``: ``weight`` uint32 ``[out, in*bits/32]``, each row a dense
  little-endian bit stream of ``bits``-bit values, the first value in the lowest bits (2/4/8-bit
  values sit in one word; 3/5/6-bit values span words), ``scales`` and ``biases``
  ``[out, in/group]``; ``config.json`` ``quantization: {group_size, bits}`` with per-module
  overrides keyed by module path): ``w = q * scale + bias`` per group (MLX's ``mx.quantize``
  documentation; checked against ``mx.dequantize`` in tests/test_packed.py).
* **bitsandbytes 4-bit** (NF4 / FP4, as transformers saves ``Params4bit``: ``M.weight`` uint8
  ``[numel/2, 1]``, the flattened row-major ``[out, in]`` two values a byte, the first in the
  high nibble; ``M.weight.absmax`` one scale per ``blocksize`` elements; ``M.weight.quant_map``
  the 16 code values; ``M.weight.quant_state.bitsandbytes__nf4|fp4`` a JSON document in a uint8
  tensor giving ``shape``, ``blocksize``, ``dtype`` and, when double-quantised, ``nested_blocksize``
  and ``nested_offset``, with ``absmax`` then uint8 codes into ``M.weight.nested_quant_map``
  scaled by ``M.weight.nested_absmax`` per ``nested_blocksize`` absmax values):
  ``w = quant_map[code] * absmax[block]``, ``absmax = nested_quant_map[c] * nested_absmax + offset``
  (bitsandbytes' ``QuantState.as_dict(packed=True)`` serialisation in its 4-bit documentation;
  checked against ``bitsandbytes.functional.dequantize_4bit`` in tests/test_bnb4_quant.py). The
  JSON is in the file only, so ``bnb_states`` reads it (one per role and size) before the plan.

* **compressed-tensors ``pack-quantized``** (``weight_packed`` int32 rows as dense bit streams with a
  ``2^(bits-1)`` offset, ``weight_scale`` per group or channel, ``weight_zero_point`` packed along
  the output dimension when asymmetric; ``config_groups`` gives the bits): ``w = (q - z) * scale``
  (the compressed-tensors library's ``pack_to_int32`` layout).

**GPTQ and AWQ** pack along the input dimension, so a sampled output row is strided through the
whole ``qweight`` (one word every ``out * 4`` bytes). They are read as a **column window**
instead (``col_window``: the first ``m`` input columns, ``m`` from the shape so the packed block is
about ``WINDOW_BYTES``), i.e. a few contiguous ``qweight`` rows holding those inputs for every
output, with the ``scales``/``qzeros`` rows of their groups; the sampled rows of that block are
kept and the unread columns are NaN (``TensorSample.values`` keeps the parent's ``(rows, in)``
shape, so the model stays in its parent's family and store layout). Comparisons restrict both
sides to the columns both read (``sketch.window``).

* **GPTQ** (AutoGPTQ / GPTQModel ``QuantLinear``; ``quantization_config`` ``quant_method: gptq``,
  ``bits``, ``group_size`` (-1: one group), ``desc_act``, ``sym``, ``checkpoint_format``):
  ``qweight`` int32 ``[in*bits/32, out]``, each output's column a dense little-endian bit stream
  of its input values (3-bit values span words); ``qzeros`` int32 ``[groups, out*bits/32]``, each
  row a bit stream along the outputs, stored minus one in the v1 format (``checkpoint_format``
  ``gptq``, the default) and as is in ``gptq_v2``; ``scales`` ``[groups, out]``; ``g_idx`` int32
  ``[in]``, each input's group (act-order: read first, then the rows of the groups it names):
  ``w[o, i] = scales[g, o] * (q[i, o] - z[g, o])``, ``g = g_idx[i]`` (``i // group_size``
  without act-order). Symmetric checkpoints' zero points are ``2^(bits-1)`` by definition and
  are not read. (AutoGPTQ's and GPTQModel's documented ``QuantLinear`` packing.)
* **AWQ** GEMM (AutoAWQ ``WQLinear_GEMM``; ``quant_method: awq``, ``version: gemm``, ``bits``
  4, ``group_size``, ``zero_point``): ``qweight`` int32 ``[in, out*bits/32]`` packed along the
  outputs with AWQ's interleave (nibble ``p`` of word ``k`` holds output ``8k + [0,2,4,6,1,3,5,7][p]``),
  ``qzeros`` ``[groups, out*bits/32]`` packed the same way, ``scales`` ``[groups, out]``:
  ``w[o, i] = scales[g, o] * (q[i, o] - z[g, o])`` (AutoAWQ's documented GEMM layout).

No GPTQ or AWQ library runs here (AutoGPTQ 0.7.1 fails to import against transformers 5, whose
``modeling_utils.no_init_weights`` it needs; AutoAWQ 0.2.7 needs ``datasets`` and an older
transformers; GPTQModel has no wheel): the layouts are written from those documents, and
tests/test_gptq_awq_quant.py checks the windowed reader against a whole-tensor dequantisation
written independently of this module.

Why this module is long: every packed scheme is recognised, planned and dequantised from one
layout vocabulary (``TensorInfo.layout``) that the sketch reads, so the schemes share their
helpers (bit streams, scale rows, column windows) here rather than one module per scheme.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import numpy as np

from lineage_index.records import TensorInfo

FP8 = ("F8_E4M3", "F8_E5M2")
#: packed bytes a GPTQ/AWQ column window reads per matrix (the window's width follows from it)
WINDOW_BYTES = 32_768
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # output (within 8) held by nibble p of an AWQ word
FLOAT_SCALES = ("F32", "F16", "BF16")


def _module(name: str) -> str:
    return name[: -len(".weight")] if name.endswith(".weight") else name


def logical_tensors(tensors: tuple[TensorInfo, ...], config: dict[str, Any] | None,
                    bnb: dict[str, dict[str, Any]] | None = None) -> tuple[TensorInfo, ...]:
    """``tensors`` with every recognised packed weight given its logical shape and layout.

    ``bnb``: the bitsandbytes 4-bit quant states by weight name (``bnb_states``); without them a
    4-bit weight keeps its packed shape (its logical shape is written only inside the file)."""
    by_name = {t.name: t for t in tensors}
    cfg = config or {}
    qc = cfg.get("quantization_config") if isinstance(cfg.get("quantization_config"), dict) else {}
    mlx = cfg.get("quantization") if isinstance(cfg.get("quantization"), dict) else {}
    block = qc.get("weight_block_size") if isinstance(qc.get("weight_block_size"), list) else None
    out: list[TensorInfo] = []
    for t in tensors:
        m = _module(t.name)
        if not t.name.endswith(".weight") or len(t.shape) != 2:
            out.append(t)
            continue
        if t.dtype in FP8:
            inv, scale = by_name.get(m + ".weight_scale_inv"), by_name.get(m + ".weight_scale")
            s = inv or scale
            if s is not None and s.dtype in FLOAT_SCALES:
                kind = "block" if len(s.shape) == 2 and s.shape[1] > 1 else "channel" if s.shape and s.shape[0] > 1 \
                    else "tensor"
                size = int(block[0]) if kind == "block" and block else (
                    math.ceil(t.shape[0] / s.shape[0]) if kind == "block" else 0)
                out.append(replace(t, layout=f"fp8:{kind};scale={s.name};block={size};inv={int(inv is not None)}"))
                continue
        if t.dtype == "U32" and by_name.get(m + ".scales") is not None and by_name.get(m + ".biases") is not None:
            own = mlx.get(m) if isinstance(mlx.get(m), dict) else {}  # mlx-lm's per-module override
            bits = int(own.get("bits", mlx.get("bits", 4)))
            group = int(own.get("group_size", mlx.get("group_size", 64)))
            s = by_name[m + ".scales"]
            cols = int(s.shape[1]) * group if len(s.shape) == 2 else 0
            # rows are whole words (a row's bit stream padded to 32 bits where in*bits is not)
            if cols and s.shape[0] == t.shape[0] and t.shape[1] == -(-cols * bits // 32):
                out.append(replace(t, dtype=f"MLX_Q{bits}", shape=(t.shape[0], cols),
                                   layout=f"mlx:affine;bits={bits};group={group};scales={s.name};biases={m}.biases"))
                continue
        if t.dtype == "U8" and bnb and t.name in bnb and (b4 := _bnb_layout(t, bnb[t.name], by_name)) is not None:
            out.append(b4)
            continue
        out.append(t)
    return tuple(_pack_quantized(_gptq_awq(out, by_name, qc), by_name, qc))


def _gptq_awq(tensors: list[TensorInfo], by_name: dict[str, TensorInfo], qc: dict[str, Any]) -> list[TensorInfo]:
    """GPTQ / AWQ ``M.qweight`` renamed ``M.weight`` with its logical ``[out, in]`` shape."""
    method = str(qc.get("quant_method", "")).lower()
    if method not in ("gptq", "awq"):
        return tensors
    bits = int(qc.get("bits", qc.get("w_bit", 4)))
    group = int(qc.get("group_size", qc.get("q_group_size", 128)))
    if method == "awq" and (str(qc.get("version", "gemm")).lower() != "gemm" or bits != 4):
        return tensors  # GEMV / Marlin / Exllama layouts: not read
    out: list[TensorInfo] = []
    for t in tensors:
        if not t.name.endswith(".qweight") or t.dtype != "I32" or len(t.shape) != 2:
            out.append(t)
            continue
        m = t.name[: -len(".qweight")]
        scales, zeros, gidx = by_name.get(m + ".scales"), by_name.get(m + ".qzeros"), by_name.get(m + ".g_idx")
        if method == "gptq":
            inn, outn = int(t.shape[0]) * 32 // bits, int(t.shape[1])
        else:
            inn, outn = int(t.shape[0]), int(t.shape[1]) * 32 // bits
        g = inn if group <= 0 else group
        if scales is None or tuple(scales.shape) != (-(-inn // g), outn) or zeros is None:
            out.append(t)
            continue
        layout = f"{method}:int;bits={bits};group={g};qweight={t.name};scales={scales.name}"
        if method == "awq" or not qc.get("sym", True):
            layout += f";zero={zeros.name}"
        if method == "gptq":
            layout += f";v1={int(str(qc.get('checkpoint_format', 'gptq')).lower() != 'gptq_v2')}"
            if qc.get("desc_act") and gidx is not None:
                layout += f";gidx={gidx.name}"
        out.append(replace(t, name=m + ".weight", dtype=f"{method.upper()}_INT{bits}", shape=(outn, inn),
                           layout=layout))
    return out


def is_windowed(t: TensorInfo) -> bool:
    """A packed weight read as a column window (GPTQ, AWQ), not as whole rows."""
    return bool(t.layout) and t.layout.split(":", 1)[0] in ("gptq", "awq")


def col_window(t: TensorInfo) -> tuple[int, int]:
    """(first column, width) of a windowed weight's sample: the first input columns, as many as
    ``WINDOW_BYTES`` of packed words hold for every output, in whole packed words."""
    scheme, _, f = parse_layout(t.layout or "")
    bits = int(f["bits"])
    outn, inn = int(t.shape[0]), int(t.shape[1])
    unit = 32 // math.gcd(bits, 32) if scheme == "gptq" else 1  # inputs per whole words of a column
    width = max(unit, int(WINDOW_BYTES * 8 // max(1, outn * bits)) // unit * unit)
    return 0, min(inn, width)


def window_span(t: TensorInfo) -> tuple[int, int]:
    """The ``qweight`` bytes of the column window (whole rows of ``qweight``)."""
    scheme, _, f = parse_layout(t.layout or "")
    bits = int(f["bits"])
    c0, m = col_window(t)
    rows_total = int(t.shape[1]) * bits // 32 if scheme == "gptq" else int(t.shape[1])
    row_bytes = (t.end - t.start) // rows_total
    r0, r1 = (c0 * bits // 32, -(-(c0 + m) * bits // 32)) if scheme == "gptq" else (c0, c0 + m)
    return t.start + r0 * row_bytes, t.start + r1 * row_bytes


def window_groups(t: TensorInfo, gidx: np.ndarray | None) -> tuple[int, int]:
    """[first, last) group rows the column window needs (act-order: from its ``g_idx`` values)."""
    _, _, f = parse_layout(t.layout or "")
    c0, m = col_window(t)
    if gidx is not None and len(gidx):
        return int(gidx.min()), int(gidx.max()) + 1
    g = int(f["group"])
    return c0 // g, (c0 + m - 1) // g + 1


def gidx_span(t: TensorInfo, gidx: TensorInfo) -> tuple[int, int]:
    """The ``g_idx`` bytes of the window's columns (read before the rest: they name the groups)."""
    c0, m = col_window(t)
    return gidx.start + 4 * c0, gidx.start + 4 * (c0 + m)


BNB_STATE = (".quant_state.bitsandbytes__nf4", ".quant_state.bitsandbytes__fp4")


def _bnb_state_name(weight: str, by_name: dict[str, Any]) -> str | None:
    return next((weight + s for s in BNB_STATE if weight + s in by_name), None)


def bnb_states(reader: Any, tensors: tuple[TensorInfo, ...]) -> dict[str, dict[str, Any]]:
    """The quant states (parsed JSON) of the bitsandbytes 4-bit weights of ``tensors``, by weight
    name, read through ``reader``: one state per (role, packed size) is read, and given to every
    weight of that role and size (the layers of one model repeat their shapes), so a 7B model
    costs a handful of small reads, not one per linear layer."""
    import re

    by_name = {t.name: t for t in tensors}
    groups: dict[tuple[str, tuple[int, ...]], list[str]] = {}
    for t in tensors:
        if t.dtype == "U8" and t.name.endswith(".weight") and _bnb_state_name(t.name, by_name):
            role = re.sub(r"\.\d+\.", ".N.", t.name)  # the name without its layer index
            groups.setdefault((role, tuple(t.shape)), []).append(t.name)
    if not groups:
        return {}
    first = {key: sorted(names)[0] for key, names in groups.items()}
    wanted: dict[str, list[TensorInfo]] = {}
    for name in first.values():
        st = by_name[_bnb_state_name(name, by_name) or ""]
        wanted.setdefault(st.file, []).append(st)
    parsed: dict[str, dict[str, Any]] = {}
    for file, infos in wanted.items():
        for info, raw in zip(infos, reader.read_ranges(file, [(i.start, i.end) for i in infos]), strict=True):
            try:
                parsed[info.name] = json.loads(bytes(raw).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue  # not a quant state: the weight stays unread
    out: dict[str, dict[str, Any]] = {}
    for key, names in groups.items():
        state = parsed.get(_bnb_state_name(first[key], by_name) or "")
        if isinstance(state, dict):
            out |= {n: state for n in names}
    return out


def _bnb_layout(t: TensorInfo, state: dict[str, Any], by_name: dict[str, TensorInfo]) -> TensorInfo | None:
    """A bitsandbytes 4-bit weight under its logical ``[out, in]`` shape, when its rows are whole
    bytes and its aux tensors are present."""
    shape = state.get("shape")
    qt = state.get("quant_type")
    if not (isinstance(shape, list) and len(shape) == 2 and qt in ("nf4", "fp4")):
        return None
    out_, in_ = int(shape[0]), int(shape[1])
    absmax, qmap = by_name.get(t.name + ".absmax"), by_name.get(t.name + ".quant_map")
    if in_ % 2 or out_ * in_ != 2 * math.prod(t.shape) or absmax is None or qmap is None:
        return None
    layout = (f"bnb:{qt};block={int(state.get('blocksize', 64))};absmax={absmax.name};qmap={qmap.name};"
              f"dtype={state.get('dtype', 'float32')}")
    if absmax.dtype == "U8":  # double quantisation
        nested, nmap = by_name.get(t.name + ".nested_absmax"), by_name.get(t.name + ".nested_quant_map")
        if nested is None or nmap is None or "nested_offset" not in state:
            return None
        layout += (f";nested={nested.name};nmap={nmap.name};nblock={int(state.get('nested_blocksize', 256))};"
                   f"offset={float(state['nested_offset'])!r}")
    return replace(t, dtype=f"BNB_{qt.upper()}", shape=(out_, in_), layout=layout)


def _ct_bits(qc: dict[str, Any]) -> tuple[int, bool] | None:
    """(bits, symmetric) of compressed-tensors' integer weight scheme, from ``config_groups``."""
    groups = qc.get("config_groups") if isinstance(qc.get("config_groups"), dict) else {}
    for group in groups.values():
        w = group.get("weights") if isinstance(group, dict) else None
        if isinstance(w, dict) and w.get("type", "int") == "int" and isinstance(w.get("num_bits"), int):
            return int(w["num_bits"]), bool(w.get("symmetric", True))
    return None


def _pack_quantized(tensors: list[TensorInfo], by_name: dict[str, TensorInfo], qc: dict[str, Any]) -> list[TensorInfo]:
    """compressed-tensors ``pack-quantized``: ``M.weight_packed`` (int32 ``[out, ceil(in*bits/32)]``,
    each row a dense bit stream, value ``i`` at bit ``i*bits``, stored with an offset of
    ``2^(bits-1)``), ``M.weight_scale`` ``[out, groups]`` and, when asymmetric,
    ``M.weight_zero_point`` packed the same way along the output dimension. Renamed ``M.weight``
    with its logical shape, so its role is the parent's."""
    spec = _ct_bits(qc) if qc.get("quant_method") == "compressed-tensors" else None
    if spec is None:
        return tensors
    bits, _ = spec
    out = []
    for t in tensors:
        if not t.name.endswith(".weight_packed") or t.dtype != "I32" or len(t.shape) != 2:
            out.append(t)
            continue
        m = t.name[: -len(".weight_packed")]
        scale, zp = by_name.get(m + ".weight_scale"), by_name.get(m + ".weight_zero_point")
        if scale is None or len(scale.shape) != 2 or scale.shape[0] != t.shape[0]:
            out.append(t)
            continue
        cols = t.shape[1] * 32 // bits
        group = max(1, cols // int(scale.shape[1]))
        layout = f"ct:int;bits={bits};group={group};packed={t.name};scale={scale.name}"
        if zp is not None:
            if 32 % bits:
                out.append(t)  # zero points spanning words along the rows: not read
                continue
            layout += f";zero={zp.name}"
        out.append(replace(t, name=m + ".weight", dtype=f"CT_INT{bits}", shape=(t.shape[0], cols), layout=layout))
    return out


def needs_config(tensors: tuple[TensorInfo, ...], config: dict[str, Any] | None) -> bool:
    """Whether the packing of these tensors is described only in ``config.json`` (MLX's
    ``quantization``), which a Hub listing's curated ``config`` does not carry."""
    if isinstance((config or {}).get("quantization"), dict):
        return False
    names = {t.name for t in tensors}
    return any(t.dtype == "U32" and _module(t.name) + ".scales" in names for t in tensors)


def parse_layout(layout: str) -> tuple[str, str, dict[str, str]]:
    """(scheme, kind, fields) of a packed ``TensorInfo.layout``."""
    head, _, rest = layout.partition(";")
    scheme, _, kind = head.partition(":")
    fields = dict(p.split("=", 1) for p in rest.split(";") if "=" in p)
    return scheme, kind, fields


def is_packed(t: TensorInfo) -> bool:
    return bool(t.layout) and t.layout.split(":", 1)[0] in ("fp8", "mlx", "ct", "bnb", "gptq", "awq")


def row_span(t: TensorInfo, first: int, rows: int) -> tuple[int, int]:
    """The weight bytes of logical rows ``[first, first + rows)`` (rows are contiguous)."""
    row_bytes = (t.end - t.start) // int(t.shape[0])
    return t.start + first * row_bytes, t.start + (first + rows) * row_bytes


def aux_rows(t: TensorInfo, aux: TensorInfo, first: int, rows: int,
             gidx: np.ndarray | None = None) -> tuple[int, int, int]:
    """(start, end, first aux row) of the aux rows that scale logical rows ``[first, first+rows)``
    (of a windowed weight: the group rows of its column window; ``gidx``: the window's act-order
    groups, read first)."""
    scheme, kind, fields = parse_layout(t.layout or "")
    n = int(aux.shape[0]) if aux.shape else 1
    row_bytes = (aux.end - aux.start) // max(1, n)
    if scheme in ("gptq", "awq"):
        if aux.name == fields.get("gidx"):
            c0, m = col_window(t)
            return aux.start + 4 * c0, aux.start + 4 * (c0 + m), c0
        g0, g1 = window_groups(t, gidx)
        return aux.start + g0 * row_bytes, aux.start + g1 * row_bytes, g0
    if scheme == "fp8" and kind == "tensor":
        return aux.start, aux.end, 0
    if scheme == "bnb":  # 1-D aux: absmax per block of the flattened weight, nested per block of absmax
        if aux.name in (fields["qmap"], fields.get("nmap")):
            return aux.start, aux.end, 0
        cols, block = int(t.shape[1]), int(fields["block"])
        a0, a1 = first * cols // block, -(-(first + rows) * cols // block)
        if aux.name == fields.get("nested"):
            nb = int(fields["nblock"])
            a0, a1 = a0 // nb, (a1 - 1) // nb + 1
        return aux.start + a0 * row_bytes, aux.start + a1 * row_bytes, a0
    if scheme == "ct" and aux.name == fields.get("zero"):  # zero points: packed along the rows
        bits = int(fields["bits"])
        a0, a1 = first * bits // 32, -(-(first + rows) * bits // 32)
        return aux.start + a0 * row_bytes, aux.start + a1 * row_bytes, a0
    if scheme == "fp8" and kind == "block":
        b = int(fields.get("block") or 128)
        a0, a1 = first // b, (first + rows - 1) // b + 1
        return aux.start + a0 * row_bytes, aux.start + a1 * row_bytes, a0
    return aux.start + first * row_bytes, aux.start + (first + rows) * row_bytes, first


def _floats(raw: bytes, dtype: str) -> np.ndarray:
    if dtype == "F32":
        return np.frombuffer(raw, "<f4").astype(np.float32)
    if dtype == "F16":
        return np.frombuffer(raw, "<f2").astype(np.float32)
    if dtype == "BF16":
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    raise ValueError(f"scale dtype {dtype}")


def _fp8(raw: bytes, dtype: str) -> np.ndarray:
    import torch

    tdtype = torch.float8_e4m3fn if dtype == "F8_E4M3" else torch.float8_e5m2
    return torch.frombuffer(bytearray(raw), dtype=tdtype).float().numpy()


def dequantize(t: TensorInfo, raw: bytes, aux: dict[str, tuple[TensorInfo, bytes, int]], first: int,
               rows: int) -> np.ndarray:
    """Logical rows ``[first, first + rows)`` of a packed weight as float32 ``(rows, in)``.

    ``aux``: aux tensor name -> (its info, the bytes read by ``aux_rows``, the first aux row).
    """
    scheme, kind, fields = parse_layout(t.layout or "")
    cols = int(t.shape[1])
    if scheme == "fp8":
        w = _fp8(raw, t.dtype).reshape(rows, cols)
        info, sraw, a0 = aux[fields["scale"]]
        s = _floats(sraw, info.dtype)
        if kind == "tensor":
            return w * s.reshape(-1)[0]
        if kind == "channel":
            return w * s.reshape(rows, 1)
        b = int(fields.get("block") or 128)
        grid = s.reshape(-1, int(info.shape[1]))
        r = (np.arange(first, first + rows) // b) - a0
        c = np.arange(cols) // b
        return w * grid[r][:, c]
    if scheme == "mlx":
        bits, group = int(fields["bits"]), int(fields["group"])
        words = np.frombuffer(raw, "<u4").reshape(rows, -1)
        q = _bitstream(words, bits, cols).astype(np.float32)
        si, sraw, _ = aux[fields["scales"]]
        bi, braw, _ = aux[fields["biases"]]
        scales = _floats(sraw, si.dtype).reshape(rows, -1)
        biases = _floats(braw, bi.dtype).reshape(rows, -1)
        g = np.arange(cols) // group
        return q * scales[:, g] + biases[:, g]
    if scheme == "ct":
        bits, group = int(fields["bits"]), int(fields["group"])
        words = np.frombuffer(raw, "<u4").reshape(rows, -1)
        q = _bitstream(words, bits, cols).astype(np.float32) - (1 << (bits - 1))
        si, sraw, _ = aux[fields["scale"]]
        scales = _floats(sraw, si.dtype).reshape(rows, -1)
        g = np.minimum(np.arange(cols) // group, scales.shape[1] - 1)
        if "zero" in fields:
            zi, zraw, z0 = aux[fields["zero"]]
            per = 32 // bits
            zwords = np.frombuffer(zraw, "<u4").reshape(-1, int(zi.shape[1]))
            # packed along the rows: per group column, the bit stream of the output rows
            zs = _bitstream(np.ascontiguousarray(zwords.T), bits, len(zwords) * per)
            off = first - z0 * per
            z = zs[:, off:off + rows].T.astype(np.float32) - (1 << (bits - 1))
            return (q - z[:, g]) * scales[:, g]
        return q * scales[:, g]
    if scheme == "bnb":
        return _bnb_rows(t, fields, raw, aux, first, rows)
    if scheme in ("gptq", "awq"):
        return _window_rows(t, scheme, fields, raw, aux, first, rows)
    raise ValueError(f"{t.name}: no dequantiser for layout {t.layout!r}")


def _bnb_rows(t: TensorInfo, fields: dict[str, str], raw: bytes, aux: dict[str, tuple[TensorInfo, bytes, int]],
              first: int, rows: int) -> np.ndarray:
    """bitsandbytes 4-bit: codes (high nibble first) through ``quant_map``, times the block's
    absmax (itself dequantised through ``nested_quant_map`` when double-quantised), rounded to
    the state's ``dtype`` as the library's dequantisation returns it."""
    import torch

    cols, block = int(t.shape[1]), int(fields["block"])
    b = np.frombuffer(raw, np.uint8)
    codes = np.stack([b >> 4, b & 15], axis=1).reshape(-1)
    qi, qraw, _ = aux[fields["qmap"]]
    qmap = _floats(qraw, qi.dtype)
    ai, araw, a0 = aux[fields["absmax"]]
    if "nested" in fields:
        ni, nraw, n0 = aux[fields["nested"]]
        mi, mraw, _ = aux[fields["nmap"]]
        nested, nmap = _floats(nraw, ni.dtype), _floats(mraw, mi.dtype)
        idx = np.arange(a0, a0 + len(araw))
        absmax = nmap[np.frombuffer(araw, np.uint8)] * nested[idx // int(fields["nblock"]) - n0] \
            + np.float32(float(fields["offset"]))
    else:
        absmax = _floats(araw, ai.dtype)
    e = np.arange(first * cols, (first + rows) * cols)
    w = (qmap[codes] * absmax[e // block - a0]).astype(np.float32).reshape(rows, cols)
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(fields.get("dtype", "float32"))
    return torch.from_numpy(w).to(dtype).float().numpy() if dtype is not None else w


def _awq_unpack(words: np.ndarray, bits: int) -> np.ndarray:
    """AWQ-packed rows of int32 words -> values in output order (``AWQ_ORDER`` interleave)."""
    per = 32 // bits
    vals = (words[:, :, None] >> (np.arange(per, dtype=np.uint32) * bits)) & np.uint32((1 << bits) - 1)
    out = np.empty_like(vals)
    out[:, :, list(AWQ_ORDER[:per])] = vals
    return out.reshape(words.shape[0], -1)


def _window_rows(t: TensorInfo, scheme: str, fields: dict[str, str], raw: bytes,
                 aux: dict[str, tuple[TensorInfo, bytes, int]], first: int, rows: int) -> np.ndarray:
    """Logical rows ``[first, first+rows)`` of a GPTQ/AWQ weight over its column window (NaN in
    the columns not read), from the window's ``qweight`` rows and its groups' scales and zeros."""
    bits, outn, inn = int(fields["bits"]), int(t.shape[0]), int(t.shape[1])
    c0, m = col_window(t)
    words = np.frombuffer(raw, "<u4")
    if scheme == "gptq":  # [words along the inputs, out]: each output's column is one bit stream
        cols = words.reshape(-1, outn)[:, first:first + rows]
        q = _bitstream(np.ascontiguousarray(cols.T), bits, m).astype(np.float32)  # (rows, m)
    else:  # AWQ: [inputs, out*bits/32], interleaved along the outputs
        q = _awq_unpack(words.reshape(m, -1), bits)[:, first:first + rows].T.astype(np.float32)
    si, sraw, g0 = aux[fields["scales"]]
    scales = _floats(sraw, si.dtype).reshape(-1, outn)[:, first:first + rows]  # (groups read, rows)
    if "gidx" in fields:
        gi = np.frombuffer(aux[fields["gidx"]][1], "<i4").astype(np.int64)
    else:
        gi = np.arange(c0, c0 + m) // int(fields["group"])
    g = gi - g0
    if "zero" in fields:
        zi, zraw, _ = aux[fields["zero"]]
        zwords = np.frombuffer(zraw, "<u4").reshape(-1, int(zi.shape[1]))
        z = (_bitstream(zwords, bits, outn) if scheme == "gptq" else _awq_unpack(zwords, bits))[:, first:first + rows]
        z = z.astype(np.float32) + (1.0 if fields.get("v1") == "1" else 0.0)
    else:
        z = np.full_like(scales, float(1 << (bits - 1)))
    out = np.full((rows, inn), np.nan, np.float32)
    out[:, c0:c0 + m] = (q - z[g].T) * scales[g].T
    return out


def _bitstream(words: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Per row of uint32 ``words``, the first ``count`` values of ``bits`` bits, value ``i`` at
    bit ``i * bits`` of the row's little-endian bit stream (values may span two words)."""
    rows = words.shape[0]
    stream = np.unpackbits(words.astype("<u4").view(np.uint8).reshape(rows, -1), axis=1, bitorder="little")
    n = min(count, stream.shape[1] // bits)
    weights = (1 << np.arange(bits, dtype=np.int64))
    return (stream[:, : n * bits].reshape(rows, n, bits).astype(np.int64) * weights).sum(axis=2)


def aux_names(t: TensorInfo) -> list[str]:
    _, _, fields = parse_layout(t.layout or "")
    return [fields[k] for k in ("scale", "scales", "biases", "zero", "absmax", "qmap", "nested", "nmap", "gidx")
            if k in fields]


def scheme_of(tensors: tuple[TensorInfo, ...]) -> str | None:
    """The packed scheme of a model (for ``Sketch.quant``), if any."""
    for t in tensors:
        if is_packed(t):
            scheme, kind, fields = parse_layout(t.layout or "")
            if scheme == "ct":
                return f"compressed-tensors-int{fields.get('bits')}"
            if scheme == "bnb":
                return f"bnb-{kind}" + ("-dq" if "nested" in fields else "")
            if scheme in ("gptq", "awq"):
                return f"{scheme}-int{fields.get('bits')}"
            return f"fp8-{t.dtype[3:].lower()}" if scheme == "fp8" else f"mlx-{fields.get('bits')}bit"
    return None

