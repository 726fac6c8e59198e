"""A simulated hub at the sketch level (no weights), to prove the index at hub scale.

``plan`` draws the population (heavy-tailed trees, architectures shared by unrelated roots,
merges, quantised copies and re-uploads, messy cards; ``data/hub.json`` cites its shares),
``values`` draws each model's sketch samples from a per-relation model of how derivation
changes weights, fitted on real zoo sketches by ``calibrate`` (``data/calibration.json``), and
``build`` writes the packed sketch store, the records and ``truth.json``. The indexer never
imports this package; it only reads what ``build`` wrote, through the ordinary store.
"""
