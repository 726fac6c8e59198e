"""From model references and a probe path to a closeness or determine result (what the CLI runs).

``measure_closeness`` and ``measure_determine`` resolve every model reference (local directory,
HF-cache repo id, or a Hub download with consent: ``fetch``), load full safetensors weights, read
the probe data for the model kind (``probes.probes_for``: tensor files, image folders, text
files; for causal LMs ``lm.text_probes``) and call the library function. ``determine`` goes to
``lm.determine_lm`` when both models are Hugging Face causal LMs. Nothing here prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineage_index.behaviour.closeness import N_AUX, ClosenessResult, closeness
from lineage_index.behaviour.determine import DetermineResult, determine
from lineage_index.behaviour.fetch import resolve
from lineage_index.behaviour.lm import (
    LMDetermineResult,
    determine_lm,
    is_causal_lm_dir,
    load_lm,
    text_probes,
)
from lineage_index.behaviour.models import Classifier, load
from lineage_index.behaviour.probes import probes_for
from lineage_index.errors import UsageError


@dataclass(frozen=True)
class Fetch:
    """Where full weights may come from (see ``fetch.resolve``)."""

    hf_cache: Path | None = None
    download: bool = False
    max_download_mb: float | None = None
    endpoint: str | None = None
    token: str | bool | None = None

    def kwargs(self) -> dict[str, Any]:
        return {"hf_cache": self.hf_cache, "download": self.download, "max_download_mb": self.max_download_mb,
                "endpoint": self.endpoint, "token": self.token}


def _classifiers(refs: list[str] | None, fetch: Fetch) -> list[Classifier] | None:
    return [load(r, **fetch.kwargs()) for r in refs or []] or None


def measure_closeness(source: str, suspect: str, probe: Path | None = None, *, k: int = 100,
                      lineage_aux: list[str] | None = None, independent_aux: list[str] | None = None,
                      n_aux: int = N_AUX, cache: Path | None = None, fetch: Fetch | None = None,
                      seed: int = 0) -> ClosenessResult:
    """Closeness of the model ``suspect`` to the model ``source`` (references, not objects)."""
    fetch = fetch or Fetch()
    src, sus = load(source, **fetch.kwargs()), load(suspect, **fetch.kwargs())
    probes = probes_for(src, probe) if probe is not None else None
    return closeness(src, sus, probes, k=k, lineage_aux=_classifiers(lineage_aux, fetch),
                     independent_aux=_classifiers(independent_aux, fetch), n_aux=n_aux, cache_dir=cache, seed=seed)


def measure_determine(a: str, b: str, probe: Path | None = None, *, points: int = 11,
                      lineage_aux: list[str] | None = None, independent_aux: list[str] | None = None,
                      n_aux: int = 2, fetch: Fetch | None = None, seed: int = 0, cache: Path | None = None,
                      ) -> DetermineResult | LMDetermineResult:
    """Same-basin determination of models ``a`` and ``b`` (classifiers or causal LMs)."""
    fetch = fetch or Fetch()
    da, db = resolve(a, **fetch.kwargs()), resolve(b, **fetch.kwargs())
    lm_a, lm_b = is_causal_lm_dir(da), is_causal_lm_dir(db)
    if lm_a != lm_b:
        raise UsageError(f"{a} and {b}: one is a causal LM, the other a classifier; no linear path between them")
    if lm_a:
        ma, mb = load_lm(da, name=a), load_lm(db, name=b)
        ids, mask = text_probes(ma, probe) if probe is not None else (None, None)
        der = [load_lm(r, **fetch.kwargs()) for r in lineage_aux or []] or None
        ind = [load_lm(r, **fetch.kwargs()) for r in independent_aux or []] or None
        return determine_lm(ma, mb, ids, mask, points=points, derived_aux=der, independent_aux=ind,
                            n_aux=n_aux, seed=seed, cache_dir=cache)
    ca, cb = load(da, name=a if not Path(a).exists() else None), load(db, name=b if not Path(b).exists() else None)
    probes = probes_for(ca, probe) if probe is not None else None
    return determine(ca, cb, probes, points=points, derived_aux=_classifiers(lineage_aux, fetch),
                     independent_aux=_classifiers(independent_aux, fetch), n_aux=n_aux, seed=seed,
                     cache_dir=cache)
