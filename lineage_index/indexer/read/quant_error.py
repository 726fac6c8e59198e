"""The rounding error each quantised weight format makes, stated from the formats alone.

Verification (``recover.verify``) calls a quantised model the ``quantized`` child of a relative only
when its sampled values lie within ``quant_tolerance`` of that relative's: a relative RMS
difference ||child - parent|| / ||parent|| per sampled matrix (median over matrices) of at most
``TOLERANCE_FACTOR`` times the scheme's expected rounding error. The scheme names are
``Sketch.quant``'s (``read.packed.scheme_of``, ``bnb-int8``, ``gguf-<type>``).
"""

from __future__ import annotations

import re

# Expected relative RMS error ||dequantised - original|| / ||original|| of one weight matrix, from
# the formats alone. b-bit integer codes over a group (GPTQ, AWQ, MLX, compressed-tensors, GGUF
# k-quants) round to a step of (range / (2^b - 1)); a group of 32-128 roughly Gaussian values spans
# about 5.6 sigma, and a uniform rounding error has RMS step / sqrt(12): 1.62 / (2^b - 1). Row-wise
# absmax int8 (bitsandbytes LLM.int8) spans the row's +-max (about 8 sigma over thousands of
# values): 8 / 255 / sqrt(12). Floating formats keep a relative error of 2^-(mantissa+1) uniform
# per value, RMS 2^-(m+1) / sqrt(3): FP8 e4m3 (m = 3), e5m2 (m = 2), F16 (m = 10), BF16 (m = 7).
# NF4/FP4 (bitsandbytes): 16 levels over a 64-value block's absmax: as 4-bit integer codes.
FLOAT_REL_RMS = {"fp8-e4m3": 2**-4 / 3**0.5, "fp8-e5m2": 2**-3 / 3**0.5, "fp16": 2**-11 / 3**0.5,
                 "bf16": 2**-8 / 3**0.5, "bnb-int8": 8 / 255 / 12**0.5}
UNKNOWN_BITS = 3  # a value grid with no named scheme (quantised then saved as floats): assume 3 bits
TOLERANCE_FACTOR = 3.0  # heavy-tailed trained weights and small groups round coarser than the estimate


def scheme_bits(quant: str) -> int | None:
    """Bits per weight code of a ``Sketch.quant`` scheme name (``gptq-int4``, ``mlx-3bit``,
    ``gguf-Q4_K``, ``compressed-tensors-int8``, ``bnb-nf4``), if it names them."""
    if quant.startswith("bnb-nf4") or quant.startswith("bnb-fp4"):
        return 4
    m = re.search(r"(?:int|q|iq)(\d)|(\d)bit", quant.lower().replace("gguf-", ""))
    return int(m.group(1) or m.group(2)) if m else None


def expected_error(quant: str | None) -> float:
    """The relative RMS rounding error a model quantised with ``quant`` carries (see above)."""
    q = (quant or "").lower()
    for name, err in FLOAT_REL_RMS.items():
        if q.startswith(name):
            return err
    if q in ("gguf-f16", "gguf-bf16", "gguf-f32"):
        return FLOAT_REL_RMS["fp16"] if q != "gguf-bf16" else FLOAT_REL_RMS["bf16"]
    bits = scheme_bits(q) if q else None
    return 1.62 / (2 ** (bits or UNKNOWN_BITS) - 1)


def quant_tolerance(quant: str | None) -> float:
    """The largest median relative RMS difference from its parent a ``quantized`` child of scheme
    ``quant`` may show on the sampled rows: ``TOLERANCE_FACTOR`` x the scheme's rounding error."""
    return TOLERANCE_FACTOR * expected_error(quant)
