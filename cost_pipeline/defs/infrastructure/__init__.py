"""Dagster definitions of the infrastructure domain."""
