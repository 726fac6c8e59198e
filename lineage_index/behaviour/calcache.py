"""Calibrated thresholds cached per source, so a second ``determine`` against one model is fast.

Calibration trains auxiliary models from the source (minutes on a CPU); its result, a
``Threshold``, depends only on the source's weights, the probe data and the settings. It is kept
as one small JSON file per key under the calibration cache (``config.calibration_cache_dir``;
``--no-cache`` skips it). A damaged entry is recomputed, never trusted. ``closeness`` keeps its
selected probe profiles the same way (``closeness.save_profile``), in the same folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import torch

from lineage_index.behaviour.closeness import Threshold


def weights_key(tensors: Iterable[tuple[str, torch.Tensor]], *extra: object) -> str:
    """A key from named tensors (weights, probe data) and settings."""
    h = hashlib.sha256()
    for name, t in tensors:
        h.update(name.encode())
        h.update(t.detach().float().contiguous().cpu().numpy().tobytes())
    h.update("|".join(map(str, extra)).encode())
    return h.hexdigest()[:32]


def load_threshold(cache_dir: Path | None, key: str) -> Threshold | None:
    if cache_dir is None:
        return None
    path = Path(cache_dir) / f"threshold-{key}.json"
    try:
        d = json.loads(path.read_text())
        return Threshold(float(d["value"]), tuple(map(float, d["lineage_scores"])),
                         tuple(map(float, d["independent_scores"])), bool(d["separated"]), str(d["how"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_threshold(cache_dir: Path | None, key: str, thr: Threshold) -> None:
    if cache_dir is None:
        return
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(thr), fh)
        os.replace(tmp, folder / f"threshold-{key}.json")
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
