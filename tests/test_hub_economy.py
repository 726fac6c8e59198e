"""The Hub's request budget, spent as carefully as bytes (issue 24), on a Hub-shaped test server
that redirects weight files to a CDN on another origin and enforces fixed-window rate limits with
the Hub's headers; every count here is the server's, not the tool's."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from hubserver import LocalHub  # tests/ is on sys.path (rootdir conftest)

from lineage_index import api
from lineage_index.indexer.read.remote import HubReader, RetryPolicy
from lineage_index.indexer.sketch.store import SketchStore
from lineage_index.records import ModelRecord

TOKEN = "hf_economy_secret_token"


@pytest.fixture(autouse=True)
def _own_budget_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the shared budget's state file


def _edges(summary: api.IngestSummary) -> set[tuple[str, str, str]]:
    return {(e.child, e.parent, e.relation) for e in summary.edges}


def test_weight_reads_go_to_the_cdn_after_one_resolve_per_file(tiny_zoo: Path, tmp_path: Path) -> None:
    local = api.ingest(api.make_source(directory=tiny_zoo), store=SketchStore(tmp_path / "dir"))
    with LocalHub(tiny_zoo, page_size=100) as hub:
        hub.cdn = True
        source = api.make_source(everything=True, endpoint=hub.url, token=TOKEN)
        remote = api.ingest(source, store=SketchStore(tmp_path / "hub"))
        n = remote.models
        counts = hub.requests_by_bucket()
        cdn = hub.requests_for(route="cdn")
    assert n == local.models == 14 and not remote.failures
    assert _edges(remote) == _edges(local)  # the same lineage as from the directory
    assert counts.get("api", 0) / n <= 0.1  # one listing page for 14 models
    assert counts["resolvers"] / n <= 2.0, counts
    assert counts["cdn"] > counts["resolvers"]  # the range reads of weights went to the CDN
    assert cdn and not any(e.authorized for e in cdn)  # the token never leaves the Hub's origin
    assert remote.hub_requests["resolvers"] == counts["resolvers"]


def test_an_expired_cdn_url_is_resolved_again(tiny_zoo: Path) -> None:
    with LocalHub(tiny_zoo) as hub:
        hub.cdn, hub.cdn_ttl_s = True, 1.0
        rec = next(r for r in api.make_source(models=["meta-llama/Llama-3.1-Nano"], endpoint=hub.url).iter_records())
        assert isinstance(rec, ModelRecord)
        reader = HubReader(rec.id, revision=rec.sha, endpoint=hub.url, token=False,
                           retry=RetryPolicy(max_retries=0))
        t = rec.tensors[0]
        hub.reset_log()
        first = reader.read_ranges(t.file, [(t.start, t.start + 64)])
        again = reader.read_ranges(t.file, [(t.start + 64, t.start + 128)])  # still valid: CDN only
        time.sleep(1.5)
        late = reader.read_ranges(t.file, [(t.start, t.start + 64)])  # expired: 403, resolved again
        counts = hub.requests_by_bucket()
        statuses = [e.status for e in hub.requests_for(route="cdn")]
    assert first == late and len(again[0]) == 64
    assert counts["resolvers"] == 2 and statuses == [206, 206, 403, 206]


def test_a_crawl_paced_at_the_limit_is_never_answered_429(tiny_zoo: Path, tmp_path: Path) -> None:
    """Limits scaled down to a 2-second window: the crawl waits for the windows instead of
    running into them, and ends with the same edges."""
    with LocalHub(tiny_zoo, page_size=100) as hub:
        hub.cdn = True
        hub.limits = {"api": (4, 2.0), "resolvers": (6, 2.0)}
        t0 = time.monotonic()
        paced = api.ingest(api.make_source(everything=True, endpoint=hub.url), store=SketchStore(tmp_path / "s"))
        took = time.monotonic() - t0
        resolvers = hub.requests_by_bucket()["resolvers"]
        limited = hub.limited
    assert not paced.failures and paced.models == 14
    assert limited == 0  # counted by the server
    assert took >= (resolvers // 6 - 1) * 2.0  # it did wait for the windows
    local = api.ingest(api.make_source(directory=tiny_zoo), store=SketchStore(tmp_path / "dir"))
    assert _edges(paced) == _edges(local)


def test_separate_processes_share_one_budget(tiny_zoo: Path, tmp_path: Path) -> None:
    """Four crawlers at once with one token stay under the token's limit together: the budget
    is one per (endpoint, token), shared through a locked file, not one per process."""
    ids = [f"{o.name}/{m.name}" for o in sorted(tiny_zoo.iterdir()) if o.is_dir() for m in sorted(o.iterdir())
           if m.is_dir()]
    with LocalHub(tiny_zoo) as hub:
        hub.cdn = True
        hub.limits = {"api": (50, 3.0), "resolvers": (5, 3.0)}
        code = ("import sys; from lineage_index import api; from lineage_index.indexer.sketch.store import SketchStore;"
                "s = api.ingest(api.make_source(models=sys.argv[3:], endpoint=sys.argv[1]), store=SketchStore(sys.argv[2]));"
                "print(len(s.failures))")
        procs = [subprocess.Popen([sys.executable, "-c", code, hub.url, str(tmp_path / f"s{i}"), *ids[i::4]],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**__import__("os").environ, "HF_TOKEN": TOKEN})
                 for i in range(4)]
        outs = [p.communicate(timeout=300) for p in procs]
        limited = hub.limited
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    assert [o[0].strip() for o in outs] == ["0"] * 4
    assert limited == 0


def test_plan_lists_and_estimates_without_reading_a_file(tiny_zoo: Path, tmp_path: Path) -> None:
    with LocalHub(tiny_zoo, page_size=100) as hub:
        hub.cdn = True
        source = api.make_source(everything=True, endpoint=hub.url, max_requests="api=500,resolvers=10,window=300")
        plan = api.plan(source, SketchStore(tmp_path / "s"))
        assert not hub.requests_for(route="resolve") and not hub.requests_for(route="cdn")
        api.ingest(api.make_source(everything=True, endpoint=hub.url), store=SketchStore(tmp_path / "s2"))
        spent = hub.requests_by_bucket()["resolvers"]
        again = api.plan(api.make_source(everything=True, endpoint=hub.url), SketchStore(tmp_path / "s2"))
    assert plan.models == 14 and plan.from_store == 0 and plan.requests["api"] == 1
    assert plan.requests["resolvers"] == spent  # the estimate is what the ingest then spent
    assert plan.seconds("resolvers") == pytest.approx((spent - 10) / 10 * 300)
    assert again.from_store == 14 and again.requests.get("resolvers", 0) == 0  # a resumed crawl reads nothing again


def _crawl(url: str, store: Path, out: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ}
    env.pop("LINEAGE_INDEX_FAULT", None)
    if fault:
        env["LINEAGE_INDEX_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "lineage_index.cli.app", "ingest", "--all", "--endpoint", url,
                           "--store", str(store), "--no-graph", "--edges-out", str(out)],
                          capture_output=True, text=True, timeout=600, env=env)


def test_a_crawl_killed_part_way_resumes_without_reading_a_model_twice(tiny_zoo: Path, tmp_path: Path) -> None:
    import json

    store = SketchStore(tmp_path / "store")
    with LocalHub(tiny_zoo, page_size=100) as hub:
        hub.cdn = True
        killed = _crawl(hub.url, store.root, tmp_path / "x.json", fault="after-sketch-6")
        assert killed.returncode == -9  # kill -9 at a known point: six models sketched, the rest not
        sketched = {m for m in store.records() if store.get(m, store.records()[m].sha) is not None}
        recorded = set(store.records())
        assert len(sketched) == 6 and len(recorded) >= 6
        hub.reset_log()
        resumed = _crawl(hub.url, store.root, tmp_path / "resumed.json")
        assert resumed.returncode == 0, resumed.stderr
        read_again = {e.repo for e in hub.log if e.route in ("resolve", "cdn")}
        headers_again = {e.repo for e in hub.log if e.route in ("resolve", "cdn") and (e.range or "").startswith("bytes=0-")}
    assert not read_again & sketched  # a model finished before the kill costs nothing on the rerun
    assert not headers_again & recorded  # nor does a model whose headers were read
    with LocalHub(tiny_zoo, page_size=100) as hub:
        hub.cdn = True
        clean = _crawl(hub.url, tmp_path / "clean", tmp_path / "clean.json")
        assert clean.returncode == 0, clean.stderr

    def edges(p: Path) -> set[tuple[str, str, str]]:
        return {(e["child"], e["parent"], e["relation"]) for e in json.loads(p.read_text())}

    assert edges(tmp_path / "resumed.json") == edges(tmp_path / "clean.json") and edges(tmp_path / "clean.json")


def test_cli_plan_prints_requests_per_bucket_and_reads_no_file(tiny_zoo: Path, tmp_path: Path) -> None:
    with LocalHub(tiny_zoo, page_size=100) as hub:
        hub.cdn = True
        r = subprocess.run([sys.executable, "-m", "lineage_index.cli.app", "ingest", "--all", "--endpoint", hub.url,
                            "--store", str(tmp_path / "s"), "--plan", "--max-requests", "resolvers=10,window=60"],
                           capture_output=True, text=True, timeout=300)
        files_read = hub.requests_for(route="resolve") + hub.requests_for(route="cdn")
    assert r.returncode == 0, r.stderr
    assert not files_read
    assert "models: 14" in r.stdout and "resolvers" in r.stdout and "10 per 60 s" in r.stdout
