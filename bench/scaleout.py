"""Scale-out run: two API processes and two workers on PostgreSQL, Redis and S3 (moto), loopback.

The same run the test tests/scaleout/test_scaleout.py asserts on, with its figures printed:
submission rate and latency across both API processes, and completions per second until the
last job is final. Needs the system PostgreSQL on 127.0.0.1:5432 and `redis-server` installed;
everything else is started here, on free ports, and ended by PID.

    .venv/bin/python -m bench.scaleout [--jobs 2000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

from tests.scaleout.harness import moto_server
from tests.scaleout.scaleout import Outcome, run_scaleout

from bench.bench_prompts import machine


def summary(outcome: Outcome) -> str:
    statuses = Counter(row.status for row in outcome.rows)
    return (
        f"{outcome.figures()}  rows={dict(statuses)}  images={len(outcome.image_keys)}  "
        f"rate-limit={dict(Counter(outcome.rate_statuses))}  "
        f"quota={dict(Counter(outcome.quota_statuses))}  "
        f"sse-events={[len(follow.statuses) for follow in outcome.follows]}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    print(machine())
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="caverna-scaleout-") as folder:
        work = Path(folder)
        with moto_server(work) as moto:
            for index in range(args.repeat):
                outcome = asyncio.run(run_scaleout(args.jobs, work / f"run-{index}", moto))
                print(f"run {index + 1}: {summary(outcome)}", flush=True)
                if outcome.unexpected:
                    print("\n".join(outcome.unexpected[:20]), file=sys.stderr)
                runs.append(outcome.figures())
    medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print(f"median of {len(runs)} run(s): {medians}")


if __name__ == "__main__":
    main()
