"""Wall time and peak memory of reading and validating an interaction log (`iter_log_file`).

Run: `python -m cost_pipeline_tests.benchmarks.bench_reader [--sizes 1000000 10000000]
[--formats jsonl] [--old path/to/old_interaction_log.py] [--dir /tmp/bench_reader]`.
Writes (once, cached in `--dir`) a JSON Lines file of n canonical events of ~400 bytes per
line, then reads it in a fresh process per measurement and prints rows, seconds, rows/s and the
process's peak RSS. With `--old`, the same file is read by that module too (e.g. the previous
version, saved with `git show HEAD:cost_pipeline/lib/interaction_log.py > /tmp/old_reader.py`).
Targets: 1 M events <= 3 s, 10 M <= 35 s on 2 cores, peak RSS bounded by the chunk, not the file.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

PROVIDERS = ("openai", "anthropic")
MODELS = (("openai", "gpt-4.1-mini"), ("openai", "gpt-5"), ("anthropic", "claude-sonnet-4-0"))
WRITE_ROWS = 250_000


def _events(lo: int, hi: int, rng: np.random.Generator) -> pd.DataFrame:
    n = hi - lo
    ids = np.arange(lo, hi)
    model = rng.integers(len(MODELS), size=n)
    stamps = pd.Timestamp("2026-09-08T00:00:00Z") + pd.to_timedelta(
        rng.integers(0, 86_400_000, size=n), unit="ms"
    )
    inputs = rng.integers(200, 20_000, size=n)
    hex_ids = pd.Series(ids).map("{:032x}".format)
    return pd.DataFrame(
        {
            "event_id": "evt-" + hex_ids,
            "occurred_at": stamps.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z",
            "tenant_id": "tenant-" + pd.Series(rng.integers(0, 40, size=n)).astype(str),
            "user_id": "user-" + pd.Series(rng.integers(0, 5000, size=n)).astype(str),
            "agent_id": "support-bot",
            "workflow_id": "wf-" + pd.Series(ids // 5).map("{:024x}".format),
            "parent_event_id": "evt-" + pd.Series(np.maximum(ids - 1, 0)).map("{:032x}".format),
            "provider": np.array([p for p, _ in MODELS])[model],
            "model": np.array([m for _, m in MODELS])[model],
            "service_tier": "default",
            "batch": rng.random(n) < 0.1,
            "input_tokens": inputs,
            "cache_read_tokens": inputs // 4,
            "cache_write_tokens": 0,
            "output_tokens": rng.integers(10, 2_000, size=n),
            "reasoning_tokens": 0,
            "latency_ms": rng.integers(100, 9_000, size=n),
            "status": "ok",
        }
    )


def write_jsonl(path: Path, n: int, *, gz: bool = False) -> Path:
    if path.exists():
        return path
    rng = np.random.default_rng(n)
    tmp = path.with_suffix(path.suffix + ".part")
    with gzip.open(tmp, "wb", compresslevel=3) if gz else open(tmp, "wb") as fh:
        for lo in range(0, n, WRITE_ROWS):
            frame = _events(lo, min(lo + WRITE_ROWS, n), rng)
            fh.write(frame.to_json(orient="records", lines=True).encode())
            fh.write(b"\n")
    tmp.rename(path)
    return path


def measure(path: Path, old: str | None) -> dict:
    """Read `path` completely; runs in its own process so that the peak RSS is its own."""
    if old:
        spec = importlib.util.spec_from_file_location("old_reader", old)
        module = importlib.util.module_from_spec(spec)
        sys.modules["old_reader"] = module
        spec.loader.exec_module(module)
        iter_log_file = module.iter_log_file
    else:
        from cost_pipeline.lib.interaction_log import iter_log_file
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_start = before.ru_utime + before.ru_stime
    start = time.perf_counter()
    rows = quarantined = duplicates = chunks = 0
    for chunk in iter_log_file(path, known_providers=PROVIDERS):
        rows += len(chunk.good)
        quarantined += len(chunk.quarantine)
        duplicates += chunk.duplicates
        chunks += 1
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "rows": rows,
        "quarantined": quarantined,
        "duplicates": duplicates,
        "chunks": chunks,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "peak_rss_mb": round(peak_mb),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--formats", nargs="+", default=["jsonl"], choices=["jsonl", "jsonl.gz"])
    parser.add_argument("--old", help="path of another interaction_log module to compare")
    parser.add_argument("--dir", default="/tmp/bench_reader")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.old)))
        return
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    for n in args.sizes:
        for fmt in args.formats:
            path = write_jsonl(folder / f"events-{n}.{fmt}", n, gz=fmt.endswith(".gz"))
            size_mb = path.stat().st_size / 1e6
            for label, old in (("new", None), ("old", args.old)):
                if label == "old" and not old:
                    continue
                command = [sys.executable, "-m", __spec__.name, "--measure", str(path)]
                command += ["--old", old] if old else []
                out = subprocess.run(command, capture_output=True, text=True, check=True)
                result = json.loads(out.stdout.strip().splitlines()[-1])
                rate = result["rows"] / max(result["seconds"], 1e-9)
                print(
                    f"{label:3} {fmt:8} n={n:>11,} file={size_mb:8.0f} MB "
                    f"rows={result['rows']:>11,} quarantined={result['quarantined']:,} "
                    f"time={result['seconds']:7.2f} s ({rate:,.0f} rows/s) "
                    f"cpu={result['cpu_seconds']:.2f} s "
                    f"peak_rss={result['peak_rss_mb']:,} MB",
                    flush=True,
                )


if __name__ == "__main__":
    main()
