"""lineage-index: recover which model was derived from which, from the weights themselves.

The package follows the data flow of DESIGN.md:
sources -> sketch -> store -> candidates -> verify -> assemble -> impute -> graph -> queries.
"""

__version__ = "0.1.0"
