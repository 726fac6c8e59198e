"""Safetensors header parsing with hard limits, range coalescing and local pread reads."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lineage_index.errors import HeaderError, ModelReadError
from lineage_index.indexer.read.ranges import LocalReader, coalesce
from lineage_index.indexer.read.safetensors import (
    parse_header,
    read_header,
    read_model_tensors,
)


def raw_safetensors(header: dict, data: bytes, *, length: int | None = None) -> bytes:
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob) if length is None else length) + blob + data


def write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_offsets_are_absolute_and_point_at_the_tensor_bytes(tmp_path: Path) -> None:
    tensors = {
        "a.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4),
        "b.bias": torch.arange(5, dtype=torch.float16),
        "c": torch.ones(2, 3, dtype=torch.bfloat16),
        "d": torch.tensor([1, -2], dtype=torch.int8),
    }
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    reader = LocalReader(tmp_path)
    header = read_header(reader, "model.safetensors")
    assert header.metadata == {"format": "pt"}
    by_name = {t.name: t for t in header.tensors}
    assert set(by_name) == set(tensors)
    assert by_name["a.weight"].dtype == "F32" and by_name["a.weight"].shape == (3, 4)
    assert by_name["c"].dtype == "BF16"
    for name, t in by_name.items():
        assert t.file == "model.safetensors"
        (raw,) = reader.read_ranges("model.safetensors", [(t.start, t.end)])
        expected = tensors[name].contiguous().view(torch.uint8).numpy().tobytes()
        assert raw == expected


def test_small_header_is_one_request_large_header_two(tmp_path: Path) -> None:
    small = {f"t{i}": torch.zeros(2) for i in range(3)}
    save_file(small, str(tmp_path / "small.safetensors"))
    big = {f"layer.{i}.a_rather_long_tensor_name_to_grow_the_header.weight": torch.zeros(1)
           for i in range(1500)}
    save_file(big, str(tmp_path / "big.safetensors"))
    reader = LocalReader(tmp_path)
    read_header(reader, "small.safetensors", prefix_bytes=4096)
    assert reader.requests == 1
    assert reader.bytes_read == os.path.getsize(tmp_path / "small.safetensors")  # file < prefix
    h = read_header(reader, "big.safetensors", prefix_bytes=4096)
    assert len(h.tensors) == 1500
    assert reader.requests == 3
    assert reader.bytes_read - os.path.getsize(tmp_path / "small.safetensors") == 8 + h.header_bytes


@pytest.mark.parametrize(
    ("header", "data", "length", "needle"),
    [
        ({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, 2**63, "exceeds the limit"),
        ({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, 10**6, "exceeds the file size"),
        ({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, None, "run past the data section"),
        ({"t": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "unknown dtype"),
        ({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, None, "needs 12 bytes"),
        ({"t": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "non-negative"),
        ({"t": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, None, "data_offsets"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, None, "overlap"),
        ({"__metadata__": {"k": 1}}, b"", None, "__metadata__"),
        ({"t": [1, 2]}, b"", None, "not an object"),
    ],
)
def test_hostile_headers_raise_header_error_naming_the_file(
    tmp_path: Path, header: dict, data: bytes, length: int | None, needle: str
) -> None:
    write(tmp_path / "evil.safetensors", raw_safetensors(header, data, length=length))
    with pytest.raises(HeaderError, match=needle) as info:
        read_header(LocalReader(tmp_path), "evil.safetensors")
    assert "evil.safetensors" in str(info.value)
    assert info.value.kind == "bad_header"


def test_non_json_duplicate_keys_and_truncation(tmp_path: Path) -> None:
    reader = LocalReader(tmp_path)
    write(tmp_path / "a.safetensors", struct.pack("<Q", 5) + b"[1,2]")
    with pytest.raises(HeaderError, match="not a JSON object"):
        read_header(reader, "a.safetensors")
    dup = b'{"t": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "t": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'
    write(tmp_path / "b.safetensors", struct.pack("<Q", len(dup)) + dup + b"\0")
    with pytest.raises(HeaderError, match="duplicate key"):
        read_header(reader, "b.safetensors")
    write(tmp_path / "c.safetensors", b"\x10\x00")
    with pytest.raises(HeaderError, match="truncated"):
        read_header(reader, "c.safetensors")
    good = raw_safetensors({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16)
    write(tmp_path / "d.safetensors", good[:20])  # cut inside the header
    with pytest.raises(HeaderError, match="exceeds the file size"):
        read_header(reader, "d.safetensors")
    with pytest.raises(HeaderError, match="not UTF-8"):
        parse_header(b"{\xff}", file="x.safetensors", file_size=None)


def test_sub_byte_and_fp8_dtypes_are_sized_in_bits() -> None:
    h = json.dumps({"a": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]},
                    "b": {"dtype": "F8_E4M3", "shape": [3], "data_offsets": [2, 5]}}).encode()
    parsed = parse_header(h, file="q.safetensors", file_size=8 + len(h) + 5)
    assert [(t.name, t.end - t.start) for t in parsed.tensors] == [("a", 2), ("b", 3)]
    odd = json.dumps({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}).encode()
    with pytest.raises(HeaderError, match="whole number of bytes"):
        parse_header(odd, file="q.safetensors", file_size=None)


def test_coalesce_merges_small_gaps_and_keeps_far_ranges_apart() -> None:
    assert coalesce([(0, 10), (20, 30), (10_000, 10_010)], max_gap_bytes=16) == [(0, 30), (10_000, 10_010)]
    assert coalesce([(5, 8), (0, 10), (10, 12), (3, 3)], max_gap_bytes=0) == [(0, 12)]
    assert coalesce([(0, 10), (11, 20)], max_gap_bytes=0) == [(0, 10), (11, 20)]
    assert coalesce([(0, 100), (101, 200)], max_gap_bytes=10, max_request_bytes=150) == [(0, 100), (101, 200)]


def test_local_reader_reads_exactly_the_asked_bytes(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    write(tmp_path / "sub" / "blob.bin", data)
    reader = LocalReader(tmp_path)
    ranges = [(50_000, 50_100), (10, 20), (15, 30), (99_990, 100_000), (7, 7)]
    out = reader.read_ranges("sub/blob.bin", ranges)
    assert out == [data[a:b] for a, b in ranges]
    assert reader.requests == 3  # (10,30) merged by overlap; nothing merged across gaps
    assert reader.bytes_read == 100 + 20 + 10
    with pytest.raises(HeaderError, match="truncated"):
        reader.read_ranges("sub/blob.bin", [(99_000, 100_001)])
    with pytest.raises(ModelReadError, match="invalid repository path"):
        reader.read_ranges("../escape", [(0, 1)])
    with pytest.raises(ModelReadError, match="cannot open"):
        reader.read_ranges("missing.bin", [(0, 1)])


def _shard(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))


def test_sharded_checkpoint_reads_every_shard_and_checks_the_index(tmp_path: Path) -> None:
    _shard(tmp_path / "model-00001-of-00002.safetensors", {"a": torch.zeros(3), "b": torch.zeros(2)})
    _shard(tmp_path / "model-00002-of-00002.safetensors", {"c": torch.zeros(4)})
    index = {"metadata": {"total_size": 36}, "weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
        "c": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    files = sorted(p.name for p in tmp_path.iterdir())
    tensors = read_model_tensors(LocalReader(tmp_path), files)
    assert sorted((t.name, t.file) for t in tensors) == [
        ("a", "model-00001-of-00002.safetensors"), ("b", "model-00001-of-00002.safetensors"),
        ("c", "model-00002-of-00002.safetensors")]

    index["weight_map"]["d"] = "model-00002-of-00002.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(HeaderError, match="not in its header"):
        read_model_tensors(LocalReader(tmp_path), files)
    index["weight_map"]["d"] = "model-00003-of-00003.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(HeaderError, match="not in the repository"):
        read_model_tensors(LocalReader(tmp_path), files)
    (tmp_path / "model.safetensors.index.json").write_text('{"weight_map": [1]}')
    with pytest.raises(HeaderError, match="weight_map"):
        read_model_tensors(LocalReader(tmp_path), files)
