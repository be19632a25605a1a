"""The enforcement domain: the configuration audit (the decision itself is
`cost_pipeline.enforcement`, a library apps call, not an asset)."""

import dagster as dg

from cost_pipeline.defs.enforcement.assets import config_audit

defs = dg.Definitions(assets=[config_audit])
