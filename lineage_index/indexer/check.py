"""Check one model against the index: ``check(target, store) -> CheckResult`` (issue 10).

TARGET is a local model directory, a single ``.safetensors`` file, a sharded index
(``*.safetensors.index.json``) or a Hub id. It is sketched exactly as ingest sketches
(``sketch_model`` over the same range-read plan), candidates come from FAISS over the stored
sketches of the same family (plus the declared bases that are stored), each candidate is
verified with ``verify.compare``, and one verdict is chosen from ``VERDICTS``.

Calibration: the centred cosine of every candidate is turned into a z-score against the
background of the same family in the store (pairs of stored sketches that ``compare`` says
are unrelated), with the standard deviation never below the theoretical null 1/sqrt(n).
A candidate is related only when ``compare`` says so *and* its calibrated z passes
``verify.RELATED_Z``: the tool prefers 'unresolved' to a confident wrong answer. Missing
signals (no times, no records, base not stored) never count as evidence.

Direction reuses ``assemble`` (structural children first, merges by ``merge_fit``, then the
norm-growth / kurtosis / time / declared votes of ``direction_score``). No printing here.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lineage_index.errors import HeaderError, ModelReadError, UsageError
from lineage_index.indexer.candidates import DEFAULT_K, build_index
from lineage_index.indexer.check_verdict import (
    GREY_Z,
    Claim,
    adapter_verdict,
    decide,
    describe,
    exit_code,
    judge_claim,
    license_chain,
    p_related,
)
from lineage_index.indexer.pipeline import declared_parents
from lineage_index.indexer.reader import LocalReader
from lineage_index.indexer.sketch import sketch_model
from lineage_index.indexer.sources import dir_sha, list_files, local_record, open_reader
from lineage_index.indexer.store import SketchStore, load_sketch
from lineage_index.indexer.verify import RELATED_Z, PairFeatures, compare
from lineage_index.records import Failure, ModelRecord, Sketch

VERDICTS = ("copy", "quantized", "adapter", "finetune", "merge", "prune",
            "family_unresolved", "no_relative", "insufficient")
MIN_MATRICES = 2  # fewer aligned 2-D matrices than this: insufficient evidence
BACKGROUND_PAIRS = 24  # random stored pairs of the family tried for the null
MIN_BACKGROUND = 3  # fewer unrelated pairs than this: fall back to the theoretical null


@dataclass(frozen=True)
class Background:
    """Null distribution of cos_median among unrelated stored pairs of the target's family."""

    n_pairs: int
    cos_mean: float
    cos_sd: float
    source: str  # "store" | "theoretical"


@dataclass(frozen=True)
class CandidateScore:
    """One stored model compared with the target."""

    model_id: str
    relation: str  # the target's relation to it, or "related" / "unrelated" / "child"
    probability: float  # that this candidate is the target's parent (merge: one of them)
    cos_median: float
    z: float  # calibrated against the family background
    dist: float
    n_matrices: int
    evidence: str



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

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


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
        listing = list_files(path)
        mid = model_id or f"{path.resolve().parent.name}/{path.resolve().name}"
        rec = local_record(mid, "dir", path, listing, sha=dir_sha(listing))
        if isinstance(rec, Failure):
            raise HeaderError(rec.message)
        return rec
    if target.count("/") != 1 or target.startswith((".", "/")) or path.suffix == ".safetensors":
        raise UsageError(f"{target}: no such file or directory, and not a Hub id (org/name)")
    from lineage_index.indexer.sources_hub import HubSource

    rec = next(iter(HubSource(models=[target], endpoint=endpoint, token=token, max_workers=1).iter_records()))
    if isinstance(rec, Failure):
        raise ModelReadError(f"{rec.model_id}: {rec.kind}: {rec.message}")
    return rec


def sketch_target(rec: ModelRecord, token: str | bool | None = None) -> Sketch:
    """The target's sketch by the ingest plan (raises ModelReadError when unreadable)."""
    if not rec.tensors:
        raise ModelReadError(f"{rec.id}: no safetensors weights to check ({rec.weight_format})")
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


def stored_family(store: SketchStore, family: str, exclude: str) -> list[_Stored]:
    """Latest stored sketch per model of ``family`` (meta and embedding only, samples lazy)."""
    best: dict[str, tuple[int, _Stored]] = {}
    for path in store:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta["family"] != family or meta["model_id"] == exclude:
                continue
            entry = _Stored(path, meta["model_id"], family, meta["kind"], data["embedding"].astype(np.float32))
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


def background(entries: list[_Stored], load: _Loader, seed: int = 0) -> tuple[Background, list[float]]:
    """Null of cos_median from random stored pairs of the family that ``compare`` finds unrelated."""
    ids = [e.model_id for e in entries]
    rng = np.random.default_rng(seed)
    pairs: set[tuple[str, str]] = set()
    max_pairs = len(ids) * (len(ids) - 1) // 2
    while len(pairs) < min(BACKGROUND_PAIRS, max_pairs):
        i, j = sorted(rng.choice(len(ids), 2, replace=False).tolist())
        pairs.add((ids[i], ids[j]))
    cos = [f.cos_median for a, b in sorted(pairs) if not (f := compare(load(a), load(b))).related]
    if len(cos) >= MIN_BACKGROUND:
        return Background(len(cos), float(np.mean(cos)), float(np.std(cos, ddof=1)), "store"), cos
    return Background(len(cos), 0.0, 0.0, "theoretical"), cos


def calibrated_z(f: PairFeatures, bg: Background) -> float:
    """z of the pair's cos_median against the background (sd never below 1/sqrt(n))."""
    sd_theory = f.cos_median / f.z if f.z else 1.0
    return (f.cos_median - bg.cos_mean) / max(bg.cos_sd, abs(sd_theory), 1e-12)


def check(target: str, store: SketchStore, *, model_id: str | None = None, k: int = DEFAULT_K,
          records: dict[str, ModelRecord] | None = None, fail_on_license: str | None = None,
          fail_on_undeclared: bool = False, add: bool = False, endpoint: str | None = None,
          token: str | bool | None = None) -> CheckResult:
    """Sketch ``target``, verify it against the store and return one calibrated verdict.

    ``records`` (optional, e.g. from the directory the index was built from) supply licences
    and upload times of stored models; without them those signals are simply absent.
    Raises the ``ModelReadError`` / ``UsageError`` family when the target cannot be read.
    """
    t0 = time.perf_counter()
    rec = resolve_target(target, model_id=model_id, endpoint=endpoint, token=token)
    sk = sketch_target(rec, token)
    recs = dict(records or {})
    recs[rec.id] = rec
    declared = declared_parents(rec)
    entries = [] if sk.kind == "adapter" else stored_family(store, sk.family, rec.id)
    load = _Loader(entries)

    def find(m: str) -> Sketch | None:
        return load.cache.get(m) or (load(m) if m in load.by_id else store.latest(m))

    bg, _ = background(entries, load) if len(entries) >= 2 else (Background(0, 0.0, 0.0, "theoretical"), [])
    evidence: list[str] = [f"family {sk.family_desc[:80]} ({len(entries)} stored sketches)",
                           f"background: {bg.n_pairs} unrelated pairs, cos {bg.cos_mean:+.4f} ± {bg.cos_sd:.4f}"
                           f" ({bg.source})"]
    verdict, parents, coefs, prob = "no_relative", [], [], 0.0
    scores: list[CandidateScore] = []
    if sk.kind == "adapter":
        verdict, parents, prob, why = adapter_verdict(rec, find)
        evidence.append(why)
    elif entries:
        q = np.ascontiguousarray(sk.embedding[None, :].astype(np.float32))
        index = build_index(np.ascontiguousarray(np.stack([e.embedding for e in entries])))
        _, idx = index.search(q, min(k, len(entries)))
        cand_ids = [entries[int(i)].model_id for i in idx[0] if i >= 0]
        cand_ids += [d for d in declared if d in load.by_id and d not in cand_ids]
        feats = {c: compare(sk, load(c)) for c in cand_ids}
        zs = {c: calibrated_z(f, bg) for c, f in feats.items()}
        related = sorted((c for c, f in feats.items() if f.related and zs[c] >= RELATED_Z),
                         key=lambda c: (feats[c].dist, c))
        verdict, parents, coefs, prob, why, rel_of, p_of = decide(sk, related, feats, zs, load, recs,
                                                                    declared, records is not None)
        evidence += why
        for c in sorted(cand_ids, key=lambda c: (feats[c].dist, c)):
            f = feats[c]
            scores.append(CandidateScore(c, rel_of.get(c, "unrelated"), round(p_of.get(c, 0.0), 4),
                                         round(f.cos_median, 5), round(zs[c], 2), round(f.dist, 5),
                                         f.n_matrices, describe(f, rec.id)))
        n_mat = max((f.n_matrices for f in feats.values()), default=0)
        if verdict == "no_relative" and (n_mat < MIN_MATRICES or max(zs.values(), default=0.0) >= GREY_Z):
            verdict, prob = "insufficient", 0.5
            evidence.append("too few aligned matrices" if n_mat < MIN_MATRICES else
                            "the best candidate lies between the background and the related threshold")
        elif verdict == "no_relative":
            best = max(zs.values(), default=0.0)
            prob = round(1.0 - p_related(best), 4)
            evidence.append(f"no stored model passes z >= {RELATED_Z:g} (best z {best:.1f})")
    else:
        evidence.append("no stored sketch of this architecture")
    claim = judge_claim(sk, declared, verdict, parents, find, lambda f: calibrated_z(f, bg))
    chain = license_chain(parents, recs)
    code, failures = exit_code(verdict, parents, claim, chain, fail_on_license, fail_on_undeclared)
    if add:
        store.put(sk)
    return CheckResult(rec.id, sk.family, verdict, round(prob, 4), parents, [round(c, 4) for c in coefs],
                       scores, evidence, bg, claim, code, chain, failures, sk.bytes_read, sk.requests,
                       round(time.perf_counter() - t0, 3), add)


