"""The licence catalogue (data/licenses.json) and the licence facts it puts into the graph.

``catalogue()`` loads the compatibility matrix of LICENSES.md §3.4 as data: licence ids,
categories, colour families, the ``license_name`` table that resolves ``license: other`` and
the tag-level code of every (parent, child) pair. ``load_catalogue(driver)`` writes it as
``License`` nodes and ``(:License)-[:ALLOWS_DERIVATIVE_UNDER {code}]->(:License)`` for the
codes ✓, C and W (no relationship = ✗ between decidable licences, ? otherwise), so a conflict
is a pure Cypher query. ``apply_license_inheritance(driver)`` gives every Model its effective
licence:

* ``license_source = 'declared'``: the card's licence, ``other`` resolved through the name table;
* ``'imputed'``: left as the imputation stage wrote it (``license_effective`` or
  ``license_imputed``), unless the card declares a decidable licence, which wins;
* ``'inherited'``: no declared licence: the licence of the nearest ancestor along
  non-contradicted DERIVED_FROM edges that has one (several at the same distance: the most
  restrictive category wins, then the higher edge confidence); ``license_inherited_from`` names
  the ancestor whose licence it is. Nothing found: the properties are null.

LICENSED_UNDER policy: each Model with an effective licence has exactly one
``LICENSED_UNDER {effective: true, source}`` link, to that licence. The writer's link to the raw
declared tag (e.g. ``other``) is kept beside it with ``effective: false``; any other link is
removed. Each Model and License also gets one colour label of its licence family
(``LicLlama``, ``LicPermissive``, ...) for Neo4j Browser styles. Both functions are
idempotent, write only what changed, and pass every value as a Cypher parameter.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from neo4j import Driver, ManagedTransaction

from lineage_index import config
from lineage_index.schema.writer import GraphWriter

UNKNOWN = "unknown"
CODES = ("✓", "C", "W", "?", "✗")  # from best to worst
RELATIONSHIP_CODES = ("✓", "C", "W")  # stored as ALLOWS_DERIVATIVE_UNDER


@dataclass(frozen=True)
class LicenseInfo:
    """One licence of the catalogue (HF id, or the id a ``license_name`` resolves to)."""

    id: str
    name: str
    category: str
    family: str
    spdx: str | None = None
    url: str | None = None
    clause: str = ""
    named: bool = False  # reached through ``license: other`` + license_name, not in the matrix
    adapter_strict: bool = False  # adapter leniency never applies under this parent
    derivatives_model_type: str | None = None  # Llama 2/3 §1.b.v: derivatives stay this type

    @property
    def decidable(self) -> bool:
        return self.category != UNKNOWN and not self.named


@dataclass(frozen=True)
class Family:
    id: str
    label: str  # node label for Neo4j Browser styles
    colour: str
    title: str


class Catalogue:
    """The licence catalogue: licences, families, rules and the license_name table."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.version = str(data["version"])
        self.codes: dict[str, str] = dict(data["codes"])
        self.category_rank = {k: int(v["rank"]) for k, v in data["categories"].items()}
        self.families = {
            k: Family(k, v["label"], v["colour"], v["title"]) for k, v in data["families"].items()
        }
        self.licenses: dict[str, LicenseInfo] = {}
        for lid, v in data["licenses"].items():
            self.licenses[lid] = LicenseInfo(id=lid, **v)
        for lid, v in data["named_licenses"].items():
            self.licenses[lid] = LicenseInfo(id=lid, named=True, **v)
        self.names: dict[str, str] = {_norm(k): v for k, v in data["names"].items()}
        self.matrix_columns: list[str] = list(data["matrix"]["columns"])
        self.matrix: dict[tuple[str, str], str] = {}
        for parent, row in data["matrix"]["rows"].items():
            codes = row.split()
            if len(codes) != len(self.matrix_columns):
                raise ValueError(f"licenses.json: matrix row {parent!r} has {len(codes)} codes")
            for child, code in zip(self.matrix_columns, codes, strict=True):
                self.matrix[(parent, child)] = code
        self._spdx = {i.spdx.lower(): i.id for i in self.licenses.values() if i.spdx}
        self._check()
        self._rules = self._derive_rules()

    def _check(self) -> None:
        for lic in self.licenses.values():
            if lic.category not in self.category_rank or lic.family not in self.families:
                raise ValueError(f"licenses.json: {lic.id} has an unknown category or family")
        for target in self.names.values():
            if target not in self.licenses:
                raise ValueError(f"licenses.json: name table points to unknown licence {target!r}")
        if set(self.matrix_columns) - set(self.licenses):
            raise ValueError("licenses.json: matrix columns not in licenses")

    def gate(self, value: str) -> frozenset[str] | None:
        """The licence ids a ``--fail-on-license`` value stands for: one licence (by its id or
        SPDX id) or every licence of a family (by the family id or label); None when the value
        names neither (a typo must not make a gate pass)."""
        v = value.strip().lower()
        for lid, info in self.licenses.items():
            if v == lid.lower() or (info.spdx and v == info.spdx.lower()):
                return frozenset({lid})
        for fid, fam in self.families.items():
            if v in (fid.lower(), fam.label.lower()):
                return frozenset(lid for lid, info in self.licenses.items() if info.family == fid)
        return None

    # --- codes --------------------------------------------------------------------------

    def rules(self) -> dict[tuple[str, str], str]:
        """Every (parent, child) pair whose tag-level code is ✓, C or W."""
        return dict(self._rules)

    def _derive_rules(self) -> dict[tuple[str, str], str]:
        out = {pair: c for pair, c in self.matrix.items() if c in RELATIONSHIP_CODES}
        for n in (i.id for i in self.licenses.values() if i.named):
            out[(n, n)] = "✓"
            out.update({(p, n): "✓" for p in self.matrix_columns if out.get((p, "other")) == "✓"})
        return out

    def code(self, parent: str | None, child: str | None) -> str:
        """Tag-level code of a parent -> child pair, the way the Cypher queries compute it."""
        parent, child = parent or UNKNOWN, child or UNKNOWN
        rule = self._rules.get((parent, child))
        if rule:
            return rule
        p, c = self.licenses.get(parent), self.licenses.get(child)
        if parent == child and (p is None or p.category != UNKNOWN):
            return "✓"
        if p is not None and c is not None and p.decidable and c.decidable:
            return "✗"
        return "?"

    # --- resolution ---------------------------------------------------------------------

    def resolve(self, license: Any, license_name: Any = None) -> str | None:
        """The catalogue id of a card's ``license`` (+ ``license_name`` for ``other``)."""
        if isinstance(license, list | tuple):
            license = next((x for x in license if isinstance(x, str) and x.strip()), None)
        if not isinstance(license, str) or not license.strip():
            return None
        lid = license.strip().lower()
        if lid == "other" and isinstance(license_name, str) and license_name.strip():
            return self.names.get(_norm(license_name), "other")
        if lid in self.licenses:
            return lid
        return self._spdx.get(lid, lid)

    def family_of(self, license_id: str | None) -> Family:
        lic = self.licenses.get(license_id or UNKNOWN)
        return self.families[lic.family if lic else UNKNOWN]

    def rank(self, license_id: str | None) -> int:
        lic = self.licenses.get(license_id or UNKNOWN)
        return self.category_rank[lic.category] if lic else self.category_rank[UNKNOWN]

    def family_labels(self) -> list[str]:
        return sorted(f.label for f in self.families.values())


def _norm(name: str) -> str:
    return "-".join(name.strip().lower().replace("_", " ").split())


@lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    """The shipped catalogue (``lineage_index/queries/data/licenses.json``)."""
    text = (
        resources.files("lineage_index.queries").joinpath("data/licenses.json").read_text("utf-8")
    )
    return Catalogue(json.loads(text))


# --- writing the catalogue --------------------------------------------------------------

_SET_RULES = """
UNWIND $rows AS row
MATCH (a:License {id: row.src})
MATCH (b:License {id: row.dst})
MERGE (a)-[r:ALLOWS_DERIVATIVE_UNDER]->(b)
SET r.code = row.code, r.catalogue_version = $version
"""

_DELETE_STALE_RULES = """
MATCH (a:License)-[r:ALLOWS_DERIVATIVE_UNDER]->(b:License)
WHERE a.id IN $ids AND b.id IN $ids AND NOT (a.id + '|' + b.id) IN $keep
DELETE r
RETURN count(r) AS deleted
"""

_LABEL_LICENSES = """
UNWIND $rows AS row
MATCH (l:License {id: row.id})
REMOVE l:$($labels)
SET l:$(row.label)
"""


@dataclass(frozen=True)
class CatalogueLoad:
    licenses: int
    rules: int
    stale_rules_deleted: int


def load_catalogue(driver: Driver, database: str | None = None) -> CatalogueLoad:
    """Write the catalogue's License nodes and ALLOWS_DERIVATIVE_UNDER rules (idempotent)."""
    db = database or config.DEFAULT_DATABASE
    cat = catalogue()
    fields = ("name", "category", "family", "spdx", "url", "clause", "decidable", "named")
    fields += ("adapter_strict", "derivatives_model_type")
    rows = [
        {
            "id": lic.id,
            "props": {k: getattr(lic, k) for k in fields}
            | {"rank": cat.category_rank[lic.category], "catalogue_version": cat.version},
        }
        for lic in cat.licenses.values()
    ]
    GraphWriter(driver, db).upsert_licenses(rows)
    rules = cat.rules()
    rule_rows = [{"src": a, "dst": b, "code": c} for (a, b), c in sorted(rules.items())]
    label_rows = [
        {"id": i.id, "label": cat.families[i.family].label} for i in cat.licenses.values()
    ]

    def work(tx: ManagedTransaction) -> int:
        tx.run(_SET_RULES, rows=rule_rows, version=cat.version).consume()
        tx.run(_LABEL_LICENSES, rows=label_rows, labels=cat.family_labels()).consume()
        record = tx.run(
            _DELETE_STALE_RULES, ids=list(cat.licenses), keep=[f"{a}|{b}" for a, b in rules]
        ).single()
        return int(record["deleted"]) if record else 0

    with driver.session(database=db) as session:
        deleted = session.execute_write(work)
    return CatalogueLoad(len(rows), len(rule_rows), deleted)


# --- effective licences -----------------------------------------------------------------

_READ_MODELS = """
MATCH (m:Model)
RETURN m.id AS id, properties(m) AS props, [x IN labels(m) WHERE x IN $labels] AS labels,
       COLLECT { MATCH (m)-[r:LICENSED_UNDER]->(l:License)
                 RETURN [l.id, toString(r.effective), r.source] } AS links
"""
_PROPS = {  # row key -> Model property
    **{k: k for k in ("license", "license_name", "license_source", "license_effective")},
    **{"license_imputed": "license_imputed", "inherited_from": "license_inherited_from"},
    "family": "license_family",
}

_READ_EDGES = """
MATCH (c:Model)-[e:DERIVED_FROM]->(p:Model)
WHERE coalesce(e.contradicted, false) = false AND c <> p
RETURN c.id AS child, p.id AS parent, coalesce(e.confidence, 0.0) AS confidence
"""

_WRITE_EFFECTIVE = """
UNWIND $rows AS row
MATCH (m:Model {id: row.id})
SET m.license_effective = row.eff, m.license_source = row.source,
    m.license_inherited_from = row.origin, m.license_family = row.family
REMOVE m:$($labels)
SET m:$(row.label)
WITH m, row
OPTIONAL MATCH (m)-[old:LICENSED_UNDER]->(x:License)
WHERE NOT x.id IN row.keep
DELETE old
WITH DISTINCT m, row
OPTIONAL MATCH (m)-[raw:LICENSED_UNDER]->(x:License)
WHERE x.id <> coalesce(row.eff, '')
SET raw.effective = false, raw.source = 'declared'
WITH DISTINCT m, row
WHERE row.eff IS NOT NULL
MERGE (l:License {id: row.eff})
MERGE (m)-[r:LICENSED_UNDER]->(l)
SET r.effective = true, r.source = row.source
"""


@dataclass(frozen=True)
class Effective:
    license: str | None
    source: str | None  # declared | inherited | imputed | None
    origin: str | None = None  # inherited: the ancestor whose licence it is


@dataclass(frozen=True)
class InheritanceSummary:
    models: int
    declared: int
    imputed: int
    inherited: int
    missing: int
    written: int


def _own_licence(cat: Catalogue, row: dict[str, Any]) -> Effective | None:
    declared = cat.resolve(row.get("license"), row.get("license_name"))
    imputed = None
    if row.get("license_source") == "imputed":
        imputed = row.get("license_effective") or row.get("license_imputed")
    lic = cat.licenses.get(declared or "")
    if declared and (imputed is None or (lic is not None and lic.decidable)):
        return Effective(declared, "declared")
    if isinstance(imputed, str) and imputed:
        return Effective(cat.resolve(imputed) or imputed, "imputed")
    return None


def compute_effective(
    cat: Catalogue, models: dict[str, dict[str, Any]], edges: Iterable[tuple[str, str, float]]
) -> dict[str, Effective]:
    """Effective licence of every model: own (declared/imputed), else nearest ancestor's."""
    parents: dict[str, list[tuple[str, float]]] = defaultdict(list)
    children: dict[str, list[str]] = defaultdict(list)
    for child, parent, confidence in edges:
        parents[child].append((parent, float(confidence or 0.0)))
        children[parent].append(child)
    result: dict[str, Effective] = {}
    for mid, row in models.items():
        own = _own_licence(cat, row)
        if own is not None:
            result[mid] = own
    frontier = set(result)
    while frontier:  # one hop per round: nearest licensed ancestor wins
        candidates = {c for p in frontier for c in children[p] if c not in result}
        newly: dict[str, Effective] = {}
        for child in sorted(candidates):
            known = [(p, conf) for p, conf in parents[child] if p in result]
            parent, _ = max(known, key=lambda pc: (cat.rank(result[pc[0]].license), pc[1], pc[0]))
            src = result[parent]
            origin = src.origin if src.source == "inherited" else parent
            newly[child] = Effective(src.license, "inherited", origin)
        result.update(newly)
        frontier = set(newly)
    for mid in models:
        result.setdefault(mid, Effective(None, None))
    return result


def _wanted_row(cat: Catalogue, row: dict[str, Any], eff: Effective) -> dict[str, Any] | None:
    """The write row for one model, or None when the graph already says exactly this."""
    family = cat.family_of(eff.license)
    raw = row.get("license") if isinstance(row.get("license"), str) else None
    keep = sorted({x for x in (eff.license, raw) if x})
    links = {str(x[0]): (x[1], x[2]) for x in row.get("links") or []}
    want_links = {x: ("false", "declared") for x in keep if x != eff.license}
    if eff.license:
        want_links[eff.license] = ("true", eff.source)
    current = (
        row.get("license_effective"),
        row.get("license_source"),
        row.get("inherited_from"),
        row.get("family"),
        sorted(row.get("labels") or []),
        links,
    )
    want = (eff.license, eff.source, eff.origin, family.id, [family.label], want_links)
    if current == want:
        return None
    return {
        "id": row["id"],
        "eff": eff.license,
        "source": eff.source,
        "origin": eff.origin,
        "family": family.id,
        "label": family.label,
        "keep": keep,
    }


def apply_license_inheritance(driver: Driver, database: str | None = None) -> InheritanceSummary:
    """Write ``license_effective`` / ``license_source`` / links of every Model (see module doc)."""
    db = database or config.DEFAULT_DATABASE
    cat = catalogue()
    labels = cat.family_labels()
    records, _, _ = driver.execute_query(_READ_MODELS, labels=labels, database_=db, routing_="r")
    models = {
        r["id"]: {"id": r["id"], "labels": r["labels"], "links": r["links"]}
        | {k: r["props"].get(v) for k, v in _PROPS.items()}
        for r in records
    }
    edge_records, _, _ = driver.execute_query(_READ_EDGES, database_=db, routing_="r")
    edges = [(r["child"], r["parent"], r["confidence"]) for r in edge_records]
    effective = compute_effective(cat, models, edges)
    rows = [w for mid, row in models.items() if (w := _wanted_row(cat, row, effective[mid]))]
    size = config.WRITE_BATCH_ROWS
    for start in range(0, len(rows), size):
        batch = rows[start : start + size]
        driver.execute_query(_WRITE_EFFECTIVE, rows=batch, labels=labels, database_=db)
    by_source = defaultdict(int)
    for eff in effective.values():
        by_source[eff.source or "missing"] += 1
    return InheritanceSummary(
        models=len(models),
        declared=by_source["declared"],
        imputed=by_source["imputed"],
        inherited=by_source["inherited"],
        missing=by_source["missing"],
        written=len(rows),
    )


def refresh(driver: Driver, database: str | None = None) -> InheritanceSummary:
    """``load_catalogue`` then ``apply_license_inheritance``: what reports need first."""
    load_catalogue(driver, database)
    return apply_license_inheritance(driver, database)
