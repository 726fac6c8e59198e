"""Lineage across a change of depth, on models derived from the really trained tiny zoo the way
mergekit's passthrough and depth up-scaling make them (layers copied, renumbered)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from lineage_index import api
from lineage_index.indexer.pipeline import asserted_edges, recover, sketch_all
from lineage_index.indexer.recover.crossdepth import block_signature

ROOT = "meta-llama/Llama-3.1-Nano"
FT = "Intel/Llama-3.1-Nano-fr"
OTHER = "openlm-research/open_llama_nano"  # an independent root of the same architecture


def _state(zoo: Path, model: str) -> dict:
    out = {}
    for f in sorted((zoo / model).glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            out.update({k: fh.get_tensor(k) for k in fh.keys()})
    return out


def _stack(zoo: Path, name: str, layers: list[tuple[str, int]], body: str, created: str) -> None:
    """A model whose layer k is layer ``layers[k][1]`` of model ``layers[k][0]`` (embeddings, final
    norm and head from ``body``): a passthrough merge, or an up-scaling when one model repeats."""
    states = {m: _state(zoo, m) for m in {m for m, _ in layers} | {body}}
    out = {k: v for k, v in states[body].items() if not k.startswith("model.layers.")}
    for new, (m, old) in enumerate(layers):
        for k, v in states[m].items():
            if re.match(rf"model\.layers\.{old}\.", k):
                out[k.replace(f"model.layers.{old}.", f"model.layers.{new}.", 1)] = v.clone()
    repo = zoo / name
    repo.mkdir(parents=True)
    save_file(out, str(repo / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((zoo / body / "config.json").read_text())
    config["num_hidden_layers"] = len(layers)
    (repo / "config.json").write_text(json.dumps(config))
    (repo / "README.md").write_text(f"---\nlicense: apache-2.0\ncreated_at: '{created}'\n---\n# {name}\n")


@pytest.fixture(scope="module")
def depth_zoo(tiny_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    zoo = tmp_path_factory.mktemp("depth") / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    _stack(zoo, "franken/fr-passthrough", [(FT, 0), (FT, 1), (ROOT, 1)], FT, "2025-01-02T00:00:00Z")
    _stack(zoo, "upscale/open-llama-up", [(OTHER, 0), (OTHER, 1), (OTHER, 0), (OTHER, 1)], OTHER, "2025-01-03T00:00:00Z")
    return zoo


@pytest.fixture(scope="module")
def depth_recovery(depth_zoo: Path):
    src = api.make_source(directory=depth_zoo)
    records, report = sketch_all(src.iter_records(), src.open_reader, None)
    return records, report, recover(records, report.sketches)


def test_every_layer_is_printed_at_the_same_rows(depth_recovery) -> None:
    _, report, _ = depth_recovery
    franken, root = report.sketches["franken/fr-passthrough"], report.sketches[ROOT]
    assert sorted(franken.layer_prints) == [0, 1, 2] and sorted(root.layer_prints) == [0, 1]
    # layer 2 of the passthrough is the root's layer 1, copied: same rows, same values
    assert np.array_equal(franken.layer_prints[2], root.layer_prints[1])
    assert franken.family != root.family
    assert block_signature(franken.family_desc) == block_signature(root.family_desc)


def test_passthrough_merge_and_depth_upscaling_are_found_with_their_sources(depth_recovery) -> None:
    records, report, rec = depth_recovery
    edges = {(e.child, e.parent): e for e in asserted_edges(rec.edges)}
    into = {p: e.relation for (c, p), e in edges.items() if c == "franken/fr-passthrough"}
    assert into == {FT: "merge", ROOT: "merge"}  # the original, not its bit-identical re-upload
    up = {p: e.relation for (c, p), e in edges.items() if c == "upscale/open-llama-up"}
    assert up == {OTHER: "merge"}
    assert "layers 0,1,0,1" in edges[("upscale/open-llama-up", OTHER)].evidence
    # the sources keep their own lineage: no cross-depth parent for them
    assert not any(c in (ROOT, OTHER) for c, _ in edges)
    assert "franken/fr-passthrough" not in rec.roots and "upscale/open-llama-up" not in rec.roots


def test_no_cross_depth_lineage_between_independent_models(depth_zoo: Path, tmp_path: Path) -> None:
    """The up-scaled model alone next to an independent root's tree: unrelated, whatever the depth."""
    zoo = tmp_path / "zoo"
    for m in (ROOT, FT, "upscale/open-llama-up"):
        shutil.copytree(depth_zoo / m, zoo / m)
    src = api.make_source(directory=zoo)
    records, report = sketch_all(src.iter_records(), src.open_reader, None)
    rec = recover(records, report.sketches)
    assert {(e.child, e.parent) for e in asserted_edges(rec.edges)} == {(FT, ROOT)}


def test_a_passthrough_ingested_in_a_later_run_finds_its_sources_in_the_index(depth_zoo: Path, tmp_path: Path) -> None:
    """`ingest --dir A` then `ingest --dir B` into one store: the second run's passthrough model
    is matched against the indexed models of the same block design at another depth."""
    from lineage_index.indexer.sketch.store import SketchStore

    first, second = tmp_path / "first", tmp_path / "second"
    for m in (ROOT, FT, OTHER):
        shutil.copytree(depth_zoo / m, first / m)
    shutil.copytree(depth_zoo / "franken/fr-passthrough", second / "franken/fr-passthrough")
    store = SketchStore(tmp_path / "store")
    api.ingest(api.make_source(directory=first), store=store)
    later = api.ingest(api.make_source(directory=second), store=store)
    assert later.sketched == 1  # only the new model is read
    got = {(e.child, e.parent, e.relation) for e in asserted_edges(later.edges)}
    assert got == {("franken/fr-passthrough", FT, "merge"), ("franken/fr-passthrough", ROOT, "merge")}


def test_check_names_the_sources_of_a_passthrough_model(depth_zoo: Path, tmp_path: Path) -> None:
    """`lineage-index check DIR` on a passthrough model against an index of one depth."""
    from lineage_index.indexer.check.run import check
    from lineage_index.indexer.sketch.store import SketchStore

    indexed = tmp_path / "indexed"
    for m in (ROOT, FT, OTHER):
        shutil.copytree(depth_zoo / m, indexed / m)
    store = SketchStore(tmp_path / "store")
    api.ingest(api.make_source(directory=indexed), store=store)
    r = check(str(depth_zoo / "franken/fr-passthrough"), store, save=False)
    assert r.verdict == "merge" and sorted(r.parents) == sorted([FT, ROOT])
    assert any("cross-depth merge" in e for e in r.evidence)
    # the source itself, checked against an index holding the passthrough: no parent at another depth
    check(str(depth_zoo / "franken/fr-passthrough"), store, save=False, add=True)
    assert store.latest("franken/fr-passthrough") is not None
    root = check(str(depth_zoo / ROOT), store, save=False)
    assert root.verdict not in ("merge", "prune") and "franken/fr-passthrough" not in root.parents


def test_constant_layer_prints_claim_nothing() -> None:
    """A matrix that is the same constant in every model of a design (zero-initialised, frozen)
    prints identically everywhere: no lineage from it, while real copied layers still count."""
    from lineage_index.indexer.recover.crossdepth import cross_depth_claims
    from lineage_index.records import Sketch

    rng = np.random.default_rng(0)

    def sk(name: str, prints: list[np.ndarray]) -> Sketch:
        return Sketch(name, None, 2, f"fam{len(prints)}", f"L{len(prints)};mlp:64x64", "full", {},
                      np.zeros(4, np.float32), layer_prints={i: p.astype(np.float32) for i, p in enumerate(prints)})

    zero = np.full(512, 0.02)  # e.g. a frozen constant matrix
    a = sk("a/six", [zero] * 6)
    b = sk("b/four", [zero] * 4)
    assert cross_depth_claims([a, b], ["a/six", "b/four"], {}) == []
    layers = [rng.normal(size=512) for _ in range(6)]
    src = sk("c/six", layers)
    pruned = sk("d/four", [layers[i] for i in (0, 1, 3, 5)])
    (claim,) = cross_depth_claims([src, pruned], ["c/six", "d/four"], {})
    assert (claim.child, claim.parents, claim.relation) == ("d/four", ("c/six",), "prune")


def test_layers_of_varying_width_do_not_break_matching() -> None:
    """A design whose blocks vary in size (per-layer FFN widths) prints at several lengths."""
    from lineage_index.indexer.recover.crossdepth import cross_depth_claims
    from lineage_index.records import Sketch

    rng = np.random.default_rng(1)
    layers = [rng.normal(size=512 if i % 3 else 768) for i in range(6)]

    def sk(name: str, prints: list[np.ndarray]) -> Sketch:
        return Sketch(name, None, 2, f"fam{len(prints)}", f"L{len(prints)};mlp:var", "full", {},
                      np.zeros(4, np.float32), layer_prints={i: p.astype(np.float32) for i, p in enumerate(prints)})

    src, pruned = sk("c/six", layers), sk("d/five", [layers[i] for i in (0, 1, 2, 4, 5)])
    (claim,) = cross_depth_claims([src, pruned], ["c/six", "d/five"], {})
    assert (claim.child, claim.parents, claim.relation) == ("d/five", ("c/six",), "prune")
