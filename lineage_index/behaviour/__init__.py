"""Behavioural lineage tier (issue 9): closeness and same-basin determination for classifiers.

A second, deeper verification stage next to ``indexer.verify``, for models whose full weights are
at hand (safetensors in a local directory, never pickle):

- ``closeness(source, suspect, probes)`` (seed 002): s = (1 − d̄)·Mr from boundary distances along
  the source's gradient sign, with a per-source calibrated threshold;
- ``determine(a, b, probes)`` (seed 001): loss/error barrier on the linear path θ(t), with a
  calibrated same-basin threshold.

``models`` holds the tiny classifier registry and its safetensors I/O, ``probes`` the synthetic
tasks and probe files. Nothing here writes the graph.
"""

from lineage_index.behaviour.closeness import ClosenessResult, closeness
from lineage_index.behaviour.determine import DetermineResult, determine
from lineage_index.behaviour.models import Classifier, load, save
from lineage_index.behaviour.probes import ProbeSet, TaskSpec, load_probes, synthetic_probes

__all__ = ["ClosenessResult", "closeness", "DetermineResult", "determine", "Classifier", "load", "save",
           "ProbeSet", "TaskSpec", "load_probes", "synthetic_probes"]
