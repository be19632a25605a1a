"""Dagster definitions of the analytics domain."""
