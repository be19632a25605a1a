"""The rollups domain: workflow runs, end-user and agent costs, per-agent unit economics."""

import dagster as dg

from cost_pipeline.defs.rollups.assets import (
    agent_costs,
    agent_unit_economics,
    agents_add_up_to_priced_calls,
    end_user_costs,
    end_users_add_up_to_priced_calls,
    runs_add_up_to_priced_calls,
    workflow_runs,
)

defs = dg.Definitions(
    assets=[workflow_runs, end_user_costs, agent_costs, agent_unit_economics],
    asset_checks=[
        runs_add_up_to_priced_calls,
        end_users_add_up_to_priced_calls,
        agents_add_up_to_priced_calls,
    ],
)
