"""Shared output of CLI rows as a rich table, JSON or CSV. Formatting only, no logic.

Cell values are untrusted (model ids, licence names, card text, tensor names from the Hub):
they go into tables as ``rich.text.Text``, never through rich's markup parser, so ``[/bold]``
or ``[link=...]`` in a value prints as those characters.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console()
if not console.is_terminal:  # piped or captured: do not squeeze tables into 80 columns
    console = Console(width=160)
# errors and warnings are never hard-wrapped when stderr is a file or a pipe (one line each)
err_console = Console(stderr=True, soft_wrap=True)

FORMATS = ("table", "json", "csv")


def render(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str, title: str | None = None) -> str | None:
    """Print ``rows`` as a table (returns None) or return them as JSON/CSV text."""
    if fmt == "json":
        return json.dumps([{c: r.get(c) for c in columns} for r in rows], indent=2, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({c: r.get(c) for c in columns})
        return buf.getvalue()
    table = Table(title=Text(title) if title is not None else None)
    for c in columns:
        table.add_column(Text(c), overflow="fold")  # ids wrap whole, never cut to "Qwen/Q…"
    for r in rows:
        table.add_row(*[Text("" if r.get(c) is None else str(r.get(c))) for c in columns])
    console.print(table)
    return None


def emit(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str, title: str | None = None) -> None:
    text = render(rows, columns, fmt, title)
    if text is not None:
        print(text, end="" if text.endswith("\n") else "\n")
