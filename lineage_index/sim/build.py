"""``sim build``: a simulated hub written as a packed sketch store, records and a truth file.

``build_sim(out, n)`` plans the population (``sim.plan``), draws each architecture's sketch
samples (``sim.values``, calibrated on real zoo sketches), computes the FAISS embeddings
exactly as ``sketch.embed`` would, and writes, architecture by architecture:

    OUT/store/_packed/...   the sketch store (packed layout) with every ModelRecord
    OUT/truth.json          the zoo truth format (``eval --truth`` scores it)
    OUT/sim.json            what was built: size, seed, geometry, counts, calibration source

Only one architecture's samples are in memory at a time, so memory stays bounded by the
largest architecture (not by N). The records carry the metadata a Hub listing would give
(created_at, declared licence and base models, adapter_config for adapters) and the header
tensors the sampled matrices come from. Nothing here reads or writes weights.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lineage_index.config import SKETCH_VERSION
from lineage_index.indexer.sketch.packed import SHARD_ROWS, PackedFamily, PackedLayout, PackedWriter
from lineage_index.indexer.sketch.store import SketchStore
from lineage_index.sim.calibrate import load_calibration
from lineage_index.sim.plan import (
    DTYPES,
    LOCAL_PATH,
    OP,
    OPS,
    RELATION_OF_OP,
    HubPlan,
    iso_time,
    plan_hub,
)
from lineage_index.sim.values import Geometry, ValueModel, embed_batch

GENERATOR_VERSION = 1
_HIDDEN = (1024, 2048, 3072, 4096, 5120)
_ROLES = ("self_attn.q_proj.weight", "self_attn.v_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")
_INT8_DTYPES = "F16,F32,I8,U8"


@dataclass(frozen=True)
class Arch:
    """A simulated architecture: the tensors the sketch samples and the family signature."""

    name: str
    layers: int
    hidden: int
    kv: int
    inter: int
    family: str
    family_desc: str
    keys: tuple[str, ...]
    shapes: tuple[tuple[int, int], ...]


def make_arch(index: int, name: str, geo: Geometry) -> Arch:
    rng = np.random.default_rng([7, index])
    hidden = int(rng.choice(_HIDDEN))
    layers = int(rng.integers(12, 49))
    kv = hidden // int(rng.choice((1, 4, 8)))
    inter = int(hidden * float(rng.choice((2.6875, 3.5, 4.0))))
    picks = (0, layers // 2, layers // 2, layers - 1)
    shapes = ((hidden, hidden), (kv, hidden), (inter, hidden), (hidden, inter))
    keys = tuple(f"layers.{layer}.{role}" for layer, role in zip(picks, _ROLES, strict=True))[: geo.matrices]
    desc = f"sim:{name};L{layers};h{hidden};kv{kv};i{inter};" + ";".join(
        f"{k}:{'x'.join(map(str, s))}" for k, s in zip(keys, shapes, strict=False))
    return Arch(name, layers, hidden, kv, inter, hashlib.sha1(desc.encode()).hexdigest()[:16], desc, keys,
                shapes[: geo.matrices])


def _layout(arch: Arch, geo: Geometry, adapter: bool = False) -> PackedLayout:
    if adapter:
        keys = (arch.keys[0].replace(".weight", ".lora_A.weight"), arch.keys[0].replace(".weight", ".lora_B.weight"))
        shapes: tuple[tuple[int, ...], ...] = ((8, arch.hidden), (arch.hidden, 8))
    else:
        keys, shapes = arch.keys, arch.shapes
    roles = tuple(k.split(".", 2)[2] for k in keys)
    layers = tuple(int(k.split(".")[1]) for k in keys)
    return PackedLayout(tuple(keys), roles, layers, tuple(shapes), (geo.rows,) * len(keys), (geo.cols,) * len(keys),
                        tuple(0 for _ in keys), tuple(0 for _ in keys))


def _tensors(arch: Arch, dtype: str, adapter: bool) -> list[dict[str, Any]]:
    """Header tensors of the sampled matrices (names as transformers writes them)."""
    out, offset = [], 8
    size = {"F32": 4, "BF16": 2, "F16": 2, "I8": 1}[dtype]
    for key, shape in zip(arch.keys, arch.shapes, strict=True):
        if adapter:
            if "q_proj" not in key and "v_proj" not in key:
                continue
            base = "base_model.model.model." + key[: -len(".weight")]
            parts = ((f"{base}.lora_A.weight", (8, shape[1])), (f"{base}.lora_B.weight", (shape[0], 8)))
        else:
            parts = ((f"model.{key}", shape),)
        for name, shp in parts:
            nbytes = int(np.prod(shp)) * (4 if adapter else size)
            out.append({"name": name, "dtype": "F32" if adapter else dtype, "shape": list(shp),
                        "file": "adapter_model.safetensors" if adapter else "model.safetensors",
                        "start": offset, "end": offset + nbytes})
            offset += nbytes
    return out


class _RecordColumns:
    """ModelRecord columns for the packed store, built without ModelRecord objects (fast)."""

    def __init__(self, plan: HubPlan, arches: list[Arch]) -> None:
        self.plan = plan
        self.arches = arches
        self._tensor_json: dict[tuple[int, str, bool], str] = {}

    def _tensors(self, a: int, dtype: str, adapter: bool) -> str:
        key = (a, dtype, adapter)
        if key not in self._tensor_json:
            self._tensor_json[key] = json.dumps(_tensors(self.arches[a], dtype, adapter))
        return self._tensor_json[key]

    def columns(self, models: np.ndarray, adapter: bool) -> dict[str, list[Any]]:
        plan = self.plan
        cols: dict[str, list[Any]] = {k: [] for k in (
            "rec_present", "rec_id", "rec_source", "rec_sha", "rec_author", "rec_created_at", "rec_license",
            "rec_license_name", "rec_base_models", "rec_base_model_relation", "rec_tags", "rec_pipeline_tag",
            "rec_library_name", "rec_config", "rec_adapter_config", "rec_gated", "rec_private", "rec_files",
            "rec_tensors", "rec_weight_format", "rec_location", "rec_header_bytes_read", "rec_header_requests")}
        for m in models:
            m = int(m)
            mid = plan.ids[m]
            arch = self.arches[int(plan.arch[m])]
            dtype = DTYPES[int(plan.dtype[m])]
            bases = [plan.ids[b] if b >= 0 else f"/home/user/models/{arch.name}-base" for b in plan.declared_base[m]]
            adapter_cfg = None
            if adapter:
                adapter_cfg = json.dumps({"base_model_name_or_path": bases[0] if bases else None,
                                          "peft_type": "LORA", "r": 8, "target_modules": ["q_proj", "v_proj"]})
                bases = [b for b in bases if not b.startswith("/")]
            rel = plan.declared_relation[m]
            tags = [f"base_model:{b}" for b in bases] + ([f"base_model:{rel}:{b}" for b in bases] if rel else [])
            config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": arch.hidden,
                      "num_hidden_layers": arch.layers, "intermediate_size": arch.inter,
                      "torch_dtype": {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}.get(dtype, "float16")}
            for k, v in (("rec_present", True), ("rec_id", mid), ("rec_source", "sim"),
                         ("rec_sha", hashlib.sha1(f"{plan.seed}:{mid}".encode()).hexdigest()),
                         ("rec_author", mid.split("/", 1)[0]), ("rec_created_at", iso_time(int(plan.created_at[m]))),
                         ("rec_license", plan.declared_license[m]), ("rec_license_name", None),
                         ("rec_base_models", json.dumps(bases)), ("rec_base_model_relation", rel),
                         ("rec_tags", json.dumps(tags)),
                         ("rec_pipeline_tag", None if adapter else "text-generation"),
                         ("rec_library_name", "peft" if adapter else "transformers"),
                         ("rec_config", json.dumps(config)), ("rec_adapter_config", adapter_cfg),
                         ("rec_gated", False), ("rec_private", False), ("rec_files", "[]"),
                         ("rec_tensors", self._tensors(int(plan.arch[m]), dtype if dtype != "I8" else "I8", adapter)),
                         ("rec_weight_format", "safetensors"), ("rec_location", "sim"),
                         ("rec_header_bytes_read", 0), ("rec_header_requests", 0)):
                cols[k].append(v)
        return cols


def _meta(plan: HubPlan, models: np.ndarray, layout: PackedLayout, adapter: bool) -> dict[str, list[Any]]:
    k = len(layout.keys)
    sample_bytes = ",".join(str(r * c * 2) for r, c in zip(layout.rows, layout.cols, strict=True))
    cols: dict[str, list[Any]] = {c: [] for c in ("sha", "version", "dtypes", "quant", "bytes_read", "requests",
                                                  "model_bytes", "sample_dtypes", "sample_quants", "sample_bytes")}
    for m in models:
        m = int(m)
        op = OPS[int(plan.op[m])]
        dtype = "F32" if adapter else DTYPES[int(plan.dtype[m])]
        int8 = op == "int8"
        for c, v in (("sha", hashlib.sha1(f"{plan.seed}:{plan.ids[m]}".encode()).hexdigest()),
                     ("version", SKETCH_VERSION), ("dtypes", _INT8_DTYPES if int8 else dtype),
                     ("quant", "bnb-int8" if int8 else ""), ("bytes_read", 70_000), ("requests", 70),
                     ("model_bytes", 0), ("sample_dtypes", ",".join([dtype] * k)),
                     ("sample_quants", ",".join(["bnb-int8" if int8 else ""] * k)), ("sample_bytes", sample_bytes)):
            cols[c].append(v)
    return cols


@dataclass
class SimSummary:
    out: str
    models: int
    architectures: int
    trees: int
    edges: int
    by_relation: dict[str, int]
    largest_tree: int
    largest_family: int
    max_depth: int
    mean_depth: float
    shards: int
    seconds: float
    geometry: dict[str, int]


def build_sim(out: Path, n: int, seed: int = 0, geometry: Geometry | None = None, shard_rows: int = SHARD_ROWS,
              progress: Callable[[int, int], None] | None = None) -> SimSummary:
    """Write a simulated hub of ``n`` models into ``out`` (see the module docstring)."""
    started = time.perf_counter()
    out = Path(out)
    geo = geometry or Geometry()
    cal = load_calibration()
    plan = plan_hub(n, seed, calibration=cal)
    arches = [make_arch(a, name, geo) for a, name in enumerate(plan.arch_names)]
    store = SketchStore(out / "store")
    if (store.root / "_packed").exists():
        from lineage_index.errors import UsageError

        raise UsageError(f"{out}: already holds a simulated store; choose an empty directory")
    model = ValueModel(plan, cal, geo, seed)
    records = _RecordColumns(plan, arches)
    order = np.argsort(plan.arch, kind="stable")
    bounds = np.searchsorted(plan.arch[order], np.arange(len(arches) + 1))
    adapter_op = OP["adapter"]
    done = 0
    largest_family = 0
    with PackedWriter(store, shard_rows=shard_rows) as writer:
        for a, arch in enumerate(arches):
            members = order[bounds[a]:bounds[a + 1]]
            if not len(members):
                continue
            full = members[plan.op[members] != adapter_op]
            adapters = members[plan.op[members] == adapter_op]
            for group, is_adapter in ((full, False), (adapters, True)):
                if not len(group):
                    continue
                layout = _layout(arch, geo, is_adapter)
                if is_adapter:
                    rng = np.random.default_rng([seed, 20, int(group[0])])
                    values = (0.01 * rng.standard_normal((len(group), len(layout.keys), geo.n))).astype(np.float32)
                else:
                    values = model.generate(group)
                    largest_family = max(largest_family, len(group))
                emb = embed_batch(values, list(layout.keys))
                fam = PackedFamily(("adapter:" if is_adapter else "") + arch.family,
                                   ("adapter:" if is_adapter else "") + arch.family_desc,
                                   "adapter" if is_adapter else "full", layout, [plan.ids[int(m)] for m in group],
                                   values.reshape(len(group), -1), emb, _meta(plan, group, layout, is_adapter))
                writer.add_family(fam, records.columns(group, is_adapter))
                done += len(group)
                del values, emb, fam
            if progress is not None:
                progress(done, n)
        shards = len(writer.manifest["shards"])
    shards = len(store.packed.manifest["shards"])
    truth = write_truth(out / "truth.json", plan, arches)
    by_rel: dict[str, int] = {}
    for e in truth:
        by_rel[e] = by_rel.get(e, 0) + 1
    summary = SimSummary(str(out), n, len(arches), int(plan.tree.max()) + 1, sum(by_rel.values()), by_rel,
                         int(np.bincount(plan.tree).max()), largest_family, int(plan.depth.max()),
                         round(float(plan.depth.mean()), 3), shards, round(time.perf_counter() - started, 2),
                         {"matrices": geo.matrices, "rows": geo.rows, "cols": geo.cols})
    (out / "sim.json").write_text(json.dumps({**asdict(summary), "seed": seed, "generator_version": GENERATOR_VERSION,
                                              "calibration": cal.get("zoos")}, indent=1))
    return summary


def write_truth(path: Path, plan: HubPlan, arches: list[Arch]) -> list[str]:
    """truth.json in the zoo format, streamed; returns the relation of every edge."""
    rels: list[str] = []
    root_of = np.empty(plan.n, dtype=np.int64)
    for i, pars in enumerate(plan.parents):
        root_of[i] = i if not pars else root_of[pars[0]]
    with open(path, "w") as fh:
        fh.write('{"zoo": ' + json.dumps({"kind": "sim", "size": plan.n, "seed": plan.seed,
                                          "generator_version": GENERATOR_VERSION}) + ', "models": {')
        for i in range(plan.n):
            op = OPS[int(plan.op[i])]
            bases = [plan.ids[b] if b >= 0 else "local-path" for b in plan.declared_base[i] if b != LOCAL_PATH]
            info = {"license": plan.license[i], "root": plan.ids[int(root_of[i])],
                    "weight_root": plan.ids[int(plan.weight_root[i])], "arch": arches[int(plan.arch[i])].name,
                    "family": arches[int(plan.arch[i])].family, "method": op, "relation": RELATION_OF_OP[op],
                    "parents": [plan.ids[p] for p in plan.parents[i]], "depth": int(plan.depth[i]),
                    "dtype": DTYPES[int(plan.dtype[i])], "created_at": iso_time(int(plan.created_at[i])),
                    "declared_license": plan.declared_license[i],
                    "declared_base_model": (bases[0] if len(bases) == 1 else bases) if bases else None,
                    "declared_base_model_relation": plan.declared_relation[i],
                    "mess": {"base_model": plan.mess_base[i]}}
            fh.write(("," if i else "") + json.dumps(plan.ids[i]) + ": " + json.dumps(info))
        fh.write('}, "edges": [')
        first = True
        for i, pars in enumerate(plan.parents):
            rel = RELATION_OF_OP[OPS[int(plan.op[i])]]
            for p in pars:
                fh.write(("" if first else ",") + json.dumps({"child": plan.ids[i], "parent": plan.ids[p],
                                                              "relation": rel}))
                first = False
                rels.append(str(rel))
        fh.write("]}\n")
    return rels
