"""Typed records passed between the stages of the data flow.

sources -> ModelRecord -> sketch -> Sketch -> candidates -> Candidate -> verify -> Evidence
-> assemble -> Edge -> graph. Records are small frozen dataclasses; they carry data only,
no behaviour that touches I/O. Units are in field names where they matter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Relation = Literal["finetune", "adapter", "quantized", "merge", "prune", "copy", "distill"]
RELATIONS: tuple[str, ...] = ("finetune", "adapter", "quantized", "merge", "prune", "copy", "distill")
EdgeSource = Literal["declared", "recovered", "both", "behaviour"]
WeightFormat = Literal["safetensors", "pickle", "gguf", "none"]


@dataclass(frozen=True)
class FileEntry:
    """One file of a model repository (path relative to the repo root)."""

    path: str
    size_bytes: int | None = None


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as described by a safetensors header, with absolute byte offsets.

    ``start``/``end`` are absolute offsets inside ``file`` (header length already added).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: str
    start: int
    end: int
    layout: str | None = None  # how the bytes are laid out when not plain row-major (GGUF: "gguf:Q4_K;rope:32")


@dataclass(frozen=True)
class ModelRecord:
    """Everything the tool knows about one model before reading any weight bytes."""

    id: str
    source: str  # "hub" | "dir" | "hf-cache"
    sha: str | None = None
    author: str | None = None
    created_at: str | None = None  # ISO 8601, UTC
    license: str | None = None
    license_name: str | None = None
    base_models: tuple[str, ...] = ()
    base_model_relation: str | None = None
    tags: tuple[str, ...] = ()
    pipeline_tag: str | None = None
    library_name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    adapter_config: dict[str, Any] | None = None
    gated: bool = False
    private: bool = False
    files: tuple[FileEntry, ...] = ()
    tensors: tuple[TensorInfo, ...] = ()
    weight_format: WeightFormat = "none"
    location: str = ""  # local directory, or the hub endpoint
    header_bytes_read: int = 0  # bytes read to get the safetensors headers
    header_requests: int = 0
    # why the weights could not be read (a hostile or legacy pickle, a damaged GGUF): the model is
    # still recorded (card, licence, files), and this becomes its failure when sketching
    weight_error: str | None = None
    weight_error_kind: str | None = None

    @property
    def org(self) -> str:
        return self.id.split("/", 1)[0] if "/" in self.id else ""

    @property
    def is_adapter(self) -> bool:
        return self.adapter_config is not None


@dataclass(frozen=True)
class Failure:
    """A model the run could not read; recorded, never raised through the run."""

    model_id: str
    kind: str  # errors.ModelReadError.kind
    message: str


@dataclass(frozen=True)
class TensorSample:
    """Aligned sample of one tensor: ``values`` has shape (rows, cols) as float32.

    ``row_start`` and the column window are a deterministic function of
    (canonical key, shape, seed), so two models of one architecture sample the same elements.
    """

    key: str  # canonical key, e.g. "layers.3.attn.q"
    role: str  # canonical role, e.g. "attn.q"
    layer: int | None
    shape: tuple[int, ...]
    dtype: str
    row_start: int
    col_start: int
    values: np.ndarray  # float32, 2-D (rows, cols)
    bytes_read: int = 0
    quant: str | None = None  # "bnb-int8" when decoded from int8 + SCB


@dataclass
class Sketch:
    """The weight sketch of one model: aligned samples, statistics and an embedding."""

    model_id: str
    sha: str | None
    version: int
    family: str  # architecture/family signature (hash), from the header alone
    family_desc: str  # readable form of the signature
    kind: str  # "full" | "adapter"
    samples: dict[str, TensorSample]
    embedding: np.ndarray  # float32, fixed length per family
    bytes_read: int = 0
    requests: int = 0
    model_bytes: int = 0
    dtypes: tuple[str, ...] = ()
    quant: str | None = None  # "bnb-int8", "gptq", ... when the header shows it
    derived: dict[str, float] = field(default_factory=dict, repr=False, compare=False)  # memo of stats
    # layer index -> a few rows of one matrix role (the same rows in every layer): which layer
    # of another model a layer was copied from, across a change of depth (indexer.crossdepth)
    layer_prints: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Candidate:
    """A candidate related pair from nearest-neighbour search (no direction yet)."""

    a: str
    b: str
    distance: float


@dataclass(frozen=True)
class Evidence:
    """Verified pairwise verdict: ``parent`` -> ``child`` with relation and confidence."""

    child: str
    parent: str
    related: bool
    relation: str
    confidence: float  # probability the directed edge is right, in [0, 1]
    closeness: float  # in [0, 1], 1 = identical
    cost: float  # for the arborescence: lower is better
    features: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BehaviourEvidence:
    """What the opt-in behaviour tier measured on one (parent, child) pair (``behaviour.tier``).

    Closeness (seed 002) of the child with the parent as source: s = (1 − d̄)·Mr, the match rate
    Mr, the mean distance difference d̄, the probe points N, and the threshold calibrated for the
    parent with its verdict; ``soft_agreement`` is closeness's second test (the child ranks the
    classes its parent did not predict as the parent does: what distillation copies) with its own
    calibrated threshold; ``reverse_*`` are the same scores with the roles swapped.
    Determination (seed 001): loss and error barrier on the linear weight path, the calibrated
    threshold (on ``barrier_statistic``) and the verdict (None where the weights do not align).
    """

    closeness: float | None  # None where closeness does not apply (causal LMs: determine only)
    match_rate: float | None
    distance_diff: float | None
    probes: int | None
    threshold: float | None
    verdict: str | None  # "lineage" | "no lineage"
    indirect: bool = False  # the child has another label space: the parent was re-headed first
    reverse_closeness: float | None = None
    reverse_threshold: float | None = None
    loss_barrier: float | None = None
    error_barrier: float | None = None
    barrier_threshold: float | None = None  # on the barrier named by ``barrier_statistic``
    basin: str | None = None  # "same basin" | "different basins"
    barrier_statistic: str | None = None  # "loss" (classifiers) | "ensemble" (causal LMs)
    ensemble_barrier: float | None = None  # barrier against the endpoints' output mixture
    soft_agreement: float | None = None  # closeness's soft-label test (teacher's dark knowledge)
    soft_threshold: float | None = None
    reverse_soft_agreement: float | None = None
    reverse_soft_threshold: float | None = None


@dataclass(frozen=True)
class Edge:
    """A directed, typed edge ready for the graph: child DERIVED_FROM parent when it is lineage
    (``is_lineage``), else child DECLARES_BASE parent (a card's claim with its verdict)."""

    child: str
    parent: str
    relation: str
    source: str  # declared | recovered | both | behaviour (a distillation only behaviour shows)
    confidence: float
    closeness: float | None = None
    evidence: str = ""  # short human-readable reason
    contradicted: bool = False  # declared edge the weights contradict
    recovered_parent: str | None = None  # when contradicted: the parent the weights point to
    behaviour: BehaviourEvidence | None = None  # set by the opt-in behaviour tier only
    # a card's declared base judged against the weights: supported | imprecise | contradicted |
    # unverified (None: not a declaration, or one whose other side is not indexed)
    verdict: str | None = None

    @property
    def is_lineage(self) -> bool:
        """Whether the edge is lineage (``DERIVED_FROM``): what the evidence supports. A
        declaration the weights contradict, or that names an ancestor instead of the direct
        parent, is kept as the card's claim only (``DECLARES_BASE``)."""
        return not self.contradicted and self.verdict not in ("contradicted", "imprecise")


def record_from_dict(d: dict[str, Any]) -> ModelRecord:
    """A ``ModelRecord`` from its JSON form (``dataclasses.asdict`` of one, as the store keeps it)."""
    d = dict(d)
    d["files"] = tuple(FileEntry(**f) for f in d.get("files", ()))
    d["tensors"] = tuple(TensorInfo(**{**t, "shape": tuple(t["shape"])}) for t in d.get("tensors", ()))
    for key in ("base_models", "tags"):
        d[key] = tuple(d.get(key) or ())
    return ModelRecord(**d)
