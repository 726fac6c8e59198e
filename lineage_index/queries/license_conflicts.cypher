// license_conflicts: lineage edges whose child licence conflicts with the parent's (✗).
// Codes (LICENSES.md §3.4): ✓ compatible, ✗ conflict, C clause-dependent, W same family
// other version, ? undecidable. Tag-level code from (:License)-[:ALLOWS_DERIVATIVE_UNDER {code}]->
// (:License) (no relationship: ✗ between decidable licences, else ?), then the edge-type
// modifiers: a Llama 2/3 parent whose derivative's model_type is not Llama is ✗ (§1.b.v);
// quantized/copy children must carry the parent's licence (any other is at least W); with
// $adapter_leniency an adapter's permissive tag is W instead of ✗ (not under Llama 3.x/4,
// Gemma); a ✗ against a child licence that is inherited or imputed, not declared, is ?.
// Licences are the effective ones (license_effective, else the card's license, else
// 'unknown'); contradicted edges are not lineage and are never checked.
// A merge child must satisfy every parent: each merge edge is checked on its own, and a
// second part reports merges whose parents no single licence can satisfy (a share-alike
// parent with any parent whose allowed set does not meet its own), whatever the child's tag.
// graph_path (the conflicting edge, or a merge child with its two parents) is for Neo4j
// Browser, which draws it; the CLI leaves it out.
// params: $adapter_leniency
// param $adapter_leniency (boolean = false): downgrade ✗ to W for permissive adapter tags
// browser: :param adapter_leniency => false
CALL () {
  MATCH graph_path = (c:Model)-[e:DERIVED_FROM]->(p:Model)
  WHERE coalesce(e.contradicted, false) = false
  WITH c, p, e, graph_path,
       coalesce(c.license_effective, c.license, 'unknown') AS child_license,
       coalesce(p.license_effective, p.license, 'unknown') AS parent_license
  OPTIONAL MATCH (pl:License {id: parent_license})
  OPTIONAL MATCH (cl:License {id: child_license})
  OPTIONAL MATCH (pl)-[rule:ALLOWS_DERIVATIVE_UNDER]->(cl)
  WITH c, p, e, graph_path, child_license, parent_license, pl, cl,
       CASE
         WHEN rule IS NOT NULL THEN rule.code
         WHEN child_license = parent_license AND coalesce(pl.category, '') <> 'unknown' THEN '✓'
         WHEN coalesce(pl.decidable, false) AND coalesce(cl.decidable, false) THEN '✗'
         ELSE '?'
       END AS tag_code,
       (pl.derivatives_model_type IS NOT NULL AND c.model_type IS NOT NULL
        AND NOT (toLower(c.model_type) CONTAINS pl.derivatives_model_type)) AS other_model
  WITH c, p, e, graph_path, child_license, parent_license, pl, cl, tag_code, other_model,
       CASE
         WHEN other_model THEN '✗'
         WHEN e.relation IN ['quantized', 'copy'] AND child_license <> parent_license
              AND tag_code IN ['✓', 'C'] THEN 'W'
         WHEN tag_code = '✗' AND e.relation = 'adapter' AND $adapter_leniency
              AND cl.category = 'permissive' AND NOT coalesce(pl.adapter_strict, false) THEN 'W'
         WHEN tag_code = '✗' AND c.license_source IN ['inherited', 'imputed'] THEN '?'
         ELSE tag_code
       END AS code
  WITH * WHERE code = '✗'
  RETURN 'edge' AS kind,
         c.id AS child,
         child_license,
         c.license_source AS child_license_source,
         p.id AS parent,
         parent_license,
         p.license_source AS parent_license_source,
         e.relation AS relation,
         e.source AS edge_source,
         e.confidence AS confidence,
         code,
         CASE
           WHEN other_model
             THEN parent_license + " §1.b.v: the derivative's model_type '" + c.model_type
                  + "' is not " + pl.derivatives_model_type + " (no improving other LLMs)"
           WHEN code = 'W' AND tag_code <> 'W' AND e.relation IN ['quantized', 'copy']
             THEN e.relation + ": same weights, so the licence should equal the parent's ("
                  + parent_license + ")"
           WHEN code = 'W' AND tag_code = '✗'
             THEN "adapter leniency: permissive adapter tag under " + parent_license
                  + " (the base model's terms still apply)"
           WHEN code = '?' AND tag_code = '✗'
             THEN "would conflict, but the child's licence is " + c.license_source
                  + ", not declared"
           WHEN code = '✓' THEN 'compatible'
           WHEN code = '?'
             THEN "undecidable from tags (" + parent_license + " -> " + child_license
                  + "): resolve license_name / the LICENSE file, or impute"
           WHEN code = 'C'
             THEN "clause-dependent: compare the use restrictions of " + parent_license
                  + " and " + child_license
           WHEN code = 'W'
             THEN "same family, different version: the " + parent_license
                  + " Agreement still governs"
           ELSE parent_license + " does not allow derivatives under " + child_license + ". "
                + coalesce(pl.clause, '')
         END AS reason,
         graph_path
  UNION
  MATCH graph_path = (p1:Model)<-[e1:DERIVED_FROM {relation: 'merge'}]-(c:Model)
                     -[e2:DERIVED_FROM {relation: 'merge'}]->(p2:Model)
  WHERE p1.id < p2.id
    AND coalesce(e1.contradicted, false) = false
    AND coalesce(e2.contradicted, false) = false
  WITH c, p1, p2, e1, e2, graph_path,
       coalesce(p1.license_effective, p1.license, 'unknown') AS l1,
       coalesce(p2.license_effective, p2.license, 'unknown') AS l2
  MATCH (a:License {id: l1}), (b:License {id: l2})
  WHERE a.decidable AND b.decidable
    AND (a.category IN ['share-alike', 'nc-sa'] OR b.category IN ['share-alike', 'nc-sa'])
    AND NOT EXISTS {
      MATCH (a)-[:ALLOWS_DERIVATIVE_UNDER]->(:License)<-[:ALLOWS_DERIVATIVE_UNDER]-(b)
    }
  RETURN 'merge' AS kind,
         c.id AS child,
         coalesce(c.license_effective, c.license, 'unknown') AS child_license,
         c.license_source AS child_license_source,
         p1.id + ' + ' + p2.id AS parent,
         l1 + ' + ' + l2 AS parent_license,
         null AS parent_license_source,
         'merge' AS relation,
         null AS edge_source,
         CASE WHEN e1.confidence < e2.confidence THEN e1.confidence ELSE e2.confidence END
           AS confidence,
         '✗' AS code,
         "merge: no licence satisfies both " + l1 + " and " + l2
           + " (a share-alike parent admits no other parent's terms)" AS reason,
         graph_path
}
RETURN kind, child, child_license, child_license_source, parent, parent_license,
       parent_license_source, relation, edge_source, confidence, code, reason, graph_path
ORDER BY child, parent
