"""The analytics domain: month-end forecasts and anomaly scores."""

import dagster as dg

from cost_pipeline.defs.analytics.assets import anomaly_scores, cost_forecasts

defs = dg.Definitions(assets=[cost_forecasts, anomaly_scores])
