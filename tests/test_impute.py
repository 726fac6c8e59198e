"""Metadata imputation: each evidence source, the never-overwrite rule, LICENSE-text identification."""

from __future__ import annotations

import re
from pathlib import Path

from lineage_index.indexer.impute.license_text import (
    identify_license,
    is_license_file,
    load_license_texts,
    read_license_texts,
)
from lineage_index.indexer.impute.metadata import FIELDS, Imputed, impute, imputed_props
from lineage_index.indexer.read.sources import DirSource
from lineage_index.records import Edge, FileEntry, ModelRecord, TensorInfo

MIT = """MIT License

Copyright (c) 2024 Example Labs

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

APACHE_EXCERPT = """
                                 Apache License
                           Version 2.0, January 2004
                        http://www.apache.org/licenses/

   TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION

   1. Definitions.

      "License" shall mean the terms and conditions for use, reproduction,
      and distribution as defined by Sections 1 through 9 of this document.

      "Licensor" shall mean the copyright owner or entity authorized by
      the copyright owner that is granting the License.

   2. Grant of Copyright License. Subject to the terms and conditions of
      this License, each Contributor hereby grants to You a perpetual,
      worldwide, non-exclusive, no-charge, royalty-free, irrevocable
      copyright license to reproduce, prepare Derivative Works of,
      publicly display, publicly perform, sublicense, and distribute the
      Work and such Derivative Works in Source or Object form.
"""


def mangle(text: str, every: int = 12) -> str:
    """Whitespace reflowed to random-ish widths and every ``every``-th word changed."""
    words = text.split()
    words = [("banana" if i % every == every // 2 else w) for i, w in enumerate(words)]
    return "\n\t ".join(" ".join(words[i : i + 7]) + "   " for i in range(0, len(words), 7))


def tensors(names_shapes: list[tuple[str, tuple[int, ...]]]) -> tuple[TensorInfo, ...]:
    out, off = [], 0
    for name, shape in names_shapes:
        n = 4
        for d in shape:
            n *= d
        out.append(TensorInfo(name, "F32", shape, "model.safetensors", off, off + n))
        off += n
    return tuple(out)


LLAMA_TENSORS = tensors(
    [(f"model.layers.{i}.self_attn.{p}_proj.weight", (64, 64)) for i in range(2) for p in "qkvo"]
    + [(f"model.layers.{i}.mlp.{p}_proj.weight", (176, 64)) for i in range(2) for p in ("gate", "up")]
    + [(f"model.layers.{i}.input_layernorm.weight", (64,)) for i in range(2)]
    + [("model.embed_tokens.weight", (512, 64)), ("lm_head.weight", (512, 64))]
)


def rec(mid: str, **kw) -> ModelRecord:
    files = kw.pop("files", ("config.json", "model.safetensors"))
    return ModelRecord(id=mid, source="dir", files=tuple(FileEntry(f) for f in files), **kw)


def asserted(child: str, parent: str, relation: str = "finetune", conf: float = 0.9) -> Edge:
    return Edge(child, parent, relation, "recovered", conf, 0.9, evidence="test")


def one(result: dict[str, dict[str, Imputed]], mid: str, field: str) -> Imputed:
    assert field in result[mid], f"{mid}: no {field} in {sorted(result[mid])}"
    return result[mid][field]


# ---- evidence sources -------------------------------------------------------------------------


def test_config_architectures_give_model_type_and_pipeline_tag():
    r = rec("a/m", config={"architectures": ["Qwen2ForCausalLM"]})
    out = impute({"a/m": r}, [])
    assert one(out, "a/m", "model_type").value == "qwen2"
    assert one(out, "a/m", "model_type").source == "imputed"
    assert one(out, "a/m", "pipeline_tag").value == "text-generation"
    assert one(out, "a/m", "library").value == "transformers"
    assert "architectures" in one(out, "a/m", "model_type").evidence


def test_config_model_type_is_the_declared_model_type():
    out = impute({"a/m": rec("a/m", config={"model_type": "llama", "architectures": ["LlamaForCausalLM"]})}, [])
    assert one(out, "a/m", "model_type") == Imputed("model_type", "llama", "declared", 1.0, "declared")


def test_masked_lm_head_gives_fill_mask():
    out = impute({"a/m": rec("a/m", config={"architectures": ["BertForMaskedLM"]})}, [])
    assert one(out, "a/m", "pipeline_tag").value == "fill-mask"
    assert one(out, "a/m", "model_type").value == "bert"


def test_quantization_config_gives_reuse_quantized():
    cfg = {"model_type": "llama", "quantization_config": {"quant_method": "bitsandbytes", "load_in_8bit": True}}
    out = impute({"q/m": rec("q/m", config=cfg, base_models=("a/base",))}, [])
    assert one(out, "q/m", "reuse_method").value == "quantized"
    assert "quantization_config" in one(out, "q/m", "reuse_method").evidence


def test_header_family_signature_gives_model_type_of_same_family():
    known = rec("a/known", config={"model_type": "mistral"}, tensors=LLAMA_TENSORS)
    bare = rec("b/bare", tensors=LLAMA_TENSORS, files=("model.safetensors",))
    out = impute({"a/known": known, "b/bare": bare}, [])
    got = one(out, "b/bare", "model_type")
    assert got.value == "mistral" and "header family" in got.evidence


def test_header_tensor_names_give_model_type():
    gpt2 = tensors([("transformer.h.0.attn.c_attn.weight", (64, 192)), ("transformer.h.0.mlp.c_fc.weight", (64, 256))])
    out = impute({"g/m": rec("g/m", tensors=gpt2, files=("model.safetensors",))}, [])
    assert one(out, "g/m", "model_type").value == "gpt2"


def test_adapter_config_gives_peft_adapter_and_task():
    ac = {"base_model_name_or_path": "a/base", "peft_type": "LORA", "task_type": "CAUSAL_LM"}
    r = rec("a/lora", adapter_config=ac, files=("adapter_config.json", "adapter_model.safetensors"))
    out = impute({"a/lora": r}, [])
    assert one(out, "a/lora", "library").value == "peft"
    assert one(out, "a/lora", "reuse_method").value == "adapter"
    assert one(out, "a/lora", "pipeline_tag").value == "text-generation"


def test_sentence_transformers_files_give_library_and_pipeline():
    files = ("config.json", "model.safetensors", "config_sentence_transformers.json", "modules.json")
    out = impute({"s/m": rec("s/m", config={"architectures": ["BertModel"]}, files=files)}, [])
    assert one(out, "s/m", "library").value == "sentence-transformers"
    assert one(out, "s/m", "pipeline_tag").value == "sentence-similarity"


def test_gguf_files_give_library_gguf():
    out = impute({"g/m-GGUF": rec("g/m-GGUF", files=("model-Q4_K_M.gguf", "README.md"), base_models=("a/b",))}, [])
    assert one(out, "g/m-GGUF", "library").value == "gguf"
    assert one(out, "g/m-GGUF", "reuse_method").value == "quantized"


def test_tags_give_pipeline_library_license_and_reuse():
    tags = ("text-classification", "license:cc-by-4.0", "mergekit", "transformers")
    out = impute({"t/m": rec("t/m", tags=tags, files=("model.safetensors",), base_models=("x/a", "x/b"))}, [])
    assert one(out, "t/m", "pipeline_tag").value == "text-classification"
    assert one(out, "t/m", "license").value == "cc-by-4.0"
    assert one(out, "t/m", "license").source == "imputed"
    assert one(out, "t/m", "reuse_method").value == "merge"
    assert one(out, "t/m", "library").value == "transformers"


def test_verified_edge_gives_reuse_method():
    recs = {"a/p": rec("a/p"), "a/c": rec("a/c")}
    out = impute(recs, [asserted("a/c", "a/p", "copy", 0.95)])
    got = one(out, "a/c", "reuse_method")
    assert got.value == "copy" and "verified edge" in got.evidence


def test_lineage_parent_licence_is_inherited_and_contradicted_edges_are_ignored():
    recs = {"a/p": rec("a/p", license="llama3.1"), "a/c": rec("a/c"), "z/x": rec("z/x", license="mit"),
            "a/d": rec("a/d")}
    edges = [asserted("a/c", "a/p", "quantized"),
             Edge("a/d", "z/x", "finetune", "declared", 0.1, contradicted=True),
             Edge("a/d", "a/p", "finetune", "declared", 0.5)]  # declared-only: not lineage evidence
    out = impute(recs, edges)
    got = one(out, "a/c", "license")
    assert (got.value, got.source) == ("llama3.1", "inherited")
    assert "a/p" in got.evidence
    assert out["a/d"].get("license") is None or out["a/d"]["license"].value != "mit"
    assert out["a/d"].get("license") is None or "z/x" not in out["a/d"]["license"].evidence


def test_lineage_siblings_give_pipeline_tag():
    recs = {"r/root": rec("r/root", files=()), "s/1": rec("s/1", pipeline_tag="fill-mask", files=()),
            "s/2": rec("s/2", pipeline_tag="fill-mask", files=()), "s/3": rec("s/3", files=())}
    edges = [asserted(c, "r/root") for c in ("s/1", "s/2", "s/3")]
    out = impute(recs, edges)
    assert one(out, "s/3", "pipeline_tag").value == "fill-mask"
    assert one(out, "s/3", "pipeline_tag").source == "inherited"
    assert one(out, "r/root", "pipeline_tag").value == "fill-mask"  # from its children


def test_merge_inherits_the_most_restrictive_parent_licence():
    recs = {"a/x": rec("a/x", license="apache-2.0"), "b/y": rec("b/y", license="cc-by-nc-4.0"), "m/m": rec("m/m")}
    out = impute(recs, [asserted("m/m", "a/x", "merge"), asserted("m/m", "b/y", "merge")])
    assert one(out, "m/m", "license").value == "cc-by-nc-4.0"
    assert one(out, "m/m", "reuse_method").value == "merge"


# ---- never overwrite ---------------------------------------------------------------------------


def test_declared_values_are_never_overwritten():
    r = rec("d/m", license="apache-2.0", pipeline_tag="fill-mask", library_name="transformers",
            base_model_relation="finetune", config={"model_type": "bert", "architectures": ["BertForMaskedLM"]})
    out = impute({"d/m": r, "p/p": rec("p/p", license="apache-2.0")}, [asserted("d/m", "p/p")])
    for f in FIELDS:
        got = one(out, "d/m", f)
        assert got.source == "declared" and got.confidence == 1.0 and not got.flagged


def test_declared_value_contradicting_strong_evidence_is_flagged_but_kept():
    ac = {"base_model_name_or_path": "p/p", "task_type": "CAUSAL_LM"}
    r = rec("d/lora", library_name="transformers", base_model_relation="finetune", adapter_config=ac,
            files=("adapter_config.json", "adapter_model.safetensors"))
    out = impute({"d/lora": r}, [])
    lib, reuse = one(out, "d/lora", "library"), one(out, "d/lora", "reuse_method")
    assert (lib.value, lib.source, lib.flagged) == ("transformers", "declared", True)
    assert "peft" in lib.evidence
    assert (reuse.value, reuse.flagged) == ("finetune", True)


def test_imputed_props_are_flat_and_leave_inherited_licence_effective_alone():
    recs = {"a/p": rec("a/p", license="gemma"), "a/c": rec("a/c"), "t/m": rec("t/m", tags=("license:mit",))}
    props = imputed_props(impute(recs, [asserted("a/c", "a/p")]))
    for f in FIELDS:
        assert {f"{f}_value", f"{f}_confidence", f"{f}_flagged", f"{f}_evidence"} <= set(props["a/c"])
    assert props["a/c"]["license_value"] == "gemma" and props["a/c"]["license_source"] == "inherited"
    assert "license_effective" not in props["a/c"]
    assert props["t/m"]["license_effective"] == "mit" and props["t/m"]["license_source"] == "imputed"
    assert props["a/p"]["license_source"] == "declared" and "license_effective" not in props["a/p"]
    assert all(isinstance(v, str | float | bool | type(None)) for p in props.values() for v in p.values())


# ---- LICENSE text ------------------------------------------------------------------------------


def test_every_shipped_licence_text_identifies_itself_after_edits():
    texts = load_license_texts()
    assert {"apache-2.0", "mit", "bsd-3-clause", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0",
            "llama2", "llama3", "llama3.1", "llama3.2", "llama3.3", "llama4", "gemma"} <= set(texts)
    for lid, text in texts.items():
        m = identify_license(mangle(text))
        assert m is not None and m.license == lid, (lid, m)


def test_edited_mit_and_apache_texts_are_identified():
    edited = mangle(MIT).replace("Permission", "Permision").replace("merchantability".upper(), "MERCHANT-ABILITY")
    m = identify_license(edited)
    assert m is not None and m.license == "mit" and m.score > 0.5
    m = identify_license(re.sub(r"\s+", " ", APACHE_EXCERPT).replace("perpetual", "permanent"))
    assert m is not None and m.license == "apache-2.0"


def test_unrelated_or_empty_text_is_not_identified():
    assert identify_license("") is None
    assert identify_license("This model is released for research. Ask us before use.") is None
    assert identify_license(None) is None  # type: ignore[arg-type]


def test_license_file_text_imputes_licence_through_dir_source(tmp_path: Path):
    repo = tmp_path / "org" / "model"
    repo.mkdir(parents=True)
    (repo / "README.md").write_text("---\ntags: [text-generation]\n---\n# model\n")
    (repo / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}')
    (repo / "LICENSE.txt").write_text(mangle(MIT))
    (repo / "secret.txt").write_text("never read me")
    source = DirSource(tmp_path)
    records = {r.id: r for r in source.iter_records() if isinstance(r, ModelRecord)}
    texts = read_license_texts(source, records.values())
    assert set(texts) == {"org/model"} and "never read me" not in texts["org/model"]
    got = one(impute(records, [], texts), "org/model", "license")
    assert (got.value, got.source) == ("mit", "imputed") and "LICENSE text" in got.evidence


def test_only_licence_files_are_read_and_sizes_are_bounded():
    assert is_license_file("LICENSE") and is_license_file("sub/licence.md") and is_license_file("NOTICE")
    assert not is_license_file("model.safetensors") and not is_license_file("README.md")
    asked: list[tuple[str, int]] = []

    class Reader:
        def read_file(self, path: str, max_bytes: int) -> bytes:
            asked.append((path, max_bytes))
            return b"x" * 10

    class Source:
        def open_reader(self, record: ModelRecord) -> Reader:
            return Reader()

    r = rec("a/m", files=("LICENSE", "NOTICE", "config.json", "weights.gguf"))
    read_license_texts(Source(), [r], max_bytes=1024)
    assert sorted(p for p, _ in asked) == ["LICENSE", "NOTICE"] and all(n == 1024 for _, n in asked)


# ---- robustness --------------------------------------------------------------------------------


def test_weird_inputs_do_not_crash():
    recs = {
        "w/1": rec("w/1", config={"architectures": "LlamaForCausalLM", "model_type": 3, "quantization_config": "x"},
                   tags=("", "license:", "  ",), license="  "),
        "w/2": rec("w/2", config={"architectures": [None, 5, "X"]}, adapter_config={"task_type": 7}),
        "w/3": rec("w/3", files=()),
    }
    edges = [asserted("w/1", "w/2"), asserted("w/2", "w/1"), asserted("w/3", "nope/missing"),
             asserted("w/3", "w/3")]
    out = impute(recs, edges, {"w/1": "", "w/2": "\x00\xff garbage"})
    assert set(out) == set(recs)
    assert impute({}, []) == {}
    imputed_props(out)


def test_weak_imputed_licence_is_not_offered_as_effective():
    recs = {"a/x": rec("a/x", license="apache-2.0"), "b/y": rec("b/y", license="apache-2.0"), "c/lone": rec("c/lone")}
    out = impute(recs, [])
    got = one(out, "c/lone", "license")
    assert got.value == "apache-2.0" and got.confidence < 0.5 and "hub-wide" in got.evidence
    props = imputed_props(out)["c/lone"]
    assert props["license_value"] == "apache-2.0"
    assert "license_effective" not in props and "license_source" not in props
