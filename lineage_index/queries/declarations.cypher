// declarations: every card claim (base_model) and what the weights say of it.
// Supported and unverified claims are lineage (DERIVED_FROM, source 'both' or 'declared');
// imprecise claims (an ancestor named as the direct parent) and contradicted ones are kept
// apart as DECLARES_BASE. $verdict narrows to one verdict ('' for all).
// params: $verdict
// param $verdict (string = ""): supported | imprecise | contradicted | unverified, or '' for all
// browser: :param verdict => ""
MATCH (c:Model)-[e:DERIVED_FROM|DECLARES_BASE]->(p:Model)
WHERE e.source IN ['declared', 'both']
  AND ($verdict = '' OR coalesce(e.verdict, CASE WHEN e.contradicted THEN 'contradicted' WHEN e.source = 'both' THEN 'supported'
                               ELSE 'unverified' END) = $verdict)
RETURN c.id AS child,
       p.id AS declared_parent,
       coalesce(e.verdict, CASE WHEN e.contradicted THEN 'contradicted' WHEN e.source = 'both' THEN 'supported'
                               ELSE 'unverified' END) AS verdict,
       type(e) = 'DERIVED_FROM' AS lineage,
       e.recovered_parent AS recovered_parent,
       e.evidence AS evidence
ORDER BY child, declared_parent
