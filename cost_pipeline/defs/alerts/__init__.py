"""Dagster definitions of the alerts domain."""
