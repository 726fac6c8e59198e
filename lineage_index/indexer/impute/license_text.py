"""Licence identification from a repository's LICENSE / NOTICE text, tolerant to edits.

``identify_license(text)`` compares the text with the reference sentences shipped in
``data/license_texts/*.yaml`` (distinctive sentences of each known licence, not full texts):
both are normalised (lower case, punctuation dropped, whitespace collapsed) and cut into word
3-shingles; each reference scores the IDF-weighted share of its shingles found in the text
(shingles many references share, like warranty boilerplate, weigh little; titles and version
strings weigh most). Whitespace mangling, reflowed lines and a few changed words only remove
a few shingles, so the score degrades gently. ``read_license_texts`` reads such files from a
source, bounded in size, and never any other file. Nothing here touches weights or Neo4j.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from lineage_index.errors import LineageIndexError
from lineage_index.records import ModelRecord

SHINGLE = 3
MIN_SCORE = 0.3  # weighted containment below this: not identified
MIN_MARGIN = 0.05  # best must beat the runner-up by this much
MAX_LICENSE_BYTES = 64 * 1024
_LICENSE_NAME = re.compile(r"^(licen[cs]e|notice|copying)([._-].*)?$", re.IGNORECASE)
_TOKEN = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class LicenseMatch:
    """The licence a text was identified as, with its weighted containment score in [0, 1]."""

    license: str
    score: float
    runner_up: str | None = None
    runner_up_score: float = 0.0


def normalise(text: str) -> list[str]:
    """Lower-case word tokens; punctuation and all whitespace differences disappear."""
    return _TOKEN.findall(text.lower())


def shingles(tokens: list[str], k: int = SHINGLE) -> set[tuple[str, ...]]:
    """The set of word k-shingles of ``tokens`` (one shingle of the whole when shorter)."""
    if len(tokens) < k:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i : i + k]) for i in range(len(tokens) - k + 1)}


@lru_cache(maxsize=1)
def load_license_texts() -> dict[str, str]:
    """Reference text of every licence shipped in ``data/license_texts`` (id -> text)."""
    out: dict[str, str] = {}
    folder = resources.files("lineage_index.indexer.impute") / "data" / "license_texts"
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".yaml"):
            continue
        data: Any = yaml.safe_load(entry.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("id"), str) and isinstance(data.get("text"), str):
            out[data["id"]] = data["text"]
    return out


class LicenseIdentifier:
    """Weighted shingle containment against a set of reference texts."""

    def __init__(self, references: Mapping[str, str]) -> None:
        self.refs = {lid: shingles(normalise(t)) for lid, t in references.items()}
        df: dict[tuple[str, ...], int] = {}
        for sh in self.refs.values():
            for s in sh:
                df[s] = df.get(s, 0) + 1
        n = max(len(self.refs), 1)
        self.weight = {s: math.log(1.0 + n / c) for s, c in df.items()}
        self.total = {lid: sum(self.weight[s] for s in sh) or 1.0 for lid, sh in self.refs.items()}

    def scores(self, text: str) -> dict[str, float]:
        """Weighted share of each reference's shingles present in ``text``."""
        doc = shingles(normalise(text))
        return {lid: sum(self.weight[s] for s in sh if s in doc) / self.total[lid] for lid, sh in self.refs.items()}

    def identify(self, text: str) -> LicenseMatch | None:
        """The best-matching licence, or None when nothing scores well enough or two tie."""
        if not isinstance(text, str) or not text.strip():
            return None
        ranked = sorted(self.scores(text).items(), key=lambda kv: (-kv[1], kv[0]))
        if not ranked or ranked[0][1] < MIN_SCORE:
            return None
        second = ranked[1] if len(ranked) > 1 else (None, 0.0)
        if ranked[0][1] - second[1] < MIN_MARGIN:
            return None
        return LicenseMatch(ranked[0][0], ranked[0][1], second[0], second[1])


@lru_cache(maxsize=1)
def default_identifier() -> LicenseIdentifier:
    return LicenseIdentifier(load_license_texts())


def identify_license(text: str, references: Mapping[str, str] | None = None) -> LicenseMatch | None:
    """Identify ``text`` against the shipped licences (or ``references``: id -> text)."""
    ident = default_identifier() if references is None else LicenseIdentifier(references)
    return ident.identify(text)


def is_license_file(path: str) -> bool:
    """LICENSE*, LICENCE*, NOTICE*, COPYING* (any case), at any depth of the repository."""
    name = path.rsplit("/", 1)[-1]
    return bool(_LICENSE_NAME.match(name))


def _license_paths(rec: ModelRecord) -> list[str]:
    paths = [f.path for f in rec.files if is_license_file(f.path)]
    # LICENSE before NOTICE, shallow before deep
    return sorted(paths, key=lambda p: (p.count("/"), "notice" in p.lower(), p.lower()))[:4]


def read_license_texts(source: Any, records: Iterable[ModelRecord], *,
                       max_bytes: int = MAX_LICENSE_BYTES) -> dict[str, str]:
    """Text of the licence files of each record that has some (id -> text).

    Reads only files named like a licence, through ``source.open_reader(record)``, at most
    ``max_bytes`` of each (a longer file contributes its first ``max_bytes``). A model whose
    files cannot be read is skipped; nothing is raised for one model.
    """
    out: dict[str, str] = {}
    for rec in records:
        paths = _license_paths(rec)
        if not paths:
            continue
        try:
            reader = source.open_reader(rec)
        except (LineageIndexError, OSError, ValueError):
            continue
        parts: list[str] = []
        try:
            for path in paths:
                try:
                    data = reader.read_file(path, max_bytes)
                except LineageIndexError:
                    try:
                        data = reader.read_prefix(path, max_bytes)
                    except (LineageIndexError, OSError):
                        continue
                except OSError:
                    continue
                parts.append(data.decode("utf-8", errors="replace"))
        finally:
            close = getattr(reader, "close", None)
            if close is not None:
                close()
        if parts:
            out[rec.id] = "\n".join(parts)
    return out
