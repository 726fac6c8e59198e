"""The weight sketch: a planned, element-aligned sample of a model's tensors.

``plan_reads`` decides, from tensor names and shapes only (never dtypes or sizes in bytes),
which rows of which tensors to read, so every model of one architecture samples the same
elements, whatever its dtype or quantisation. ``sketch_model`` reads only those byte ranges
through a RangeReader, decodes F32/F16/BF16/F64, bitsandbytes int8 (int8 + ``SCB``) and packed
quantised weights (``read.packed``: FP8, MLX, compressed-tensors, bitsandbytes 4-bit on the
sampled rows; GPTQ and AWQ as a column window of those rows, NaN elsewhere: ``sketch.window``), and
builds the FAISS embedding (a count sketch of the normalised samples; torch, on the GPU when
one is present). This module never reads a whole tensor unless the tensor is small.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from lineage_index.config import SKETCH_SEED, SKETCH_VERSION
from lineage_index.errors import ModelReadError
from lineage_index.indexer.sketch.canon import (
    canonical,
    family_signature,
    is_adapter_tensor,
    is_vocab_role,
    quant_aux_kind,
)
from lineage_index.records import ModelRecord, Sketch, TensorInfo, TensorSample

# Plan constants: a function of shapes only. Stated here, used everywhere.
TARGET_ELEMS = 16_384  # elements sampled per matrix (rows x full columns)
MIN_ROWS = 8  # rows per matrix at least (rank of a delta block is visible up to this)
MAX_ROWS = 64
ROW_REGION = 2_048  # rows are taken from the first ROW_REGION rows of a matrix
VOCAB_REGION = 256  # ... and of a vocabulary matrix from its first 256 rows: resized vocabularies align
VECTOR_ELEMS = 4_096  # elements sampled from a 1-D tensor
MAX_LAYERS = 8  # layers sampled (evenly spaced, first and last included)
PRINT_ELEMS = 2_048  # elements of every layer's print (rows of one matrix role, the same rows in every layer)
EMBED_DIM = 256

_DTYPE_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I8": 1, "U8": 1}


def _readable(t: TensorInfo) -> bool:
    """A tensor the sketch can decode: a plain float/int8 dtype, a GGUF matrix (any ggml type),
    or a packed quantised weight (``read.packed``)."""
    from lineage_index.indexer.read.packed import is_packed

    return t.dtype in _DTYPE_SIZE or (t.dtype.startswith("GGUF_") and len(t.shape) == 2) or is_packed(t)


def _windowed(t: TensorInfo) -> bool:
    from lineage_index.indexer.read.packed import is_windowed

    return is_windowed(t)


def _gguf_rows(t: TensorInfo) -> bool:
    """Rows read one by one through the GGUF layout (a ggml type, or the rope permutation)."""
    return bool(t.layout) and t.layout.startswith("gguf:") and len(t.shape) == 2 and (
        t.dtype.startswith("GGUF_") or ";rope:" in t.layout)


@dataclass(frozen=True)
class PlannedRead:
    tensor: TensorInfo
    key: str
    role: str
    layer: int | None
    row_start: int
    rows: int
    cols: int
    scale: TensorInfo | None  # bitsandbytes SCB row scales, when the weight is int8


def _stable_int(*parts: object) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _selected_layers(layers: set[int]) -> set[int]:
    ordered = sorted(layers)
    if len(ordered) <= MAX_LAYERS:
        return set(ordered)
    picks = np.linspace(0, len(ordered) - 1, MAX_LAYERS).round().astype(int)
    return {ordered[i] for i in picks}


def plan_reads(tensors: tuple[TensorInfo, ...] | list[TensorInfo], seed: int = SKETCH_SEED) -> list[PlannedRead]:
    """The sampling plan: which rows of which tensors, from (role, layer, shape, seed) only."""
    by_name = {t.name: t for t in tensors}
    layers = {c.layer for t in tensors if (c := canonical(t.name)).layer is not None}
    keep_layers = _selected_layers(layers)
    anchor = print_role(tensors)
    plan: list[PlannedRead] = []
    planned: set[str] = set()
    for t in sorted(tensors, key=lambda x: (x.name, x.file)):
        if quant_aux_kind(t.name) or not _readable(t):
            continue
        c = canonical(t.name)
        if (c.layer is not None and c.layer not in keep_layers) or c.key in planned:
            continue  # a name repeated in another file is sampled once
        planned.add(c.key)
        numel = int(np.prod(t.shape)) if t.shape else 1
        if numel == 0:
            continue
        if len(t.shape) <= 1:
            n_rows, cols = 1, numel
            take_rows, take_cols = 1, min(numel, VECTOR_ELEMS)
        else:
            n_rows, cols = t.shape[0], numel // t.shape[0]
            take_rows = _rows(n_rows, cols)
            take_cols = cols
        region = min(n_rows, VOCAB_REGION if is_vocab_role(c.role) else ROW_REGION)
        if c.role == anchor and len(t.shape) == 2:  # the layer print is the first rows of this sample
            row_start = _print_start(seed, c.role, tuple(t.shape))
        else:
            row_start = _stable_int(seed, c.role, c.layer, tuple(t.shape[1:])) % max(1, region - take_rows + 1)
        scale = _int8_scale(t, by_name)
        if t.dtype == "I8" and scale is None:
            continue  # int8 without scales cannot be decoded into weights
        plan.append(PlannedRead(t, c.key, c.role, c.layer, row_start, take_rows, take_cols, scale))
    return plan


def _int8_scale(t: TensorInfo, by_name: dict[str, TensorInfo]) -> TensorInfo | None:
    """The bitsandbytes row scales of an int8 weight: <module>.SCB (older exports <module>.weight.SCB)."""
    if t.dtype != "I8":
        return None
    module = t.name[: -len(".weight")] if t.name.endswith(".weight") else t.name
    return by_name.get(module + ".SCB") or by_name.get(t.name + ".SCB")


def print_role(tensors: tuple[TensorInfo, ...] | list[TensorInfo]) -> str | None:
    """The matrix role whose rows print every layer: the layered 2-D role with the shortest rows
    (fewest bytes per row), then the most elements, then by name: a function of the block
    shapes only, so models of one block design but any depth agree."""
    best: tuple[int, int, str] | None = None
    for t in tensors:
        c = canonical(t.name)
        if c.layer is None or len(t.shape) != 2 or quant_aux_kind(t.name) or is_adapter_tensor(t.name):
            continue
        cand = (int(t.shape[1]), -int(t.shape[0]) * int(t.shape[1]), c.role)
        best = cand if best is None or cand < best else best
    return best[2] if best else None


def _rows(n_rows: int, cols: int) -> int:
    """Rows the sample of a matrix takes."""
    return min(n_rows, max(MIN_ROWS, min(MAX_ROWS, -(-TARGET_ELEMS // cols))))


def _print_start(seed: int, role: str, shape: tuple[int, ...]) -> int:
    """First sampled row of the print role, in every layer (the layer is not an input)."""
    n_rows = int(shape[0])
    return _stable_int(seed, "print", role, shape) % max(1, min(n_rows, ROW_REGION) - _rows(n_rows, int(shape[1])) + 1)


def print_rows(shape: tuple[int, ...]) -> int:
    """Rows of a layer print: ``PRINT_ELEMS`` elements, within the rows the sample takes."""
    n_rows, cols = int(shape[0]), int(shape[1])
    return min(_rows(n_rows, cols), max(1, -(-PRINT_ELEMS // cols)))


def plan_prints(tensors: tuple[TensorInfo, ...] | list[TensorInfo], seed: int = SKETCH_SEED) -> list[PlannedRead]:
    """Reads of the layer prints the sample does not already hold: the first ``print_rows`` of
    the print role's sampled rows, which start at the same row in every layer
    (``_print_start``), so layer i of one model compares with layer j of another (a layer moved
    by pruning or a passthrough merge). The sampled layers' prints are sliced from their samples."""
    role = print_role(tensors)
    if role is None:
        return []
    by_name = {t.name: t for t in tensors}
    keep = _selected_layers({c.layer for t in tensors if (c := canonical(t.name)).layer is not None})
    plan: list[PlannedRead] = []
    seen: set[int] = set()
    for t in sorted(tensors, key=lambda x: (x.name, x.file)):
        c = canonical(t.name)
        if c.role != role or c.layer is None or c.layer in keep or c.layer in seen or not _readable(t) \
                or _windowed(t):
            continue  # a column-windowed weight (GPTQ, AWQ) cannot give whole print rows cheaply
        scale = _int8_scale(t, by_name)
        if t.dtype == "I8" and scale is None:
            continue  # int8 without scales cannot be decoded into weights
        seen.add(c.layer)
        shape = tuple(t.shape)
        plan.append(PlannedRead(t, f"print:{c.key}", role, c.layer, _print_start(seed, role, shape),
                                print_rows(shape), int(shape[1]), scale))
    return plan


def _byte_ranges(p: PlannedRead) -> list[tuple[int, int]]:
    """The byte ranges of a planned read, in the order its rows are wanted."""
    from lineage_index.indexer.read.packed import is_packed, row_span

    if _windowed(p.tensor):
        from lineage_index.indexer.read.packed import window_span

        return [window_span(p.tensor)]
    if is_packed(p.tensor):
        return [row_span(p.tensor, p.row_start, p.rows)]
    if not _gguf_rows(p.tensor):
        return [_byte_range(p)]
    from lineage_index.indexer.read.gguf import gguf_rows, row_bytes

    rb = row_bytes(p.tensor)
    return [(p.tensor.start + r * rb, p.tensor.start + (r + 1) * rb)
            for r in gguf_rows(p.tensor, range(p.row_start, p.row_start + p.rows))]


def _byte_range(p: PlannedRead) -> tuple[int, int]:
    size = _DTYPE_SIZE[p.tensor.dtype]
    row_bytes = (int(np.prod(p.tensor.shape[1:])) if len(p.tensor.shape) > 1 else 1) * size
    if len(p.tensor.shape) <= 1:
        start = p.tensor.start
        return start, start + p.cols * size
    start = p.tensor.start + p.row_start * row_bytes
    return start, start + p.rows * row_bytes


def decode(raw: bytes, dtype: str) -> np.ndarray:
    """Little-endian safetensors bytes -> float32 (BF16 by widening the bit pattern)."""
    if dtype == "F32":
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if dtype == "F16":
        return np.frombuffer(raw, dtype="<f2").astype(np.float32)
    if dtype == "F64":
        return np.frombuffer(raw, dtype="<f8").astype(np.float32)
    if dtype == "BF16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32)
    if dtype == "I8":
        return np.frombuffer(raw, dtype="i1").astype(np.float32)
    if dtype == "U8":
        return np.frombuffer(raw, dtype="u1").astype(np.float32)
    raise ModelReadError(f"cannot decode dtype {dtype}")


@lru_cache(maxsize=4096)
def _buckets(key: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(_stable_int("embed", key, n))
    idx = torch.from_numpy(rng.integers(0, EMBED_DIM, size=n))
    sign = torch.from_numpy(rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=n))
    return idx, sign


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def embed(samples: dict[str, TensorSample]) -> np.ndarray:
    """Count-sketch embedding: squared L2 between two embeddings ~ mean relative squared delta.

    Each tensor is divided by its own RMS and by sqrt(elements x tensors), then hashed into
    EMBED_DIM buckets with random signs fixed per (key, size), so aligned samples of related
    models land close and unrelated models of the same architecture land far apart.
    """
    device = _device()
    out = torch.zeros(EMBED_DIM, dtype=torch.float32, device=device)
    usable = [s for s in samples.values() if s.values.size > 1]
    for s in usable:
        flat = np.ascontiguousarray(s.values.reshape(-1))
        if np.isnan(flat).any():  # a column window (GPTQ, AWQ): the columns not read count as zeros
            flat = np.nan_to_num(flat, nan=0.0)
        v = torch.from_numpy(flat if flat.flags.writeable else flat.copy()).to(device)  # read-only: mmap'd store
        rms = torch.sqrt(torch.mean(v * v)).clamp_min(1e-12)
        idx, sign = _buckets(s.key, v.numel())
        v = v / (rms * np.sqrt(v.numel() * len(usable)))
        out.index_add_(0, idx.to(device), v * sign.to(device))
    return out.cpu().numpy()


def _gidx_name(t: TensorInfo) -> str | None:
    from lineage_index.indexer.read.packed import parse_layout

    return parse_layout(t.layout or "")[2].get("gidx") if _windowed(t) else None


def _read_act_order_groups(record: ModelRecord, reader, plan: list[PlannedRead],
                           by_name: dict[str, TensorInfo]) -> dict[tuple[str, str], bytes]:
    """The ``g_idx`` of every act-order GPTQ window, read before the rest: they name the groups
    whose scales and zero points the window needs. (planned key, g_idx name) -> its bytes."""
    from lineage_index.indexer.read.packed import gidx_span

    want: dict[str, list[tuple[tuple[str, str], tuple[int, int]]]] = {}
    for p in plan:
        name = _gidx_name(p.tensor)
        if name is None:
            continue
        info = by_name.get(name)
        if info is None:
            raise ModelReadError(f"{record.id}: {p.tensor.name} names aux tensor {name!r}, which is missing")
        want.setdefault(info.file, []).append(((p.key, name), gidx_span(p.tensor, info)))
    out: dict[tuple[str, str], bytes] = {}
    for file, items in want.items():
        chunks = reader.read_ranges(file, [r for _, r in items])
        for (key, rng), chunk in zip(items, chunks, strict=True):
            if len(chunk) != rng[1] - rng[0]:
                raise ModelReadError(f"{record.id}: short read in {file} at {rng[0]}")
            out[key] = chunk
    return out


def sketch_model(record: ModelRecord, reader, seed: int = SKETCH_SEED) -> Sketch:
    """Read the planned sample of ``record`` through ``reader`` and build its Sketch.

    ``reader`` is a RangeReader (``read_ranges(file, ranges) -> list[bytes]`` with
    ``bytes_read`` and ``requests`` counters). Raises ModelReadError on a short read.
    """
    if not record.tensors:
        raise ModelReadError(f"{record.id}: no safetensors tensors to sketch ({record.weight_format})")
    plan = plan_reads(record.tensors, seed) + plan_prints(record.tensors, seed)
    anchor = print_role(record.tensors)
    before_bytes, before_requests = reader.bytes_read, reader.requests
    by_file: dict[str, list[tuple[PlannedRead, str]]] = {}
    ranges: dict[str, list[tuple[int, int]]] = {}
    from lineage_index.indexer.read.packed import (
        aux_names,
        aux_rows,
        dequantize,
        is_packed,
        scheme_of,
    )

    by_name = {t.name: t for t in record.tensors}
    aux_first: dict[tuple[str, str], int] = {}
    gidx = _read_act_order_groups(record, reader, plan, by_name)
    for p in plan:
        parts: list[tuple[str, TensorInfo | None, list[tuple[int, int]] | None]] = [
            ("w", p.tensor, _byte_ranges(p)), ("s", p.scale, None)]
        if is_packed(p.tensor):
            for name in aux_names(p.tensor):
                a = by_name.get(name)
                if a is None:
                    raise ModelReadError(f"{record.id}: {p.tensor.name} names aux tensor {name!r}, which is missing")
                if (p.key, name) in gidx:  # act-order groups: read first
                    aux_first[(p.key, name)] = aux_rows(p.tensor, a, p.row_start, p.rows)[2]
                    continue
                g = np.frombuffer(gidx[(p.key, n)], "<i4") if (n := _gidx_name(p.tensor)) and (p.key, n) in gidx \
                    else None
                a_start, a_end, aux_first[(p.key, name)] = aux_rows(p.tensor, a, p.row_start, p.rows, g)
                parts.append((f"a:{name}", a, [(a_start, a_end)]))
        for part, info, rngs in parts:
            if info is None:
                continue
            if rngs is None:  # SCB: one float32 per row
                rngs = [(info.start + 4 * p.row_start, info.start + 4 * (p.row_start + p.rows))]
            for rng in rngs:
                by_file.setdefault(info.file, []).append((p, part))
                ranges.setdefault(info.file, []).append(rng)
    raw: dict[tuple[str, str], bytes] = {(key, f"a:{name}"): b for (key, name), b in gidx.items()}
    for file, items in by_file.items():
        chunks = reader.read_ranges(file, ranges[file])
        for (p, part), rng, chunk in zip(items, ranges[file], chunks, strict=True):
            if len(chunk) != rng[1] - rng[0]:
                raise ModelReadError(f"{record.id}: short read in {file} at {rng[0]}")
            raw[(p.key, part)] = raw.get((p.key, part), b"") + chunk
    samples: dict[str, TensorSample] = {}
    prints: dict[int, np.ndarray] = {}
    for p in plan:
        quant = None
        if is_packed(p.tensor):
            aux = {n: (by_name[n], raw[(p.key, f"a:{n}")], aux_first[(p.key, n)]) for n in aux_names(p.tensor)}
            values = dequantize(p.tensor, raw[(p.key, "w")], aux, p.row_start, p.rows)
            quant = scheme_of((p.tensor,))
        elif p.tensor.dtype.startswith("GGUF_"):
            from lineage_index.indexer.read.gguf import dequantize_rows

            values = dequantize_rows(raw[(p.key, "w")], p.tensor, p.rows)
            quant = "gguf-" + p.tensor.dtype[len("GGUF_"):]
        else:
            values = decode(raw[(p.key, "w")], p.tensor.dtype)
        if p.scale is not None:
            scb = decode(raw[(p.key, "s")], p.scale.dtype)
            values = values.reshape(p.rows, p.cols) * (scb[:, None] / 127.0)
            quant = "bnb-int8"
        values = values.reshape(p.rows, -1).astype(np.float32, copy=False)
        if p.key.startswith("print:"):
            prints[int(p.layer)] = values.reshape(-1)
            continue
        if p.role == anchor and p.layer is not None and len(p.tensor.shape) == 2 and not _windowed(p.tensor):
            prints[p.layer] = values[: print_rows(tuple(p.tensor.shape))].reshape(-1)
        nbytes = sum(len(v) for (key, _), v in raw.items() if key == p.key)
        samples[p.key] = TensorSample(
            p.key, p.role, p.layer, tuple(p.tensor.shape), p.tensor.dtype, p.row_start, 0, values, nbytes, quant
        )
    kind = "adapter" if any(is_adapter_tensor(t.name) for t in record.tensors) else "full"
    family, desc = family_signature(record.tensors)
    if kind == "adapter":
        family, desc = "adapter:" + family, "adapter:" + desc
    quants = {q for t in record.tensors if (q := quant_aux_kind(t.name))}
    if (packed_scheme := scheme_of(record.tensors)) is not None:
        quants = {packed_scheme}
    if any(t.dtype.startswith("GGUF_") for t in record.tensors):
        quants.add("gguf-" + str((record.config or {}).get("gguf", {}).get("quant", "quantised")))
    model_bytes = sum(t.end - t.start for t in record.tensors)
    return Sketch(
        model_id=record.id,
        sha=record.sha,
        version=SKETCH_VERSION,
        family=family,
        family_desc=desc,
        kind=kind,
        samples=samples,
        embedding=embed(samples),
        bytes_read=reader.bytes_read - before_bytes + record.header_bytes_read,
        requests=reader.requests - before_requests + record.header_requests,
        model_bytes=model_bytes,
        dtypes=tuple(sorted({t.dtype for t in record.tensors})),
        quant=min(quants) if quants else None,
        layer_prints=prints,
    )
