"""PyTorch zip checkpoints read by range reads, the pickle as data (issue 22): exact tensor bytes,
shards, and every way a checkpoint can be refused (hostile pickle, compressed entry, legacy format,
non-contiguous tensor) as a clear per-model failure with nothing executed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lineage_index.errors import UnsupportedFormatError
from lineage_index.indexer.pipeline import recover, sketch_all
from lineage_index.indexer.read.ranges import LocalReader
from lineage_index.indexer.read.sources import DirSource
from lineage_index.indexer.read.torchzip import HostilePickleError, read_checkpoint, read_pickle
from lineage_index.records import ModelRecord
from lineage_index.zoo.formats import Hostile

CLI = [sys.executable, "-m", "lineage_index.cli.app"]


def test_tensor_byte_ranges_are_exactly_the_saved_tensors(tmp_path: Path) -> None:
    sd = {"a.weight": torch.randn(5, 3), "b.bias": torch.randn(7).half(), "c": torch.randn(4, 4).bfloat16(),
          "d": torch.randn(8, 2, dtype=torch.float64), "steps": torch.tensor(3)}
    sd["view"] = sd["d"][2:6]  # a view sharing d's storage, at an element offset
    torch.save(sd, tmp_path / "m.bin")
    reader = LocalReader(tmp_path)
    infos = {t.name: t for t in read_checkpoint(reader, "m.bin")}
    assert infos["a.weight"].dtype == "F32" and infos["b.bias"].dtype == "F16" and infos["c"].dtype == "BF16"
    for name in ("a.weight", "b.bias", "c", "d", "view"):
        t = infos[name]
        raw = reader.read_ranges("m.bin", [(t.start, t.end)])[0]
        want = sd[name].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        assert t.shape == tuple(sd[name].shape) and raw == want, name


def test_a_hostile_pickle_is_refused_by_name_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    repo = tmp_path / "hub" / "evil" / "model"
    repo.mkdir(parents=True)
    torch.save({"w": torch.randn(4, 4), "payload": Hostile(marker)}, repo / "pytorch_model.bin")
    with pytest.raises(HostilePickleError, match=r"posix\.system|nt\.system"):
        read_checkpoint(LocalReader(repo), "pytorch_model.bin")
    (rec,) = list(DirSource(tmp_path / "hub").iter_records())  # recorded (card, files), weights refused
    assert isinstance(rec, ModelRecord) and rec.weight_error_kind == "hostile_pickle" and "system" in rec.weight_error
    _, report = sketch_all([rec], DirSource(tmp_path / "hub").open_reader, None)
    assert [(f.kind, "system" in f.message) for f in report.failures] == [("hostile_pickle", True)]
    r = subprocess.run([*CLI, "check", str(repo), "--store", str(tmp_path / "s")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "system" in r.stderr
    r = subprocess.run([*CLI, "ingest", "--dir", str(tmp_path / "hub"), "--store", str(tmp_path / "s"),
                        "--no-graph"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "hostile_pickle" in r.stdout
    for cmd in ("closeness", "determine"):
        r = subprocess.run([*CLI, cmd, str(repo), str(repo), "--no-cache"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2
    assert not marker.exists()  # nothing in the file ran, under any command


def test_unknown_opcodes_and_globals_are_named() -> None:
    with pytest.raises(HostilePickleError, match="builtins.eval"):
        read_pickle(b"\x80\x02cbuiltins\neval\nq\x00.")
    with pytest.raises(HostilePickleError, match="opcode"):
        read_pickle(b"\x80\x02I42\n.")  # INT (text protocol): never written by torch.save


def test_compressed_legacy_and_strided_checkpoints_are_clear_failures(tmp_path: Path) -> None:
    torch.save({"w": torch.randn(16, 16)}, tmp_path / "plain.bin")
    with zipfile.ZipFile(tmp_path / "plain.bin") as src, \
            zipfile.ZipFile(tmp_path / "deflated.bin", "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item.filename, src.read(item.filename))
    reader = LocalReader(tmp_path)
    with pytest.raises(UnsupportedFormatError, match="compressed"):
        read_checkpoint(reader, "deflated.bin")
    torch.save({"w": torch.randn(4, 4)}, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    with pytest.raises(UnsupportedFormatError, match="legacy"):
        read_checkpoint(reader, "legacy.bin")
    torch.save({"w": torch.randn(4, 6).t()}, tmp_path / "strided.bin")
    with pytest.raises(UnsupportedFormatError, match="not contiguous"):
        read_checkpoint(reader, "strided.bin")


def test_pickle_checkpoints_are_placed_beside_their_safetensors_relatives(tiny_zoo: Path, tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    nano = tiny_zoo / "meta-llama" / "Llama-3.1-Nano"
    shutil.copytree(nano, hub / "meta-llama" / "Llama-3.1-Nano")
    state = {k: v for f in sorted(nano.glob("*.safetensors")) for k, v in load_file(str(f)).items()}
    single = hub / "old-lab" / "Llama-3.1-Nano-bin"
    single.mkdir(parents=True)
    torch.save(state, single / "pytorch_model.bin")
    (single / "config.json").write_text((nano / "config.json").read_text())
    sharded = hub / "old-lab" / "Llama-3.1-Nano-fp32-sharded"
    sharded.mkdir(parents=True)
    names = sorted(state)
    weight_map = {}
    for i, part in enumerate((names[::2], names[1::2]), start=1):
        shard = f"pytorch_model-{i:05d}-of-00002.bin"
        torch.save({n: state[n].float() for n in part}, sharded / shard)
        weight_map.update({n: shard for n in part})
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (sharded / "config.json").write_text((nano / "config.json").read_text())

    source = DirSource(hub)
    records, report = sketch_all(source.iter_records(), source.open_reader, None)
    assert not report.failures, report.failures
    for repo in ("old-lab/Llama-3.1-Nano-bin", "old-lab/Llama-3.1-Nano-fp32-sharded"):
        rec = records[repo]
        assert isinstance(rec, ModelRecord) and rec.weight_format == "pickle" and len(rec.tensors) == len(state)
        assert report.sketches[repo].family == report.sketches["meta-llama/Llama-3.1-Nano"].family
    pairs = {frozenset((e.child, e.parent)): e.relation for e in recover(records, report.sketches).edges}
    assert pairs[frozenset(("old-lab/Llama-3.1-Nano-bin", "meta-llama/Llama-3.1-Nano"))] == "copy"
    assert any("old-lab/Llama-3.1-Nano-fp32-sharded" in k and v == "copy" for k, v in pairs.items())
