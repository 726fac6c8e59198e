// undeclared_lineage: lineage the weights show but the child's card does not declare.
// Recovered, non-contradicted DERIVED_FROM edges (source 'recovered') whose parent is not in
// the child's declared base_model list; strongest evidence first.
// params: $min_confidence
// param $min_confidence (float = 0.0): only edges at least this confident, in [0, 1]
// browser: :param min_confidence => 0.0
MATCH (c:Model)-[e:DERIVED_FROM]->(p:Model)
WHERE e.source = 'recovered'
  AND coalesce(e.contradicted, false) = false
  AND coalesce(e.confidence, 0.0) >= $min_confidence
  AND NOT p.id IN coalesce(c.declared_base_models, [])
RETURN c.id AS child,
       p.id AS parent,
       e.relation AS relation,
       e.confidence AS confidence,
       e.closeness AS closeness,
       e.evidence AS evidence,
       coalesce(c.declared_base_models, []) AS declared_base_models
ORDER BY confidence DESC, child, parent
