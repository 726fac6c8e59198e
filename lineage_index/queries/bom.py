"""CycloneDX 1.6 AI bill of materials (JSON) for one model and its recovered lineage.

``build_bom(driver, model)`` reads the shipped ``lineage_nodes`` query and returns a dict:
the model is ``metadata.component``, a ``machine-learning-model`` with purl
``pkg:huggingface/<ns>/<name>@<sha>``; its parents are ``pedigree.ancestors``, nested one
generation per level, each carrying the relation of the edge as the
``huggingface:base_model_relation`` property (plus ``lineage:edge-source`` and
``lineage:confidence``). Licences follow LICENSES.md §4: an SPDX ``license.id`` only for ids in
the SPDX list (from the catalogue), otherwise ``license.name`` (+ url); the card's licence is
``acknowledgement: declared``, an inherited or imputed one ``concluded``. Every ``bom-ref`` is
unique (a shared ancestor is repeated without one). Contradicted declarations are not lineage:
they go in ``pedigree.notes`` and properties. This module only reads the graph.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from neo4j import Driver

from lineage_index import __version__
from lineage_index.errors import UsageError
from lineage_index.queries import licenses
from lineage_index.queries.runner import run_query

SPEC_VERSION = "1.6"
MAX_COMPONENTS = 500  # nested ancestors in one BOM; a bigger lineage is cut (and noted)
MAX_DEPTH = 20
_WORST = {"✓": "compatible", "C": "warning", "W": "warning", "?": "review", "✗": "conflict"}


def purl(model_id: str, sha: str | None = None) -> str:
    """``pkg:huggingface/<namespace>/<name>[@<sha>]`` (segments percent-encoded)."""
    ns, _, name = model_id.rpartition("/")
    path = "/".join(quote(part, safe="") for part in (ns, name) if part)
    version = f"@{quote(sha.lower(), safe='')}" if sha else ""
    return f"pkg:huggingface/{path}{version}"


def _licence_entry(
    license_id: str, acknowledgement: str, display: str | None = None
) -> dict[str, Any]:
    info = licenses.catalogue().licenses.get(license_id)
    lic: dict[str, Any]
    if info is not None and info.spdx and display is None:
        lic = {"id": info.spdx}
    else:
        lic = {"name": display or license_id}
    if info is not None and info.url:
        lic["url"] = info.url
    lic["acknowledgement"] = acknowledgement
    return {"license": lic}


def licence_entries(props: dict[str, Any]) -> list[dict[str, Any]]:
    """CycloneDX ``licenses`` of a Model's properties (declared, then concluded)."""
    cat = licenses.catalogue()
    out: list[dict[str, Any]] = []
    raw, name = props.get("license"), props.get("license_name")
    declared = cat.resolve(raw, name)
    if declared and isinstance(name, str) and name.strip() and str(raw).lower() == "other":
        out.append(_licence_entry(declared, "declared", display=name.strip()))
    elif declared and declared not in ("other", licenses.UNKNOWN):
        out.append(_licence_entry(declared, "declared"))
    source, effective = props.get("license_source"), props.get("license_effective")
    if (
        source in ("inherited", "imputed")
        and isinstance(effective, str)
        and effective not in ("other", licenses.UNKNOWN)
    ):
        out.append(_licence_entry(effective, "concluded"))
    return out


def _prop(name: str, value: Any) -> dict[str, str]:
    return {"name": name, "value": str(value)}


class _Builder:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.nodes = {r["id"]: r for r in rows}
        self.refs: set[str] = set()
        self.count = 0
        self.cut = False

    def component(
        self, model_id: str, edge: dict[str, Any] | None, path: frozenset[str]
    ) -> dict[str, Any]:
        row = self.nodes.get(model_id) or {"props": {}, "parents": [], "contradicted": []}
        props: dict[str, Any] = row["props"] or {}
        sha = props.get("sha") if isinstance(props.get("sha"), str) else None
        ns, _, name = model_id.rpartition("/")
        ref = purl(model_id, sha)
        comp: dict[str, Any] = {}
        if ref not in self.refs:
            self.refs.add(ref)
            comp["bom-ref"] = ref
        comp["type"] = "machine-learning-model"
        if ns:
            comp["group"] = ns
        comp["name"] = name
        if sha:
            comp["version"] = sha
        comp["purl"] = ref
        lic = licence_entries(props)
        if lic:
            comp["licenses"] = lic
        card = self._model_card(props)
        if card:
            comp["modelCard"] = card
        self.count += 1
        ancestors = []
        if len(path) < MAX_DEPTH:
            for parent_edge in row.get("parents") or []:
                parent = parent_edge["parent"]
                if parent in path:
                    continue
                if self.count >= MAX_COMPONENTS:
                    self.cut = True
                    break
                ancestors.append(self.component(parent, parent_edge, path | {parent}))
        if ancestors:
            comp["pedigree"] = {"ancestors": ancestors}
        properties = self._properties(props, edge, row.get("contradicted") or [])
        if properties:
            comp["properties"] = properties
        return comp

    @staticmethod
    def _model_card(props: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if isinstance(props.get("pipeline_tag"), str):
            params["task"] = props["pipeline_tag"]
        if isinstance(props.get("model_type"), str):
            params["architectureFamily"] = props["model_type"]
        archs = props.get("architectures")
        if isinstance(archs, list) and archs:
            params["modelArchitecture"] = str(archs[0])
        return {"modelParameters": params} if params else {}

    @staticmethod
    def _properties(
        props: dict[str, Any], edge: dict[str, Any] | None, contradicted: list[dict[str, Any]]
    ) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        if edge is not None:
            out.append(_prop("huggingface:base_model_relation", edge.get("relation") or "unknown"))
            if edge.get("source"):
                out.append(_prop("lineage:edge-source", edge["source"]))
            if edge.get("confidence") is not None:
                out.append(_prop("lineage:confidence", round(float(edge["confidence"]), 4)))
        if isinstance(props.get("license"), str):
            out.append(_prop("huggingface:license", props["license"]))
        if isinstance(props.get("license_name"), str):
            out.append(_prop("huggingface:license_name", props["license_name"]))
        if props.get("license_source"):
            out.append(_prop("lineage:license-source", props["license_source"]))
        if props.get("license_inherited_from"):
            out.append(_prop("lineage:license-inherited-from", props["license_inherited_from"]))
        for c in contradicted:
            out.append(_prop("lineage:contradicted-base-model", c["parent"]))
        return out


def build_bom(
    driver: Driver,
    model: str,
    database: str | None = None,
    serial_number: str | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """The CycloneDX 1.6 BOM of ``model`` as a JSON-ready dict (UsageError if not in the graph)."""
    rows = run_query(driver, "lineage_nodes", {"model": model}, database).rows
    if not rows:
        raise UsageError(f"model {model!r} is not in the graph")
    builder = _Builder(rows)
    subject = builder.component(model, None, frozenset({model}))
    props = rows[0]["props"] or {}
    extra = [_prop("huggingface:base_model", b) for b in props.get("declared_base_models") or []]
    if isinstance(props.get("base_model_relation"), str):
        extra.append(
            _prop("huggingface:declared_base_model_relation", props["base_model_relation"])
        )
    checks = run_query(driver, "license_check", {"model": model}, database).rows
    if checks:
        worst = max((r["code"] for r in checks), key=licenses.CODES.index)
        extra.append(_prop("lineage:license-check", _WORST[worst]))
    if extra:
        subject["properties"] = subject.get("properties", []) + extra
    notes = _notes(rows, builder)
    if notes:
        subject.setdefault("pedigree", {})["notes"] = notes
    return {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": serial_number or f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": timestamp
            or datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "tools": {
                "components": [
                    {"type": "application", "name": "lineage-index", "version": __version__}
                ]
            },
            "component": subject,
        },
    }


def _notes(rows: list[dict[str, Any]], builder: _Builder) -> str:
    subject = rows[0]
    parts = []
    if len(rows) > 1:
        parts.append(
            f"{len(rows) - 1} ancestor(s) recovered by lineage-index from the weights and card "
            "metadata; each ancestor's huggingface:base_model_relation is the relation of the "
            "edge from the component that lists it, lineage:edge-source says whether the edge was "
            "declared, recovered or both."
        )
    for c in subject.get("contradicted") or []:
        recovered = (
            f"; the weights point to {c['recovered_parent']}" if c.get("recovered_parent") else ""
        )
        parts.append(
            f"Declared base model {c['parent']} is contradicted by the weights{recovered}."
        )
    if builder.cut:
        parts.append(f"Lineage cut at {MAX_COMPONENTS} components.")
    return " ".join(parts)
