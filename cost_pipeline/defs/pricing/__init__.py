"""Dagster definitions of the pricing domain."""
