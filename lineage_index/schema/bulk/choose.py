"""Which path loads the graph: Neo4j's bulk importer or the Bolt writer, and why (see ``bulk``).

The bookkeeping of the managed server that the choice needs: is the connection the managed
local Neo4j of this home (the tool can stop it and write its files), is its database empty,
how many rows make the importer pay. Reads the graph (one count) and the server's status file;
writes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from lineage_index import config
from lineage_index.errors import UsageError

METHODS = ("auto", "bulk", "bolt")


def bulk_min_rows() -> int:
    """Rows (model rows + edges) from which an initial load goes through the bulk importer."""
    return config.env_int(config.ENV_BULK_MIN_ROWS, config.DEFAULT_BULK_MIN_ROWS)


def default_method() -> str:
    value = (os.environ.get(config.ENV_GRAPH_LOAD) or "auto").strip().lower()
    if value not in METHODS:
        raise UsageError(f"{config.ENV_GRAPH_LOAD} must be one of {', '.join(METHODS)}, got {value!r}")
    return value


@dataclass
class GraphLoad:
    """What ``load_graph`` did: rows given, seconds per stage, stale edges deleted (Bolt)."""

    method: str
    reason: str
    models: int
    edges: int
    seconds: float
    deleted: int = 0
    stages: dict[str, float] = field(default_factory=dict)
    import_peak_rss_bytes: int = 0
    fixups: int = 0
    csv_bytes: int = 0


# --- the choice ------------------------------------------------------------------------------


def managed_home_of(conn, home: Path | str | None = None) -> Path | None:
    """The managed Neo4j home ``conn`` talks to, or None for any other Neo4j.

    A connection counts as managed only when it says so and the managed server of ``home``
    (default ``config.neo4j_home()``) runs on the connection's Bolt port.
    """
    if conn is None or not getattr(conn, "managed", False):
        return None
    from lineage_index.schema import local_neo4j

    st = local_neo4j.status(home)
    port = urlparse(conn.uri).port
    return st.home if st.running and port == st.bolt_port else None


def database_is_empty(conn) -> bool:
    records, _, _ = conn.driver().execute_query("MATCH (n) RETURN count(n) AS n", database_=conn.database,
                                                routing_="r")
    return int(records[0]["n"]) == 0


def choose_method(conn, rows: int, method: str | None = None, *, home: Path | str | None = None,
                  min_rows: int | None = None) -> tuple[str, str]:
    """(``"bulk"`` | ``"bolt"``, why) for a load of ``rows`` rows into ``conn`` (see module doc)."""
    method = (method or default_method()).lower()
    if method not in METHODS:
        raise UsageError(f"graph load method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "bolt":
        return "bolt", "forced"
    managed = managed_home_of(conn, home)
    if managed is None:
        if method == "bulk":
            raise UsageError("bulk graph load needs the managed local Neo4j (an external Neo4j, "
                             "NEO4J_URI, cannot be stopped and imported into): use the Bolt writer")
        return "bolt", "external Neo4j"
    empty = database_is_empty(conn)
    if method == "bulk":
        if not empty:
            raise UsageError(f"bulk graph load refused: database {conn.database!r} is not empty and the "
                             "importer would overwrite it; use the Bolt writer for increments")
        return "bulk", "forced"
    threshold = bulk_min_rows() if min_rows is None else min_rows
    if not empty:
        return "bolt", "database not empty (increment)"
    if rows < threshold:
        return "bolt", f"{rows:,} rows < {threshold:,}"
    return "bulk", f"empty managed database, {rows:,} rows >= {threshold:,}"
