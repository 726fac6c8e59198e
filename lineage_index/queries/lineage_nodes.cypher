// lineage_nodes: a model and every ancestor, each with all its properties and parent edges.
// What the AI bill of materials is built from: non-contradicted DERIVED_FROM edges (up to 20
// hops) give the ancestors; parents lists each node's lineage edges (relation, source,
// confidence) and contradicted its declared parents the weights contradict (DECLARES_BASE
// with verdict contradicted: not lineage).
// The subject comes first. No row when the model is not in the graph.
// params: $model
// param $model (string): the model id, e.g. 'acme/Llama-3.1-8B-acme-sft'
// browser: :param model => 'acme/Llama-3.1-8B-acme-sft'
MATCH (m:Model {id: $model})
OPTIONAL MATCH (m)
      ((:Model)-[r:DERIVED_FROM]->(:Model) WHERE coalesce(r.contradicted, false) = false){1,20}
      (a:Model)
WITH m, collect(DISTINCT a) AS ancestors
UNWIND [m] + ancestors AS n
WITH DISTINCT m, n
RETURN n.id AS id,
       n = m AS is_subject,
       properties(n) AS props,
       COLLECT {
         MATCH (n)-[e:DERIVED_FROM]->(p:Model)
         WHERE coalesce(e.contradicted, false) = false
         RETURN {parent: p.id, relation: e.relation, source: e.source,
                 confidence: e.confidence} AS edge
         ORDER BY edge.parent
       } AS parents,
       COLLECT {
         MATCH (n)-[e:DECLARES_BASE]->(p:Model)
         WHERE e.contradicted = true
         RETURN {parent: p.id, relation: e.relation, recovered_parent: e.recovered_parent,
                 evidence: e.evidence} AS edge
         ORDER BY edge.parent
       } AS contradicted
ORDER BY is_subject DESC, id
