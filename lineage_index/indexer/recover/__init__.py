"""Recover stage: lineage from sketches.

In: ``Sketch``es and ``ModelRecord``s (from ``sketch`` and ``read``).
Out: directed, typed ``Edge``s (child, parent, relation, source, confidence, evidence).
Steps: ``candidates`` (FAISS / exact search per family) -> ``verify`` (pairwise features:
related?, relation, merge fits; ``vectorised`` computes the same features for many pairs of a
packed family) -> ``assemble`` (direction and the arborescence of each family, with
``arborescence``) -> ``crossdepth`` (family roots matched layer by layer across a change of
depth) -> ``declared`` (card claims judged by the weights). ``edges.recover`` runs them in
memory; ``batch`` runs them over a packed store at hub scale.
"""
