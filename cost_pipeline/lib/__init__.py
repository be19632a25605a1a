"""Pure Python and pandas: schemas, pricing, normalizers, allocation, forecasting, billing math.

Nothing in this package imports dagster.
"""
