// relicensed_copies: copies and quantized re-uploads published under another licence.
// Non-contradicted DERIVED_FROM edges with relation 'copy' or 'quantized' (same weights, no
// new authorship) whose child's effective licence differs from the parent's: laundering or
// mislabelling candidates.
// params: none
MATCH (c:Model)-[e:DERIVED_FROM]->(p:Model)
WHERE e.relation IN ['copy', 'quantized'] AND coalesce(e.contradicted, false) = false
WITH c, p, e,
     coalesce(c.license_effective, c.license, 'unknown') AS child_license,
     coalesce(p.license_effective, p.license, 'unknown') AS parent_license
WHERE child_license <> parent_license
RETURN c.id AS child,
       child_license,
       c.license_source AS child_license_source,
       p.id AS parent,
       parent_license,
       e.relation AS relation,
       e.source AS source,
       e.confidence AS confidence
ORDER BY child, parent
