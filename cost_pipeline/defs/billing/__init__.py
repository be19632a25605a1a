"""Dagster definitions of the billing domain."""
