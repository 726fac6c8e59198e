"""Lineage recovery end to end on a really trained tiny zoo: every relation type, direction,
no lineage between independently trained models, declared-vs-recovered, ingest into Neo4j."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from lineage_index import api
from lineage_index.indexer.pipeline import asserted_edges, recover, sketch_all
from lineage_index.indexer.recover.verify import compare
from lineage_index.indexer.sketch.store import SketchStore
from lineage_index.records import Sketch, TensorSample


@pytest.fixture(scope="module")
def zoo(tiny_zoo: Path) -> Path:
    return tiny_zoo


@pytest.fixture(scope="module")
def truth(zoo: Path) -> dict:
    return json.loads((zoo / "truth.json").read_text())


@pytest.fixture(scope="module")
def recovered(zoo: Path):
    src = api.make_source(directory=zoo)
    records, report = sketch_all(src.iter_records(), src.open_reader, None)
    return records, report, recover(records, report.sketches)


def sk(name: str, w: np.ndarray) -> Sketch:
    """A one-matrix sketch, for the merge-fit cases."""
    s = TensorSample("layers.0.q.weight", "q.weight", 0, (w.shape[1], w.shape[1]), "F32", 0, 0, w.astype(np.float32))
    return Sketch(name, None, 1, "f", "f", "full", {s.key: s}, np.zeros(4, np.float32))


def _true_edges(truth: dict, relation: str | None = None) -> dict[tuple[str, str], str]:
    return {(e["child"], e["parent"]): e["relation"] for e in truth["edges"]
            if e["relation"] != "distill" and (relation is None or e["relation"] == relation)}


@pytest.mark.slow
@pytest.mark.parametrize("relation", ["finetune", "adapter", "quantized", "merge", "prune", "copy"])
def test_each_relation_is_recovered_with_direction_and_type(truth, recovered, relation) -> None:
    expected = _true_edges(truth, relation)
    assert expected, f"the tiny zoo plants no {relation} edge"
    got = {(e.child, e.parent): e.relation for e in asserted_edges(recovered[2].edges)}
    for pair, rel in expected.items():
        assert got.get(pair) == rel, f"{pair}: expected {rel}, got {got.get(pair)}"


@pytest.mark.slow
def test_no_edge_between_independent_trees_and_students_stay_apart(truth, recovered) -> None:
    roots = {m: info.get("weight_root") or info["root"] for m, info in truth["models"].items()}
    edges = asserted_edges(recovered[2].edges)
    assert all(roots[e.child] == roots[e.parent] for e in edges)
    students = [e["child"] for e in truth["edges"] if e["relation"] == "distill"]
    assert students
    assert not [e for e in edges if e.child in students]


@pytest.mark.slow
def test_independent_same_architecture_roots_are_unrelated(truth, recovered) -> None:
    _, report, _ = recovered
    roots = [m for m, info in truth["models"].items() if not info["parents"]]
    by_family: dict[str, list[str]] = {}
    for m in roots:
        by_family.setdefault(report.sketches[m].family, []).append(m)
    pairs = [(a, b) for ms in by_family.values() for i, a in enumerate(ms) for b in ms[i + 1:]]
    assert pairs, "the zoo must hold two unrelated roots of one architecture"
    for a, b in pairs:
        f = compare(report.sketches[a], report.sketches[b])
        assert not f.related and abs(f.cos_median) < 0.05


@pytest.mark.slow
def test_exact_precision_and_recall_on_the_tiny_zoo(truth, recovered) -> None:
    pred = {(e.child, e.parent) for e in asserted_edges(recovered[2].edges)}
    assert pred == set(_true_edges(truth))


@pytest.mark.slow
def test_wrong_declarations_are_judged_and_true_ones_never_contradicted(truth, recovered) -> None:
    true = _true_edges(truth)
    edges = {(e.child, e.parent): e for e in recovered[2].edges}
    declared = [(m, b, info["mess"].get("base_model")) for m, info in truth["models"].items()
                for b in ([info["declared_base_model"]] if isinstance(info["declared_base_model"], str)
                          else info["declared_base_model"] or [])
                if b in truth["models"]]
    wrong = [(m, b, kind) for m, b, kind in declared if (m, b) not in true]
    assert wrong and {kind for *_, kind in wrong} >= {"ancestor"}
    for m, b, _ in declared:
        if (m, b) in true:
            assert not edges[(m, b)].contradicted, (m, b)  # a true declaration is never called false
    asserted = {(e.child, e.parent) for e in asserted_edges(recovered[2].edges)}
    for m, b, kind in wrong:
        e = edges[(m, b)]
        assert e.source == "declared" and (m, b) not in asserted
        same_tree = truth["models"][m]["weight_root"] == truth["models"][b]["weight_root"]
        if kind == "ancestor" and same_tree:
            assert e.evidence.startswith("imprecise") and not e.contradicted, e.evidence
        if kind == "unrelated":
            assert e.contradicted and e.evidence.startswith("contradicted"), e.evidence
        true_parents = {p for (c, p) in true if c == m}
        if true_parents:
            assert set(e.recovered_parent.split(", ")) == true_parents


@pytest.mark.slow
def test_reingest_reads_nothing_for_unchanged_models(zoo: Path, tmp_path: Path) -> None:
    store = SketchStore(tmp_path / "store")
    first = api.ingest(api.make_source(directory=zoo), store=store)
    assert first.sketched > 0 and first.bytes_read > 0
    second = api.ingest(api.make_source(directory=zoo), store=store)
    assert second.sketched == 0 and second.bytes_read == 0 and second.from_store == first.sketched
    assert {(e.child, e.parent, e.relation) for e in second.edges} == {
        (e.child, e.parent, e.relation) for e in first.edges}


@pytest.mark.slow
@pytest.mark.neo4j
def test_full_ingest_into_neo4j_and_eval_from_the_graph(zoo, truth, neo4j_server, clean_graph, tmp_path) -> None:
    from lineage_index.schema.connection import Connection
    from lineage_index.schema.writer import GraphWriter

    conn = Connection(uri=neo4j_server.uri, user=neo4j_server.user, database=neo4j_server.database,
                      managed=False, password=neo4j_server.password)
    summary = api.ingest(api.make_source(directory=zoo), store=SketchStore(tmp_path / "s"), conn=conn)
    stored = GraphWriter(clean_graph, conn.database).read_edges()
    assert {(e.child, e.parent, e.relation, e.source, e.contradicted) for e in stored} == {
        (e.child, e.parent, e.relation, e.source, e.contradicted) for e in summary.edges}
    rows = api.evaluate(zoo / "truth.json", asserted_edges(stored), SketchStore(tmp_path / "s"))
    assert rows[0].f1 == 1.0 and rows[0].cross_tree_edges == 0
    assert [r.name for r in rows] == ["lineage-index", "MoTHer (same sketches)", "declared-only"]
    # every planted licence conflict is reported by Cypher alone, and nothing else
    from lineage_index.queries.runner import run_query

    found = {(r["child"], r["parent"]) for r in run_query(clean_graph, "license_conflicts", {}, conn.database).rows
             if r.get("child") and r.get("parent")}
    planted = {(c["child"], c["parent"]) for c in truth["conflicts"] if c["verdict"] == "conflict"}
    assert planted and found == planted
    # ingesting again changes nothing in the graph
    before = GraphWriter(clean_graph, conn.database).counts()
    api.ingest(api.make_source(directory=zoo), store=SketchStore(tmp_path / "s"), conn=conn)
    assert GraphWriter(clean_graph, conn.database).counts() == before


def test_merge_fit_recovers_coefficients_of_a_linear_merge() -> None:
    from lineage_index.indexer.recover.verify import merge_fit

    rng = np.random.default_rng(0)
    base = rng.normal(size=(16, 64)).astype(np.float32)


    a = base + 0.05 * rng.normal(size=base.shape)
    b = base + 0.05 * rng.normal(size=base.shape)
    c = base + 0.05 * rng.normal(size=base.shape)
    merged = 0.3 * a + 0.7 * b
    ids, weights, ratio = merge_fit(sk("m", merged), [sk("a", a), sk("b", b), sk("c", c)])
    assert sorted(ids) == ["a", "b"] and ratio < 0.01
    assert dict(zip(ids, weights, strict=True))["a"] == pytest.approx(0.3, abs=1e-3)
    # a fine-tune of a is explained by a alone: no merge
    ids, _, ratio = merge_fit(sk("f", a + 0.05 * rng.normal(size=base.shape)), [sk("a", a), sk("b", b), sk("c", c)])
    assert len(ids) < 2 or ratio > 0.3


@pytest.mark.slow
def test_lineage_crosses_ingest_runs_of_different_orgs(zoo: Path, truth, tmp_path: Path) -> None:
    orgs = sorted(p.name for p in zoo.iterdir() if p.is_dir())
    first, second = tmp_path / "a", tmp_path / "b"
    for i, org in enumerate(orgs):
        target = first if i % 2 == 0 else second
        target.mkdir(exist_ok=True)
        shutil.copytree(zoo / org, target / org, copy_function=os.link)  # symlinks out of a root are not read
    store = SketchStore(tmp_path / "store")
    api.ingest(api.make_source(directory=first), store=store)
    later = api.ingest(api.make_source(directory=second), store=store)
    assert later.sketched < len(truth["models"])  # the first run's models were not read again
    got = {(e.child, e.parent) for e in asserted_edges(later.edges)}
    assert got == set(_true_edges(truth))


@pytest.mark.parametrize("method", ["linear", "task", "ties", "dare"])
def test_merge_methods_are_found_with_their_inputs(method: str) -> None:
    from lineage_index.indexer.recover.verify import find_merge

    rng = np.random.default_rng(1)
    base = rng.normal(size=(32, 128))


    a, b, c = (base + 0.05 * rng.normal(size=base.shape) for _ in range(3))
    da, db = a - base, b - base
    if method == "linear":
        m = 0.4 * a + 0.6 * b
    elif method == "task":
        m = base + da + db
    elif method == "ties":  # keep the top 20% of each delta, elect signs, average agreeing values
        trimmed = np.stack([np.where(np.abs(d) >= np.quantile(np.abs(d), 0.8), d, 0) for d in (da, db)])
        sign = np.sign(trimmed.sum(0))
        agree = np.where(np.sign(trimmed) == sign, trimmed, 0)
        m = base + agree.sum(0) / np.maximum((agree != 0).sum(0), 1)
    else:  # DARE: drop half of each delta at random, rescale
        m = base + (da * (rng.random(base.shape) > 0.5) + db * (rng.random(base.shape) > 0.5))
    models = [sk("a", a), sk("b", b), sk("base", base), sk("c", c)]
    fit = find_merge(sk("m", m.astype(np.float32)), models)
    assert fit is not None and sorted(fit.parents) == ["a", "b"]
    # an ordinary fine-tune of a is no merge, whatever the method tried
    assert find_merge(sk("f", a + 0.05 * rng.normal(size=base.shape)), models) is None


def test_a_soup_of_four_is_a_merge_but_a_parent_of_four_is_not() -> None:
    from lineage_index.indexer.recover.verify import find_merge

    rng = np.random.default_rng(2)
    base = rng.normal(size=(32, 128))


    kids = [sk(f"k{i}", base + 0.05 * rng.normal(size=base.shape)) for i in range(4)]
    soup = sk("soup", np.mean([k.samples["layers.0.q.weight"].values for k in kids], axis=0))
    fit = find_merge(soup, kids + [sk("base", base)])
    assert fit is not None and sorted(fit.parents) == ["k0", "k1", "k2", "k3"]
    assert find_merge(sk("base", base), kids) is None  # the parent of four fine-tunes


def _multi_sketch(name: str, tensors: dict[str, np.ndarray]) -> Sketch:
    samples = {k: TensorSample(k, k.split(".", 1)[1], i, w.shape, "F32", 0, 0, w.astype(np.float32))
               for i, (k, w) in enumerate(tensors.items())}
    return Sketch(name, None, 1, "f", "f", "full", samples, np.zeros(4, np.float32))


def _record(model_id: str, day: int | None, base: tuple[str, ...] = ()):
    from lineage_index.records import ModelRecord

    created = None if day is None else f"2024-01-{1 + day:02d}T00:00:00Z"
    return ModelRecord(model_id, "dir", created_at=created, base_models=base)


def test_shuffled_upload_times_are_noticed_and_dropped(recovered) -> None:
    """A re-dated collection: times shuffled among the models must change nothing against no times
    at all (the collection-wide time trust rejects them; a family's own few votes cannot pass them)."""
    import dataclasses
    import random

    records, report, _ = recovered

    def asserted(recs) -> set[tuple[str, str, str]]:
        return {(e.child, e.parent, e.relation) for e in asserted_edges(recover(recs, report.sketches).edges)}

    no_times = asserted({m: dataclasses.replace(r, created_at=None) for m, r in records.items()})
    for seed in (0, 1):
        times = random.Random(seed).sample([r.created_at for r in records.values()], len(records))
        shuffled = {m: dataclasses.replace(r, created_at=t) for (m, r), t in zip(records.items(), times, strict=True)}
        assert asserted(shuffled) == no_times


def test_a_structural_child_votes_on_time_only_with_the_model_it_was_made_from() -> None:
    """A pruned model is every relative's "child" by its zeros, but only its own nearest relative
    made it: a sibling uploaded after it is no evidence against the upload times."""
    from lineage_index.indexer.recover.assemble import time_trust, time_votes

    rng = np.random.default_rng(5)
    root = {f"l{i}.w": rng.normal(0, 0.3, (32, 48)) for i in range(3)}
    pruned = {k: np.where(np.abs(v) < np.quantile(np.abs(v), 0.3), 0.0, v) for k, v in root.items()}
    sibling = {k: v + 0.3 * rng.normal(0, 0.3, v.shape) for k, v in root.items()}
    s = {m: _multi_sketch(m, t) for m, t in (("root", root), ("pruned", pruned), ("sibling", sibling))}
    made, other = compare(s["root"], s["pruned"]), compare(s["sibling"], s["pruned"])
    assert made.prune_child == other.prune_child == "pruned" and made.dist < other.dist
    records = {"root": _record("root", 0), "pruned": _record("pruned", 2), "sibling": _record("sibling", 10)}
    assert time_votes([made, other], records, set()) == (1, 1)
    assert time_trust([made, other], records, set()) == 1.0
    # a declared base the weights relate votes too: here against the times (a re-dated upload)
    records["pruned"] = _record("pruned", 2, ("sibling",))
    assert time_votes([made, other], records, set()) == (1, 2)


@pytest.mark.parametrize("declared_first", [True, False])
def test_between_equally_near_parents_the_declared_one_is_taken(declared_first: bool) -> None:
    """A transfer to another label space keeps only the body comparable; when two candidates share
    that body exactly (the root and a head re-train of it), the card decides, whatever the ids."""
    rng = np.random.default_rng(6)
    root = {f"l{i}.conv": rng.normal(0, 0.3, (32, 48)) for i in range(6)} | {"l9.head": rng.normal(0, 0.3, (5, 48))}
    new_head = {**root, "l9.head": rng.normal(0, 0.05, (5, 48))}  # re-trained from scratch: smaller
    transfer = {k: v + 0.5 * rng.normal(0, 0.3, v.shape) for k, v in root.items() if k != "l9.head"}
    transfer["l9.head"] = rng.normal(0, 0.3, (3, 48))
    base, other = ("a/root", "z/new-head") if declared_first else ("z/root", "a/new-head")
    sketches = {base: _multi_sketch(base, root), other: _multi_sketch(other, new_head),
                "m/transfer": _multi_sketch("m/transfer", transfer)}
    assert compare(sketches["m/transfer"], sketches[base]).dist == compare(sketches["m/transfer"], sketches[other]).dist
    records = {base: _record(base, 0), other: _record(other, 5, (base,)), "m/transfer": _record("m/transfer", 9, (base,))}
    edges = {(e.child, e.parent) for e in asserted_edges(recover(records, sketches).edges)}
    assert edges == {(other, base), ("m/transfer", base)}


def test_a_quantised_child_is_quantized_only_within_its_schemes_rounding_error() -> None:
    """int8 rows of the base are the base's `quantized` child, not a fine-tune's: the fine-tune
    differs from them by far more than the scheme's rounding error (read.quant_error)."""
    from dataclasses import replace

    from lineage_index.indexer.read.quant_error import expected_error, quant_tolerance
    from lineage_index.indexer.recover.verify import compare

    rng = np.random.default_rng(3)
    keys = [f"layers.{i}.mlp.up" for i in range(4)]
    base = {k: rng.normal(size=(32, 256)) for k in keys}
    ft = {k: w + 0.08 * rng.normal(size=w.shape) for k, w in base.items()}  # a fine-tune 8% away

    def int8(w: np.ndarray) -> np.ndarray:  # row absmax, as bitsandbytes LLM.int8 stores it
        scale = np.abs(w).max(axis=1, keepdims=True) / 127
        return np.round(w / scale) * scale

    q = replace(_multi_sketch("base-int8", {k: int8(w) for k, w in base.items()}), quant="bnb-int8")
    assert compare(_multi_sketch("base", base), q).quant_child == "base-int8"
    f = compare(_multi_sketch("ft", ft), q)
    assert f.related and f.quant_child is None
    # the tolerances come from the formats: coarser codes round coarser
    assert expected_error("bnb-int8") < expected_error("fp8-e4m3") < expected_error("gptq-int4") \
        < expected_error("gptq-int3") < expected_error("mlx-2bit")
    assert quant_tolerance("gguf-Q8_0") < 0.08 < quant_tolerance("awq-int4")
