"""GGUF (v2/v3) by range reads: header, metadata as card data, tensors under Hugging Face names.

Format (ggml's ``docs/gguf.md``; all little-endian): ``GGUF`` magic, ``uint32`` version,
``uint64`` tensor count, ``uint64`` metadata count; metadata key-values (a key is a ``uint64``
length + UTF-8; value types 0-12, arrays typed and counted); tensor infos (name, ``uint32`` n_dims,
``uint64`` dims innermost first, ``uint32`` ggml type, ``uint64`` offset into the data section);
the data section starts at the next multiple of ``general.alignment`` (default 32). The header is
read in growing prefixes (``read_gguf_header``), every count and length bounded; tensor extents
are checked against the file size, so a truncated file or a lying offset is a ``HeaderError``.

Tensors come out as ``TensorInfo`` under the Hugging Face name of the same weight
(``GGUF_NAMES``: ``token_embd`` -> ``model.embed_tokens``, ``blk.N.attn_q`` ->
``model.layers.N.self_attn.q_proj``, ...), shape in PyTorch order (rows = ``dims[1]``), with
``layout`` naming the ggml type (``gguf:Q4_K``) and, for LLaMA-family Q/K projections, the row
permutation llama.cpp's converter applied (``rope:<heads>``), which ``gguf_rows`` undoes so that
row r of the record is row r of the Hugging Face parent. Float types keep their dtype name
(F32/F16/BF16), so a GGUF in a float type compares as a copy; quantised types have dtype
``GGUF_<TYPE>`` and are dequantised, sampled rows only, by the ``gguf`` package's numpy
dequantisers (``dequantize_rows``). Nothing is executed; nothing but the header and the planned
rows is read.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lineage_index.errors import HeaderError, UnsupportedFormatError
from lineage_index.indexer.read.ranges import RangeReader
from lineage_index.records import TensorInfo

MAGIC = b"GGUF"
FIRST_READ = 1 << 20
MAX_HEADER_BYTES = 64 << 20  # tokenizer vocabularies make headers of a few MiB
MAX_TENSORS = 100_000
MAX_KV = 100_000
MAX_STRING = 16 << 20
MAX_ARRAY = 50_000_000
MAX_DIMS = 4
DEFAULT_ALIGNMENT = 32
#: metadata arrays kept in full (everything else: only their type and length)
KEEP_ARRAYS = frozenset({"general.tags", "general.languages", "general.base_model.count"})
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
#: architectures whose Q/K rows llama.cpp's converter interleaves per head (``LlamaModel.permute``)
ROPE_PERMUTED = frozenset({"llama"})
#: llama.cpp tensor names -> Hugging Face module names (``{n}`` is the block index)
GGUF_NAMES: dict[str, str] = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
    "blk.{n}.attn_norm": "model.layers.{n}.input_layernorm",
    "blk.{n}.attn_q": "model.layers.{n}.self_attn.q_proj",
    "blk.{n}.attn_k": "model.layers.{n}.self_attn.k_proj",
    "blk.{n}.attn_v": "model.layers.{n}.self_attn.v_proj",
    "blk.{n}.attn_output": "model.layers.{n}.self_attn.o_proj",
    "blk.{n}.attn_q_norm": "model.layers.{n}.self_attn.q_norm",
    "blk.{n}.attn_k_norm": "model.layers.{n}.self_attn.k_norm",
    "blk.{n}.ffn_norm": "model.layers.{n}.post_attention_layernorm",
    "blk.{n}.ffn_gate": "model.layers.{n}.mlp.gate_proj",
    "blk.{n}.ffn_up": "model.layers.{n}.mlp.up_proj",
    "blk.{n}.ffn_down": "model.layers.{n}.mlp.down_proj",
}
_PATTERNS = [(re.compile("^" + re.escape(k).replace(r"\{n\}", r"(\d+)") + r"\.(weight|bias)$"), v)
             for k, v in GGUF_NAMES.items()]


@dataclass
class GGUFHeader:
    file: str
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    data_start: int
    header_bytes: int
    unmapped: list[str] = field(default_factory=list)  # llama.cpp names with no Hugging Face name

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None


class _Cursor:
    """Sequential reads over a file prefix that grows on demand (range reads)."""

    def __init__(self, reader: RangeReader, file: str, size: int | None) -> None:
        self.reader, self.file, self.size = reader, file, size
        self.buf = b""
        self.pos = 0

    def need(self, n: int) -> None:
        end = self.pos + n
        if end <= len(self.buf):
            return
        if end > MAX_HEADER_BYTES:
            raise HeaderError(f"{self.file}: GGUF header larger than {MAX_HEADER_BYTES >> 20} MiB; refused")
        want = min(MAX_HEADER_BYTES, max(end, 2 * len(self.buf), FIRST_READ))
        if self.size is not None:
            want = min(want, self.size)
        if want < end:
            raise HeaderError(f"{self.file}: truncated GGUF header (needs byte {end}, file has {self.size})")
        more = self.reader.read_prefix(self.file, want) if not self.buf else \
            self.buf + self.reader.read_ranges(self.file, [(len(self.buf), want)])[0]
        if len(more) < end:
            raise HeaderError(f"{self.file}: truncated GGUF header (needs byte {end}, file has {len(more)})")
        self.buf = more
        if self.size is None:
            self.size = self.reader.size(self.file)

    def take(self, fmt: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def string(self, limit: int = MAX_STRING) -> str:
        n = self.take("<Q")
        if n > limit:
            raise HeaderError(f"{self.file}: GGUF string of {n:,} bytes (limit {limit:,})")
        self.need(n)
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        return raw.decode("utf-8", "replace")

    def skip(self, n: int) -> None:
        self.need(n)
        self.pos += n


def _value(c: _Cursor, vtype: int, keep: bool) -> Any:
    if vtype in _SCALAR:
        return c.take(_SCALAR[vtype])
    if vtype == 8:
        return c.string()
    if vtype == 9:
        etype, count = c.take("<I"), c.take("<Q")
        if count > MAX_ARRAY:
            raise HeaderError(f"{c.file}: GGUF array of {count:,} values (limit {MAX_ARRAY:,})")
        if etype in _SCALAR and not keep:
            c.skip(count * struct.calcsize(_SCALAR[etype]))
            return {"array_of": etype, "len": count}
        values = [_value(c, etype, keep) for _ in range(count)]
        return values if keep else {"array_of": etype, "len": count}
    raise HeaderError(f"{c.file}: unknown GGUF value type {vtype}")


def read_gguf_header(reader: RangeReader, file: str, size: int | None = None) -> GGUFHeader:
    """Parse the header of ``file`` through ``reader`` (range reads; see the module docstring)."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    c = _Cursor(reader, file, size)
    c.need(4)
    if c.buf[:4] != MAGIC:
        raise HeaderError(f"{file}: not a GGUF file (magic {c.buf[:4]!r})")
    c.pos = 4
    version = c.take("<I")
    if version not in (2, 3):
        raise UnsupportedFormatError(f"{file}: GGUF version {version} (2 and 3 are read)")
    n_tensors, n_kv = c.take("<Q"), c.take("<Q")
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise HeaderError(f"{file}: GGUF header lists {n_tensors:,} tensors and {n_kv:,} metadata entries "
                          f"(limits {MAX_TENSORS:,} and {MAX_KV:,})")
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = c.string(limit=65_536)
        vtype = c.take("<I")
        meta[key] = _value(c, vtype, keep=key in KEEP_ARRAYS or not key.startswith("tokenizer."))
    raw: list[tuple[str, tuple[int, ...], int, int]] = []
    for _ in range(n_tensors):
        name = c.string(limit=4096)
        n_dims = c.take("<I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise HeaderError(f"{file}: tensor {name[:100]!r} has {n_dims} dimensions")
        dims = tuple(c.take("<Q") for _ in range(n_dims))
        raw.append((name, dims, c.take("<I"), c.take("<Q")))
    align = meta.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(align, int) or align <= 0 or align & (align - 1):
        raise HeaderError(f"{file}: GGUF alignment {align!r} is not a power of two")
    data_start = -(-c.pos // align) * align
    file_size = c.size if c.size is not None else reader.size(file)
    arch = meta.get("general.architecture")
    heads = meta.get(f"{arch}.attention.head_count") if isinstance(arch, str) else None
    kv_heads = meta.get(f"{arch}.attention.head_count_kv", heads) if isinstance(arch, str) else None
    tensors: list[TensorInfo] = []
    unmapped: list[str] = []
    for name, dims, gtype, offset in raw:
        try:
            qtype = GGMLQuantizationType(gtype)
        except ValueError:
            raise UnsupportedFormatError(f"{file}: tensor {name[:100]!r} has unknown ggml type {gtype}") from None
        block, type_size = GGML_QUANT_SIZES[qtype]
        numel = int(np.prod(dims, dtype=np.int64))
        if dims[0] % block:
            raise HeaderError(f"{file}: tensor {name[:100]!r}: rows of {dims[0]} values are not whole "
                              f"{qtype.name} blocks of {block}")
        nbytes = numel // block * type_size
        start = data_start + offset
        if offset % align or (file_size is not None and start + nbytes > file_size):
            raise HeaderError(f"{file}: tensor {name[:100]!r} at [{start}, {start + nbytes}) lies outside the "
                              f"file ({file_size} bytes) or off its {align}-byte alignment")
        hf = hf_name(name)
        if hf is None:
            unmapped.append(name)
            hf = name
        shape = tuple(reversed(dims))  # ggml dims are innermost first
        dtype = qtype.name if qtype.name in ("F32", "F16", "BF16") else f"GGUF_{qtype.name}"
        layout = f"gguf:{qtype.name}"
        if arch in ROPE_PERMUTED and len(shape) == 2 and (".self_attn.q_proj." in hf or ".self_attn.k_proj." in hf):
            n = heads if ".q_proj." in hf else kv_heads
            if isinstance(n, int) and n > 0 and shape[0] % (2 * n) == 0:
                layout += f";rope:{n}"
        tensors.append(TensorInfo(hf, dtype, shape, file, start, start + nbytes, layout))
    return GGUFHeader(file, version, meta, tensors, data_start, c.pos, unmapped)


def hf_name(name: str) -> str | None:
    """The Hugging Face name of a llama.cpp tensor name, or None when there is no mapping."""
    for pattern, target in _PATTERNS:
        m = pattern.match(name)
        if m:
            groups = m.groups()
            base = target.replace("{n}", groups[0]) if "{n}" in target else target
            return f"{base}.{groups[-1]}"
    return None


# --- rows -----------------------------------------------------------------------------------


def layout_parts(layout: str | None) -> tuple[str | None, int | None]:
    """(ggml type name, rope heads) of a ``TensorInfo.layout``."""
    qtype, heads = None, None
    for part in (layout or "").split(";"):
        key, _, value = part.partition(":")
        if key == "gguf":
            qtype = value
        elif key == "rope" and value.isdigit():
            heads = int(value)
    return qtype, heads


def row_bytes(t: TensorInfo) -> int:
    """Bytes of one row (the innermost dimension) of a GGUF tensor."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    qtype, _ = layout_parts(t.layout)
    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[qtype or "F32"]]
    cols = int(t.shape[-1]) if t.shape else 1
    return cols // block * type_size


def gguf_rows(t: TensorInfo, rows: range) -> list[int]:
    """The file rows that hold the Hugging Face rows ``rows`` (the rope permutation undone).

    llama.cpp stores each head's rows as ``[j, half]`` pairs where Hugging Face has ``[half, j]``
    (``reshape(heads, 2, d/2, cols).swapaxes(1, 2)``): HF row ``h*d + half*d/2 + j`` is file row
    ``h*d + 2*j + half``.
    """
    _, heads = layout_parts(t.layout)
    if not heads:
        return list(rows)
    d = int(t.shape[0]) // heads
    half_d = d // 2
    out = []
    for r in rows:
        h, i = divmod(r, d)
        half, j = divmod(i, half_d)
        out.append(h * d + 2 * j + half)
    return out


def dequantize_rows(raw: bytes, t: TensorInfo, n_rows: int) -> np.ndarray:
    """``n_rows`` rows of ``t`` (their bytes concatenated, in the order asked) as float32."""
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import dequantize

    qtype, _ = layout_parts(t.layout)
    data = np.frombuffer(raw, dtype=np.uint8).reshape(n_rows, -1)
    with np.errstate(all="ignore"):  # hostile or damaged blocks decode to inf/nan, never raise
        values = dequantize(data, GGMLQuantizationType[qtype or "F32"])
    return np.asarray(values, dtype=np.float32).reshape(n_rows, -1)


# --- card data ------------------------------------------------------------------------------


def card_from_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """What a GGUF's metadata says as model-card fields: licence, base models, name, quantiser."""
    card: dict[str, Any] = {}
    lic = meta.get("general.license")
    if isinstance(lic, str) and lic.strip():
        card["license"] = lic.strip()
    bases = []
    count = meta.get("general.base_model.count")
    for i in range(count if isinstance(count, int) and 0 < count <= 64 else 0):
        url = meta.get(f"general.base_model.{i}.repo_url")
        org, name = meta.get(f"general.base_model.{i}.organization"), meta.get(f"general.base_model.{i}.name")
        m = re.match(r"^https?://(?:www\.)?(?:huggingface\.co|hf\.co)/([\w.-]+/[\w.-]+?)/?$", url or "") \
            if isinstance(url, str) else None
        if m:
            bases.append(m.group(1))
        elif isinstance(org, str) and isinstance(name, str) and org and name:
            bases.append(f"{org.strip().replace(' ', '-')}/{name.strip().replace(' ', '-')}")
    if bases:
        card["base_model"] = bases
        card["base_model_relation"] = "quantized"
    for key, field_name in (("general.name", "model_name"), ("general.quantized_by", "quantized_by")):
        value = meta.get(key)
        if isinstance(value, str) and value.strip():
            card[field_name] = value.strip()
    return card


def quant_level(header: GGUFHeader) -> str:
    """The ggml type most of the weight bytes are in (Q4_K, Q8_0, F16, ...)."""
    weight: dict[str, int] = {}
    for t in header.tensors:
        qtype, _ = layout_parts(t.layout)
        weight[qtype or "?"] = weight.get(qtype or "?", 0) + (t.end - t.start)
    return max(weight, key=lambda k: weight[k]) if weight else "?"


# --- one repository: its variants, the one read ----------------------------------------------

_SPLIT = re.compile(r"^(.*)-(\d{5})-of-(\d{5})\.gguf$", re.I)
#: approximate bits per weight of the quantisation named in a file name (llama.cpp's names)
_NAME_BITS = (("F32", 32.0), ("BF16", 16.0), ("F16", 16.0), ("Q8_0", 8.5), ("Q6_K", 6.6), ("Q5_K", 5.5),
              ("Q5_1", 6.0), ("Q5_0", 5.5), ("Q4_K", 4.5), ("Q4_1", 5.0), ("Q4_0", 4.5), ("IQ4", 4.3),
              ("Q3_K", 3.4), ("IQ3", 3.1), ("Q2_K", 2.6), ("IQ2", 2.2), ("IQ1", 1.6), ("TQ", 1.7))
_FLOATS = ("F32", "BF16", "F16")


def name_quant(path: str) -> str | None:
    """The quantisation a GGUF file name states (``Q4_K_M`` counts as ``Q4_K``), if any."""
    upper = posix_name(path).upper()
    for token, _ in _NAME_BITS:
        if re.search(rf"(?<![A-Z0-9]){token}(?![0-9])", upper):
            return token
    return None


def posix_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def variants(files: list[tuple[str, int | None]]) -> list[list[tuple[str, int | None]]]:
    """The GGUF files of a repo grouped into variants (a split model's parts are one variant)."""
    groups: dict[str, list[tuple[str, int | None]]] = {}
    for path, size in sorted(files):
        m = _SPLIT.match(path)
        groups.setdefault(m.group(1) if m else path, []).append((path, size))
    return list(groups.values())


def choose_variant(groups: list[list[tuple[str, int | None]]]) -> list[tuple[str, int | None]]:
    """The variant to read: the quantised one with the most bits (a GGUF repo of several levels is
    a quantisation of its parent; the highest level says it most clearly), else a float one, then
    the largest; names decide where the listing gave no sizes."""
    bits = dict(_NAME_BITS)

    def rank(group: list[tuple[str, int | None]]) -> tuple[int, float, int, str]:
        q = name_quant(group[0][0])
        return (0 if q is not None and q not in _FLOATS else 1 if q in _FLOATS else 2,
                -bits.get(q or "", 0.0), -sum(s or 0 for _, s in group), group[0][0])

    return min(groups, key=rank)


def read_gguf_model(reader: RangeReader, files: list[tuple[str, int | None]]
                    ) -> tuple[tuple[TensorInfo, ...], dict[str, Any], dict[str, Any]]:
    """(tensors, the ``gguf`` config entry, card fields) of a repo's GGUF files: the variants it
    holds, the one read, its quantisation and architecture, and what its metadata declares."""
    groups = variants([(p, s) for p, s in files if p.lower().endswith(".gguf")])
    chosen = choose_variant(groups)
    headers = [read_gguf_header(reader, path, size) for path, size in chosen]
    tensors = tuple(t for h in headers for t in h.tensors)
    meta = headers[0].metadata
    info = {"file": chosen[0][0], "parts": len(chosen), "quant": quant_level(headers[0]),
            "architecture": headers[0].architecture,
            "variants": [{"file": g[0][0], "parts": len(g), "quant": name_quant(g[0][0]) or "?"} for g in groups]}
    return tensors, info, card_from_metadata(meta)
