"""Fault injection (issue 19): a run killed at the worst moment, then rerun, gives the clean
run's graph; Neo4j failing mid-run is a clear exit 5; secrets are redacted from what is printed.

The kill is not left to timing: ``LINEAGE_INDEX_FAULT`` names a point of the graph write
(``config.fault_point``) where the ingest process sends itself SIGKILL, as ``kill -9`` would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from neo4j import Driver

from lineage_index.errors import redact

CLI = [sys.executable, "-m", "lineage_index.cli.app"]


def _ingest(zoo: Path, store: Path, uri: str, fault: str | None = None, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LINEAGE_INDEX_FAULT"}
    if fault:
        env["LINEAGE_INDEX_FAULT"] = fault
    return subprocess.run([*CLI, "ingest", "--dir", str(zoo), "--store", str(store), "--neo4j-uri", uri,
                           "--graph-load", "bolt", *extra], capture_output=True, text=True, env=env, timeout=600)


def _graph(driver: Driver, database: str) -> tuple[set, set]:
    edges, _, _ = driver.execute_query(
        "MATCH (c:Model)-[r]->(p:Model) RETURN c.id AS c, p.id AS p, type(r) AS t, r.relation AS rel",
        database_=database)
    models, _, _ = driver.execute_query("MATCH (m:Model) RETURN m.id AS id, m.sha AS sha, m.status AS status",
                                        database_=database)
    return {tuple(r.values()) for r in edges}, {tuple(r.values()) for r in models}


@pytest.fixture()
def server(neo4j_server):  # type: ignore[no-untyped-def]
    if neo4j_server.user is not None:
        pytest.skip("the CLI is given only --neo4j-uri here (auth-less server)")
    return neo4j_server


@pytest.mark.parametrize("fault", ["after-models", "after-edges"])
def test_a_run_killed_between_nodes_and_edges_converges_on_rerun(
    fault: str, tiny_zoo: Path, server, clean_graph: Driver, neo4j_database: str, tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    clean = _ingest(tiny_zoo, tmp_path / "store", server.uri)
    assert clean.returncode == 0, clean.stderr
    want = _graph(clean_graph, neo4j_database)
    assert want[0] and want[1]
    with clean_graph.session(database=neo4j_database) as s:
        s.run("MATCH (n) DETACH DELETE n").consume()
    killed = _ingest(tiny_zoo, tmp_path / "store", server.uri, fault)
    assert killed.returncode == -9, (killed.returncode, killed.stderr)  # it really died mid-write
    broken = _graph(clean_graph, neo4j_database)
    assert broken != want  # the kill left the graph half-written
    rerun = _ingest(tiny_zoo, tmp_path / "store", server.uri)
    assert rerun.returncode == 0, rerun.stderr
    assert "graph unchanged" not in rerun.stdout
    assert _graph(clean_graph, neo4j_database) == want


def test_neo4j_gone_mid_run_is_exit_5_with_advice_not_a_traceback(tiny_zoo: Path, tmp_path: Path) -> None:
    # a Bolt port that accepts the connection check but nothing listens behind: the run fails in
    # the graph stage, after sketching
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = _ingest(tiny_zoo, tmp_path / "store", f"bolt://user:s3cret@127.0.0.1:{port}")
    assert r.returncode == 5, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "s3cret" not in r.stderr + r.stdout


def test_redact_removes_credentials_from_urls_tokens_and_headers() -> None:
    text = ("bolt://neo4j:hunter2@db:7687 https://hub/x?token=abc123&x=1 hf_abcdefghijklmnopqrstu "
            "Authorization: Bearer eyJhbGciOi.abc.def")
    out = redact(text)
    for secret in ("hunter2", "abc123", "hf_abcdefghijklmnopqrstu", "eyJhbGciOi.abc.def"):
        assert secret not in out
    assert "bolt://neo4j:***@db:7687" in out and "x=1" in out


def _tiny_model(repo: Path, card: str, seed: int) -> None:
    import json

    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    repo.mkdir(parents=True)
    save_file({f"model.layers.{i}.mlp.up_proj.weight": torch.randn(64, 64, generator=g) for i in range(2)},
              str(repo / "model.safetensors"))
    (repo / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (repo / "README.md").write_text(card)


def test_untrusted_text_is_printed_as_text_not_markup(tmp_path: Path) -> None:
    hostile = "[/bold][link=http://evil.example]click[/link]"
    _tiny_model(tmp_path / "hub" / "o" / "base", "---\nlicense: mit\n---\n", 1)
    _tiny_model(tmp_path / "hub" / "o" / "kid", f"---\nlicense: mit\nbase_model: o/base\n"
                f"base_model_relation: '{hostile}'\n---\n", 2)
    r = subprocess.run([*CLI, "ingest", "--dir", str(tmp_path / "hub"), "--store", str(tmp_path / "s"),
                        "--no-graph"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert hostile in r.stdout  # printed verbatim: no crash, no hidden text, no terminal link

    from rich.console import Console

    from lineage_index.cli import output

    cap = Console(record=True, width=200)
    old, output.console = output.console, cap
    try:
        output.emit([{"id": hostile}], ["id"], "table", title=hostile)
    finally:
        output.console = old
    assert cap.export_text().count(hostile) == 2


def test_a_damaged_or_swapped_store_entry_is_read_again_and_said(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    for i, name in enumerate(("a", "b", "c")):
        _tiny_model(hub / "o" / name, "---\nlicense: mit\n---\n", 10 + i)
    store = tmp_path / "store"
    args = [*CLI, "ingest", "--dir", str(hub), "--store", str(store), "--no-graph"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    files = {p.name.split("@")[0]: p for p in (store / "o").glob("*.npz")}
    files["o--a"].write_bytes(files["o--a"].read_bytes()[:100])  # truncated
    files["o--b"].write_bytes(files["o--c"].read_bytes())  # another model's valid sketch
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "2 damaged sketch-store entries" in again.stderr and "o/a" in again.stderr and "o/b" in again.stderr
    assert "sketched: 2" in again.stdout and "from store: 1" in again.stdout
    third = subprocess.run(args, capture_output=True, text=True, timeout=300)  # repaired for good
    assert third.returncode == 0 and "damaged" not in third.stderr and "from store: 3" in third.stdout


def test_fifos_and_symlinks_out_of_the_root_are_not_read(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    _tiny_model(hub / "o" / "good", "---\nlicense: mit\n---\n", 1)
    (hub / "o" / "fifo").mkdir()
    os.mkfifo(hub / "o" / "fifo" / "model.safetensors")  # opening it would block for ever
    (hub / "o" / "leak").mkdir()
    (hub / "o" / "leak" / "model.safetensors").symlink_to("/etc/passwd")
    (hub / "usr").symlink_to("/usr")  # an "org" that is the whole system
    (hub / "o" / "big").symlink_to("/usr", target_is_directory=True)
    r = subprocess.run([*CLI, "ingest", "--dir", str(hub), "--store", str(tmp_path / "s"), "--no-graph"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "models: 1" in r.stdout.replace("[bold]", "")  # only o/good: nothing else was read
    assert "root:" not in r.stdout + r.stderr  # not a byte of /etc/passwd


def test_a_directory_with_too_many_files_is_one_failure(tmp_path: Path) -> None:
    from lineage_index.indexer.read.sources import DirSource

    hub = tmp_path / "hub"
    _tiny_model(hub / "o" / "good", "---\nlicense: mit\n---\n", 1)
    junk = hub / "o" / "junk"
    junk.mkdir()
    for i in range(30):
        (junk / f"f{i}.txt").write_text("x")
    import lineage_index.indexer.read.sources as sources

    old, sources.MAX_FILES = sources.MAX_FILES, 20
    try:
        items = list(DirSource(hub).iter_records())
    finally:
        sources.MAX_FILES = old
    kinds = {getattr(i, "model_id", getattr(i, "id", None)): getattr(i, "kind", "record") for i in items}
    assert kinds == {"o/good": "record", "o/junk": "too_many_files"}  # one failure, the run goes on


def test_one_bad_model_never_stops_the_run(tmp_path: Path) -> None:
    import json

    hub = tmp_path / "hub"
    _tiny_model(hub / "o" / "good", "---\nlicense: mit\n---\n", 1)
    _tiny_model(hub / "o" / ("n" * 250), "---\nlicense: mit\n---\n", 2)  # a 255-byte file name in the store
    _tiny_model(hub / "o" / "future", "---\ncreated_at: 99999999999999999999\n---\n", 3)
    _tiny_model(hub / "o" / "past", "---\ncreated_at: -99999999999999\n---\n", 4)
    bases = "\n".join(f"- x/m{i}" for i in range(5000))
    _tiny_model(hub / "o" / "bases", f"---\nbase_model:\n{bases}\n---\n", 5)
    bomb = hub / "o" / "bomb"
    bomb.mkdir(parents=True)
    header = json.dumps({f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
                         for i in range(120_000)}).encode()
    (bomb / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    r = subprocess.run([*CLI, "ingest", "--dir", str(hub), "--store", str(tmp_path / "s"), "--no-graph"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "models: 6" in out and "failures: 2" in out  # the card with 5,000 bases and the bomb
    assert "bad_card" in out and "bad_header" in out and "120,000 tensors" in out
    assert sum(1 for _ in (tmp_path / "s" / "o").glob("*.npz")) == 4  # the four readable models sketched


def test_a_bad_model_id_argument_is_refused_before_any_work(tmp_path: Path) -> None:
    r = subprocess.run([*CLI, "ingest", "--models", "a/b..c", "--no-graph", "--store", str(tmp_path / "s")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not a Hub model id" in r.stderr and not (tmp_path / "s").exists()


def test_a_model_too_large_for_the_store_is_one_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many headers each under the per-header bound still cannot fill the store: one model's record
    has a size limit, past which the model is a ``too_large`` failure and the others are indexed."""
    import json

    from lineage_index.indexer.pipeline import sketch_all
    from lineage_index.indexer.read.sources import DirSource
    from lineage_index.indexer.sketch import store as store_mod

    hub = tmp_path / "hub"
    _tiny_model(hub / "o" / "good", "---\nlicense: mit\n---\n", 1)
    wide = hub / "o" / "wide"
    wide.mkdir(parents=True)
    for shard in range(3):
        header = json.dumps({f"s{shard}.t{i}": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
                             for i in range(2000)}).encode()
        (wide / f"model-{shard}.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(8000))
    monkeypatch.setattr(store_mod, "MAX_RECORD_BYTES", 200_000)
    source = DirSource(hub)
    store = store_mod.SketchStore(tmp_path / "s")
    records, report = sketch_all(source.iter_records(), source.open_reader, store)
    assert set(records) == {"o/good"} and set(report.sketches) == {"o/good"}
    (failure,) = report.failures
    assert failure.model_id == "o/wide" and failure.kind == "too_large" and "limit" in failure.message
    assert store.record("o/wide") is None and store.record("o/good") is not None
