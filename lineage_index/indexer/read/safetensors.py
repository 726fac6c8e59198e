"""Safetensors headers: parse and validate them with hard limits, read them through a RangeReader.

A safetensors file is ``u64-le N`` + ``N`` bytes of JSON + a data section. The JSON maps tensor
names to ``{"dtype", "shape", "data_offsets": [begin, end]}`` with offsets relative to the data
section, plus an optional ``__metadata__`` object of str -> str. Everything here treats the
bytes as hostile: the length is bounded, the JSON must be a flat object of well-formed entries,
dtypes must be known, spans must match shape x itemsize, lie inside the data section and never
overlap. Any violation raises ``errors.HeaderError`` naming the file.

Sharded checkpoints (``*.safetensors.index.json`` with a ``weight_map``) are resolved to their
shards and cross-checked. PEFT adapters need nothing special: ``adapter_model.safetensors`` is
an ordinary safetensors file (its ``adapter_config.json`` is read by the sources).

This module never reads tensor data and never opens pickle, GGUF or any other format. It does
no I/O of its own: bytes come from a ``ranges.RangeReader``.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lineage_index.errors import HeaderError
from lineage_index.records import TensorInfo

if TYPE_CHECKING:
    from lineage_index.indexer.read.ranges import RangeReader

#: Element size in BITS per safetensors dtype (sub-byte float formats included).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "U16": 16,
    "I16": 16,
    "F16": 16,
    "BF16": 16,
    "U32": 32,
    "I32": 32,
    "F32": 32,
    "U64": 64,
    "I64": 64,
    "F64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors reference limit is 100 MB
DEFAULT_PREFIX_BYTES = 64 * 1024  # first read; one more request only when the header is larger
MAX_INDEX_BYTES = 32 * 1024 * 1024  # a model.safetensors.index.json larger than this is hostile
MAX_DIMS = 64
# tensors in one header: a 7B model has ~300, a large MoE shard a few thousand (all of
# Qwen3-235B-A22B: ~36k over its shards); 920k tiny tensors in one header is a resource bomb
MAX_TENSORS_PER_HEADER = 100_000
MAX_SAFETENSORS_FILES = 4096  # per model
INDEX_SUFFIX = ".safetensors.index.json"


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated header: tensors with absolute offsets, free-form metadata, sizes."""

    file: str
    header_bytes: int  # N, the JSON length
    file_size: int | None
    tensors: tuple[TensorInfo, ...]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def data_start(self) -> int:
        return 8 + self.header_bytes


def dtype_nbytes(dtype: str, numel: int) -> int:
    """Bytes taken by ``numel`` elements of ``dtype`` (ValueError if not a whole number)."""
    bits = DTYPE_BITS[dtype] * numel
    if bits % 8:
        raise ValueError(f"{numel} elements of {dtype} is not a whole number of bytes")
    return bits // 8


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_header_length(prefix: bytes, *, file: str, file_size: int | None,
                        max_header_bytes: int = MAX_HEADER_BYTES) -> int:
    """Validate the 8-byte little-endian header length at the start of ``prefix``."""
    if len(prefix) < 8:
        raise HeaderError(
            f"{file}: truncated safetensors file: {len(prefix)} bytes, need at least 8 for the header length"
        )
    n = int.from_bytes(prefix[:8], "little")
    if n < 2:
        raise HeaderError(f"{file}: safetensors header length {n} is too small for a JSON object")
    if n > max_header_bytes:
        raise HeaderError(
            f"{file}: safetensors header length {n} exceeds the limit of {max_header_bytes} bytes"
        )
    if file_size is not None and n > file_size - 8:
        raise HeaderError(
            f"{file}: safetensors header length {n} exceeds the file size {file_size} - 8 (truncated file?)"
        )
    return n


def parse_header(header: bytes, *, file: str, file_size: int | None) -> SafetensorsHeader:
    """Parse and validate the JSON header bytes (the N bytes after the length prefix)."""
    n = len(header)
    data_size = None if file_size is None else file_size - 8 - n
    if data_size is not None and data_size < 0:
        raise HeaderError(f"{file}: header of {n} bytes does not fit in a file of {file_size} bytes")
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HeaderError(f"{file}: safetensors header is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not text.lstrip().startswith("{"):
        raise HeaderError(f"{file}: safetensors header is not a JSON object")
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise HeaderError(f"{file}: safetensors header JSON is nested too deeply") from None
    except ValueError as exc:
        raise HeaderError(f"{file}: safetensors header is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise HeaderError(f"{file}: safetensors header is not a JSON object")
    if len(obj) > MAX_TENSORS_PER_HEADER:
        raise HeaderError(f"{file}: safetensors header lists {len(obj):,} tensors (limit {MAX_TENSORS_PER_HEADER:,})")

    metadata: dict[str, str] = {}
    raw_meta = obj.pop("__metadata__", None)
    if raw_meta is not None:
        if not isinstance(raw_meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw_meta.items()
        ):
            raise HeaderError(f"{file}: __metadata__ must be an object of string -> string")
        metadata = dict(raw_meta)

    base = 8 + n
    spans: list[tuple[int, int, str]] = []
    tensors: list[TensorInfo] = []
    for name, entry in obj.items():
        where = f"{file}: tensor {name[:200]!r}"
        if not isinstance(entry, dict):
            raise HeaderError(f"{where}: entry is not an object")
        dtype = entry.get("dtype")
        shape = entry.get("shape")
        offsets = entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
            raise HeaderError(f"{where}: unknown dtype {str(dtype)[:40]!r}")
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_DIMS
            or not all(_is_int(d) and d >= 0 for d in shape)
        ):
            raise HeaderError(f"{where}: shape must be a list of at most {MAX_DIMS} non-negative integers")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise HeaderError(f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end")
        begin, end = offsets
        if data_size is not None and end > data_size:
            raise HeaderError(
                f"{where}: data_offsets [{begin}, {end}] run past the data section of {data_size} bytes"
            )
        numel = math.prod(shape)
        try:
            expected = dtype_nbytes(dtype, numel)
        except ValueError as exc:
            raise HeaderError(f"{where}: {exc}") from None
        if expected != end - begin:
            raise HeaderError(
                f"{where}: shape {shape} x {dtype} needs {expected} bytes but data_offsets span {end - begin}"
            )
        spans.append((begin, end, name))
        tensors.append(TensorInfo(name, dtype, tuple(shape), file, base + begin, base + end))

    spans.sort()
    for (b0, e0, n0), (b1, _e1, n1) in zip(spans, spans[1:], strict=False):
        if b1 < e0:
            raise HeaderError(
                f"{file}: tensors {n0[:200]!r} [{b0}, {e0}) and {n1[:200]!r} (from {b1}) overlap"
            )
    tensors.sort(key=lambda t: t.start)
    return SafetensorsHeader(file, n, file_size, tuple(tensors), metadata)


def read_header(reader: RangeReader, file: str, *, prefix_bytes: int = DEFAULT_PREFIX_BYTES,
                max_header_bytes: int = MAX_HEADER_BYTES) -> SafetensorsHeader:
    """Read and validate the header of ``file``: one request, two when the header is large."""
    prefix = reader.read_prefix(file, prefix_bytes)
    size = reader.size(file)
    if size is None and len(prefix) < prefix_bytes:
        size = len(prefix)  # a short prefix read means we hit the end of the file
    n = parse_header_length(prefix, file=file, file_size=size, max_header_bytes=max_header_bytes)
    if 8 + n <= len(prefix):
        header = prefix[8 : 8 + n]
    else:
        if len(prefix) < prefix_bytes:
            raise HeaderError(f"{file}: truncated: header length {n} but the file has {len(prefix)} bytes")
        header = prefix[8:] + reader.read_ranges(file, [(len(prefix), 8 + n)])[0]
    return parse_header(header, file=file, file_size=size)


def parse_index(data: bytes, *, file: str) -> dict[str, str]:
    """The ``weight_map`` (tensor -> shard path relative to the index's folder) of an index JSON."""
    try:
        obj = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError) as exc:
        raise HeaderError(f"{file}: not a valid safetensors index JSON: {str(exc)[:200]}") from None
    weight_map = obj.get("weight_map") if isinstance(obj, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise HeaderError(f"{file}: index has no weight_map of tensor name -> shard file")
    return weight_map


def _shard_path(index_file: str, shard: str) -> str:
    folder = posixpath.dirname(index_file)
    path = posixpath.normpath(posixpath.join(folder, shard)) if folder else posixpath.normpath(shard)
    if path.startswith("../") or path == ".." or path.startswith("/"):
        raise HeaderError(f"{index_file}: shard path {shard[:200]!r} escapes the repository")
    return path


_SHARD = re.compile(r"^(.*)-(\d{5})-of-(\d{5})\.safetensors$")


def complete_shards(index_file: str, paths: Iterable[str]) -> list[str] | None:
    """The shards ``<stem>-0000i-of-0000n.safetensors`` next to ``index_file`` when all n are in
    ``paths`` (the names every Hub exporter writes), else None."""
    folder = posixpath.dirname(index_file)
    found: dict[int, list[str]] = {}
    for p in paths:
        m = _SHARD.match(posixpath.basename(p))
        if m and posixpath.dirname(p) == folder:
            found.setdefault(int(m.group(3)), []).append(p)
    complete = [sorted(v) for n, v in found.items() if n > 0 and len(v) == n]
    return complete[0] if len(complete) == 1 and len(found) == 1 else None


def read_model_headers(reader: RangeReader, files: Iterable[str], *,
                       prefix_bytes: int = DEFAULT_PREFIX_BYTES,
                       trust_shard_names: bool = False) -> list[SafetensorsHeader]:
    """Headers of every safetensors file of one model, shards of an index first.

    ``files`` are the repo-relative paths of the model. Each ``*.safetensors.index.json`` is
    read (bounded), every shard it names must exist and every tensor it maps must be found in
    that shard's header. With ``trust_shard_names`` (the Hub, where every request counts against
    a rate limit) an index whose shards are the complete ``-0000i-of-0000n`` set is not read:
    the shards' own headers list every tensor. Without an index every safetensors file given is
    read (callers pick the files with ``primary_weight_files``); ``TensorInfo.file`` tells them
    apart.
    """
    paths = sorted(set(files))
    st_files = [p for p in paths if p.endswith(".safetensors")]
    if len(st_files) > MAX_SAFETENSORS_FILES:
        raise HeaderError(f"model has {len(st_files)} safetensors files (limit {MAX_SAFETENSORS_FILES})")
    available = set(st_files)
    headers: dict[str, SafetensorsHeader] = {}
    indexes = [p for p in paths if p.endswith(INDEX_SUFFIX)]
    if trust_shard_names and len(indexes) == 1 and (shards := complete_shards(indexes[0], st_files)):
        return [read_header(reader, shard, prefix_bytes=prefix_bytes) for shard in shards]
    for index_file in indexes:
        weight_map = parse_index(reader.read_file(index_file, MAX_INDEX_BYTES), file=index_file)
        by_shard: dict[str, list[str]] = {}
        for tensor, shard in weight_map.items():
            by_shard.setdefault(_shard_path(index_file, shard), []).append(tensor)
        for shard, names in sorted(by_shard.items()):
            if shard not in available:
                raise HeaderError(f"{index_file}: names shard {shard!r}, which is not in the repository")
            if shard not in headers:
                headers[shard] = read_header(reader, shard, prefix_bytes=prefix_bytes)
            present = {t.name for t in headers[shard].tensors}
            missing = [t for t in names if t not in present]
            if missing:
                raise HeaderError(
                    f"{index_file}: {len(missing)} tensor(s) mapped to {shard} are not in its header,"
                    f" e.g. {missing[0][:200]!r}"
                )
    if headers:  # an index names the model's shards; other files are duplicates or exports
        return list(headers.values())
    for path in st_files:
        headers[path] = read_header(reader, path, prefix_bytes=prefix_bytes)
    return list(headers.values())


def primary_weight_files(paths: Iterable[str]) -> list[str]:
    """The one set of weight files that holds the model, when a repo carries several.

    Repos often ship the same weights twice (Mistral's ``consolidated.safetensors`` beside the
    HF shards, ``model.fp16.safetensors`` variants, exports in sub-folders). Preference: the
    root index and its shards, else root ``model.safetensors``, else
    ``adapter_model.safetensors``, else every root-level safetensors file except
    ``consolidated*``, else everything (diffusers-style sub-folders).
    """
    paths = sorted(set(paths))
    root = [p for p in paths if "/" not in p]
    index = [p for p in root if p.endswith(INDEX_SUFFIX) and p.startswith("model")] or [
        p for p in root if p.endswith(INDEX_SUFFIX)]
    if index:
        return index[:1] + [p for p in paths if p.endswith(".safetensors")]
    for name in ("model.safetensors", "adapter_model.safetensors"):
        if name in root:
            return [name]
    flat = [p for p in root if p.endswith(".safetensors")]
    preferred = [p for p in flat if not p.startswith("consolidated")]
    return preferred or flat or paths


def read_model_tensors(reader: RangeReader, files: Sequence[str], *,
                       prefix_bytes: int = DEFAULT_PREFIX_BYTES,
                       trust_shard_names: bool = False) -> tuple[TensorInfo, ...]:
    """All tensors of one model (see ``read_model_headers``) with absolute offsets."""
    headers = read_model_headers(reader, files, prefix_bytes=prefix_bytes, trust_shard_names=trust_shard_names)
    return tuple(t for h in headers for t in h.tensors)
