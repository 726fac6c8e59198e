"""The licence report: conflicts (✗), warnings (W, C) and undecidable edges (?), separately.

``build_report(driver)`` runs the shipped queries ``license_conflicts``, ``license_warnings``,
``license_summary`` and, for each model with a conflict, ``provenance`` (its lineage picture);
``render(report, fmt)`` writes it as Markdown, HTML, CSV or JSON. The HTML is one
self-contained file: inline CSS and an inline SVG per conflicting lineage drawn here (nodes
coloured by licence family, edges labelled by relation, conflicting edges in red); no script,
no external resource. Every string from the graph is escaped. This module reads the graph
(after ``licenses.refresh`` when asked) and must not decide licence codes itself: the codes
come from the Cypher queries.
"""

from __future__ import annotations

import csv
import html
import io
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from neo4j import Driver

from lineage_index import __version__
from lineage_index.queries import licenses
from lineage_index.queries.runner import run_query

FORMATS = ("md", "html", "csv", "json")
FINDING_COLUMNS = tuple(
    "severity code kind child child_license child_license_source parent parent_license "
    "relation edge_source confidence reason".split()
)
MAX_PICTURE_NODES = 60


@dataclass(frozen=True)
class Finding:
    """One checked lineage edge (or merge pair) that is not ✓."""

    severity: str  # conflict | warning | review
    code: str
    kind: str  # edge | merge
    child: str
    child_license: str
    child_license_source: str | None
    parent: str
    parent_license: str
    relation: str | None
    edge_source: str | None
    confidence: float | None
    reason: str


@dataclass(frozen=True)
class Lineage:
    """What the picture of one conflicting model shows: its ancestors and their edges."""

    subject: str
    nodes: dict[str, str]  # model id -> effective licence
    depth: dict[str, int]
    edges: list[tuple[str, str, str]]  # (child, parent, relation)
    conflict_edges: set[tuple[str, str]] = field(default_factory=set)
    truncated: bool = False


@dataclass
class LicenseReport:
    generated_at: str
    catalogue_version: str
    adapter_leniency: bool
    conflicts: list[Finding]
    warnings: list[Finding]
    review: list[Finding]
    licenses: list[dict[str, Any]]  # license_summary rows
    lineages: dict[str, Lineage]

    @property
    def summary(self) -> dict[str, int]:
        models = sum(int(r["models"]) for r in self.licenses)
        return {
            "models": models,
            "conflicts": len(self.conflicts),
            "warnings": len(self.warnings),
            "review": len(self.review),
            "models_with_conflicts": len({f.child for f in self.conflicts}),
        }


def _finding(row: dict[str, Any], severity: str) -> Finding:
    return Finding(severity=severity, **{k: row.get(k) for k in FINDING_COLUMNS if k != "severity"})


def _lineage(
    driver: Driver, database: str | None, subject: str, findings: list[Finding]
) -> Lineage:
    hops = run_query(driver, "provenance", {"model": subject}, database).rows
    nodes = {subject: findings[0].child_license}
    depth = {subject: 0}
    edges: list[tuple[str, str, str]] = []
    truncated = False
    for hop in hops:
        if len(nodes) >= MAX_PICTURE_NODES and hop["ancestor"] not in nodes:
            truncated = True
            continue
        nodes.setdefault(hop["ancestor"], hop["license"] or licenses.UNKNOWN)
        depth.setdefault(hop["ancestor"], int(hop["depth"]))
        if hop["child"] in nodes:
            edges.append((hop["child"], hop["ancestor"], hop["relation"] or ""))
    marked: set[tuple[str, str]] = set()
    for f in findings:
        for parent in f.parent.split(" + ") if f.kind == "merge" else [f.parent]:
            marked.add((f.child, parent))
    return Lineage(subject, nodes, depth, edges, marked, truncated)


def build_report(
    driver: Driver,
    database: str | None = None,
    adapter_leniency: bool = False,
    refresh: bool = True,
    max_pictures: int = 100,
) -> LicenseReport:
    """Check every lineage edge's licences; ``refresh`` first loads the catalogue and
    applies licence inheritance (idempotent writes). The lineages of the first
    ``max_pictures`` models with a conflict are read for the HTML pictures (0: none)."""
    if refresh:
        licenses.refresh(driver, database)
    params = {"adapter_leniency": adapter_leniency}
    conflicts = [
        _finding(r, "conflict")
        for r in run_query(driver, "license_conflicts", params, database).rows
    ]
    warnings: list[Finding] = []
    review: list[Finding] = []
    for row in run_query(driver, "license_warnings", params, database).rows:
        (review if row["code"] == "?" else warnings).append(_finding(row, row["severity"]))
    by_child: dict[str, list[Finding]] = {}
    for f in conflicts:
        by_child.setdefault(f.child, []).append(f)
    pictured = sorted(by_child.items())[: max(0, max_pictures)]
    lineages = {c: _lineage(driver, database, c, fs) for c, fs in pictured}
    return LicenseReport(
        generated_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        catalogue_version=licenses.catalogue().version,
        adapter_leniency=adapter_leniency,
        conflicts=conflicts,
        warnings=warnings,
        review=review,
        licenses=run_query(driver, "license_summary", None, database).rows,
        lineages=lineages,
    )


# --- rendering ------------------------------------------------------------------------------


def render(report: LicenseReport, fmt: str) -> str:
    """The report as ``md``, ``html``, ``csv`` or ``json`` text."""
    if fmt == "md":
        return _markdown(report)
    if fmt == "html":
        return _html(report)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(FINDING_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for f in report.conflicts + report.warnings + report.review:
            writer.writerow(asdict(f))
        return buf.getvalue()
    if fmt == "json":
        doc = {
            "generated_at": report.generated_at,
            "tool": {"name": "lineage-index", "version": __version__},
            "catalogue_version": report.catalogue_version,
            "adapter_leniency": report.adapter_leniency,
            "summary": report.summary,
            "conflicts": [asdict(f) for f in report.conflicts],
            "warnings": [asdict(f) for f in report.warnings],
            "review": [asdict(f) for f in report.review],
            "licenses": report.licenses,
        }
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")


_SECTIONS = (
    (
        "conflicts",
        "Conflicts (✗)",
        "The child's licence drops obligations its parent's licence makes travel with derivatives.",
    ),
    (
        "warnings",
        "Warnings (W, C)",
        "W: another version of the parent's licence family, or a "
        "copy/quantized child whose licence differs; C: compare the use restrictions clause by clause.",
    ),
    (
        "review",
        "Needs review (?)",
        "Undecidable from the tags (other / unknown / missing, or a "
        "child licence that is only inherited or imputed): resolve the LICENSE file or impute.",
    ),
)
_TABLE = ("code", "child", "child_license", "parent", "parent_license", "relation", "reason")


def _md_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("`", "'")


def _licence_label(license: str, source: str | None) -> str:
    return license if source in (None, "declared") else f"{license} ({source})"


def _markdown(report: LicenseReport) -> str:
    s = report.summary
    out = [
        "# Licence report",
        "",
        f"Generated {report.generated_at} by lineage-index {__version__} "
        f"(licence catalogue {report.catalogue_version}; adapter leniency "
        f"{'on' if report.adapter_leniency else 'off'}).",
        "",
        f"**{s['conflicts']} conflicts** in {s['models_with_conflicts']} models, "
        f"**{s['warnings']} warnings**, **{s['review']} to review**, over {s['models']} models.",
    ]
    for key, title, text in _SECTIONS:
        rows: list[Finding] = getattr(report, key)
        out += ["", f"## {title}: {len(rows)}", "", text, ""]
        if not rows:
            out.append("None.")
            continue
        out.append("| " + " | ".join(c.replace("_", " ") for c in _TABLE) + " |")
        out.append("|" + "---|" * len(_TABLE))
        for f in rows:
            cells = [
                f.code,
                f.child,
                _licence_label(f.child_license, f.child_license_source),
                f.parent,
                f.parent_license,
                f.relation,
                f.reason,
            ]
            out.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    out += [
        "",
        "## Effective licences",
        "",
        "| licence | family | source | models |",
        "|---|---|---|---|",
    ]
    for r in report.licenses:
        out.append(
            "| "
            + " | ".join(_md_cell(r.get(k)) for k in ("license", "family", "source", "models"))
            + " |"
        )
    out += [
        "",
        "Codes: " + "; ".join(f"{k} {v}" for k, v in licenses.catalogue().codes.items()) + ".",
    ]
    return "\n".join(out) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .5em;
text-align:left;vertical-align:top;font-size:.9em}th{background:#f3f3f3}.code{font-weight:bold}
.conflict{color:#b71c1c}.warning{color:#e65100}.review{color:#555}figure{margin:1em 0 2em}
figcaption{font-size:.9em;color:#444}.legend span{display:inline-block;margin-right:1em}
.swatch{display:inline-block;width:.9em;height:.9em;border-radius:2px;margin-right:.3em;vertical-align:middle}
"""


def _html(report: LicenseReport) -> str:
    e = html.escape
    s = report.summary
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>Licence report</title>',
        f"<style>{_CSS}</style></head><body>",
        "<h1>Licence report</h1>",
        f"<p>Generated {e(report.generated_at)} by lineage-index {e(__version__)} (licence catalogue "
        f"{e(report.catalogue_version)}; adapter leniency {'on' if report.adapter_leniency else 'off'}).</p>",
        f"<p><strong>{s['conflicts']} conflicts</strong> in {s['models_with_conflicts']} models, "
        f"<strong>{s['warnings']} warnings</strong>, <strong>{s['review']} to review</strong>, "
        f"over {s['models']} models.</p>",
        _legend(),
    ]
    for key, title, text in _SECTIONS:
        rows: list[Finding] = getattr(report, key)
        parts += [f'<h2 id="{key}">{e(title)}: {len(rows)}</h2>', f"<p>{e(text)}</p>"]
        if rows:
            parts.append(_html_table(rows))
        if key == "conflicts":
            missing = s["models_with_conflicts"] - len(report.lineages)
            if missing > 0:
                parts.append(f"<p>Pictures of {missing} more conflicting lineages left out.</p>")
            for child, lineage in report.lineages.items():
                parts.append(
                    f"<figure>{lineage_svg(lineage)}<figcaption>Lineage of <code>{e(child)}</code>"
                    f"{' (truncated)' if lineage.truncated else ''}: conflicting edges in red."
                    "</figcaption></figure>"
                )
    parts.append(
        "<h2>Effective licences</h2><table><tr><th>licence</th><th>family</th>"
        "<th>source</th><th>models</th></tr>"
    )
    for r in report.licenses:
        parts.append(
            "<tr>"
            + "".join(
                f"<td>{e(str(r.get(k) if r.get(k) is not None else ''))}</td>"
                for k in ("license", "family", "source", "models")
            )
            + "</tr>"
        )
    parts += ["</table>", "</body></html>"]
    return "\n".join(parts) + "\n"


def _html_table(rows: list[Finding]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c.replace('_', ' '))}</th>" for c in _TABLE)
    body = []
    for f in rows:
        cells = [
            f.code,
            f.child,
            _licence_label(f.child_license, f.child_license_source),
            f.parent,
            f.parent_license,
            f.relation or "",
            f.reason,
        ]
        tds = "".join(f"<td>{e(str(c))}</td>" for c in cells[1:])
        body.append(f'<tr><td class="code {f.severity}">{e(f.code)}</td>{tds}</tr>')
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _legend() -> str:
    fams = licenses.catalogue().families.values()
    spans = "".join(
        f'<span><i class="swatch" style="background:{html.escape(f.colour)}"></i>{html.escape(f.title)}</span>'
        for f in fams
    )
    return f'<p class="legend">Licence families: {spans}</p>'


# --- SVG ------------------------------------------------------------------------------------

_BOX_W, _BOX_H, _GAP_X, _GAP_Y, _PAD = 210, 48, 30, 70, 20


def _short(text: str, limit: int = 30) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_LABEL_CHAR_W, _LABEL_H = 6.5, 13  # the width of one italic 11 px character, a label's height


def _label_spot(x1: float, y1: float, x2: float, y2: float, width: float,
                placed: list[tuple[float, float, float, float]]) -> tuple[float, float]:
    """Where to write an edge's label: the first point along the edge (its middle first) whose
    label box overlaps no label placed before; the box chosen is added to ``placed``."""
    def box(t: float, side: int) -> tuple[float, float, float, float]:
        x, y = x1 + (x2 - x1) * t, y1 + (y2 - y1) * t
        left = x + 4 if side > 0 else x - 4 - width
        return (left, y - _LABEL_H + 3, left + width, y + 3)

    def free(b: tuple[float, float, float, float]) -> bool:
        return all(b[2] <= o[0] or o[2] <= b[0] or b[3] <= o[1] or o[3] <= b[1] for o in placed)

    tries = [(t, side) for t in (0.5, 0.35, 0.65, 0.25, 0.75, 0.42, 0.58) for side in (1, -1)]
    t, side = next(((t, sd) for t, sd in tries if free(box(t, sd))), tries[0])
    b = box(t, side)
    placed.append(b)
    return b[0], b[3] - 3


def lineage_svg(lineage: Lineage) -> str:
    """An inline SVG of one lineage: root(s) on top, the subject at the bottom."""
    e = html.escape
    cat = licenses.catalogue()
    top = max(lineage.depth.values())
    layers: dict[int, list[str]] = {}
    for node in sorted(lineage.nodes):
        layers.setdefault(top - lineage.depth[node], []).append(node)
    widest = max(len(v) for v in layers.values())
    width = _PAD * 2 + widest * _BOX_W + (widest - 1) * _GAP_X
    height = _PAD * 2 + len(layers) * _BOX_H + (len(layers) - 1) * _GAP_Y
    pos: dict[str, tuple[float, float]] = {}
    for row, nodes in layers.items():
        span = len(nodes) * _BOX_W + (len(nodes) - 1) * _GAP_X
        x0 = (width - span) / 2
        for i, node in enumerate(nodes):
            pos[node] = (x0 + i * (_BOX_W + _GAP_X), _PAD + row * (_BOX_H + _GAP_Y))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" font-family="sans-serif" font-size="11">',
        "<defs>",
        '<marker id="arr" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="10" markerHeight="10" '
        'markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0L10,5L0,10z" fill="#555"/></marker>',
        '<marker id="arr-bad" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="12" markerHeight="12" '
        'markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0L10,5L0,10z" fill="#c62828"/></marker>',
        "</defs>",
    ]
    labels: list[str] = []
    placed: list[tuple[float, float, float, float]] = []  # label boxes drawn so far: no overprinting
    for child, parent, relation in lineage.edges:
        (cx, cy), (px, py) = pos[child], pos[parent]
        x1, y1, x2, y2 = cx + _BOX_W / 2, cy, px + _BOX_W / 2, py + _BOX_H
        bad = (child, parent) in lineage.conflict_edges
        colour, marker, stroke = ("#c62828", "arr-bad", 3) if bad else ("#555", "arr", 1.5)
        out.append(
            f'<line x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" stroke="{colour}" '
            f'stroke-width="{stroke}" marker-end="url(#{marker})"/>'
        )
        label = ("✗ " if bad else "") + (relation or "derived")
        lx, ly = _label_spot(x1, y1, x2, y2, _LABEL_CHAR_W * len(label), placed)
        labels.append(  # a white halo keeps the label legible where it crosses another edge
            f'<text x="{lx:.0f}" y="{ly:.0f}" fill="{colour}" font-style="italic" stroke="#fff" '
            f'stroke-width="3" paint-order="stroke">{e(label)}</text>'
        )
    out += labels
    for node, (x, y) in pos.items():
        license = lineage.nodes[node] or licenses.UNKNOWN
        fam = cat.family_of(license)
        border = ' stroke="#000" stroke-width="2.5"' if node == lineage.subject else ""
        out.append(
            f"<g><title>{e(node)} ({e(license)})</title>"
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{_BOX_W}" height="{_BOX_H}" rx="6" '
            f'fill="{e(fam.colour)}"{border}/>'
            f'<text x="{x + 8:.0f}" y="{y + 19:.0f}" fill="#fff" font-weight="bold">{e(_short(node))}</text>'
            f'<text x="{x + 8:.0f}" y="{y + 36:.0f}" fill="#fff">{e(_short(license))}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)
