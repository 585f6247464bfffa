"""What the pipeline costs around a real provider, against the OpenAI fake in its own process.

Scenarios (all on 127.0.0.1; every run starts its own fake with `python -m
tests.fakes.openai_server --port 0`, and stops it by its PID at the end):

overhead    per image, (completed_at - started_at) minus the provider latency the adapter
            measured, with the fake answering small images at once and after 2 s, at 1, 16 and
            64 concurrent jobs. Target at concurrency 1: median <= 5 ms.
throughput  realistic, incompressible 1024x1024 WebP answers (about 1.2 MB, base64 in JSON, as
            the API answers at its default output_compression of 100), pre-encoded by the fake
            once at start, at 16 concurrent jobs: images per second, and CPU per image of this
            process and of its image-pool processes, read from /proc after a warm-up (the fake's
            own CPU is shown apart and counted in neither). Targets: >= 50 images/s and
            <= 35 ms CPU per image (this process + pool) on two cores. Thumbnails are made after
            completion by the derivatives pass: those the worker made during the run (at low
            priority) are in the CPU above; the rest are made right after the run and reported
            on their own line, as CPU per thumbnail.
memory      1,000 jobs in flight against a fake that answers after 10 s, with 64 px and with
            1024x1024 images: peak RSS of this process, sampled every 50 ms, with the image-pool
            processes and the fake shown apart, and the peak of provider images held at once
            (the intake gate). Each run is a fresh process, so earlier runs do not inflate it.
            Target: < 300 MB for this process.

Every scenario runs `--repeat` times; the table shows the median and every run. Linux only (CPU
and memory are read from /proc).

    .venv/bin/python -m bench.bench_providers                      # everything, 3 runs each
    .venv/bin/python -m bench.bench_providers --only overhead --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from tests.fakes.openai_server import DEFAULT_API_KEY

from bench.bench_prompts import machine
from caverna.bootstrap import Runtime, build_container, open_runtime
from caverna.config import Settings
from caverna.services.processing import StageTimes

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SCENARIOS = ("overhead", "throughput", "memory")


# --- measuring processes through /proc --------------------------------------------------------


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU of one process (all its threads), from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    values = text.rsplit(")", 1)[1].split()
    return (int(values[11]) + int(values[12])) / CLOCK_TICKS  # utime, stime


def rss_bytes(pid: int | str = "self") -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    except (FileNotFoundError, ProcessLookupError):
        return 0


def pool_pids(runtime: Runtime) -> list[int]:
    """The image-pool processes alive now (none when image work runs in threads)."""
    processes = getattr(runtime.image_pool, "_processes", None) or {}
    return sorted(processes)


class RssSampler:
    """Peak RSS of this process, its image pool and the fake, sampled from a thread."""

    def __init__(self, runtime: Runtime, fake_pid: int, interval: float = 0.05) -> None:
        self.runtime = runtime
        self.fake_pid = fake_pid
        self.interval = interval
        self.peak_self = self.peak_pool = self.peak_fake = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_self = max(self.peak_self, rss_bytes())
            pool = sum(rss_bytes(pid) for pid in pool_pids(self.runtime))
            self.peak_pool = max(self.peak_pool, pool)
            self.peak_fake = max(self.peak_fake, rss_bytes(self.fake_pid))
            self._stop.wait(self.interval)


# --- the fake, in its own process ---------------------------------------------------------------


@contextmanager
def fake_openai(*, image_size: int, latency: float, distinct_images: int) -> Iterator[FakeServer]:
    """Start the fake on a free loopback port; stop it by its PID whatever happens."""
    command = [
        sys.executable,
        "-m",
        "tests.fakes.openai_server",
        "--port",
        "0",
        "--image-size",
        f"{image_size}x{image_size}",
        "--latency",
        str(latency),
        "--distinct-images",
        str(distinct_images),
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 120)
        banner = process.stdout.readline() if ready else ""
        match = re.search(r"(http://127\.0\.0\.1:\d+/v1)", banner)
        if match is None:
            raise RuntimeError(f"the fake did not start: {banner!r}")
        yield FakeServer(process.pid, match.group(1))
    finally:
        os.kill(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


@dataclass(frozen=True)
class FakeServer:
    pid: int
    base_url: str


async def open_bench_runtime(
    folder: Path, base_url: str, concurrency: int, image_processes: int
) -> Runtime:
    settings = Settings(
        data_dir=folder,
        image_processes=image_processes,
        openai_api_key=SecretStr(DEFAULT_API_KEY),
        openai_base_url=base_url,
        providers="openai",
        worker_concurrency=min(concurrency, 256),
        provider_concurrency=f"openai={concurrency}",
        lease_seconds=120,
    )
    return await open_runtime(build_container(settings), providers=None)


async def submit(runtime: Runtime, jobs: int, first_seed: int) -> list[Any]:
    return [
        (
            await runtime.generation.submit(
                "bench", {"aspect_ratio": "1:1", "seed": first_seed + index}
            )
        ).job.id
        for index in range(jobs)
    ]


async def drain(runtime: Runtime, concurrency: int, jobs: int) -> None:
    await runtime.worker(concurrency=concurrency).run(asyncio.Event(), max_jobs=jobs)


async def warm_up(runtime: Runtime, concurrency: int, jobs: int) -> None:
    """Spawn the image pool, open connections, fill the caches: none of it is per-image cost."""
    await submit(runtime, jobs, 1_000_000)
    await drain(runtime, concurrency, jobs)


# --- scenarios ----------------------------------------------------------------------------------


@dataclass
class OverheadRun:
    overheads: list[float]
    stages: list[StageTimes]


async def overhead_run(
    folder: Path, *, jobs: int, concurrency: int, latency: float, image_processes: int
) -> OverheadRun:
    with fake_openai(image_size=64, latency=latency, distinct_images=4) as fake:
        runtime = await open_bench_runtime(folder, fake.base_url, concurrency, image_processes)
        try:
            await warm_up(runtime, 2, 2)
            runtime.processor.recent_times.clear()
            ids = await submit(runtime, jobs, 0)
            await drain(runtime, concurrency, jobs)
            overheads = []
            for job_id in ids:
                job = await runtime.jobs.get(job_id)
                if job is None or job.status.value != "completed":
                    raise RuntimeError(f"job {job_id} did not complete: {job}")
                assert job.started_at is not None
                assert job.completed_at is not None
                assert job.provider_latency_ms is not None
                total = (job.completed_at - job.started_at).total_seconds() * 1000
                overheads.append(total - job.provider_latency_ms)
            return OverheadRun(overheads, list(runtime.processor.recent_times))
        finally:
            await runtime.aclose()


@dataclass
class ThroughputRun:
    rate: float
    cpu_self_ms: float
    cpu_pool_ms: float
    cpu_fake_ms: float
    stages: list[StageTimes]
    # the derivatives pass (thumbnail): how many the worker made during the run, at low
    # priority, and the pass over the rest right after it, with its own CPU per thumbnail
    thumbs_during: int = 0
    thumbs_after: int = 0
    after_seconds: float = 0.0
    thumb_cpu_ms: float = 0.0
    thumb_wall_ms: list[float] = field(default_factory=list)

    @property
    def cpu_ms(self) -> float:
        return self.cpu_self_ms + self.cpu_pool_ms


async def throughput_run(
    folder: Path, *, jobs: int, concurrency: int, distinct: int, image_processes: int
) -> ThroughputRun:
    with fake_openai(image_size=1024, latency=0.0, distinct_images=distinct) as fake:
        runtime = await open_bench_runtime(folder, fake.base_url, concurrency, image_processes)
        try:
            warm = max(2 * (os.cpu_count() or 1), 4)  # enough to start every pool process
            await warm_up(runtime, concurrency, warm)
            runtime.processor.recent_times.clear()
            ids = set(await submit(runtime, jobs, 0))
            pids = pool_pids(runtime)
            before = (cpu_seconds(), [cpu_seconds(p) for p in pids], cpu_seconds(fake.pid))
            started = time.perf_counter()
            await drain(runtime, concurrency, jobs)
            elapsed = time.perf_counter() - started
            after_pool = [cpu_seconds(p) for p in pids]
            if pool_pids(runtime) != pids:
                raise RuntimeError("the image pool replaced a process during the run")
            counts = await runtime.jobs.counts()
            if counts.get("completed") != jobs + warm:
                raise RuntimeError(f"not every job completed: {counts}")
            per_image = 1000 / jobs
            end_self = cpu_seconds()
            maker = runtime.processor.derivatives
            during = sum(1 for t in maker.recent if t.made and t.image_id in ids)
            # the rest of the pass, right after the run, measured on its own
            made_before = len(maker.recent)
            thumbs_started = time.perf_counter()
            for _ in range(jobs):  # bounded: every batch settles at least one row
                if not await maker.catch_up(64, parallel=os.cpu_count() or 1):
                    break
            after_seconds = time.perf_counter() - thumbs_started
            after = sum(1 for t in list(maker.recent)[made_before:] if t.made)
            thumb_cpu = (
                cpu_seconds() - end_self + sum(cpu_seconds(p) for p in pids) - sum(after_pool)
            )
            return ThroughputRun(
                rate=jobs / elapsed,
                cpu_self_ms=(end_self - before[0]) * per_image,
                cpu_pool_ms=(sum(after_pool) - sum(before[1])) * per_image,
                cpu_fake_ms=(cpu_seconds(fake.pid) - before[2]) * per_image,
                stages=list(runtime.processor.recent_times),
                thumbs_during=during,
                thumbs_after=after,
                after_seconds=after_seconds,
                thumb_cpu_ms=thumb_cpu * 1000 / after if after else 0.0,
                thumb_wall_ms=[t.ms for t in maker.recent if t.made],
            )
        finally:
            await runtime.aclose()


async def memory_run(
    folder: Path, *, jobs: int, latency: float, image_size: int, image_processes: int
) -> dict[str, float]:
    """One run; called in a fresh process (see `run_isolated`)."""
    with fake_openai(image_size=image_size, latency=latency, distinct_images=4) as fake:
        runtime = await open_bench_runtime(folder, fake.base_url, jobs, image_processes)
        try:
            await warm_up(runtime, 2, 2)
            await submit(runtime, jobs, 0)
            in_flight = 0
            done = asyncio.Event()

            async def watch() -> None:
                nonlocal in_flight
                while not done.is_set():
                    counts = await runtime.jobs.counts()
                    in_flight = max(in_flight, counts.get("processing", 0))
                    await asyncio.sleep(0.5)

            baseline = rss_bytes()
            with RssSampler(runtime, fake.pid) as sampler:
                watcher = asyncio.create_task(watch())
                started = time.perf_counter()
                await drain(runtime, jobs, jobs)
                elapsed = time.perf_counter() - started
                done.set()
                await watcher
            counts = await runtime.jobs.counts()
            gate = runtime.processor.intake
            return {
                "intake_peak": gate.peak if gate is not None else 0,
                "intake_slots": gate.slots if gate is not None else 0,
                "elapsed_s": elapsed,
                "in_flight": in_flight,
                "completed": counts.get("completed", 0) - 2,
                "baseline_mb": baseline / 2**20,
                "peak_self_mb": sampler.peak_self / 2**20,
                "peak_pool_mb": sampler.peak_pool / 2**20,
                "peak_fake_mb": sampler.peak_fake / 2**20,
            }
        finally:
            await runtime.aclose()


def run_isolated(args: argparse.Namespace, image_size: int) -> dict[str, float]:
    """The memory scenario in a fresh interpreter: RSS peaks cannot be subtracted like CPU."""
    command = [
        sys.executable,
        "-m",
        "bench.bench_providers",
        "--memory-child",
        "--inflight",
        str(args.inflight),
        "--inflight-latency",
        str(args.inflight_latency),
        "--inflight-image-size",
        str(image_size),
        "--image-processes",
        str(args.image_processes),
    ]
    timeout = 300 + args.inflight_latency * 3
    child = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGINT first: the child then stops its own fake by PID on the way out
        os.kill(child.pid, signal.SIGINT)
        try:
            stdout, stderr = child.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(child.pid, signal.SIGKILL)
            child.communicate()
        raise RuntimeError(f"the memory run took more than {timeout:.0f} s") from None
    if child.returncode != 0:
        raise RuntimeError(f"memory run failed:\n{stderr[-3000:]}")
    result: dict[str, float] = json.loads(stdout.strip().splitlines()[-1])
    return result


# --- reporting ----------------------------------------------------------------------------------


@dataclass
class Row:
    what: str
    unit: str
    runs: list[float]
    target: str = ""
    ok: bool | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(int(len(ordered) * fraction) - 1, 0)]


def stage_line(stages: list[StageTimes]) -> str:
    parts = []
    for item in fields(StageTimes):
        if item.name == "provider_ms":
            continue
        value = statistics.median(getattr(stage, item.name) for stage in stages)
        parts.append(f"{item.name.removesuffix('_ms')} {value:.1f}")
    return "stages (ms, median): " + ", ".join(parts)


def print_table(rows: list[Row]) -> None:
    width = max(len(row.what) for row in rows)
    print(f"{'measure':<{width}}  {'median':>9}  {'unit':<12} {'target':<10} runs")
    for row in rows:
        verdict = "" if row.ok is None else (" ok" if row.ok else " MISSED")
        runs = ", ".join(f"{value:.1f}" for value in row.runs)
        print(
            f"{row.what:<{width}}  {row.median:>9.1f}  {row.unit:<12} "
            f"{row.target + verdict:<10} [{runs}]"
        )
        for note in row.notes:
            print(f"{'':<{width}}    {note}")


async def bench_overhead(args: argparse.Namespace, root: Path, rows: list[Row]) -> None:
    for latency in args.latencies:
        for concurrency in args.concurrency:
            jobs = args.slow_jobs if latency and concurrency == 1 else args.jobs
            medians, p95s, stages = [], [], []
            for run in range(args.repeat):
                result = await overhead_run(
                    root / f"overhead-{latency}-{concurrency}-{run}",
                    jobs=jobs,
                    concurrency=concurrency,
                    latency=latency,
                    image_processes=args.image_processes,
                )
                medians.append(statistics.median(result.overheads))
                p95s.append(percentile(result.overheads, 0.95))
                stages.extend(result.stages)
            target = "<= 5" if concurrency == 1 else ""
            rows.append(
                Row(
                    f"overhead, provider {latency:g} s, {concurrency} concurrent ({jobs} jobs)",
                    "ms/image",
                    medians,
                    target,
                    statistics.median(medians) <= 5 if concurrency == 1 else None,
                    [f"p95 per run: {', '.join(f'{v:.1f}' for v in p95s)}", stage_line(stages)],
                )
            )


async def bench_throughput(args: argparse.Namespace, root: Path, rows: list[Row]) -> None:
    runs = [
        await throughput_run(
            root / f"throughput-{run}",
            jobs=args.big_jobs,
            concurrency=args.big_concurrency,
            distinct=args.distinct_images,
            image_processes=args.image_processes,
        )
        for run in range(args.repeat)
    ]
    stages = [stage for run in runs for stage in run.stages]
    label = f"1024x1024 WebP, {args.big_concurrency} concurrent ({args.big_jobs} jobs)"
    rate = [run.rate for run in runs]
    cpu = [run.cpu_ms for run in runs]
    rows.append(Row(f"throughput, {label}", "images/s", rate, ">= 50", min(rate) >= 50))
    rows.append(
        Row(
            "CPU per image, this process + image pool",
            "ms/image",
            cpu,
            "<= 35",
            statistics.median(cpu) <= 35,
            [stage_line(stages)],
        )
    )
    rows.append(Row("  of which this process", "ms/image", [r.cpu_self_ms for r in runs]))
    rows.append(Row("  of which the image pool", "ms/image", [r.cpu_pool_ms for r in runs]))
    rows.append(Row("  the fake (not counted)", "ms/image", [r.cpu_fake_ms for r in runs]))
    walls = [ms for run in runs for ms in run.thumb_wall_ms]
    rows.append(
        Row(
            "thumbnail pass after the run (not in the rows above)",
            "CPU ms/thumb",
            [r.thumb_cpu_ms for r in runs],
            notes=[
                "made by the worker during the run (low priority, counted above): "
                + ", ".join(str(r.thumbs_during) for r in runs)
                + f" of {args.big_jobs}; made right after it: "
                + ", ".join(f"{r.thumbs_after} in {r.after_seconds:.1f} s" for r in runs),
                f"wall time per thumbnail, median: {statistics.median(walls):.1f} ms"
                if walls
                else "no thumbnails made",
            ],
        )
    )


def bench_memory(args: argparse.Namespace, rows: list[Row]) -> None:
    for size in args.inflight_image_size:
        memory_rows(args, size, rows)


def memory_rows(args: argparse.Namespace, size: int, rows: list[Row]) -> None:
    results = [run_isolated(args, size) for _ in range(args.repeat)]
    label = f"{args.inflight} jobs, provider {args.inflight_latency:g} s, {size} px"
    peak = [r["peak_self_mb"] for r in results]
    rows.append(
        Row(
            f"peak RSS, {label}",
            "MB",
            peak,
            "< 300",
            statistics.median(peak) < 300,
            [
                "jobs processing at once (max): "
                + ", ".join(f"{r['in_flight']:.0f}" for r in results)
                + "; wall time (s): "
                + ", ".join(f"{r['elapsed_s']:.1f}" for r in results)
                + "; RSS before the jobs (MB): "
                + ", ".join(f"{r['baseline_mb']:.0f}" for r in results),
                "images held at once (intake gate peak / slots): "
                + ", ".join(f"{r['intake_peak']:.0f}/{r['intake_slots']:.0f}" for r in results),
            ],
        )
    )
    rows.append(Row("  image pool processes (sum)", "MB", [r["peak_pool_mb"] for r in results]))
    rows.append(Row("  the fake (not counted)", "MB", [r["peak_fake_mb"] for r in results]))


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part]


def ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(SCENARIOS), help="scenarios, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measure (median shown)")
    parser.add_argument(
        "--image-processes",
        type=int,
        default=-1,
        help="image pool size as CAVERNA_IMAGE_PROCESSES (-1 one per CPU, 0 threads)",
    )
    overhead = parser.add_argument_group("overhead")
    overhead.add_argument("--jobs", type=int, default=128, help="jobs per run")
    overhead.add_argument(
        "--slow-jobs", type=int, default=16, help="jobs at concurrency 1 with a slow provider"
    )
    overhead.add_argument("--latencies", type=floats, default=[0.0, 2.0], help="seconds, e.g. 0,2")
    overhead.add_argument("--concurrency", type=ints, default=[1, 16, 64], help="e.g. 1,16,64")
    big = parser.add_argument_group("throughput")
    big.add_argument("--big-jobs", type=int, default=160)
    big.add_argument("--big-concurrency", type=int, default=16)
    big.add_argument("--distinct-images", type=int, default=4, help="images the fake rotates")
    memory = parser.add_argument_group("memory")
    memory.add_argument("--inflight", type=int, default=1000)
    memory.add_argument("--inflight-latency", type=float, default=10.0)
    memory.add_argument(
        "--inflight-image-size", type=ints, default=[64, 1024], help="px, e.g. 64,1024"
    )
    memory.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.only = [name for name in args.only.split(",") if name]
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    return args


async def main(args: argparse.Namespace) -> None:
    if args.memory_child:
        with tempfile.TemporaryDirectory() as tmp:
            result = await memory_run(
                Path(tmp),
                jobs=args.inflight,
                latency=args.inflight_latency,
                image_size=args.inflight_image_size[0],
                image_processes=args.image_processes,
            )
        print(json.dumps(result))
        return
    print(f"machine: {machine()}")
    print(f"image processes: {args.image_processes}, runs per measure: {args.repeat}")
    print(f"load average at start: {load_average()}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "overhead" in args.only:
            await bench_overhead(args, root, rows)
        if "throughput" in args.only:
            await bench_throughput(args, root, rows)
    if "memory" in args.only:
        bench_memory(args, rows)
    print_table(rows)
    print(f"load average at the end: {load_average()} (other work on the machine skews rates)")


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
