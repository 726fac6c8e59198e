"""Every default and environment variable of lineage-index, in one place.

Other modules read settings only through these functions, so ``--help``, the README and
the code agree. Nothing here performs I/O beyond reading the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE = "LINEAGE_INDEX_CACHE"  # sketch store directory
ENV_NEO4J_HOME = "LINEAGE_INDEX_NEO4J_HOME"  # managed Neo4j home (build + data + logs)
ENV_NEO4J_URI = "NEO4J_URI"
ENV_NEO4J_USER = "NEO4J_USER"
ENV_NEO4J_PASSWORD = "NEO4J_PASSWORD"
ENV_NEO4J_DATABASE = "NEO4J_DATABASE"
ENV_BOLT_PORT = "LINEAGE_INDEX_BOLT_PORT"
ENV_HTTP_PORT = "LINEAGE_INDEX_HTTP_PORT"

DEFAULT_BOLT_PORT = 7687
DEFAULT_HTTP_PORT = 7474
DEFAULT_DATABASE = "neo4j"
NEO4J_VERSION = "5.26.29"
NEO4J_BROWSER_VERSION = "5.24.0"

# Sketch: bump SKETCH_VERSION whenever the sampling plan or decoding changes.
SKETCH_VERSION = 2  # 2: layer prints of every layer (cross-depth lineage)
SKETCH_SEED = 20240611
WRITE_BATCH_ROWS = 5000


def user_cache_root() -> Path:
    """The per-user cache root (XDG_CACHE_HOME or ~/.cache) for lineage-index."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lineage-index"


def sketch_store_dir() -> Path:
    """Sketch store directory: $LINEAGE_INDEX_CACHE, else <user cache>/sketches."""
    value = os.environ.get(ENV_CACHE)
    return Path(value).expanduser() if value else user_cache_root() / "sketches"


def calibration_cache_dir() -> Path:
    """Where the behaviour commands keep calibrations per source: <user cache>/calibration."""
    return user_cache_root() / "calibration"


def neo4j_home() -> Path:
    """Managed Neo4j home: $LINEAGE_INDEX_NEO4J_HOME, else <user cache>/neo4j."""
    value = os.environ.get(ENV_NEO4J_HOME)
    return Path(value).expanduser() if value else user_cache_root() / "neo4j"


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError as exc:  # pragma: no cover - trivial
        from lineage_index.errors import ConfigError

        raise ConfigError(f"{name} must be an integer, got {value!r}") from exc


# --- managed local Neo4j (lineage_index.schema.local_neo4j) --------------------------------
ENV_NEO4J_HEAP = "LINEAGE_INDEX_NEO4J_HEAP"  # JVM -Xmx of the managed Neo4j, e.g. "1g"
ENV_NEO4J_PAGECACHE = "LINEAGE_INDEX_NEO4J_PAGECACHE"  # server.memory.pagecache.size
DEFAULT_NEO4J_HEAP = "1g"
DEFAULT_NEO4J_PAGECACHE = "256m"
NEO4J_START_TIMEOUT_S = 180.0  # wait for Bolt to answer after launching the JVM
NEO4J_STOP_TIMEOUT_S = 60.0  # wait after SIGTERM before SIGKILL


def bolt_port() -> int:
    """Bolt port of the managed Neo4j: $LINEAGE_INDEX_BOLT_PORT, else 7687."""
    return env_int(ENV_BOLT_PORT, DEFAULT_BOLT_PORT)


def http_port() -> int:
    """HTTP (Browser) port of the managed Neo4j: $LINEAGE_INDEX_HTTP_PORT, else 7474."""
    return env_int(ENV_HTTP_PORT, DEFAULT_HTTP_PORT)


# --- graph load at scale (lineage_index.schema.bulk) ---------------------------------------
ENV_GRAPH_LOAD = "LINEAGE_INDEX_GRAPH_LOAD"  # auto | bulk | bolt
ENV_BULK_MIN_ROWS = "LINEAGE_INDEX_BULK_MIN_ROWS"  # initial loads from this many rows: bulk import
ENV_IMPORT_HEAP = "LINEAGE_INDEX_IMPORT_HEAP"  # JVM -Xmx of neo4j-admin database import
ENV_IMPORT_OFFHEAP = "LINEAGE_INDEX_IMPORT_OFFHEAP"  # its --max-off-heap-memory
ENV_IMPORT_WRITERS = "LINEAGE_INDEX_IMPORT_WRITERS"  # processes writing the import's Model rows
DEFAULT_BULK_MIN_ROWS = 200_000
DEFAULT_IMPORT_HEAP = "1g"
DEFAULT_IMPORT_OFFHEAP = "2g"

# --- Ray fan-out of the sketch reads (lineage_index.indexer.sketch.fanout) --------------------------
FANOUT_LOCAL_CPUS = max(1, min(os.cpu_count() or 1, 4))  # a local Ray started on demand
FANOUT_OBJECT_STORE_BYTES = 200 * 1024 * 1024  # small: the machine's RAM is shared
FANOUT_MAX_PER_HOST = 8  # tasks reading from one Hub host at once
FANOUT_MAX_IN_FLIGHT = 64  # tasks submitted and not yet collected
FANOUT_MAX_RETRIES = 3  # re-runs of a task whose worker died (Ray)
FANOUT_APP_RETRIES = 3  # re-tries of a transient read error inside a task


ENV_FAULT = "LINEAGE_INDEX_FAULT"  # tests only: a named point where the process kills itself


def fault_point(name: str) -> None:
    """Kill this process (SIGKILL, as ``kill -9``) when ``LINEAGE_INDEX_FAULT`` names ``name``.

    The crash-safety tests place a kill at the worst moments of a run (between a model's node
    and its edges, ...) instead of relying on timing; unset, this does nothing.
    """
    if os.environ.get(ENV_FAULT) == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def stderr_console():  # type: ignore[no-untyped-def]
    """The rich console progress bars and status lines go to: stderr, so that stdout carries
    results only (``sim build ... | jq`` works)."""
    from rich.console import Console

    return Console(stderr=True)


NOTICES: list = []  # callables told about long waits (Hub retries...); the CLI adds a stderr printer


def notice(text: str) -> None:
    """Tell whoever listens (``NOTICES``) about something slow the user would otherwise not see."""
    for listener in NOTICES:
        listener(text)
