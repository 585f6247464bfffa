"""What the pipeline adds on top of a provider's own latency, against the OpenAI fake over HTTP.

1. Overhead per image (claim to completion, minus the provider's measured latency) with a fake
   answering at once and after 2 s, at 1, 16 and 64 concurrent jobs (small images).
2. Throughput and CPU per image with realistic, incompressible 1024x1024 images (base64 in
   JSON, as the real API answers) at 16 concurrent jobs, all work in this process.
Everything runs on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr
from tests.fakes import openai_server
from tests.fakes.openai_server import FakeOpenAI

from bench.bench_prompts import machine
from caverna.bootstrap import build_container, open_runtime
from caverna.config import Settings


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(
    folder: Path, jobs: int, concurrency: int, image_size: int, delay: float
) -> tuple[list[float], float, float]:
    fake = FakeOpenAI(image_size=(image_size, image_size))
    await fake.start()
    if delay:
        fake.fail_next(*[openai_server.slow(delay) for _ in range(jobs)])
    settings = Settings(
        data_dir=folder,
        image_processes=0,
        openai_api_key=SecretStr(openai_server.DEFAULT_API_KEY),
        openai_base_url=fake.base_url,
        providers="openai",
        worker_concurrency=concurrency,
        provider_concurrency=f"openai={concurrency}",
    )
    runtime = await open_runtime(build_container(settings))
    try:
        ids = [
            (await runtime.generation.submit("bench", {"aspect_ratio": "1:1", "seed": i})).job.id
            for i in range(jobs)
        ]
        cpu_before, started = cpu_seconds(), time.perf_counter()
        await runtime.worker(concurrency=concurrency).run(asyncio.Event(), max_jobs=jobs)
        elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
        overheads = []
        for job_id in ids:
            job = await runtime.jobs.get(job_id)
            assert job is not None
            assert job.status.value == "completed", job.error_message
            assert job.started_at
            assert job.completed_at
            assert job.provider_latency_ms is not None
            total = (job.completed_at - job.started_at).total_seconds() * 1000
            overheads.append(total - job.provider_latency_ms)
        return overheads, elapsed, cpu
    finally:
        await runtime.aclose()
        await fake.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=128)
    parser.add_argument("--big-jobs", type=int, default=160)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for delay in (0.0, 2.0):
            for concurrency in (1, 16, 64):
                jobs = min(args.jobs, 16) if concurrency == 1 and delay else args.jobs
                overheads, elapsed, _ = await run(
                    root / f"o{delay}{concurrency}", jobs, concurrency, 64, delay
                )
                print(
                    f"overhead, provider {delay:.0f} s, concurrency {concurrency:>2}: median "
                    f"{statistics.median(overheads):7.1f} ms, p95 "
                    f"{sorted(overheads)[int(len(overheads) * 0.95) - 1]:7.1f} ms "
                    f"({jobs} jobs in {elapsed:.1f} s)"
                )
        _, elapsed, cpu = await run(root / "big", args.big_jobs, 16, 1024, 0.0)
        print(
            f"1024x1024 incompressible, concurrency 16: {args.big_jobs / elapsed:.1f} images/s, "
            f"{cpu / args.big_jobs * 1000:.1f} ms CPU per image (whole process)"
        )


if __name__ == "__main__":
    asyncio.run(main())
