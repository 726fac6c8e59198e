"""Probe data for the behaviour tier: synthetic classification tasks and user probe files.

A ``TaskSpec`` names a synthetic task (Gaussian-blob vectors or small synthetic images) by its
seed, so the tool can draw fresh samples of a source's task to train auxiliary models for
calibration. ``load_probes`` reads a user's probe file: a ``.safetensors`` file with a tensor
``x`` (and optionally integer labels ``y``) or a ``.npz``/``.npy`` read with
``allow_pickle=False``. Nothing here ever unpickles.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lineage_index.errors import UsageError


@dataclass(frozen=True)
class TaskSpec:
    """A synthetic classification task, reproducible from its fields.

    ``kind`` is ``"blobs"`` (vectors of length ``dim``; each class a mixture of ``modes`` Gaussian
    blobs) or ``"images"`` (``channels`` x ``size`` x ``size``; each class ``modes`` smooth random
    patterns plus noise).
    """

    kind: str = "blobs"
    classes: int = 4
    seed: int = 0
    dim: int = 16
    channels: int = 1
    size: int = 8
    modes: int = 2
    spread: float = 2.0
    noise: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.dim,) if self.kind == "blobs" else (self.channels, self.size, self.size)


@dataclass(frozen=True)
class ProbeSet:
    """Probe inputs ``x`` (float32, first dim = points) with optional labels ``y`` (int64)."""

    x: torch.Tensor
    y: torch.Tensor | None = None
    origin: str = "synthetic"

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: torch.Tensor) -> ProbeSet:
        return ProbeSet(self.x[index], None if self.y is None else self.y[index], self.origin)


def _prototypes(spec: TaskSpec) -> torch.Tensor:
    g = torch.Generator().manual_seed(10_000 + spec.seed)
    n = spec.classes * spec.modes
    if spec.kind == "blobs":
        return torch.randn(n, spec.dim, generator=g) * spec.spread
    if spec.kind == "images":
        coarse = torch.randn(n, spec.channels, 4, 4, generator=g)
        up = torch.nn.functional.interpolate(coarse, size=(spec.size, spec.size), mode="bilinear",
                                             align_corners=False)
        return up * spec.spread
    raise UsageError(f"unknown synthetic task kind {spec.kind!r} (blobs | images)")


def task_data(spec: TaskSpec, n: int, seed: int) -> ProbeSet:
    """``n`` labelled samples of the task; ``seed`` picks the sample (not the task)."""
    protos = _prototypes(spec)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, spec.classes, (n,), generator=g)
    mode = torch.randint(0, spec.modes, (n,), generator=g)
    centre = protos[y * spec.modes + mode]
    x = centre + spec.noise * torch.randn(centre.shape, generator=g)
    return ProbeSet(x.float(), y.long(), f"synthetic:{spec.kind}:{spec.seed}")


def synthetic_probes(spec: TaskSpec, n: int = 512, seed: int = 12_345) -> ProbeSet:
    """A probe pool drawn from the task (a sample seed apart from any training seed)."""
    return task_data(spec, n, seed)


def load_probes(path: str | Path, input_shape: tuple[int, ...] | None = None) -> ProbeSet:
    """Read a user's probe file (``.safetensors`` / ``.npz`` / ``.npy``), never by unpickling."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"probe data not found: {p}")
    arrays: dict[str, Any]
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        arrays = dict(load_file(str(p)))
    elif p.suffix in (".npz", ".npy"):
        try:
            loaded = np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise UsageError(f"{p}: not a plain numeric array file ({exc})") from None
        arrays = {k: torch.from_numpy(loaded[k]) for k in loaded.files} if p.suffix == ".npz" \
            else {"x": torch.from_numpy(loaded)}
    else:
        raise UsageError(f"{p}: probe data must be .safetensors (tensor 'x', optional 'y'), .npz or .npy")
    if "x" not in arrays:
        raise UsageError(f"{p}: no tensor named 'x' (found: {', '.join(sorted(arrays)) or 'none'})")
    x = torch.as_tensor(arrays["x"]).float()
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        if math.prod(x.shape[1:]) == math.prod(input_shape):
            x = x.reshape(x.shape[0], *input_shape)
        else:
            raise UsageError(f"{p}: probe shape {tuple(x.shape[1:])} does not fit the model input {input_shape}")
    y = torch.as_tensor(arrays["y"]).long() if "y" in arrays else None
    return ProbeSet(x, y, str(p))


def save_probes(probes: ProbeSet, path: str | Path) -> None:
    """Write a probe set as ``.safetensors`` (``x`` and, when known, ``y``)."""
    from safetensors.torch import save_file

    tensors = {"x": probes.x.contiguous()}
    if probes.y is not None:
        tensors["y"] = probes.y.contiguous()
    save_file(tensors, str(path))
