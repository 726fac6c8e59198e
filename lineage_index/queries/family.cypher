// family: the root(s) of a model's lineage and the whole tree below them.
// Roots are the furthest ancestors (no non-contradicted parent edge; the model itself when it
// has none). One row per (model, parent) edge of the tree, plus one row per root with a null
// parent; depth is the distance to the root. is_subject marks $model. graph_path (the edge as
// a path) is for Neo4j Browser, which draws the tree from it; the CLI leaves it out.
// params: $model
// param $model (string): any model of the family, e.g. 'acme/Llama-3.1-8B-acme-sft'
// browser: :param model => 'acme/Llama-3.1-8B-acme-sft'
MATCH (m:Model {id: $model})
OPTIONAL MATCH (m)
      ((:Model)-[r:DERIVED_FROM]->(:Model) WHERE coalesce(r.contradicted, false) = false){1,20}
      (top:Model)
WHERE NOT EXISTS {
  MATCH (top)-[x:DERIVED_FROM]->(:Model) WHERE coalesce(x.contradicted, false) = false
}
WITH m, collect(DISTINCT top) AS tops
UNWIND CASE WHEN size(tops) = 0 THEN [m] ELSE tops END AS root
MATCH (d:Model)
      ((:Model)-[t:DERIVED_FROM]->(:Model) WHERE coalesce(t.contradicted, false) = false){0,20}
      (root)
WITH root, d, min(size(t)) AS depth
OPTIONAL MATCH graph_path = (d)-[e:DERIVED_FROM]->(p:Model)
WHERE coalesce(e.contradicted, false) = false AND d <> root
RETURN root.id AS root,
       depth,
       d.id AS model,
       p.id AS parent,
       e.relation AS relation,
       e.source AS source,
       e.confidence AS confidence,
       coalesce(d.license_effective, d.license) AS license,
       d.license_source AS license_source,
       d.id = $model AS is_subject,
       graph_path
ORDER BY root, depth, model, parent
