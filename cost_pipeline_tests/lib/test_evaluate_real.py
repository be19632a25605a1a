"""Protects the real-series evaluation's anomaly scoring: windows, false-positive days and the
hindsight baseline beside the project's detector."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cost_pipeline_tests.benchmarks import evaluate_real


def test_labelled_spikes_of_an_hourly_series_are_scored_as_daily_windows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 100 days of hourly samples; two days at 4x (labelled) and one at 4x (not labelled).
    rng = np.random.default_rng(7)
    start = date(2024, 1, 1)
    times = pd.date_range(start, periods=100 * 24, freq="h")
    values = 10 * rng.lognormal(0, 0.05, len(times))
    day = (times - times[0]).days
    for spike in (40, 70, 85):
        values[day == spike] *= 4
    pd.DataFrame({"timestamp": times, "value": values}).to_csv(tmp_path / "s.csv", index=False)
    windows = {
        "s.csv": [
            [str(start + timedelta(days=39)), str(start + timedelta(days=41))],
            [str(start + timedelta(days=69)), str(start + timedelta(days=71))],
        ]
    }
    (tmp_path / "labels.json").write_text(json.dumps(windows))
    evaluate_real.main(
        [
            "--series",
            str(tmp_path / "s.csv"),
            "--labels",
            str(tmp_path / "labels.json"),
            "--no-forecasts",
        ]
    )
    out = capsys.readouterr().out
    # Both windows detected; the unlabelled spike is one false-positive day.
    assert "pooled: 2 windows, 2 detected, 3 flagged days, 1 false-positive days" in out
    # One message per spike, as production sends them: the unlabelled one is the false one.
    assert "one per episode: 3 sent, 1 outside every window, 2 windows reached" in out
    assert f"s: {start + timedelta(days=85)}" in out
    assert "baseline, |robust z| >= " in out and "chosen with hindsight" in out


def test_points_as_days_keeps_a_one_sample_spike_and_maps_its_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 200 hourly samples: one sample at 5x is invisible in a daily total, but with each sample a
    # day it is a spike on the day of that sample, and the window covering it is that day.
    rng = np.random.default_rng(3)
    times = pd.date_range("2024-03-01", periods=200, freq="h")
    values = 10 * rng.lognormal(0, 0.05, len(times))
    values[[120, 160]] *= 5
    pd.DataFrame({"timestamp": times, "value": values}).to_csv(tmp_path / "h.csv", index=False)
    labels = {"h": [[str(times[119]), str(times[121])]]}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    series = evaluate_real.load_series([str(tmp_path / "h.csv")], points_as_days=True)
    (s,) = series
    assert len(s.usd) == 200 and s.usd.index[0] == evaluate_real.POINTS_START
    windows = evaluate_real.window_days(
        s, evaluate_real.load_labels(str(tmp_path / "labels.json"))["h"]
    )
    start = evaluate_real.POINTS_START
    assert windows == [(start + timedelta(days=119), start + timedelta(days=121))]
    args = ["--series", str(tmp_path / "h.csv"), "--labels", str(tmp_path / "labels.json")]
    evaluate_real.main([*args, "--points-as-days"])
    out = capsys.readouterr().out
    assert "each sample one day" in out and "Forecasts" not in out
    assert "pooled: 1 windows, 1 detected, 2 flagged days, 1 false-positive days" in out
    assert f"h: {start + timedelta(days=160)}" in out
