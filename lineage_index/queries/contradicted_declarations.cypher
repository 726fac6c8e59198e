// contradicted_declarations: declared base models the weights contradict.
// DERIVED_FROM edges with contradicted = true (a card's base_model the weights do not
// support), with the parent the weights point to instead when one was found. These edges
// are never used as lineage by the other queries.
// params: none
MATCH (c:Model)-[e:DERIVED_FROM]->(p:Model)
WHERE e.contradicted = true
RETURN c.id AS child,
       p.id AS declared_parent,
       e.recovered_parent AS recovered_parent,
       e.relation AS relation,
       e.source AS source,
       e.confidence AS confidence,
       e.evidence AS evidence
ORDER BY child, declared_parent
