"""Pipeline benchmarks on the embedded mode (SQLite + local files), bounded and local-only.

1. Throughput at 1024x1024 with a provider that returns ready WebP bytes (target >= 50 images/s
   on two cores: only the metadata is embedded; the pixels are not decoded), with a per-stage
   breakdown, then the thumbnail (derivatives) pass over what the worker left, timed apart.
2. The same with the offline preview provider (it renders every image).
3. 10,000 queued jobs drained by concurrent claimers on SQLite: count of "database is locked".
4. Median submit-to-claim latency with an idle worker.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy.exc import OperationalError

from bench.bench_prompts import machine
from caverna.bootstrap import Runtime, build_container, open_runtime
from caverna.config import Settings
from caverna.domain.jobs import CompletedImage
from caverna.providers.base import GenerationRequest, ProgressCallback, ProviderImage
from caverna.providers.preview import PreviewProvider
from caverna.services.processing import StageTimes


class ReadyWebpProvider:
    """Answers at once with the same 1024x1024 WebP: isolates our own per-image cost."""

    def __init__(self, name: str) -> None:
        self.name = name
        buffer = io.BytesIO()
        gradient = Image.linear_gradient("L").resize((1024, 1024)).convert("RGB")
        gradient.save(buffer, format="WEBP", quality=85)
        self.data = buffer.getvalue()

    async def generate(
        self, request: GenerationRequest, progress: ProgressCallback
    ) -> ProviderImage:
        await progress(1.0)
        return ProviderImage(self.data, "image/webp", "ready-webp", request.compiled.seed, 0.0, 0.0)


async def runtime_for(folder: Path, providers: dict[str, Any]) -> Runtime:
    settings = Settings(data_dir=folder, worker_concurrency=8, lease_seconds=60)
    return await open_runtime(build_container(settings), providers=providers)


async def throughput(provider_name: str, provider: Any, jobs: int, folder: Path) -> None:
    runtime = await runtime_for(folder, {provider_name: provider})
    try:
        started = time.perf_counter()
        for index in range(jobs):
            await runtime.generation.submit(
                "bench", {"aspect_ratio": "1:1", "seed": index}, provider=provider_name
            )
        submitted = time.perf_counter()
        stop = asyncio.Event()
        await runtime.worker(concurrency=8).run(stop, max_jobs=jobs)
        finished = time.perf_counter()
        counts = await runtime.jobs.counts()
        rate = jobs / (finished - submitted)
        print(
            f"{provider_name:<10} {jobs} jobs: submit {jobs / (submitted - started):.0f}/s, "
            f"process {rate:.1f} images/s, statuses {counts}"
        )
        times = list(runtime.processor.recent_times)
        for field in fields(StageTimes):
            values = [getattr(t, field.name) for t in times]
            print(
                f"    {field.name:<12} median {statistics.median(values):7.2f} ms   "
                f"p95 {sorted(values)[int(len(values) * 0.95) - 1]:7.2f} ms"
            )
        maker = runtime.processor.derivatives
        during = len(maker.recent)
        thumbs_started = time.perf_counter()
        for _ in range(jobs):  # bounded: every batch settles at least one row
            if not await maker.catch_up(64, parallel=os.cpu_count() or 1):
                break
        thumbs_elapsed = time.perf_counter() - thumbs_started
        after = len(maker.recent) - during
        print(
            f"    thumbnails: {during} made by the worker during the run, {after} after it in "
            f"{thumbs_elapsed:.1f} s ({after / thumbs_elapsed if after else 0:.1f}/s); "
            f"median {statistics.median([t.ms for t in maker.recent] or [0.0]):.1f} ms each"
        )
    finally:
        await runtime.aclose()


async def drain_queue(jobs: int, claimers: int, folder: Path) -> None:
    runtime = await runtime_for(folder, {"preview": PreviewProvider()})
    now = datetime.now(UTC)
    rows = [
        {
            "id": uuid.uuid4(),
            "user_id": "bench",
            "status": "queued",
            "params": {},
            "params_hash": f"{i:064x}",
            "pack_id": "p",
            "pack_version": "1",
            "template_version": "t",
            "pose": "p",
            "outfit": "o",
            "footwear": "f",
            "props": "",
            "provider": "preview",
            "seed": i,
            "delivery_format": "webp",
            "progress": 0.0,
            "attempts": 0,
            "max_attempts": 3,
            "created_at": now + timedelta(microseconds=i),
        }
        for i in range(jobs)
    ]
    for start in range(0, jobs, 1000):
        await runtime.jobs.insert(rows[start : start + 1000], None)
    done = CompletedImage(
        "m", "p", None, "k", "t", "image/webp", 1, 1, 1, "0" * 64, 0.0, 0.0, 1, "preview", []
    )
    locked = 0
    drained = 0

    async def claimer(name: str) -> None:
        nonlocal locked, drained
        while True:
            try:
                job = await runtime.jobs.claim(name, 60)
                if job is None:
                    return
                await runtime.jobs.complete(job.id, name, done)
                drained += 1
            except OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                locked += 1

    started = time.perf_counter()
    await asyncio.gather(*(claimer(f"c{i}") for i in range(claimers)))
    elapsed = time.perf_counter() - started
    print(
        f"drain {jobs} queued jobs with {claimers} concurrent claimers: {elapsed:.1f} s "
        f"({drained / elapsed:.0f} claim+complete/s), 'database is locked' errors: {locked}, "
        f"statuses {await runtime.jobs.counts()}"
    )
    await runtime.aclose()


async def submit_to_claim(samples: int, folder: Path) -> None:
    runtime = await runtime_for(folder, {"preview": PreviewProvider()})
    stop = asyncio.Event()
    worker = asyncio.create_task(runtime.worker(concurrency=1).run(stop))
    latencies = []
    try:
        await asyncio.sleep(0.5)  # the worker is idle, waiting for work
        for index in range(samples):
            result = await runtime.generation.submit("bench", {"seed": index})
            while True:
                job = await runtime.jobs.get(result.job.id)
                assert job is not None
                if job.terminal:
                    break
                await asyncio.sleep(0.005)
            assert job.started_at is not None
            latencies.append((job.started_at - job.created_at).total_seconds() * 1000)
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await worker
        await runtime.aclose()
    print(
        f"submit-to-claim with an idle worker: median {statistics.median(latencies):.1f} ms, "
        f"max {max(latencies):.1f} ms over {samples} jobs"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--preview-jobs", type=int, default=120)
    parser.add_argument("--drain", type=int, default=10_000)
    parser.add_argument("--claimers", type=int, default=16)
    parser.add_argument("--latency-samples", type=int, default=50)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        await throughput("stability", ReadyWebpProvider("stability"), args.jobs, root / "a")
        await throughput("preview", PreviewProvider(), args.preview_jobs, root / "b")
        await drain_queue(args.drain, args.claimers, root / "c")
        await submit_to_claim(args.latency_samples, root / "d")


if __name__ == "__main__":
    asyncio.run(main())
