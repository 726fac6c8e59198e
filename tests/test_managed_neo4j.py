"""The managed local Neo4j and connection resolution, against real processes (no mocks).

The lifecycle test builds and runs its own server in a temporary home on free non-default
ports, so the session-wide server (default home, 7687/7474) is never stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from neo4j import GraphDatabase

from lineage_index import config
from lineage_index.errors import ManagedNeo4jError, Neo4jUnavailableError
from lineage_index.schema import local_neo4j
from lineage_index.schema.connection import Connection, resolve


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tools_or_skip() -> None:
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        message = f"{' and '.join(missing)} not installed"
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the managed Neo4j: {message}", pytrace=False)
        pytest.skip(message)


def test_port_taken_gives_a_clear_error_naming_port_and_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(ManagedNeo4jError) as info:
            local_neo4j.start(bolt_port=port, http_port=_free_port(), home=tmp_path / "home")
    message = str(info.value)
    assert f"port {port}" in message and config.ENV_BOLT_PORT in message
    assert not (tmp_path / "home" / local_neo4j.STATE_FILE).exists()


def test_missing_java_or_maven_says_how_to_install_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(ManagedNeo4jError, match="Java was not found.*apt-get install openjdk"):
        local_neo4j.start(bolt_port=_free_port(), http_port=_free_port(), home=tmp_path / "h")

    java = shutil.which("java", path=os.defpath + ":/usr/lib/jvm/default-java/bin")
    if java is None:
        pytest.skip("no java to test the missing-Maven message with")
    (bin_dir / "java").symlink_to(java)
    with pytest.raises(ManagedNeo4jError, match="Maven .* not found.*apt-get install .*maven"):
        local_neo4j.build(home=tmp_path / "h")


def test_status_detects_a_stale_pid_file_and_stop_removes_it(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state = {"pid": dead.pid, "bolt_port": 17687, "http_port": 17474}
    (tmp_path / local_neo4j.STATE_FILE).write_text(json.dumps(state))

    status = local_neo4j.status(home=tmp_path)
    assert not status.running and status.stale and status.pid is None
    assert status.bolt_uri == "bolt://127.0.0.1:17687"

    after = local_neo4j.stop(home=tmp_path)
    assert not after.running and not after.stale
    assert not (tmp_path / local_neo4j.STATE_FILE).exists()


def test_connection_never_shows_the_password() -> None:
    conn = Connection("bolt://db:7687", "neo4j", "neo4j", managed=False, password="s3cr3t-pw")
    assert "s3cr3t-pw" not in repr(conn) and "s3cr3t-pw" not in str(conn)
    assert conn.auth == ("neo4j", "s3cr3t-pw")


def test_resolve_explicit_uri_with_nothing_listening_raises_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(config.ENV_NEO4J_PASSWORD, "never-shown-pw")
    port = _free_port()
    with pytest.raises(Neo4jUnavailableError) as info:
        resolve(uri=f"bolt://127.0.0.1:{port}", user="neo4j")
    assert f"127.0.0.1:{port}" in str(info.value) and "never-shown-pw" not in str(info.value)


def test_resolve_prefers_the_environment_over_the_managed_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(config.ENV_NEO4J_URI, "bolt://127.0.0.1:1")
    monkeypatch.setenv(config.ENV_NEO4J_DATABASE, "lineage")
    conn = resolve(check=False)
    assert (conn.uri, conn.database, conn.managed) == ("bolt://127.0.0.1:1", "lineage", False)


@pytest.fixture(scope="module")
def built_private_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary managed-Neo4j home, built once per module (Maven reuses ~/.m2)."""
    _tools_or_skip()
    home = tmp_path_factory.mktemp("managed") / "neo4j-home"
    local_neo4j.build(home=home)
    return home


@pytest.fixture()
def private_home(built_private_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the managed Neo4j at the private home and free ports; stop it afterwards."""
    monkeypatch.setenv(config.ENV_NEO4J_HOME, str(built_private_home))
    monkeypatch.setenv(config.ENV_BOLT_PORT, str(_free_port()))
    monkeypatch.setenv(config.ENV_HTTP_PORT, str(_free_port()))
    try:
        yield built_private_home
    finally:
        local_neo4j.stop(home=built_private_home)


@pytest.mark.neo4j
@pytest.mark.managed_neo4j
def test_managed_neo4j_lifecycle_keeps_data_across_restarts(private_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    heard: list[str] = []
    monkeypatch.setattr(config, "NOTICES", [heard.append])
    status = local_neo4j.start()
    assert [h for h in heard if h.startswith("starting the managed Neo4j")]  # a slow step is said
    heard.clear()
    assert status.running and status.home == private_home.resolve()
    assert status.bolt_port == config.bolt_port() != config.DEFAULT_BOLT_PORT
    assert local_neo4j.status().running
    assert local_neo4j.start().pid == status.pid  # idempotent
    assert not heard  # nothing slow happened

    with urllib.request.urlopen(status.browser_url, timeout=30) as page:
        assert page.status == 200
    assert status.browser_url == f"http://127.0.0.1:{status.http_port}/browser/"

    with GraphDatabase.driver(status.bolt_uri, auth=None) as driver:
        driver.execute_query("CREATE (:Model {id: 'lifecycle/kept'})")

    stopped = local_neo4j.stop()
    assert not stopped.running and not stopped.stale
    assert status.pid is not None and not Path(f"/proc/{status.pid}").exists()

    again = local_neo4j.start()
    assert again.running and again.pid != status.pid
    with GraphDatabase.driver(again.bolt_uri, auth=None) as driver:
        records, _, _ = driver.execute_query("MATCH (m:Model) RETURN m.id AS id")
    assert [r["id"] for r in records] == ["lifecycle/kept"]
    assert (private_home / "data" / "databases" / "neo4j").is_dir()


@pytest.mark.neo4j
@pytest.mark.managed_neo4j
def test_failed_start_up_reports_the_log_tail(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(config.ENV_NEO4J_HEAP, "lots")  # the JVM refuses -Xmxlots at once
    with pytest.raises(ManagedNeo4jError, match="exited during start-up") as info:
        local_neo4j.start(wait_s=60)
    assert "Xmxlots" in str(info.value) or "heap" in str(info.value).lower()
    assert not local_neo4j.status().running
