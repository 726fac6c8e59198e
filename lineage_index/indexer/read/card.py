"""Model-card metadata: README front matter and Hub tags -> the fields a ModelRecord carries.

``front_matter`` parses the YAML block at the top of a README with ``yaml.safe_load`` and
returns None (no card) for anything broken or hostile instead of raising. ``card_fields``
combines the card (the author's claim: ``base_model`` as a string or list, legacy
``finetuned_from``, ``base_model_relation``, ``license``/``license_name``, ...) with the Hub's
computed tags (``base_model:<id>``, ``base_model:<relation>:<id>``, ``license:<id>``).
Declared base models are cleaned into Hub repo ids (``clean_repo_id``). Pure functions: no I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import yaml

from lineage_index.errors import ModelReadError

MAX_LIST_ITEMS = 1000
BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")


@dataclass(frozen=True)
class CardFields:
    license: str | None = None
    license_name: str | None = None
    base_models: tuple[str, ...] = ()
    base_model_relation: str | None = None
    tags: tuple[str, ...] = ()
    pipeline_tag: str | None = None
    library_name: str | None = None
    created_at: str | None = None


def front_matter(data: bytes | str) -> dict[str, Any] | None:
    """The YAML front matter (``---`` ... ``---``) of a README as a dict, or None."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    text = text.lstrip("\ufeff")
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() in ("---", "..."):
            block = "\n".join(lines[1:i])
            break
    else:
        return None
    try:
        obj = yaml.safe_load(block)
    except (yaml.YAMLError, RecursionError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def iso_utc(value: Any) -> str | None:
    """ISO 8601 UTC with a ``Z`` (seconds precision) from a datetime, date, epoch or ISO string."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            value = datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):  # out of any calendar: no date
            return None
    elif isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _str_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, (list, tuple)):
        return [v.strip() for v in value[:MAX_LIST_ITEMS] if isinstance(v, str) and v.strip()]
    return []


def _str(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


_HUB_URL = re.compile(r"^(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/(?:models/)?", re.IGNORECASE)
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")


def clean_repo_id(value: str) -> str | None:
    """A declared base model as a Hub repo id: Hub URLs (``https://huggingface.co/org/name``,
    ``hf.co/...``, ``.../tree/main``), revisions (``org/name@v1``), trailing slashes and ``.git``
    are cut away; local paths and anything else that is not ``[org/]name`` give None (a card's
    ``base_model: /home/me/llama`` names no model anyone else can find)."""
    v = _HUB_URL.sub("", value.strip())
    v = re.split(r"/(?:tree|blob|resolve|commit)/", v, maxsplit=1)[0]
    v = v.split("@", 1)[0].split("?", 1)[0].split("#", 1)[0].rstrip("/")
    if v.endswith(".git"):
        v = v[: -len(".git")]
    return v if _REPO_ID.match(v) and ".." not in v else None


def _repo_ids(values: list[str]) -> list[str]:
    return [c for v in values if (c := clean_repo_id(v)) is not None]


def parse_base_model_tags(tags: Sequence[str]) -> tuple[list[str], list[str]]:
    """(parent ids, relations) from ``base_model:<id>`` / ``base_model:<relation>:<id>`` tags."""
    parents: list[str] = []
    relations: list[str] = []
    for tag in tags:
        parts = tag.split(":", 2)
        if parts[0] != "base_model" or len(parts) < 2:
            continue
        if len(parts) == 3 and parts[1] in BASE_MODEL_RELATIONS:
            relations.append(parts[1])
            parents.append(parts[2])
        else:
            parents.append(tag.split(":", 1)[1])
    return parents, relations


# base models one card may declare: merges name a handful, model soups a few dozen; thousands
# are a resource bomb (every one would become a stub node and an edge)
MAX_BASE_MODELS = 64


class CardError(ModelReadError):
    kind = "bad_card"


def card_fields(card: dict[str, Any] | None, hub_tags: Sequence[str] | None = None) -> CardFields:
    """Record fields from card data and (when from the Hub) its computed tags."""
    card = card or {}
    tags = _str_list(hub_tags) if hub_tags is not None else _str_list(card.get("tags"))
    tag_parents, tag_relations = parse_base_model_tags(tags)
    base_models = _unique(_repo_ids(
        _str_list(card.get("base_model")) + tag_parents + _str_list(card.get("finetuned_from"))
    ))
    if len(base_models) > MAX_BASE_MODELS:
        raise CardError(f"the card declares {len(base_models):,} base models (limit {MAX_BASE_MODELS}); "
                        "not a model card's lineage")
    relation = _str(card.get("base_model_relation"))
    if relation is None and len(set(tag_relations)) == 1:
        relation = tag_relations[0]
    licenses = _str_list(card.get("license"))
    license_ = licenses[0] if licenses else None
    if license_ is None:
        license_ = next((t.split(":", 1)[1] for t in tags if t.startswith("license:")), None)
    return CardFields(
        license=license_,
        license_name=_str(card.get("license_name")),
        base_models=base_models if base_models else (),
        base_model_relation=relation if base_models else None,
        tags=tuple(tags),
        pipeline_tag=_str(card.get("pipeline_tag")),
        library_name=_str(card.get("library_name")),
        created_at=iso_utc(card.get("created_at")),
    )
