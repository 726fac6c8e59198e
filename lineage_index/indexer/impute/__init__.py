"""Impute stage: metadata a card leaves out, filled from the evidence and the lineage.

In: ``ModelRecord``s and the recovered ``Edge``s (from ``recover``), licence texts found in
the repositories. Out: ``metadata.Imputed`` values per model and field (licence, reuse method,
pipeline tag, ...), each with its source and confidence, ready to be written as node
properties. ``evidence`` turns files, tags and configs into votes; ``license_text`` identifies
a licence from its text.
"""
