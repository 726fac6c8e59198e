"""Neo4j fixtures for the test suite (and nothing else: other fixtures live in their modules).

``neo4j_server`` picks a real server once per session: NEO4J_URI if set, else a
testcontainers Neo4j (image neo4j:5.26-community) when a Docker daemon answers, else the
managed local Neo4j (started if not running, and left running), else the tests are skipped,
except under CI (env CI set), where a missing Neo4j fails the run. No Neo4j is ever mocked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest
from neo4j import Driver, GraphDatabase

TESTCONTAINERS_IMAGE = "neo4j:5.26-community"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "managed_neo4j: starts and stops its own managed Neo4j in a temporary home and on "
        "non-default ports (never the session-wide server)",
    )


@dataclass(frozen=True)
class Neo4jServer:
    """The server the session's tests talk to (``kind``: env | testcontainers | managed)."""

    uri: str
    database: str
    kind: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def auth(self) -> tuple[str, str] | None:
        return None if self.user is None else (self.user, self.password or "")


def neo4j_unavailable(reason: str) -> NoReturn:
    """Skip, or fail under CI, because no Neo4j can be had."""
    if os.environ.get("CI"):
        pytest.fail(f"CI needs a Neo4j and none is available: {reason}", pytrace=False)
    pytest.skip(f"no Neo4j available: {reason}")


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@pytest.fixture(scope="session")
def neo4j_server() -> Iterator[Neo4jServer]:
    from lineage_index import config
    from lineage_index.errors import GraphError
    from lineage_index.schema.connection import resolve

    if os.environ.get(config.ENV_NEO4J_URI):
        try:
            conn = resolve()
        except GraphError as exc:
            neo4j_unavailable(f"NEO4J_URI is set but: {exc}")
        conn.close()
        yield Neo4jServer(conn.uri, conn.database, "env", conn.user, conn.password)
        return

    if _docker_answers():
        from testcontainers.neo4j import Neo4jContainer

        with Neo4jContainer(TESTCONTAINERS_IMAGE) as container:
            yield Neo4jServer(
                container.get_connection_url(),
                config.DEFAULT_DATABASE,
                "testcontainers",
                container.username,
                container.password,
            )
        return

    # The managed Neo4j: a test instance of its own (home and ports), so that tests, which
    # wipe the graph, never touch the user's lineage graph. An explicit
    # LINEAGE_INDEX_NEO4J_HOME (as CI sets) is used as given.
    from lineage_index.schema import local_neo4j

    home = None
    ports: dict[str, int] = {}
    if not os.environ.get(config.ENV_NEO4J_HOME):
        home = config.user_cache_root() / "test-neo4j"
        ports = {"bolt_port": int(os.environ.get("LINEAGE_INDEX_TEST_BOLT_PORT", "7688")),
                 "http_port": int(os.environ.get("LINEAGE_INDEX_TEST_HTTP_PORT", "7475"))}
    was_running = local_neo4j.status(home=home).running
    try:
        st = local_neo4j.start(home=home, **ports)
        conn = resolve(uri=st.bolt_uri)
    except GraphError as exc:
        neo4j_unavailable(f"the managed local Neo4j could not be started: {exc}")
    conn.close()
    try:
        yield Neo4jServer(conn.uri, conn.database, "managed")
    finally:
        if home is not None and not was_running:
            local_neo4j.stop(home=home)


@pytest.fixture(scope="session")
def neo4j_driver(neo4j_server: Neo4jServer) -> Iterator[Driver]:
    driver = GraphDatabase.driver(neo4j_server.uri, auth=neo4j_server.auth)
    try:
        driver.verify_connectivity()
        yield driver
    finally:
        driver.close()


@pytest.fixture(scope="session")
def neo4j_database(neo4j_server: Neo4jServer) -> str:
    return neo4j_server.database


@pytest.fixture()
def clean_graph(neo4j_driver: Driver, neo4j_database: str) -> Driver:
    """Delete every node and relationship (schema is kept) before the test; returns the driver."""
    with neo4j_driver.session(database=neo4j_database) as session:
        session.run(
            "MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS"
        ).consume()
    return neo4j_driver


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The really trained tiny zoo (14 models, ~25 s), built once per test session."""
    from lineage_index.zoo import build_zoo

    out = tmp_path_factory.mktemp("zoo") / "tiny"
    build_zoo(out, size="tiny", seed=0, progress=False)
    return out
