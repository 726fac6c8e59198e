"""The managed local Neo4j: Neo4j Community 5.26 from Maven Central jars, in its own JVM.

``build()`` assembles the server once into ``<home>/lib`` with Maven (the shipped
``launcher/pom.xml``), ``start()`` writes ``<home>/conf/neo4j.conf`` (127.0.0.1 only, Bolt +
HTTP, no HTTPS, auth off), launches the JVM detached and waits until Bolt answers a query,
``stop()`` sends SIGTERM (SIGKILL after a timeout) and ``status()`` reports what runs, from
the JSON state file ``<home>/state.json``. Data lives in ``<home>/data`` and survives restarts.
``import_full()`` runs Neo4j's own bulk importer (``neo4j-admin database import full``, from the
same jars) on this home: stop, import with overwrite, start again on the same ports, all under
the home's lock; ``schema.bulk`` writes the CSV files it reads.

This module must not touch any Neo4j other than the one it launched (it signals only the pid
in its own state file, after checking that pid is a Neo4j of this home), and must not write
graph data: that is ``writer.py``'s job. See shared docs NEO4J.md for the verified recipe.

Why this module is long: build, start, stop, status and the bulk import all run under the home's
one lock, read and write its one state file and share the checks that a pid is this home's
Neo4j; split apart, each part would need the others' private helpers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lineage_index import config
from lineage_index.errors import ManagedNeo4jError

MAIN_CLASS = "org.neo4j.server.CommunityEntryPoint"
STATE_FILE = "state.json"
LOG_FILE = "console.log"
BUILD_MARKER = ".build-complete"
LOG_TAIL_LINES = 30
INSTALL_HINT = "install it with: apt-get install openjdk-17-jre-headless maven"

# JVM flags from the stock 5.26 neo4j.conf (see NEO4J.md); heap is added in _java_command.
JVM_FLAGS: tuple[str, ...] = tuple(
    """-XX:+UseG1GC -XX:-OmitStackTraceInFastThrow -XX:+UnlockExperimentalVMOptions
    -XX:+TrustFinalNonStaticFields -XX:+DisableExplicitGC -Djdk.nio.maxCachedBufferSize=1024
    -Dio.netty.tryReflectionSetAccessible=true --add-opens=java.base/java.nio=ALL-UNNAMED
    --add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
    --enable-native-access=ALL-UNNAMED -Dlog4j2.disable.jmx=true""".split()
)

# Written at every start (edits are overwritten). Local-only server: no TLS, auth off.
CONF_TEMPLATE = """\
# Written by lineage-index (lineage_index/schema/local_neo4j.py) at every start.
server.default_listen_address=127.0.0.1
server.default_advertised_address=127.0.0.1
server.bolt.enabled=true
server.bolt.listen_address=127.0.0.1:{bolt}
server.bolt.advertised_address=127.0.0.1:{bolt}
server.http.enabled=true
server.http.listen_address=127.0.0.1:{http}
server.http.advertised_address=127.0.0.1:{http}
server.https.enabled=false
dbms.security.auth_enabled=false
server.directories.data={home}/data
server.directories.logs={home}/logs
server.memory.pagecache.size={pagecache}
dbms.memory.transaction.total.max=512m
dbms.usage_report.enabled=false
"""

# Popen objects of servers launched by this process, kept so they are reaped (no zombies).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class Neo4jStatus:
    """What the managed Neo4j of one home is doing. ``stale``: a state file whose pid is gone."""

    running: bool
    pid: int | None
    bolt_port: int
    http_port: int
    home: Path
    data_dir: Path
    log_file: Path
    built: bool
    stale: bool = False
    log_tail: tuple[str, ...] = ()

    @property
    def bolt_uri(self) -> str:
        return f"bolt://127.0.0.1:{self.bolt_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def browser_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/browser/"


# --- paths and small helpers --------------------------------------------------------------


def _home(home: Path | str | None) -> Path:
    return Path(home).expanduser().resolve() if home is not None else config.neo4j_home().resolve()


def _lib(home: Path) -> Path:
    return home / "lib"


def _versions() -> str:
    return f"neo4j={config.NEO4J_VERSION} browser={config.NEO4J_BROWSER_VERSION}"


def is_built(home: Path | str | None = None) -> bool:
    """True when ``<home>/lib`` holds a complete build of the configured Neo4j version."""
    marker = _lib(_home(home)) / BUILD_MARKER
    return marker.is_file() and marker.read_text().strip() == _versions()


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """Serialise build/start/stop of one home across processes (flock on ``<home>/.lock``)."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> tuple[str, ...]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ()
    return tuple(text.splitlines()[-lines:])


def _format_tail(status_or_log: Path) -> str:
    tail = _tail(status_or_log)
    if not tail:
        return f"(the log {status_or_log} is empty)"
    return f"last {len(tail)} lines of {status_or_log}:\n" + "\n".join(tail)


def _read_state(home: Path) -> dict[str, object] | None:
    try:
        value = json.loads((home / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _is_our_server(pid: int, home: Path) -> bool:
    """True when ``pid`` is alive (not a zombie) and is a Neo4j JVM started for ``home``."""
    child = _CHILDREN.get(pid)
    if child is not None:  # launched by this process: waitpid knows best (and reaps it)
        if child.poll() is None:
            return True
        _CHILDREN.pop(pid, None)
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
        if stat[0] in ("Z", "X") and int(stat[17]) <= 1:  # [17]: num_threads; a zombie
            return False  # leader with threads still exiting is not gone yet
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        if not Path("/proc/self").exists():  # no procfs (not Linux): trust the pid alone
            try:
                os.kill(pid, 0)
                return True
            except OSError:
                return False
        return False
    decoded = [a.decode("utf-8", "replace") for a in args]
    return MAIN_CLASS in decoded and f"--home-dir={home}" in decoded


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_open(port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        java = str(Path(java_home) / "bin" / "java")
    else:
        found = shutil.which("java")
        if not found:
            raise ManagedNeo4jError(
                f"Java was not found on PATH; the managed Neo4j needs Java 17 or 21: {INSTALL_HINT}. "
                "Or point NEO4J_URI at an existing Neo4j."
            )
        java = found
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match:
        major = int(match.group(1))
        major = int(match.group(2) or 0) if major == 1 else major
        if major < 17:
            raise ManagedNeo4jError(
                f"{java} is Java {major}; Neo4j {config.NEO4J_VERSION} needs Java 17 or 21: "
                f"{INSTALL_HINT} (or set JAVA_HOME)."
            )
    return java


def _mvn() -> str:
    found = shutil.which("mvn")
    if not found:
        raise ManagedNeo4jError(
            f"Maven (mvn) was not found on PATH; it builds the managed Neo4j from Maven Central: "
            f"{INSTALL_HINT}. Or point NEO4J_URI at an existing Neo4j."
        )
    return found


# --- build ----------------------------------------------------------------------------------


def build(home: Path | str | None = None, force: bool = False) -> Path:
    """Assemble Neo4j into ``<home>/lib`` from Maven Central (once); returns the lib folder.

    Reuses the local Maven repository (~/.m2), so a rebuild is quick. ``force`` rebuilds.
    """
    home_p = _home(home)
    with _locked(home_p):
        return _build_locked(home_p, force)


def _build_locked(home: Path, force: bool) -> Path:
    lib = _lib(home)
    if not force and is_built(home):
        return lib
    mvn = _mvn()
    _java()
    config.notice(f"building the managed Neo4j {config.NEO4J_VERSION} from Maven Central into {lib} "
                  "(once; about 30 s with a warm Maven cache)")
    launcher = home / "launcher"
    launcher.mkdir(parents=True, exist_ok=True)
    pom = resources.files("lineage_index.schema").joinpath("launcher", "pom.xml")
    (launcher / "pom.xml").write_bytes(pom.read_bytes())
    staging = home / "lib.partial"
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        mvn, "-q", "-B", "-f", str(launcher / "pom.xml"),
        f"-Dneo4j.version={config.NEO4J_VERSION}",
        f"-Dneo4j.browser.version={config.NEO4J_BROWSER_VERSION}",
        "dependency:copy-dependencies", "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]  # fmt: skip
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired as exc:
        raise ManagedNeo4jError("Maven did not finish building Neo4j within 30 minutes") from exc
    if out.returncode != 0 or not any(staging.glob("neo4j-*.jar")):
        tail = "\n".join((out.stdout + out.stderr).splitlines()[-LOG_TAIL_LINES:])
        raise ManagedNeo4jError(
            f"building Neo4j {config.NEO4J_VERSION} with Maven failed (exit {out.returncode}); "
            f"Maven Central must be reachable (or the jars in ~/.m2). Maven said:\n{tail}"
        )
    shutil.rmtree(lib, ignore_errors=True)
    staging.rename(lib)
    (lib / BUILD_MARKER).write_text(_versions() + "\n")
    return lib


# --- start / stop / status --------------------------------------------------------------------


def _conf_text(home: Path, bolt_port: int, http_port: int) -> str:
    pagecache = os.environ.get(config.ENV_NEO4J_PAGECACHE) or config.DEFAULT_NEO4J_PAGECACHE
    return CONF_TEMPLATE.format(bolt=bolt_port, http=http_port, home=home, pagecache=pagecache)


def _java_command(java: str, home: Path) -> list[str]:
    heap = os.environ.get(config.ENV_NEO4J_HEAP) or config.DEFAULT_NEO4J_HEAP
    return [
        java,
        *JVM_FLAGS,
        "-Xms512m" if heap == config.DEFAULT_NEO4J_HEAP else f"-Xms{heap}",
        f"-Xmx{heap}",
        "-cp",
        str(_lib(home) / "*"),
        MAIN_CLASS,
        f"--home-dir={home}",
        f"--config-dir={home / 'conf'}",
        "--console-mode",
    ]


def _status_locked(home: Path) -> Neo4jStatus:
    state = _read_state(home)
    log = home / "logs" / LOG_FILE
    bolt = config.bolt_port()
    http = config.http_port()
    pid: int | None = None
    running = stale = False
    if state is not None:
        raw_pid = state.get("pid")
        pid = raw_pid if isinstance(raw_pid, int) else None
        bolt = int(state.get("bolt_port", bolt))  # type: ignore[call-overload]
        http = int(state.get("http_port", http))  # type: ignore[call-overload]
        running = pid is not None and _is_our_server(pid, home)
        stale = not running
    return Neo4jStatus(
        running=running,
        pid=pid if running else None,
        bolt_port=bolt,
        http_port=http,
        home=home,
        data_dir=home / "data",
        log_file=log,
        built=is_built(home),
        stale=stale,
        log_tail=_tail(log),
    )


def status(home: Path | str | None = None) -> Neo4jStatus:
    """Report the managed Neo4j of ``home`` (default config.neo4j_home()); starts nothing."""
    return _status_locked(_home(home))


def _bolt_answers(uri: str) -> bool:
    from neo4j import GraphDatabase
    from neo4j.exceptions import Neo4jError, ServiceUnavailable, SessionExpired

    try:
        with GraphDatabase.driver(uri, auth=None, connection_timeout=3.0) as driver:
            with driver.session(database=config.DEFAULT_DATABASE) as session:
                session.run("RETURN 1").consume()  # auto-commit: no retry loop
        return True
    except (ServiceUnavailable, SessionExpired, Neo4jError, OSError):
        return False


def start(
    bolt_port: int | None = None,
    http_port: int | None = None,
    wait_s: float = config.NEO4J_START_TIMEOUT_S,
    home: Path | str | None = None,
) -> Neo4jStatus:
    """Start the managed Neo4j (building it first if needed) and wait until Bolt answers.

    Idempotent: when this home's server already runs, its status is returned as it is (on
    the ports it was started with). Ports default to $LINEAGE_INDEX_BOLT_PORT /
    $LINEAGE_INDEX_HTTP_PORT, else 7687 / 7474.
    """
    home_p = _home(home)
    with _locked(home_p):
        current = _status_locked(home_p)
        if current.running:
            return current
        bolt = bolt_port if bolt_port is not None else config.bolt_port()
        http = http_port if http_port is not None else config.http_port()
        if bolt == http:
            raise ManagedNeo4jError(f"the Bolt and HTTP ports must differ (both are {bolt})")
        for port, env, flag in ((bolt, config.ENV_BOLT_PORT, "--bolt-port"),
                                (http, config.ENV_HTTP_PORT, "--http-port")):  # fmt: skip
            if not _port_free(port):
                raise ManagedNeo4jError(
                    f"port {port} on 127.0.0.1 is already in use, so the managed Neo4j cannot "
                    f"listen on it. Choose another port with {env}=<port> (or {flag} on "
                    "`lineage-index neo4j start`), stop whatever holds it, or point NEO4J_URI "
                    "at that server if it is a Neo4j."
                )
        java = _java()
        _build_locked(home_p, force=False)
        return _launch_locked(home_p, java, bolt, http, wait_s)


def _launch_locked(home: Path, java: str, bolt: int, http: int, wait_s: float) -> Neo4jStatus:
    for sub in ("conf", "data", "logs"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    (home / "conf" / "neo4j.conf").write_text(_conf_text(home, bolt, http))
    log = home / "logs" / LOG_FILE
    if log.exists():
        log.replace(log.with_name(LOG_FILE + ".1"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEO4J_")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            _java_command(java, home),
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    _CHILDREN[proc.pid] = proc
    state = {
        "pid": proc.pid,
        "bolt_port": bolt,
        "http_port": http,
        "data_dir": str(home / "data"),
        "log_file": str(log),
        "version": config.NEO4J_VERSION,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = home / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(home / STATE_FILE)
    uri = f"bolt://127.0.0.1:{bolt}"
    config.notice(f"starting the managed Neo4j on {uri} (waiting up to {wait_s:.0f} s for it to answer)")
    deadline = time.monotonic() + wait_s
    while True:
        if proc.poll() is not None:
            _CHILDREN.pop(proc.pid, None)
            (home / STATE_FILE).unlink(missing_ok=True)
            raise ManagedNeo4jError(
                f"the managed Neo4j exited during start-up (exit code {proc.returncode}); "
                + _format_tail(log)
            )
        if _port_open(bolt) and _bolt_answers(uri):
            return _status_locked(home)
        if time.monotonic() > deadline:
            _terminate(proc.pid, home, timeout_s=30.0)
            (home / STATE_FILE).unlink(missing_ok=True)
            raise ManagedNeo4jError(
                f"the managed Neo4j did not answer on {uri} within {wait_s:.0f} s and was "
                f"stopped; " + _format_tail(log)
            )
        time.sleep(0.5)


def _wait_gone(pid: int, home: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        child = _CHILDREN.get(pid)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=0.2)
        if not _is_our_server(pid, home):
            return True
        time.sleep(0.2)
    return not _is_our_server(pid, home)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        try:
            os.killpg(pid, sig)  # the JVM leads its own session (start_new_session)
        except PermissionError:
            os.kill(pid, sig)


def _terminate(pid: int, home: Path, timeout_s: float) -> None:
    _signal(pid, signal.SIGTERM)
    if not _wait_gone(pid, home, timeout_s):
        _signal(pid, signal.SIGKILL)
        if not _wait_gone(pid, home, 15.0):
            raise ManagedNeo4jError(f"the managed Neo4j (pid {pid}) did not exit after SIGKILL")
    _CHILDREN.pop(pid, None)


def stop(
    home: Path | str | None = None, timeout_s: float = config.NEO4J_STOP_TIMEOUT_S
) -> Neo4jStatus:
    """Stop the managed Neo4j of ``home``: SIGTERM, then SIGKILL after ``timeout_s``.

    Stopping a server that does not run is not an error (a stale state file is removed).
    """
    home_p = _home(home)
    with _locked(home_p):
        current = _status_locked(home_p)
        if current.running and current.pid is not None:
            _terminate(current.pid, home_p, timeout_s)
        (home_p / STATE_FILE).unlink(missing_ok=True)
        return _status_locked(home_p)


# --- bulk import (neo4j-admin database import full) ------------------------------------------

ADMIN_MAIN_CLASS = "org.neo4j.cli.AdminTool"
IMPORT_LOG_FILE = "import.log"


@dataclass(frozen=True)
class ImportRun:
    """What one ``import_full`` did: the importer's own wall time, peak RSS and its log tail."""

    seconds: float
    stop_s: float
    start_s: float
    peak_rss_bytes: int
    log_file: Path
    log_tail: tuple[str, ...]


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def import_full(
    args: list[str],
    *,
    database: str = config.DEFAULT_DATABASE,
    home: Path | str | None = None,
    heap: str = "1g",
    cwd: Path | str | None = None,
    wait_s: float = config.NEO4J_START_TIMEOUT_S,
) -> ImportRun:
    """``neo4j-admin database import full <args> --overwrite-destination <database>`` on ``home``.

    The server of ``home`` is stopped first when it runs and started again afterwards on the
    ports it ran on (else the configured ports). The whole sequence holds the home's lock, so
    no other process starts or stops this server meanwhile. ``args`` are the importer's options
    (``--nodes=...``, ``--relationships=...``, ...); the database is overwritten, so callers
    must make sure it may be (``schema.bulk`` only imports into an empty database). When the
    importer fails, the half-written database is removed (the server starts with an empty one)
    and ``ManagedNeo4jError`` carries the importer's log tail.
    """
    home_p = _home(home)
    with _locked(home_p):
        java = _java()
        _build_locked(home_p, force=False)
        current = _status_locked(home_p)
        bolt, http = current.bolt_port, current.http_port
        t0 = time.monotonic()
        if current.running and current.pid is not None:
            _terminate(current.pid, home_p, config.NEO4J_STOP_TIMEOUT_S)
            (home_p / STATE_FILE).unlink(missing_ok=True)
        stop_s = time.monotonic() - t0
        for sub in ("conf", "data", "logs"):
            (home_p / sub).mkdir(parents=True, exist_ok=True)
        (home_p / "conf" / "neo4j.conf").write_text(_conf_text(home_p, bolt, http))
        log = home_p / "logs" / IMPORT_LOG_FILE
        cmd = [java, f"-Xmx{heap}", "-cp", str(_lib(home_p) / "*"), ADMIN_MAIN_CLASS,
               "database", "import", "full", *args, "--overwrite-destination=true", database]
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEO4J_")}
        env.update(NEO4J_HOME=str(home_p), NEO4J_CONF=str(home_p / "conf"))
        t1 = time.monotonic()
        peak = 0
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=cwd or home_p, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=env)
            while proc.poll() is None:
                peak = max(peak, _rss_bytes(proc.pid))
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.2)
        seconds = time.monotonic() - t1
        failed = proc.returncode != 0
        if failed:  # the importer leaves a store it calls unusable: the database was to be replaced
            for sub in ("databases", "transactions"):
                shutil.rmtree(home_p / "data" / sub / database, ignore_errors=True)
        t2 = time.monotonic()
        try:
            _launch_locked(home_p, java, bolt, http, wait_s)
        except ManagedNeo4jError:
            if not failed:
                raise
        start_s = time.monotonic() - t2
        if failed:
            raise ManagedNeo4jError(
                f"neo4j-admin database import full failed (exit {proc.returncode}); "
                + _format_tail(log)
            )
        return ImportRun(seconds, stop_s, start_s, peak, log, _tail(log))
