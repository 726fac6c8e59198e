"""Benchmark: write rate of DERIVED_FROM edges through GraphWriter (prints figures).

Writes a random forest of N models and N-1 ``DERIVED_FROM`` edges (ids under the org
``bench-lineage-index``) to the resolved Neo4j (NEO4J_URI, else the managed local Neo4j),
then writes the same edges again (the idempotent re-write path), prints edges/s for each
pass, checks the counts did not change, and deletes its own nodes. It must not touch nodes
outside its org. Goal on a 2-core machine: >= 20k edges/s for the first edge pass.

    python bench/bench_write_rate.py [--edges 100000] [--batch 5000]

The bench deletes only its own nodes, but concurrent writers (a test run's clean_graph wipes
the whole graph) disturb it: for clean figures use a private managed server, e.g.
LINEAGE_INDEX_NEO4J_HOME=/tmp/bench-neo4j LINEAGE_INDEX_BOLT_PORT=17687
LINEAGE_INDEX_HTTP_PORT=17474. A warm JVM (a second run) gives the representative figure.
"""

from __future__ import annotations

import argparse
import random
import time

from neo4j import Driver

from lineage_index import config
from lineage_index.records import RELATIONS, Edge
from lineage_index.schema.connection import resolve
from lineage_index.schema.graph import ensure_schema
from lineage_index.schema.writer import GraphWriter

ORG = "bench-lineage-index"


def make_forest(n_edges: int, seed: int = 7) -> tuple[list[dict[str, object]], list[Edge]]:
    rng = random.Random(seed)
    ids = [f"{ORG}/m{i:07d}" for i in range(n_edges + 1)]
    models: list[dict[str, object]] = [
        {"id": mid, "props": {"family": f"fam{i % 97}", "license": "apache-2.0"}}
        for i, mid in enumerate(ids)
    ]
    edges = [
        Edge(
            child=ids[i],
            parent=ids[rng.randrange(max(0, i - 1000), i)],
            relation=RELATIONS[i % 6],
            source="recovered",
            confidence=round(rng.random(), 4),
            closeness=round(rng.random(), 4),
            evidence="bench",
        )
        for i in range(1, n_edges + 1)
    ]
    return models, edges


def cleanup(driver: Driver, database: str) -> None:
    with driver.session(database=database) as session:
        session.run(
            "MATCH (m:Model) WHERE m.id STARTS WITH $prefix "
            "CALL (m) { DETACH DELETE m } IN TRANSACTIONS OF 10000 ROWS",
            prefix=f"{ORG}/",
        ).consume()
        session.run("MATCH (o:Organization {id: $org}) DETACH DELETE o", org=ORG).consume()


def timed(label: str, count: int, fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    elapsed = time.perf_counter() - start
    print(f"{label:<34} {count:>8} in {elapsed:6.2f} s = {count / elapsed:>9,.0f} /s")
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=config.WRITE_BATCH_ROWS)
    args = parser.parse_args()

    conn = resolve()
    print(f"server: {conn.describe()}; batch {args.batch} rows")
    driver = conn.driver()
    try:
        ensure_schema(driver, conn.database)
        cleanup(driver, conn.database)
        writer = GraphWriter(driver, conn.database, batch_rows=args.batch)
        models, edges = make_forest(args.edges)

        timed("models (MERGE + org + licence)", len(models), lambda: writer.upsert_models(models))
        before = writer.counts()
        rate = timed("edges, first write", len(edges), lambda: writer.upsert_edges(edges))
        after_first = writer.counts()
        timed("edges, same data again", len(edges), lambda: writer.upsert_edges(edges))
        after_second = writer.counts()

        _, fresh = make_forest(args.edges)
        cleanup(driver, conn.database)
        timed("edges into an empty graph (stubs)", len(fresh), lambda: writer.upsert_edges(fresh))
        assert after_first == after_second, (after_first, after_second)
        assert after_first["derived_from"] - before["derived_from"] == len(edges)
        print(f"DERIVED_FROM write rate: {rate:,.0f} edges/s (goal >= 20,000 edges/s)")
    finally:
        cleanup(driver, conn.database)
        conn.close()


if __name__ == "__main__":
    main()
