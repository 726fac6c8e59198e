"""Licence catalogue, inheritance and the conflict / warning queries on a real Neo4j.

``build_planted_graph`` writes a small lineage graph with known licence problems (also used by
test_queries.py and test_bom.py): every planted ✗ must be reported, nothing else may be ✗,
warnings (W, C) and undecidable edges (?) come separately, and a contradicted declaration
never yields a conflict.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from neo4j import Driver

from lineage_index.queries import licenses
from lineage_index.queries.runner import run_query
from lineage_index.records import Edge
from lineage_index.schema.graph import ensure_schema
from lineage_index.schema.writer import GraphWriter

pytestmark = pytest.mark.neo4j

SHA = "0123456789abcdef0123456789abcdef01234567"

# id: (license, license_name, model_type, extra props)
MODELS: dict[str, tuple[str | None, str | None, str | None, dict]] = {
    "meta/llama31-base": ("llama3.1", None, "llama", {"pipeline_tag": "text-generation"}),
    "meta/llama3-base": ("llama3", None, "llama", {}),
    "open/apache-base": ("apache-2.0", None, "mistral", {"architectures": ["MistralForCausalLM"]}),
    "cc/nc-base": ("cc-by-nc-4.0", None, "mistral", {}),
    "cc/sa-base": ("cc-by-sa-4.0", None, "mistral", {}),
    "weird/other-base": ("other", "some-custom-terms", "mistral", {}),
    "qw/qwen-base": ("other", "qwen", "qwen2", {}),
    "sd/creativeml-base": ("creativeml-openrail-m", None, "unet", {}),
    "acme/llama31-apache-ft": (
        "apache-2.0",
        None,
        "llama",
        {"sha": SHA, "pipeline_tag": "text-generation", "architectures": ["LlamaForCausalLM"]},
    ),
    "acme/nc-to-mit": ("mit", None, "mistral", {}),
    "acme/apache-q": ("mit", None, "mistral", {}),
    "acme/merge-mit": ("mit", None, "mistral", {}),
    "acme/llama3-to-31": ("llama3.1", None, "llama", {}),
    "acme/other-child": ("apache-2.0", None, "mistral", {}),
    "acme/unknown-child": ("unknown", None, "mistral", {}),
    "acme/inherits": (None, None, "llama", {}),
    "acme/inherits-adapter": (None, None, "llama", {}),
    "acme/false-claim": ("apache-2.0", None, "mistral", {}),
    "acme/qwen-ft": ("other", "Qwen", "qwen2", {}),
    "acme/sa-nc-merge": ("other", None, "mistral", {}),
    "acme/llama3-distilled-gpt2": ("llama3", None, "gpt2", {}),
    "acme/imputed-child": (
        None,
        None,
        "mistral",
        {"license_source": "imputed", "license_effective": "apache-2.0"},
    ),
    "acme/copy-relabel": ("mit", None, "mistral", {}),
    "acme/nc-adapter-apache": ("apache-2.0", None, "mistral", {}),
    "acme/rail-c": ("bigscience-openrail-m", None, "unet", {}),
}

# (child, parent, relation, source, contradicted)
EDGES = [
    ("acme/llama31-apache-ft", "meta/llama31-base", "finetune", "both", False),
    ("acme/nc-to-mit", "cc/nc-base", "finetune", "recovered", False),
    ("acme/apache-q", "open/apache-base", "quantized", "declared", False),
    ("acme/merge-mit", "open/apache-base", "merge", "both", False),
    ("acme/merge-mit", "cc/nc-base", "merge", "both", False),
    ("acme/llama3-to-31", "meta/llama3-base", "finetune", "both", False),
    ("acme/other-child", "weird/other-base", "finetune", "both", False),
    ("acme/unknown-child", "open/apache-base", "finetune", "both", False),
    ("acme/inherits", "meta/llama31-base", "finetune", "both", False),
    ("acme/inherits-adapter", "acme/inherits", "adapter", "both", False),
    ("acme/false-claim", "cc/nc-base", "finetune", "declared", True),
    ("acme/false-claim", "open/apache-base", "finetune", "recovered", False),
    ("acme/qwen-ft", "qw/qwen-base", "finetune", "both", False),
    ("acme/sa-nc-merge", "cc/sa-base", "merge", "both", False),
    ("acme/sa-nc-merge", "cc/nc-base", "merge", "both", False),
    ("acme/llama3-distilled-gpt2", "meta/llama3-base", "distill", "declared", False),
    ("acme/imputed-child", "cc/nc-base", "finetune", "both", False),
    ("acme/copy-relabel", "open/apache-base", "copy", "both", False),
    ("acme/nc-adapter-apache", "cc/nc-base", "adapter", "both", False),
    ("acme/rail-c", "sd/creativeml-base", "finetune", "both", False),
]

PLANTED_CONFLICTS = {
    ("acme/llama31-apache-ft", "meta/llama31-base"),  # llama3.1 -> apache-2.0
    ("acme/nc-to-mit", "cc/nc-base"),  # cc-by-nc -> mit
    ("acme/merge-mit", "cc/nc-base"),  # merge: the cc-by-nc parent's edge
    ("acme/sa-nc-merge", "cc/nc-base + cc/sa-base"),  # unsatisfiable share-alike merge
    ("acme/llama3-distilled-gpt2", "meta/llama3-base"),  # llama3 §1.b.v, model_type gpt2
    ("acme/nc-adapter-apache", "cc/nc-base"),  # cc-by-nc -> apache adapter (no leniency)
}
PLANTED_WARNINGS = {  # W and C
    ("acme/apache-q", "open/apache-base"): "W",  # quantized, another permissive licence
    ("acme/copy-relabel", "open/apache-base"): "W",  # copy, another permissive licence
    ("acme/llama3-to-31", "meta/llama3-base"): "W",  # llama3 -> llama3.1
    ("acme/rail-c", "sd/creativeml-base"): "C",  # RAIL -> other RAIL id
}
PLANTED_REVIEW = {
    ("acme/other-child", "weird/other-base"),  # other parent
    ("acme/unknown-child", "open/apache-base"),  # unknown child
    ("acme/imputed-child", "cc/nc-base"),  # would be ✗, but the child licence is imputed
    ("acme/sa-nc-merge", "cc/sa-base"),  # other child under share-alike
    ("acme/sa-nc-merge", "cc/nc-base"),  # other child under non-commercial
}


def build_planted_graph(driver: Driver, database: str = "neo4j", apply: bool = True) -> None:
    ensure_schema(driver, database)
    writer = GraphWriter(driver, database)
    rows = []
    for mid, (lic, name, mtype, extra) in MODELS.items():
        declared = [p for c, p, _, s, _ in EDGES if c == mid and s in ("declared", "both")]
        props = {
            "license": lic,
            "license_name": name,
            "model_type": mtype,
            "declared_base_models": declared,
            "status": "indexed",
            **extra,
        }
        rows.append({"id": mid, "props": props})
    writer.upsert_models(rows)
    writer.upsert_edges(
        Edge(
            child=c,
            parent=p,
            relation=r,
            source=s,
            confidence=0.9,
            closeness=0.8,
            evidence="planted",
            contradicted=x,
            recovered_parent="open/apache-base" if x else None,
        )
        for c, p, r, s, x in EDGES
    )
    if apply:
        licenses.refresh(driver, database)


@pytest.fixture()
def planted(clean_graph: Driver, neo4j_database: str) -> Driver:
    build_planted_graph(clean_graph, neo4j_database)
    return clean_graph


def _pairs(rows: list[dict]) -> set[tuple[str, str]]:
    return {(r["child"], r["parent"]) for r in rows}


# --- catalogue as data ---------------------------------------------------------------------


def test_catalogue_reproduces_the_licenses_md_matrix() -> None:
    doc = Path(__file__).resolve().parents[1].parent / "shared" / "docs" / "LICENSES.md"
    if not doc.exists():
        doc = Path("/work/shared/docs/LICENSES.md")
    if not doc.exists():
        pytest.skip("LICENSES.md (shared docs) not present")
    section = doc.read_text(encoding="utf-8").split("### 3.4")[1].split("The same matrix")[0]
    cols = [
        "apache-2.0",
        "mit",
        "bsd-3-clause",
        "cc-by-4.0",
        "cc-by-sa-4.0",
        "cc-by-nc-4.0",
        "cc-by-nc-sa-4.0",
        "openrail",
        "creativeml-openrail-m",
        "bigscience-openrail-m",
        "llama2",
        "llama3",
        "llama3.1",
        "llama3.2",
        "llama3.3",
        "llama4",
        "gemma",
        "other",
        "unknown",
    ]
    cat = licenses.catalogue()
    rows = [line for line in section.splitlines() if line.startswith("| **")]
    assert len(rows) == 19
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        parent = cells[0].strip("*")
        for child, code in zip(cols, cells[1:], strict=True):
            assert cat.matrix[(parent, child)] == code, (parent, child)
            assert cat.code(parent, child) == code, (parent, child)


def test_catalogue_covers_the_hf_ids_and_resolves_other_by_name() -> None:
    cat = licenses.catalogue()
    for lid in (
        "apache-2.0",
        "mit",
        "bsd-3-clause",
        "cc-by-4.0",
        "cc-by-sa-4.0",
        "cc-by-nc-4.0",
        "cc-by-nc-sa-4.0",
        "openrail",
        "creativeml-openrail-m",
        "bigscience-openrail-m",
        "bigcode-openrail-m",
        "openrail++",
        "llama2",
        "llama3",
        "llama3.1",
        "llama3.2",
        "llama3.3",
        "llama4",
        "gemma",
        "other",
        "unknown",
    ):
        assert lid in cat.licenses
    assert cat.resolve("other", "Qwen") == "qwen"
    assert cat.resolve("other", "DeepSeek License") == "deepseek"
    assert cat.resolve("other", "llama-3.1") == "llama3.1"
    assert cat.resolve("other", "something-else") == "other"
    assert cat.resolve("Apache-2.0") == "apache-2.0"
    assert cat.resolve(None) is None
    assert cat.code("bigcode-openrail-m", "openrail++") == "C"
    assert cat.code("apache-2.0", "qwen") == "✓"  # like `other` under a permissive parent
    assert cat.code("cc-by-nc-4.0", "qwen") == "?"
    assert cat.code("qwen", "qwen") == "✓"
    assert cat.code("qwen", "apache-2.0") == "?"


def test_spdx_ids_of_the_catalogue_are_in_the_cyclonedx_spdx_list() -> None:
    res = pytest.importorskip("cyclonedx.schema._res")
    import json
    from importlib import resources

    enum = set(
        json.loads(resources.files(res).joinpath("spdx.SNAPSHOT.schema.json").read_text("utf-8"))[
            "enum"
        ]
    )
    spdx = {i.spdx for i in licenses.catalogue().licenses.values() if i.spdx}
    assert spdx and spdx <= enum


def test_load_catalogue_is_idempotent_and_encodes_the_matrix(
    clean_graph: Driver, neo4j_database: str
) -> None:
    first = licenses.load_catalogue(clean_graph, neo4j_database)
    again = licenses.load_catalogue(clean_graph, neo4j_database)
    assert first == again and again.stale_rules_deleted == 0
    counts = GraphWriter(clean_graph, neo4j_database).counts()
    cat = licenses.catalogue()
    assert counts["licenses"] == len(cat.licenses)
    assert counts["allows_derivative_under"] == len(cat.rules())
    records, _, _ = clean_graph.execute_query(
        "MATCH (a:License)-[r:ALLOWS_DERIVATIVE_UNDER]->(b:License) RETURN a.id AS a, b.id AS b, r.code AS c",
        database_=neo4j_database,
    )
    assert {(r["a"], r["b"]): r["c"] for r in records} == cat.rules()
    assert {r["c"] for r in records} <= {"✓", "C", "W"}
    # a stale rule (e.g. from an older catalogue) is removed on reload
    clean_graph.execute_query(
        "MATCH (a:License {id: 'gemma'}), (b:License {id: 'mit'}) "
        "MERGE (a)-[:ALLOWS_DERIVATIVE_UNDER {code: '✓'}]->(b)",
        database_=neo4j_database,
    )
    assert licenses.load_catalogue(clean_graph, neo4j_database).stale_rules_deleted == 1
    labels, _, _ = clean_graph.execute_query(
        "MATCH (l:License {id: 'llama3.1'}) RETURN labels(l) AS l", database_=neo4j_database
    )
    assert "LicLlama" in labels[0]["l"]


# --- inheritance --------------------------------------------------------------------------


def test_missing_licence_is_inherited_from_the_nearest_licensed_ancestor(
    planted: Driver, neo4j_database: str
) -> None:
    w = GraphWriter(planted, neo4j_database)
    child = w.model_properties("acme/inherits")
    grandchild = w.model_properties("acme/inherits-adapter")
    assert (child["license_effective"], child["license_source"]) == ("llama3.1", "inherited")
    assert child["license_inherited_from"] == "meta/llama31-base"
    assert (grandchild["license_effective"], grandchild["license_source"]) == (
        "llama3.1",
        "inherited",
    )
    assert grandchild["license_inherited_from"] == "meta/llama31-base"
    declared = w.model_properties("acme/qwen-ft")
    assert (declared["license_effective"], declared["license_source"]) == ("qwen", "declared")
    imputed = w.model_properties("acme/imputed-child")
    assert (imputed["license_effective"], imputed["license_source"]) == ("apache-2.0", "imputed")
    links, _, _ = planted.execute_query(
        "MATCH (m:Model)-[r:LICENSED_UNDER]->(l:License) WHERE m.id IN $ids "
        "RETURN m.id AS m, l.id AS l, r.effective AS eff, r.source AS src ORDER BY m, l",
        ids=["acme/inherits", "acme/qwen-ft"],
        database_=neo4j_database,
    )
    assert [(r["m"], r["l"], r["eff"], r["src"]) for r in links] == [
        ("acme/inherits", "llama3.1", True, "inherited"),
        ("acme/qwen-ft", "other", False, "declared"),  # the writer's raw tag link, kept
        ("acme/qwen-ft", "qwen", True, "declared"),
    ]
    labels, _, _ = planted.execute_query(
        "MATCH (m:Model {id: 'acme/inherits'}) RETURN labels(m) AS l", database_=neo4j_database
    )
    assert sorted(labels[0]["l"]) == ["LicLlama", "Model"]


def test_inheritance_is_idempotent_and_follows_changes(
    planted: Driver, neo4j_database: str
) -> None:
    again = licenses.apply_license_inheritance(planted, neo4j_database)
    assert again.written == 0
    assert (again.inherited, again.imputed) == (2, 1)
    # the parent's card now declares a licence: the child inherits it, the link moves
    GraphWriter(planted, neo4j_database).upsert_models(
        [{"id": "acme/inherits", "props": {"license": "llama3.3"}}]
    )
    licenses.apply_license_inheritance(planted, neo4j_database)
    w = GraphWriter(planted, neo4j_database)
    assert w.model_properties("acme/inherits")["license_source"] == "declared"
    grandchild = w.model_properties("acme/inherits-adapter")
    assert (grandchild["license_effective"], grandchild["license_inherited_from"]) == (
        "llama3.3",
        "acme/inherits",
    )
    links, _, _ = planted.execute_query(
        "MATCH (:Model {id: 'acme/inherits-adapter'})-[r:LICENSED_UNDER]->(l) RETURN l.id AS l",
        database_=neo4j_database,
    )
    assert [r["l"] for r in links] == ["llama3.3"]


def test_contradicted_edges_do_not_carry_licences(clean_graph: Driver, neo4j_database: str) -> None:
    w = GraphWriter(clean_graph, neo4j_database)
    ensure_schema(clean_graph, neo4j_database)
    w.upsert_models(
        [
            {"id": "a/base", "props": {"license": "cc-by-nc-4.0"}},
            {"id": "a/child", "props": {"license": None}},
        ]
    )
    w.upsert_edges([Edge("a/child", "a/base", "finetune", "declared", 0.2, contradicted=True)])
    summary = licenses.refresh(clean_graph, neo4j_database)
    assert summary.missing == 1
    assert w.model_properties("a/child").get("license_effective") is None


# --- conflicts and warnings ---------------------------------------------------------------


def test_every_planted_conflict_is_reported_and_nothing_else(
    planted: Driver, neo4j_database: str
) -> None:
    rows = run_query(planted, "license_conflicts", None, neo4j_database).rows
    assert _pairs(rows) == PLANTED_CONFLICTS
    assert {r["code"] for r in rows} == {"✗"}
    by_pair = {(r["child"], r["parent"]): r for r in rows}
    assert "1.b.v" in by_pair[("acme/llama3-distilled-gpt2", "meta/llama3-base")]["reason"]
    assert by_pair[("acme/sa-nc-merge", "cc/nc-base + cc/sa-base")]["kind"] == "merge"
    # the contradicted declaration (cc-by-nc parent, apache child) is not a conflict
    assert not any(r["child"] == "acme/false-claim" for r in rows)


def test_warnings_and_review_are_reported_separately(planted: Driver, neo4j_database: str) -> None:
    rows = run_query(planted, "license_warnings", None, neo4j_database).rows
    warnings = {(r["child"], r["parent"]): r["code"] for r in rows if r["severity"] == "warning"}
    review = {(r["child"], r["parent"]) for r in rows if r["severity"] == "review"}
    assert warnings == PLANTED_WARNINGS
    assert review == PLANTED_REVIEW
    assert all(r["code"] == "?" for r in rows if r["severity"] == "review")
    assert not _pairs(rows) & PLANTED_CONFLICTS


def test_license_check_agrees_with_conflicts_warnings_and_the_catalogue(
    planted: Driver, neo4j_database: str
) -> None:
    check = run_query(planted, "license_check", None, neo4j_database).rows
    non_contradicted = [e for e in EDGES if not e[4]]
    assert len(check) == len(non_contradicted)
    codes = {(r["child"], r["parent"]): r["code"] for r in check}
    edge_conflicts = {p for p in PLANTED_CONFLICTS if "+" not in p[1]}
    assert {p for p, c in codes.items() if c == "✗"} == edge_conflicts
    assert {p for p, c in codes.items() if c in ("W", "C")} == set(PLANTED_WARNINGS)
    assert {p for p, c in codes.items() if c == "?"} == PLANTED_REVIEW
    cat = licenses.catalogue()
    for r in check:  # plain finetune edges with declared licences: exactly the matrix
        if (
            r["relation"] == "finetune"
            and r["child_license_source"] == "declared"
            and r["parent"] != "meta/llama3-base"
        ):
            assert r["code"] == cat.code(r["parent_license"], r["child_license"]), r
    one = run_query(planted, "license_check", {"model": "acme/merge-mit"}, neo4j_database).rows
    assert {(r["parent"], r["code"]) for r in one} == {
        ("open/apache-base", "✓"),
        ("cc/nc-base", "✗"),
    }


def test_adapter_leniency_downgrades_a_permissive_adapter_tag(
    planted: Driver, neo4j_database: str
) -> None:
    lenient = run_query(
        planted, "license_conflicts", {"adapter_leniency": True}, neo4j_database
    ).rows
    assert _pairs(lenient) == PLANTED_CONFLICTS - {("acme/nc-adapter-apache", "cc/nc-base")}
    warned = run_query(planted, "license_warnings", {"adapter_leniency": True}, neo4j_database).rows
    assert ("acme/nc-adapter-apache", "cc/nc-base") in _pairs(warned)


def test_queries_work_before_licences_are_applied(clean_graph: Driver, neo4j_database: str) -> None:
    build_planted_graph(clean_graph, neo4j_database, apply=False)
    licenses.load_catalogue(clean_graph, neo4j_database)
    rows = run_query(clean_graph, "license_conflicts", None, neo4j_database).rows
    # without inheritance `other`+license_name is unresolved, but declared ✗ are still found
    assert ("acme/llama31-apache-ft", "meta/llama31-base") in _pairs(rows)
    assert all(re.match(r"^[✗]$", r["code"]) for r in rows)


def test_only_conflicts_are_red_in_the_pictures() -> None:
    """Conflicting edges are drawn red (#c62828); no licence family may share that colour."""
    from lineage_index.queries.licenses import catalogue

    reds = {f.id for f in catalogue().families.values() if f.colour.lower() in ("#c62828", "#b71c1c")}
    assert not reds, reds
