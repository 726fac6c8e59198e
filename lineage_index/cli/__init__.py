"""cli stage of lineage-index (see DESIGN.md)."""
