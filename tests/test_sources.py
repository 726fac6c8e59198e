"""Local sources (a directory in Hub layout, the HF cache) yield complete ModelRecords."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hubserver import write_model

from lineage_index.errors import UsageError
from lineage_index.indexer.read.card import card_fields, front_matter
from lineage_index.indexer.read.ranges import LocalReader
from lineage_index.indexer.read.sources import DirSource, HfCacheSource, iter_records, open_reader
from lineage_index.records import Failure, ModelRecord

RNG = np.random.default_rng(7)


def weights(d: int = 8) -> dict[str, np.ndarray]:
    return {
        "model.embed_tokens.weight": RNG.standard_normal((32, d)).astype(np.float32),
        "model.layers.0.self_attn.q_proj.weight": RNG.standard_normal((d, d)).astype(np.float16),
        "model.layers.0.mlp.down_proj.weight": RNG.standard_normal((d, 2 * d)).astype(np.float32),
        "model.norm.weight": np.ones(d, dtype=np.float32),
    }


CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8}


def by_id(items: list[ModelRecord | Failure]) -> dict[str, ModelRecord | Failure]:
    return {(i.model_id if isinstance(i, Failure) else i.id): i for i in items}


@pytest.fixture
def zoo(tmp_path: Path) -> Path:
    root = tmp_path / "zoo"
    write_model(root, "acme/base", tensors=weights(), config=CONFIG,
                card={"license": "apache-2.0", "pipeline_tag": "text-generation",
                      "library_name": "transformers", "tags": ["llama"],
                      "created_at": "2024-01-02T03:04:05Z"})
    write_model(root, "acme/tuned", tensors=weights(), config=CONFIG,
                card={"license": "other", "license_name": "acme-community",
                      "base_model": "acme/base", "base_model_relation": "finetune"})
    write_model(root, "acme/merged", tensors=weights(), config=CONFIG, shards=3,
                card={"base_model": ["acme/base", "acme/tuned"], "finetuned_from": "acme/old"})
    write_model(root, "acme/lora", weights_name="adapter_model.safetensors",
                tensors={"base_model.model.layers.0.q_proj.lora_A.weight": np.zeros((4, 8), np.float32),
                         "base_model.model.layers.0.q_proj.lora_B.weight": np.zeros((8, 4), np.float32)},
                adapter_config={"peft_type": "LORA", "r": 4, "base_model_name_or_path": "acme/base"},
                card={"base_model": "acme/base", "library_name": "peft"})
    write_model(root, "legacy/pickled", config=CONFIG, card="---\nlicense: mit\nbase_model: [unclosed\n---\n",
                extra={"pytorch_model.bin": b"\x80\x04cposix\nsystem\n(S'echo pwned'\ntR."})
    write_model(root, "evil/header", config=CONFIG,
                extra={"model.safetensors": struct.pack("<Q", 2**63) + b"{}"})
    return root


def test_dir_source_yields_a_complete_record_per_model(zoo: Path) -> None:
    items = by_id(list(iter_records(DirSource(zoo))))
    assert sorted(items) == ["acme/base", "acme/lora", "acme/merged", "acme/tuned", "evil/header",
                             "legacy/pickled"]
    base = items["acme/base"]
    assert isinstance(base, ModelRecord)
    assert base.source == "dir" and base.author == "acme" and base.org == "acme"
    assert len(base.sha or "") == 40
    assert base.created_at == "2024-01-02T03:04:05Z"
    assert (base.license, base.pipeline_tag, base.library_name) == ("apache-2.0", "text-generation", "transformers")
    assert base.tags == ("llama",) and base.base_models == ()
    assert base.config == CONFIG and base.adapter_config is None and not base.is_adapter
    assert base.weight_format == "safetensors" and base.location == str(zoo / "acme" / "base")
    sizes = {f.path: f.size_bytes for f in base.files}
    assert sizes["model.safetensors"] == os.path.getsize(zoo / "acme/base/model.safetensors")
    assert {t.name for t in base.tensors} == set(weights())
    assert base.header_requests == 1 and base.header_bytes_read > 0

    tuned = items["acme/tuned"]
    assert isinstance(tuned, ModelRecord)
    assert (tuned.license, tuned.license_name) == ("other", "acme-community")
    assert tuned.base_models == ("acme/base",) and tuned.base_model_relation == "finetune"
    assert tuned.created_at and tuned.created_at.endswith("Z")  # oldest file mtime

    merged = items["acme/merged"]
    assert isinstance(merged, ModelRecord)
    assert merged.base_models == ("acme/base", "acme/tuned", "acme/old")
    assert {t.file for t in merged.tensors} == {f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)}
    assert len(merged.tensors) == 4 and merged.header_requests == 4  # index + 3 shards

    lora = items["acme/lora"]
    assert isinstance(lora, ModelRecord) and lora.is_adapter
    assert lora.adapter_config == {"peft_type": "LORA", "r": 4, "base_model_name_or_path": "acme/base"}
    assert {t.file for t in lora.tensors} == {"adapter_model.safetensors"}
    assert lora.library_name == "peft"


def test_hostile_header_is_a_failure_and_the_run_continues(zoo: Path) -> None:
    items = by_id(list(iter_records(DirSource(zoo))))
    bad = items["evil/header"]
    assert isinstance(bad, Failure) and bad.kind == "bad_header"
    assert "model.safetensors" in bad.message and "exceeds the limit" in bad.message
    assert sum(isinstance(i, ModelRecord) for i in items.values()) == 5


def test_pickle_only_model_is_recorded_and_its_pickle_never_run(zoo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real_open = os.open

    def spy(path: object, *args: object, **kwargs: object) -> int:
        opened.append(os.fspath(path))  # type: ignore[arg-type]
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", spy)
    rec = by_id(list(iter_records(DirSource(zoo))))["legacy/pickled"]
    assert isinstance(rec, ModelRecord)
    # a bare (pre-1.6, non-zip) pickle that would run a command: read as bytes, recorded, refused
    assert rec.weight_format == "pickle" and rec.tensors == ()
    assert rec.weight_error_kind == "unsupported_format" and "legacy" in (rec.weight_error or "")
    assert "pytorch_model.bin" in {f.path for f in rec.files}
    assert rec.license is None and rec.base_models == ()  # broken YAML: no card, no crash
    assert rec.config == CONFIG
    assert any(p.endswith("config.json") for p in opened)


def test_dir_sha_is_stable_and_changes_with_content(zoo: Path) -> None:
    def sha() -> str | None:
        rec = by_id(list(DirSource(zoo).iter_records()))["acme/base"]
        assert isinstance(rec, ModelRecord)
        return rec.sha

    first = sha()
    assert sha() == first
    cfg = zoo / "acme/base/config.json"
    cfg.write_text(json.dumps({**CONFIG, "hidden_size": 9}))
    os.utime(cfg, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    assert sha() != first


def test_open_reader_reads_tensor_bytes_of_a_dir_record(zoo: Path) -> None:
    source = DirSource(zoo)
    rec = by_id(list(source.iter_records()))["acme/base"]
    assert isinstance(rec, ModelRecord)
    t = next(t for t in rec.tensors if t.name == "model.norm.weight")
    for reader in (source.open_reader(rec), open_reader(rec)):
        assert isinstance(reader, LocalReader)
        (raw,) = reader.read_ranges(t.file, [(t.start, t.end)])
        assert np.frombuffer(raw, dtype=np.float32).tolist() == [1.0] * 8
        assert reader.bytes_read == t.end - t.start and reader.requests == 1


def test_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        list(DirSource(tmp_path / "nope").iter_records())
    with pytest.raises(UsageError):
        list(HfCacheSource(tmp_path / "nope").iter_records())


def _fake_cache_repo(cache: Path, model_id: str, src: Path, sha: str) -> None:
    """The huggingface_hub cache layout: blobs/, snapshots/<sha>/ (relative symlinks), refs/main."""
    repo = cache / f"models--{model_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    for f in sorted(src.iterdir()):
        blob = repo / "blobs" / f"blob-{f.name}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(f.read_bytes())
        link = repo / "snapshots" / sha / f.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


def test_hf_cache_source_reads_the_main_snapshot(zoo: Path, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    _fake_cache_repo(cache, "acme/tuned", zoo / "acme/tuned", "a" * 40)
    _fake_cache_repo(cache, "acme/lora", zoo / "acme/lora", "b" * 40)
    items = by_id(list(iter_records(HfCacheSource(cache))))
    assert sorted(items) == ["acme/lora", "acme/tuned"]
    tuned = items["acme/tuned"]
    assert isinstance(tuned, ModelRecord)
    assert tuned.source == "hf-cache" and tuned.sha == "a" * 40
    assert tuned.base_models == ("acme/base",) and tuned.license == "other"
    dir_rec = by_id(list(DirSource(zoo).iter_records()))["acme/tuned"]
    assert isinstance(dir_rec, ModelRecord)
    assert tuned.tensors == dir_rec.tensors and tuned.config == dir_rec.config
    t = tuned.tensors[0]
    (raw,) = HfCacheSource(cache).open_reader(tuned).read_ranges(t.file, [(t.start, t.end)])
    assert len(raw) == t.end - t.start
    lora = items["acme/lora"]
    assert isinstance(lora, ModelRecord) and lora.is_adapter and lora.sha == "b" * 40


def test_card_parsing_tolerates_garbage_and_reads_hub_tags() -> None:
    assert front_matter(b"no front matter") is None
    assert front_matter(b"---\nkey: [unclosed\n---\n") is None
    assert front_matter(b"---\n- a list\n---\n") is None
    assert front_matter(b"---\nlicense: mit\n") is None  # never closed
    assert front_matter("\ufeff---\nlicense: mit\n---\nbody") == {"license": "mit"}
    fields = card_fields(
        {"base_model": "org/a"},
        ["transformers", "base_model:org/a", "base_model:quantized:org/a", "license:llama3.1"],
    )
    assert fields.base_models == ("org/a",) and fields.base_model_relation == "quantized"
    assert fields.license == "llama3.1"
    merge = card_fields(None, ["base_model:merge:x/1", "base_model:merge:x/2", "base_model:x/1"])
    assert merge.base_models == ("x/1", "x/2") and merge.base_model_relation == "merge"


def test_declared_base_models_are_cleaned_into_hub_repo_ids() -> None:
    """Messy cards: Hub URLs, revisions and trailing slashes give the repo id; local paths give none."""
    fields = card_fields({"base_model": ["https://huggingface.co/meta-llama/Llama-3.1-8B/tree/main",
                                         "hf.co/Qwen/Qwen2-7B/", "mistralai/Mistral-7B-v0.1@v0.1",
                                         "/home/me/checkpoints/llama", "./ckpt", "gpt2", "org/name/extra"]})
    assert fields.base_models == ("meta-llama/Llama-3.1-8B", "Qwen/Qwen2-7B", "mistralai/Mistral-7B-v0.1", "gpt2")
    assert card_fields({"base_model": "/tmp/model"}).base_models == ()


def test_a_declared_base_with_another_case_takes_the_indexed_spelling() -> None:
    from lineage_index.indexer.pipeline import resolve_declared_case
    from lineage_index.records import ModelRecord

    recs = {"x/child": ModelRecord("x/child", "dir", base_models=("Meta-Llama/llama-3-8b", "other/absent")),
            "meta-llama/Llama-3-8B": ModelRecord("meta-llama/Llama-3-8B", "dir")}
    out = resolve_declared_case(recs, set(recs))
    assert out["x/child"].base_models == ("meta-llama/Llama-3-8B", "other/absent")
    # two indexed ids equal up to case: the card's spelling stays, nothing is guessed
    twins = {**recs, "META-LLAMA/LLAMA-3-8B": ModelRecord("META-LLAMA/LLAMA-3-8B", "dir")}
    assert resolve_declared_case(twins, set(twins))["x/child"].base_models == recs["x/child"].base_models
