"""Behaviour tier (issue 9): closeness and same-basin determination on really trained tiny models.

Classifiers are trained in seconds on synthetic tasks: a 16-D Gaussian-blob task (MLP 16→32→4),
an 8x8 image task (CNN with BatchNorm, a small ViT), a text task (a one-layer BERT encoder with
the MiniLM vocabulary). Causal LMs are tiny Llamas trained on a synthetic token language. Weights
come from safetensors only: local directories, and the local Hub test server (``hubserver``)
through huggingface_hub with the user's consent. Nothing here ever unpickles.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from lineage_index.behaviour import closeness, determine
from lineage_index.behaviour import models as M
from lineage_index.behaviour.archs import TextClassifier, minilm_body, walk_inputs
from lineage_index.behaviour.closeness import (
    FPR,
    N_AUX,
    directions,
    soft_agreement,
    threshold_between,
)
from lineage_index.behaviour.determine import calibrate
from lineage_index.behaviour.probes import (
    ProbeSet,
    TaskSpec,
    load_probes,
    probes_for,
    save_probes,
    synthetic_probes,
    task_data,
    write_image_folder,
    write_text_probes,
)
from lineage_index.errors import (
    ModelReadError,
    RepoNotFoundError,
    UnsupportedFormatError,
    UsageError,
)

torch.set_num_threads(1)
TASK = TaskSpec(kind="blobs", classes=4, seed=3, dim=16, spread=1.0)
IMAGES = TaskSpec(kind="images", classes=4, seed=1, spread=1.0)
TEXT = TaskSpec(kind="text", classes=3, seed=2, length=8)


def cli() -> typer.Typer:
    from lineage_index.cli.behaviour_cmd import register

    app = typer.Typer()
    register(app)
    return app


@pytest.fixture(scope="module")
def zoo() -> dict[str, M.Classifier]:
    root = M.train_fresh("mlp", TASK, seed=0, name="root")
    return {
        "root": root,
        "child": M.finetune(root, task_data(TASK, 2000, seed=77), seed=5, steps=150, name="child"),
        "other": M.train_fresh("mlp", TASK, seed=42, name="other"),
        "student": M.distill(root, task_data(TASK, 4000, seed=78), seed=9, steps=600, name="student"),
    }


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("profiles")


# --- closeness and determine on vectors -----------------------------------------------------


def test_finetuned_child_is_close_and_in_the_same_basin(zoo: dict[str, M.Classifier], cache: Path) -> None:
    r = closeness(zoo["root"], zoo["child"], cache_dir=cache)
    assert 0.0 <= r.score <= 1.0 and r.n_probes > 0
    assert r.verdict == "lineage" and r.score >= r.threshold, r
    d = determine(zoo["root"], zoo["child"])
    assert d.verdict == "same basin", d
    assert len(d.curve.loss) == 11 and d.loss_barrier < d.threshold


def test_independent_model_is_neither_close_nor_in_the_same_basin(zoo: dict[str, M.Classifier], cache: Path) -> None:
    r = closeness(zoo["root"], zoo["other"], cache_dir=cache)
    assert r.verdict == "no lineage" and r.score < r.threshold, r
    assert any("cache" in n for n in r.notes)  # the source profiles were reused
    d = determine(zoo["root"], zoo["other"])
    assert d.verdict == "different basins" and d.ensemble_barrier >= d.loss_barrier > d.threshold


def test_distilled_student_is_close_but_not_in_the_same_basin(zoo: dict[str, M.Classifier], cache: Path) -> None:
    r = closeness(zoo["root"], zoo["student"], cache_dir=cache)
    other = closeness(zoo["root"], zoo["other"], cache_dir=cache)
    assert r.verdict == "lineage" and r.score > other.score, (r, other)
    assert determine(zoo["root"], zoo["student"]).verdict == "different basins"


def test_soft_label_test_finds_the_student_by_what_distillation_copies(zoo: dict[str, M.Classifier], cache: Path) -> None:
    student = closeness(zoo["root"], zoo["student"], cache_dir=cache)
    other = closeness(zoo["root"], zoo["other"], cache_dir=cache)
    assert student.soft_threshold == other.soft_threshold is not None  # one calibration per source
    assert student.soft_agreement >= student.soft_threshold > other.soft_agreement, (student, other)  # type: ignore[operator]
    assert "soft labels" in student.signal and other.signal == ""


def test_soft_agreement_compares_the_classes_the_source_did_not_predict() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 5, generator=g)
    assert soft_agreement(a, a) == pytest.approx(1.0)
    assert soft_agreement(a, 3 * a + 7) == pytest.approx(1.0)  # temperature and offset do not matter
    top = a.argmax(1, keepdim=True)
    winner_only = torch.randn(200, 5, generator=g).scatter(1, top, 10.0)  # agrees on the winner, not the rest
    assert abs(soft_agreement(a, winner_only)) < 0.2
    assert soft_agreement(a[:, :2], a[:, :2]) != soft_agreement(a[:, :2], a[:, :2])  # two classes: NaN, no test


def test_calibration_states_a_threshold_between_the_groups(zoo: dict[str, M.Classifier]) -> None:
    probes = synthetic_probes(TASK, 600)
    thr = calibrate(zoo["root"], probes)
    assert thr.separated and max(thr.lineage_scores) < thr.value < min(thr.independent_scores)
    r = closeness(zoo["root"], zoo["child"], probes, k=60)
    assert r.threshold == r.calibration.value
    n = len(r.calibration.lineage_scores)  # 2 folds x half the auxiliary models of each kind
    assert n == N_AUX and len(r.calibration.independent_scores) == N_AUX
    # two tests (boundary, soft labels), each at half the stated rate: together at most FPR
    assert f"{100 * FPR / 2:g}% false positives" in r.calibration.how
    assert r.soft_calibration is not None and f"{100 * FPR / 2:g}% false positives" in r.soft_calibration.how
    assert len(r.soft_calibration.independent_scores) == N_AUX and r.soft_threshold == r.soft_calibration.value
    assert min(r.calibration.lineage_scores) > r.threshold > max(r.calibration.independent_scores)
    assert any("auxiliary models made by the tool" in n for n in r.notes)
    assert any("cross-fitted folds" in n for n in r.notes)


def test_closeness_threshold_is_the_independent_upper_tail_at_the_stated_rate() -> None:
    ind = [0.2, 0.3, 0.25, 0.35]
    mu, sd = sum(ind) / 4, (sum((v - 0.275) ** 2 for v in ind) / 3) ** 0.5
    a = threshold_between([0.8, 0.9, 0.7, 0.85], ind, spread_floor=0.01, fpr=0.05)
    b = threshold_between([0.5, 0.6, 0.95, 0.99], ind, spread_floor=0.01, fpr=0.05)
    assert a.value == b.value == pytest.approx(mu + 1.6449 * sd, abs=1e-3) and a.separated
    assert threshold_between([0.8, 0.9], ind, spread_floor=0.01, fpr=0.01).value > a.value  # stricter rate
    assert threshold_between([0.8, 0.9], [0.3] * 4, spread_floor=0.05, fpr=0.05).value == pytest.approx(
        0.3 + 1.6449 * 0.05, abs=1e-3)  # no spread measured: the score noise is the floor
    # the lineage side only bounds it: never above the median lineage calibration score
    capped = threshold_between([0.3, 0.35, 0.9, 0.95], [0.1, 0.5, 0.2, 0.6], spread_floor=0.01, fpr=0.05)
    assert capped.value == pytest.approx(0.625) and not capped.separated and "not separable" in capped.how


def test_user_auxiliary_models_are_used_for_calibration(zoo: dict[str, M.Classifier]) -> None:
    d = determine(zoo["root"], zoo["child"], derived_aux=[zoo["child"]], independent_aux=[zoo["other"]])
    assert d.calibration.lineage_scores == (d.loss_barrier,)
    r = closeness(zoo["root"], zoo["child"], k=40, lineage_aux=[zoo["child"]], independent_aux=[zoo["other"]])
    assert r.calibration.lineage_scores == (r.score,) and not any("made by the tool" in n for n in r.notes)
    assert any("one derived and one independent auxiliary model given" in n for n in r.notes)


def test_indirect_mode_reheads_the_source_on_the_suspects_labels(zoo: dict[str, M.Classifier]) -> None:
    data = task_data(TASK, 2000, seed=90)
    two = ProbeSet(data.x, data.y % 2)  # transfer to another label space: 2 classes
    transfer = M.transfer(zoo["root"], two, 2, seed=1, steps=150)
    fresh = M.train(M.build("mlp", seed=2, task=TASK, classes=2), two, steps=300, seed=2)
    r_t = closeness(zoo["root"], transfer, k=60)
    r_f = closeness(zoo["root"], fresh, k=60)
    assert r_t.indirect and r_f.indirect and any("re-headed" in n for n in r_t.notes)
    assert r_t.score > r_f.score
    d = determine(zoo["root"], transfer, n_aux=1)
    assert d.fixed_head and d.verdict == "same basin"


# --- images: CNN (BatchNorm), ViT, image folders ---------------------------------------------


def test_int8_cnn_with_batchnorm_is_dequantised_and_same_basin(tmp_path: Path) -> None:
    root = M.train_fresh("cnn", IMAGES, seed=0, steps=150, name="cnn-root")
    M.save(root, tmp_path / "q", tensors=M.quantise_int8(root))
    q = M.load(tmp_path / "q")
    assert q.meta["quant"] == "int8" and q.has_batchnorm
    probes = synthetic_probes(IMAGES, 400)
    d = determine(root, q, probes, n_aux=1)
    assert d.batchnorm_reestimated and d.verdict == "same basin", d


def test_vit_child_and_independent_vit_from_an_image_folder(tmp_path: Path) -> None:
    root = M.train_fresh("vit", IMAGES, seed=0, steps=200, name="vit-root", dim=16, mlp=32)
    assert isinstance(root.module.head, torch.nn.Linear) and root.arch_kwargs["size"] == 8
    data = task_data(IMAGES, 1000, seed=5)
    assert float((root.module(data.x).argmax(1) == data.y).float().mean()) > 0.7  # really trained
    child = M.finetune(root, data, seed=1, steps=60, name="vit-child")
    other = M.train_fresh("vit", IMAGES, seed=7, steps=200, name="vit-other", dim=16, mlp=32)
    # the probes travel as 8-bit PNGs in class folders; the model declares its pixel scaling
    lo, hi = float(data.x.min()), float(data.x.max())
    norm = (-lo / (hi - lo), 1.0 / (hi - lo))
    root.meta["input_norm"] = norm
    src = M.load(M.save(root, tmp_path / "vit-root"))
    shown = task_data(IMAGES, 160, seed=6)
    probes = probes_for(src, write_image_folder(shown, tmp_path / "imgs", norm, by_label=True))
    assert probes.x.shape == (160, 1, 8, 8) and probes.y is not None
    order = torch.argsort(shown.y, stable=True)  # class folders, then file names
    assert torch.equal(probes.y, shown.y[order])
    assert torch.allclose(probes.x, shown.x[order].clamp(lo, hi), atol=(hi - lo) / 255)
    aux_l = [M.finetune(root, data, seed=s, steps=40) for s in (11, 12)]
    aux_i = [M.train_fresh("vit", IMAGES, seed=s, steps=200, dim=16, mlp=32) for s in (21, 22)]
    r_c = closeness(src, child, probes, k=40, lineage_aux=aux_l, independent_aux=aux_i)
    r_o = closeness(src, other, probes, k=40, lineage_aux=aux_l, independent_aux=aux_i)
    assert r_c.verdict == "lineage" and r_o.verdict == "no lineage", (r_c, r_o)
    d_c = determine(src, child, probes, derived_aux=aux_l, independent_aux=aux_i)
    d_o = determine(src, other, probes, derived_aux=aux_l, independent_aux=aux_i)
    assert d_c.verdict == "same basin" and d_o.verdict == "different basins", (d_c, d_o)


def test_image_folder_is_resized_and_bad_images_are_clear_errors(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (32, 20), (255, 0, 0)).save(tmp_path / "imgs" / "a.jpg")
    Image.new("L", (5, 5), 128).save(tmp_path / "imgs" / "b.png")
    cnn = M.build("cnn", seed=0, task=IMAGES)
    x = probes_for(cnn, tmp_path / "imgs").x
    assert x.shape == (2, 1, 8, 8) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    (tmp_path / "imgs" / "c.png").write_bytes(b"not an image")
    with pytest.raises(UsageError, match="not a readable image"):
        probes_for(cnn, tmp_path / "imgs")
    with pytest.raises(UsageError, match="image folders are probes for image classifiers"):
        probes_for(M.build("mlp", seed=0, task=TASK), tmp_path / "imgs")


# --- text: an encoder with a classification head, walked along token substitutions ------


@pytest.fixture(scope="module")
def text_zoo() -> dict[str, M.Classifier]:
    root = M.train_fresh("text", TEXT, seed=0, steps=20, n=300, layers=1, lr=1e-3, name="text-root")
    data = task_data(TEXT, 600, seed=31)
    return {"root": root,
            "child": M.finetune(root, data, seed=1, steps=8, lr=1e-4, name="text-child"),
            "aux-l": M.finetune(root, data, seed=2, steps=8, lr=1e-4, name="aux-l"),
            "aux-l2": M.finetune(root, data, seed=3, steps=8, lr=1e-4, name="aux-l2"),
            "other": M.train_fresh("text", TEXT, seed=5, steps=20, n=300, layers=1, lr=1e-3, name="text-other"),
            "aux-i": M.train_fresh("text", TEXT, seed=6, steps=20, n=300, layers=1, lr=1e-3, name="aux-i"),
            "aux-i2": M.train_fresh("text", TEXT, seed=7, steps=20, n=300, layers=1, lr=1e-3, name="aux-i2"),
            # a student with fresh word embeddings, trained on the root's logits only
            "student": M.distill(root, task_data(TEXT, 600, seed=32), seed=9, steps=60, lr=1e-3, name="text-student")}


def test_text_classifier_closeness_walks_embeddings_with_a_text_file(text_zoo: dict[str, M.Classifier],
                                                                      tmp_path: Path) -> None:
    root = text_zoo["root"]
    data = task_data(TEXT, 200, seed=9)
    assert float((root.module(data.x).argmax(1) == data.y).float().mean()) > 0.6  # really trained
    z, mask = walk_inputs(root.module, data.x[:4])
    assert z.shape == (4, TEXT.length, 384) and mask is not None and z.is_floating_point()
    src = M.load(M.save(root, tmp_path / "text-root"))
    assert (tmp_path / "text-root" / "tokenizer.json").is_file()
    write_text_probes(task_data(TEXT, 48, seed=10), tmp_path / "probes.txt")
    probes = probes_for(src, tmp_path / "probes.txt")
    assert probes.x.dtype == torch.long and probes.texts is not None and len(probes) == 48
    assert torch.equal(probes.x, task_data(TEXT, 48, seed=10).x)  # the text file tokenises back
    lin, ind = [text_zoo["aux-l"], text_zoo["aux-l2"]], [text_zoo["aux-i"], text_zoo["aux-i2"]]
    r_c = closeness(src, text_zoo["child"], probes, k=24, lineage_aux=lin, independent_aux=ind)
    r_o = closeness(src, text_zoo["other"], probes, k=24, lineage_aux=lin, independent_aux=ind)
    r_s = closeness(src, text_zoo["student"], probes, k=24, lineage_aux=lin, independent_aux=ind)
    assert r_c.verdict == "lineage" and r_o.verdict == "no lineage", (r_c, r_o)
    assert r_s.verdict == "lineage" and r_s.score > r_o.score, (r_s, r_o)  # the token path is shared
    assert r_c.score > r_o.score
    path = directions(src.module, probes.x[:4])  # (position, token) substitutions
    assert path.dtype == torch.long and path.shape[0] == 4 and path.shape[2] == 2
    assert set(path[..., 1][path[..., 0] >= 0].tolist()) <= set(probes.x.flatten().tolist())


def test_text_classifier_determine_and_the_real_minilm_body(text_zoo: dict[str, M.Classifier]) -> None:
    probes = task_data(TEXT, 64, seed=12)
    lin, ind = [text_zoo["aux-l"]], [text_zoo["aux-i"]]
    assert determine(text_zoo["root"], text_zoo["child"], probes, derived_aux=lin, independent_aux=ind
                     ).verdict == "same basin"
    assert determine(text_zoo["root"], text_zoo["other"], probes, derived_aux=lin, independent_aux=ind
                     ).verdict == "different basins"
    full = minilm_body(TextClassifier(classes=3))
    assert sum(p.numel() for p in full.parameters()) > 22_000_000
    with pytest.raises(ValueError, match="full MiniLM"):
        minilm_body(TextClassifier(classes=3, layers=1))


# --- causal LMs --------------------------------------------------------------------------------


LM_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16,
             "intermediate_size": 32, "num_attention_heads": 2, "num_key_value_heads": 2,
             "num_hidden_layers": 1, "vocab_size": 48, "max_position_embeddings": 64,
             "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2}


def _lm_text(n: int, seed: int) -> torch.Tensor:
    """A tiny synthetic language: a sparse first-order Markov chain over 48 tokens."""
    g = torch.Generator().manual_seed(1000)
    nxt = torch.randint(3, 48, (48, 3), generator=g)
    g = torch.Generator().manual_seed(seed)
    seq = torch.ones(n, 1, dtype=torch.long)
    for _ in range(23):
        choice = torch.randint(0, 3, (n,), generator=g)
        seq = torch.cat([seq, nxt[seq[:, -1], choice][:, None]], dim=1)
    return seq


def _save_lm(lm, path: Path, int8: bool = False) -> Path:  # type: ignore[no-untyped-def]
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    state = lm.state()
    if int8:
        for key in [k for k, v in state.items() if k.endswith("proj.weight")]:
            t = state[key]
            scb = t.abs().amax(dim=1).clamp_min(1e-8)
            state[key] = torch.round(t / scb[:, None] * 127).to(torch.int8)
            state[key[: -len(".weight")] + ".SCB"] = scb
    save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(LM_CONFIG))
    return path


@pytest.fixture(scope="module")
def lm_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from lineage_index.behaviour.lm import CausalLM, build_module, train_lm

    out = tmp_path_factory.mktemp("lms")
    data = _lm_text(256, seed=1)

    def fresh(seed: int) -> CausalLM:
        torch.manual_seed(seed)
        return CausalLM(build_module(LM_CONFIG), f"lm{seed}", "llama", dict(LM_CONFIG))

    root = train_lm(fresh(0), data, steps=150, lr=1e-2, seed=0)
    child = train_lm(root.with_state(root.state()), _lm_text(256, seed=2), steps=30, lr=1e-3, seed=1)
    other = train_lm(fresh(7), data, steps=150, lr=1e-2, seed=7)
    return {"root": _save_lm(root, out / "root"), "child": _save_lm(child, out / "child"),
            "child-int8": _save_lm(child, out / "child-int8", int8=True), "other": _save_lm(other, out / "other")}


def test_lm_determine_separates_a_finetune_from_an_independent_lm(lm_dirs: dict[str, Path]) -> None:
    from lineage_index.behaviour.commands import measure_determine

    child = measure_determine(str(lm_dirs["root"]), str(lm_dirs["child"]), n_aux=1)
    other = measure_determine(str(lm_dirs["root"]), str(lm_dirs["other"]), n_aux=1)
    assert child.verdict == "same basin" and other.verdict == "different basins", (child, other)
    assert child.statistic == "ensemble" and other.ensemble_barrier > child.threshold > child.ensemble_barrier
    assert any("sampled from" in n for n in child.notes)


def test_lm_int8_is_dequantised_and_token_id_probe_file_is_read(lm_dirs: dict[str, Path], tmp_path: Path) -> None:
    from lineage_index.behaviour.lm import load_lm

    q = load_lm(lm_dirs["child-int8"])
    assert q.meta["quant"] == "int8"
    probe = tmp_path / "ids.txt"
    probe.write_text("\n".join(" ".join(str(int(t)) for t in row) for row in _lm_text(24, seed=3)) + "\n")
    res = CliRunner().invoke(cli(), ["determine", str(lm_dirs["root"]), str(lm_dirs["child-int8"]),
                                     "--probe", str(probe), "--n-aux", "1", "--json", "--no-cache"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["verdict"] == "same basin" and out["n_probes"] == 24
    assert any("int8 weights de-quantised" in n for n in out["notes"])
    (tmp_path / "words.txt").write_text("not token ids\n")
    res = CliRunner().invoke(cli(), ["determine", str(lm_dirs["root"]), str(lm_dirs["child"]),
                                     "--probe", str(tmp_path / "words.txt")])
    assert isinstance(res.exception, UsageError) and res.exception.exit_code == 2  # cli.app.main's exit code
    assert "ships no tokenizer.json" in str(res.exception)


# --- loading: pickle-only, missing, HF cache, Hub download with consent ------------------------


def test_pickle_only_or_missing_model_is_a_clear_error_and_nothing_is_unpickled(tmp_path: Path) -> None:
    sentinel = tmp_path / "UNPICKLED"

    class Bomb:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (sentinel.write_text, ("boom",))

    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"lineage_behaviour": {"arch": "mlp"}}))
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(Bomb()))
    with pytest.raises(UnsupportedFormatError, match="never unpickles"):
        M.load(d)
    assert not sentinel.exists()
    with pytest.raises(UsageError, match="not found"):
        M.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelReadError):
        M.load(tmp_path / "empty")
    res = CliRunner().invoke(cli(), ["closeness", str(d), str(tmp_path / "empty")])
    assert isinstance(res.exception, UnsupportedFormatError) and res.exception.exit_code == 2
    assert "never unpickles" in str(res.exception)


@pytest.fixture
def hub(tmp_path: Path, zoo: dict[str, M.Classifier], monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    from hubserver import LocalHub

    for key in ("HF_HUB_DISABLE_TELEMETRY", "HF_HUB_DISABLE_XET", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(key, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    root = tmp_path / "hub"
    M.save(zoo["root"], root / "acme" / "root")
    M.save(zoo["child"], root / "acme" / "child")
    (root / "acme" / "child" / "training_args.bin").write_bytes(pickle.dumps({"lr": 1}))
    (root / "acme" / "pickled").mkdir(parents=True)
    (root / "acme" / "pickled" / "config.json").write_text(json.dumps({"lineage_behaviour": {"arch": "mlp"}}))
    (root / "acme" / "pickled" / "pytorch_model.bin").write_bytes(pickle.dumps({"w": 1}))
    with LocalHub(root) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def test_hub_models_download_only_with_consent_within_the_size_limit(hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "hf-cache"
    with pytest.raises(UsageError, match="--download"):
        M.load("acme/child", hf_cache=cache)
    assert not hub.requests_for("acme/child")  # nothing asked of the Hub without consent
    with pytest.raises(UsageError, match="--max-download-mb"):
        M.load("acme/child", hf_cache=cache, download=True, max_download_mb=0.001)
    child = M.load("acme/child", hf_cache=cache, download=True, max_download_mb=5)
    assert child.name == "acme/child" and child.arch == "mlp"
    assert not hub.requests_for("acme/child", file="training_args.bin")  # pickle never fetched
    with pytest.raises(UnsupportedFormatError, match="only pickle"):
        M.load("acme/pickled", hf_cache=cache, download=True)
    assert not hub.requests_for("acme/pickled", file="pytorch_model.bin")
    with pytest.raises(RepoNotFoundError):
        M.load("acme/nothing", hf_cache=cache, download=True)
    hub.reset_log()
    again = M.load("acme/child", hf_cache=cache)  # now from the HF cache, offline
    assert torch.equal(again.state()["head.weight"], child.state()["head.weight"])
    assert not hub.requests_for("acme/child")
    assert os.environ["HF_ENDPOINT"] == hub.url
    res = CliRunner().invoke(cli(), ["closeness", "acme/root", "acme/child", "--hf-cache", str(cache),
                                     "--download", "--k", "40", "--json", "--no-cache"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["source"] == "acme/root" and out["verdict"] == "lineage"


# --- CLI and probe files -------------------------------------------------------------------------


def test_cli_closeness_and_determine_state_thresholds(zoo: dict[str, M.Classifier], tmp_path: Path) -> None:
    src, sus = M.save(zoo["root"], tmp_path / "org" / "root"), M.save(zoo["child"], tmp_path / "org" / "child")
    probe = tmp_path / "probe.safetensors"
    save_probes(synthetic_probes(TASK, 300), probe)
    assert len(load_probes(probe)) == 300
    runner = CliRunner()
    res = runner.invoke(cli(), ["closeness", str(src), str(sus), "--probe", str(probe), "--k", "50", "--json",
                                "--no-cache"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["verdict"] == "lineage" and 0 <= out["score"] <= 1 and out["threshold"] > 0
    assert out["soft_threshold"] == out["soft_calibration"]["value"] and out["signal"]
    res = runner.invoke(cli(), ["closeness", str(src), str(sus), "--probe", str(probe), "--k", "50", "--no-cache"])
    assert res.exit_code == 0 and "threshold: s ≥" in res.output and "calibrated for this source" in res.output
    assert "soft-label agreement a =" in res.output and "threshold: a ≥" in res.output and "lineage by:" in res.output
    res = runner.invoke(cli(), ["determine", str(src), str(sus), "--probe", str(probe), "--no-cache"])
    assert res.exit_code == 0, res.output
    assert "same basin" in res.output and "threshold: loss barrier <" in res.output


def test_calibration_says_what_it_does_and_is_cached_per_source(zoo: dict[str, M.Classifier], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Calibration (minutes on real models) reports each auxiliary model as it trains, and a second
    run against the same source reuses it from the cache instead of training again."""
    from lineage_index import config

    said: list[str] = []
    monkeypatch.setattr(config, "NOTICES", [said.append])
    src, sus = M.save(zoo["root"], tmp_path / "org" / "root"), M.save(zoo["child"], tmp_path / "org" / "child")
    other = M.save(zoo["other"], tmp_path / "org" / "other")
    cache = tmp_path / "cal"
    runner = CliRunner()
    first = runner.invoke(cli(), ["determine", str(src), str(sus), "--cache", str(cache), "--json"])
    assert first.exit_code == 0, first.output
    assert any("auxiliary model 1/4 (derived)" in t for t in said)
    assert any("auxiliary model 4/4 (independent re-training)" in t for t in said)
    assert len(list(cache.glob("threshold-*.json"))) == 1
    said.clear()
    second = runner.invoke(cli(), ["determine", str(src), str(other), "--cache", str(cache), "--json"])
    assert second.exit_code == 0, second.output
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert not said and any("calibration cache" in n for n in b["notes"])
    assert a["threshold"] == b["threshold"] and b["verdict"] == "different basins" and a["verdict"] == "same basin"
    assert b["seconds"] < a["seconds"] / 3
