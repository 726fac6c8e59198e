"""Loading the lineage graph at scale: Neo4j's own bulk importer first, the Bolt writer after.

``load_graph(conn, models, edges)`` writes Model rows (``{"id": ..., "props": {...}}``, as
``GraphWriter.upsert_models`` takes them) and ``Edge``s, and produces exactly the graph the
Bolt path (``GraphWriter`` + ``licenses.refresh``) produces: the same labels (``Model`` and
its licence-colour label, ``Organization``, ``License``), property names and types, the same
``PUBLISHED_BY`` / ``LICENSED_UNDER {effective, source}`` / ``DERIVED_FROM {...}`` /
``ALLOWS_DERIVATIVE_UNDER {code, catalogue_version}`` relationships and ``updated_at`` stamps.

Which path runs (``choose_method``; the choice is automatic, a flag can force either):

* **bulk** when all three hold: the connection is the *managed* local Neo4j of this home (the
  tool can stop it and reach its files), its target database holds no node (an initial load;
  the importer overwrites the database), and the load has at least ``BULK_MIN_ROWS`` rows
  (model rows + edges; ``$LINEAGE_INDEX_BULK_MIN_ROWS``, default 200,000). Below that the
  importer's fixed cost (server stop, JVM start-up, server start, index population: about
  40 s on 2 busy cores) exceeds the Bolt writer's time (about 6k rows/s there).
* **bolt** otherwise: every later increment, any non-empty database, and always an external
  Neo4j (``NEO4J_URI``), which the tool can neither stop nor write files into.
* ``method="bulk"`` forces the importer (refused, with a clear error, on an external or a
  non-empty database: it would erase it); ``method="bolt"`` forces the writer.
  ``$LINEAGE_INDEX_GRAPH_LOAD`` (auto | bulk | bolt) sets the default.

The bulk path writes CSV files in the importer's format into a work folder (header files apart
from the data, a separate data file for rows with line breaks, arrays split on U+001F), runs
``local_neo4j.import_full`` (stop, ``neo4j-admin database import full --overwrite-destination``,
start), then applies ``constraints/*.cypher`` (the importer builds no schema). Licence facts
that ``licenses.refresh`` would write over Bolt (catalogue, effective licences inherited along
the edges, colour labels) are computed here with the same catalogue and ``compute_effective``
and imported with the rest. Values a CSV cell cannot carry (empty lists, list elements holding
the delimiter, a key with a type other than its column's) are set over Bolt afterwards, by id.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlparse

from lineage_index import config
from lineage_index.errors import GraphError, UsageError
from lineage_index.records import BehaviourEvidence, Edge
from lineage_index.schema.writer import _check_props, _now, edge_props, org_of

METHODS = ("auto", "bulk", "bolt")
ARRAY_DELIMITER = "\x1f"  # never in a model id, a licence id or a tag; passed as U+001F
_BAD_KEY_CHARS = frozenset(',:"\n\r' + ARRAY_DELIMITER)
_FIXUP_BATCH = 10_000
_LICENSE_KEYS = ("license", "license_name", "license_source", "license_effective", "license_imputed")

Rows = Iterable[Mapping[str, Any]] | Callable[[], Iterable[Mapping[str, Any]]]
Edges = Iterable[Edge] | Callable[[], Iterable[Edge]]


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


# --- the entry point ---------------------------------------------------------------------------


def _reiterable(items):
    """A zero-argument callable giving a fresh iterator each call (materialises one-shot iterators)."""
    if callable(items):
        return items
    if iter(items) is items:
        items = list(items)
    return lambda: items


def _count(original, factory) -> int:
    if not callable(original):
        try:
            return len(original)
        except TypeError:
            pass
    return sum(1 for _ in factory())


def load_graph(
    conn,
    models: Rows,
    edges: Edges,
    *,
    child_ids: Iterable[str] | None = None,
    method: str | None = None,
    home: Path | str | None = None,
    min_rows: int | None = None,
    workdir: Path | str | None = None,
    keep_files: bool = False,
    n_models: int | None = None,
) -> GraphLoad:
    """Write ``models`` and ``edges`` into ``conn``'s database by bulk import or Bolt (see module doc).

    ``models`` and ``edges`` may be lists or zero-argument callables that return a fresh
    iterable (read twice by the bulk path, so 2M rows need not sit in memory). ``child_ids``:
    models whose DERIVED_FROM edges ``edges`` replace on the Bolt path (default: the model
    rows' ids). ``n_models``: the number of model rows when the caller knows it (spares a
    counting pass over a callable source). Returns a ``GraphLoad`` with the method, its reason
    and stage timings.
    """
    models_f, edges_f = _reiterable(models), _reiterable(edges)
    rows = (n_models if n_models is not None else _count(models, models_f)) + _count(edges, edges_f)
    chosen, reason = choose_method(conn, rows, method, home=home, min_rows=min_rows)
    if chosen == "bulk":
        return bulk_load(conn, models_f, edges_f, home=managed_home_of(conn, home), reason=reason,
                         workdir=workdir, keep_files=keep_files)
    return bolt_load(conn, models_f, edges_f, child_ids=child_ids, reason=reason)


def bolt_load(conn, models, edges, *, child_ids: Iterable[str] | None = None, reason: str = "") -> GraphLoad:
    """The batched Bolt writer: schema, model upserts, edge replacement per child, licence refresh."""
    from lineage_index.queries import licenses
    from lineage_index.schema.graph import ensure_schema
    from lineage_index.schema.writer import GraphWriter

    models_f, edges_f = _reiterable(models), _reiterable(edges)
    t0 = time.monotonic()
    driver = conn.driver()
    ensure_schema(driver, conn.database)
    writer = GraphWriter(driver, conn.database)
    model_rows = list(models_f())
    edge_list = list(edges_f())
    t1 = time.monotonic()
    n_models = writer.upsert_models(model_rows)
    ids = [r["id"] for r in model_rows] if child_ids is None else list(child_ids)
    t2 = time.monotonic()
    deleted, _ = writer.replace_edges_for_children(ids, edge_list)
    t3 = time.monotonic()
    licenses.refresh(driver, conn.database)  # catalogue + inherited licences along the new edges
    t4 = time.monotonic()
    return GraphLoad("bolt", reason, n_models, len(edge_list), t4 - t0, deleted=deleted,
                     stages={"schema": t1 - t0, "models": t2 - t1, "edges": t3 - t2, "licenses": t4 - t3})


# --- CSV cells ---------------------------------------------------------------------------------
#
# Rows go through the C ``csv`` writer with QUOTE_NONNUMERIC: strings are quoted (quotes doubled),
# numbers are not. A missing property must be an *unquoted* empty field (a quoted "" is the empty
# string), so ``None`` is written as ``_NULL``, an int whose text is empty. Booleans travel as
# "true"/"false" (the importer reads True as false), arrays as one string joined by U+001F.


class _Null(int):
    def __str__(self) -> str:
        return ""

    __repr__ = __str__


_NULL = _Null(0)
_TRUE, _FALSE = "true", "false"
_PYTYPE = {"string": str, "boolean": bool, "long": int, "double": float}
_EMPTY_MARKER = "__bulk_empty_lists"  # keys whose value is [] (set server-side after the import)
_LONG_MIN, _LONG_MAX = -(2**63), 2**63
_STR, _BOOL, _LONG, _DOUBLE, _STRS, _LIST = range(6)  # column codes of the row loop
_CODE = {"string": _STR, "boolean": _BOOL, "long": _LONG, "double": _DOUBLE, "string[]": _STRS}
_MODEL_TAIL = ("license_effective", "license_source", "license_inherited_from", "license_family", "updated_at")


def _kind(value: Any) -> str | None:
    """The importer type of one value, or None when a CSV cell cannot carry it exactly."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long" if _LONG_MIN <= value < _LONG_MAX else None
    if isinstance(value, float):
        return "double" if math.isfinite(value) else None
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        if not value:
            return None  # Neo4j stores [], an empty cell stores nothing
        kinds = {_kind(v) for v in value}
        if len(kinds) != 1 or next(iter(kinds)) not in _PYTYPE:
            return None
        kind = kinds.pop()
        if kind == "string" and any(not v or ARRAY_DELIMITER in v for v in value):
            return None
        return kind + "[]"
    return None


def _kind_of_type(t: type) -> str | None:
    """The importer type of scalar values of Python type ``t`` (None: a list, None or other)."""
    if issubclass(t, bool):
        return "boolean"
    if issubclass(t, int):
        return "long"
    if issubclass(t, float):
        return "double"
    if issubclass(t, str):
        return "string"
    return None


def _text(value: Any, kind: str) -> Any:
    """The csv field of a value of ``kind`` (checked by the caller)."""
    if kind == "boolean":
        return _TRUE if value else _FALSE
    if kind == "double":
        return float(value)
    if kind == "long":
        return int(value)
    return str(value)


def _field(value: Any, kind: str) -> Any:
    if kind.endswith("[]"):
        base = kind[:-2]
        return ARRAY_DELIMITER.join(str(_text(v, base)) for v in value)
    return _text(value, kind)


def _has_newline(value: str) -> bool:
    return "\n" in value or "\r" in value


def _write_header(folder: Path, name: str, id_columns: list[str], columns: Mapping[str, str], *,
                  tail: Mapping[str, str] | None = None, marker: bool = False) -> Path:
    """The header file of an importer input group (its data files follow it on the command line)."""
    head = id_columns + [f"{k}:{t}" for k, t in columns.items()] + [f"{k}:{t}" for k, t in (tail or {}).items()]
    if marker:
        head.append(f"{_EMPTY_MARKER}:string[]")
    path = folder / f"{name}.header.csv"
    path.write_text(",".join(head) + "\n", encoding="utf-8")
    return path


class _Group:
    """One importer input group: a header file and one or two data files (plain, multiline).

    ``columns`` come from the props of each row; ``tail`` columns get values from the caller;
    ``marker`` adds the column naming a row's empty-list keys (see ``_SET_EMPTY_LISTS``).
    """

    def __init__(self, folder: Path, name: str, id_columns: list[str], columns: Mapping[str, str],
                 *, tail: Mapping[str, str] | None = None, marker: bool = False, part: str | None = None) -> None:
        self.name = name
        tail = dict(tail or {})
        self._plan = [(k, _CODE.get(t, _LIST), t) for k, t in columns.items()]
        self._known = frozenset(columns) | frozenset(tail) | {"id"}
        self.marker = marker
        self.header = folder / f"{name}.header.csv"
        stem = name if part is None else f"{name}.{part}"
        self.data = folder / f"{stem}.csv"
        self.multi = folder / f"{stem}.multiline.csv"
        if part is None:  # parts of one group share the header their caller wrote (_write_header)
            _write_header(folder, name, id_columns, columns, tail=tail, marker=marker)
        self._out: TextIO = open(self.data, "w", encoding="utf-8", newline="")
        self._w = csv.writer(self._out, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
        self._multi_out: TextIO | None = None
        self._mw = None
        self.rows = 0
        self.empty_lists = 0

    def row(self, vals: list[Any], multiline: bool = False) -> None:
        """Write one row of ready csv fields."""
        if multiline:
            if self._mw is None:
                self._multi_out = open(self.multi, "w", encoding="utf-8", newline="")
                self._mw = csv.writer(self._multi_out, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
            self._mw.writerow(vals)
        else:
            self._w.writerow(vals)
        self.rows += 1

    def write(self, ids: list[str], props: Mapping[str, Any], tail: tuple = (),
              multiline: bool = False) -> dict[str, Any] | None:
        """Write one row; returns the props it could not carry (for the Bolt fixup), or None."""
        vals: list[Any] = list(ids)
        rest: dict[str, Any] | None = None
        empty: list[str] | None = None
        get = props.get
        for key, code, kind in self._plan:
            v = get(key)
            if v is None:
                vals.append(_NULL)
                continue
            t = type(v)
            if code == _STR:  # the common cases first, checked without _kind
                if t is str:
                    if "\n" in v or "\r" in v:
                        multiline = True
                    vals.append(v)
                    continue
            elif code == _BOOL:
                if t is bool:
                    vals.append(_TRUE if v else _FALSE)
                    continue
            elif code == _LONG:
                if t is int and _LONG_MIN <= v < _LONG_MAX:
                    vals.append(v)
                    continue
            elif code == _DOUBLE:
                if t is float and v - v == 0.0:  # finite
                    vals.append(v)
                    continue
            elif code == _STRS and t is list and v and "" not in v:
                try:
                    joined = ARRAY_DELIMITER.join(v)
                except TypeError:
                    joined = None
                if joined is not None and joined.count(ARRAY_DELIMITER) == len(v) - 1:
                    if "\n" in joined or "\r" in joined:
                        multiline = True
                    vals.append(joined)
                    continue
            if self.marker and code >= _STRS and (t is list or t is tuple) and not v:
                empty = [key] if empty is None else [*empty, key]
                vals.append(_NULL)
                continue
            if _kind(v) == kind:
                f = _field(v, kind)
                multiline = multiline or (type(f) is str and _has_newline(f))
                vals.append(f)
                continue
            rest = rest if rest is not None else {}
            rest[key] = v
            vals.append(_NULL)
        if not self._known.issuperset(props):
            for key in props.keys() - self._known:
                if props[key] is not None:
                    rest = rest if rest is not None else {}
                    rest[key] = props[key]
        vals.extend(tail)
        if self.marker:
            vals.append(ARRAY_DELIMITER.join(empty) if empty else _NULL)
            self.empty_lists += empty is not None
        self.row(vals, multiline)
        return _check_props(str(ids[0]), rest) if rest else None  # refuses what Bolt would refuse

    def close(self) -> None:
        self._out.close()
        if self._multi_out is not None:
            self._multi_out.close()

    def files(self) -> list[Path]:
        return [self.header, *self.data_files()]

    def data_files(self) -> list[Path]:
        return [self.data] + ([self.multi] if self._multi_out is not None else [])

    def multiline_files(self) -> list[Path]:
        return [self.multi] if self._multi_out is not None else []


class _Kinds:
    """Pass 1: the importer type of each property key, from the rows' type signatures.

    Rows of one shape (the same keys with values of the same Python types) are counted once
    per shape; a list key's element type comes from its first non-empty value.
    """

    def __init__(self) -> None:
        self.shapes: Counter = Counter()
        self.list_kinds: dict[str, str | None] = {}
        self._pending: set[str] = set()

    def add(self, props: Mapping[str, Any]) -> None:
        shape = (tuple(props), tuple(map(type, props.values())))
        n = self.shapes[shape]
        self.shapes[shape] = n + 1
        if n == 0:
            for key, t in zip(*shape, strict=True):
                if (t is list or t is tuple) and key not in self.list_kinds:
                    self._pending.add(key)
        if self._pending:
            for key in list(self._pending):
                v = props.get(key)
                if isinstance(v, list | tuple) and v:
                    self.list_kinds[key] = _kind(v)
                    self._pending.discard(key)

    def columns(self, skip: frozenset[str] = frozenset()) -> tuple[dict[str, str], bool]:
        """(key -> importer type: the type most values have, whether any key holds lists)."""
        counts: Counter = Counter()
        lists = False
        for (keys, types), n in self.shapes.items():
            for key, t in zip(keys, types, strict=True):
                if t is type(None):
                    continue
                if t is list or t is tuple:
                    lists = True
                    kind = self.list_kinds.get(key)
                else:
                    kind = _kind_of_type(t)
                if kind is not None:
                    counts[(key, kind)] += n
        best: dict[str, tuple[int, str]] = {}
        for (key, kind), n in counts.items():
            if key in skip or key == _EMPTY_MARKER or key.startswith(":") or any(c in _BAD_KEY_CHARS for c in key):
                continue
            if key not in best or (n, kind) > best[key]:
                best[key] = (n, kind)
        for keys, _ in self.shapes:
            for key in keys:
                _check_props("a model row", {key: None})  # names: non-empty strings without NUL
        return {k: best[k][1] for k in sorted(best)}, lists


# --- the import files ------------------------------------------------------------------------


@dataclass
class ImportFiles:
    """The importer inputs ``write_import_files`` wrote, and what must follow over Bolt."""

    folder: Path
    args: list[str]
    models: int  # Model nodes (distinct ids of the rows, and stub endpoints of edges)
    edges: int  # DERIVED_FROM relationships (distinct (child, parent))
    model_rows: int  # rows given
    edge_rows: int  # edges given
    licenses: int
    organizations: int
    fixups: dict[str, list[dict[str, Any]]]  # label -> [{"id": .., "props": {..}}]
    csv_bytes: int
    empty_lists: int = 0  # Model nodes whose [] values are set after the import (server-side)
    stages: dict[str, float] = field(default_factory=dict)  # seconds of each part of the writing


def _model_stream(models_f) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for row in models_f():
        model_id = row.get("id")
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"a model row needs a non-empty string id, got {model_id!r}")
        yield model_id, row.get("props") or {}


def _licence_state(cat, lic_rows: dict[str, dict[str, Any]], edges: list[tuple[str, str, float]]):
    from lineage_index.queries.licenses import Effective, compute_effective

    effective = compute_effective(cat, lic_rows, edges)
    none = Effective(None, None)
    return lambda model_id: effective.get(model_id, none)


_EDGE_COLUMNS = {"relation": "string", "source": "string", "confidence": "double", "closeness": "double",
                 "evidence": "string", "contradicted": "boolean", "recovered_parent": "string"}
_EDGE_IDS = [":START_ID(Model)", ":END_ID(Model)"]
_MODEL_IDS = ["id:ID(Model)", ":LABEL"]
_PUB_IDS = [":START_ID(Model)", ":END_ID(Organization)"]
_LIC_IDS = [":START_ID(Model)", ":END_ID(License)"]
_LIC_COLUMNS = {"effective": "boolean", "source": "string"}


class _Job:
    """``fn()`` in a forked process, its result sent back through a pipe on ``result()``; inline without fork.

    The child inherits everything ``fn`` needs by ``fork`` (rows, maps, open nothing shared), so
    the CSV writing of a large load runs on all cores. An exception in the child is re-raised.
    """

    def __init__(self, fn: Callable[[], Any]) -> None:
        import multiprocessing as mp

        self._proc = None
        if "fork" not in mp.get_all_start_methods():
            self._value = fn()
            return
        ctx = mp.get_context("fork")
        self._recv, send = ctx.Pipe(duplex=False)

        def child() -> None:
            try:
                send.send(("ok", fn()))
            except BaseException as exc:  # re-raised in the parent
                try:
                    send.send(("error", exc))
                except Exception:
                    send.send(("error", GraphError(f"{type(exc).__name__}: {exc}")))

        self._proc = ctx.Process(target=child, name="bulk-csv", daemon=True)
        self._proc.start()
        send.close()

    def cancel(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()
            self._proc.join()

    def result(self) -> Any:
        if self._proc is None:
            return self._value
        try:
            status, value = self._recv.recv()
        except EOFError:
            status, value = "error", GraphError("a CSV writer process of the bulk import died")
        self._proc.join()
        if status != "ok":
            raise value
        return value


class _Spool:
    """Rows kept between the two passes in files of this process's own making, in ``parts`` parts.

    Pass 1 reads the caller's rows once and spools them; the forked writers of pass 2 read only
    these files. So a writer never calls back into the caller's row source, which may hold thread
    pools that do not survive a fork (polars' does: a forked reader of the packed store hangs),
    and the source is read once instead of once per writer. The files are JSON lines (property
    values are strings, numbers, booleans and lists of them; edges go through ``_edge_json``).
    """

    def __init__(self, folder: Path, name: str, parts: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.paths = [folder / f"{name}-{k}.jsonl" for k in range(parts)]
        self._files = [open(path, "w", encoding="utf-8") for path in self.paths]  # noqa: SIM115 - closed in close()

    def add(self, part: int, item: Any) -> None:
        self._files[part].write(json.dumps(item, ensure_ascii=False) + "\n")

    def close(self) -> None:
        for fh in self._files:
            fh.close()


def _read_spool(path: Path) -> Iterator[Any]:
    """The items ``_Spool`` wrote to one part, in order."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def _edge_json(e: Edge) -> dict[str, Any]:
    return asdict(e)


def _edge_from_json(d: dict[str, Any]) -> Edge:
    behaviour = d.pop("behaviour", None)
    return Edge(**d, behaviour=BehaviourEvidence(**behaviour) if behaviour is not None else None)


def _write_edges(folder: Path, spooled: Path, last: dict[tuple[str, str], int], now: str) -> tuple[int, list[Path]]:
    """The DERIVED_FROM data; the last row of a repeated (child, parent) wins, as in the writer."""
    group = _Group(folder, "derived_from", _EDGE_IDS, _EDGE_COLUMNS, tail={"updated_at": "string"}, part="0")
    n = 0
    for i, e in enumerate(map(_edge_from_json, _read_spool(spooled))):
        if last[(e.child, e.parent)] != i:
            continue
        rest = group.write([e.child, e.parent], edge_props(e), (now,), _has_newline(e.child) or _has_newline(e.parent))
        if rest:
            raise GraphError(f"edge {e.child} -> {e.parent}: properties {sorted(rest)} do not fit their columns")
        n += 1
    group.close()
    return n, group.data_files()


@dataclass
class _ModelPart:
    """What one writer of Model rows produced (rows, data files, and what the parent still needs)."""

    models: int
    files: dict[str, list[Path]]  # group name -> data files
    orgs: set[str]
    licences: set[str]
    fixups: list[dict[str, Any]]
    empty_lists: int


class _ModelWriter:
    """Model rows with their PUBLISHED_BY and LICENSED_UNDER rows, into the data files of ``part``."""

    def __init__(self, folder: Path, part: str, model_cols: dict[str, str], marker: bool, effective_of, cat,
                 now: str) -> None:
        self.models = _Group(folder, "models", _MODEL_IDS, model_cols, tail=dict.fromkeys(_MODEL_TAIL, "string"),
                             marker=marker, part=part)
        self.pub = _Group(folder, "published_by", _PUB_IDS, {}, part=part)
        self.lic = _Group(folder, "licensed_under", _LIC_IDS, _LIC_COLUMNS, part=part)
        self.effective_of, self.cat, self.now = effective_of, cat, now
        self.orgs: set[str] = set()
        self.licences: set[str] = set()
        self.fixups: list[dict[str, Any]] = []
        self._families: dict[str | None, tuple[str, str]] = {}
        self.n = 0

    def emit(self, model_id: str, props: Mapping[str, Any]) -> None:
        eff = self.effective_of(model_id)
        fam = self._families.get(eff.license)
        if fam is None:
            f = self.cat.family_of(eff.license)
            fam = self._families[eff.license] = (f.id, ARRAY_DELIMITER.join(("Model", f.label)))
        lic, src, origin = eff.license, eff.source, eff.origin
        tail = (_NULL if lic is None else lic, _NULL if src is None else src, _NULL if origin is None else origin,
                fam[0], self.now)
        multiline = (_has_newline(model_id) or (lic is not None and _has_newline(lic))
                     or (origin is not None and _has_newline(origin)))
        rest = self.models.write([model_id, fam[1]], props, tail, multiline)
        if rest:
            self.fixups.append({"id": model_id, "props": rest})
        self.n += 1
        org = org_of(model_id)
        if org is not None:
            self.orgs.add(org)
            self.pub.row([model_id, org], multiline)
        raw = props.get("license")
        if type(raw) is str:
            self.licences.add(raw)
            ml = multiline or _has_newline(raw)
            if raw == lic:
                self.lic.row([model_id, raw, _TRUE, src], ml)
            else:
                self.lic.row([model_id, raw, _FALSE, "declared"], ml)
        else:
            raw = None
        if lic is not None and lic != raw:
            self.licences.add(lic)
            self.lic.row([model_id, lic, _TRUE, src], multiline)

    def close(self) -> _ModelPart:
        for g in (self.models, self.pub, self.lic):
            g.close()
        files = {g.name: g.data_files() for g in (self.models, self.pub, self.lic)}
        return _ModelPart(self.n, files, self.orgs, self.licences, self.fixups, self.models.empty_lists)


def _model_part(model_id: str, parts: int) -> int:
    return zlib.crc32(model_id.encode()) % parts


def _write_model_part(spooled: Path, dups: set[str], writer: _ModelWriter) -> _ModelPart:
    """The rows of one spooled part (every row of an id is in the same part, in order); repeated
    ids merged (later keys win, None removes, as ``SET +=`` does)."""
    merged: dict[str, dict[str, Any]] = {}
    for model_id, props in _read_spool(spooled):
        if model_id in dups:
            merged.setdefault(model_id, {}).update(props)
        else:
            writer.emit(model_id, props)
    for model_id, props in merged.items():
        writer.emit(model_id, props)
    return writer.close()


def csv_writers() -> int:
    """Processes writing Model rows (``$LINEAGE_INDEX_IMPORT_WRITERS``, default: the cores, 1-4)."""
    return max(1, config.env_int(config.ENV_IMPORT_WRITERS, min(os.cpu_count() or 1, 4)))


def write_import_files(models: Rows, edges: Edges, folder: Path | str, *, now: str | None = None,
                       writers: int | None = None) -> ImportFiles:
    """Write the importer's CSV files for ``models`` and ``edges`` into ``folder`` (two passes).

    The graph they describe is the one the Bolt path writes into an empty database (module doc).
    Pass 1 reads the rows once and spools them (``_Spool``); pass 2 runs in ``writers`` forked
    processes for the Model rows and one for the edges, each reading its spooled part.
    """
    from lineage_index.queries.licenses import catalogue

    models_f, edges_f = _reiterable(models), _reiterable(edges)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = now or _now()
    cat = catalogue()
    parts = writers or csv_writers()

    # pass 1: column types, duplicate ids, licence inputs, edge endpoints
    t0 = time.monotonic()
    spool_dir = folder / ".spool"
    model_spool = _Spool(spool_dir, "models", parts)
    edge_spool = _Spool(spool_dir, "edges", 1)
    try:
        return _write_import_files(models_f, edges_f, folder, now, cat, parts, model_spool, edge_spool, t0)
    finally:
        model_spool.close()
        edge_spool.close()
        shutil.rmtree(spool_dir, ignore_errors=True)


def _write_import_files(models_f, edges_f, folder: Path, now: str, cat, parts: int, model_spool: _Spool,
                        edge_spool: _Spool, t0: float) -> ImportFiles:
    kinds = _Kinds()
    seen: set[str] = set()
    dups: set[str] = set()
    lic_rows: dict[str, dict[str, Any]] = {}
    n_rows = 0
    for model_id, props in _model_stream(models_f):
        model_spool.add(_model_part(model_id, parts), (model_id, props if type(props) is dict else dict(props)))
        n_rows += 1
        if model_id in seen:
            dups.add(model_id)
        seen.add(model_id)
        kinds.add(props)
        if not props.keys().isdisjoint(_LICENSE_KEYS):
            state = lic_rows.setdefault(model_id, {"id": model_id})
            state.update({k: props[k] for k in _LICENSE_KEYS if k in props})
    t_models = time.monotonic()
    last: dict[tuple[str, str], int] = {}  # (child, parent) -> index of its last row
    conf: dict[tuple[str, str], float] = {}  # the edges licences are inherited along
    n_edge_rows = 0
    for i, e in enumerate(edges_f()):
        edge_spool.add(0, _edge_json(e))
        key = (e.child, e.parent)
        last[key] = i
        if not e.contradicted and e.child != e.parent:
            conf[key] = float(e.confidence or 0.0)
        else:
            conf.pop(key, None)
        n_edge_rows = i + 1
    stubs = {m for key in last for m in key if m not in seen}
    lic_edges = [(c, p, x) for (c, p), x in conf.items()]
    del conf
    n_models = len(seen) + len(stubs)
    del seen
    t_edges = time.monotonic()
    model_spool.close()
    edge_spool.close()
    jobs = [_Job(lambda last=last: _write_edges(folder, edge_spool.paths[0], last, now))]  # pass 2 of the edges starts now
    try:
        del last
        effective_of = _licence_state(cat, lic_rows, lic_edges)
        del lic_edges, lic_rows
        t_licences = time.monotonic()
        model_cols, has_lists = kinds.columns(skip=frozenset(_MODEL_TAIL) | {"id"})
        headers = {  # the data of these groups comes in parts
            "models": _write_header(folder, "models", _MODEL_IDS, model_cols,
                                    tail=dict.fromkeys(_MODEL_TAIL, "string"), marker=has_lists),
            "published_by": _write_header(folder, "published_by", _PUB_IDS, {}),
            "licensed_under": _write_header(folder, "licensed_under", _LIC_IDS, _LIC_COLUMNS),
            "derived_from": _write_header(folder, "derived_from", _EDGE_IDS, _EDGE_COLUMNS,
                                          tail={"updated_at": "string"}),
        }
        for k in range(parts):  # pass 2 of the models
            writer = _ModelWriter(folder, str(k + 1), model_cols, has_lists, effective_of, cat, now)
            jobs.append(_Job(lambda k=k, writer=writer: _write_model_part(model_spool.paths[k], dups, writer)))
        stub_writer = _ModelWriter(folder, "stubs", model_cols, has_lists, effective_of, cat, now)
        for model_id in sorted(stubs):
            stub_writer.emit(model_id, {})
        results: list[_ModelPart] = [job.result() for job in jobs[1:]] + [stub_writer.close()]
        n_edges, edge_files = jobs[0].result()
        t_pass2 = time.monotonic()
    except BaseException:
        for job in jobs:
            job.cancel()
        raise
    data = {name: [p for r in results for p in r.files[name]] for name in ("models", "published_by", "licensed_under")}
    data["derived_from"] = edge_files
    fixups: dict[str, list[dict[str, Any]]] = {"Model": [f for r in results for f in r.fixups], "License": []}
    orgs = set().union(*(r.orgs for r in results))
    licence_ids = set().union(*(r.licences for r in results))

    # organisations, licences (catalogue ones with their properties, labels and rules)
    g_orgs = _Group(folder, "organizations", ["id:ID(Organization)", ":LABEL"], {})
    for org in sorted(orgs):
        g_orgs.row([org, "Organization"], _has_newline(org))
    fields = ("name", "category", "family", "spdx", "url", "clause", "decidable", "named",
              "adapter_strict", "derivatives_model_type")
    lic_props = {}
    for lic in cat.licenses.values():
        props = {k: getattr(lic, k) for k in fields} | {"rank": cat.category_rank[lic.category],
                                                        "catalogue_version": cat.version, "updated_at": now}
        lic_props[lic.id] = _check_props(lic.id, props)
    lic_kinds = _Kinds()
    for props in lic_props.values():
        lic_kinds.add(props)
    g_lics = _Group(folder, "licenses", ["id:ID(License)", ":LABEL"], lic_kinds.columns(frozenset({"id"}))[0])
    for lid in sorted(set(lic_props) | licence_ids):
        info = cat.licenses.get(lid)
        labels = ("License", cat.families[info.family].label) if info is not None else ("License",)
        rest = g_lics.write([lid, ARRAY_DELIMITER.join(labels)], lic_props.get(lid, {}),
                            multiline=_has_newline(lid))
        if rest:
            fixups["License"].append({"id": lid, "props": rest})
    g_rules = _Group(folder, "allows_derivative_under", [":START_ID(License)", ":END_ID(License)"],
                     {"code": "string", "catalogue_version": "string"})
    for (a, b), code in sorted(cat.rules().items()):
        g_rules.row([a, b, code, cat.version])
    for g in (g_orgs, g_lics, g_rules):
        g.close()

    inputs = [("nodes", headers["models"], data["models"]), ("nodes", g_orgs.header, g_orgs.data_files()),
              ("nodes", g_lics.header, g_lics.data_files()),
              ("relationships=PUBLISHED_BY", headers["published_by"], data["published_by"]),
              ("relationships=LICENSED_UNDER", headers["licensed_under"], data["licensed_under"]),
              ("relationships=DERIVED_FROM", headers["derived_from"], data["derived_from"]),
              ("relationships=ALLOWS_DERIVATIVE_UNDER", g_rules.header, g_rules.data_files())]
    args = [f"--{flag}={','.join(str(p) for p in [header, *files])}" for flag, header, files in inputs]
    multiline = [p for _, _, files in inputs for p in files if p.name.endswith(".multiline.csv")]
    args += ["--array-delimiter=U+001F", "--bad-tolerance=0", "--skip-duplicate-nodes=false",
             "--skip-bad-relationships=false", f"--report-file={folder / 'import.report'}"]
    if multiline:
        args += ["--multiline-fields-format=v2", f"--multiline-fields={','.join(str(p) for p in multiline)}"]
    csv_bytes = sum(p.stat().st_size for _, header, files in inputs for p in [header, *files])
    assert sum(r.models for r in results) == n_models, "every Model row was written once"
    stages = {"models pass 1": t_models - t0, "edges pass 1": t_edges - t_models, "licences": t_licences - t_edges,
              "pass 2": t_pass2 - t_licences, "catalogue": time.monotonic() - t_pass2}
    return ImportFiles(folder, args, n_models, n_edges, n_rows, n_edge_rows, g_lics.rows, g_orgs.rows,
                       fixups, csv_bytes, sum(r.empty_lists for r in results), stages)


_SET_EMPTY_LISTS = f"""
MATCH (m:Model) WHERE m.{_EMPTY_MARKER} IS NOT NULL
CALL (m) {{
  FOREACH (key IN m.{_EMPTY_MARKER} | SET m[key] = [])
  REMOVE m.{_EMPTY_MARKER}
}} IN TRANSACTIONS OF 20000 ROWS
"""


def _apply_fixups(driver, database: str, fixups: dict[str, list[dict[str, Any]]]) -> int:
    queries = {
        "Model": "UNWIND $rows AS row MATCH (x:Model {id: row.id}) SET x += row.props",
        "License": "UNWIND $rows AS row MATCH (x:License {id: row.id}) SET x += row.props",
    }
    n = 0
    for label, rows in fixups.items():
        for start in range(0, len(rows), _FIXUP_BATCH):
            driver.execute_query(queries[label], rows=rows[start:start + _FIXUP_BATCH], database_=database)
        n += len(rows)
    return n


def bulk_load(conn, models, edges, *, home: Path | str | None = None, reason: str = "forced",
              workdir: Path | str | None = None, keep_files: bool = False,
              import_heap: str | None = None) -> GraphLoad:
    """Initial load through ``neo4j-admin database import full`` on the managed Neo4j of ``home``.

    The caller checks that the database may be overwritten (``choose_method`` does). The
    server is stopped, imported into, started again; then the schema and the fixups follow.
    """
    from lineage_index.schema import local_neo4j
    from lineage_index.schema.graph import ensure_schema

    t0 = time.monotonic()
    home_p = Path(home) if home is not None else config.neo4j_home()
    base = Path(workdir) if workdir is not None else home_p / "import"
    base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="load-", dir=base))
    files = write_import_files(models, edges, folder)
    t1 = time.monotonic()
    conn.close()  # its connections die with the server
    heap = import_heap or os.environ.get(config.ENV_IMPORT_HEAP) or config.DEFAULT_IMPORT_HEAP
    threads = max(1, min(os.cpu_count() or 1, 4))
    run = local_neo4j.import_full(
        files.args + [f"--threads={threads}",
                      f"--max-off-heap-memory={os.environ.get(config.ENV_IMPORT_OFFHEAP) or config.DEFAULT_IMPORT_OFFHEAP}"],
        database=conn.database, home=home_p, heap=heap, cwd=folder)
    t2 = time.monotonic()
    driver = conn.driver()
    ensure_schema(driver, conn.database)
    t3 = time.monotonic()
    fixed = _apply_fixups(driver, conn.database, files.fixups)
    if files.empty_lists:
        with driver.session(database=conn.database) as session:  # CALL IN TRANSACTIONS: auto-commit
            session.run(_SET_EMPTY_LISTS).consume()
        fixed += files.empty_lists
    t4 = time.monotonic()
    records, _, _ = driver.execute_query("MATCH (m:Model) RETURN count(m) AS n", database_=conn.database)
    if int(records[0]["n"]) != files.models:
        raise GraphError(f"bulk import wrote {records[0]['n']} Model nodes, expected {files.models}; "
                         f"see {run.log_file} and {folder / 'import.report'}")
    if not keep_files:
        shutil.rmtree(folder, ignore_errors=True)
    return GraphLoad(
        "bulk", reason, files.model_rows, files.edge_rows, time.monotonic() - t0,
        stages={"csv": t1 - t0, **{f"csv: {k}": v for k, v in files.stages.items()}, "stop": run.stop_s, "import": run.seconds, "start": run.start_s,
                "schema": t3 - t2, "fixups": t4 - t3},
        import_peak_rss_bytes=run.peak_rss_bytes, fixups=fixed, csv_bytes=files.csv_bytes,
    )
