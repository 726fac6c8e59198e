// foundation_reach: how far each foundation (root) model reaches: its descendant counts.
// A root has non-contradicted children and no non-contradicted parent. descendants counts
// distinct models below it (up to 20 hops), direct its children, and descendant_licenses
// lists the effective licences found below it. Largest reach first.
// params: none
MATCH (root:Model)
WHERE NOT EXISTS {
        MATCH (root)-[x:DERIVED_FROM]->(:Model) WHERE coalesce(x.contradicted, false) = false
      }
  AND EXISTS {
        MATCH (:Model)-[x:DERIVED_FROM]->(root) WHERE coalesce(x.contradicted, false) = false
      }
MATCH (d:Model)
      ((:Model)-[r:DERIVED_FROM]->(:Model) WHERE coalesce(r.contradicted, false) = false){1,20}
      (root)
WITH root, d, min(size(r)) AS depth
WITH root,
     count(d) AS descendants,
     max(depth) AS max_depth,
     collect(DISTINCT coalesce(d.license_effective, d.license, 'unknown')) AS licenses
RETURN root.id AS root,
       coalesce(root.license_effective, root.license) AS license,
       descendants,
       COUNT {
         MATCH (:Model)-[x:DERIVED_FROM]->(root) WHERE coalesce(x.contradicted, false) = false
       } AS direct,
       max_depth,
       COLLECT { UNWIND licenses AS l RETURN l ORDER BY l } AS descendant_licenses
ORDER BY descendants DESC, root
