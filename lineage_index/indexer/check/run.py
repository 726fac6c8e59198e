"""Check one model against the index: ``check(target, store) -> CheckResult`` (issue 10).

TARGET is a local model directory, a single ``.safetensors`` file, a sharded index
(``*.safetensors.index.json``) or a Hub id. It is sketched exactly as ingest sketches
(``sketch_model`` over the same range-read plan), candidates come from FAISS over the stored
sketches of the same family (plus the declared bases that are stored), each candidate is
verified with ``verify.compare``, and one verdict is chosen by the rules of ``verdict``.

Every candidate becomes numbers against the background of its architecture in the index
(``check_features``) and ``calibration``'s fitted models turn them into probabilities.
A candidate is related only when ``compare`` says so *and* its calibrated z passes
``verify.RELATED_Z``: the tool prefers 'unresolved' to a confident wrong answer. Missing
signals (no times, no records, base not stored) never count as evidence.

The last result per target is kept next to the store (``_checks/``) for ``explain``;
``--add`` puts the target's sketch and record into the store (the graph: ``graph``).
No printing here.

Why this module is long: the target's reading, candidate search (embedding and column-window
neighbours), verification and the result record it keeps for ``explain`` are one pass over one
target, and splitting them would pass half-built state between modules.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from lineage_index.errors import HeaderError, ModelReadError, UsageError
from lineage_index.indexer.check.calibration import (
    Calibration,
    load_calibration,
    score_verdict,
    verdict_probability,
)
from lineage_index.indexer.check.features import (
    Background,
    background,
    calibrated_z,
    parent_vector,
    related_vector,
)
from lineage_index.indexer.check.mergekit import dtype_name, sparse_method
from lineage_index.indexer.check.verdict import (
    GREY_Z,
    Claim,
    Decision,
    PairCache,
    adapter_verdict,
    copy_sources,
    decide,
    declared_ancestry,
    describe,
    exit_code,
    judge_claim,
    license_chain,
    license_conflicts,
)
from lineage_index.indexer.read.ranges import LocalReader
from lineage_index.indexer.read.sources import (
    dir_sha,
    list_files,
    local_record,
    model_dirs_below,
    open_reader,
)
from lineage_index.indexer.recover.candidates import DEFAULT_K, build_index
from lineage_index.indexer.recover.crossdepth import DepthClaim, block_signature, cross_depth_claims
from lineage_index.indexer.recover.declared import declared_parents
from lineage_index.indexer.recover.verify import RELATED_Z, MergeFit, PairFeatures, matrix_cosines
from lineage_index.indexer.sketch.canon import describe_family
from lineage_index.indexer.sketch.sample import sketch_model
from lineage_index.indexer.sketch.store import SketchStore, load_sketch
from lineage_index.indexer.sketch.window import is_windowed, window_distance
from lineage_index.records import Failure, ModelRecord, Sketch

__all__ = ["Background", "CandidateScore", "CheckResult", "check", "last_result", "resolve_target"]

VERDICTS = ("copy", "quantized", "adapter", "finetune", "merge", "prune",
            "family_unresolved", "no_relative", "insufficient")
MIN_MATRICES = 2  # fewer aligned 2-D matrices than this: insufficient evidence
# A column-windowed target (GPTQ, AWQ: sketch.window) is compared with at most this many stored
# models of its family for its nearest (its embedding counts the columns not read as zeros).
WINDOW_SCAN = 20_000
PROFILE_CANDIDATES = 3  # per-matrix similarities kept for this many best candidates (report, explain)
CHECKS_DIR = "_checks"


@dataclass(frozen=True)
class CandidateScore:
    """One stored model compared with the target."""

    model_id: str
    relation: str  # the target's relation to it, or "related" / "unrelated" / "child"
    probability: float  # that this candidate is the target's parent (merge: one of them)
    p_related: float  # that it shares the target's weights at all
    cos_median: float
    z: float  # calibrated against the family background
    dist: float
    n_matrices: int
    evidence: str
    passes_gate: bool = False  # compare says related and z >= RELATED_Z
    features: dict[str, float] = field(default_factory=dict)  # features vectors, raw


@dataclass(frozen=True)
class LayerPoint:
    """One aligned matrix of a target-candidate pair (the report's per-layer plot)."""

    key: str
    layer: int | None
    role: str
    cos: float
    z: float  # against the theoretical null of this matrix, cos * sqrt(elements)


@dataclass
class CheckResult:
    """Verdict on one target; ``exit_code`` is what the CLI returns."""

    target: str
    family: str
    verdict: str
    probability: float
    parents: list[str]
    coefficients: list[float]
    candidates: list[CandidateScore]
    evidence: list[str]
    background: Background
    claim: Claim
    exit_code: int
    license_chain: list[tuple[str, str | None]] = field(default_factory=list)
    policy_failures: list[str] = field(default_factory=list)
    bytes_read: int = 0
    requests: int = 0
    seconds: float = 0.0
    added: bool = False
    merge: dict[str, Any] | None = None  # method, base, parents, weights, residual ratio
    verdict_features: dict[str, float] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)  # provenance of the fitted models
    layers: dict[str, list[LayerPoint]] = field(default_factory=dict)  # best candidates, per matrix
    location: str = ""  # what was read: directory or Hub endpoint
    family_desc: str = ""
    graph: str = ""  # what --add did to the graph
    lineage: list[tuple[str, str, str]] = field(default_factory=list)  # (child, parent, relation) around it
    license: str | None = None  # the target's declared licence
    node_licenses: dict[str, str | None] = field(default_factory=dict)  # of the lineage's models, from cards
    quant: str | None = None  # the target's quantisation scheme (gguf-Q4_K, fp8-e4m3, mlx-4bit, bnb-int8, ...)
    weight_format: str = ""  # safetensors, gguf, pickle

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


# --- target -> record + sketch ------------------------------------------------------------


def _file_record(path: Path, model_id: str | None) -> ModelRecord:
    """A record of a single safetensors file or sharded index, with its folder's card/config."""
    root = path.parent
    listing = list_files(root)
    wanted = {path.name, "config.json", "README.md", "adapter_config.json"}
    if path.name.endswith(".index.json"):
        shards = json.loads(path.read_text()).get("weight_map", {}) if path.stat().st_size < 64 << 20 else {}
        wanted |= set(shards.values()) if isinstance(shards, dict) else set()
    listing = [e for e in listing if e[0] in wanted]
    mid = model_id or f"{root.parent.name}/{root.name}"
    rec = local_record(mid, "dir", root, listing, sha=dir_sha(listing))
    if isinstance(rec, Failure):
        raise HeaderError(rec.message)
    return rec


def resolve_target(target: str, *, model_id: str | None = None, endpoint: str | None = None,
                   token: str | bool | None = None) -> ModelRecord:
    """ModelRecord of a directory, a .safetensors file, a sharded index or a Hub id."""
    path = Path(target)
    if path.is_file():
        if not (path.name.endswith(".safetensors") or path.name.endswith(".safetensors.index.json")):
            raise UsageError(f"{target}: not a .safetensors file or a sharded index")
        return _file_record(path, model_id)
    if path.is_dir():
        below = model_dirs_below(path)
        if below:
            raise UsageError(f"{target} holds no model itself but {len(below)} model director"
                             f"{'y' if len(below) == 1 else 'ies'} below (e.g. {below[0]}); pass one")
        listing = list_files(path)
        mid = model_id or f"{path.resolve().parent.name}/{path.resolve().name}"
        rec = local_record(mid, "dir", path, listing, sha=dir_sha(listing))
        if isinstance(rec, Failure):
            raise HeaderError(rec.message)
        return rec
    if target.count("/") != 1 or target.startswith((".", "/")) or path.suffix == ".safetensors":
        raise UsageError(f"{target}: no such file or directory, and not a Hub id (org/name)")
    from lineage_index.indexer.read.hub import HubSource

    rec = next(iter(HubSource(models=[target], endpoint=endpoint, token=token, max_workers=1).iter_records()))
    if isinstance(rec, Failure):
        raise ModelReadError(f"{rec.model_id}: {rec.kind}: {rec.message}")
    return rec


def sketch_target(rec: ModelRecord, token: str | bool | None = None) -> Sketch:
    """The target's sketch by the ingest plan (raises ModelReadError when unreadable)."""
    if not rec.tensors:
        raise ModelReadError(rec.weight_error or f"{rec.id}: no weights to check ({rec.weight_format})")
    reader = LocalReader(rec.location) if rec.source != "hub" else open_reader(rec, token=token)
    try:
        return sketch_model(rec, reader)
    finally:
        reader.close()


# --- the store ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stored:
    path: Path
    model_id: str
    family: str
    kind: str
    embedding: np.ndarray


def stored_family(store: SketchStore, family: str | None, exclude: str,
                  keep: Callable[[dict[str, Any]], bool] | None = None) -> list[_Stored]:
    """Latest stored sketch per model of ``family`` (or whose meta ``keep`` accepts), meta and
    embedding only, samples lazy."""
    best: dict[str, tuple[int, _Stored]] = {}
    for path in store:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            wanted = keep(meta) if keep is not None else meta["family"] == family
            if not wanted or meta["model_id"] == exclude:
                continue
            entry = _Stored(path, meta["model_id"], meta["family"], meta["kind"],
                            data["embedding"].astype(np.float32))
        mtime = path.stat().st_mtime_ns
        if entry.model_id not in best or mtime > best[entry.model_id][0]:
            best[entry.model_id] = (mtime, entry)
    return [e for _, e in sorted(best.values(), key=lambda x: x[1].model_id)]


class _Loader:
    """Full sketches loaded on demand, once."""

    def __init__(self, entries: list[_Stored]) -> None:
        self.by_id = {e.model_id: e for e in entries}
        self.cache: dict[str, Sketch] = {}

    def __call__(self, model_id: str) -> Sketch:
        if model_id not in self.cache:
            self.cache[model_id] = load_sketch(self.by_id[model_id].path)
        return self.cache[model_id]


class _StoredRecords(Mapping[str, ModelRecord]):
    """The store's records, read one by one when asked (an index can hold millions)."""

    def __init__(self, store: SketchStore, extra: dict[str, ModelRecord]) -> None:
        self.store, self.extra, self.cache = store, extra, {}

    def __getitem__(self, model_id: str) -> ModelRecord:
        if model_id in self.extra:
            return self.extra[model_id]
        if model_id not in self.cache:
            self.cache[model_id] = self.store.record(model_id)
        rec = self.cache[model_id]
        if rec is None:
            raise KeyError(model_id)
        return rec

    def __iter__(self) -> Iterator[str]:
        return iter(self.store.records() | self.extra)

    def __len__(self) -> int:
        return len(self.store.records() | self.extra)


# --- check --------------------------------------------------------------------------------


def check(target: str, store: SketchStore, *, model_id: str | None = None, k: int = DEFAULT_K,
          records: dict[str, ModelRecord] | None = None, fail_on_license: str | None = None,
          fail_on_undeclared: bool = False, fail_on_conflict: bool = False, add: bool = False,
          endpoint: str | None = None,
          token: str | bool | None = None, calibration: Calibration | None = None,
          save: bool = True, conn=None) -> CheckResult:
    """Sketch ``target``, verify it against the store and return one calibrated verdict.

    ``records`` (default: the records kept in the store by ingest) supply licences, upload
    times and declarations of stored models; without them those signals are simply absent.
    ``save`` keeps the result for ``explain``; ``add`` puts the target's sketch and record
    into the store and, given a Neo4j connection ``conn``, its node and edges into the graph
    (``graph.add_to_graph``). Raises the ``ModelReadError`` / ``UsageError`` family when the target
    cannot be read.
    """
    t0 = time.perf_counter()
    cal = calibration or load_calibration()
    rec = resolve_target(target, model_id=model_id, endpoint=endpoint, token=token)
    sk = sketch_target(rec, token)
    recs: Mapping[str, ModelRecord] = _StoredRecords(store, {rec.id: rec}) if records is None \
        else {**records, rec.id: rec}
    declared = declared_parents(rec)
    block = block_signature(sk.family_desc)
    # one pass over the store: the target's family, and its block design at other depths
    scanned = [] if sk.kind == "adapter" else stored_family(
        store, None, rec.id, keep=lambda meta: meta["family"] == sk.family
        or (meta["kind"] == "full" and block_signature(meta["family_desc"]) == block))
    entries = [e for e in scanned if e.family == sk.family]
    load = _Loader(entries)

    def find(m: str) -> Sketch | None:
        return load.cache.get(m) or (load(m) if m in load.by_id else store.latest(m))

    cmp = PairCache()
    bg, _ = background([e.model_id for e in entries], load)
    evidence = [f"architecture: {describe_family(sk.family_desc)}; {len(entries)} stored model"
                f"{'' if len(entries) == 1 else 's'} of it",
                f"background: {bg.n_pairs} unrelated pairs, cos {bg.cos_mean:+.4f} ± {bg.cos_sd:.4f} ({bg.source})"]
    feats: dict[str, PairFeatures] = {}
    zs: dict[str, float] = {}
    if sk.kind == "adapter":
        d = adapter_verdict(rec, find)
    elif entries:
        if is_windowed(sk):  # a column window (GPTQ, AWQ): nearest on the columns it read
            cand_ids = [m for _, m in sorted((window_distance(sk, load(e.model_id)), e.model_id)
                                             for e in entries[:WINDOW_SCAN])[:k]]
        else:
            q = np.ascontiguousarray(sk.embedding[None, :].astype(np.float32))
            index = build_index(np.ascontiguousarray(np.stack([e.embedding for e in entries])))
            _, idx = index.search(q, min(k, len(entries)))
            cand_ids = [entries[int(i)].model_id for i in idx[0] if i >= 0]
        cand_ids += [c for c in declared if c in load.by_id and c not in cand_ids]
        feats = {c: cmp(sk, load(c)) for c in cand_ids}
        zs = {c: calibrated_z(f, bg) for c, f in feats.items()}
        # nearest first; among bit-identical copies (equal distance) the oldest upload first
        related = sorted((c for c, f in feats.items() if f.related and zs[c] >= RELATED_Z),
                         key=lambda c: (feats[c].dist, (recs[c].created_at or "~") if c in recs else "~", c))
        d = decide(sk, related, feats, load, recs, declared, cmp)
        n_mat = max((f.n_matrices for f in feats.values()), default=0)
        best = max(zs.values(), default=0.0)
        if d.verdict == "no_relative" and (n_mat < MIN_MATRICES or best >= GREY_Z):
            d.verdict = "insufficient"
            d.evidence.append("too few aligned matrices" if n_mat < MIN_MATRICES else
                              f"the best candidate (z {best:.1f}) lies between the background and z {RELATED_Z:g}")
        elif d.verdict == "no_relative":
            d.evidence.append(f"no stored model passes z >= {RELATED_Z:g} (best z {best:.1f})")
    else:
        d = Decision("no_relative", [], evidence=["no stored sketch of this architecture"])
    depth = None
    if sk.kind == "full" and d.verdict in ("no_relative", "insufficient") and sk.layer_prints:
        depth = _cross_depth(sk, [e for e in scanned if e.family != sk.family], recs)
        if depth is not None:
            d = Decision(depth.relation, list(depth.parents), evidence=[depth.evidence()],
                         relation_of={p: depth.relation for p in depth.parents})
    evidence += d.evidence
    scores, vfeat = _score(sk, d, feats, zs, bg, cal, recs, load, cmp)
    prob = verdict_probability(cal, d.verdict, vfeat, [c.p_related for c in scores])
    if depth is not None:  # the fitted verdict model never saw a change of depth: the layer match's own figure
        prob = 0.9 if depth.share >= 0.9 else 0.75
        evidence.append("probability from the layer match (the calibrated verdict model covers one depth)")
    claim = judge_claim(sk, declared, d.verdict, d.parents, find, lambda f: calibrated_z(f, bg))
    chain = license_chain(d.parents, recs)
    code, failures = exit_code(d.verdict, d.parents, claim, chain, fail_on_license, fail_on_undeclared,
                               license_conflicts(rec, d.parents, recs) if fail_on_conflict else [])
    layers = {c.model_id: _profile(sk, load(c.model_id)) for c in scores[:PROFILE_CANDIDATES]}
    lineage = [(rec.id, p, d.verdict) for p in d.parents] + declared_ancestry(d.parents, recs)
    lineage += [(c, rec.id, "child") for c in sorted(d.children)]
    if claim.status == "contradicted":
        lineage += [(rec.id, b, "declared, contradicted") for b in declared if b not in d.parents]
    node_lic = {m: (recs[m].license_name or recs[m].license) for e in lineage for m in e[:2] if m in recs}
    if add:
        store.put(sk)
        store.put_record(rec)
    result = CheckResult(
        rec.id, sk.family, d.verdict, round(prob, 4), d.parents, [round(c, 4) for c in d.coefficients], scores,
        evidence, bg, claim, code, chain, failures, sk.bytes_read, sk.requests, round(time.perf_counter() - t0, 3),
        add, _merge_dict(d.merge, sk, find), {k: round(v, 4) for k, v in vfeat.items()}, _provenance(cal), layers,
        rec.location, sk.family_desc, lineage=lineage, license=rec.license_name or rec.license,
        node_licenses=node_lic, quant=sk.quant, weight_format=rec.weight_format)
    if add and conn is not None:
        from lineage_index.indexer.check.graph import add_to_graph

        near = {m: s for m in [*d.parents, *declared] if (s := find(m)) is not None}
        edges = add_to_graph(conn, rec, sk, result, near)
        result.graph = f"wrote {rec.id} and {len(edges)} DERIVED_FROM edge(s) to {conn.describe()}"
    elif add:
        result.graph = "no Neo4j reachable: the graph was not written (the store was)"
    if save:
        save_result(store, target, result, cal)
    return result


def _cross_depth(sk: Sketch, mates: list[_Stored], recs: Mapping[str, ModelRecord]) -> DepthClaim | None:
    """The target's sources at another depth (``crossdepth``) among ``mates``: stored models of
    its block design in other families."""
    if not mates:
        return None
    load = _Loader(mates)
    pool = [sk] + [load(e.model_id) for e in mates]
    known = {m: recs[m] for m in [e.model_id for e in mates] + [sk.model_id] if m in recs}
    claims = cross_depth_claims(pool, [sk.model_id], known)
    return claims[0] if claims else None


def _score(sk: Sketch, d: Decision, feats: dict[str, PairFeatures], zs: dict[str, float], bg: Background,
           cal: Calibration, recs: Mapping[str, ModelRecord], load: Callable[[str], Sketch],
           cmp: PairCache) -> tuple[list[CandidateScore], dict[str, float]]:
    """Per-candidate probabilities from the fitted models, and the verdict's features."""
    me = sk.model_id
    gate = {c: f.related and zs[c] >= RELATED_Z for c, f in feats.items()}
    related = [c for c in feats if gate[c]]
    reupload = {c for c in related if copy_sources(c, related, load, recs, cmp)}
    # the nearest original that is not the target's child: where a parent is expected
    ahead = [feats[c].dist for c in related if c not in d.children and c not in reupload]
    nearest = min(ahead) if ahead else None
    x = {c: {**related_vector(f, bg), **parent_vector(
        f, c, me, nearest_dist=nearest, merge=d.merge, child_of_target=c in d.merge_children, recs=recs,
        reupload=c in reupload)} for c, f in feats.items()}
    p_rel, p_par, vfeat = score_verdict(cal, x, gate, d.verdict, d.parents, d.merge.base if d.merge else None)
    scores = [CandidateScore(c, d.relation_of.get(c, "unrelated"), round(p_par[c], 4), round(p_rel[c], 4),
                             round(f.cos_median, 5), round(zs[c], 2), round(f.dist, 5), f.n_matrices,
                             describe(f, me), gate[c], {k: round(v, 4) for k, v in x[c].items()})
              for c, f in sorted(feats.items(), key=lambda t: (-p_par[t[0]], t[1].dist, t[0]))]
    return scores, vfeat


def _merge_dict(fit: MergeFit | None, sk: Sketch, find: Callable[[str], Sketch | None]) -> dict[str, Any] | None:
    """The merge fit, with mergekit's method (TIES or DARE for a sparse merge) and dtype."""
    if fit is None:
        return None
    out: dict[str, Any] = {"method": fit.method, "base": fit.base, "parents": list(fit.parents),
                           "weights": [round(w, 4) for w in fit.weights], "residual_ratio": round(fit.ratio, 4),
                           "dtype": dtype_name(sk.dtypes)}
    base = find(fit.base) if fit.base else None
    parents = [p for p in (find(m) for m in fit.parents) if p is not None]
    if fit.method == "sparse" and base is not None and len(parents) == len(fit.parents):
        out["mergekit_method"], out["density"], out["trim_ratio"], out["kept_share"] = sparse_method(sk, base, parents)
    return out


def _provenance(cal: Calibration) -> dict[str, Any]:
    keep = ("created", "zoos", "n_pairs", "n_verdicts", "command")
    return {k: cal.provenance[k] for k in keep if k in cal.provenance}


def _profile(sk: Sketch, other: Sketch) -> list[LayerPoint]:
    return [LayerPoint(key, layer, role, round(c, 6), round(c * float(np.sqrt(n)), 2))
            for key, layer, role, c, n in matrix_cosines(sk, other)]


# --- the last result per target, for ``explain`` ---------------------------------------------


def _keys(target: str, model_id: str | None = None) -> list[str]:
    path = Path(target)
    keys = [str(path.resolve()) if path.exists() else target]
    if model_id and model_id not in keys:
        keys.append(model_id)
    return keys


def _check_path(store: SketchStore, key: str) -> Path:
    return store.root / CHECKS_DIR / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")


def save_result(store: SketchStore, target: str, result: CheckResult, cal: Calibration) -> None:
    """Keep ``result`` with the raw numbers behind it, keyed by the target as given and by model id."""
    terms = {c.model_id: {"related": cal.related.contributions(c.features), "parent": cal.parent.contributions(c.features)}
             for c in result.candidates}
    record = {"target": target, "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
              "result": result.to_dict(),
              "calibration": {"related": cal.related.as_dict(), "parent": cal.parent.as_dict(),
                              "verdict": cal.verdict.as_dict(), "provenance": cal.provenance},
              "terms": terms, "verdict_terms": cal.verdict.contributions(result.verdict_features),
              "verdict_logit": round(cal.verdict.logit(result.verdict_features), 4)}
    text = json.dumps(record, indent=1, default=str)
    for key in _keys(target, result.target):
        path = _check_path(store, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)


def last_result(store: SketchStore, target: str) -> dict[str, Any]:
    """The saved record of the last check of ``target`` (path as given, or model id)."""
    for key in _keys(target):
        path = _check_path(store, key)
        if path.is_file():
            return json.loads(path.read_text())
    raise UsageError(f"no check has been run for {target!r} with the store {store.root}; "
                     f"run `lineage-index check {target}` first")
