"""Dagster definitions of the summaries domain."""
