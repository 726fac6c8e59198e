// contradicted_declarations: declared base models the weights contradict.
// DECLARES_BASE edges with verdict 'contradicted' (a card's base_model the weights show
// unrelated, or descended from the model declaring it), with the parent the weights point to
// instead when one was found. DECLARES_BASE is never lineage: no other query follows it.
// params: none
MATCH (c:Model)-[e:DECLARES_BASE]->(p:Model)
WHERE e.contradicted = true
RETURN c.id AS child,
       p.id AS declared_parent,
       e.recovered_parent AS recovered_parent,
       e.relation AS relation,
       e.source AS source,
       e.confidence AS confidence,
       e.evidence AS evidence
ORDER BY child, declared_parent
