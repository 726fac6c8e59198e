// license_summary: how many models carry each effective licence, and where it comes from.
// One row per (licence, source): source is declared, inherited (from the nearest licensed
// ancestor), imputed, or null when no licence is known; family is the catalogue's colour
// family. Needs licences applied (lineage-index report licenses, or licenses.refresh()).
// params: none
MATCH (m:Model)
WITH coalesce(m.license_effective, m.license, 'unknown') AS license,
     m.license_source AS source,
     count(m) AS models
OPTIONAL MATCH (l:License {id: license})
RETURN license,
       coalesce(l.family, 'unknown') AS family,
       source,
       models
ORDER BY models DESC, license, source
