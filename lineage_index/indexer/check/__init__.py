"""Check: one verdict on one model against the index.

In: a target (a directory, a ``.safetensors`` file, a sharded index or a Hub id) and the sketch
store. Out: a ``run.CheckResult`` (copy, quantized, adapter, finetune, merge, prune, family
unresolved, no known relative, insufficient evidence), with the card's claim judged.
``run`` sketches the target and verifies its candidates; ``features`` and ``calibration``
turn pair features into calibrated probabilities; ``verdict`` chooses by rules; ``mergekit``
writes the estimated merge as a mergekit config; ``report`` renders the evidence page;
``graph`` writes the target into the lineage graph (``--add``) and reads its context.
"""
