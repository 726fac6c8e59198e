"""CSV cells and input groups in the format of ``neo4j-admin database import full``.

How one property value becomes a cell (types, nulls, booleans, arrays on U+001F), a header
file per input group, the data files of a group (plain and multiline), and pass 1 over the
rows: the importer type of every property key. No Neo4j and no processes here.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

from lineage_index.records import Edge
from lineage_index.schema.writer import _check_props

ARRAY_DELIMITER = "\x1f"  # never in a model id, a licence id or a tag; passed as U+001F
_BAD_KEY_CHARS = frozenset(',:"\n\r' + ARRAY_DELIMITER)

Rows = Iterable[Mapping[str, Any]] | Callable[[], Iterable[Mapping[str, Any]]]
Edges = Iterable[Edge] | Callable[[], Iterable[Edge]]


def reiterable(items):
    """A zero-argument callable giving a fresh iterator each call (materialises one-shot iterators)."""
    if callable(items):
        return items
    if iter(items) is items:
        items = list(items)
    return lambda: items


def count_rows(original, factory) -> int:
    if not callable(original):
        try:
            return len(original)
        except TypeError:
            pass
    return sum(1 for _ in factory())


# --- CSV cells ---------------------------------------------------------------------------------
#
# Rows go through the C ``csv`` writer with QUOTE_NONNUMERIC: strings are quoted (quotes doubled),
# numbers are not. A missing property must be an *unquoted* empty field (a quoted "" is the empty
# string), so ``None`` is written as ``NULL``, an int whose text is empty. Booleans travel as
# "true"/"false" (the importer reads True as false), arrays as one string joined by U+001F.


class _Null(int):
    def __str__(self) -> str:
        return ""

    __repr__ = __str__


NULL = _Null(0)
TRUE, FALSE = "true", "false"
_PYTYPE = {"string": str, "boolean": bool, "long": int, "double": float}
EMPTY_MARKER = "__bulk_empty_lists"  # keys whose value is [] (set server-side after the import)
_LONG_MIN, _LONG_MAX = -(2**63), 2**63
_STR, _BOOL, _LONG, _DOUBLE, _STRS, _LIST = range(6)  # column codes of the row loop
_CODE = {"string": _STR, "boolean": _BOOL, "long": _LONG, "double": _DOUBLE, "string[]": _STRS}
MODEL_TAIL = ("license_effective", "license_source", "license_inherited_from", "license_family", "updated_at")


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
        return TRUE if value else FALSE
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


def has_newline(value: str) -> bool:
    return "\n" in value or "\r" in value


def write_header(folder: Path, name: str, id_columns: list[str], columns: Mapping[str, str], *,
                  tail: Mapping[str, str] | None = None, marker: bool = False) -> Path:
    """The header file of an importer input group (its data files follow it on the command line)."""
    head = id_columns + [f"{k}:{t}" for k, t in columns.items()] + [f"{k}:{t}" for k, t in (tail or {}).items()]
    if marker:
        head.append(f"{EMPTY_MARKER}:string[]")
    path = folder / f"{name}.header.csv"
    path.write_text(",".join(head) + "\n", encoding="utf-8")
    return path


class Group:
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
        if part is None:  # parts of one group share the header their caller wrote (write_header)
            write_header(folder, name, id_columns, columns, tail=tail, marker=marker)
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
                vals.append(NULL)
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
                    vals.append(TRUE if v else FALSE)
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
                vals.append(NULL)
                continue
            if _kind(v) == kind:
                f = _field(v, kind)
                multiline = multiline or (type(f) is str and has_newline(f))
                vals.append(f)
                continue
            rest = rest if rest is not None else {}
            rest[key] = v
            vals.append(NULL)
        if not self._known.issuperset(props):
            for key in props.keys() - self._known:
                if props[key] is not None:
                    rest = rest if rest is not None else {}
                    rest[key] = props[key]
        vals.extend(tail)
        if self.marker:
            vals.append(ARRAY_DELIMITER.join(empty) if empty else NULL)
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


class Kinds:
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
            if key in skip or key == EMPTY_MARKER or key.startswith(":") or any(c in _BAD_KEY_CHARS for c in key):
                continue
            if key not in best or (n, kind) > best[key]:
                best[key] = (n, kind)
        for keys, _ in self.shapes:
            for key in keys:
                _check_props("a model row", {key: None})  # names: non-empty strings without NUL
        return {k: best[k][1] for k in sorted(best)}, lists
