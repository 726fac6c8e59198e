"""Load, list and run the shipped Cypher queries (``lineage_index/queries/*.cypher``).

Each ``.cypher`` file is one read-only query with a header of ``//`` comment lines: the first
says ``<name>: <what it answers>``, ``// params: $a, $b`` (or ``none``) names its parameters and
``// param $a (type[ = default]): doc`` describes each one (types: string, integer, float,
boolean; a default makes it optional; ``// browser:`` lines show the Neo4j Browser ``:param``
to set). The runner only ever sends these fixed texts: user input travels as driver
parameters, never into the Cypher string, and a query name is looked up in the shipped set,
never used as a path. Queries run in read transactions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from neo4j import Driver, ManagedTransaction
from neo4j.graph import Node, Path, Relationship

from lineage_index import config
from lineage_index.errors import UsageError

_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "float": (int, float),
    "boolean": bool,
}
_PARAM_LINE = re.compile(r"^//\s*param\s+\$(\w+)\s+\((\w+)(?:\s*=\s*(.+?))?\):\s*(.*)$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


@dataclass(frozen=True)
class Param:
    """One declared parameter of a shipped query."""

    name: str
    type: str  # string | integer | float | boolean
    doc: str
    required: bool = True
    default: Any = None


@dataclass(frozen=True)
class NamedQuery:
    """A shipped query: its name, header text, declared parameters and Cypher text."""

    name: str
    summary: str
    description: str
    params: tuple[Param, ...]
    browser: tuple[str, ...]
    text: str

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[dict[str, Any]]


def _parse(name: str, text: str) -> NamedQuery:
    header: list[str] = []
    for line in text.splitlines():
        if not line.startswith("//"):
            break
        header.append(line)
    if not header or not header[0].startswith(f"// {name}:"):
        raise ValueError(f"{name}.cypher: the first line must be '// {name}: <summary>'")
    summary = header[0].split(":", 1)[1].strip()
    description: list[str] = []
    params: list[Param] = []
    browser: list[str] = []
    listed: list[str] | None = None
    for line in header[1:]:
        body = line[2:].strip()
        if body.startswith("params:"):
            value = body.split(":", 1)[1].strip()
            listed = [] if value == "none" else [v.strip().lstrip("$") for v in value.split(",")]
        elif body.startswith("browser:"):
            browser.append(body.split(":", 1)[1].strip())
        elif m := _PARAM_LINE.match(line):
            pname, ptype, default, doc = m.groups()
            if ptype not in _TYPES:
                raise ValueError(f"{name}.cypher: ${pname} has unknown type {ptype!r}")
            if default is None:
                params.append(Param(pname, ptype, doc))
            else:
                params.append(Param(pname, ptype, doc, required=False, default=json.loads(default)))
        else:
            description.append(body)
    if listed is None:
        raise ValueError(f"{name}.cypher: the header needs a '// params:' line")
    if listed != [p.name for p in params]:
        raise ValueError(f"{name}.cypher: '// params:' does not match the '// param' lines")
    return NamedQuery(
        name=name,
        summary=summary,
        description=" ".join(description),
        params=tuple(params),
        browser=tuple(browser),
        text=text,
    )


@lru_cache(maxsize=1)
def _load_all() -> dict[str, NamedQuery]:
    folder = resources.files("lineage_index.queries")
    out: dict[str, NamedQuery] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".cypher"):
            name = entry.name[: -len(".cypher")]
            out[name] = _parse(name, entry.read_text(encoding="utf-8"))
    return out


def list_queries() -> list[NamedQuery]:
    """Every shipped query, sorted by name."""
    return list(_load_all().values())


def get_query(name: str) -> NamedQuery:
    """The shipped query called ``name``; UsageError for anything else."""
    queries = _load_all()
    if not isinstance(name, str) or not _NAME.match(name) or name not in queries:
        raise UsageError(f"unknown query {name!r}; known: {', '.join(queries)}")
    return queries[name]


def _coerce(query: NamedQuery, param: Param, raw: str) -> Any:
    where = f"query {query.name}: --param {param.name}"
    if not param.required and param.default is None and raw == "null":
        return None
    if param.type == "string":
        return raw
    if param.type == "boolean":
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise UsageError(f"{where} must be true or false, got {raw!r}")
    try:
        return int(raw) if param.type == "integer" else float(raw)
    except ValueError as exc:
        raise UsageError(f"{where} must be {param.type}, got {raw!r}") from exc


def parse_params(name: str, pairs: Sequence[str]) -> dict[str, Any]:
    """Turn CLI ``key=value`` strings into typed parameters of query ``name``."""
    query = get_query(name)
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().lstrip("$")
        if not sep or not key:
            raise UsageError(f"--param takes key=value, got {pair!r}")
        param = query.param(key)
        if param is None:
            raise UsageError(f"query {name} has no parameter {key!r}; it takes: {_names(query)}")
        out[key] = _coerce(query, param, raw)
    return out


def _names(query: NamedQuery) -> str:
    return ", ".join(f"${p.name}" for p in query.params) or "no parameters"


def bind(name: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check ``params`` against the declared ones; fill defaults. Returns the driver params."""
    query = get_query(name)
    given = dict(params or {})
    unknown = sorted(set(given) - {p.name for p in query.params})
    if unknown:
        raise UsageError(f"query {name} has no parameter(s) {unknown}; it takes: {_names(query)}")
    bound: dict[str, Any] = {}
    for p in query.params:
        if p.name not in given:
            if p.required:
                raise UsageError(f"query {name} needs --param {p.name}=... ({p.doc})")
            bound[p.name] = p.default
            continue
        value = given[p.name]
        ok = value is None and not p.required
        ok = ok or (
            isinstance(value, _TYPES[p.type]) and (p.type == "boolean") == isinstance(value, bool)
        )
        if not ok:
            raise UsageError(
                f"query {name}: ${p.name} must be {p.type}, got {type(value).__name__}"
            )
        bound[p.name] = value
    return bound


def _plain(value: Any) -> Any:
    """Driver values as plain Python (nodes and relationships as their properties)."""
    if isinstance(value, Node):
        return {"labels": sorted(value.labels), **dict(value)}
    if isinstance(value, Relationship):
        return {"type": value.type, **dict(value)}
    if isinstance(value, Path):
        return [n.get("id") for n in value.nodes]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "iso_format"):  # neo4j.time types
        return value.iso_format()
    return value


GRAPH_PREFIX = "graph_"  # result columns for Browser's picture only (paths, relationships)


def run_query(
    driver: Driver,
    name: str,
    params: Mapping[str, Any] | None = None,
    database: str | None = None,
) -> QueryResult:
    """Run shipped query ``name`` with ``params`` in a read transaction; rows as dicts."""
    query = get_query(name)
    bound = bind(name, params)

    def work(tx: ManagedTransaction) -> QueryResult:
        result = tx.run(query.text, bound)
        # columns named graph_* hold paths or relationships for Neo4j Browser to draw
        columns = [k for k in result.keys() if not k.startswith(GRAPH_PREFIX)]
        rows = [{k: _plain(v) for k, v in record.items() if not k.startswith(GRAPH_PREFIX)} for record in result]
        return QueryResult(columns, rows)

    with driver.session(database=database or config.DEFAULT_DATABASE) as session:
        return session.execute_read(work)


def browser_guide_html() -> str:
    """A Neo4j Browser guide (``:play <url>``) with one slide per shipped query.

    Each slide shows what the query answers, its parameters, a runnable ``:param`` line and
    the query itself (click a block to put it in the editor). The shipped
    ``browser/guide.html`` is this text.
    """
    from html import escape

    slides = [
        '<slide class="row-fluid"><div class="col-sm-12"><h3>lineage-index queries</h3>'
        '<p class="lead">Model lineage recovered from the weights: provenance, families, '
        "licence conflicts and warnings, undeclared and contradicted lineage.</p>"
        "<p>Run <code>lineage-index report licenses</code> (or <code>licenses.refresh()</code>) "
        "once after ingesting, so effective licences and the licence catalogue are in the graph. "
        "Set parameters with the <code>:param</code> block of each slide, then run the query.</p>"
        "</div></slide>"
    ]
    for q in list_queries():
        params = "".join(
            f"<li><code>${escape(p.name)}</code> ({escape(p.type)}"
            + ("" if p.required else f", default <code>{escape(json.dumps(p.default))}</code>")
            + f"): {escape(p.doc)}</li>"
            for p in q.params
        )
        blocks = "".join(
            f'<pre class="pre-scrollable code runnable">{escape(b)}</pre>' for b in q.browser
        )
        slides.append(
            f'<slide class="row-fluid"><div class="col-sm-3"><h3>{escape(q.name)}</h3>'
            f'<p class="lead">{escape(q.summary)}</p></div><div class="col-sm-9">'
            f"<p>{escape(q.description)}</p>"
            + (f"<ul>{params}</ul>" if params else "<p>No parameters.</p>")
            + blocks
            + f'<pre class="pre-scrollable code runnable">{escape(q.text.strip())}</pre>'
            + "</div></slide>"
        )
    body = "\n".join(slides)
    return (
        '<article class="guide">\n<carousel class="deck container-fluid">\n'
        f"{body}\n</carousel>\n</article>\n"
    )
