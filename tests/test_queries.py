"""Every shipped Cypher query, the runner, the tree data, the licence report and the CLI
commands, on a real Neo4j with the planted graph of test_licenses.py."""

from __future__ import annotations

import csv
import io
import json
import re
from importlib import resources

import pytest
import typer
from neo4j import Driver
from test_licenses import (
    MODELS,
    PLANTED_CONFLICTS,
    PLANTED_REVIEW,
    PLANTED_WARNINGS,
    build_planted_graph,
)
from typer.testing import CliRunner

from lineage_index.cli.query_cmd import register
from lineage_index.errors import UsageError
from lineage_index.queries import licenses, report, runner, tree
from lineage_index.queries.runner import run_query
from lineage_index.records import Edge
from lineage_index.schema.writer import GraphWriter

pytestmark = pytest.mark.neo4j


@pytest.fixture()
def planted(clean_graph: Driver, neo4j_database: str) -> Driver:
    build_planted_graph(clean_graph, neo4j_database)
    return clean_graph


def q(driver: Driver, db: str, name: str, **params: object) -> list[dict]:
    return run_query(driver, name, params, db).rows


# --- headers -------------------------------------------------------------------------------


def test_every_query_has_a_header_and_declares_exactly_the_parameters_it_uses() -> None:
    queries = runner.list_queries()
    assert len(queries) >= 13
    for query in queries:
        assert query.summary and query.description, query.name
        body = "\n".join(x for x in query.text.splitlines() if not x.lstrip().startswith("//"))
        used = set(re.findall(r"\$(\w+)", body))
        assert used == {p.name for p in query.params}, query.name
        for p in query.params:
            assert any(f"{p.name}" in b for b in query.browser), (query.name, p.name)


def test_shipped_browser_guide_and_style_match_the_queries_and_catalogue() -> None:
    folder = resources.files("lineage_index.queries").joinpath("browser")
    guide = folder.joinpath("guide.html").read_text("utf-8")
    assert guide == runner.browser_guide_html(), "regenerate browser/guide.html"
    grass = folder.joinpath("lineage-index.grass").read_text("utf-8")
    for fam in licenses.catalogue().families.values():
        assert re.search(rf"node\.{fam.label} \{{\s*color: {fam.colour};", grass), fam.label
    assert "relationship.DERIVED_FROM {" in grass and "caption: '{relation}'" in grass
    # a card claim the weights do not support is drawn apart from lineage, red, captioned by its verdict
    assert re.search(r"relationship\.DECLARES_BASE \{\s*color: #C62828;[^}]*caption: '\{verdict\}'", grass)


# --- every shipped query, with asserted results ------------------------------------------


def test_provenance_lists_every_ancestor_with_relation_and_source(
    planted: Driver, neo4j_database: str
) -> None:
    rows = q(planted, neo4j_database, "provenance", model="acme/inherits-adapter")
    assert [(r["depth"], r["ancestor"], r["child"], r["relation"], r["source"]) for r in rows] == [
        (1, "acme/inherits", "acme/inherits-adapter", "adapter", "both"),
        (2, "meta/llama31-base", "acme/inherits", "finetune", "both"),
    ]
    assert rows[1]["license"] == "llama3.1" and rows[0]["license_source"] == "inherited"
    # a contradicted declaration is not lineage
    rows = q(planted, neo4j_database, "provenance", model="acme/false-claim")
    assert [r["ancestor"] for r in rows] == ["open/apache-base"]
    assert q(planted, neo4j_database, "provenance", model="meta/llama31-base") == []


def test_descendants_lists_everything_derived_from_a_model(
    planted: Driver, neo4j_database: str
) -> None:
    rows = q(planted, neo4j_database, "descendants", model="meta/llama31-base")
    assert [(r["depth"], r["descendant"], r["parent"], r["relation"]) for r in rows] == [
        (1, "acme/inherits", "meta/llama31-base", "finetune"),
        (1, "acme/llama31-apache-ft", "meta/llama31-base", "finetune"),
        (2, "acme/inherits-adapter", "acme/inherits", "adapter"),
    ]
    nc = {r["descendant"] for r in q(planted, neo4j_database, "descendants", model="cc/nc-base")}
    assert "acme/false-claim" not in nc and "acme/merge-mit" in nc


def test_family_returns_the_root_and_the_whole_tree(planted: Driver, neo4j_database: str) -> None:
    rows = q(planted, neo4j_database, "family", model="acme/inherits-adapter")
    assert [(r["root"], r["depth"], r["model"], r["parent"]) for r in rows] == [
        ("meta/llama31-base", 0, "meta/llama31-base", None),
        ("meta/llama31-base", 1, "acme/inherits", "meta/llama31-base"),
        ("meta/llama31-base", 1, "acme/llama31-apache-ft", "meta/llama31-base"),
        ("meta/llama31-base", 2, "acme/inherits-adapter", "acme/inherits"),
    ]
    assert [r["model"] for r in rows if r["is_subject"]] == ["acme/inherits-adapter"]
    merge_roots = {r["root"] for r in q(planted, neo4j_database, "family", model="acme/merge-mit")}
    assert merge_roots == {"open/apache-base", "cc/nc-base"}
    alone = q(planted, neo4j_database, "family", model="meta/llama3-base")
    assert {r["model"] for r in alone} == {
        "meta/llama3-base",
        "acme/llama3-to-31",
        "acme/llama3-distilled-gpt2",
    }


def test_foundation_reach_counts_descendants_per_root(planted: Driver, neo4j_database: str) -> None:
    rows = {r["root"]: r for r in q(planted, neo4j_database, "foundation_reach")}
    assert {k: (v["descendants"], v["direct"], v["max_depth"]) for k, v in rows.items()} == {
        "open/apache-base": (5, 5, 1),
        "cc/nc-base": (5, 5, 1),
        "meta/llama31-base": (3, 2, 2),
        "meta/llama3-base": (2, 2, 1),
        "cc/sa-base": (1, 1, 1),
        "weird/other-base": (1, 1, 1),
        "qw/qwen-base": (1, 1, 1),
        "sd/creativeml-base": (1, 1, 1),
    }
    assert rows["meta/llama31-base"]["descendant_licenses"] == ["apache-2.0", "llama3.1"]


def test_undeclared_lineage_lists_recovered_edges_the_card_does_not_declare(
    planted: Driver, neo4j_database: str
) -> None:
    rows = q(planted, neo4j_database, "undeclared_lineage")
    assert {(r["child"], r["parent"]) for r in rows} == {
        ("acme/nc-to-mit", "cc/nc-base"),
        ("acme/false-claim", "open/apache-base"),
    }
    assert next(r for r in rows if r["child"] == "acme/false-claim")["declared_base_models"] == [
        "cc/nc-base"
    ]
    assert q(planted, neo4j_database, "undeclared_lineage", min_confidence=0.95) == []


def test_contradicted_declarations_are_listed_on_their_own(
    planted: Driver, neo4j_database: str
) -> None:
    rows = q(planted, neo4j_database, "contradicted_declarations")
    assert [(r["child"], r["declared_parent"], r["recovered_parent"]) for r in rows] == [
        ("acme/false-claim", "cc/nc-base", "open/apache-base")
    ]


def test_declarations_keep_card_claims_and_their_verdicts_apart_from_lineage(
    planted: Driver, neo4j_database: str
) -> None:
    rows = {(r["child"], r["declared_parent"]): r for r in q(planted, neo4j_database, "declarations")}
    false_claim = rows[("acme/false-claim", "cc/nc-base")]
    assert (false_claim["verdict"], false_claim["lineage"]) == ("contradicted", False)
    confirmed = rows[("acme/inherits", "meta/llama31-base")]
    assert (confirmed["verdict"], confirmed["lineage"]) == ("supported", True)
    only = {k for k, r in rows.items() if r["verdict"] == "contradicted"}
    assert {(r["child"], r["declared_parent"]) for r in q(planted, neo4j_database, "declarations",
                                                           verdict="contradicted")} == only
    # DERIVED_FROM holds lineage only: the contradicted claim is a DECLARES_BASE relationship
    records, _, _ = planted.execute_query(
        "MATCH (:Model {id: $c})-[r]->(:Model {id: $p}) RETURN type(r) AS t",
        c="acme/false-claim", p="cc/nc-base", database_=neo4j_database)
    assert [r["t"] for r in records] == ["DECLARES_BASE"]


def test_relicensed_copies_are_copy_or_quantized_edges_with_another_licence(
    planted: Driver, neo4j_database: str
) -> None:
    rows = q(planted, neo4j_database, "relicensed_copies")
    assert [(r["child"], r["relation"], r["child_license"], r["parent_license"]) for r in rows] == [
        ("acme/apache-q", "quantized", "mit", "apache-2.0"),
        ("acme/copy-relabel", "copy", "mit", "apache-2.0"),
    ]


def test_derived_from_license_family_finds_every_llama_derivative(
    planted: Driver, neo4j_database: str
) -> None:
    rows = {
        r["model"]: r
        for r in q(planted, neo4j_database, "derived_from_license_family", family="llama")
    }
    assert {k: (v["ancestor"], v["depth"]) for k, v in rows.items()} == {
        "acme/llama31-apache-ft": ("meta/llama31-base", 1),
        "acme/inherits": ("meta/llama31-base", 1),
        "acme/inherits-adapter": ("acme/inherits", 1),
        "acme/llama3-to-31": ("meta/llama3-base", 1),
        "acme/llama3-distilled-gpt2": ("meta/llama3-base", 1),
    }
    assert q(planted, neo4j_database, "derived_from_license_family", family="gemma") == []


def test_license_summary_counts_models_per_licence_and_source(
    planted: Driver, neo4j_database: str
) -> None:
    rows = q(planted, neo4j_database, "license_summary")
    assert sum(r["models"] for r in rows) == len(MODELS)
    got = {(r["license"], r["source"]): (r["models"], r["family"]) for r in rows}
    assert got[("llama3.1", "inherited")] == (2, "llama")
    assert got[("llama3.1", "declared")] == (2, "llama")
    assert got[("apache-2.0", "imputed")] == (1, "permissive")
    assert got[("qwen", "declared")] == (2, "vendor")


def test_license_check_conflicts_and_warnings_partition_the_edges(
    planted: Driver, neo4j_database: str
) -> None:
    check = q(planted, neo4j_database, "license_check")
    conflicts = q(planted, neo4j_database, "license_conflicts")
    warnings = q(planted, neo4j_database, "license_warnings")
    ok = {(r["child"], r["parent"]) for r in check if r["code"] == "✓"}
    edge_conflicts = {(r["child"], r["parent"]) for r in conflicts if r["kind"] == "edge"}
    flagged = {(r["child"], r["parent"]) for r in warnings}
    assert edge_conflicts | flagged | ok == {(r["child"], r["parent"]) for r in check}
    assert not (edge_conflicts & flagged) and not (ok & (edge_conflicts | flagged))
    assert flagged == set(PLANTED_WARNINGS) | PLANTED_REVIEW


def test_lineage_nodes_returns_the_subject_first_with_parents_and_contradictions(
    planted: Driver, neo4j_database: str
) -> None:
    rows = q(planted, neo4j_database, "lineage_nodes", model="acme/inherits-adapter")
    assert [r["id"] for r in rows] == [
        "acme/inherits-adapter",
        "acme/inherits",
        "meta/llama31-base",
    ]
    assert rows[0]["is_subject"] and rows[0]["parents"][0]["parent"] == "acme/inherits"
    assert rows[2]["parents"] == [] and rows[2]["props"]["license"] == "llama3.1"
    false_claim = q(planted, neo4j_database, "lineage_nodes", model="acme/false-claim")
    assert [c["parent"] for c in false_claim[0]["contradicted"]] == ["cc/nc-base"]
    assert q(planted, neo4j_database, "lineage_nodes", model="nobody/nothing") == []


def test_every_shipped_query_is_exercised_here() -> None:
    tested = {
        "provenance",
        "descendants",
        "family",
        "foundation_reach",
        "undeclared_lineage",
        "contradicted_declarations",
        "declarations",
        "relicensed_copies",
        "derived_from_license_family",
        "license_summary",
        "license_check",
        "license_conflicts",
        "license_warnings",
        "lineage_nodes",
    }
    assert {x.name for x in runner.list_queries()} == tested


# --- hostile input -------------------------------------------------------------------------

HOSTILE = [
    "x'}) MATCH (n) DETACH DELETE n //",
    '"}) MATCH (n) DETACH DELETE n RETURN 1 AS depth //',
    "acme/inherits' OR 1=1 --",
    "$model",
    "`Model`",
    "../../etc/passwd",
    "\\u0027; DROP CONSTRAINT model_id",
    "a" * 10_000,
    "名前/模型\x00\n",
]


def test_hostile_parameter_strings_are_harmless(planted: Driver, neo4j_database: str) -> None:
    writer = GraphWriter(planted, neo4j_database)
    before = writer.counts()
    for value in HOSTILE:
        for name in ("provenance", "descendants", "family", "lineage_nodes"):
            assert q(planted, neo4j_database, name, model=value) == []
        assert q(planted, neo4j_database, "derived_from_license_family", family=value) == []
        assert q(planted, neo4j_database, "license_check", model=value) == []
        with pytest.raises(UsageError):
            runner.get_query(value)
    assert writer.counts() == before
    # a model whose id is hostile is just data
    writer.upsert_edges([Edge(HOSTILE[0], "acme/inherits", "finetune", "recovered", 0.5)])
    rows = q(planted, neo4j_database, "provenance", model=HOSTILE[0])
    assert [r["ancestor"] for r in rows] == ["acme/inherits", "meta/llama31-base"]


def test_runner_rejects_unknown_queries_parameters_and_types() -> None:
    for bad in ("provenance; MATCH (n) DETACH DELETE n", "PROVENANCE", "runner", "../licenses", ""):
        with pytest.raises(UsageError):
            runner.get_query(bad)
    with pytest.raises(UsageError):
        runner.bind("provenance", {})  # $model is required
    with pytest.raises(UsageError):
        runner.bind("provenance", {"model": "x", "extra": 1})
    with pytest.raises(UsageError):
        runner.bind("provenance", {"model": 1})
    with pytest.raises(UsageError):
        runner.bind("license_conflicts", {"adapter_leniency": "yes"})
    with pytest.raises(UsageError):
        runner.parse_params("license_conflicts", ["adapter_leniency=maybe"])
    with pytest.raises(UsageError):
        runner.parse_params("provenance", ["model"])
    assert runner.parse_params("provenance", ["model=a=b; MATCH (n) DELETE n"]) == {
        "model": "a=b; MATCH (n) DELETE n"
    }
    assert runner.parse_params("undeclared_lineage", ["min_confidence=0.5"]) == {
        "min_confidence": 0.5
    }
    assert runner.bind("license_check", {}) == {"model": None, "adapter_leniency": False}


# --- tree ----------------------------------------------------------------------------------


def test_family_tree_nests_nodes_with_relation_source_and_licence(
    planted: Driver, neo4j_database: str
) -> None:
    [root] = tree.family_tree(planted, "acme/inherits-adapter", neo4j_database)
    assert root.id == "meta/llama31-base" and root.license_family == "llama"
    assert [c.id for c in root.children] == ["acme/inherits", "acme/llama31-apache-ft"]
    adapter = root.children[0].children[0]
    assert (
        adapter.id,
        adapter.relation,
        adapter.source,
        adapter.license,
        adapter.license_source,
    ) == ("acme/inherits-adapter", "adapter", "both", "llama3.1", "inherited")
    assert adapter.is_subject
    roots = tree.family_tree(planted, "acme/merge-mit", neo4j_database)
    merged = [n for r in roots for n in r.walk() if n.id == "acme/merge-mit"]
    assert len(merged) == 2 and {tuple(n.also_under) for n in merged} == {
        ("cc/nc-base",),
        ("open/apache-base",),
    }
    sub = tree.descendants_tree(planted, "acme/inherits", neo4j_database)
    assert [n.id for n in sub.walk()] == ["acme/inherits", "acme/inherits-adapter"]
    with pytest.raises(UsageError):
        tree.family_tree(planted, "nobody/nothing", neo4j_database)


# --- licence report ------------------------------------------------------------------------


def test_licence_report_separates_conflicts_warnings_and_review(
    planted: Driver, neo4j_database: str
) -> None:
    rep = report.build_report(planted, neo4j_database)
    assert {(f.child, f.parent) for f in rep.conflicts} == PLANTED_CONFLICTS
    assert {(f.child, f.parent): f.code for f in rep.warnings} == PLANTED_WARNINGS
    assert {(f.child, f.parent) for f in rep.review} == PLANTED_REVIEW
    assert set(rep.lineages) == {c for c, _ in PLANTED_CONFLICTS}
    md = report.render(rep, "md")
    assert (
        "## Conflicts (✗): 6" in md
        and "## Warnings (W, C): 4" in md
        and "## Needs review (?): 5" in md
    )
    for child, _ in PLANTED_CONFLICTS:
        assert child in md
    rows = list(csv.DictReader(io.StringIO(report.render(rep, "csv"))))
    assert [r["severity"] for r in rows].count("conflict") == 6 and len(rows) == 15
    doc = json.loads(report.render(rep, "json"))
    assert len(doc["conflicts"]) == 6 and len(doc["warnings"]) == 4 and len(doc["review"]) == 5


def test_html_report_draws_each_conflicting_lineage_inline(
    planted: Driver, neo4j_database: str
) -> None:
    rep = report.build_report(planted, neo4j_database)
    page = report.render(rep, "html")
    assert page.count("<svg ") == len({c for c, _ in PLANTED_CONFLICTS})
    assert "<script" not in page and "src=" not in page and "<link" not in page
    llama = licenses.catalogue().families["llama"].colour
    svg = report.lineage_svg(rep.lineages["acme/llama31-apache-ft"])
    assert f'fill="{llama}"' in svg and "✗ finetune" in svg
    merge_svg = report.lineage_svg(rep.lineages["acme/merge-mit"])
    assert merge_svg.count("✗ merge") == 1 and merge_svg.count(">merge<") == 1


def test_report_pictures_can_be_capped(planted: Driver, neo4j_database: str) -> None:
    rep = report.build_report(planted, neo4j_database, refresh=False, max_pictures=2)
    assert len(rep.lineages) == 2 and len(rep.conflicts) == 6
    page = report.render(rep, "html")
    assert page.count("<svg ") == 2 and "Pictures of 4 more conflicting lineages left out" in page


def test_html_report_escapes_hostile_model_ids(planted: Driver, neo4j_database: str) -> None:
    evil = 'evil/<script>alert("x")</script>'
    GraphWriter(planted, neo4j_database).upsert_models([{"id": evil, "props": {"license": "mit"}}])
    GraphWriter(planted, neo4j_database).upsert_edges(
        [Edge(evil, "cc/nc-base", "finetune", "recovered", 0.7)]
    )
    rep = report.build_report(planted, neo4j_database)
    assert evil in {f.child for f in rep.conflicts}
    page = report.render(rep, "html")
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "| evil/<script>" in report.render(rep, "md")  # markdown is text; pipes are escaped


# --- CLI -----------------------------------------------------------------------------------


@pytest.fixture()
def cli(neo4j_server):  # type: ignore[no-untyped-def]
    if neo4j_server.user is not None:
        pytest.skip("the CLI test passes only --neo4j-uri (auth-less server)")
    app = typer.Typer()
    register(app)
    runner_ = CliRunner()

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        result = runner_.invoke(app, [*args, "--neo4j-uri", neo4j_server.uri])
        assert result.exit_code == 0, (result.output, result.exception)
        return result.output

    return invoke


def test_cli_query_tree_report_and_bom(planted: Driver, cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = cli("query", "provenance", "--param", "model=acme/inherits-adapter", "--format", "json")
    assert [r["ancestor"] for r in json.loads(out)] == ["acme/inherits", "meta/llama31-base"]
    out = cli("query", "family", "-p", "model=acme/inherits", "-f", "csv")
    assert out.splitlines()[0].startswith("root,depth,model,parent")
    assert "provenance" in cli("query", "-f", "csv")
    out = cli("tree", "acme/inherits-adapter")
    assert "meta/llama31-base" in out and "adapter" in out and "inherited" in out
    md = tmp_path / "licences.md"
    cli("report", "licenses", "--format", "md", "--out", str(md))
    assert "## Conflicts (✗): 6" in md.read_text()
    bom = json.loads(cli("bom", "acme/llama31-apache-ft"))
    assert bom["metadata"]["component"]["name"] == "llama31-apache-ft"


def test_a_query_about_a_model_not_in_the_graph_says_so(planted: Driver, neo4j_server) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    if neo4j_server.user is not None:
        pytest.skip("the CLI is given only --neo4j-uri (auth-less server)")
    base = [sys.executable, "-m", "lineage_index.cli.app", "query"]
    r = subprocess.run([*base, "provenance", "-p", "model=acme/no-such-model", "--neo4j-uri", neo4j_server.uri],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "'acme/no-such-model' is not in the graph" in r.stderr
    root = subprocess.run([*base, "provenance", "-p", "model=meta/llama31-base", "--neo4j-uri", neo4j_server.uri],
                          capture_output=True, text=True, timeout=120)
    assert root.returncode == 0  # a root has no ancestors: an empty answer, not an error


def test_provenance_gives_browser_a_path_to_draw_and_the_cli_a_table(planted: Driver, neo4j_database: str) -> None:
    from neo4j.graph import Path as GraphPath

    text = runner.get_query("provenance").text
    records, _, _ = planted.execute_query(text, model="acme/inherits-adapter", database_=neo4j_database)
    assert records and all(isinstance(r["graph_path"], GraphPath) for r in records)
    assert [len(r["graph_path"].relationships) for r in records] == [r["depth"] for r in records]
    result = runner.run_query(planted, "provenance", {"model": "acme/inherits-adapter"}, neo4j_database)
    assert "graph_path" not in result.columns and all("graph_path" not in row for row in result.rows)


def test_family_and_licence_conflicts_give_browser_paths_to_draw(planted: Driver, neo4j_database: str) -> None:
    from neo4j.graph import Path as GraphPath

    fam, _, _ = planted.execute_query(runner.get_query("family").text, model="acme/inherits-adapter",
                                      database_=neo4j_database)
    edges = [r for r in fam if r["parent"] is not None]
    assert edges and all(isinstance(r["graph_path"], GraphPath) for r in edges)
    assert all([r["graph_path"].start_node["id"], r["graph_path"].end_node["id"]] == [r["model"], r["parent"]]
               for r in edges)
    bad, _, _ = planted.execute_query(runner.get_query("license_conflicts").text, adapter_leniency=False,
                                      database_=neo4j_database)
    assert bad and all(isinstance(r["graph_path"], GraphPath) for r in bad)
    for r in bad:
        ids = {n["id"] for n in r["graph_path"].nodes}
        assert r["child"] in ids and all(p in ids for p in r["parent"].split(" + "))
    table = runner.run_query(planted, "license_conflicts", {"adapter_leniency": False}, neo4j_database)
    assert "graph_path" not in table.columns and len(table.rows) == len(bad)
