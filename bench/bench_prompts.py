"""Benchmarks of the prompt engine: uncached compile per dialect, and loading the default pack.

Targets: compiling one prompt, uncached, median <= 200 us; loading and validating the default
pack <= 100 ms. Run with `make bench`; prints medians (and p95) with the machine they ran on.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from caverna.brand.loader import load_pack
from caverna.brand.registry import BUILTIN_PACKS_DIR, DEFAULT_PACK_ID, PackRegistry
from caverna.prompting.dialects.registry import DIALECT_NAMES
from caverna.prompting.engine import PromptEngine

CASES: dict[str, dict[str, Any]] = {
    "frame defaults": {"frame": "onboarding/carving-the-goals", "seed": 7},
    "free selection": {
        "pose": "standing-ready",
        "props": ["torch"],
        "aspect_ratio": "4:5",
        "seed": 11,
        "scene_notes": "light snow drifting past the cave mouth",
    },
}


def timings(action: Callable[[], object], repeat: int) -> list[float]:
    """Per-call times in µs; the collector is paused while timing, as timeit does."""
    samples = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeat):
            start = time.perf_counter_ns()
            action()
            samples.append((time.perf_counter_ns() - start) / 1e3)
    finally:
        gc.enable()
    return samples


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.95) - 1]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with Path("/proc/cpuinfo").open(encoding="utf-8") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3000, help="compiles per dialect and case")
    parser.add_argument("--loads", type=int, default=40, help="pack loads")
    args = parser.parse_args()

    engine = PromptEngine(PackRegistry())
    print(f"machine: {machine()}")
    print(f"{'case':<16} {'dialect':<11} {'median µs':>10} {'p95 µs':>9}")
    medians = []
    for case, params in CASES.items():
        full = {"pack": DEFAULT_PACK_ID, **params}
        for dialect in DIALECT_NAMES:
            engine.compile(full, dialect)  # warm-up
            median, p95 = summary(
                timings(lambda f=full, d=dialect: engine.compile(f, d), args.repeat)  # type: ignore[misc]
            )
            medians.append(median)
            print(f"{case:<16} {dialect:<11} {median:>10.1f} {p95:>9.1f}")
    print(f"compile, uncached: worst median {max(medians):.1f} µs (target <= 200 µs)")

    folder = BUILTIN_PACKS_DIR / DEFAULT_PACK_ID
    load_pack(folder)
    median, p95 = summary(timings(lambda: load_pack(folder), args.loads))
    print(
        f"load + validate {DEFAULT_PACK_ID}: median {median / 1000:.1f} ms, "
        f"p95 {p95 / 1000:.1f} ms (target <= 100 ms)"
    )


if __name__ == "__main__":
    main()
