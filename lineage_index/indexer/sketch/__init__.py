"""Sketch stage: a tiny, planned sample of each model's weights, and the store that keeps it.

In: a ``ModelRecord`` and the ``RangeReader`` for its files (from ``read``).
Out: a ``Sketch`` (a few full rows per tensor chosen from canonical role, layer and shape only,
layer prints, an embedding for search), put in the ``store.SketchStore`` keyed by (model id,
commit sha, sketch version). ``canon`` maps tensor names to canonical roles and architecture
families; ``sample`` plans and reads the sample; ``store`` and ``packed`` (the bulk layout for
millions of sketches) keep sketches on disk; ``fanout`` runs the reads as Ray tasks.
"""
