"""Benchmark of the consistency checks: `analyse()` on a decoded 1024x1024 image.

Target: median well under 30 ms of CPU per image. The image is analysed on one box-filtered copy
at most 128 pixels a side, so the cost is mostly that downscale plus a few passes over 16k pixels.
Prints the median and p95 of CPU time (process time, so other load on the machine does not count)
with the machine they ran on. Run with `.venv/bin/python -m bench.bench_consistency`.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

from bench.bench_prompts import machine
from caverna.brand.registry import DEFAULT_PACK_ID, PackRegistry
from caverna.consistency.continuity import continuity
from caverna.consistency.phash import phash, to_hex
from caverna.consistency.report import Expectations, analyse
from caverna.prompting.engine import PromptEngine
from caverna.providers.preview import draw_preview

FRAME = "onboarding/carving-the-goals"


def cpu_timings(action: Callable[[], object], repeat: int) -> list[float]:
    """Per-call CPU times in ms, with the collector paused as timeit does."""
    samples = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeat):
            start = time.process_time_ns()
            action()
            samples.append((time.process_time_ns() - start) / 1e6)
    finally:
        gc.enable()
    return samples


def report(name: str, samples: list[float], target: str = "") -> None:
    ordered = sorted(samples)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    print(f"{name:<44} median {statistics.median(ordered):6.2f} ms  p95 {p95:6.2f} ms {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=200, help="analyses per case")
    args = parser.parse_args()

    registry = PackRegistry()
    pack = registry.get(DEFAULT_PACK_ID)
    engine = PromptEngine(registry)
    compiled = engine.compile({"frame": FRAME, "seed": 7, "aspect_ratio": "1:1"}, "preview")
    image = draw_preview(compiled.payload, prompt=compiled.prompt)
    if image.size != (1024, 1024):
        image = image.resize((1024, 1024))
    siblings = {f"frame-{n}": to_hex(phash(image.rotate(90 * n))) for n in range(1, 8)}
    expectations = Expectations.for_pack(
        pack, frame=FRAME, aspect_ratio="1:1", delivery_format="webp", compare_hashes=siblings
    )
    rgba = image.convert("RGBA")

    print(f"machine: {machine()}")
    analyse(image, expectations)  # warm-up: fonts, tables, Pillow plugins
    report(
        "analyse() 1024x1024 RGB, 7 hashes to compare",
        cpu_timings(lambda: analyse(image, expectations), args.repeat),
        "(target well under 30 ms)",
    )
    report(
        "analyse() 1024x1024 RGBA",
        cpu_timings(lambda: analyse(rgba, expectations), args.repeat),
    )
    frames = [(f"frame-{n}", analyse(image.rotate(n * 3), expectations)) for n in range(8)]
    report(
        "continuity() of 8 frame reports",
        cpu_timings(lambda: continuity(frames), max(10, args.repeat // 4)),
    )
    big = image.resize((2048, 2048))
    report("analyse() 2048x2048 RGB", cpu_timings(lambda: analyse(big, expectations), 40))
    big.close()


if __name__ == "__main__":
    main()
