"""Loading the lineage graph at scale: Neo4j's own bulk importer first, the Bolt writer after.

``load_graph(conn, models, edges)`` writes Model rows (``{"id": ..., "props": {...}}``, as
``GraphWriter.upsert_models`` takes them) and ``Edge``s, and produces exactly the graph the
Bolt path (``GraphWriter`` + ``licenses.refresh``) produces: the same labels (``Model`` and
its licence-colour label, ``Organization``, ``License``), property names and types, the same
``PUBLISHED_BY`` / ``LICENSED_UNDER {effective, source}`` / ``DERIVED_FROM {...}`` /
``ALLOWS_DERIVATIVE_UNDER {code, catalogue_version}`` relationships and ``updated_at`` stamps.

Which path runs (``choose_method``; the choice is automatic, a flag can force either):

* **bulk** when all three hold: the connection is the *managed* local Neo4j of this home (the
  tool can stop it and reach its files), its target database holds no node (an initial load;
  the importer overwrites the database), and the load has at least ``BULK_MIN_ROWS`` rows
  (model rows + edges; ``$LINEAGE_INDEX_BULK_MIN_ROWS``, default 200,000). Below that the
  importer's fixed cost (server stop, JVM start-up, server start, index population: about
  40 s on 2 busy cores) exceeds the Bolt writer's time (about 6k rows/s there).
* **bolt** otherwise: every later increment, any non-empty database, and always an external
  Neo4j (``NEO4J_URI``), which the tool can neither stop nor write files into.
* ``method="bulk"`` forces the importer (refused, with a clear error, on an external or a
  non-empty database: it would erase it); ``method="bolt"`` forces the writer.
  ``$LINEAGE_INDEX_GRAPH_LOAD`` (auto | bulk | bolt) sets the default.

The bulk path writes CSV files in the importer's format into a work folder (header files apart
from the data, a separate data file for rows with line breaks, arrays split on U+001F), runs
``local_neo4j.import_full`` (stop, ``neo4j-admin database import full --overwrite-destination``,
start), then applies ``constraints/*.cypher`` (the importer builds no schema). Licence facts
that ``licenses.refresh`` would write over Bolt (catalogue, effective licences inherited along
the edges, colour labels) are computed here with the same catalogue and ``compute_effective``
and imported with the rest. Values a CSV cell cannot carry (empty lists, list elements holding
the delimiter, a key with a type other than its column's) are set over Bolt afterwards, by id.
"""

from lineage_index.schema.bulk.choose import (
    METHODS,
    GraphLoad,
    bulk_min_rows,
    choose_method,
    database_is_empty,
    default_method,
    managed_home_of,
)
from lineage_index.schema.bulk.files import ImportFiles, csv_writers, write_import_files
from lineage_index.schema.bulk.load import bolt_load, bulk_load, load_graph

__all__ = [
    "METHODS", "GraphLoad", "ImportFiles", "bolt_load", "bulk_load", "bulk_min_rows", "choose_method",
    "csv_writers", "database_is_empty", "default_method", "load_graph", "managed_home_of", "write_import_files",
]
