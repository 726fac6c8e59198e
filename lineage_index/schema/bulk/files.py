"""The importer's input files for a whole load: Model, Organization, License rows and every edge.

``write_import_files(models, edges, folder)`` spools the rows once, computes the licence facts
``licenses.refresh`` would write over Bolt, writes the CSV files in parallel (forked writers
reading the spool, never the caller's source) and returns the importer's arguments with what
must follow over Bolt (``ImportFiles``). Cells and groups come from ``cells``. No Neo4j here.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lineage_index import config
from lineage_index.errors import GraphError
from lineage_index.records import BehaviourEvidence, Edge
from lineage_index.schema.bulk.cells import (
    ARRAY_DELIMITER,
    FALSE,
    MODEL_TAIL,
    NULL,
    TRUE,
    Edges,
    Group,
    Kinds,
    Rows,
    has_newline,
    reiterable,
    write_header,
)
from lineage_index.schema.writer import _check_props, _now, edge_props, org_of

_LICENSE_KEYS = ("license", "license_name", "license_source", "license_effective", "license_imputed")


# --- the import files ------------------------------------------------------------------------


@dataclass
class ImportFiles:
    """The importer inputs ``write_import_files`` wrote, and what must follow over Bolt."""

    folder: Path
    args: list[str]
    models: int  # Model nodes (distinct ids of the rows, and stub endpoints of edges)
    edges: int  # DERIVED_FROM and DECLARES_BASE relationships (distinct (child, parent))
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
                 "evidence": "string", "contradicted": "boolean", "recovered_parent": "string",
                 "verdict": "string"}
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


def _write_edges(folder: Path, spooled: Path, last: dict[tuple[str, str], int],
                 now: str) -> tuple[int, dict[str, list[Path]]]:
    """The DERIVED_FROM data (lineage) and the DECLARES_BASE data (card claims that are not,
    ``Edge.is_lineage``); the last row of a repeated (child, parent) wins, as in the writer."""
    groups = {name: Group(folder, name, _EDGE_IDS, _EDGE_COLUMNS, tail={"updated_at": "string"}, part="0")
              for name in ("derived_from", "declares_base")}
    n = 0
    for i, e in enumerate(map(_edge_from_json, _read_spool(spooled))):
        if last[(e.child, e.parent)] != i:
            continue
        group = groups["derived_from" if e.is_lineage else "declares_base"]
        rest = group.write([e.child, e.parent], edge_props(e), (now,), has_newline(e.child) or has_newline(e.parent))
        if rest:
            raise GraphError(f"edge {e.child} -> {e.parent}: properties {sorted(rest)} do not fit their columns")
        n += 1
    for g in groups.values():
        g.close()
    return n, {name: g.data_files() for name, g in groups.items()}


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
        self.models = Group(folder, "models", _MODEL_IDS, model_cols, tail=dict.fromkeys(MODEL_TAIL, "string"),
                             marker=marker, part=part)
        self.pub = Group(folder, "published_by", _PUB_IDS, {}, part=part)
        self.lic = Group(folder, "licensed_under", _LIC_IDS, _LIC_COLUMNS, part=part)
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
        tail = (NULL if lic is None else lic, NULL if src is None else src, NULL if origin is None else origin,
                fam[0], self.now)
        multiline = (has_newline(model_id) or (lic is not None and has_newline(lic))
                     or (origin is not None and has_newline(origin)))
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
            ml = multiline or has_newline(raw)
            if raw == lic:
                self.lic.row([model_id, raw, TRUE, src], ml)
            else:
                self.lic.row([model_id, raw, FALSE, "declared"], ml)
        else:
            raw = None
        if lic is not None and lic != raw:
            self.licences.add(lic)
            self.lic.row([model_id, lic, TRUE, src], multiline)

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

    models_f, edges_f = reiterable(models), reiterable(edges)
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
    kinds = Kinds()
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
        if e.is_lineage and e.child != e.parent:
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
        model_cols, has_lists = kinds.columns(skip=frozenset(MODEL_TAIL) | {"id"})
        headers = {  # the data of these groups comes in parts
            "models": write_header(folder, "models", _MODEL_IDS, model_cols,
                                    tail=dict.fromkeys(MODEL_TAIL, "string"), marker=has_lists),
            "published_by": write_header(folder, "published_by", _PUB_IDS, {}),
            "licensed_under": write_header(folder, "licensed_under", _LIC_IDS, _LIC_COLUMNS),
            "derived_from": write_header(folder, "derived_from", _EDGE_IDS, _EDGE_COLUMNS,
                                          tail={"updated_at": "string"}),
            "declares_base": write_header(folder, "declares_base", _EDGE_IDS, _EDGE_COLUMNS,
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
    data.update(edge_files)
    fixups: dict[str, list[dict[str, Any]]] = {"Model": [f for r in results for f in r.fixups], "License": []}
    orgs = set().union(*(r.orgs for r in results))
    licence_ids = set().union(*(r.licences for r in results))

    # organisations, licences (catalogue ones with their properties, labels and rules)
    g_orgs = Group(folder, "organizations", ["id:ID(Organization)", ":LABEL"], {})
    for org in sorted(orgs):
        g_orgs.row([org, "Organization"], has_newline(org))
    fields = ("name", "category", "family", "spdx", "url", "clause", "decidable", "named",
              "adapter_strict", "derivatives_model_type")
    lic_props = {}
    for lic in cat.licenses.values():
        props = {k: getattr(lic, k) for k in fields} | {"rank": cat.category_rank[lic.category],
                                                        "catalogue_version": cat.version, "updated_at": now}
        lic_props[lic.id] = _check_props(lic.id, props)
    lic_kinds = Kinds()
    for props in lic_props.values():
        lic_kinds.add(props)
    g_lics = Group(folder, "licenses", ["id:ID(License)", ":LABEL"], lic_kinds.columns(frozenset({"id"}))[0])
    for lid in sorted(set(lic_props) | licence_ids):
        info = cat.licenses.get(lid)
        labels = ("License", cat.families[info.family].label) if info is not None else ("License",)
        rest = g_lics.write([lid, ARRAY_DELIMITER.join(labels)], lic_props.get(lid, {}),
                            multiline=has_newline(lid))
        if rest:
            fixups["License"].append({"id": lid, "props": rest})
    g_rules = Group(folder, "allows_derivative_under", [":START_ID(License)", ":END_ID(License)"],
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
              ("relationships=DECLARES_BASE", headers["declares_base"], data["declares_base"]),
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
