"""The opt-in behaviour tier of ``ingest`` (``--behaviour``, issue 9): behaviour on top of weights.

Runs after weight recovery, on the models whose full weights are at hand locally (a directory
source or the Hugging Face cache: nothing is downloaded here) and that the behaviour library can
load (safetensors + a ``lineage_behaviour`` config, or a causal LM in Hugging Face layout; at most
``max_model_mb``). It returns the weight tier's edges, some of them annotated, plus new edges; it
writes nothing itself. Causal LMs get (a) only, as ``determine`` (``behaviour.lm``: LM loss on
text sampled from the parent, threshold calibrated per parent on auxiliary LMs): closeness needs
a classifier's decision boundaries.

(a) Every asserted weight edge (recovered or both, not contradicted) between two loadable models
    gets ``BehaviourEvidence``: the closeness of the child with the parent as source (s, Mr, d̄,
    N, the threshold calibrated for the parent and its verdict; the indirect mode when the child
    has another label space) and, where the two weight sets align, ``determine``'s loss and error
    barrier with its calibrated threshold and verdict.

(b) Candidate distillations: pairs the weights call unrelated (different weight components) whose
    architecture, input and label space match (same registry architecture, the same synthetic
    task, or the same user probe data with the same number of classes). A distilled student
    starts from fresh weights, so only a model without a weight parent can be one: each such
    model (at most ``max_sources`` per group, the oldest) is taken as source and every model of
    the other weight components of its group is scored against it (one boundary walk each);
    per component the model it tracks best is the teacher candidate (the shallower one in the
    weight tree when two are within ``SOFT_TIE`` / ``REFINE_TIE``). That candidate is then calibrated as a
    source and scored the other way. The pair is a lineage only when the closeness verdict is
    "lineage" in BOTH directions (each against the threshold calibrated for its own source), so
    one calibration that lets an independent model through is not enough, AND the soft-label test
    (``closeness.soft_agreement``: what a student copies from its teacher's logits) passes in
    both: independently trained models of one task share boundaries more than the tool's own
    re-trainings do, so boundaries alone claimed distillations between independent models
    (held-out HF zoo seed 7: 6 of 8 behaviour-only edges), while their soft labels stay apart. A
    label space of two classes has no soft test and gets no behaviour-only edge. Within a weight
    component the teacher candidate is the model whose logits the student copies most closely
    (the highest soft agreement; a fine-tuned teacher beats its own parent there while their
    boundaries tie). Each student keeps the teacher with the highest smaller margin, each
    direction's margin past the test that decides it (the larger of s − threshold and soft
    agreement − its threshold).

    Direction (which model is the teacher, i.e. the parent): (0) a model with a weight parent is
    the teacher (a fresh student has none); (1) a card that declares the other
    model as its base model; (2) upload time, when both are known and at least ``TIME_MIN_DAYS``
    apart: a teacher exists before its student; (3) which model's boundary the other tracks: the
    teacher is the model that scores the larger margin s − threshold on the other's profile (a
    student learns only part of its teacher's boundary: the points distinctive of the student
    are its teacher's too, while some of the teacher's distinctive points the student never
    learnt; on every distilled pair of the classifier zoo the teacher scores higher on the
    student's profile than the student on the teacher's); (4) on a tie, the higher accuracy on
    labelled probes. The reason is written into the edge's evidence.

Calibration follows the library (thresholds per source from auxiliary models the tool makes):
per source ``n_aux`` cheap derivations (``models.make_aux``), and ``n_aux`` independent
re-trainings shared by every source of one calibration group (architecture, its keywords and
task), made once. Results are cached on disk per (source weights, suspect weights, settings), so a
second ``--behaviour`` run over unchanged models measures nothing again.

Why this module is long: it is the tier's whole procedure (loading, calibration, measuring,
the distillation search and its direction rules) over the private ``_Model`` / ``_Measure``
records; the methods themselves live in ``closeness`` and ``determine``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lineage_index.behaviour import models as M
from lineage_index.behaviour.closeness import N_AUX, ClosenessResult, Threshold, closeness, predict
from lineage_index.behaviour.determine import DEFAULT_PROBES, calibrate, determine
from lineage_index.behaviour.hf import hf_kind, is_timm_config
from lineage_index.behaviour.probes import ProbeSet, synthetic_probes
from lineage_index.config import stderr_console
from lineage_index.errors import LineageIndexError, UsageError
from lineage_index.records import BehaviourEvidence, Edge, ModelRecord

TIER_VERSION = 2  # 2: closeness results carry the soft-label test
LOCAL_SOURCES = ("dir", "hf-cache")
TIME_MIN_DAYS = 1.0  # upload times closer than this say nothing about who distilled whom
REFINE_TIE = 0.02  # closeness difference under which the shallower teacher candidate is preferred
# soft-agreement difference that is measurement noise (an fp16 or int8 copy and its original differ
# by under 1e-3 on the HF zoo; a teacher and its own parent by 0.008 and more)
SOFT_TIE = 0.002
ASSERTED = ("recovered", "both")


@dataclass(frozen=True)
class BehaviourOptions:
    """Settings of the tier (every one has a default; ``ingest --behaviour`` uses them)."""

    probe: Path | None = None  # probe data for models without a synthetic task (file or image folder)
    n_aux: int = N_AUX  # auxiliary models per source (lineage) and per calibration group (independent)
    aux_steps: int | None = None  # training steps of each independent auxiliary model (None: the library's)
    k: int = 100  # probe points kept after selection
    pool: int = 512  # probe pool drawn from a synthetic task
    max_model_mb: float = 512.0  # larger models are skipped (their full weights would be loaded)
    max_sources: int = 32  # component representatives compared per group for distillations
    cache_dir: Path | None = None  # per-pair results; None: no cache
    seed: int = 0
    threads: int = 1  # torch threads while the tier runs: small models gain nothing from more, and
    # on a shared CPU several threads collapse (as in the zoo build); 0 leaves torch's setting

    def fingerprint(self) -> str:
        return f"{TIER_VERSION}|{self.n_aux}|{self.aux_steps}|{self.k}|{self.pool}|{self.seed}|{self.probe}"


@dataclass
class TierResult:
    """The edges after the tier and what it did."""

    edges: list[Edge]
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # model id -> why it was not measured
    measured_edges: int = 0  # weight edges that got behaviour evidence
    candidate_pairs: int = 0  # directed (source, suspect) candidate-distillation measurements
    distill_edges: int = 0
    pair_seconds: list[float] = field(default_factory=list)  # per measured pair, calibration excluded
    calibration_seconds: float = 0.0
    seconds: float = 0.0
    cached: int = 0  # pair results read from the cache
    candidates: list[tuple[str, str, float, float, str]] = field(default_factory=list)  # (source, suspect,
    # s, threshold, verdict) of every candidate-distillation measurement


@dataclass
class _Model:
    id: str
    clf: M.Classifier
    sha: str | None
    created: datetime | None
    declared: tuple[str, ...]
    probes: ProbeSet  # closeness pool (labels when known)
    data_key: str  # the task (or probe data) the model is measured on
    cal_key: str  # calibration group: architecture + keywords + data

    @property
    def group(self) -> tuple[str, str, int]:
        return self.clf.arch, self.data_key, self.clf.classes


@dataclass
class _LM:
    """A causal LM (Hugging Face layout) whose weight edges get ``determine`` (closeness needs labels)."""

    id: str
    lm: Any  # behaviour.lm.CausalLM
    sha: str | None


# --- loading ---------------------------------------------------------------------------------


def _created(rec: ModelRecord) -> datetime | None:
    try:
        return datetime.fromisoformat(rec.created_at.replace("Z", "+00:00")) if rec.created_at else None
    except ValueError:
        return None


def _user_probes(path: Path, clf: M.Classifier) -> ProbeSet:
    """A user's probe data for ``clf``: an image folder, a text file (text models) or an array file."""
    from lineage_index.behaviour import probes as P

    if path.is_dir():
        shape = clf.input_shape or (1, 8, 8)
        return P.load_image_folder(path, shape[0], shape[-1], clf.meta.get("input_norm"))
    if clf.kind == "text":
        return P.load_text_probes(path, P.text_tokenizer(clf.meta.get("dir")))
    return P.load_probes(path, clf.input_shape)


def _is_causal_lm(rec: ModelRecord) -> bool:
    archs = (rec.config or {}).get("architectures") or []
    return M.CONFIG_KEY not in (rec.config or {}) and isinstance(archs, list) and any(
        str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in archs)


def _check_local(rec: ModelRecord, options: BehaviourOptions) -> None:
    if rec.source not in LOCAL_SOURCES or not rec.location or not Path(rec.location).is_dir():
        raise UsageError("full weights not at hand locally (the tier never downloads)")
    if rec.is_adapter or not rec.tensors:
        raise UsageError("no full safetensors weights (an adapter or no weights)")
    size_mb = sum(t.end - t.start for t in rec.tensors) / 2**20
    if size_mb > options.max_model_mb:
        raise UsageError(f"{size_mb:.0f} MB of weights exceeds max_model_mb={options.max_model_mb:g}")


def _load_lm(rec: ModelRecord, options: BehaviourOptions) -> _LM:
    from lineage_index.behaviour.lm import load_lm

    _check_local(rec, options)
    return _LM(rec.id, load_lm(rec.location, name=rec.id), rec.sha)


def _load(rec: ModelRecord, options: BehaviourOptions) -> _Model:
    """The record's classifier with its probe pool; raises LineageIndexError (or UsageError) to skip."""
    _check_local(rec, options)
    if (M.CONFIG_KEY not in (rec.config or {}) and hf_kind(rec.config) not in ("image", "text")
            and not is_timm_config(rec.config)):
        raise UsageError(f"config.json has no '{M.CONFIG_KEY}' section and names no Hugging Face classifier "
                         "or causal LM")
    clf = M.load(rec.location, name=rec.id)
    if clf.task is not None:
        probes = synthetic_probes(clf.task, options.pool, seed=12_345 + options.seed)
        data_key = "task:" + json.dumps(clf.task.to_dict(), sort_keys=True)
    elif options.probe is not None:
        probes = _user_probes(Path(options.probe), clf)
        data_key = f"probe:{Path(options.probe).resolve()}"
    else:
        raise UsageError("no synthetic task in its config and no probe data given")
    cal_key = json.dumps([clf.arch, clf.arch_kwargs, data_key], sort_keys=True, default=str)
    return _Model(rec.id, clf, rec.sha, _created(rec), tuple(rec.base_models), probes, data_key, cal_key)


# --- calibration (aux models made once) ------------------------------------------------------


class _Calibration:
    """Auxiliary models per source and per calibration group, and determine's thresholds."""

    def __init__(self, options: BehaviourOptions) -> None:
        self.options = options
        self._ind: dict[str, list[M.Classifier]] = {}
        self._lin: dict[str, list[M.Classifier]] = {}
        self._det: dict[str, Threshold | None] = {}
        self.seconds = 0.0

    def _data(self, m: _Model) -> ProbeSet:
        return M.aux_data(m.clf, m.probes)

    def independents(self, m: _Model) -> list[M.Classifier]:
        if m.cal_key not in self._ind:
            t0 = time.perf_counter()
            _, self._ind[m.cal_key] = M.make_aux(m.clf, self._data(m), n_lineage=0, n_independent=self.options.n_aux,
                                                 seed=self.options.seed, steps=self.options.aux_steps)
            self.seconds += time.perf_counter() - t0
        return self._ind[m.cal_key]

    def lineage(self, m: _Model) -> list[M.Classifier]:
        if m.id not in self._lin:
            t0 = time.perf_counter()
            self._lin[m.id], _ = M.make_aux(m.clf, self._data(m), n_lineage=self.options.n_aux, n_independent=0,
                                            seed=self.options.seed)
            self.seconds += time.perf_counter() - t0
        return self._lin[m.id]

    def det_probes(self, m: _Model) -> ProbeSet:
        if m.clf.task is not None:
            return synthetic_probes(m.clf.task, DEFAULT_PROBES.get(m.clf.arch, 1000), seed=4242 + self.options.seed)
        return m.probes

    def det_threshold(self, m: _Model) -> Threshold | None:
        if m.id not in self._det:
            lin, ind = self.lineage(m), self.independents(m)
            t0 = time.perf_counter()
            probes = self.det_probes(m)
            if probes.y is None:  # determine labels unlabelled probes with A's predictions
                with torch.no_grad():
                    probes = ProbeSet(probes.x, m.clf.module(probes.x).argmax(1), probes.origin)
            try:  # two of each, as the library's own determine calibration
                self._det[m.id] = calibrate(m.clf, probes, derived=lin[:2], independent=ind[:2])
            except (LineageIndexError, ValueError):
                self._det[m.id] = None
            self.seconds += time.perf_counter() - t0
        return self._det[m.id]


# --- measurements (cached per pair) -------------------------------------------------------------


class _Measure:
    def __init__(self, options: BehaviourOptions, cal: _Calibration, result: TierResult) -> None:
        self.options, self.cal, self.result = options, cal, result
        self.dir = Path(options.cache_dir) / "behaviour-tier" if options.cache_dir else None
        self.memo: dict[tuple[str, str, str], dict[str, Any] | None] = {}
        self._calibrated: set[str] = set()
        self._lm_cal: dict[str, tuple[torch.Tensor, Threshold]] = {}
        self._profiles = Path(options.cache_dir) / "closeness-profiles" if options.cache_dir else None
        if self._profiles is None:  # one run's source profiles, computed once per source
            import tempfile

            self._tmp = tempfile.TemporaryDirectory(prefix="lineage-behaviour-")
            self._profiles = Path(self._tmp.name)

    def _cached(self, kind: str, a: _Model, b: _Model, compute: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
        key = (kind, a.id, b.id)
        if key in self.memo:
            return self.memo[key]
        path = None
        if self.dir is not None and a.sha and b.sha:
            digest = hashlib.sha256(f"{kind}|{a.id}|{a.sha}|{b.id}|{b.sha}|{self.options.fingerprint()}".encode())
            path = self.dir / f"{digest.hexdigest()[:32]}.json"
            if path.is_file():
                try:
                    self.memo[key] = json.loads(path.read_text())["value"]
                    self.result.cached += 1
                    return self.memo[key]
                except (OSError, ValueError, KeyError):
                    pass  # a damaged entry is measured again
        value = compute()
        self.memo[key] = value
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"value": value}))
        return value

    def closeness(self, source: _Model, suspect: _Model) -> dict[str, Any] | None:
        """Closeness of ``suspect`` with ``source`` as source, calibrated for ``source``."""

        def run() -> dict[str, Any] | None:
            lin, ind = self.cal.lineage(source), self.cal.independents(source)
            t0 = time.perf_counter()
            try:  # the library caches the source's selected profiles and threshold under _profiles
                r: ClosenessResult = closeness(source.clf, suspect.clf, source.probes, k=self.options.k,
                                               lineage_aux=lin, independent_aux=ind, cache_dir=self._profiles,
                                               seed=self.options.seed)
            except (LineageIndexError, ValueError, RuntimeError) as exc:
                self.result.skipped.setdefault(f"{source.id} -> {suspect.id}", f"closeness: {exc}"[:200])
                return None
            first = source.id not in self._calibrated and not r.indirect
            self._calibrated.add(source.id)
            if first:  # the source's probe selection and threshold: calibration, not this pair
                self.cal.seconds += time.perf_counter() - t0
            else:
                self.result.pair_seconds.append(time.perf_counter() - t0)
            return {"score": r.score, "match_rate": r.match_rate, "distance_diff": r.mean_distance_diff,
                    "probes": r.n_probes, "threshold": r.threshold, "verdict": r.verdict, "indirect": r.indirect,
                    "soft": r.soft_agreement, "soft_threshold": r.soft_threshold, "signal": r.signal}

        return self._cached("closeness", source, suspect, run)

    def determine(self, a: _Model, b: _Model) -> dict[str, Any] | None:
        """Loss/error barrier between A and B (None when their weights do not align)."""
        if a.clf.body_signature() != b.clf.body_signature():
            return None

        def run() -> dict[str, Any] | None:
            thr = self.cal.det_threshold(a)
            if thr is None:
                return None
            t0 = time.perf_counter()
            try:
                r = determine(a.clf, b.clf, self.cal.det_probes(a), threshold=thr, seed=self.options.seed)
            except (LineageIndexError, ValueError, RuntimeError):
                return None
            self.result.pair_seconds.append(time.perf_counter() - t0)
            return {"loss_barrier": r.loss_barrier, "error_barrier": r.error_barrier, "threshold": r.threshold,
                    "verdict": r.verdict, "statistic": r.statistic, "ensemble_barrier": r.ensemble_barrier}

        return self._cached("determine", a, b, run)

    def determine_lm(self, a: _LM, b: _LM) -> dict[str, Any] | None:
        """Causal LMs: ``lm.determine_lm`` on probe text sampled from A, its threshold calibrated once."""
        from lineage_index.behaviour.lm import calibrate_lm, determine_lm, sample_probes

        def run() -> dict[str, Any] | None:
            try:
                if a.id not in self._lm_cal:
                    t0 = time.perf_counter()
                    ids = sample_probes(a.lm, 64, 32, seed=4242 + self.options.seed)
                    self._lm_cal[a.id] = (ids, calibrate_lm(a.lm, ids, n_aux=2, seed=self.options.seed))
                    self.cal.seconds += time.perf_counter() - t0
                ids, thr = self._lm_cal[a.id]
                t0 = time.perf_counter()
                r = determine_lm(a.lm, b.lm, ids, threshold=thr, seed=self.options.seed)
            except (LineageIndexError, ValueError, RuntimeError, KeyError) as exc:
                self.result.skipped.setdefault(f"{a.id} -> {b.id}", f"determine: {exc}"[:200])
                return None
            self.result.pair_seconds.append(time.perf_counter() - t0)
            return {"loss_barrier": r.loss_barrier, "error_barrier": r.error_barrier, "threshold": r.threshold,
                    "verdict": r.verdict, "statistic": r.statistic, "ensemble_barrier": r.ensemble_barrier}

        return self._cached("determine-lm", a, b, run)  # type: ignore[arg-type]


def _evidence(c: dict[str, Any] | None, d: dict[str, Any] | None, rev: dict[str, Any] | None = None) -> BehaviourEvidence:
    c = c or {}
    return BehaviourEvidence(
        closeness=c.get("score"), match_rate=c.get("match_rate"), distance_diff=c.get("distance_diff"),
        probes=c.get("probes"), threshold=c.get("threshold"), verdict=c.get("verdict"),
        indirect=bool(c.get("indirect")),
        reverse_closeness=rev["score"] if rev else None, reverse_threshold=rev["threshold"] if rev else None,
        loss_barrier=d["loss_barrier"] if d else None, error_barrier=d["error_barrier"] if d else None,
        barrier_threshold=d["threshold"] if d else None, basin=d["verdict"] if d else None,
        barrier_statistic=d.get("statistic") if d else None, ensemble_barrier=d.get("ensemble_barrier") if d else None,
        soft_agreement=c.get("soft"), soft_threshold=c.get("soft_threshold"),
        reverse_soft_agreement=rev.get("soft") if rev else None,
        reverse_soft_threshold=rev.get("soft_threshold") if rev else None)


# --- weight components and candidate distillations --------------------------------------------


def _asserted(edges: Iterable[Edge]) -> list[Edge]:
    return [e for e in edges if e.source in ASSERTED and not e.contradicted]


def weight_components(ids: Iterable[str], edges: Iterable[Edge]) -> dict[str, str]:
    """Model id -> its weight component (a representative id), over asserted weight edges."""
    parent: dict[str, str] = {m: m for m in ids}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for e in _asserted(edges):
        ra, rb = find(e.child), find(e.parent)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {m: find(m) for m in list(parent)}


def _margin(c: dict[str, Any] | None) -> float:
    return -math.inf if c is None else float(c["score"]) - float(c["threshold"])


def _soft_margin(c: dict[str, Any]) -> float:
    """Soft agreement − its threshold (−inf where the soft-label test did not run)."""
    soft, thr = c.get("soft"), c.get("soft_threshold")
    return -math.inf if soft is None or thr is None else float(soft) - float(thr)


def _verdict_margin(c: dict[str, Any]) -> float:
    """How far the closeness result is past the test that decides it (boundary or soft labels)."""
    return max(_margin(c), _soft_margin(c))


def _soft_lineage(c: dict[str, Any]) -> bool:
    """The soft-label test of a closeness result passed (distillation's own signature)."""
    return _soft_margin(c) >= 0.0


def _accuracy(m: _Model) -> float | None:
    if m.probes.y is None:
        return None
    return float((predict(m.clf.module, m.probes.x) == m.probes.y).float().mean())


def teacher_first(a: _Model, b: _Model, c_ab: dict[str, Any] | None, c_ba: dict[str, Any] | None) -> tuple[_Model, _Model, str]:
    """(teacher, student, why) for a behaviour-only lineage between ``a`` and ``b`` (module docstring)."""
    if b.id in a.declared and a.id not in b.declared:
        return b, a, f"{a.id}'s card declares {b.id} as its base model"
    if a.id in b.declared and b.id not in a.declared:
        return a, b, f"{b.id}'s card declares {a.id} as its base model"
    if a.created and b.created and abs((a.created - b.created).total_seconds()) >= TIME_MIN_DAYS * 86400:
        return (a, b, "uploaded earlier") if a.created < b.created else (b, a, "uploaded earlier")
    ma, mb = _margin(c_ab), _margin(c_ba)  # ma: how well b tracks a's profile
    if abs(ma - mb) > 1e-9:  # the better-tracked profile is the student's (a part of its teacher's)
        return (b, a, "it tracks the other's boundary better") if ma > mb else \
            (a, b, "it tracks the other's boundary better")
    acc_a, acc_b = _accuracy(a), _accuracy(b)
    if acc_a is not None and acc_b is not None and acc_a != acc_b:
        return (a, b, "higher probe accuracy") if acc_a > acc_b else (b, a, "higher probe accuracy")
    return (a, b, "no direction signal: the smaller id") if a.id < b.id else (b, a, "no direction signal: the smaller id")


def _depths(edges: list[Edge]) -> dict[str, int]:
    parents: dict[str, str] = {}
    for e in sorted(_asserted(edges), key=lambda e: (e.child, -e.confidence)):
        parents.setdefault(e.child, e.parent)
    out: dict[str, int] = {}
    for m in parents:
        d, cur, seen = 0, m, {m}
        while cur in parents and parents[cur] not in seen:
            cur = parents[cur]
            seen.add(cur)
            d += 1
        out[m] = d
    return out


# --- the tier ------------------------------------------------------------------------------------


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    disable=not enabled, transient=False, console=stderr_console())


def run_tier(records: dict[str, ModelRecord], edges: list[Edge], options: BehaviourOptions | None = None, *,
             show_progress: bool = False) -> TierResult:
    """The weight tier's ``edges`` with behaviour evidence, plus behaviour-only ``distill`` edges."""
    options = options or BehaviourOptions()
    t_start = time.perf_counter()
    result = TierResult(edges=list(edges))
    threads = torch.get_num_threads()
    if options.threads > 0:
        torch.set_num_threads(options.threads)
    try:
        with _progress(show_progress) as bar:
            models, lms = _load_all(records, edges, options, result, bar)
            cal = _Calibration(options)
            measure = _Measure(options, cal, result)
            out = _annotate_weight_edges(edges, models, lms, measure, result, bar)
            out = _merge_declared(out, _distillations(edges, models, measure, result, bar))
    finally:
        torch.set_num_threads(threads)
    result.edges = sorted(out, key=lambda e: (e.child, e.parent))
    result.calibration_seconds = round(cal.seconds, 3)
    result.seconds = round(time.perf_counter() - t_start, 3)
    return result


def _load_all(records: dict[str, ModelRecord], edges: list[Edge], options: BehaviourOptions, result: TierResult,
              bar: Progress) -> tuple[dict[str, _Model], dict[str, _LM]]:
    """Classifiers (both measurements) and causal LMs (``determine`` on their weight edges)."""
    models: dict[str, _Model] = {}
    lms: dict[str, _LM] = {}
    lm_ends = {m for e in _asserted(edges) for m in (e.child, e.parent)}
    task = bar.add_task("behaviour: loading models", total=len(records), status="")
    for mid in sorted(records):
        try:
            if _is_causal_lm(records[mid]):
                if mid in lm_ends:  # an LM alone has nothing to be determined against
                    lms[mid] = _load_lm(records[mid], options)
                    result.loaded.append(mid)
            else:
                models[mid] = _load(records[mid], options)
                result.loaded.append(mid)
        except (LineageIndexError, ValueError, OSError) as exc:
            result.skipped[mid] = str(exc)[:200]
        bar.advance(task)
    return models, lms


def _annotate_weight_edges(edges: list[Edge], models: dict[str, _Model], lms: dict[str, _LM], measure: _Measure,
                           result: TierResult, bar: Progress) -> list[Edge]:
    out: list[Edge] = []
    todo = [e for e in _asserted(edges) if (e.child in models and e.parent in models)
            or (e.child in lms and e.parent in lms)]
    task = bar.add_task("behaviour: weight edges", total=len(todo), status="")
    ids = {id(e) for e in todo}
    for e in edges:
        if id(e) not in ids:
            out.append(e)
            continue
        bar.update(task, description=f"behaviour: {e.child} <- {e.parent}")
        if e.parent in lms:
            d = measure.determine_lm(lms[e.parent], lms[e.child])
            if d is not None:
                e = replace(e, behaviour=_evidence(None, d))
                result.measured_edges += 1
        else:
            parent, child = models[e.parent], models[e.child]
            c = measure.closeness(parent, child)
            d = measure.determine(parent, child)
            if c is not None:
                e = replace(e, behaviour=_evidence(c, d))
                result.measured_edges += 1
        out.append(e)
        bar.advance(task)
    return out


def _distillations(edges: list[Edge], models: dict[str, _Model], measure: _Measure, result: TierResult,
                   bar: Progress) -> list[Edge]:
    """Behaviour-only ``distill`` edges between weight components (module docstring, (b))."""
    comp = weight_components(models, edges)
    depth = _depths(edges)
    weight_parent = {e.child: e.parent for e in _asserted(edges)}
    groups: dict[tuple[str, str, int], list[_Model]] = {}
    for m in models.values():
        groups.setdefault(m.group, []).append(m)
    plans: list[tuple[list[_Model], list[_Model]]] = []
    for members in groups.values():
        # a distilled student starts from fresh weights: only a model without a weight parent can be one
        students = sorted((m for m in members if m.id not in weight_parent),
                          key=lambda m: (m.created is None, m.created or datetime.min, m.id))
        students = students[: max(2, measure.options.max_sources)]
        if students and len({comp[m.id] for m in members}) >= 2:
            plans.append((members, students))
    total = sum(len(st) * len(mem) for mem, st in plans)
    task = bar.add_task("behaviour: candidate distillations", total=total, status="")
    best: dict[str, tuple[float, _Model, _Model, str, dict[str, Any], dict[str, Any]]] = {}
    for members, students in plans:
        for s in students:
            by_comp: dict[str, list[tuple[_Model, dict[str, Any]]]] = {}
            for m in members:
                bar.advance(task)
                if comp[m.id] == comp[s.id]:
                    continue
                bar.update(task, description=f"behaviour: {m.id} vs source {s.id}")
                r = measure.closeness(s, m)  # the student candidate as source: whose boundary does it track?
                if r is not None:
                    result.candidates.append((s.id, m.id, r["score"], r["threshold"], r["verdict"]))
                    by_comp.setdefault(comp[m.id], []).append((m, r))
            for scored in by_comp.values():
                # the model whose logits the student copies most closely (soft agreement), else whose
                # boundary it tracks best; near-equal ones (a quantised copy and its original): the shallower
                soft = all(r.get("soft") is not None for _, r in scored)
                track, tie = (("soft", SOFT_TIE) if soft else ("score", REFINE_TIE))
                top = max(r[track] for _, r in scored)
                t, rev = min(((m, r) for m, r in scored if r[track] >= top - tie),
                             key=lambda x: (depth.get(x[0].id, 0), x[0].created or datetime.max, x[0].id))
                if rev["verdict"] != "lineage" or not _soft_lineage(rev):
                    continue
                fwd = measure.closeness(t, s)  # and the other way: the teacher candidate as source
                if fwd is not None:
                    result.candidates.append((t.id, s.id, fwd["score"], fwd["threshold"], fwd["verdict"]))
                if fwd is None or fwd["verdict"] != "lineage" or not _soft_lineage(fwd):
                    continue
                if t.id in weight_parent:  # derived by weights from another model: not a fresh student
                    teacher, student, why = t, s, f"{t.id} derives from other weights, {s.id} starts fresh"
                else:
                    teacher, student, why = teacher_first(t, s, fwd, rev)
                f, r = (fwd, rev) if teacher is t else (rev, fwd)
                strength = min(_verdict_margin(f), _verdict_margin(r))
                if student.id not in best or strength > best[student.id][0]:
                    best[student.id] = (strength, teacher, student, why, f, r)
    result.candidate_pairs = len(result.candidates)
    found: list[Edge] = []
    written: set[frozenset[str]] = set()
    for strength, teacher, student, why, fwd, rev in sorted(best.values(), key=lambda b: (-b[0], b[2].id)):
        if frozenset((teacher.id, student.id)) in written:
            continue  # each pair once, in its strongest reading
        written.add(frozenset((teacher.id, student.id)))
        d = measure.determine(teacher, student)
        conf = round(min(0.95, 0.5 + 0.5 * strength / max(1e-6, 1.0 - min(fwd["threshold"], rev["threshold"]))), 4)
        evidence = (f"distill (behaviour): closeness s={fwd['score']:.3f} (thr {fwd['threshold']:.3f}) and "
                    f"reverse {rev['score']:.3f} (thr {rev['threshold']:.3f}); teacher: {why}")
        if d is not None:
            evidence += f"; loss barrier {d['loss_barrier']:.3f} ({d['verdict']})"
        found.append(Edge(student.id, teacher.id, "distill", "behaviour", conf, None, evidence=evidence,
                          behaviour=_evidence(fwd, d, rev)))
        result.distill_edges += 1
    return found


def _merge_declared(edges: list[Edge], found: list[Edge]) -> list[Edge]:
    """``edges`` with each found distillation replacing the card's (contradicted) declaration of
    the same pair: the weights rightly found no shared parameters, the behaviour explains why."""
    declared = {(e.child, e.parent) for e in edges}
    found = [replace(e, evidence=e.evidence + "; the card declares it") if (e.child, e.parent) in declared else e
             for e in found]
    pairs = {(e.child, e.parent) for e in found}
    return [e for e in edges if (e.child, e.parent) not in pairs] + found


def summary_rows(result: TierResult) -> list[dict[str, Any]]:
    """Rows for printing: every edge with behaviour evidence."""
    rows = []
    for e in result.edges:
        if e.behaviour is None:
            continue
        b = asdict(e.behaviour)
        rows.append({"child": e.child, "parent": e.parent, "relation": e.relation, "source": e.source,
                     "closeness": b["closeness"], "threshold": b["threshold"], "verdict": b["verdict"],
                     "barrier": b["loss_barrier"], "basin": b["basin"]})
    return rows
