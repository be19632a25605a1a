"""Dagster definitions of the budgets domain."""
