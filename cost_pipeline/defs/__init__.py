"""Dagster wiring, one folder per domain. Assets are thin; the work is in `cost_pipeline.lib`."""
