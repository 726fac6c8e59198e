"""The behaviour tier on models in Hugging Face layout (issue 21).

Real transformers models, really trained here: the ``--hf-format`` classifier zoo (transformers
ViT and ResNet families saved with Hugging Face names, config.json and preprocessor_config.json),
a BERT-family text classifier pair and a GPT-2 causal LM pair. ``closeness`` and ``determine``
load them from their directories as a user's models (Auto class from config.json, safetensors
only), and ``ingest --behaviour`` finds the distilled students of the zoo.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lineage_index import api
from lineage_index.behaviour import models as M
from lineage_index.behaviour.archs import minilm_dir
from lineage_index.behaviour.commands import measure_closeness, measure_determine
from lineage_index.behaviour.probes import TaskSpec, probes_for, task_data, write_text_probes
from lineage_index.behaviour.tier import BehaviourOptions
from lineage_index.cli.app import app
from lineage_index.errors import ModelReadError, UnsupportedFormatError
from lineage_index.indexer.sketch.store import SketchStore
from lineage_index.schema.writer import GraphWriter

RESNET = "microsoft-lite/shapes-resnet-hf"
RESNET_FT = "acme-ai/shapes-resnet-hf-finetuned"
RESNET_IND = "indie-ml/shapes-resnet-hf-scratch"
VIT = "google-lite/shapes-vit-hf"
STUDENTS = {"TinyStudents/shapes-resnet-hf-distilled": RESNET, "TinyStudents/shapes-vit-hf-distilled": VIT}


@pytest.fixture(scope="module")
def hf_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hfzoo") / "zoo"
    res = CliRunner().invoke(app, ["zoo", "build", str(out), "--classifiers", "--hf-format", "--size", "tiny",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "10 classifiers" in res.output and ".probes" in res.output
    return out


def test_hf_zoo_is_genuine_hugging_face_layout(hf_zoo: Path) -> None:
    """transformers itself loads the zoo's models and preprocessing, and agrees with our loader."""
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    truth = json.loads((hf_zoo / "truth.json").read_text())
    assert truth["zoo"]["format"] == "huggingface"
    files = sorted((hf_zoo / ".probes").glob("class*/*.png"))
    labels = torch.tensor([int(f.parent.name[5:]) for f in files])
    assert len(files) == 600 and set(labels.tolist()) == set(range(5))
    for model_id, arch in ((RESNET, "ResNetForImageClassification"), (VIT, "ViTForImageClassification")):
        d = hf_zoo / model_id
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["architectures"] == [arch] and "lineage_behaviour" not in cfg
        theirs = AutoModelForImageClassification.from_pretrained(d)
        pixels = AutoImageProcessor.from_pretrained(d)([Image.open(f).convert("RGB") for f in files],
                                                       return_tensors="pt")["pixel_values"]
        ours = M.load(d)
        probes = probes_for(ours, hf_zoo / ".probes")
        assert ours.arch == "hf-image" and ours.input_shape == (3, 16, 16)
        assert torch.allclose(probes.x, pixels, atol=1e-5)  # preprocessing from preprocessor_config.json
        assert torch.equal(probes.y, labels)
        with torch.no_grad():
            assert torch.allclose(ours.module(probes.x), theirs(pixel_values=pixels).logits, atol=1e-4)
            assert float((ours.module(probes.x).argmax(1) == labels).float().mean()) > 0.9
    int8 = M.load(hf_zoo / "QuantFactory/shapes-resnet-hf-int8")
    assert int8.meta["quant"] == "int8" and int8.arch == "hf-image"


def test_hf_loader_refuses_remote_code_and_unknown_types(hf_zoo: Path, tmp_path: Path) -> None:
    import shutil

    for change, error, words in (({"auto_map": {"AutoModelForImageClassification": "x.Evil"}},
                                  UnsupportedFormatError, "remote code"),
                                 ({"model_type": "no-such-model"}, ModelReadError, "no-such-model")):
        d = tmp_path / str(len(list(tmp_path.iterdir())))
        shutil.copytree(hf_zoo / RESNET, d)
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps(cfg | change))
        with pytest.raises(error, match=words):
            M.load(d)


@pytest.mark.slow
def test_closeness_and_determine_cli_on_hf_resnets(hf_zoo: Path, tmp_path: Path) -> None:
    """The seeds' two methods on BatchNorm ResNets in Hugging Face layout, through the CLI."""
    runner, cache = CliRunner(), str(tmp_path / "cal")

    def run(*args: str) -> str:
        res = runner.invoke(app, [*args, "--probe", str(hf_zoo / ".probes"), "--cache", cache])
        assert res.exit_code == 0, res.output
        return res.output

    root, ft, ind = (str(hf_zoo / m) for m in (RESNET, RESNET_FT, RESNET_IND))
    assert "vs source shapes-resnet-hf: lineage" in run("closeness", root, ft, "--n-aux", "4")
    assert "no lineage" in run("closeness", root, ind, "--n-aux", "4")
    out = run("determine", root, ft)
    assert "same basin" in out and "BatchNorm re-estimated: True" in out
    assert "different basins" in run("determine", root, ind)


def _bert_pair(out: Path) -> tuple[Path, Path, Path, Path]:
    """A tiny BertForSequenceClassification on the MiniLM vocabulary, its fine-tune and an
    independent one, saved in Hugging Face layout with the tokenizer; labelled probe text."""
    config = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64, "pad_token_id": 0}
    task = TaskSpec(kind="text", classes=4, length=12, seed=3)
    root = M.build("hf-text", seed=1, task=task, config=config)
    root.meta["dir"] = str(minilm_dir())
    M.train(root, task_data(task, 2000, seed=11), steps=300, lr=3e-3, seed=1)
    ft = M.finetune(root, task_data(task, 2000, seed=12), seed=2, steps=100, lr=1e-3)
    ind = M.build("hf-text", seed=9, task=task, config=config)
    ind.meta["dir"] = str(minilm_dir())
    M.train(ind, task_data(task, 2000, seed=13), steps=300, lr=3e-3, seed=9)
    dirs = tuple(M.save(m, out / n) for n, m in (("root", root), ("ft", ft), ("ind", ind)))
    write_text_probes(task_data(task, 300, seed=99), out / "probes.txt", labels=True)
    return (*dirs, out / "probes.txt")  # type: ignore[return-value]


@pytest.mark.slow
def test_bert_text_classifier_pair_end_to_end(tmp_path: Path) -> None:
    root, ft, ind, probes = _bert_pair(tmp_path)
    cfg = json.loads((root / "config.json").read_text())
    assert cfg["architectures"] == ["BertForSequenceClassification"] and (root / "tokenizer.json").is_file()
    c_ft = measure_closeness(str(root), str(ft), probes, n_aux=2, k=40)
    c_ind = measure_closeness(str(root), str(ind), probes, n_aux=2, k=40)
    # Tiny BERTs trained from scratch on a topic task agree on most token substitutions, so
    # closeness only orders this pair (no verdict asserted; determine separates it below).
    assert c_ft.score > c_ind.score and c_ft.n_probes == c_ind.n_probes == 80
    assert any("2 derivations, 2 independent re-trainings" in n for n in c_ft.notes)
    assert any("learnt from 300 labelled probes" in n for n in c_ft.notes)  # fewer than closeness.FEW_PROBES
    d_ft = measure_determine(str(root), str(ft), probes, n_aux=2)
    d_ind = measure_determine(str(root), str(ind), probes, n_aux=2)
    assert (d_ft.verdict, d_ind.verdict) == ("same basin", "different basins")


def _markov(seed: int, n: int, vocab: int, length: int, chain: int) -> torch.Tensor:
    """``n`` token sequences of a Markov chain (its transition matrix from ``chain``); id 0 is padding."""
    g = torch.Generator().manual_seed(seed)
    trans = torch.softmax(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(chain)) * 3, 1)
    trans[:, 0] = 0
    x = torch.zeros(n, length, dtype=torch.long)
    x[:, 0] = torch.randint(1, vocab, (n,), generator=g)
    for t in range(1, length):
        x[:, t] = torch.multinomial(trans[x[:, t - 1]], 1, generator=g).squeeze(1)
    return x


def _train_lm(model: M.Classifier, seqs: torch.Tensor, steps: int, lr: float, seed: int) -> M.Classifier:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.module.parameters(), lr=lr)
    model.module.train()
    for _ in range(steps):
        x = seqs[torch.randint(0, len(seqs), (64,), generator=g)]
        loss = model.module.model(input_ids=x, labels=x).loss  # type: ignore[union-attr, operator]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.module.eval()
    return model


@pytest.mark.slow
def test_causal_lm_pair_end_to_end(tmp_path: Path) -> None:
    """GPT-2 in Hugging Face layout: closeness on next-token decisions, determine on LM loss."""
    vocab = 48
    config = {"model_type": "gpt2", "vocab_size": vocab, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 32,
              "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 1}
    root = _train_lm(M.build("hf-lm", seed=1, config=config), _markov(1, 2000, vocab, 16, 5), 300, 3e-3, 1)
    ft = _train_lm(root.with_state(root.state()), _markov(2, 2000, vocab, 16, 5), 100, 1e-3, 2)
    ind = _train_lm(M.build("hf-lm", seed=7, config=config), _markov(3, 2000, vocab, 16, 6), 300, 3e-3, 7)
    dirs = {n: M.save(m, tmp_path / n) for n, m in (("root", root), ("ft", ft), ("ind", ind))}
    assert json.loads((dirs["root"] / "config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]
    probes = tmp_path / "probes.txt"
    probes.write_text("\n".join(" ".join(map(str, r.tolist())) for r in _markov(99, 300, vocab, 12, 5)) + "\n")
    c_ft = measure_closeness(str(dirs["root"]), str(dirs["ft"]), probes, n_aux=2, k=40)
    c_ind = measure_closeness(str(dirs["root"]), str(dirs["ind"]), probes, n_aux=2, k=40)
    assert (c_ft.verdict, c_ind.verdict) == ("lineage", "no lineage")
    d_ft = measure_determine(str(dirs["root"]), str(dirs["ft"]), probes, n_aux=2)
    d_ind = measure_determine(str(dirs["root"]), str(dirs["ind"]), probes, n_aux=2)
    assert (d_ft.verdict, d_ind.verdict) == ("same basin", "different basins")


@pytest.mark.slow
@pytest.mark.neo4j
def test_ingest_behaviour_on_hf_zoo_writes_distill_edges(hf_zoo: Path, tmp_path: Path, neo4j_server,
                                                         clean_graph) -> None:
    from lineage_index.schema.connection import Connection

    conn = Connection(uri=neo4j_server.uri, user=neo4j_server.user, database=neo4j_server.database,
                      managed=False, password=neo4j_server.password)
    options = BehaviourOptions(probe=hf_zoo / ".probes", n_aux=2, aux_steps=150, cache_dir=tmp_path / "cache")
    result = api.ingest(api.make_source(directory=hf_zoo), store=SketchStore(tmp_path / "store"), conn=conn,
                        behaviour=options)
    assert result.behaviour is not None and not result.behaviour.skipped, result.behaviour.skipped
    edges = {(e.child, e.parent): e for e in GraphWriter(clean_graph, conn.database).read_edges()}
    for root, base in ((RESNET, "shapes-resnet-hf"), (VIT, "shapes-vit-hf")):  # the weight tier on HF names
        assert edges[(f"acme-ai/{base}-finetuned", root)].relation == "finetune"  # not under its int8 sibling
        assert edges[(f"QuantFactory/{base}-int8", root)].relation == "quantized"
    found = {k: e for k, e in edges.items() if e.source == "behaviour"}
    assert set(found) == set(STUDENTS.items())
    for e in found.values():
        assert e.relation == "distill" and e.behaviour is not None
        assert e.behaviour.closeness >= e.behaviour.threshold
    independents = {m for m, t in json.loads((hf_zoo / "truth.json").read_text())["models"].items()
                    if t["group"] == "independent"}
    assert not any(c in independents or p in independents for c, p in edges)


def _timm_family(out: Path) -> tuple[Path, Path, Path, Path]:
    """A tiny timm ResNet (BatchNorm) saved with timm's own Hub export (config.json with
    ``architecture``/``model_args``/``pretrained_cfg``), its fine-tune and an independent one
    saved by lineage-index, and labelled probe PNGs."""
    from timm.models._hub import save_for_hf

    from lineage_index.zoo.classifiers import HF_IMAGE_TASK, HF_NORM, write_probe_images

    task = TaskSpec(**dict(HF_IMAGE_TASK, seed=5))  # type: ignore[arg-type]
    args = {"layers": [1, 1, 1, 1], "channels": [8, 16, 16, 16], "stem_width": 8}
    config = {"architecture": "resnet18", "model_args": args,
              "pretrained_cfg": {"input_size": [3, 16, 16], "mean": HF_NORM[0], "std": HF_NORM[1]}}
    models = {}
    for name, seed in (("root", 1), ("ind", 9)):
        m = M.build("hf-timm", seed=seed, task=task, config=config)
        m.meta["input_norm"] = HF_NORM
        models[name] = M.train(m, task_data(task, 2000, seed=10 + seed), steps=300, lr=3e-3, seed=seed)
    models["ft"] = M.finetune(models["root"], task_data(task, 2000, seed=12), seed=2, steps=100, lr=1e-3)
    timm_root = models["root"].module.model  # type: ignore[union-attr]
    save_for_hf(timm_root, str(out / "root"), model_args=dict(args, num_classes=5), safe_serialization=True,
                data_config={"input_size": (3, 16, 16), "mean": tuple(HF_NORM[0]), "std": tuple(HF_NORM[1])})
    dirs = (out / "root", M.save(models["ft"], out / "ft"), M.save(models["ind"], out / "ind"))
    write_probe_images(task, out / "probes", 600, seed=3)  # fewer: weaker re-trainings (closeness.FEW_PROBES)
    return (*dirs, out / "probes")


@pytest.mark.slow
def test_timm_resnet_family_end_to_end(tmp_path: Path) -> None:
    """timm image models in timm's Hub layout: loaded by name from config.json (no download, no
    pickle), preprocessing from pretrained_cfg, both methods through the CLI."""
    import timm
    from safetensors.torch import load_file

    root, ft, ind, probes = _timm_family(tmp_path)
    cfg = json.loads((root / "config.json").read_text())
    assert cfg["architecture"] == "resnet18" and "model_type" not in cfg and cfg["pretrained_cfg"]["mean"] == [0.5] * 3
    ours = M.load(root)
    assert ours.arch == "hf-timm" and ours.input_shape == (3, 16, 16) and ours.has_batchnorm
    assert ours.meta["input_norm"] == ([0.5] * 3, [0.25] * 3) and ours.module.head_name == "fc"  # type: ignore[union-attr]
    # what lineage-index writes, timm reads back with its own classes (and gives the same logits)
    saved = json.loads((ft / "config.json").read_text())
    theirs = timm.create_model(saved["architecture"], pretrained=False, **saved["model_args"]).eval()
    theirs.load_state_dict(load_file(str(ft / "model.safetensors")))
    x = probes_for(ours, probes).x[:8]
    assert torch.allclose(theirs(x), M.load(ft).module(x), atol=1e-5)

    runner, cache = CliRunner(), str(tmp_path / "cal")

    def run(*a: str) -> str:
        res = runner.invoke(app, [*a, "--probe", str(probes), "--cache", cache])
        assert res.exit_code == 0, res.output
        return res.output

    assert "vs source root: lineage" in run("closeness", str(root), str(ft), "--n-aux", "4")
    assert "no lineage" in run("closeness", str(root), str(ind), "--n-aux", "4")
    out = run("determine", str(root), str(ft))
    assert "same basin" in out and "BatchNorm re-estimated: True" in out
    assert "different basins" in run("determine", str(root), str(ind))
    broken = dict(cfg, architecture="no_such_timm_model")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps(broken))
    (tmp_path / "bad" / "model.safetensors").write_bytes((root / "model.safetensors").read_bytes())
    with pytest.raises(ModelReadError, match="no_such_timm_model"):
        M.load(tmp_path / "bad")


def test_causal_lm_without_pad_id_keeps_token_zero(tmp_path: Path) -> None:
    """GPT-2 names no pad_token_id and id 0 is a real token there ("!"): probes pad with the
    end-of-text id, token 0 stays content, and the next-token decision is read after the last
    real token (as the unpadded sequence alone gives it)."""
    from lineage_index.behaviour.closeness import background, content_mask
    from lineage_index.behaviour.probes import next_token_probes

    config = {"model_type": "gpt2", "vocab_size": 48, "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 32,
              "bos_token_id": 47, "eos_token_id": 47}
    lm = M.build("hf-lm", seed=1, config=config)
    d = M.save(lm, tmp_path / "lm")
    lm = M.load(d)
    assert lm.module.pad_id == 47  # type: ignore[union-attr]
    rows = [[5, 0, 9, 0, 3], [7, 8, 0, 2, 4, 6, 1, 3]]
    probes = tmp_path / "probes.txt"
    probes.write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))
    p = next_token_probes(lm, probes)
    assert p.x[0].tolist() == [5, 0, 9, 0, 47, 47, 47] and p.y.tolist() == [3, 3]  # type: ignore[union-attr]
    content = content_mask(p.x, lm.module)
    assert content[0].tolist() == [False, True, True, True, False, False, False]
    with torch.no_grad():
        alone = lm.module.model(input_ids=torch.tensor([rows[0][:-1]])).logits[0, -1]  # type: ignore[union-attr]
        assert torch.allclose(lm.module(p.x)[0], alone, atol=1e-5)
    bg = background(p.x, 0, 47)
    assert (bg[0, 4:] == 47).all() and bg[0, 0] == 5  # padding and the first token stay


def test_convnext_round_trip_agrees_with_transformers(tmp_path: Path) -> None:
    """A transformers ConvNeXt (LayerNorm, no BatchNorm) saved and read back through the Auto class:
    our loader's logits equal transformers' own from_pretrained."""
    from transformers import AutoModelForImageClassification

    config = {"model_type": "convnext", "num_channels": 3, "patch_size": 2, "hidden_sizes": [8, 16], "depths": [1, 1],
              "num_stages": 2, "image_size": 16}
    task = TaskSpec(kind="images", classes=4, channels=3, size=16, seed=2)
    m = M.build("hf-image", seed=3, task=task, config=config)
    d = M.save(m, tmp_path / "convnext")
    ours = M.load(d)
    assert ours.arch == "hf-image" and not ours.has_batchnorm and ours.classes == 4
    theirs = AutoModelForImageClassification.from_pretrained(str(d)).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(ours.module(x), theirs(pixel_values=x).logits, atol=1e-5)
