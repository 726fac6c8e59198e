"""Pictures say what they claim: no overprinted edge labels in lineage trees, evidence plots whose
legend stays off the data and whose coincident series can still be told apart."""

from __future__ import annotations

import re

from lineage_index.indexer.check.report import layers_svg
from lineage_index.queries.report import Lineage, lineage_svg


def _label_boxes(svg: str) -> list[tuple[float, float, float, float]]:
    boxes = []
    for x, y, text in re.findall(r'<text x="([\d.-]+)" y="([\d.-]+)"[^>]*font-style="italic"[^>]*>([^<]*)</text>', svg):
        x0, y0 = float(x), float(y)
        boxes.append((x0, y0 - 10, x0 + 6.5 * len(text), y0 + 3))
    return boxes


def test_edge_labels_of_crossing_edges_are_not_printed_over_each_other() -> None:
    # a and b on top, c and d below; c -> b and d -> a cross, and their midpoints coincide
    lin = Lineage("c", {m: "mit" for m in "abcd"}, {"a": 1, "b": 1, "c": 0, "d": 0},
                  [("c", "b", "finetune"), ("d", "a", "quantized"), ("c", "a", "merge"), ("d", "b", "merge")])
    boxes = _label_boxes(lineage_svg(lin))
    assert len(boxes) == 4
    for i, p in enumerate(boxes):
        for q in boxes[i + 1:]:
            assert p[2] <= q[0] or q[2] <= p[0] or p[3] <= q[1] or q[3] <= p[1], (p, q)


def test_evidence_plot_keeps_its_legend_off_the_data_and_tells_coincident_series_apart() -> None:
    pts = [{"layer": i, "cos": 0.99, "key": f"k{i}", "z": 9.0} for i in range(4)]
    svg = layers_svg({"o/copy": pts, "o/reupload": list(pts)}, {"cos_mean": 0.01})
    plot_right = 760 - 220
    texts = re.findall(r'<text x="([\d.]+)"[^>]*>([^<]*)</text>', svg)
    legend = {t: float(x) for x, t in texts if t in ("o/copy", "o/reupload", "unrelated background")}
    assert set(legend) == {"o/copy", "o/reupload", "unrelated background"}
    assert all(x > plot_right for x in legend.values())  # the legend is beside the plot, not on it
    circles = [float(x) for x in re.findall(r'<circle cx="([\d.]+)"', svg)]
    squares = [float(x) + 2.5 for x in re.findall(r'<rect x="([\d.]+)" y="[\d.]+" width="5"', svg)]
    assert len(circles) == 5 and len(squares) == 5  # 4 points + the legend's sample, each its own shape
    assert min(abs(c - s) for c, s in zip(sorted(circles)[:4], sorted(squares)[:4], strict=True)) >= 2
    assert 'stroke-dasharray="6,3"' in svg  # the second series' line is dashed
