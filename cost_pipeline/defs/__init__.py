"""Dagster wiring, one folder per domain. Assets are thin; the work is in `cost_pipeline.lib`.

Dagster's beta and preview notices (single-run backfills, sensor owners) are for the authors of
this code, not for the person running it: they are silenced here, before any domain imports.
"""

import warnings

import dagster as dg

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
