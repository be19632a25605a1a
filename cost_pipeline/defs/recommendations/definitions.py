"""The recommendations domain: the `cost_recommendations` asset, its weekly Slack digest job and
the schedule that starts it."""

import dagster as dg

from cost_pipeline.defs.recommendations.assets import cost_recommendations
from cost_pipeline.defs.recommendations.jobs import (
    recommendations_digest_job,
    recommendations_digest_schedule,
)

defs = dg.Definitions(
    assets=[cost_recommendations],
    jobs=[recommendations_digest_job],
    schedules=[recommendations_digest_schedule],
)
