"""Dagster definitions of the ingestion domain."""
