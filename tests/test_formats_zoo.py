"""The formats zoo (issue 22): GGUF and pickle uploads attributed to their exact parent with the
right relation and direction, in the same ingest as their safetensors relatives."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("gguf")

from lineage_index.zoo.formats import HOSTILE_MARKER, derive_formats  # noqa: E402


@pytest.fixture(scope="module")
def formats_zoo(tiny_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("formats") / "zoo"
    shutil.copytree(tiny_zoo, out)
    derive_formats(out)
    return out


def test_formats_are_placed_exactly_and_the_hostile_pickle_never_runs(formats_zoo: Path, tmp_path: Path) -> None:
    edges_out = tmp_path / "edges.json"
    r = subprocess.run([sys.executable, "-m", "lineage_index.cli.app", "ingest", "--dir", str(formats_zoo),
                        "--store", str(tmp_path / "s"), "--no-graph", "--edges-out", str(edges_out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    truth = json.loads((formats_zoo / "truth.json").read_text())
    new = {m: t for m, t in truth["models"].items() if "format" in t}
    want = {(m, p, t["relation"]) for m, t in new.items() for p in t["parents"]}
    got = {(e["child"], e["parent"], e["relation"]) for e in json.loads(edges_out.read_text())
           if e["child"] in new and e["source"] != "declared"}
    pairs = {(c, p) for c, p, _ in got}
    tp = len({(c, p) for c, p, _ in want} & pairs)
    precision, recall = tp / max(1, len(pairs)), tp / max(1, len(want))
    f1 = 2 * precision * recall / max(1e-9, precision + recall)
    assert f1 >= 0.97, ("missing", sorted(want - got), "extra", sorted(got - want))
    assert {(c, p) for c, p, _ in want} <= pairs  # every direction right (no reversed pair)
    assert want <= got  # and every relation
    independent = {m for m, t in new.items() if t.get("independent")}
    crossing = [e for e in got if (e[0] in independent) != (e[1] in independent)]
    assert independent and not crossing  # the independent model is tied to no zoo model by its weights
    wrong = [m for m, t in new.items() if t.get("declared_kind") == "wrong"]
    verdicts = {(e["child"], e["parent"]): e.get("verdict") for e in json.loads(edges_out.read_text())}
    assert wrong and all(verdicts.get((m, new[m]["declared_base_model"])) == "contradicted" for m in wrong)
    # packed quantised safetensors (issue 23): every scheme present, each upload the exact parent's
    # `quantized` child (a fine-tune's uploads under the fine-tune), the independent one under its own
    packed = {m: t for m, t in new.items() if t["format"].startswith(("fp8", "ct-", "mlx", "bnb", "gptq", "awq"))}
    assert {t["format"] for t in packed.values()} >= {"gptq-4-act", "gptq-3", "awq-4", "bnb-nf4-dq", "mlx-3", "mlx-6"}
    assert {(m, t["parents"][0], "quantized") for m, t in packed.items()} <= got
    assert {(c, p) for c, p, _ in got if c in packed} == {(m, t["parents"][0]) for m, t in packed.items()}
    assert any(new[m]["parents"][0] in truth["models"] and truth["models"][new[m]["parents"][0]].get("parents")
               for m in packed)  # a quantised fine-tune among them
    assert "hostile_pickle" in r.stdout and "evil-org/free-weights" in r.stdout
    assert not (formats_zoo / HOSTILE_MARKER).exists()


def test_formats_read_through_the_hub_client_give_the_same_edges(formats_zoo: Path, tmp_path: Path) -> None:
    """GGUF, pickle and packed repos through the real huggingface_hub client and a Hub that sends
    weight files to a CDN (file sizes unknown from the listing): the same lineage as from disk."""
    from hubserver import LocalHub

    from lineage_index import api
    from lineage_index.indexer.sketch.store import SketchStore

    local = api.ingest(api.make_source(directory=formats_zoo), store=SketchStore(tmp_path / "dir"))
    with LocalHub(formats_zoo, page_size=200) as hub:
        hub.cdn = True
        remote = api.ingest(api.make_source(everything=True, endpoint=hub.url), store=SketchStore(tmp_path / "hub"))
    key = sorted((e.child, e.parent, e.relation, e.source) for e in local.edges)
    assert key == sorted((e.child, e.parent, e.relation, e.source) for e in remote.edges)
    assert {f.model_id for f in remote.failures} == {f.model_id for f in local.failures} == {"evil-org/free-weights"}
    assert not (formats_zoo / HOSTILE_MARKER).exists()


def test_check_on_a_quantised_upload_names_its_parent_and_the_scheme(formats_zoo: Path, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "lineage_index.cli.app"]
    store = str(tmp_path / "s")
    r = subprocess.run([*cli, "ingest", "--dir", str(formats_zoo), "--store", store, "--no-graph"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    truth = json.loads((formats_zoo / "truth.json").read_text())["models"]
    for model, scheme in (("neuralmagic-zoo/Llama-3.1-Nano-fp8-block", "fp8-e4m3"),
                          ("redhat-zoo/Llama-3.1-Nano-ct-int4", "compressed-tensors-int4"),
                          ("gguf-hub/Llama-3.1-Nano-GGUF", "gguf-Q8_0"),
                          ("mlx-community-zoo/Llama-3.1-Nano-mlx-3", "mlx-3bit"),
                          ("unsloth-zoo/Llama-3.1-Nano-fr-bnb-nf4-dq", "bnb-nf4-dq"),
                          ("TheBloke-zoo/Llama-3.1-Nano-fr-gptq-4-act", "gptq-int4"),
                          ("TheBloke-zoo/Llama-3.1-Nano-awq-4", "awq-int4")):
        r = subprocess.run([*cli, "check", str(formats_zoo / model), "--store", store], capture_output=True,
                           text=True, timeout=300)
        first = r.stdout.splitlines()[0]
        assert "quantised copy" in first and scheme in first and truth[model]["parents"][0] in first, first
