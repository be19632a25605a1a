"""The maintenance domain: the warehouse's upkeep (retention)."""
