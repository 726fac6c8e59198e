"""Which Neo4j every command talks to, and how to open a driver to it.

``resolve()`` picks, per setting, an explicit argument, else the environment (NEO4J_URI,
NEO4J_USER, NEO4J_PASSWORD, NEO4J_DATABASE), else the managed local Neo4j (started on demand),
checks that the server answers, and returns a ``Connection``. The password is kept out of
``repr``, ``str`` and every message. This module must not write graph data nor manage the
server's lifecycle beyond asking ``local_neo4j.start()`` for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from neo4j import Driver, GraphDatabase
from neo4j.exceptions import AuthError, Neo4jError, ServiceUnavailable, SessionExpired

from lineage_index import config
from lineage_index.errors import GraphError, Neo4jUnavailableError, redact

CONNECT_TIMEOUT_S = 10.0


@dataclass
class Connection:
    """A resolved Neo4j endpoint. Use ``driver()``, or ``with conn as driver: ...``."""

    uri: str
    user: str | None
    database: str
    managed: bool
    password: str | None = field(default=None, repr=False, compare=False)
    _driver: Driver | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def auth(self) -> tuple[str, str] | None:
        """Basic auth for the driver; None when no user is set (auth-disabled servers)."""
        if self.user is None:
            return None
        return (self.user, self.password or "")

    def driver(self, **kwargs: Any) -> Driver:
        """The driver of this connection, created on first use (closed by ``close()``)."""
        if self._driver is None:
            kwargs.setdefault("connection_timeout", CONNECT_TIMEOUT_S)
            # server notifications ("property key does not exist" on an empty graph, ...) are for
            # query authors, not for users of the tool: none are requested
            kwargs.setdefault("notifications_min_severity", "OFF")
            self._driver = GraphDatabase.driver(self.uri, auth=self.auth, **kwargs)
        return self._driver

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()
            self._driver = None

    def describe(self) -> str:
        """One line for logs and the CLI: where, as whom, which database (never the password)."""
        who = f" as {self.user}" if self.user else ""
        kind = "managed local Neo4j" if self.managed else "Neo4j"
        return f"{kind} at {redact(self.uri)}{who}, database {self.database}"

    def __str__(self) -> str:
        return self.describe()

    def __enter__(self) -> Driver:
        return self.driver()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _first(*values: str | None) -> str | None:
    for value in values:
        if value:
            return value
    return None


def verify(conn: Connection) -> None:
    """Raise Neo4jUnavailableError / GraphError unless ``conn`` answers a query."""
    hint = (
        "Set NEO4J_URI (and NEO4J_USER / NEO4J_PASSWORD) to a running Neo4j, or unset NEO4J_URI "
        "to use the managed local Neo4j (`lineage-index neo4j start`)."
        if not conn.managed
        else "See `lineage-index neo4j status` and its log."
    )
    try:
        # An auto-commit query: fails at once (execute_query would retry for 30 s).
        with conn.driver().session(database=conn.database) as session:
            session.run("RETURN 1").consume()
    except AuthError as exc:
        conn.close()
        raise GraphError(
            f"Neo4j at {conn.uri} refused the credentials of user {conn.user!r}; "
            "check NEO4J_USER and NEO4J_PASSWORD."
        ) from exc
    except (ServiceUnavailable, SessionExpired, OSError) as exc:
        conn.close()
        raise Neo4jUnavailableError(f"No Neo4j answers at {conn.uri}. {hint}") from exc
    except Neo4jError as exc:
        conn.close()
        raise Neo4jUnavailableError(
            f"Neo4j at {conn.uri} answered but cannot serve database {conn.database!r} "
            f"({exc.code}). Set NEO4J_DATABASE to an existing database. {hint}"
        ) from exc
    except ValueError as exc:  # malformed URI
        conn.close()
        raise Neo4jUnavailableError(f"NEO4J_URI {conn.uri!r} is not a Neo4j URI: {exc}") from exc


def resolve(
    uri: str | None = None,
    user: str | None = None,
    password: str | None = None,
    database: str | None = None,
    start_managed: bool = True,
    check: bool = True,
) -> Connection:
    """The Neo4j to use: explicit argument > environment > the managed local Neo4j.

    Without a URI (argument or NEO4J_URI) the managed local Neo4j is used: started when
    ``start_managed`` (may build it first), else it must already run. It runs with auth
    off, so no credentials are sent to it. ``check`` verifies that the server answers.
    """
    env = os.environ
    database = _first(database, env.get(config.ENV_NEO4J_DATABASE)) or config.DEFAULT_DATABASE
    uri = _first(uri, env.get(config.ENV_NEO4J_URI))
    if uri:
        user = _first(user, env.get(config.ENV_NEO4J_USER))
        password = _first(password, env.get(config.ENV_NEO4J_PASSWORD))
        if password and not user:
            user = "neo4j"
        conn = Connection(uri=uri, user=user, database=database, managed=False, password=password)
    else:
        from lineage_index.schema import local_neo4j

        if start_managed:
            st = local_neo4j.start()
        else:
            st = local_neo4j.status()
            if not st.running:
                raise Neo4jUnavailableError(
                    "The managed local Neo4j is not running and NEO4J_URI is not set. Start it "
                    "with `lineage-index neo4j start`, or set NEO4J_URI to a running Neo4j."
                )
        conn = Connection(uri=st.bolt_uri, user=None, database=database, managed=True)
    if check:
        verify(conn)
    return conn
