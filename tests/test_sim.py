"""Simulated hub and the scale paths: sim build, packed store, batch verify, index choice, recovery.

Quick (seconds): small simulated hubs (a few thousand models at most), no Neo4j.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from lineage_index.config import SKETCH_VERSION
from lineage_index.evaluation import score
from lineage_index.indexer.pipeline import asserted_edges
from lineage_index.indexer.recover import candidates
from lineage_index.indexer.recover.arborescence import arborescence_edges
from lineage_index.indexer.recover.batch import recover_packed
from lineage_index.indexer.recover.vectorised import compare_pairs, merge_screen
from lineage_index.indexer.recover.verify import compare, find_merge
from lineage_index.indexer.sketch.packed import PackedWriter
from lineage_index.indexer.sketch.sample import embed
from lineage_index.indexer.sketch.store import SketchStore
from lineage_index.records import (
    RELATIONS,
    FileEntry,
    ModelRecord,
    Sketch,
    TensorInfo,
    TensorSample,
)
from lineage_index.sim.build import build_sim
from lineage_index.sim.values import embed_batch

# F1 of the batch recovery on the 2,500-model hub below: 0.962 when measured (seed 5); the floor
# leaves room for a different machine's float summation order, not for a broken stage.
F1_FLOOR = 0.90


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "hub"
    build_sim(out, 2500, seed=5)
    return out


@pytest.fixture(scope="module")
def truth(hub: Path) -> dict:
    return json.loads((hub / "truth.json").read_text())


def _largest_family(store: SketchStore):
    packed = store.packed
    names = [f for f in packed.families() if not f.startswith("adapter:")]
    fams = [packed.load_family(f) for f in names]
    return max(fams, key=len)


def test_sim_build_is_deterministic(tmp_path: Path) -> None:
    first, again = tmp_path / "first", tmp_path / "again"
    build_sim(first, 400, seed=5)
    build_sim(again, 400, seed=5)
    assert (again / "truth.json").read_bytes() == (first / "truth.json").read_bytes()
    a, b = SketchStore(first / "store").packed, SketchStore(again / "store").packed
    assert a.families() == b.families()
    for fam in a.families()[:20]:
        fa, fb = a.load_family(fam), b.load_family(fam)
        assert fa.model_ids == fb.model_ids
        assert np.array_equal(np.asarray(fa.values), np.asarray(fb.values))
        assert np.array_equal(np.asarray(fa.embedding), np.asarray(fb.embedding))
        assert fa.records == fb.records
    other = tmp_path / "other"
    build_sim(other, 400, seed=6)
    assert (other / "truth.json").read_bytes() != (first / "truth.json").read_bytes()


def test_sim_truth_is_consistent_with_the_store(hub: Path, truth: dict) -> None:
    models = truth["models"]
    assert len(models) == 2500
    store = SketchStore(hub / "store")
    records = store.records()
    assert set(records) == set(models)  # every simulated model is indexed, with its record
    times = {m: info["created_at"] for m, info in models.items()}
    parents: dict[str, list[str]] = {}
    for e in truth["edges"]:
        assert e["relation"] in RELATIONS
        assert e["child"] in models and e["parent"] in models and e["child"] != e["parent"]
        assert times[e["parent"]] < times[e["child"]]  # parents are uploaded first
        parents.setdefault(e["child"], []).append(e["parent"])
    for m, info in models.items():
        assert sorted(parents.get(m, [])) == sorted(info["parents"])
        assert (info["relation"] == "merge") == (len(info["parents"]) >= 2)
        assert (info["relation"] is None) == (not info["parents"])
        if info["relation"] in ("finetune", "merge", "quantized", "copy", "prune"):  # weights descend
            assert info["weight_root"] == models[info["parents"][0]]["weight_root"]
        rec = records[m]
        assert rec.created_at == info["created_at"]
        assert rec.license == info["declared_license"]
        declared = info["declared_base_model"]
        declared = [declared] if isinstance(declared, str) else (declared or [])
        if info["relation"] != "adapter":
            assert list(rec.base_models) == declared
        if info["mess"]["base_model"] == "correct" and info["relation"] != "adapter":
            assert sorted(rec.base_models) == sorted(info["parents"])
    rels = {e["relation"] for e in truth["edges"]}
    assert {"finetune", "merge", "quantized", "copy", "adapter"} <= rels
    sizes: dict[str, int] = {}
    for info in models.values():
        sizes[info["root"]] = sizes.get(info["root"], 0) + 1
    assert max(sizes.values()) >= 20 and sum(1 for s in sizes.values() if s == 1) >= 10  # heavy tail


def test_simulated_sketches_embed_as_the_sketcher_does(hub: Path) -> None:
    fam = _largest_family(SketchStore(hub / "store"))
    lay = fam.layout
    values = np.asarray(fam.values[:5]).reshape(5, len(lay.keys), -1)
    batch = embed_batch(values, list(lay.keys))
    for i in range(5):
        assert np.allclose(embed(fam.sketch(i).samples), batch[i], atol=1e-6)
        assert np.allclose(np.asarray(fam.embedding[i]), batch[i], atol=1e-6)


def test_batch_verification_gives_compare_s_features(hub: Path, truth: dict) -> None:
    fam = _largest_family(SketchStore(hub / "store"))
    fam.values = np.asarray(fam.values)
    pos = {m: i for i, m in enumerate(fam.model_ids)}
    true_pairs = [(pos[e["child"]], pos[e["parent"]]) for e in truth["edges"]
                  if e["child"] in pos and e["parent"] in pos]
    rng = np.random.default_rng(0)
    pairs = np.asarray(true_pairs + rng.integers(0, len(fam), size=(150, 2)).tolist())
    table = compare_pairs(fam, pairs[:, 0], pairs[:, 1])
    sketches = fam.sketches()
    kinds = set()
    for i, (a, b) in enumerate(pairs):
        want, got = compare(sketches[a], sketches[b]), table.features(i)
        for f in dataclasses.fields(want):
            x, y = getattr(want, f.name), getattr(got, f.name)
            if isinstance(x, float):
                assert x == pytest.approx(y, rel=1e-6, abs=1e-9), (f.name, a, b)
            else:
                assert x == y, (f.name, a, b)
        kinds.add((want.related, want.copy_child is not None, want.quant_child is not None,
                   want.prune_child is not None, want.identical_share > 0))
    assert len(kinds) >= 5  # unrelated, copies, quantised, pruned and partial pairs were all compared


def test_merge_screen_keeps_every_merge_find_merge_accepts(hub: Path, truth: dict) -> None:
    fam = _largest_family(SketchStore(hub / "store"))
    sketches = {s.model_id: s for s in fam.sketches()}
    emb = np.asarray(fam.embedding)
    res = candidates.knn(emb, 8)
    queries = [(fam.model_ids[i], [fam.model_ids[j] for j in row if j >= 0]) for i, row in enumerate(res.idx)]
    allowed = merge_screen(fam, queries)
    accepted = {m for m, near in queries if find_merge(sketches[m], [sketches[x] for x in near]) is not None}
    assert accepted and accepted <= allowed
    assert len(allowed) < 0.8 * len(queries)  # and it spares fits (more in assembly: copies are left out)


def test_index_choice_switches_to_compressed_past_the_threshold(hub: Path, truth: dict, monkeypatch) -> None:
    assert candidates.choose_index(candidates.FLAT_MAX - 1, 256).kind == "flat"
    big = candidates.choose_index(candidates.FLAT_MAX, 256)
    assert big.kind == "ivfsq8" and big.nlist >= 4 * int(np.sqrt(candidates.FLAT_MAX)) - 1
    assert candidates.choose_index(10, 256, gpu=True).gpu  # the GPU path is chosen when faiss-gpu sees one
    assert candidates.choose_index(10, 256).gpu == candidates._gpu_available()
    # every full model of the hub in one index, to have a few thousand vectors
    store = SketchStore(hub / "store")
    fams = [store.packed.load_family(f) for f in store.packed.families() if not f.startswith("adapter:")]
    ids = [m for f in fams for m in f.model_ids]
    vectors = np.concatenate([np.asarray(f.embedding) for f in fams])
    pos = {m: i for i, m in enumerate(ids)}
    exact = candidates.candidate_rows(vectors, 10)
    monkeypatch.setattr(candidates, "FLAT_MAX", 500)
    approx = candidates.candidate_rows(vectors, 10)
    assert exact.plan.kind == "flat" and approx.plan.kind == "ivfsq8"
    assert approx.tuned_recall >= candidates.TARGET_RECALL
    q = np.random.default_rng(2).choice(len(vectors), 400, replace=False)
    ex_d, _ = candidates.exact_knn(vectors, vectors[q], 11)
    plan = dataclasses.replace(candidates.choose_index(len(vectors), 256), nprobe=approx.plan.nprobe)
    index = candidates.build_index(vectors, plan)
    _, got = candidates._search(index, vectors, vectors[q], 11, plan)
    assert candidates.recall_at_k(got, ex_d, vectors, vectors[q]) >= 0.99
    assert approx.plan.nprobe < approx.plan.nlist  # tuned, not a full scan

    def parent_hits(rows) -> int:
        pairs = set(zip(rows.a.tolist(), rows.b.tolist(), strict=True))
        return sum((min(pos[e["child"]], pos[e["parent"]]), max(pos[e["child"]], pos[e["parent"]])) in pairs
                   for e in truth["edges"] if e["child"] in pos and e["parent"] in pos)

    assert parent_hits(approx) >= 0.99 * parent_hits(exact)


def test_recovery_on_a_small_sim_reaches_high_f1(hub: Path, truth: dict) -> None:
    result = recover_packed(SketchStore(hub / "store"))
    s = score(asserted_edges(result.edges), truth)
    assert s.f1 >= F1_FLOOR, s
    assert s.direction_accuracy >= 0.95
    assert result.pairs > 0 and set(result.clock.wall) == {"candidates", "verify", "assemble"}
    rels = {e.relation for e in result.edges}
    assert {"finetune", "merge", "quantized", "copy", "adapter"} <= rels


def test_array_arborescence_has_networkx_s_weight() -> None:
    rng = np.random.default_rng(3)
    for trial in range(60):
        n = int(rng.integers(2, 25))
        g = nx.DiGraph()
        g.add_nodes_from(range(n))
        for _ in range(int(rng.integers(n, 4 * n))):
            u, v = (int(x) for x in rng.integers(0, n, 2))
            if u != v:
                g.add_edge(u, v, weight=float(rng.integers(1, 6)) if trial % 2 else float(rng.random()))
        g.add_node("__root__")
        for v in range(n):
            g.add_edge("__root__", v, weight=100.0)
        mine = arborescence_edges(g)
        ref = nx.minimum_spanning_arborescence(g, attr="weight").edges()
        assert nx.is_arborescence(nx.DiGraph(mine)) and len(mine) == n
        assert sum(g[u][v]["weight"] for u, v in mine) == pytest.approx(sum(g[u][v]["weight"] for u, v in ref))


def _sketch(model_id: str, sha: str, seed: int, quant: str | None = None, family: str = "famX") -> Sketch:
    rng = np.random.default_rng(seed)
    samples = {
        "layers.0.q.weight": TensorSample("layers.0.q.weight", "q.weight", 0, (64, 32), "BF16", 3, 0,
                                          rng.standard_normal((8, 32)).astype(np.float32), 512, quant),
        "norm.weight": TensorSample("norm.weight", "norm.weight", None, (32,), "F32", 0, 0,
                                    rng.standard_normal((1, 32)).astype(np.float32), 128, None),
    }
    return Sketch(model_id, sha, SKETCH_VERSION, family, f"desc of {family}", "full", samples, rng.standard_normal(256).astype(np.float32),
                  bytes_read=640, requests=2, model_bytes=12345, dtypes=("BF16", "F32"), quant=quant)


def test_packed_store_round_trip_and_shadowing(tmp_path: Path) -> None:
    store = SketchStore(tmp_path / "store")
    sketches = [_sketch(f"org/m{i}", f"sha{i}", i, "bnb-int8" if i == 2 else None, "famX" if i < 3 else "famY")
                for i in range(5)]
    records = {s.model_id: ModelRecord(s.model_id, "dir", sha=s.sha, license="mit", base_models=("org/m0",),
                                       tags=("a", "b"), config={"model_type": "llama"},
                                       files=(FileEntry("model.safetensors", 10),),
                                       tensors=(TensorInfo("model.layers.0.q.weight", "BF16", (64, 32), "f", 8, 4104),))
               for s in sketches[:4]}
    with PackedWriter(store, shard_rows=3) as writer:
        writer.add_sketches(sketches, records)
    assert len(store.packed.manifest["shards"]) == 2  # famX fills the first shard, famY opens the second
    assert store.packed.families() == ["famX", "famY"]
    for s in sketches:
        got = store.get(s.model_id, s.sha)
        assert got is not None and store.has(s.model_id, s.sha) and not store.has(s.model_id, "other")
        assert (got.family, got.dtypes, got.quant, got.bytes_read, got.model_bytes) == (
            s.family, s.dtypes, s.quant, s.bytes_read, s.model_bytes)
        assert np.array_equal(got.embedding, s.embedding)
        for key, sample in s.samples.items():
            other = got.samples[key]
            assert np.array_equal(other.values, sample.values)
            assert dataclasses.replace(other, values=None) == dataclasses.replace(sample, values=None)
    assert store.records() == records  # the model without a record has none
    # a later write of one model (new sha) shadows the old row
    newer = _sketch("org/m1", "sha1-new", 99)
    with PackedWriter(store) as writer:
        writer.add_sketches([newer])
    assert np.array_equal(store.latest("org/m1").embedding, newer.embedding)
    assert store.get("org/m1", "sha1") is not None  # the old version is still addressable by its sha
    fam = store.packed.load_family("famX")
    assert sorted(fam.model_ids) == [f"org/m{i}" for i in range(3)]  # the old row of m1 is shadowed
    assert np.array_equal(np.asarray(fam.embedding[fam.model_ids.index("org/m1")]), newer.embedding)
    # an interrupted write leaves nothing behind
    before = json.loads((store.root / "_packed" / "manifest.json").read_text())
    with pytest.raises(RuntimeError), PackedWriter(store, shard_rows=2) as writer:
        writer.add_sketches([_sketch("org/x", "s", 7), _sketch("org/y", "s", 8), _sketch("org/z", "s", 9)])
        raise RuntimeError("killed")
    after = json.loads((store.root / "_packed" / "manifest.json").read_text())
    assert [s["name"] for s in after["shards"]][: len(before["shards"])] == [s["name"] for s in before["shards"]]
    assert not list((store.root / "_packed").glob(".tmp-*"))


def test_collapsed_search_passes_a_group_s_members_to_its_neighbours() -> None:
    """A child of a re-upload meets the original even when the search ran over the re-upload."""
    rng = np.random.default_rng(5)
    base = rng.normal(size=(60, 32)).astype(np.float32)  # 60 unrelated models
    original = base[0]
    reupload = original + 1e-4 * rng.normal(size=32).astype(np.float32)  # near-duplicate of row 0
    child = original + 0.3 * rng.normal(size=32).astype(np.float32)  # a fine-tune of it
    vectors = np.vstack([base, reupload, child])
    ro, rr, rc = 0, 60, 61
    priority = np.zeros(len(vectors))
    priority[ro] = 1.0  # the search prefers the re-upload as the group's representative
    rows = candidates.candidate_rows(vectors, 5, priority)
    assert rows.representatives == len(vectors) - 1  # the group was collapsed
    pairs = set(zip(rows.a.tolist(), rows.b.tolist(), strict=True))
    assert (rr, rc) in pairs and (ro, rr) in pairs
    assert (ro, rc) in pairs  # through the group's fan-out, not the search
