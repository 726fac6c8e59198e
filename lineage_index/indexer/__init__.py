"""The indexer: from a list of models to directed, typed lineage edges, one stage per sub-package.

Data flows down this list; a stage imports only from the stages above it (a test walks the
imports: ``tests/test_architecture.py``):

* ``read``     model listings and repository files  -> ``ModelRecord`` / ``Failure`` + a ``RangeReader``
* ``sketch``   ``ModelRecord`` + ``RangeReader``      -> ``Sketch`` (planned byte ranges), kept in the store
* ``recover``  ``Sketch``es + ``ModelRecord``s        -> ``Edge``s (candidates, verify, assemble, depth, declarations)
* ``impute``   ``ModelRecord``s + ``Edge``s            -> ``Imputed`` metadata per model and field
* ``check``    one target + the sketch store         -> ``CheckResult`` (one verdict on one model)
* ``pipeline`` ties read -> sketch -> recover for ``api.ingest`` (scopes, incremental re-index)

The graph (``lineage_index.schema``) and the queries sit beside the indexer, not inside it.
"""
