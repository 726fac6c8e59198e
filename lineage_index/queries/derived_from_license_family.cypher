// derived_from_license_family: models deriving from a model under a licence family.
// A model derives, directly or not, from an ancestor whose effective licence belongs to the
// family (e.g. 'llama', 'gemma', 'cc-by-nc'), and so may carry its obligations. One row per
// model with its nearest such ancestor.
// Needs licences applied (lineage-index report licenses, or licenses.refresh()).
// params: $family
// param $family (string): licence family id from the catalogue, e.g. 'llama'
// browser: :param family => 'llama'
MATCH (a:Model)-[:LICENSED_UNDER {effective: true}]->(:License {family: $family})
MATCH (m:Model)
      ((:Model)-[r:DERIVED_FROM]->(:Model) WHERE coalesce(r.contradicted, false) = false){1,20}
      (a)
WITH m, a, size(r) AS depth
ORDER BY depth, a.id
WITH m, collect(a)[0] AS nearest, min(depth) AS depth
RETURN m.id AS model,
       coalesce(m.license_effective, m.license) AS license,
       m.license_source AS license_source,
       nearest.id AS ancestor,
       coalesce(nearest.license_effective, nearest.license) AS ancestor_license,
       depth
ORDER BY model
