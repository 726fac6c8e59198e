"""The Hub source and HubReader: the real huggingface_hub client against the local Hub test server."""

from __future__ import annotations

import os

for _key, _value in {"HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
                     "HF_HUB_DISABLE_PROGRESS_BARS": "1"}.items():
    os.environ.setdefault(_key, _value)  # effective when huggingface_hub is first imported here

import struct  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hubserver import LocalHub, write_model  # noqa: E402
from huggingface_hub import hf_hub_download  # noqa: E402

from lineage_index.errors import HeaderError, ModelReadError, RateLimitedError  # noqa: E402
from lineage_index.indexer.read.hub import HubSource  # noqa: E402
from lineage_index.indexer.read.remote import HubReader, RetryPolicy  # noqa: E402
from lineage_index.indexer.read.sources import DirSource, HfCacheSource, open_reader  # noqa: E402
from lineage_index.records import Failure, ModelRecord  # noqa: E402

FAST = RetryPolicy(max_retries=3, base_wait_s=0.0, max_wait_s=0.05, max_total_wait_s=1.0, timeout_s=10)
CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
          "num_hidden_layers": 1}
RNG = np.random.default_rng(3)
PICKLE = b"\x80\x04cposix\nsystem\n(S'echo pwned'\ntR."  # would run a command if unpickled


def weights() -> dict[str, np.ndarray]:
    return {"model.embed_tokens.weight": RNG.standard_normal((64, 8)).astype(np.float32),
            "model.layers.0.self_attn.q_proj.weight": RNG.standard_normal((8, 8)).astype(np.float16),
            "model.norm.weight": np.ones(8, dtype=np.float32)}


@pytest.fixture
def hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    for key in ("HF_HUB_DISABLE_TELEMETRY", "HF_HUB_DISABLE_XET", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(key, "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.fixture
def zoo(tmp_path: Path) -> Path:
    root = tmp_path / "zoo"
    write_model(root, "acme/base", tensors=weights(), config=CONFIG,
                card={"license": "apache-2.0", "pipeline_tag": "text-generation", "tags": ["llama"],
                      "created_at": "2024-01-02T03:04:05Z"})
    write_model(root, "acme/tuned", tensors=weights(), config=CONFIG,
                card={"license": "other", "license_name": "acme-community", "base_model": "acme/base"})
    write_model(root, "acme/sharded", tensors=weights(), config=CONFIG, shards=2,
                card={"base_model": "acme/base"})
    write_model(root, "acme/lora", weights_name="adapter_model.safetensors",
                tensors={"base_model.model.layers.0.q_proj.lora_A.weight": np.zeros((2, 8), np.float32)},
                adapter_config={"peft_type": "LORA", "r": 2, "base_model_name_or_path": "acme/base"},
                card={"base_model": "acme/base", "library_name": "peft"})
    write_model(root, "acme/pickled", config=CONFIG, card={"license": "mit"},
                extra={"pytorch_model.bin": PICKLE})
    write_model(root, "acme/gated", tensors=weights(), config=CONFIG, card={"license": "llama3.1"})
    write_model(root, "acme/private", tensors=weights(), config=CONFIG)
    write_model(root, "other/thing", tensors=weights(), config=CONFIG, card="---\nbroken: [yaml\n---\n")
    return root


@pytest.fixture
def hub(zoo: Path, hf_env: None) -> Iterator[LocalHub]:
    with LocalHub(zoo, page_size=2) as server:
        server.gated["acme/gated"] = "manual"
        server.private.add("acme/private")
        server.grant("tok-ok", "acme/gated", "acme/private")
        yield server


def records(source: HubSource) -> dict[str, ModelRecord | Failure]:
    return {(i.model_id if isinstance(i, Failure) else i.id): i for i in source.iter_records()}


def test_org_listing_paginates_and_yields_complete_records(hub: LocalHub, zoo: Path) -> None:
    items = records(HubSource(org="acme", endpoint=hub.url, token=False, retry=FAST))  # type: ignore[arg-type]
    assert sorted(items) == ["acme/base", "acme/gated", "acme/lora", "acme/pickled", "acme/sharded",
                             "acme/tuned"]  # private not listed anonymously; other org excluded
    pages = hub.requests_for(route="list")
    assert len(pages) == 3 and all(e.status == 200 for e in pages)
    assert "expand=cardData" in pages[0].path and "cursor=" in pages[1].path

    base = items["acme/base"]
    assert isinstance(base, ModelRecord)
    assert base.source == "hub" and base.location == hub.url and base.sha == hub.sha("acme/base")
    assert base.author == "acme" and base.created_at == "2024-01-02T03:04:05Z"
    assert (base.license, base.pipeline_tag, base.library_name) == ("apache-2.0", "text-generation", "transformers")
    assert "llama" in base.tags and "license:apache-2.0" in base.tags
    # the listing's config names the architecture, so config.json costs no request (HUB-API's
    # curated subset: architectures, model_type, quantization_config, tokenizer_config)
    assert base.config == {k: CONFIG[k] for k in ("architectures", "model_type") if k in CONFIG}
    assert not hub.requests_for("acme/base", "config.json")
    assert base.weight_format == "safetensors" and not base.gated and not base.private
    local = {r.id: r for r in DirSource(zoo).iter_records() if isinstance(r, ModelRecord)}
    assert base.tensors == local["acme/base"].tensors
    sizes = {f.path: f.size_bytes for f in base.files}
    assert sizes["model.safetensors"] == os.path.getsize(zoo / "acme/base/model.safetensors")
    header_log = hub.requests_for("acme/base", "model.safetensors", "resolve")
    assert base.header_requests == len(header_log) == 1
    assert base.header_bytes_read == hub.bytes_served("acme/base", "model.safetensors")
    assert all(e.range for e in hub.requests_for(route="resolve"))  # every file read is ranged

    tuned = items["acme/tuned"]
    assert isinstance(tuned, ModelRecord)
    assert tuned.base_models == ("acme/base",) and tuned.base_model_relation == "finetune"
    assert (tuned.license, tuned.license_name) == ("other", "acme-community")
    sharded = items["acme/sharded"]
    assert isinstance(sharded, ModelRecord)
    assert sharded.tensors == local["acme/sharded"].tensors and sharded.header_requests == 2
    assert not hub.requests_for("acme/sharded", "model.safetensors.index.json")  # complete shard set: no index read
    lora = items["acme/lora"]
    assert isinstance(lora, ModelRecord) and lora.is_adapter
    assert lora.base_model_relation == "adapter" and lora.adapter_config["r"] == 2  # type: ignore[index]


def test_gated_repo_is_recorded_as_failure_and_the_run_continues(hub: LocalHub) -> None:
    items = records(HubSource(org="acme", endpoint=hub.url, token=False, retry=FAST))  # type: ignore[arg-type]
    gated = items["acme/gated"]
    assert isinstance(gated, Failure) and gated.kind == "gated"
    assert "tok-" not in gated.message
    assert sum(isinstance(i, ModelRecord) for i in items.values()) == 5
    wrong = records(HubSource(models=["acme/gated"], endpoint=hub.url, token="tok-bad", retry=FAST))
    assert isinstance(wrong["acme/gated"], Failure) and wrong["acme/gated"].kind == "gated"
    assert "tok-bad" not in wrong["acme/gated"].message
    ok = records(HubSource(models=["acme/gated", "acme/private"], endpoint=hub.url, token="tok-ok", retry=FAST))
    assert isinstance(ok["acme/gated"], ModelRecord) and ok["acme/gated"].gated
    assert ok["acme/gated"].license == "llama3.1" and len(ok["acme/gated"].tensors) == 3
    assert isinstance(ok["acme/private"], ModelRecord) and ok["acme/private"].private


def test_missing_and_private_repos_are_not_found(hub: LocalHub) -> None:
    for token in (False, "tok-bad"):
        items = records(HubSource(models=["acme/missing", "acme/private", "acme/base"], endpoint=hub.url,
                                  token=token, retry=FAST))  # type: ignore[arg-type]
        assert [type(items[k]).__name__ for k in ("acme/missing", "acme/private", "acme/base")] == [
            "Failure", "Failure", "ModelRecord"]
        assert items["acme/missing"].kind == items["acme/private"].kind == "not_found"  # type: ignore[union-attr]


def test_rate_limit_storm_is_a_failure_and_other_models_are_read(hub: LocalHub) -> None:
    storm = hub.fail(429, None, repo="acme/tuned", route="resolve", retry_after=0)
    t0 = time.monotonic()
    items = records(HubSource(org="acme", search="acme/", endpoint=hub.url, token=False, retry=FAST))  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 20
    assert isinstance(items["acme/tuned"], Failure) and items["acme/tuned"].kind == "rate_limited"
    assert storm.hits == FAST.max_retries + 1
    assert isinstance(items["acme/base"], ModelRecord)
    info_storm = hub.fail(500, None, repo="acme/base", route="info")
    failed = records(HubSource(models=["acme/base"], endpoint=hub.url, token=False, retry=FAST))  # type: ignore[arg-type]
    assert failed["acme/base"].kind == "rate_limited" and info_storm.hits == FAST.max_retries + 1  # type: ignore[union-attr]


def test_transient_429_and_500_are_retried(hub: LocalHub) -> None:
    f1 = hub.fail(429, 2, repo="acme/base", route="resolve", retry_after=0)
    f2 = hub.fail(500, 1, repo="acme/base", route="info")
    items = records(HubSource(models=["acme/base"], endpoint=hub.url, token=False, retry=FAST))  # type: ignore[arg-type]
    rec = items["acme/base"]
    assert isinstance(rec, ModelRecord) and len(rec.tensors) == 3
    assert f1.hits == 2 and f2.hits == 1
    assert rec.header_requests == 1 + 2  # the header read, and the two retries it took (config.json is not read)
    reader = HubReader("acme/base", revision=rec.sha, endpoint=hub.url, token=False, retry=FAST)
    hub.fail(503, 1, repo="acme/base", route="resolve")
    t = rec.tensors[0]
    assert len(reader.read_ranges(t.file, [(t.start, t.end)])[0]) == t.end - t.start
    assert reader.requests == 2


def test_bad_headers_are_failures_with_clear_messages(hub: LocalHub, zoo: Path) -> None:
    good = (zoo / "acme/base/model.safetensors").read_bytes()
    variants = {
        "huge-length": struct.pack("<Q", 2**63) + good[8:],
        "truncated": good[: len(good) - 10],
        "unknown-dtype": good.replace(b'"F32"', b'"Q32"', 1),
    }
    for name, data in variants.items():
        write_model(zoo, f"bad/{name}", config=CONFIG, extra={"model.safetensors": data})
    write_model(zoo, "bad/zz-fine", tensors=weights(), config=CONFIG)
    items = records(HubSource(org="bad", endpoint=hub.url, token=False, retry=FAST))  # type: ignore[arg-type]
    expect = {"huge-length": "exceeds the limit", "truncated": "run past the data section",
              "unknown-dtype": "unknown dtype"}
    for name, needle in expect.items():
        item = items[f"bad/{name}"]
        assert isinstance(item, Failure) and item.kind == "bad_header", item
        assert needle in item.message and "model.safetensors" in item.message
    assert isinstance(items["bad/zz-fine"], ModelRecord)


def test_pickle_only_repo_is_recorded_and_the_bin_is_read_as_data_only(hub: LocalHub) -> None:
    rec = records(HubSource(models=["acme/pickled"], endpoint=hub.url, token=False, retry=FAST))["acme/pickled"]  # type: ignore[arg-type]
    assert isinstance(rec, ModelRecord)
    assert rec.weight_format == "pickle" and rec.tensors == () and rec.license == "mit"
    assert rec.weight_error_kind == "unsupported_format"  # a bare pickle: the legacy format, refused
    sizes = {f.path: f.size_bytes for f in rec.files}
    assert sizes["pytorch_model.bin"] == len(PICKLE)  # from the API's file metadata
    assert all(e.range for e in hub.requests_for("acme/pickled", "pytorch_model.bin"))  # ranged reads only


def test_broken_card_yaml_gives_a_record_without_card(hub: LocalHub) -> None:
    rec = records(HubSource(search="thing", endpoint=hub.url, token=False, retry=FAST))["other/thing"]  # type: ignore[arg-type]
    assert isinstance(rec, ModelRecord) and rec.license is None and rec.base_models == ()
    assert hub.requests_for("other/thing", "README.md")  # fell back to the README, then gave up


def test_hub_reader_coalesces_ranges_and_counts_exact_bytes(hub: LocalHub, zoo: Path) -> None:
    data = (zoo / "acme/base/model.safetensors").read_bytes()
    sha = hub.sha("acme/base")
    reader = HubReader("acme/base", revision=sha, endpoint=hub.url, token=False, retry=FAST,
                       max_gap_bytes=100)
    ranges = [(300, 310), (2000, 2010), (350, 360), (2100, 2150), (8, 16)]
    assert reader.read_ranges("model.safetensors", ranges) == [data[a:b] for a, b in ranges]
    log = hub.requests_for("acme/base", "model.safetensors", "resolve")
    assert reader.requests == len(log) == 3  # (8,16) | (300,360) | (2000,2150)
    assert reader.bytes_read == hub.bytes_served("acme/base") == 8 + 60 + 150
    assert sorted(e.range for e in log) == ["bytes=2000-2149", "bytes=300-359", "bytes=8-15"]
    assert reader.size("model.safetensors") == len(data)
    with pytest.raises(HeaderError, match="truncated"):
        reader.read_ranges("model.safetensors", [(len(data) - 4, len(data) + 4)])
    with pytest.raises(HeaderError, match="truncated"):
        reader.read_ranges("model.safetensors", [(len(data) + 10, len(data) + 20)])
    with pytest.raises(ModelReadError, match="file not found"):
        reader.read_ranges("nope.safetensors", [(0, 1)])
    bad_rev = HubReader("acme/base", revision="f" * 40, endpoint=hub.url, token=False, retry=FAST)
    with pytest.raises(ModelReadError, match="revision not found") as info:
        bad_rev.read_ranges("model.safetensors", [(0, 1)])
    assert info.value.kind == "not_found"


def test_server_ignoring_range_is_sliced_correctly_or_refused(hub: LocalHub, zoo: Path) -> None:
    data = (zoo / "acme/base/model.safetensors").read_bytes()
    hub.ignore_range.add("acme/base")
    reader = HubReader("acme/base", endpoint=hub.url, token=False, retry=FAST)
    assert reader.read_ranges("model.safetensors", [(100, 120)]) == [data[100:120]]
    assert reader.bytes_read == len(data) and reader.size("model.safetensors") == len(data)
    small = HubReader("acme/base", endpoint=hub.url, token=False, retry=FAST, max_unranged_bytes=100)
    with pytest.raises(ModelReadError, match="ignored the Range"):
        small.read_ranges("model.safetensors", [(0, 10)])


def test_storm_on_reader_raises_rate_limited(hub: LocalHub) -> None:
    hub.fail(429, None, repo="acme/base", route="resolve", retry_after=0)
    reader = HubReader("acme/base", endpoint=hub.url, token=False, retry=FAST)
    with pytest.raises(RateLimitedError, match="HTTP 429 after 4 attempt"):
        reader.read_prefix("model.safetensors", 100)
    assert reader.requests == 4 and reader.bytes_read == 0
    patient = RetryPolicy(max_retries=3, base_wait_s=0.0, max_wait_s=5.0)
    hub.clear_faults()
    hub.fail(429, None, repo="acme/base", route="resolve", retry_after=60)
    with pytest.raises(RateLimitedError, match="retry after 60s"):
        HubReader("acme/base", endpoint=hub.url, token=False, retry=patient).read_prefix("config.json", 10)


def test_open_reader_for_a_hub_record_is_pinned_to_its_sha(hub: LocalHub) -> None:
    source = HubSource(models=["acme/base"], endpoint=hub.url, token=False, retry=FAST)  # type: ignore[arg-type]
    rec = records(source)["acme/base"]
    assert isinstance(rec, ModelRecord)
    hub.reset_log()
    t = rec.tensors[-1]
    for reader in (source.open_reader(rec), open_reader(rec, token=None)):
        assert len(reader.read_ranges(t.file, [(t.start, t.end)])[0]) == t.end - t.start
    assert all(f"/resolve/{rec.sha}/" in e.path for e in hub.requests_for(route="resolve"))


def test_hf_cache_source_after_real_downloads(hub: LocalHub, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for model_id in ("acme/tuned", "acme/lora"):
        for name in ("config.json", "README.md", "model.safetensors", "adapter_config.json",
                     "adapter_model.safetensors"):
            if (hub.root / model_id / name).exists():
                hf_hub_download(model_id, name, endpoint=hub.url, cache_dir=cache, token=False)
    items = {i.id: i for i in HfCacheSource(cache).iter_records() if isinstance(i, ModelRecord)}
    assert sorted(items) == ["acme/lora", "acme/tuned"]
    tuned = items["acme/tuned"]
    assert tuned.source == "hf-cache" and tuned.sha == hub.sha("acme/tuned")
    assert tuned.base_models == ("acme/base",) and tuned.config == CONFIG
    assert {t.name for t in tuned.tensors} == set(weights())
    assert items["acme/lora"].is_adapter


def test_reader_refuses_a_206_for_another_range(hub: LocalHub) -> None:
    hub.misrange.add("acme/base")
    reader = HubReader("acme/base", endpoint=hub.url, token=False, retry=FAST)
    with pytest.raises(ModelReadError, match="server answered bytes 101-"):
        reader.read_ranges("model.safetensors", [(100, 120)])


def test_local_hub_speaks_the_hub_protocol(hub: LocalHub, zoo: Path) -> None:
    import httpx2

    size = os.path.getsize(zoo / "acme/base/model.safetensors")
    sha = hub.sha("acme/base")
    with httpx2.Client(base_url=hub.url) as c:
        r = c.get("/api/models", params=[("author", "acme"), ("expand[]", "sha"), ("expand[]", "safetensors")])
        assert r.status_code == 200 and r.headers["Link"].startswith(f'<{hub.url}/api/models?')
        assert all(set(item) <= {"_id", "id", "sha", "safetensors"} for item in r.json())
        base = c.get("/api/models/acme/base").json()
        assert base["safetensors"]["total"] == 64 * 8 + 64 + 8
        assert base["createdAt"].endswith("Z") and base["lastModified"].endswith("Z")
        assert base["config"] == {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
        assert c.get("/api/models/acme/gated").json()["gated"] == "manual"
        assert c.get(f"/api/models/acme/base/revision/{sha}").json()["sha"] == sha
        r = c.get("/api/models/acme/base/revision/nope")
        assert (r.status_code, r.headers["X-Error-Code"]) == (404, "RevisionNotFound")
        tree = c.get("/api/models/acme/base/tree/main").json()
        assert {e["path"]: e["size"] for e in tree}["model.safetensors"] == size

        url = f"/acme/base/resolve/{sha}/model.safetensors"
        head = c.head(url)
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["Content-Length"]) == size == int(head.headers["X-Linked-Size"])
        assert head.headers["X-Repo-Commit"] == sha and head.headers["ETag"].startswith('"')
        assert not [k for k in head.headers if k.lower().startswith("x-xet")]
        r = c.get(url, headers={"Range": "bytes=0-100000000"})
        assert r.status_code == 206 and r.headers["Content-Range"] == f"bytes 0-{size - 1}/{size}"
        r = c.get(url, headers={"Range": f"bytes={size}-"})
        assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{size}"
        r = c.get("/acme/base/resolve/main/nope.json")
        assert (r.status_code, r.headers["X-Error-Code"], r.headers["X-Repo-Commit"]) == (404, "EntryNotFound", sha)
        gated = "/acme/gated/resolve/main/config.json"
        assert (c.get(gated).status_code, c.get(gated).headers["X-Error-Code"]) == (401, "GatedRepo")
        assert c.get(gated, headers={"Authorization": "Bearer tok-bad"}).status_code == 403
        assert c.get(gated, headers={"Authorization": "Bearer tok-ok"}).status_code == 200
        r = c.get("/api/models/acme/private")
        assert (r.status_code, r.headers["X-Error-Code"]) == (401, "RepoNotFound")
        assert c.get("/api/models/acme/private", headers={"Authorization": "Bearer x"}).status_code == 404


def test_a_listing_without_files_falls_back_to_model_info(hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> None:
    import lineage_index.indexer.read.hub as sources_hub

    # a Hub server that returns only ids and cards in listings (no siblings, no sha)
    monkeypatch.setattr(sources_hub, "EXPAND", ["cardData", "createdAt"])
    items = records(HubSource(org="acme", endpoint=hub.url, token=False, retry=FAST))  # type: ignore[arg-type]
    base = items["acme/base"]
    assert isinstance(base, ModelRecord) and base.tensors and base.sha == hub.sha("acme/base")
    assert hub.requests_for(repo="acme/base", route="info")


# --- a misbehaving Hub (issue 19) ---------------------------------------------------------------


def test_a_listing_that_pages_in_a_circle_stops_and_says_so(hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> None:
    import lineage_index.indexer.read.hub as hub_mod

    monkeypatch.setattr(hub_mod, "LISTING_REPEATS", 6)  # three pages of nothing new (pages of 2)
    hub.loop_listing = True
    items = list(HubSource(org="acme", endpoint=hub.url, token=False, retry=FAST).iter_infos())  # type: ignore[arg-type]
    ids = [getattr(i, "id", None) for i in items if not isinstance(i, Failure)]
    assert sorted(ids) == ["acme/base", "acme/gated", "acme/lora", "acme/pickled", "acme/sharded", "acme/tuned"]
    stop = [i for i in items if isinstance(i, Failure)]
    assert [(f.model_id, f.kind) for f in stop] == [("<listing>", "listing_loop")]
    assert len(hub.requests_for(route="list")) <= 3 + 3 + 1  # the distinct pages, the repeated ones, no more


def test_the_listing_limit_bounds_the_pages_read(hub: LocalHub) -> None:
    hub.loop_listing = True  # even a listing that never ends
    items = list(HubSource(org="acme", endpoint=hub.url, token=False, retry=FAST, limit=3).iter_infos())  # type: ignore[arg-type]
    assert len(items) == 3 and len(hub.requests_for(route="list")) == 2


def test_the_token_never_goes_to_another_origin(zoo: Path, hf_env: None) -> None:
    with LocalHub(zoo, page_size=2) as home, LocalHub(zoo, page_size=2) as elsewhere:
        home.grant("tok-secret", "acme/private")
        home.next_origin = elsewhere.url  # the first page links to another server
        items = list(HubSource(org="acme", endpoint=home.url, token="tok-secret", retry=FAST).iter_infos())  # type: ignore[arg-type]
        assert items and home.requests_for(route="list")[0].authorized
        foreign = elsewhere.requests_for(route="list")
        assert foreign and not any(e.authorized for e in foreign)


@pytest.mark.parametrize("entry", [
    {"id": "acme/" + "x" * 10_000}, {"id": "../../escape"}, {"id": "evil/.."}, {"modelId": "no-id"}, {},
    {"id": "acme/dated", "createdAt": "not a date"}, {"id": "acme/sib", "siblings": "x"}, "a string", {"id": 5},
])
def test_a_hostile_listing_entry_is_one_failure_and_the_run_goes_on(hub: LocalHub, entry: object) -> None:
    hub.extra_listing = [entry]
    items = records(HubSource(org="acme", endpoint=hub.url, token=False, retry=FAST))  # type: ignore[arg-type]
    good = sorted(k for k, v in items.items() if isinstance(v, ModelRecord))
    assert good == ["acme/base", "acme/lora", "acme/pickled", "acme/sharded", "acme/tuned"]  # all still read
    bad = [v for v in items.values() if isinstance(v, Failure) and v.kind == "bad_listing_entry"]
    assert len(bad) == 1 and len(bad[0].model_id) < 100 and len(bad[0].message) < 400


def test_a_server_that_trickles_bytes_is_given_up_on_per_model(hub: LocalHub) -> None:
    hub.trickle_s = 0.05  # one byte every 50 ms: the per-read timeout never fires
    policy = RetryPolicy(max_retries=0, base_wait_s=0.0, max_wait_s=0.05, max_total_wait_s=1.0, timeout_s=10,
                         deadline_s=1.0)
    started = time.monotonic()
    items = records(HubSource(org="acme", endpoint=hub.url, token=False, retry=policy))  # type: ignore[arg-type]
    took = time.monotonic() - started
    trickled = [v for v in items.values() if isinstance(v, Failure) and "trickles" in v.message]
    assert {v.model_id for v in trickled} >= {"acme/base", "acme/tuned", "acme/sharded"}
    assert took < 30, took  # bounded by the deadline, not by the server


def test_several_orgs_are_listed_each_model_once(hub: LocalHub) -> None:
    items = records(HubSource(org=["acme", "other", "acme"], endpoint=hub.url, token=False, retry=FAST))  # type: ignore[arg-type]
    assert sorted(items) == ["acme/base", "acme/gated", "acme/lora", "acme/pickled", "acme/sharded",
                             "acme/tuned", "other/thing"]


def test_a_long_wait_between_retries_is_said(monkeypatch: pytest.MonkeyPatch) -> None:
    from lineage_index import config
    from lineage_index.indexer.read.remote import RetryableError, with_retries

    heard: list[str] = []
    monkeypatch.setattr(config, "NOTICES", [heard.append])
    calls = iter([RetryableError(429, 8.0, "HTTP 429"), None])

    def fn() -> str:
        exc = next(calls)
        if exc is not None:
            raise exc
        return "ok"

    policy = RetryPolicy(max_retries=5, base_wait_s=1.0, max_wait_s=30.0, max_total_wait_s=60.0)
    assert with_retries(fn, policy, "acme/base", sleep=lambda s: None) == "ok"
    assert heard == ["acme/base: waiting 8 s after HTTP 429, try 2/6"]


def test_a_back_dated_card_does_not_make_a_reupload_the_original(tmp_path: Path, hf_env: None) -> None:
    from lineage_index.indexer.pipeline import recover, sketch_all

    rng = np.random.default_rng(7)
    w = {f"model.layers.{i}.mlp.up_proj.weight": rng.standard_normal((64, 64)).astype(np.float32) for i in range(2)}
    root = tmp_path / "hub"
    write_model(root, "orig/model", tensors=w, config=CONFIG, card={"license": "mit"})
    write_model(root, "copier/model", tensors=w, config=CONFIG, card={"license": "mit", "created_at": "2001-01-01"})
    with LocalHub(root) as hub:
        hub.created_at["orig/model"] = "2024-01-01T00:00:00.000Z"  # the Hub's own dates win over cards
        hub.created_at["copier/model"] = "2025-06-01T00:00:00.000Z"
        src = HubSource(models=["orig/model", "copier/model"], endpoint=hub.url, token=False, retry=FAST)  # type: ignore[arg-type]
        records, report = sketch_all(src.iter_records(), src.open_reader, None)
    assert records["copier/model"].created_at.startswith("2025")
    edges = [(e.child, e.parent, e.relation) for e in recover(records, report.sketches).edges]
    assert edges == [("copier/model", "orig/model", "copy")]
