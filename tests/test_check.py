"""``lineage-index check`` and ``explain`` on a really trained tiny zoo: each model is checked
against an index (a sketch store) of the others; every verdict class, parents and merge
coefficients, the card's claim against the weights, exit codes 0/2/3/4 and the --fail-on
policies, the fitted calibration, the HTML evidence page, explain, the mergekit config, and
--add writing the store and a real Neo4j."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from lineage_index import api
from lineage_index.cli.check_cmd import register
from lineage_index.errors import UsageError
from lineage_index.indexer.check.calibration import (
    PARENT_FEATURES,
    RELATED_FEATURES,
    Logistic,
    ZooTruth,
    fit_logistic,
    load_calibration,
)
from lineage_index.indexer.check.features import parent_vector
from lineage_index.indexer.check.mergekit import mergekit_config, mergekit_yaml, sparse_method
from lineage_index.indexer.check.run import check, last_result
from lineage_index.indexer.pipeline import sketch_all
from lineage_index.indexer.recover.verify import compare, find_merge
from lineage_index.indexer.sketch.store import SketchStore, load_meta_id
from lineage_index.records import ModelRecord, Sketch, TensorSample

LLAMA_TREE = ("meta-llama/Llama-3.1-Nano", "Intel/Llama-3.1-Nano-fr", "berkeley-nest/Llama-3.1-Nano-fr-ft-top",
              "unsloth/Llama-3.1-Nano-int8", "free-llm-hub/Llama-3.1-Nano")
MERGE = "mlabonne/open_llama_nano-math-merged-linear-merge"


@pytest.fixture(scope="module")
def zoo(tiny_zoo: Path) -> Path:
    return tiny_zoo


@pytest.fixture(scope="module")
def truth(zoo: Path) -> dict:
    return json.loads((zoo / "truth.json").read_text())


@pytest.fixture(scope="module")
def full_store(zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, ModelRecord]]:
    root = tmp_path_factory.mktemp("store-all")
    src = api.make_source(directory=zoo)
    records, report = sketch_all(src.iter_records(), src.open_reader, SketchStore(root))
    assert not report.failures
    return root, records


def _store(full: Path, dest: Path, keep) -> SketchStore:
    """A copy of the full store's sketches holding only the models ``keep(model_id)`` accepts."""
    for p in SketchStore(full):
        if keep(load_meta_id(p)):
            (dest / p.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dest / p.parent.name / p.name)
    return SketchStore(dest)


def _run(args: list[str], command: str = "check"):
    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, [command, *args])


# --- every verdict class and exit code, one model against all the others -----------------------

CASES = [  # target, verdict, acceptable parents, claim status, exit code
    ("Intel/Llama-3.1-Nano-fr", "finetune", {"meta-llama/Llama-3.1-Nano"}, "unverified", 0),
    ("yuki-h/open_llama_nano-lora-merged", "finetune", {"openlm-research/open_llama_nano"}, "supported", 0),
    ("openlm-research/open_llama_nano-math", "finetune", {"openlm-research/open_llama_nano"}, "none", 0),
    ("berkeley-nest/Llama-3.1-Nano-fr-ft-top", "finetune", {"Intel/Llama-3.1-Nano-fr"}, "contradicted", 3),
    ("unsloth/Llama-3.1-Nano-int8", "quantized", {"meta-llama/Llama-3.1-Nano"}, "supported", 0),
    ("unsloth/Llama-3.1-Nano-fr-distilled-fp16", "quantized", {"distil-labs/Llama-3.1-Nano-fr-distilled"},
     "supported", 0),
    ("ai-reupload/Lumen-Instruct-Nano", "copy", {"distil-labs/Llama-3.1-Nano-fr-distilled"}, "none", 0),
    ("free-llm-hub/Llama-3.1-Nano", "copy", {"meta-llama/Llama-3.1-Nano"}, "none", 0),
    ("garage-bAInd/open_llama_nano-lora-merged-pruned-40", "prune", {"yuki-h/open_llama_nano-lora-merged"},
     "supported", 0),
    ("nadia-r/Llama-3.1-Nano-fr-LoRA", "adapter", {"distil-labs/Llama-3.1-Nano-fr-distilled"}, "supported", 0),
    ("openlm-research/open_llama_nano", "family_unresolved", set(), "none", 0),
    # it declares its inputs' base, an ancestor: imprecise, as ingest judges it (issue 20)
    (MERGE, "merge", {"openlm-research/open_llama_nano-math", "yuki-h/open_llama_nano-lora-merged"}, "imprecise", 0),
]


@pytest.mark.slow
@pytest.mark.parametrize(("target", "verdict", "parents", "claim", "code"), CASES, ids=[c[0] for c in CASES])
def test_each_model_against_all_others_gets_its_verdict(zoo, full_store, tmp_path, target, verdict, parents,
                                                        claim, code) -> None:
    full, records = full_store
    store = _store(full, tmp_path, lambda m: m != target)
    others = {m: r for m, r in records.items() if m != target}
    r = check(str(zoo / target), store, records=others, save=False)
    assert (r.verdict, set(r.parents), r.claim.status, r.exit_code) == (verdict, parents, claim, code), r.evidence
    if parents:  # a lineage verdict: calibrated, and its parents stand above the other candidates
        assert r.probability > 0.5
        if r.candidates:  # an adapter has none: it is judged by the LoRA shapes
            top = sorted(r.candidates, key=lambda c: -c.probability)[:len(r.parents)]
            assert {c.model_id for c in top} == set(r.parents)
    assert r.background.source == "store" or verdict == "adapter"


@pytest.mark.slow
def test_merge_names_its_parents_coefficients_and_a_mergekit_config(zoo, full_store, truth, tmp_path) -> None:
    info = truth["models"][MERGE]
    alpha = {info["parents"][0]: info["params"]["alpha"], info["parents"][1]: 1 - info["params"]["alpha"]}
    store = _store(full_store[0], tmp_path, lambda m: m != MERGE)
    result = _run([str(zoo / MERGE), "--store", str(store.root), "--mergekit"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("# mergekit config")
    cfg = yaml.safe_load(result.stdout)
    assert cfg["merge_method"] == "linear" and "base_model" not in cfg
    weights = {m["model"]: m["parameters"]["weight"] for m in cfg["models"]}
    assert set(weights) == set(alpha)
    for parent, w in alpha.items():
        assert weights[parent] == pytest.approx(w, abs=0.05)
    assert "merge" in result.stderr  # the summary goes to stderr, the YAML alone to stdout
    not_merge = _run([str(zoo / "unsloth/Llama-3.1-Nano-int8"), "--store", str(store.root), "--mergekit"])
    assert not_merge.stdout == "" and "not a merge" in not_merge.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("target", "other_root"), [
    ("openlm-research/open_llama_nano", "distil-labs/Llama-3.1-Nano-fr-distilled"),
    ("distil-labs/Llama-3.1-Nano-fr-distilled", "openlm-research/open_llama_nano"),
    ("yuki-h/open_llama_nano-lora-merged", "distil-labs/Llama-3.1-Nano-fr-distilled"),
])
def test_independently_trained_models_of_the_same_architecture_get_no_lineage(zoo, full_store, tmp_path,
                                                                              target, other_root) -> None:
    # the index: one weight tree plus another independent root (so the background has unrelated pairs)
    store = _store(full_store[0], tmp_path, lambda m: m in LLAMA_TREE or m == other_root)
    result = _run([str(zoo / target), "--store", str(store.root), "--json"])
    out = json.loads(result.stdout)
    assert result.exit_code == 4, result.stdout
    assert out["verdict"] == "no_relative" and out["parents"] == []
    assert all(c["relation"] == "unrelated" and c["probability"] == 0.0 and not c["passes_gate"]
               for c in out["candidates"])
    assert all(c["p_related"] < 0.05 for c in out["candidates"])
    assert out["background"]["n_pairs"] >= 3 and out["probability"] > 0.5  # sure there is no relative


def test_a_model_whose_architecture_is_absent_from_the_index_has_no_known_relative(zoo, tmp_path) -> None:
    store = SketchStore(tmp_path / "empty")
    r = check(str(zoo / "Intel/Llama-3.1-Nano-fr"), store)
    assert (r.verdict, r.parents, r.exit_code) == ("no_relative", [], 4)
    assert r.candidates == [] and "no stored sketch of this architecture" in r.evidence
    assert r.claim.status == "unverified"  # it declares a base the index does not hold


@pytest.mark.slow
def test_an_adapter_whose_base_is_not_indexed_is_insufficient_evidence(zoo, full_store, tmp_path) -> None:
    target, base = "nadia-r/Llama-3.1-Nano-fr-LoRA", "distil-labs/Llama-3.1-Nano-fr-distilled"
    store = _store(full_store[0], tmp_path, lambda m: m not in (target, base))
    r = check(str(zoo / target), store)
    assert (r.verdict, r.claim.status, r.exit_code) == ("insufficient", "unverified", 4)


@pytest.mark.slow
def test_json_output_carries_verdict_candidates_evidence_and_claim(zoo, full_store, tmp_path) -> None:
    target = "unsloth/Llama-3.1-Nano-int8"
    store = _store(full_store[0], tmp_path, lambda m: m != target)
    result = _run([str(zoo / target / "model.safetensors"), "--store", str(store.root), "--json"])
    assert result.exit_code == 0, result.stdout
    out = json.loads(result.stdout)
    assert out["target"] == target and out["verdict"] == "quantized"
    assert out["parents"][0] in ("meta-llama/Llama-3.1-Nano", "free-llm-hub/Llama-3.1-Nano")
    assert out["claim"]["declared"] == ["meta-llama/Llama-3.1-Nano"] and out["claim"]["status"] == "supported"
    best = out["candidates"][0]
    assert {"model_id", "relation", "probability", "p_related", "cos_median", "z", "evidence", "features"} <= set(best)
    assert set(best["features"]) == set(RELATED_FEATURES) | set(PARENT_FEATURES)
    assert out["evidence"] and out["bytes_read"] > 0


@pytest.mark.slow
def test_sharded_index_target_is_read_like_ingest(zoo, full_store, tmp_path) -> None:
    target = "meta-llama/Llama-3.1-Nano"
    index = next((zoo / target).glob("*.safetensors.index.json"))
    full, records = full_store
    r = check(str(index), _store(full, tmp_path, lambda m: m != target),
              records={m: rec for m, rec in records.items() if m != target}, save=False)
    assert r.target == target and r.verdict == "family_unresolved"  # its copy and children are newer


@pytest.mark.slow
def test_policies_fail_on_licence_and_undeclared_lineage(zoo, full_store, tmp_path) -> None:
    full, _ = full_store
    target = "unsloth/Llama-3.1-Nano-int8"
    store = _store(full, tmp_path, lambda m: m != target)
    ok = _run([str(zoo / target), "--store", str(store.root), "--records", str(zoo)])
    assert ok.exit_code == 0, ok.stdout
    bad = _run([str(zoo / target), "--store", str(store.root), "--records", str(zoo),
                "--fail-on-license", "llama3.1"])
    assert bad.exit_code == 3 and "llama3.1" in bad.stdout
    other = _run([str(zoo / target), "--store", str(store.root), "--records", str(zoo),
                  "--fail-on-license", "cc-by-nc-4.0"])
    assert other.exit_code == 0
    copy = "ai-reupload/Lumen-Instruct-Nano"
    undeclared = _run([str(zoo / copy), "--store", str(store.root), "--fail-on-undeclared", "--json"])
    assert undeclared.exit_code == 3
    assert json.loads(undeclared.stdout)["policy_failures"]
    declared = _run([str(zoo / target), "--store", str(store.root), "--fail-on-undeclared"])
    assert declared.exit_code == 0  # its card declares the parent the weights find


def test_unreadable_targets_exit_2(zoo, tmp_path) -> None:
    src = zoo / "openlm-research/open_llama_nano/model.safetensors"
    cut = tmp_path / "org" / "cut"
    cut.mkdir(parents=True)
    (cut / "model.safetensors").write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    truncated = _run([str(cut / "model.safetensors"), "--store", str(tmp_path / "store")])
    assert truncated.exit_code == 2 and "error" in truncated.stderr
    missing = _run([str(tmp_path / "nope.safetensors"), "--store", str(tmp_path / "store")])
    assert missing.exit_code == 2
    empty_dir = _run([str(tmp_path / "store-less"), "--store", str(tmp_path / "store")])
    assert empty_dir.exit_code == 2


# --- evidence page and explain -------------------------------------------------------------------


@pytest.mark.slow
def test_report_is_a_self_contained_evidence_page(zoo, full_store, truth, tmp_path) -> None:
    target = "berkeley-nest/Llama-3.1-Nano-fr-ft-top"
    parent_licence = truth["models"]["Intel/Llama-3.1-Nano-fr"]["declared_license"]  # what its card says
    store = _store(full_store[0], tmp_path / "s", lambda m: m != target)
    page = tmp_path / "evidence.html"
    result = _run([str(zoo / target), "--store", str(store.root), "--records", str(zoo), "--report", str(page),
                   "--no-graph"])
    assert result.exit_code == 3, result.stdout  # its card's base is contradicted
    text = page.read_text()
    assert "<script" not in text and "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "fine-tune</strong> of Intel/Llama-3.1-Nano-fr" in text
    assert re.search(r"probability 0\.\d\d", text)
    assert text.count("<svg") == 2  # the lineage picture and the per-layer similarity
    tree = text[text.index("Place in the lineage"):text.index("Best candidates")]
    assert f"<title>Intel/Llama-3.1-Nano-fr ({parent_licence})</title>" in tree  # the recovered parent
    assert "<title>meta-llama/Llama-3.1-8B (" in tree  # what the parent's card declares above it
    # the grandparent's int8 differs from the target by a fine-tune, far beyond an int8 rounding
    # error: no quantised child of the target (it has no child in the truth)
    assert "unsloth/Llama-3.1-Nano-int8" not in tree
    assert "✗ declared, contradicted" in tree and "<title>openlm-research/open_llama_nano (" in tree
    assert "Per-layer similarity" in text and "<circle" in text
    chain = text[text.index("Licence chain"):text.index("Evidence</h2>")]
    assert f"Intel/Llama-3.1-Nano-fr</td><td>{parent_licence}" in chain
    assert "contradicted" in text and "bytes in" in text


@pytest.mark.slow
def test_explain_shows_the_raw_numbers_of_the_last_check(zoo, full_store, tmp_path) -> None:
    target = "unsloth/Llama-3.1-Nano-int8"
    store = _store(full_store[0], tmp_path, lambda m: m != target)
    none_yet = _run([str(zoo / target), "--store", str(store.root)], "explain")
    assert none_yet.exit_code == 2 and "no check has been run" in none_yet.stderr
    assert _run([str(zoo / target), "--store", str(store.root)]).exit_code == 0
    shown = _run([str(zoo / target), "--store", str(store.root)], "explain")
    assert shown.exit_code == 0, shown.stdout
    for part in ("background", "P(related)", "P(parent | related)", "z_cos", "structural", "verdict: logit"):
        assert part in shown.stdout
    raw = json.loads(_run([target, "--store", str(store.root), "--json"], "explain").stdout)  # by model id too
    r = raw["result"]
    assert r["verdict"] == "quantized" and raw["target"] == str(zoo / target)
    cal = raw["calibration"]
    best = r["candidates"][0]
    logit = cal["parent"]["intercept"] + sum(raw["terms"][best["model_id"]]["parent"].values())
    assert raw["terms"][best["model_id"]]["parent"]["structural"] == pytest.approx(
        cal["parent"]["coef"][cal["parent"]["features"].index("structural")] * best["features"]["structural"], abs=1e-3)
    assert logit > 0  # the quantised source is the parent
    assert raw["verdict_logit"] == pytest.approx(
        cal["verdict"]["intercept"] + sum(raw["verdict_terms"].values()), abs=1e-3)


# --- the fitted calibration ------------------------------------------------------------------------


def test_shipped_calibration_is_a_fitted_model_with_provenance() -> None:
    cal = load_calibration()
    prov = cal.provenance
    assert prov["n_pairs"] > 500 and len(prov["zoos"]) >= 3
    assert {z["seed"] for z in prov["zoos"]} and "fit_check_calibration.py" in prov["command"]
    assert 0 not in {z["seed"] for z in prov["zoos"]}  # seed 0 is held out for the bench
    rel = dict(zip(cal.related.features, cal.related.coef, strict=True))
    par = dict(zip(cal.parent.features, cal.parent.coef, strict=True))
    assert rel["z_cos"] > 0  # farther above the background: more likely related
    assert par["structural"] > 0 and par["time"] > 0 and par["nearest"] > 0 and par["merge_input"] > 0
    assert par["nearness"] < 0 and par["original"] > 0  # a re-upload (original = -1) is less likely the parent
    # probabilities are spread: an unrelated-looking pair, a far older relative, a nearest structural source
    low = cal.related({"z_cos": 0.5, "z_cos_min": -1.0})
    assert low < 0.05 and cal.related({"z_cos": 4.0, "z_cos_min": 4.0}) > 0.95
    far = cal.parent({"nearness": 2.0, "time": 1.0})
    near = cal.parent({"structural": 1.0, "time": 1.0, "nearest": 1.0})
    assert far < 0.5 < near
    assert cal.parent({"nearest": 1.0, "time": -1.0, "growth": -1.0}) < 0.5  # nearest, but newer and smaller


def test_missing_signals_are_no_evidence() -> None:
    m = Logistic(("a", "b"), 0.3, (2.0, -1.0))
    assert m({"a": 0.0}) == m({}) == pytest.approx(1 / (1 + np.exp(-0.3)))  # absent = 0 = no evidence
    a, b = sk("a", np.ones((4, 8))), sk("b", np.ones((4, 8)) * 2)
    x = parent_vector(compare(a, b), "a", "b", nearest_dist=None, merge=None, child_of_target=False, recs={})
    assert x["time"] == 0.0 and x["nearness"] == 0.0 and x["merge_input"] == 0.0  # no records, no merge


def test_logistic_fit_recovers_known_coefficients() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 2))
    p = 1 / (1 + np.exp(-(0.5 + 2.0 * x[:, 0] - 1.0 * x[:, 1])))
    y = rng.random(4000) < p
    m = fit_logistic(x, y, ("u", "v"), l2=1e-3)
    assert m.intercept == pytest.approx(0.5, abs=0.15)
    assert m.coef[0] == pytest.approx(2.0, abs=0.2) and m.coef[1] == pytest.approx(-1.0, abs=0.15)


def test_zoo_truth_labels_pairs_and_verdicts(truth) -> None:
    t = ZooTruth.from_json(truth)
    assert t.pair_label("Intel/Llama-3.1-Nano-fr", "meta-llama/Llama-3.1-Nano") == "parent"
    assert t.pair_label("Intel/Llama-3.1-Nano-fr", "unsloth/Llama-3.1-Nano-int8") == "related"
    assert t.pair_label("Intel/Llama-3.1-Nano-fr", "openlm-research/open_llama_nano") == "unrelated"
    # a distilled student shares no weights with its teacher
    assert t.pair_label("distil-labs/Llama-3.1-Nano-fr-distilled", "Intel/Llama-3.1-Nano-fr") == "unrelated"
    everything = set(truth["models"])
    assert t.verdict_right("meta-llama/Llama-3.1-Nano", "family_unresolved", [], everything)
    assert not t.verdict_right("meta-llama/Llama-3.1-Nano", "finetune", ["Intel/Llama-3.1-Nano-fr"], everything)
    assert t.verdict_right("openlm-research/open_llama_nano", "no_relative", [], set(LLAMA_TREE))


# --- mergekit for every merge kind ----------------------------------------------------------------


def sk(name: str, w: np.ndarray) -> Sketch:
    """A one-matrix sketch."""
    s = TensorSample("layers.0.q.weight", "q.weight", 0, (w.shape[1], w.shape[1]), "F32", 0, 0, w.astype(np.float32))
    return Sketch(name, None, 1, "f", "f", "full", {s.key: s}, np.zeros(4, np.float32), dtypes=("BF16",))


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare_ties"])
def test_mergekit_config_names_method_base_and_weights(method: str) -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=(32, 256))
    a, b, c = (base + 0.05 * rng.normal(size=base.shape) for _ in range(3))
    da, db = a - base, b - base
    if method == "task_arithmetic":
        m = base + 0.8 * da + 0.6 * db
    elif method == "ties":  # keep the top 30% of each delta by magnitude
        m = base + sum(np.where(np.abs(d) >= np.quantile(np.abs(d), 0.7), d, 0) for d in (da, db))
    else:  # DARE: drop 60% of each delta at random, rescale the rest
        m = base + sum(d * (rng.random(base.shape) > 0.6) / 0.4 * 0.5 for d in (da, db))
    child = sk("m", m)
    fit = find_merge(child, [sk("a", a), sk("b", b), sk("base", base), sk("c", c)])
    assert fit is not None and sorted(fit.parents) == ["a", "b"] and fit.base == "base"
    merge = {"method": fit.method, "base": fit.base, "parents": fit.parents, "weights": fit.weights,
             "residual_ratio": fit.ratio}
    if fit.method == "sparse":
        merge["mergekit_method"], merge["density"], _, merge["kept_share"] = sparse_method(
            child, sk("base", base), [sk("a", a), sk("b", b)])
    cfg = yaml.safe_load(mergekit_yaml("x/m", merge, "bfloat16"))
    assert cfg == mergekit_config("x/m", merge, "bfloat16")
    assert cfg["merge_method"] == method and cfg["base_model"] == "base" and cfg["dtype"] == "bfloat16"
    weights = {e["model"]: e["parameters"]["weight"] for e in cfg["models"]}
    assert set(weights) == {"a", "b"}
    if method == "task_arithmetic":
        assert weights == pytest.approx({"a": 0.8, "b": 0.6}, abs=0.05)
    else:
        density = cfg["models"][0]["parameters"]["density"]
        assert density == pytest.approx(0.3 if method == "ties" else 0.4, abs=0.08)
        if method == "dare_ties":  # mergekit rescales by 1/density itself: the weights are the 0.5 given
            assert weights == pytest.approx({"a": 0.5, "b": 0.5}, abs=0.08)
    with pytest.raises(UsageError):
        mergekit_config("x/m", None)


# --- --add: the store and the graph ----------------------------------------------------------------


@pytest.mark.slow
def test_add_writes_the_checked_model_into_the_store(zoo, full_store, tmp_path) -> None:
    target = "openlm-research/open_llama_nano-math"
    store = _store(full_store[0], tmp_path, lambda m: m != target)
    assert store.latest(target) is None
    result = _run([str(zoo / target), "--store", str(store.root), "--add", "--no-graph"])
    assert result.exit_code == 0, result.stdout
    assert store.latest(target) is not None and target in store.records()
    assert "graph not written" in result.stdout


@pytest.mark.slow
@pytest.mark.neo4j
def test_add_writes_the_model_and_its_recovered_edge_to_neo4j(zoo, full_store, tmp_path, neo4j_server,
                                                               clean_graph) -> None:
    from lineage_index.schema.connection import Connection
    from lineage_index.schema.writer import GraphWriter

    conn = Connection(uri=neo4j_server.uri, user=neo4j_server.user, database=neo4j_server.database,
                      managed=False, password=neo4j_server.password)
    writer = GraphWriter(clean_graph, conn.database)
    target = "berkeley-nest/Llama-3.1-Nano-fr-ft-top"  # declares an unrelated base
    store = _store(full_store[0], tmp_path, lambda m: m != target)
    r = check(str(zoo / target), store, add=True, conn=conn, save=False)
    assert r.verdict == "finetune" and r.parents == ["Intel/Llama-3.1-Nano-fr"] and "wrote" in r.graph
    props = writer.model_properties(target)
    assert props is not None and props["check_verdict"] == "finetune" and props["status"] == "indexed"
    edges = {e.parent: e for e in writer.read_edges([target])}
    assert set(edges) == {"Intel/Llama-3.1-Nano-fr", "openlm-research/open_llama_nano"}
    rec = edges["Intel/Llama-3.1-Nano-fr"]
    assert (rec.relation, rec.source, rec.contradicted) == ("finetune", "recovered", False)
    assert rec.confidence == pytest.approx(r.probability)
    declared = edges["openlm-research/open_llama_nano"]
    assert declared.source == "declared" and declared.contradicted
    assert declared.recovered_parent == "Intel/Llama-3.1-Nano-fr"
    # checking and adding again replaces, never duplicates
    check(str(zoo / target), store, add=True, conn=conn, save=False)
    assert len(writer.read_edges([target])) == 2


@pytest.mark.slow
@pytest.mark.neo4j
def test_an_upload_checked_against_an_ingested_index_joins_the_graph(zoo, tmp_path, neo4j_server, clean_graph) -> None:
    from lineage_index.schema.connection import Connection
    from lineage_index.schema.writer import GraphWriter

    if neo4j_server.user is not None:
        pytest.skip("the CLI reaches an auth-less server by --neo4j-uri only")
    target = "Intel/Llama-3.1-Nano-fr"
    hub = tmp_path / "hub"  # the registry so far: every model but the upload
    for model in (p.relative_to(zoo) for p in zoo.glob("*/*") if p.is_dir()):
        if str(model) != target:
            (hub / model.parent).mkdir(parents=True, exist_ok=True)
            # hard-linked copies: a symlink out of the source root is not followed (issue 19)
            shutil.copytree(zoo / model, hub / model, copy_function=os.link)
    conn = Connection(uri=neo4j_server.uri, user=None, database=neo4j_server.database, managed=False)
    store = SketchStore(tmp_path / "store")
    api.ingest(api.make_source(directory=hub), store=store, conn=conn)
    page = tmp_path / "page.html"
    out = _run([str(zoo / target), "--store", str(store.root), "--add", "--neo4j-uri", neo4j_server.uri,
                "--report", str(page)])
    assert out.exit_code == 0, out.stdout
    assert "wrote Intel/Llama-3.1-Nano-fr and" in out.stdout
    writer = GraphWriter(clean_graph, conn.database)
    edges = {e.parent: e for e in writer.read_edges([target])}
    assert edges["meta-llama/Llama-3.1-Nano"].relation == "finetune"
    assert edges["meta-llama/Llama-3.1-Nano"].source == "recovered"  # its card declares another base
    assert store.latest(target) is not None and target in store.records()
    tree = page.read_text().split("Place in the lineage")[1].split("Best candidates")[0]
    # the parent's other children, as the graph knows them, are drawn as siblings
    assert "<title>unsloth/Llama-3.1-Nano-int8 (" in tree and "<title>free-llm-hub/Llama-3.1-Nano (" in tree
    assert "From the graph" in tree


def test_last_result_needs_a_check_first(tmp_path) -> None:
    with pytest.raises(UsageError, match="no check has been run"):
        last_result(SketchStore(tmp_path), "acme/never-checked")


@pytest.mark.slow
def test_check_and_ingest_judge_a_declaration_alike(zoo, full_store, tmp_path) -> None:
    """One judgement of a card's base_model on both paths (issue 20): for every model whose card
    names an indexed model, check's claim equals the verdict ingest gives the declared edge."""
    from lineage_index.indexer.pipeline import recover

    full, records = full_store
    sketches = {load_meta_id(p): p for p in SketchStore(full)}
    from lineage_index.indexer.sketch.store import load_sketch

    edges = recover(records, {m: load_sketch(p) for m, p in sketches.items()}).edges
    ingest_verdict = {(e.child, e.parent): ("supported" if e.source == "both" else e.verdict)
                      for e in edges if e.source in ("declared", "both")}
    judged = 0
    for (child, parent), verdict in sorted(ingest_verdict.items()):
        if parent not in records or records[child].adapter_config is not None:
            continue
        store = _store(full, tmp_path / child.replace("/", "--"), lambda m, c=child: m != c)
        r = check(str(zoo / child), store, records={m: x for m, x in records.items() if m != child}, save=False)
        assert r.claim.status == verdict, (child, parent, r.claim, verdict)
        judged += 1
    assert judged >= 4


@pytest.mark.slow
def test_fail_on_conflict_gates_what_report_licenses_calls_a_conflict(zoo, full_store, tmp_path) -> None:
    from lineage_index.queries.licenses import catalogue

    full, records = full_store
    cat = catalogue()
    for target, parent, conflict in (("Intel/Llama-3.1-Nano-fr", "meta-llama/Llama-3.1-Nano", True),
                                     ("yuki-h/open_llama_nano-lora-merged", "openlm-research/open_llama_nano", False)):
        codes = cat.code(cat.resolve(records[parent].license, records[parent].license_name),
                         cat.resolve(records[target].license, records[target].license_name))
        assert (codes == "✗") == conflict  # the report's own code for this edge
        store = _store(full, tmp_path / target.replace("/", "--"), lambda m, t=target: m != t)
        others = {m: r for m, r in records.items() if m != target}
        plain = check(str(zoo / target), store, records=others, save=False)
        gated = check(str(zoo / target), store, records=others, save=False, fail_on_conflict=True)
        assert plain.exit_code == 0 and gated.parents == [parent]
        assert gated.exit_code == (3 if conflict else 0)
        assert any("licence conflict" in f for f in gated.policy_failures) == conflict
