// descendants: every model derived from a model, directly or not, one row per lineage hop.
// Follows non-contradicted DERIVED_FROM edges up to 20 hops downwards; each row is one edge
// (descendant -> parent) with its relation, source, confidence and the descendant's
// effective licence. depth 1 = direct children.
// params: $model
// param $model (string): the model id, e.g. 'meta-llama/Llama-3.1-8B'
// browser: :param model => 'meta-llama/Llama-3.1-8B'
MATCH (:Model)
      ((:Model)-[r:DERIVED_FROM]->(:Model) WHERE coalesce(r.contradicted, false) = false){1,20}
      (m:Model {id: $model})
WITH head(r) AS hop, size(r) AS depth
WITH hop, min(depth) AS depth
WITH depth, hop, startNode(hop) AS child, endNode(hop) AS parent
RETURN depth,
       child.id AS descendant,
       parent.id AS parent,
       hop.relation AS relation,
       hop.source AS source,
       hop.confidence AS confidence,
       coalesce(child.license_effective, child.license) AS license,
       child.license_source AS license_source
ORDER BY depth, descendant, parent
