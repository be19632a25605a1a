"""Protects config loading: the demo config is valid; bad files name file, key and reason."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from cost_pipeline.lib.config import ConfigError, CostConfig, load_config, packaged_config_path


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "costs.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def minimal() -> dict:
    return {
        "tiers": {"free": {"name": "Free", "hard_cap_usd": 5}},
        "tenants": [{"id": "acme", "name": "Acme", "tier": "free"}],
    }


def test_packaged_demo_config_is_valid(demo_config: CostConfig) -> None:
    assert len(demo_config.tenants) == 30
    assert {t.tier for t in demo_config.tenants} == {"free", "basic", "pro", "enterprise"}
    assert demo_config.mapping("openai_project_ids")["proj_acme"] == "acme"
    assert demo_config.mapping("cloud_tags")["tenant=acme"] == "acme"


def test_env_var_selects_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COST_PIPELINE_CONFIG", str(write(tmp_path, minimal())))
    assert [t.id for t in load_config().tenants] == ["acme"]


@pytest.mark.parametrize(
    ("mutate", "key", "reason"),
    [
        (lambda c: c["tenants"][0].update(tier="gold"), "tenants", "unknown tier 'gold'"),
        (
            lambda c: c["tenants"][0].update(timezone="Mars/Base"),
            "tenants.0.timezone",
            "unknown time zone",
        ),
        (lambda c: c["tenants"].append(dict(c["tenants"][0])), "tenants", "duplicate tenant id"),
        (
            lambda c: c["tiers"]["free"].update(hard_cap_usd=-1),
            "tiers.free.hard_cap_usd",
            "greater than or equal to 0",
        ),
        (lambda c: c.update(colour="blue"), "colour", "Extra inputs are not permitted"),
        (
            lambda c: c["tiers"]["free"].update(overage={"unit": "usd"}),
            "tiers.free",
            "either a hard cap or overage",
        ),
        (
            lambda c: c.update(price_overrides=[{"provider": "openai", "model": "*"}]),
            "price_overrides.0",
            "either discount_pct or explicit prices",
        ),
    ],
)
def test_invalid_config_names_file_key_and_reason(
    tmp_path: Path, mutate, key: str, reason: str
) -> None:
    config = minimal()
    mutate(config)
    path = write(tmp_path, config)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert key in message
    assert reason in message


def test_unreadable_and_non_yaml_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "tiers: [unclosed"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_one_source_id_cannot_belong_to_two_tenants(tmp_path: Path) -> None:
    config = minimal()
    config["tenants"] = [
        {"id": t, "name": t, "tier": "free", "mappings": {"openai_project_ids": ["proj_x"]}}
        for t in ("a", "b")
    ]
    with pytest.raises(ConfigError, match="'proj_x' is mapped to both 'a' and 'b'"):
        load_config(write(tmp_path, config))


@pytest.mark.parametrize(
    ("today", "first", "last"),
    [
        (date(2026, 11, 23), date(2026, 10, 1), date(2026, 11, 22)),
        (date(2026, 3, 1), date(2026, 2, 1), date(2026, 2, 28)),
        (date(2027, 1, 15), date(2026, 12, 1), date(2027, 1, 14)),
    ],
)
def test_demo_window_follows_today_unless_pinned(today: date, first: date, last: date) -> None:
    packaged = load_config(packaged_config_path())
    days = packaged.demo.window(today)
    assert (days[0], days[-1], len(days)) == (first, last, (last - first).days + 1)
    pinned = packaged.demo.model_copy(update={"start_date": date(2026, 9, 1), "days": 60})
    assert pinned.window(today)[0] == date(2026, 9, 1) and len(pinned.window(today)) == 60
