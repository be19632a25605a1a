"""Dagster definitions of the rollups domain."""
