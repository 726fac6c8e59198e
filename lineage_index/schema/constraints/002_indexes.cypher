// Secondary indexes for the common queries: models by family and by root, lineage edges by
// relation type. Idempotent: IF NOT EXISTS.
CREATE INDEX model_family IF NOT EXISTS FOR (m:Model) ON (m.family);
CREATE INDEX model_root IF NOT EXISTS FOR (m:Model) ON (m.root);
CREATE INDEX derived_from_relation IF NOT EXISTS FOR ()-[r:DERIVED_FROM]-() ON (r.relation);
