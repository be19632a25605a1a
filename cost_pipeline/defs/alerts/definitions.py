"""The alerts domain: alert facts into the outbox, delivery, and the sensors that start it."""

import dagster as dg

from cost_pipeline.defs.alerts.jobs import alert_delivery_job
from cost_pipeline.defs.alerts.sensors import (
    alert_outbox_sensor,
    anomaly_alert_sensor,
    budget_alert_sensor,
    pipeline_failure_sensor,
)

defs = dg.Definitions(
    jobs=[alert_delivery_job],
    sensors=[
        budget_alert_sensor,
        anomaly_alert_sensor,
        alert_outbox_sensor,
        pipeline_failure_sensor,
    ],
)
