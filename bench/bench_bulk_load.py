"""Benchmark: the initial graph load of a large index through neo4j-admin's bulk importer.

Generates a synthetic hub index of N models (the properties ``api.model_props`` writes:
sha, author, licence, declared bases, family, dtypes, root, ...; families of power-law sizes,
each a random tree, so N - families ``DERIVED_FROM`` edges with the writer's properties),
empties the managed Neo4j's database, and loads it with ``schema.bulk.load_graph`` (automatic
choice: bulk for an empty managed database past the threshold). Prints, per N, the time of each
stage (CSV writing, server stop, import, server start, schema, Bolt fixups), the total, the
peak memory of this process and of the importer, and checks the node and edge counts.
``--bolt N`` also times the batched Bolt writer on N models (to place the bulk threshold).

    python bench/bench_bulk_load.py --models 100000 --models 2000000 [--bolt 20000]

It overwrites the database of the managed Neo4j it uses: it runs on its own home
(``$LINEAGE_INDEX_NEO4J_HOME``, default ~/.cache/lineage-index/bench-bulk-neo4j, ports
``$LINEAGE_INDEX_BOLT_PORT``/``$LINEAGE_INDEX_HTTP_PORT``, default 17697/17487), never the
default one. Goal on this 2-core machine: 2M models with their edges in under 10 minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lineage_index import config
from lineage_index.records import Edge

LICENSES = ["apache-2.0", "mit", "llama3.1", "other", "cc-by-nc-4.0", "gemma", None, None, None]
RELATIONS = ["finetune", "finetune", "finetune", "quantized", "adapter", "merge", "copy"]
PIPELINES = ["text-generation", "text-classification", "feature-extraction", None]


class SyntheticHub:
    """N models in families of power-law sizes; model i's parent is an earlier family member."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        sizes: list[int] = []
        left = n
        while left > 0:
            s = int(min(left, max(1, rng.pareto(1.2) * 3)))
            sizes.append(s)
            left -= s
        self.n = n
        self.family = np.repeat(np.arange(len(sizes)), sizes)
        starts = np.cumsum([0] + sizes[:-1])
        self.start = np.repeat(starts, sizes)
        idx = np.arange(n)
        offset = idx - self.start
        pick = (rng.random(n) * np.maximum(offset, 1)).astype(np.int64)
        self.parent = np.where(offset > 0, self.start + pick, -1)
        self.lic = rng.integers(0, len(LICENSES), n)
        self.rel = rng.integers(0, len(RELATIONS), n)
        self.pipe = rng.integers(0, len(PIPELINES), n)
        self.declares = rng.random(n) < 0.6
        self.conf = rng.uniform(0.5, 1.0, n)
        self.families = len(sizes)

    @staticmethod
    def mid(i: int) -> str:
        return f"org{i % 50_000}/model-{i}"

    def rows(self) -> Iterator[dict]:
        for i in range(self.n):
            p = int(self.parent[i])
            lic = LICENSES[self.lic[i]]
            yield {"id": self.mid(i), "props": {
                "sha": hashlib.sha1(str(i).encode()).hexdigest(),
                "author": f"org{i % 50_000}",
                "created_at": "2025-01-01T00:00:00Z",
                "license": lic,
                "license_name": "llama3" if lic == "other" else None,
                "declared_base_models": [self.mid(p)] if p >= 0 and self.declares[i] else None,
                "base_model_relation": RELATIONS[self.rel[i]] if p >= 0 else None,
                "pipeline_tag": PIPELINES[self.pipe[i]],
                "library_name": "transformers",
                "model_type": "llama",
                "architectures": ["LlamaForCausalLM"],
                "gated": False,
                "private": False,
                "weight_format": "safetensors",
                "source": "hub",
                "is_adapter": RELATIONS[self.rel[i]] == "adapter",
                "family": f"fam{self.family[i]}",
                "kind": "full",
                "quant": None,
                "dtypes": ["BF16"],
                "sketch_bytes_read": 250_000 + i % 1000,
                "root": self.mid(int(self.start[i])),
                "status": "indexed",
            }}

    def edges(self) -> Iterator[Edge]:
        for i in range(self.n):
            p = int(self.parent[i])
            if p >= 0:
                yield Edge(self.mid(i), self.mid(p), RELATIONS[self.rel[i]], "recovered", float(self.conf[i]),
                           float(self.conf[i]) - 0.1, "bench: centred cosine of the sampled rows")

    def n_edges(self) -> int:
        return int((self.parent >= 0).sum())


def _reset(home: Path) -> None:
    """Stop the bench server, drop its user database, start it again (an empty database)."""
    from lineage_index.schema import local_neo4j

    local_neo4j.stop(home=home)
    for sub in ("databases", "transactions"):
        shutil.rmtree(home / "data" / sub / config.DEFAULT_DATABASE, ignore_errors=True)
    local_neo4j.start(home=home)


def _server_rss(home: Path) -> int:
    from lineage_index.schema import local_neo4j

    st = local_neo4j.status(home=home)
    if not st.pid:
        return 0
    out = subprocess.run(["ps", "-o", "rss=", "-p", str(st.pid)], capture_output=True, text=True)
    return int(out.stdout.strip() or 0) * 1024


def _conn(home: Path):
    from lineage_index.schema import local_neo4j
    from lineage_index.schema.connection import Connection

    st = local_neo4j.status(home=home)
    return Connection(uri=st.bolt_uri, user=None, database=config.DEFAULT_DATABASE, managed=True)


def run(n: int, home: Path, method: str | None, min_rows: int | None) -> None:
    from lineage_index.schema.bulk import load_graph

    hub = SyntheticHub(n)
    _reset(home)
    conn = _conn(home)
    t0 = time.monotonic()
    result = load_graph(conn, hub.rows, hub.edges, method=method, home=home, min_rows=min_rows)
    wall = time.monotonic() - t0
    driver = conn.driver()
    nodes = driver.execute_query("MATCH (m:Model) RETURN count(m) AS n")[0][0]["n"]
    rels = driver.execute_query("MATCH ()-[r:DERIVED_FROM]->() RETURN count(r) AS n")[0][0]["n"]
    peak_py = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # CSV writers, importer
    stages = "  ".join(f"{k} {v:.1f}s" for k, v in result.stages.items())
    print(f"N={n:,} families={hub.families:,} edges={hub.n_edges():,}  method={result.method} ({result.reason})")
    print(f"  total {wall:.1f}s  [{stages}]")
    print(f"  peak RSS: this process {peak_py / 2**30:.2f} GiB, largest child {peak_children / 2**30:.2f} GiB, "
          f"importer {result.import_peak_rss_bytes / 2**30:.2f} GiB,"
          f" server now {_server_rss(home) / 2**30:.2f} GiB;  CSV {result.csv_bytes / 2**20:.0f} MiB,"
          f" fixups {result.fixups:,}")
    ok = nodes == n and rels == hub.n_edges()
    print(f"  graph: {nodes:,} Model nodes, {rels:,} DERIVED_FROM  {'OK' if ok else 'MISMATCH'}  "
          f"({(n + hub.n_edges()) / wall:,.0f} rows/s)")
    conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, action="append", help="N (repeat); default 100000 and 2000000")
    ap.add_argument("--bolt", type=int, action="append", default=[], help="also time the Bolt writer at N")
    ap.add_argument("--min-rows", type=int, default=None, help="bulk threshold (default: the configured one)")
    ap.add_argument("--home", type=Path, default=None)
    args = ap.parse_args()
    home = args.home or Path(os.environ.get(config.ENV_NEO4J_HOME)
                             or config.user_cache_root() / "bench-bulk-neo4j")
    os.environ[config.ENV_NEO4J_HOME] = str(home)
    os.environ.setdefault(config.ENV_BOLT_PORT, "17697")
    os.environ.setdefault(config.ENV_HTTP_PORT, "17487")
    print(f"home {home}  load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}"
          f"  cpus {os.cpu_count()}")
    try:
        for n in args.bolt:
            run(n, home, "bolt", None)
        for n in args.models or [100_000, 2_000_000]:
            run(n, home, None, args.min_rows)
    finally:
        from lineage_index.schema import local_neo4j

        local_neo4j.stop(home=home)
    print(f"load average after {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
