"""The evidence page of one ``check`` (``--report PATH``): one self-contained HTML file.

It shows the verdict with its calibrated probability and the card's claim, a picture of the
model's place in its lineage (the recovered parents, what their cards and the graph say above
them, siblings from the graph, stored children; drawn by ``queries.report.lineage_svg``, nodes
coloured by licence family), the per-layer similarity of the best candidates (one inline SVG:
1 - centred cosine per sampled matrix, log scale, against the background), the candidates
with their probabilities, the licence chain, the evidence lines, the bytes read and the
calibration's provenance. Inline CSS and SVG only: no script, no external resource; every
string is escaped. Rendering only: no I/O besides what the caller writes.
"""

from __future__ import annotations

import html
import math
from collections import deque
from typing import Any

from lineage_index import __version__
from lineage_index.queries import licenses
from lineage_index.queries.report import Lineage, lineage_svg

LABELS = {
    "copy": "exact or re-upload copy", "quantized": "quantised copy", "adapter": "adapter",
    "finetune": "fine-tune", "merge": "merge", "prune": "pruned",
    "family_unresolved": "same family, parent unresolved", "no_relative": "no known relative",
    "insufficient": "insufficient evidence",
}
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
MARKERS = ("circle", "square", "triangle", "diamond", "cross")
DASHES = ("", "6,3", "2,2", "8,3,2,3", "4,4")
MAX_NODES = 40
_CSS = """
body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}
th{background:#f3f3f3}.verdict{font-size:1.4em}.supported{color:#2e7d32}.contradicted{color:#c62828}
.none,.unverified,.imprecise{color:#8a6d00}code{background:#f5f5f5;padding:0 3px}figure{margin:1em 0}
figcaption{font-size:12px;color:#555}
"""


def label(verdict: str) -> str:
    return LABELS.get(verdict, verdict)


def _tree(result: dict[str, Any], context: dict[str, Any] | None) -> Lineage:
    """The lineage picture: the target at depth 0, parents above, children below."""
    target = result["target"]
    edges: list[tuple[str, str, str]] = [tuple(e) for e in result.get("lineage", [])]  # type: ignore[misc]
    lic = {m: lc for m, lc in result.get("node_licenses", {}).items() if lc}
    lic.update({m: lc for m, lc in result.get("license_chain", []) if lc})
    lic[target] = result.get("license")
    if context:
        edges += [tuple(e) for e in context.get("edges", [])]  # type: ignore[misc]
        for m, lc in context.get("licenses", {}).items():
            lic.setdefault(m, lc)
    edges = list(dict.fromkeys((c, p, r) for c, p, r in edges if c != p))
    depth = {target: 0}
    queue = deque([target])
    while queue and len(depth) < MAX_NODES:  # breadth first, up (parents) and down (children)
        m = queue.popleft()
        for c, p, _ in edges:
            for a, b, step in ((c, p, 1), (p, c, -1)):
                if a == m and b not in depth and len(depth) < MAX_NODES:
                    depth[b] = depth[m] + step
                    queue.append(b)
    shown = [(c, p, r) for c, p, r in edges if c in depth and p in depth and depth[p] > depth[c]]
    nodes = {m: lic.get(m) or licenses.UNKNOWN for m in depth}
    bad = {(c, p) for c, p, r in shown if "contradicted" in r}
    return Lineage(target, nodes, depth, shown, bad, truncated=len(depth) >= MAX_NODES)


def _marker(shape: str, x: float, y: float, colour: str, title: str) -> str:
    """One data point drawn as ``shape`` (so that series are told apart without colour too)."""
    tip = f"<title>{title}</title>"
    if shape == "square":
        return f'<rect x="{x - 2.5:.1f}" y="{y - 2.5:.1f}" width="5" height="5" fill="{colour}">{tip}</rect>'
    if shape == "triangle":
        return (f'<path d="M{x:.1f},{y - 3.5:.1f}L{x + 3.2:.1f},{y + 2.5:.1f}L{x - 3.2:.1f},{y + 2.5:.1f}z" '
                f'fill="{colour}">{tip}</path>')
    if shape == "diamond":
        return (f'<path d="M{x:.1f},{y - 3.5:.1f}L{x + 3.5:.1f},{y:.1f}L{x:.1f},{y + 3.5:.1f}L{x - 3.5:.1f},{y:.1f}z" '
                f'fill="{colour}">{tip}</path>')
    if shape == "cross":
        return (f'<path d="M{x - 3:.1f},{y - 3:.1f}L{x + 3:.1f},{y + 3:.1f}M{x - 3:.1f},{y + 3:.1f}L{x + 3:.1f},'
                f'{y - 3:.1f}" stroke="{colour}" stroke-width="1.5">{tip}</path>')
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}">{tip}</circle>'


def layers_svg(layers: dict[str, list[dict[str, Any]]], background: dict[str, Any]) -> str:
    """1 - cosine per sampled matrix by layer (log scale), one colour per candidate."""
    w, h, left, right, top, bottom = 760, 300, 60, 220, 20, 40
    lo_exp, hi_exp = -7, 0.5  # 1e-7 .. ~3
    pts = [(p.get("layer"), p["cos"]) for ps in layers.values() for p in ps]
    xs = sorted({(lay if lay is not None else -1) for lay, _ in pts}) or [0]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1

    def sx(layer: int | None) -> float:
        v = layer if layer is not None else -1
        return left + (v - x0) / (x1 - x0) * (w - left - right)

    def sy(one_minus_cos: float) -> float:
        v = math.log10(min(max(one_minus_cos, 10.0 ** lo_exp), 10.0 ** hi_exp))
        return top + (hi_exp - v) / (hi_exp - lo_exp) * (h - top - bottom)

    e = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
           f'font-size="11" role="img"><rect width="{w}" height="{h}" fill="#fff"/>']
    for k in range(lo_exp, 1):
        y = sy(10.0 ** k)
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">1e{k}</text>')
    bg_level = 1.0 - float(background.get("cos_mean", 0.0))
    y = sy(bg_level)
    out.append(f'<line x1="{left}" x2="{w - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#999" stroke-dasharray="5,4"/>')
    for v in xs:
        out.append(f'<text x="{sx(v):.1f}" y="{h - bottom + 14}" text-anchor="middle">'
                   f'{"other" if v == -1 else v}</text>')
    out.append(f'<text x="{(left + w - right) / 2:.0f}" y="{h - 6}" text-anchor="middle">layer</text>'
               f'<text x="14" y="{(top + h - bottom) / 2:.0f}" transform="rotate(-90 14 {(top + h - bottom) / 2:.0f})" '
               'text-anchor="middle">1 − centred cosine (log)</text>')
    # Series that coincide (a copy and its re-upload) stay apart: each has its own marker and
    # dash pattern, and is shifted sideways by a few pixels (a "dodge") within its layer.
    n = len(layers)
    step = min(4.0, (w - left - right) / max(len(xs), 1) / max(n, 1) / 2)
    legend_x = w - right + 8
    for i, (cand, ps) in enumerate(layers.items()):
        colour, dash, shape = COLOURS[i % len(COLOURS)], DASHES[i % len(DASHES)], MARKERS[i % len(MARKERS)]
        dx = (i - (n - 1) / 2) * step
        by_layer: dict[int, list[float]] = {}
        for p in ps:
            by_layer.setdefault(p.get("layer") if p.get("layer") is not None else -1, []).append(1.0 - p["cos"])
        line = " ".join(f"{sx(lay) + dx:.1f},{sy(sorted(v)[len(v) // 2]):.1f}" for lay, v in sorted(by_layer.items()))
        out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.5"'
                   f'{f" stroke-dasharray={chr(34)}{dash}{chr(34)}" if dash else ""}/>')
        for p in ps:
            out.append(_marker(shape, sx(p.get("layer")) + dx, sy(1.0 - p["cos"]), colour,
                               f'{e(cand)} {e(p["key"])}: cos {p["cos"]:.6f}, z {p["z"]:.1f}'))
        ly = top + 14 + 16 * i
        out.append(f'<line x1="{legend_x}" x2="{legend_x + 18}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" '
                   f'stroke-width="1.5"{f" stroke-dasharray={chr(34)}{dash}{chr(34)}" if dash else ""}/>'
                   + _marker(shape, legend_x + 9, ly - 4, colour, e(cand))
                   + f'<text x="{legend_x + 24}" y="{ly}">{e(cand[:30])}</text>')
    ly = top + 14 + 16 * n
    out.append(f'<line x1="{legend_x}" x2="{legend_x + 18}" y1="{ly - 4}" y2="{ly - 4}" stroke="#999" '
               f'stroke-dasharray="5,4"/><text x="{legend_x + 24}" y="{ly}" fill="#777">unrelated background</text>')
    out.append("</svg>")
    return "".join(out)


def render_report(result: dict[str, Any], context: dict[str, Any] | None = None) -> str:
    """The HTML evidence page of a check result (``CheckResult.to_dict()``), with graph context."""
    e = html.escape
    r = result
    parents = ", ".join(f"{p} ({w:.2f})" for p, w in zip(r["parents"], r["coefficients"], strict=False)) \
        if r["coefficients"] else ", ".join(r["parents"])
    claim = r["claim"]
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>check: {e(r["target"])}</title>'
        f"<style>{_CSS}</style></head><body>",
        f"<h1>lineage check of <code>{e(r['target'])}</code></h1>",
        f'<p class="verdict"><strong>{e(label(r["verdict"]))}</strong>{" of " + e(parents) if parents else ""} '
        f'&mdash; probability {r["probability"]:.2f}</p>',
        f'<p>The card declares {e(", ".join(claim["declared"]) or "no base model")}: '
        f'<strong class="{e(claim["status"])}">{e(claim["status"].replace("_", " "))}</strong> '
        f'({e(claim["reason"])}). Exit code {r["exit_code"]}.</p>',
    ]
    if r.get("policy_failures"):
        parts.append("<p class='contradicted'>Policy: " + "; ".join(e(f) for f in r["policy_failures"]) + "</p>")
    lineage = _tree(r, context)
    src = "the graph, the store's cards and this check" if context else "this check and the store's cards"
    parts += ["<h2>Place in the lineage</h2>",
              f"<figure>{lineage_svg(lineage)}<figcaption>From {e(src)}: the checked model (bold border), "
              "recovered parents above it, declared bases above them, stored children below; contradicted "
              "declarations in red. Colours: licence family.</figcaption></figure>"]
    parts.append("<h2>Best candidates</h2><table><tr><th>model</th><th>relation</th><th>P(parent)</th>"
                 "<th>P(related)</th><th>cos</th><th>z (vs background)</th><th>dist</th><th>evidence</th></tr>")
    for c in r["candidates"][:10]:
        parts.append(f"<tr><td>{e(c['model_id'])}</td><td>{e(c['relation'])}</td><td>{c['probability']:.3f}</td>"
                     f"<td>{c['p_related']:.3f}</td><td>{c['cos_median']:.5f}</td><td>{c['z']:.1f}</td>"
                     f"<td>{c['dist']:.5f}</td><td>{e(c['evidence'])}</td></tr>")
    parts.append("</table>")
    if r.get("layers"):
        parts += ["<h2>Per-layer similarity</h2>",
                  f"<figure>{layers_svg(r['layers'], r['background'])}<figcaption>Each dot is one sampled "
                  "matrix (hover: name, cosine, z against its null); lines join the per-layer medians. Related "
                  "models sit orders of magnitude below the unrelated background.</figcaption></figure>"]
    if r.get("merge"):
        m = r["merge"]
        parts.append(f"<h2>Merge</h2><p>{e(m['method'])} merge"
                     f"{' over base ' + e(m['base']) if m.get('base') else ''}, residual {m['residual_ratio']:.3f} "
                     f"of the best single parent's; mergekit method {e(m.get('mergekit_method') or m['method'])}.</p>")
    parts.append("<h2>Licence chain</h2>")
    if r.get("license_chain"):
        parts.append("<table><tr><th>model</th><th>licence</th></tr>" + "".join(
            f"<tr><td>{e(m)}</td><td>{e(lc or 'unknown')}</td></tr>" for m, lc in r["license_chain"]) + "</table>")
    else:
        parts.append("<p>No recovered parent, so no licence chain.</p>")
    parts.append("<h2>Evidence</h2><ul>" + "".join(f"<li>{e(x)}</li>" for x in r["evidence"]) + "</ul>")
    bg = r["background"]
    prov = r.get("calibration") or {}
    zoos = ", ".join(f"{z.get('size')} seed {z.get('seed')}" for z in prov.get("zoos", []))
    parts += [
        f"<p>Background: {bg['n_pairs']} unrelated stored pairs of this architecture, cos "
        f"{bg['cos_mean']:+.4f} ± {bg['cos_sd']:.4f} ({e(bg['source'])}).</p>",
        f"<p>Read {r['bytes_read']:,} bytes in {r['requests']} requests in {r['seconds']:.2f} s"
        f"{'; ' + e(r['graph']) if r.get('graph') else ''}.</p>",
        f"<p>Probabilities from the calibration fitted {e(str(prov.get('created', '?')))} on "
        f"{prov.get('n_pairs', '?')} labelled pairs from generated zoos ({e(zoos or '?')}). "
        f"lineage-index {e(__version__)}.</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
