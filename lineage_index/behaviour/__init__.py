"""Behavioural lineage tier (issue 9): closeness and same-basin determination.

A second, deeper verification stage next to ``indexer.verify``, for models whose full weights are
at hand (safetensors from a local directory, the HF cache, or the Hub with consent; never pickle):

- ``closeness(source, suspect, probes)`` (seed 002): s = (1 − d̄)·Mr from boundary distances along
  the source's gradient sign, with a per-source calibrated threshold (classifiers: vectors,
  images, text — text walks the input word embeddings);
- ``determine(a, b, probes)`` (seed 001): loss/error barrier on the linear path θ(t), with a
  calibrated same-basin threshold; ``lm.determine_lm`` does the same for causal LMs on probe text.

``archs`` holds the architectures (MLP, CNN, ViT, MiniLM text classifier), ``models`` their
safetensors I/O, training and derivations, ``probes`` the synthetic tasks and probe data (files,
image folders, text files), ``fetch`` where full weights come from, ``lm`` causal LMs,
``commands`` what the CLI runs, ``tier`` the opt-in ingest tier (it returns edges; the ingest
writes them). Nothing here writes the graph.
"""

from lineage_index.behaviour.closeness import ClosenessResult, closeness
from lineage_index.behaviour.determine import DetermineResult, determine
from lineage_index.behaviour.lm import CausalLM, LMDetermineResult, determine_lm, load_lm
from lineage_index.behaviour.models import ARCHS, Classifier, load, save
from lineage_index.behaviour.probes import ProbeSet, TaskSpec, load_probes, synthetic_probes

__all__ = ["ARCHS", "ClosenessResult", "closeness", "DetermineResult", "determine", "Classifier", "load", "save",
           "ProbeSet", "TaskSpec", "load_probes", "synthetic_probes", "CausalLM", "LMDetermineResult",
           "determine_lm", "load_lm"]
