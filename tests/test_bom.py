"""The CycloneDX 1.6 AI BOM, validated against the official JSON schema (bundled with
cyclonedx-python-lib, with its SPDX and JSF references), on a real Neo4j with the planted graph."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
from neo4j import Driver
from test_licenses import SHA, build_planted_graph

from lineage_index.errors import UsageError
from lineage_index.queries import bom, licenses
from lineage_index.records import Edge
from lineage_index.schema.writer import GraphWriter

pytestmark = pytest.mark.neo4j

jsonschema = pytest.importorskip("jsonschema")
referencing = pytest.importorskip("referencing")
_res = pytest.importorskip("cyclonedx.schema._res")

BASE = "http://cyclonedx.org/schema/"


def _load(name: str) -> dict[str, Any]:
    return json.loads(resources.files(_res).joinpath(name).read_text("utf-8"))


@pytest.fixture(scope="module")
def validator() -> Any:
    from referencing.jsonschema import DRAFT7

    registry = referencing.Registry()
    for name in (
        "spdx.SNAPSHOT.schema.json",
        "jsf-0.82.SNAPSHOT.schema.json",
        "cryptography-defs.SNAPSHOT.schema.json",
    ):
        contents = _load(name)
        resource = referencing.Resource.from_contents(contents, default_specification=DRAFT7)
        registry = registry.with_resource(BASE + name, resource)
        registry = registry.with_resource(contents["$id"], resource)
    schema = _load("bom-1.6.SNAPSHOT.schema.json")
    cls = jsonschema.Draft7Validator
    return cls(schema, registry=registry, format_checker=cls.FORMAT_CHECKER)


def _errors(validator: Any, doc: dict[str, Any]) -> list[str]:
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(doc)]


def _components(comp: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield comp
    for anc in comp.get("pedigree", {}).get("ancestors", []):
        yield from _components(anc)


def _props(comp: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in comp.get("properties", []):
        out.setdefault(p["name"], []).append(p["value"])
    return out


@pytest.fixture()
def planted(clean_graph: Driver, neo4j_database: str) -> Driver:
    build_planted_graph(clean_graph, neo4j_database)
    return clean_graph


def test_the_validator_accepts_the_licenses_md_example_and_rejects_non_spdx_ids(
    validator: Any,
) -> None:
    example = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "metadata": {
            "component": {
                "type": "machine-learning-model",
                "name": "m",
                "licenses": [{"license": {"name": "llama3.1", "acknowledgement": "declared"}}],
            }
        },
    }
    assert _errors(validator, example) == []
    example["metadata"]["component"]["licenses"] = [{"license": {"id": "llama3.1"}}]
    assert _errors(validator, example)


def test_bom_of_a_finetune_validates_and_names_its_lineage(
    planted: Driver, neo4j_database: str, validator: Any
) -> None:
    doc = bom.build_bom(planted, "acme/llama31-apache-ft", neo4j_database)
    assert _errors(validator, doc) == []
    comp = doc["metadata"]["component"]
    assert comp["type"] == "machine-learning-model"
    assert (comp["group"], comp["name"], comp["version"]) == ("acme", "llama31-apache-ft", SHA)
    assert comp["purl"] == f"pkg:huggingface/acme/llama31-apache-ft@{SHA}" == comp["bom-ref"]
    assert comp["licenses"] == [
        {
            "license": {
                "id": "Apache-2.0",
                "url": "https://www.apache.org/licenses/LICENSE-2.0",
                "acknowledgement": "declared",
            }
        }
    ]
    assert comp["modelCard"]["modelParameters"] == {
        "task": "text-generation",
        "architectureFamily": "llama",
        "modelArchitecture": "LlamaForCausalLM",
    }
    assert _props(comp)["lineage:license-check"] == ["conflict"]
    assert _props(comp)["huggingface:base_model"] == ["meta/llama31-base"]
    [parent] = comp["pedigree"]["ancestors"]
    assert (
        parent["name"] == "llama31-base" and parent["purl"] == "pkg:huggingface/meta/llama31-base"
    )
    assert parent["licenses"][0]["license"]["name"] == "llama3.1"
    assert "id" not in parent["licenses"][0]["license"]
    assert _props(parent)["huggingface:base_model_relation"] == ["finetune"]
    assert _props(parent)["lineage:edge-source"] == ["both"]


def test_ancestors_are_nested_per_generation_with_inherited_licences_concluded(
    planted: Driver, neo4j_database: str, validator: Any
) -> None:
    doc = bom.build_bom(planted, "acme/inherits-adapter", neo4j_database)
    assert _errors(validator, doc) == []
    comp = doc["metadata"]["component"]
    assert comp["licenses"] == [
        {
            "license": {
                "name": "llama3.1",
                "url": licenses.catalogue().licenses["llama3.1"].url,
                "acknowledgement": "concluded",
            }
        }
    ]
    assert _props(comp)["lineage:license-source"] == ["inherited"]
    assert _props(comp)["lineage:license-inherited-from"] == ["meta/llama31-base"]
    [gen1] = comp["pedigree"]["ancestors"]
    [gen2] = gen1["pedigree"]["ancestors"]
    assert (gen1["name"], gen2["name"]) == ("inherits", "llama31-base")
    assert _props(gen1)["huggingface:base_model_relation"] == ["adapter"]
    assert _props(gen2)["huggingface:base_model_relation"] == ["finetune"]
    assert gen1["licenses"][0]["license"]["acknowledgement"] == "concluded"
    assert gen2["licenses"][0]["license"]["acknowledgement"] == "declared"
    assert "pedigree" not in gen2
    assert "2 ancestor(s)" in comp["pedigree"]["notes"]


def test_merge_lists_every_parent_and_licences_stay_valid(
    planted: Driver, neo4j_database: str, validator: Any
) -> None:
    models = [
        "acme/merge-mit",
        "acme/qwen-ft",
        "acme/imputed-child",
        "acme/sa-nc-merge",
        "acme/rail-c",
        "acme/unknown-child",
        "acme/other-child",
        "meta/llama3-base",
    ]
    spdx = set(_load("spdx.SNAPSHOT.schema.json")["enum"])
    for model in models:
        doc = bom.build_bom(planted, model, neo4j_database)
        assert _errors(validator, doc) == [], model
        for comp in _components(doc["metadata"]["component"]):
            for entry in comp.get("licenses", []):
                if "id" in entry["license"]:
                    assert entry["license"]["id"] in spdx
    merge = bom.build_bom(planted, "acme/merge-mit", neo4j_database)["metadata"]["component"]
    parents = merge["pedigree"]["ancestors"]
    assert {p["name"] for p in parents} == {"apache-base", "nc-base"}
    assert all(_props(p)["huggingface:base_model_relation"] == ["merge"] for p in parents)
    qwen = bom.build_bom(planted, "acme/qwen-ft", neo4j_database)["metadata"]["component"]
    assert qwen["licenses"] == [
        {
            "license": {
                "name": "Qwen",
                "url": licenses.catalogue().licenses["qwen"].url,
                "acknowledgement": "declared",
            }
        }
    ]
    imputed = bom.build_bom(planted, "acme/imputed-child", neo4j_database)["metadata"]["component"]
    assert imputed["licenses"] == [
        {
            "license": {
                "id": "Apache-2.0",
                "url": "https://www.apache.org/licenses/LICENSE-2.0",
                "acknowledgement": "concluded",
            }
        }
    ]
    unknown = bom.build_bom(planted, "acme/unknown-child", neo4j_database)["metadata"]["component"]
    assert "licenses" not in unknown and _props(unknown)["huggingface:license"] == ["unknown"]


def test_contradicted_declarations_are_notes_not_ancestors(
    planted: Driver, neo4j_database: str, validator: Any
) -> None:
    doc = bom.build_bom(planted, "acme/false-claim", neo4j_database)
    assert _errors(validator, doc) == []
    comp = doc["metadata"]["component"]
    assert [a["name"] for a in comp["pedigree"]["ancestors"]] == ["apache-base"]
    assert _props(comp)["lineage:contradicted-base-model"] == ["cc/nc-base"]
    assert "cc/nc-base is contradicted" in comp["pedigree"]["notes"]


def test_shared_ancestors_keep_bom_refs_unique(
    clean_graph: Driver, neo4j_database: str, validator: Any
) -> None:
    w = GraphWriter(clean_graph, neo4j_database)
    w.upsert_models(
        [
            {"id": i, "props": {"license": "apache-2.0", "sha": f"{n:040x}"}}
            for n, i in enumerate(["d/root", "d/a", "d/b", "d/merged"])
        ]
    )
    w.upsert_edges(
        [
            Edge("d/a", "d/root", "finetune", "recovered", 0.9),
            Edge("d/b", "d/root", "finetune", "recovered", 0.9),
            Edge("d/merged", "d/a", "merge", "recovered", 0.8),
            Edge("d/merged", "d/b", "merge", "recovered", 0.8),
        ]
    )
    licenses.refresh(clean_graph, neo4j_database)
    doc = bom.build_bom(clean_graph, "d/merged", neo4j_database)
    assert _errors(validator, doc) == []
    comps = list(_components(doc["metadata"]["component"]))
    assert [c["name"] for c in comps].count("root") == 2
    refs = [c["bom-ref"] for c in comps if "bom-ref" in c]
    assert len(refs) == len(set(refs)) == 4


def test_bom_of_an_unknown_or_hostile_model_is_a_usage_error(
    planted: Driver, neo4j_database: str
) -> None:
    for model in ("nobody/nothing", "x'}) MATCH (n) DETACH DELETE n //"):
        with pytest.raises(UsageError):
            bom.build_bom(planted, model, neo4j_database)
    assert GraphWriter(planted, neo4j_database).model_properties("acme/inherits") is not None


def test_purl_encodes_segments() -> None:
    assert bom.purl("org/name", "ABCDEF") == "pkg:huggingface/org/name@abcdef"
    assert bom.purl("solo") == "pkg:huggingface/solo"
    assert bom.purl("o rg/na@me") == "pkg:huggingface/o%20rg/na%40me"
