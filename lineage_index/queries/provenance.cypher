// provenance: every ancestor of a model, one row per lineage hop, nearest first.
// Follows non-contradicted DERIVED_FROM edges up to 20 hops; each row is one edge
// (child -> ancestor) with its relation, source (declared | recovered | both), confidence
// and the ancestor's effective licence. depth 1 = direct parents. graph_path (the hop's
// path from the model) is for Neo4j Browser, which draws it; the CLI leaves it out.
// params: $model
// param $model (string): the model id, e.g. 'acme/Llama-3.1-8B-acme-sft'
// browser: :param model => 'acme/Llama-3.1-8B-acme-sft'
MATCH graph_path = (m:Model {id: $model})
      ((:Model)-[r:DERIVED_FROM]->(:Model) WHERE coalesce(r.contradicted, false) = false){1,20}
      (:Model)
WITH last(r) AS hop, size(r) AS depth, graph_path
ORDER BY depth
WITH hop, min(depth) AS depth, head(collect(graph_path)) AS graph_path
WITH depth, hop, graph_path, startNode(hop) AS child, endNode(hop) AS parent
RETURN depth,
       parent.id AS ancestor,
       child.id AS child,
       hop.relation AS relation,
       hop.source AS source,
       hop.confidence AS confidence,
       coalesce(parent.license_effective, parent.license) AS license,
       parent.license_source AS license_source,
       graph_path
ORDER BY depth, ancestor, child
