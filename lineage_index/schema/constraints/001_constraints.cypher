// Unique constraints of the lineage graph (applied by lineage_index.schema.graph.ensure_schema).
// Each also gives the range index that MERGE/MATCH by id uses. Idempotent: IF NOT EXISTS.
CREATE CONSTRAINT model_id IF NOT EXISTS FOR (m:Model) REQUIRE m.id IS UNIQUE;
CREATE CONSTRAINT license_id IF NOT EXISTS FOR (l:License) REQUIRE l.id IS UNIQUE;
CREATE CONSTRAINT organization_id IF NOT EXISTS FOR (o:Organization) REQUIRE o.id IS UNIQUE;
