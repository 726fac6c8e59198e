"""The graph model (labels, relationship types, key properties) and the schema it needs.

``ensure_schema(driver)`` applies the shipped ``constraints/*.cypher`` files, in name order,
idempotently (every statement says IF NOT EXISTS), then waits for the indexes to come online.
This module must not write data and must not build Cypher from user input: the .cypher files
are fixed package data.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from neo4j import Driver

from lineage_index import config
from lineage_index.records import ModelRecord, Sketch

# Node labels.
MODEL = "Model"
LICENSE = "License"
ORGANIZATION = "Organization"

# Relationship types.
DERIVED_FROM = "DERIVED_FROM"  # (child:Model)-[:DERIVED_FROM]->(parent:Model): lineage only
# (child:Model)-[:DECLARES_BASE]->(parent:Model): a card's base_model the weights do not support
# as the direct parent (verdict imprecise or contradicted), same properties as DERIVED_FROM
DECLARES_BASE = "DECLARES_BASE"
LICENSED_UNDER = "LICENSED_UNDER"  # (:Model)-[:LICENSED_UNDER]->(:License)
PUBLISHED_BY = "PUBLISHED_BY"  # (:Model)-[:PUBLISHED_BY]->(:Organization)
ALLOWS_DERIVATIVE_UNDER = "ALLOWS_DERIVATIVE_UNDER"  # (:License)-[...]->(:License)

LABELS: tuple[str, ...] = (MODEL, LICENSE, ORGANIZATION)
RELATIONSHIP_TYPES: tuple[str, ...] = (
    DERIVED_FROM,
    DECLARES_BASE,
    LICENSED_UNDER,
    PUBLISHED_BY,
    ALLOWS_DERIVATIVE_UNDER,
)

# Key property of every node label (unique constraint), and the DERIVED_FROM properties.
KEY = "id"
EDGE_PROPERTIES: tuple[str, ...] = (
    "relation",
    "source",
    "confidence",
    "closeness",
    "evidence",
    "contradicted",
    "recovered_parent",
    "verdict",
    "updated_at",
)

# Names of the constraints and indexes the .cypher files create (checked by tests).
CONSTRAINT_NAMES: tuple[str, ...] = ("model_id", "license_id", "organization_id")
INDEX_NAMES: tuple[str, ...] = (
    "model_family",
    "model_root",
    "derived_from_relation",
)


def model_props(rec: ModelRecord, sketch: Sketch | None, root: str | None) -> dict[str, Any]:
    """The properties of a ``Model`` node (besides its key and imputed fields): card, config, sketch."""
    cfg = rec.config or {}
    archs = cfg.get("architectures")
    return {
        "sha": rec.sha,
        "author": rec.author,
        "created_at": rec.created_at,
        "license": rec.license,
        "license_name": rec.license_name,
        "declared_base_models": list(rec.base_models) or None,  # none declared: no property
        "base_model_relation": rec.base_model_relation,
        "pipeline_tag": rec.pipeline_tag,
        "library_name": rec.library_name,
        "model_type": cfg.get("model_type") if isinstance(cfg.get("model_type"), str) else None,
        "architectures": [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else None,
        "gated": bool(rec.gated),
        "private": bool(rec.private),
        "weight_format": rec.weight_format,
        # a repo of several weight files (GGUF levels): the one sketched, and every variant
        "weight_file": (cfg.get("gguf") or {}).get("file") if isinstance(cfg.get("gguf"), dict) else None,
        "variants": [f"{v.get('file')} ({v.get('quant')})" for v in cfg["gguf"].get("variants", [])]
        if isinstance(cfg.get("gguf"), dict) else None,
        "source": rec.source,
        "is_adapter": rec.is_adapter,
        "family": sketch.family if sketch else None,
        "kind": sketch.kind if sketch else None,
        "quant": sketch.quant if sketch else None,
        "dtypes": list(sketch.dtypes) if sketch else None,
        "sketch_bytes_read": sketch.bytes_read if sketch else None,
        "root": root,
        "status": "indexed" if sketch else "metadata-only",
    }


def schema_statements() -> list[str]:
    """The statements of the shipped ``constraints/*.cypher`` files, in file-name order.

    Lines starting with ``//`` are comments; statements end with ``;``.
    """
    folder = resources.files("lineage_index.schema").joinpath("constraints")
    statements: list[str] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".cypher"):
            continue
        lines = [
            line
            for line in entry.read_text(encoding="utf-8").splitlines()
            if not line.strip().startswith("//")
        ]
        statements.extend(s.strip() for s in "\n".join(lines).split(";") if s.strip())
    return statements


def ensure_schema(
    driver: Driver, database: str | None = None, await_indexes_s: int = 300
) -> list[str]:
    """Create the constraints and indexes (idempotent); returns the statements applied."""
    db = database or config.DEFAULT_DATABASE
    statements = schema_statements()
    for statement in statements:
        driver.execute_query(statement, database_=db)
    driver.execute_query("CALL db.awaitIndexes($seconds)", seconds=await_indexes_s, database_=db)
    return statements


def existing_schema(driver: Driver, database: str | None = None) -> dict[str, set[str]]:
    """Names of the constraints and indexes present, as {"constraints": .., "indexes": ..}."""
    db = database or config.DEFAULT_DATABASE
    constraints, _, _ = driver.execute_query("SHOW CONSTRAINTS YIELD name", database_=db)
    indexes, _, _ = driver.execute_query("SHOW INDEXES YIELD name", database_=db)
    return {
        "constraints": {r["name"] for r in constraints},
        "indexes": {r["name"] for r in indexes},
    }
