"""Dagster resources: each external system owns its wire here, with an offline twin."""
