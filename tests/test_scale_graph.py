"""Hub scale on real parts: Ray fan-out, incremental re-index, bulk graph load (issue 11).

* The Ray path (a local Ray) gives the same sketches, byte for byte, and the same edges as the
  local path on the really trained tiny zoo, while one worker is killed mid-run (the test hook
  of ``indexer.fanout``), and keeps per-host concurrency bounded; a task retries transient Hub
  errors itself.
* An incremental re-ingest from the local Hub test server, after two models got new weights
  (and so a new commit sha), reads bytes of those two only, re-verifies only their family,
  touches only their nodes and edges, and leaves the graph a full ingest would build.
* ``neo4j-admin database import full`` (on a private managed Neo4j) and the Bolt writer build
  the same graph, property for property.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lineage_index import api
from lineage_index.indexer.pipeline import recover, sketch_all
from lineage_index.indexer.read.sources import DirSource
from lineage_index.indexer.sketch.store import SketchStore
from lineage_index.records import Edge
from lineage_index.schema.connection import Connection

sys.path.insert(0, str(Path(__file__).parent))
from hubserver import LocalHub  # noqa: E402

ray = pytest.importorskip("ray")


@pytest.fixture(autouse=True)
def hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    for key in ("HF_HUB_DISABLE_TELEMETRY", "HF_HUB_DISABLE_XET", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(key, "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


# --- helpers -----------------------------------------------------------------------------------


def _npz_arrays(path: Path) -> dict[str, tuple[str, bytes]]:
    with np.load(path, allow_pickle=False) as data:
        return {k: (str(data[k].dtype), data[k].tobytes()) for k in data.files}


def _same_store_content(a: SketchStore, b: SketchStore) -> int:
    """Every sketch file of ``a`` has a twin in ``b`` with identical arrays; returns the count."""
    paths_a = sorted(p.relative_to(a.root) for p in a)
    assert paths_a == sorted(p.relative_to(b.root) for p in b)
    for rel in paths_a:
        assert _npz_arrays(a.root / rel) == _npz_arrays(b.root / rel), rel
    return len(paths_a)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One small local Ray for the module (RaySketcher reuses a running Ray and leaves it up)."""
    ray.init(address="local", num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


# --- Ray fan-out ---------------------------------------------------------------------------------


def test_ray_fanout_gives_the_local_results_and_survives_a_killed_worker(
    tiny_zoo: Path, tmp_path: Path, local_ray: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_store, ray_store = SketchStore(tmp_path / "local"), SketchStore(tmp_path / "ray")
    local = api.ingest(api.make_source(directory=tiny_zoo), store=local_store)

    victim = "meta-llama/Llama-3.1-Nano"  # the root: every edge of its tree depends on its sketch
    marker = tmp_path / "killed.pid"
    monkeypatch.setenv("LINEAGE_INDEX_FANOUT_CRASH_ONCE", f"{victim}@{marker}")
    fanned = api.ingest(api.make_source(directory=tiny_zoo), store=ray_store, ray=True)

    killed_pid = int(marker.read_text())  # the first attempt ran in a worker and killed it
    assert killed_pid != os.getpid() and not Path(f"/proc/{killed_pid}").exists()
    assert fanned.sketched == local.sketched == 14 and not fanned.failures
    assert fanned.bytes_read == local.bytes_read and fanned.requests == local.requests
    assert fanned.edges == local.edges and len(local.edges) >= 13
    assert _same_store_content(local_store, ray_store) == 14


def test_ray_fanout_bounds_tasks_per_host(tiny_zoo: Path, tmp_path: Path, local_ray: None) -> None:
    from lineage_index.indexer.sketch.fanout import FanoutConfig, RaySketcher, ReaderSpec

    src = DirSource(tiny_zoo)
    sketcher = RaySketcher(ReaderSpec("local"), FanoutConfig(max_in_flight_per_host=2, crash_once=None))
    records, report = sketch_all(src.iter_records(), src.open_reader, None, fanout=sketcher)
    sketcher.close()
    assert sketcher.tasks == 14 and sketcher.peak_per_host == {"local": 2}
    assert sorted(report.fresh) == sorted(records) and not report.failures
    _, local = sketch_all(src.iter_records(), src.open_reader, None)
    assert list(report.sketches) == list(local.sketches)  # listing order kept
    assert recover(records, report.sketches).edges == recover(records, local.sketches).edges


def test_ray_workers_share_one_hub_budget(tiny_zoo: Path, tmp_path: Path, local_ray: None) -> None:
    """Four Ray tasks at once, each with its own reader, spend one budget per token: the crawl
    stays under the Hub's limit (counted by the server) and reads what a local crawl reads."""
    from lineage_index.indexer.sketch.fanout import FanoutConfig, RaySketcher, reader_spec

    with LocalHub(tiny_zoo, page_size=100) as hub:
        hub.cdn = True
        hub.limits = {"api": (50, 8.0), "resolvers": (4, 8.0)}  # the budget allows 25% of a window for arrival skew: 2 s (1 s was not enough on CI once)
        source = api.make_source(everything=True, endpoint=hub.url)
        sketcher = RaySketcher(reader_spec(source), FanoutConfig(task_cpus=0.5, max_in_flight_per_host=4,
                                                                  crash_once=None))
        records, report = sketch_all(source.iter_records(), source.open_reader, None, fanout=sketcher)
        sketcher.close()
        limited, peak = hub.limited, sketcher.peak_per_host
    assert len(records) == 14 and not report.failures
    assert max(peak.values()) == 4  # four workers read at once ...
    assert limited == 0  # ... and the server never had to refuse one


def test_a_task_retries_transient_hub_errors_on_a_fresh_reader(tiny_zoo: Path) -> None:
    from lineage_index.indexer.read.remote import RetryPolicy
    from lineage_index.indexer.sketch.fanout import ReaderSpec, sketch_task
    from lineage_index.indexer.sketch.sample import sketch_model
    from lineage_index.records import Failure

    model = "openlm-research/open_llama_nano"
    with LocalHub(tiny_zoo) as hub:
        rec = next(r for r in api.make_source(models=[model], endpoint=hub.url).iter_records())
        spec = ReaderSpec("hub", endpoint=hub.url, retry=RetryPolicy(max_retries=0, base_wait_s=0.0))
        hub.fail(503, times=2, repo=model, route="resolve")  # two attempts fail, the third reads
        got = sketch_task(spec, rec, app_retries=2, backoff_s=0.0)
        hub.fail(503, times=None, repo=model, route="resolve")  # a storm: retries run out
        failed = sketch_task(spec, rec, app_retries=1, backoff_s=0.0)
        hub.clear_faults()
        with spec.open(rec) as reader:
            want = sketch_model(rec, reader)
    assert not isinstance(got, Failure) and got.bytes_read == want.bytes_read
    assert all(np.array_equal(got.samples[k].values, want.samples[k].values) for k in want.samples)
    assert isinstance(failed, Failure) and failed.kind == "rate_limited"
    assert "token" not in repr(spec) and repr(ReaderSpec("hub", token="hf_secret")).count("hf_secret") == 0


# --- incremental re-index --------------------------------------------------------------------------


def _second_family(root: Path) -> list[str]:
    """Two really trained GPT-2 nanos (a base and its fine-tune): a family of their own."""
    from lineage_index.zoo.archs import make_model, state_of
    from lineage_index.zoo.training import TrainSpec, train
    from lineage_index.zoo.writing import write_model_repo

    model = make_model("gpt2-nano", seed=3)
    train(model, "gpt2-nano", TrainSpec(steps=6, lr=3e-3, tasks=((31,),), seed=3))
    write_model_repo(root / "openai-community" / "gpt2-nano", "gpt2-nano", "F32", state_of(model), 1,
                     "---\nlicense: mit\n---\nA GPT-2 nano.\n")
    train(model, "gpt2-nano", TrainSpec(steps=3, lr=1e-3, tasks=((31, 32),), seed=4))
    write_model_repo(root / "acme" / "gpt2-nano-chat", "gpt2-nano", "F32", state_of(model), 1,
                     "---\nbase_model: openai-community/gpt2-nano\n---\nA fine-tune.\n")
    return ["openai-community/gpt2-nano", "acme/gpt2-nano-chat"]


def _retrain_in_place(repo: Path) -> None:
    """New weights for a model (a small further update of every matrix), so a new commit sha."""
    import torch
    from safetensors.torch import load_file, save_file

    gen = torch.Generator().manual_seed(7)
    for f in sorted(repo.glob("*.safetensors")):
        tensors = load_file(str(f))
        for k, v in tensors.items():
            if v.is_floating_point() and v.ndim == 2:
                x = v.float()
                tensors[k] = (x + 0.01 * x.std() * torch.randn(x.shape, generator=gen)).to(v.dtype)
        save_file(tensors, str(f), metadata={"format": "pt"})


def _graph(driver, database: str) -> tuple[dict, dict]:
    """Model nodes and DERIVED_FROM edges: id -> (element id, updated_at, other properties)."""
    nodes, _, _ = driver.execute_query(
        "MATCH (m:Model) RETURN m.id AS id, elementId(m) AS eid, properties(m) AS p", database_=database)
    rels, _, _ = driver.execute_query(
        "MATCH (c:Model)-[r:DERIVED_FROM]->(p:Model) RETURN c.id AS c, p.id AS p, elementId(r) AS eid, "
        "properties(r) AS props", database_=database)

    def split(props: dict) -> tuple[str | None, dict]:
        props = dict(props)
        return props.pop("updated_at", None), props

    out_nodes = {r["id"]: (r["eid"], *split(r["p"])) for r in nodes}
    out_rels = {(r["c"], r["p"]): (r["eid"], *split(r["props"])) for r in rels}
    return out_nodes, out_rels


@pytest.mark.neo4j
@pytest.mark.slow
def test_incremental_reingest_reads_and_rewrites_only_the_changed_models(
    tiny_zoo: Path, tmp_path: Path, neo4j_server, clean_graph
) -> None:
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    gpt2 = _second_family(zoo)
    conn = Connection(uri=neo4j_server.uri, user=neo4j_server.user, database=neo4j_server.database,
                      managed=False, password=neo4j_server.password)
    db = conn.database
    changed = ["Intel/Llama-3.1-Nano-fr", "unsloth/Llama-3.1-Nano-int8"]  # a fine-tune, an int8 copy
    with LocalHub(zoo) as hub:
        ids = hub.repo_ids()

        def source():
            return api.make_source(models=ids, endpoint=hub.url)

        store = SketchStore(tmp_path / "store")
        first = api.ingest(source(), store=store, conn=conn)
        assert first.sketched == len(ids) == 16 and len(first.reverified_families) == 2
        llama = {s.family for m in changed if (s := store.latest(m)) is not None}
        before = _graph(clean_graph, db)
        shas = {m: hub.sha(m) for m in changed}
        for m in changed:
            _retrain_in_place(zoo / m)
        assert all(hub.sha(m) != shas[m] for m in changed)

        hub.reset_log()
        second = api.ingest(source(), store=store, conn=conn)
        read = {r for r in ids if hub.bytes_served(r)}
        assert read == set(changed)  # no other repository is read, not even a header
        assert second.sketched == 2 and second.from_store == len(ids) - 2
        assert second.bytes_read == sum(store.latest(m).bytes_read for m in changed) > 0
        assert set(second.reverified_families) == llama and len(llama) == 1
        assert not set(gpt2) & set(second.rewritten) and set(changed) <= set(second.rewritten)
        after = _graph(clean_graph, db)

        nodes_b, edges_b = before
        nodes_a, edges_a = after
        assert set(nodes_a) == set(nodes_b) and set(edges_a) == set(edges_b)
        touched_nodes = {m for m in nodes_a if nodes_a[m] != nodes_b[m]}
        assert touched_nodes == set(changed)  # new sha (and sketch): nothing else rewritten
        assert all(nodes_a[m][0] == nodes_b[m][0] for m in nodes_a)  # same nodes (element ids)
        touched_edges = {k for k in edges_a if edges_a[k] != edges_b[k]}
        assert touched_edges and all(c in changed or p in changed for c, p in touched_edges)
        assert all(edges_a[k][0] == edges_b[k][0] for k in edges_a)

        # the increment leaves the graph a full ingest (fresh store, empty graph) builds
        clean_graph.execute_query("MATCH (n) DETACH DELETE n", database_=db)
        api.ingest(source(), store=SketchStore(tmp_path / "fresh"), conn=conn)
        full_nodes, full_edges = _graph(clean_graph, db)
    assert {m: v[2] for m, v in full_nodes.items()} == {m: v[2] for m, v in nodes_a.items()}
    assert {k: v[2] for k, v in full_edges.items()} == {k: v[2] for k, v in edges_a.items()}


# --- bulk import vs Bolt writer ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rows() -> list[dict]:
    """Model rows with every shape of value the importer must carry (or hand to the fixups)."""
    return [
        {"id": "org1/base", "props": {"license": "apache-2.0", "declared_base_models": [], "family": "f1",
                                      "gated": False, "sketch_bytes_read": 123, "empty": "",
                                      "weird": 'a "quoted", comma\nand a second line'}},
        {"id": "org1/ft", "props": {"license": None, "declared_base_models": ["org1/base"], "family": "f1",
                                    "dtypes": ["F32", "BF16"], "score": 0.1, "architectures": None}},
        {"id": "org2/ft2", "props": {"license": "other", "license_name": "llama3", "score": 1,
                                     "declared_base_models": ["org1/ft", "x;y,z \"q\""]}},
        {"id": "solo", "props": {"status": "failed", "failure": "read_error", "failure_message": "boom\r\nx"}},
        {"id": "org2/ft2", "props": {"pipeline_tag": "text-generation", "score": None}},  # a later row wins
        {"id": "org3/imp", "props": {"license_source": "imputed", "license_imputed": "mit", "ints": [1, 2],
                                     "flags": [True, False], "big": 2**40, "unicode": "Ünïcødé ✓"}},
        {"id": "org4/custom", "props": {"license": "my-own-licence", "model_type": "llama"}},
    ]


def _edges() -> list[Edge]:
    return [
        Edge("org1/ft", "org1/base", "finetune", "recovered", 0.9, 0.8, "cos high"),
        Edge("org2/ft2", "org1/ft", "finetune", "both", 0.7, None, "first"),
        Edge("org2/ft2", "org1/ft", "finetune", "both", 0.75, None, 'second "wins"'),
        Edge("org3/imp", "stub/parent", "quantized", "declared", 0.5, None, "", contradicted=True,
             recovered_parent="org1/base"),
        Edge("org9/child", "org1/base", "adapter", "recovered", 0.6, 0.1, "multi\nline"),
        Edge("org4/custom", "org1/base", "finetune", "recovered", 0.8, 0.5, "x"),
    ]


def _whole_graph(driver) -> tuple[dict, dict]:
    """Every node and relationship with labels and typed properties (``updated_at``: present or not)."""
    nodes, _, _ = driver.execute_query("MATCH (n) RETURN labels(n) AS l, properties(n) AS p")
    rels, _, _ = driver.execute_query(
        "MATCH (a)-[r]->(b) RETURN type(r) AS t, a.id AS a, labels(a) AS la, b.id AS b, labels(b) AS lb, "
        "properties(r) AS p")

    def norm(props: dict) -> tuple:
        props = dict(props)
        stamped = props.pop("updated_at", None) is not None
        return tuple(sorted((k, (type(v).__name__, tuple(v) if isinstance(v, list) else v))
                            for k, v in props.items())), stamped

    out_nodes = {(tuple(sorted(r["l"])), r["p"]["id"]): norm(r["p"]) for r in nodes}
    out_rels = {(r["t"], tuple(sorted(r["la"])), r["a"], tuple(sorted(r["lb"])), r["b"]): norm(r["p"]) for r in rels}
    assert len(out_nodes) == len(nodes) and len(out_rels) == len(rels)
    return out_nodes, out_rels


@pytest.fixture()
def private_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A managed Neo4j home of the test's own (built, not started; free ports): the import overwrites it."""
    from lineage_index import config
    from lineage_index.schema import local_neo4j

    missing = [t for t in ("java", "mvn") if shutil.which(t) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the managed Neo4j: {' and '.join(missing)} not installed", pytrace=False)
        pytest.skip(f"{' and '.join(missing)} not installed")
    home = tmp_path_factory.mktemp("bulk") / "neo4j-home"
    local_neo4j.build(home=home)
    monkeypatch.setenv(config.ENV_NEO4J_HOME, str(home))
    monkeypatch.setenv(config.ENV_BOLT_PORT, str(_free_port()))
    monkeypatch.setenv(config.ENV_HTTP_PORT, str(_free_port()))
    try:
        yield home
    finally:
        local_neo4j.stop(home=home)


@pytest.mark.neo4j
@pytest.mark.managed_neo4j
@pytest.mark.slow
def test_bulk_import_and_bolt_writer_build_the_same_graph(
    private_home: Path, neo4j_server, clean_graph
) -> None:
    from lineage_index import config
    from lineage_index.errors import UsageError
    from lineage_index.schema import bulk, local_neo4j
    from lineage_index.schema.graph import CONSTRAINT_NAMES, INDEX_NAMES, existing_schema

    # the Bolt writer, into the session's (emptied) Neo4j
    session = Connection(uri=neo4j_server.uri, user=neo4j_server.user, database=neo4j_server.database,
                         managed=False, password=neo4j_server.password)
    n_rows = len(_rows()) + len(_edges())
    assert bulk.choose_method(session, 10**9) == ("bolt", "external Neo4j")  # never imported into
    with pytest.raises(UsageError, match="managed"):
        bulk.choose_method(session, 10, "bulk")
    by_bolt = bulk.load_graph(session, _rows(), _edges())
    assert by_bolt.method == "bolt"
    bolt_graph = _whole_graph(clean_graph)

    # neo4j-admin database import full, into the private managed Neo4j (started by the import)
    conn = Connection(uri=f"bolt://127.0.0.1:{config.bolt_port()}", user=None, database=config.DEFAULT_DATABASE,
                      managed=True)
    by_import = bulk.bulk_load(conn, _rows(), iter(_edges()), home=private_home)
    assert local_neo4j.status().running and bulk.managed_home_of(conn) == private_home.resolve()
    assert by_import.method == "bulk" and by_import.fixups >= 1  # [] cannot travel in a CSV cell
    bulk_graph = _whole_graph(conn.driver())
    assert bulk_graph[0] == bolt_graph[0]
    assert bulk_graph[1] == bolt_graph[1]
    assert len(bolt_graph[0]) > 30 and any(k[0] == "ALLOWS_DERIVATIVE_UNDER" for k in bolt_graph[1])
    schema = existing_schema(conn.driver(), conn.database)
    assert set(CONSTRAINT_NAMES) <= schema["constraints"] and set(INDEX_NAMES) <= schema["indexes"]

    # the automatic choice on the managed Neo4j: increments (a non-empty database) use Bolt
    assert bulk.choose_method(conn, 10**9) == ("bolt", "database not empty (increment)")
    with pytest.raises(UsageError, match="not empty"):
        bulk.choose_method(conn, 10, "bulk")
    more = bulk.load_graph(conn, [{"id": "org5/new", "props": {"license": "mit"}}],
                           [Edge("org5/new", "org1/ft", "finetune", "recovered", 0.7, 0.6, "y")], min_rows=1)
    assert more.method == "bolt"
    rows, _, _ = conn.driver().execute_query("MATCH (:Model {id: 'org5/new'})-[:DERIVED_FROM]->(p) RETURN p.id AS p")
    assert [r["p"] for r in rows] == ["org1/ft"]
    # ... and an empty one takes the importer from the threshold on
    conn.driver().execute_query("MATCH (n) DETACH DELETE n")
    assert bulk.choose_method(conn, n_rows - 1, min_rows=n_rows)[0] == "bolt"
    assert bulk.choose_method(conn, n_rows, min_rows=n_rows)[0] == "bulk"
    conn.close()


def test_bulk_csv_writers_read_a_polars_backed_source_once_and_do_not_hang(tmp_path: Path) -> None:
    """The packed store reads parquet through polars, whose thread pool does not survive a fork:
    the forked CSV writers must work from pass 1's spool, never call back into the row source."""
    import threading

    import polars as pl

    from lineage_index.schema import bulk

    table = tmp_path / "rows.parquet"
    pl.DataFrame({"id": [f"org{i % 7}/m{i}" for i in range(3000)], "n": list(range(3000))}).write_parquet(table)
    calls = []

    def rows():
        calls.append(1)
        frame = pl.read_parquet(table)  # polars' thread pool is busy in the parent before the fork
        for model_id, n in frame.iter_rows():
            yield {"id": model_id, "props": {"n": n, "license": "mit" if n % 2 else None}}

    edges = [Edge(f"org{i % 7}/m{i}", f"org{(i - 1) % 7}/m{i - 1}", "finetune", "recovered", 0.9, 0.5, "")
             for i in range(1, 3000)]
    done: dict[str, object] = {}

    def run() -> None:
        done["files"] = bulk.write_import_files(rows, edges, tmp_path / "csv", writers=2)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the forked CSV writers hung"
    files = done["files"]
    assert files.model_rows == 3000 and files.edge_rows == 2999
    assert len(calls) == 1  # pass 1 read the source once; the writers read the spool
    written = sum(len(p.read_text().splitlines()) for p in (tmp_path / "csv").glob("models*.csv")
                  if "header" not in p.name)
    assert written == 3000
    assert not (tmp_path / "csv" / ".spool").exists()
