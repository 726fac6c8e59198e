"""The depth-changing zoo (``zoo.depth``): layer counts, copied layers, truth, determinism.

The zoo is built once per module (really trained, ~15 s on one thread) and once more for the
byte-identity check. Expected layer mappings are written out here from the recipe (layer
pruning keeps 0,1,2,5; the frankenmerge is A-ft 0..3 + A 2..5; the up-scale is B 0..4 + B
1..5), independently of the generator's own ``layer_sources``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lineage_index.zoo import depth as Z
from lineage_index.zoo.archs import ARCHS

EXPECTED_LAYERS = {Z.A: 6, Z.A_FT: 6, Z.B: 6, Z.C: 4, Z.A_PRUNED: 4, Z.A_PRUNED_FT: 4, Z.FRANKEN: 8, Z.B_UP: 10}
EXPECTED_EDGES = {
    (Z.A_FT, Z.A, "finetune"),
    (Z.A_PRUNED, Z.A_FT, "prune"),
    (Z.A_PRUNED_FT, Z.A_PRUNED, "finetune"),
    (Z.FRANKEN, Z.A_FT, "merge"),
    (Z.FRANKEN, Z.A, "merge"),
    (Z.B_UP, Z.B, "merge"),
}
# child -> per output layer (source model, source layer)
COPIES = {
    Z.A_PRUNED: [(Z.A_FT, 0), (Z.A_FT, 1), (Z.A_FT, 2), (Z.A_FT, 5)],
    Z.FRANKEN: [(Z.A_FT, i) for i in range(4)] + [(Z.A, i) for i in range(2, 6)],
    Z.B_UP: [(Z.B, i) for i in range(5)] + [(Z.B, i) for i in range(1, 6)],
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Z.DepthZooSummary]:
    out = tmp_path_factory.mktemp("depth") / "zoo"
    return out, Z.build_depth_zoo(out, seed=0)


def _truth(out: Path) -> dict:
    return json.loads((out / "truth.json").read_text())


def _header(path: Path) -> dict:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return {k: v for k, v in json.loads(raw[8 : 8 + n]).items() if k != "__metadata__"}


def _layers(state: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    prefix = f"model.layers.{i}."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _state(out: Path, model_id: str) -> dict[str, torch.Tensor]:
    return load_file(str(out / model_id / "model.safetensors"))


def test_layer_counts_in_headers_and_configs(zoo):
    out, summary = zoo
    assert summary.layers == EXPECTED_LAYERS
    for model_id, n in EXPECTED_LAYERS.items():
        header = _header(out / model_id / "model.safetensors")
        idx = {int(k.split(".")[2]) for k in header if k.startswith("model.layers.")}
        assert idx == set(range(n)), model_id
        per_layer = {k.split(".", 3)[3] for k in header if k.startswith("model.layers.0.")}
        assert len(per_layer) == 9  # 7 projections + 2 norms, the same block shapes everywhere
        assert header["model.embed_tokens.weight"]["shape"] == [512, 64]
        cfg = json.loads((out / model_id / "config.json").read_text())
        assert cfg["num_hidden_layers"] == n
        assert cfg["dtype"] == {"BF16": "bfloat16", "F32": "float32"}[header["lm_head.weight"]["dtype"]]
        assert _truth(out)["models"][model_id]["num_hidden_layers"] == n


def test_every_repo_loads_in_transformers(zoo):
    import transformers

    out, _ = zoo
    ids = torch.arange(12).unsqueeze(0)
    for model_id, n in EXPECTED_LAYERS.items():
        model = transformers.LlamaForCausalLM.from_pretrained(out / model_id)
        assert len(model.model.layers) == n
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_copied_layers_are_bit_identical_to_their_sources(zoo):
    out, _ = zoo
    truth = _truth(out)
    for child, sources in COPIES.items():
        cstate = _state(out, child)
        assert truth["models"][child]["layer_sources"] == [[m, i] for m, i in sources]
        for new, (src, old) in enumerate(sources):
            got, want = _layers(cstate, new), _layers(_state(out, src), old)
            assert got.keys() == want.keys() and got
            for name in want:
                assert got[name].dtype == want[name].dtype
                assert torch.equal(got[name], want[name]), (child, new, src, old, name)
    # non-layer tensors: the pruned model and the frankenmerge keep A-ft's, the up-scale B's
    for child, src in ((Z.A_PRUNED, Z.A_FT), (Z.FRANKEN, Z.A_FT), (Z.B_UP, Z.B)):
        cstate, sstate = _state(out, child), _state(out, src)
        for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
            assert torch.equal(cstate[name], sstate[name]), (child, name)


def test_trained_models_differ_from_where_they_started(zoo):
    out, _ = zoo
    a, a_ft, b, c = (_state(out, m) for m in (Z.A, Z.A_FT, Z.B, Z.C))
    pruned, healed = _state(out, Z.A_PRUNED), _state(out, Z.A_PRUNED_FT)
    # the fine-tune moved every layer, so the frankenmerge's two halves come from distinct models
    for i in range(6):
        w = "self_attn.q_proj.weight"
        assert not torch.equal(_layers(a, i)[w], _layers(a_ft, i)[w])
    # the healing fine-tune moved the pruned model, but it stays nearer to it than to C
    def cos(x: dict, y: dict) -> float:
        vx = torch.cat([v.float().flatten() for k, v in sorted(x.items()) if k.startswith("model.layers.")])
        vy = torch.cat([v.float().flatten() for k, v in sorted(y.items()) if k.startswith("model.layers.")])
        return float(torch.nn.functional.cosine_similarity(vx, vy, dim=0))

    assert any(not torch.equal(healed[k].float(), pruned[k].float()) for k in pruned)
    assert cos(healed, pruned) > cos(healed, c)
    assert cos(a, b) < cos(a, a_ft)


def test_roots_are_really_trained(zoo):
    from lineage_index.zoo.archs import load_into
    from lineage_index.zoo.data import make_task

    out, _ = zoo
    specs, _ = Z._plan(0)
    gen = torch.Generator().manual_seed(123)
    for spec in specs:
        if spec.parents:
            continue
        seqs = make_task(spec.task, 512).sample(8, 32, gen)
        trained = Z.make_depth_model(EXPECTED_LAYERS[spec.id], 0)
        load_into(trained, _state(out, spec.id))
        fresh = Z.make_depth_model(EXPECTED_LAYERS[spec.id], 0)
        with torch.no_grad():
            l_trained = float(trained(input_ids=seqs, labels=seqs).loss)
            l_fresh = float(fresh(input_ids=seqs, labels=seqs).loss)
        assert l_trained < l_fresh - 1.0, (spec.id, l_trained, l_fresh)


def test_truth_edges_times_families_and_cards(zoo):
    out, summary = zoo
    truth = _truth(out)
    models = truth["models"]
    assert set(models) == set(EXPECTED_LAYERS)
    edges = {(e["child"], e["parent"], e["relation"]) for e in truth["edges"]}
    assert edges == EXPECTED_EDGES and summary.n_edges == len(truth["edges"])
    for child, parent, relation in edges:
        assert models[child]["created_at"] > models[parent]["created_at"], (child, parent)
        assert parent in models[child]["parents"] and models[child]["relation"] == relation
    # independent roots: C touches no edge; A's and B's trees never meet
    assert all(Z.C not in (c, p) for c, p, _ in edges)
    roots = {m: models[m]["root"] for m in models}
    assert {m for m, r in roots.items() if r == Z.B} == {Z.B, Z.B_UP}
    assert {m for m, r in roots.items() if r == Z.A} == {Z.A, Z.A_FT, Z.A_PRUNED, Z.A_PRUNED_FT, Z.FRANKEN}
    assert roots[Z.C] == Z.C and models[Z.C]["parents"] == []
    for field in ("license", "root", "weight_root", "architecture", "kind", "relation", "parents",
                  "created_at", "declared_base_model", "declared_license", "dtype", "mess"):
        assert all(field in m for m in models.values()), field
    # cards: honest licence, created_at as in truth, base_model declared honestly on some children
    children = [m for m in models if models[m]["parents"]]
    declaring = []
    for model_id, m in models.items():
        text = (out / model_id / "README.md").read_text()
        fm = yaml.safe_load(text.split("---", 2)[1])
        assert m["license"] in ("apache-2.0", "mit") and fm["license"] == m["license"]
        assert fm["created_at"] == m["created_at"]
        declared = fm.get("base_model")
        assert declared == m["declared_base_model"]
        if declared is not None:
            declaring.append(model_id)
            assert set([declared] if isinstance(declared, str) else declared) <= set(m["parents"])
    assert 2 <= len(declaring) <= 3 and set(declaring) <= set(children)
    assert models[Z.A_PRUNED]["declared_base_model"] is None and models[Z.B_UP]["declared_base_model"] is None


def test_same_seed_gives_byte_identical_files_and_existing_archs_untouched(zoo, tmp_path):
    out, _ = zoo
    again = tmp_path / "again"
    Z.build_depth_zoo(again, seed=0, progress=True)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert len(files) == 1 + 4 * len(EXPECTED_LAYERS)  # config, safetensors, README, generation_config
    for rel in files:
        assert (out / rel).read_bytes() == (again / rel).read_bytes(), rel
    assert "llama-nano" in ARCHS and ARCHS["llama-nano"].config_kwargs["num_hidden_layers"] == 2
    assert not any(k.startswith("llama-nano-") for k in ARCHS)


@pytest.mark.parametrize("cards", ["as published", "weights only"])
def test_recovery_finds_every_depth_changing_edge_and_nothing_else(zoo, cards: str):
    """Pruned, passthrough and up-scaled models get their true parents with the right relation,
    from the weights alone too; the independent 4-layer root stays unlinked."""
    import dataclasses

    from lineage_index import api
    from lineage_index.evaluation import score
    from lineage_index.indexer.pipeline import asserted_edges, recover, sketch_all

    out, _ = zoo
    truth = _truth(out)
    src = api.make_source(directory=out)
    records, report = sketch_all(src.iter_records(), src.open_reader, None)
    if cards == "weights only":
        records = {m: dataclasses.replace(r, created_at=None, base_models=(), base_model_relation=None)
                   for m, r in records.items()}
    edges = asserted_edges(recover(records, report.sketches).edges)
    assert {(e.child, e.parent, e.relation) for e in edges} == {
        (e["child"], e["parent"], e["relation"]) for e in truth["edges"]}
    assert score(edges, truth).f1 == 1.0


def test_a_pruned_model_healed_unevenly_is_still_a_prune_of_its_source(zoo, tmp_path):
    """Only the healed model is published, and healing moved some layers more than others
    (here 0.2% to 3% relative change per layer): its layers are all changed, none copied, so
    it is one derivation of the source, a prune."""
    import shutil

    from safetensors.torch import save_file

    from lineage_index import api
    from lineage_index.indexer.pipeline import asserted_edges, recover, sketch_all

    out, _ = zoo
    truth = _truth(out)
    pruned = next(e["child"] for e in truth["edges"] if e["relation"] == "prune")
    source = next(e["parent"] for e in truth["edges"] if e["relation"] == "prune")
    zoo2 = tmp_path / "zoo"
    for m in truth["models"]:
        if m != pruned and pruned not in truth["models"][m]["parents"]:
            shutil.copytree(out / m, zoo2 / m)
    healed = "someone/pruned-and-healed"
    shutil.copytree(out / pruned, zoo2 / healed)
    state = _state(out, pruned)
    gen = torch.Generator().manual_seed(0)
    for k, v in state.items():
        if k.startswith("model.layers."):
            scale = (0.002, 0.01, 0.03, 0.005)[int(k.split(".")[2])]
            noise = torch.randn(v.shape, generator=gen) * v.float().std()
            state[k] = (v.float() + scale * noise).to(v.dtype)
    save_file(state, str(zoo2 / healed / "model.safetensors"), metadata={"format": "pt"})
    src = api.make_source(directory=zoo2)
    records, report = sketch_all(src.iter_records(), src.open_reader, None)
    got = {(e.child, e.parent, e.relation) for e in asserted_edges(recover(records, report.sketches).edges)}
    assert (healed, source, "prune") in got
    assert not any(c == healed and p != source for c, p, _ in got)
