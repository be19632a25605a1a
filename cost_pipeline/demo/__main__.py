"""`python -m cost_pipeline.demo generate ...`: write the demo company's interaction log."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from cost_pipeline.demo.generator import DemoCompany
from cost_pipeline.demo.log_writer import FORMATS
from cost_pipeline.lib.config import load_config


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cost_pipeline.demo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write one log file per day plus incidents.json")
    gen.add_argument("--out", type=Path, required=True, help="landing folder to write into")
    gen.add_argument("--start", type=date.fromisoformat, default=date(2026, 9, 1))
    gen.add_argument("--days", type=int, default=60)
    gen.add_argument("--events-per-day", type=int, default=6000)
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--garbage-fraction", type=float, default=0.0)
    gen.add_argument("--late-fraction", type=float, default=0.002)
    gen.add_argument("--format", choices=FORMATS, default="jsonl.gz")
    gen.add_argument("--config", type=Path, help="configuration file (default: the demo one)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    company = DemoCompany(load_config(args.config), seed=args.seed)
    summary = company.write_log(
        args.out,
        start=args.start,
        days=args.days,
        events_per_day=args.events_per_day,
        fmt=args.format,
        garbage_fraction=args.garbage_fraction,
        late_fraction=args.late_fraction,
    )
    print(f"{summary} ({time.perf_counter() - started:.1f} s)")
    if summary.garbage_lines:
        kinds = ", ".join(f"{k}: {n}" for k, n in summary.garbage_by_kind.items())
        print(f"malformed lines by kind: {kinds}")


if __name__ == "__main__":
    main()
