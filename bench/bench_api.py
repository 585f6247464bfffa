"""HTTP API benchmarks against a real `caverna serve` process on loopback (embedded mode).

The server is started as a subprocess on a free 127.0.0.1 port with a temporary data folder and
the per-key rate limit raised out of the way, its first-start admin key is read from its output,
and it is stopped by its PID at the end. The client runs in this process (aiohttp by default,
httpx with `--client httpx`) and shares the machine's cores with the server, so its own CPU is
printed too.

1. Status polling: `--clients` concurrent clients polling `/api/v1/images/{id}/status` of a
   completed image for `--duration` seconds: requests/s, p50 and p99, and the server's CPU.
2. Submit-to-completed latency with the offline preview provider at 1, 16 and 64 concurrent
   clients: each submits an image, then polls its status every 50 ms until it is final.
3. The server's resident memory at the end (and its peak), with the image process pool's.

    .venv/bin/python -m bench.bench_api [--duration 20] [--repeat 3] [--client httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp
import httpx

from bench.bench_prompts import machine

FRAME = "onboarding/lighting-the-torch"
POLL_SECONDS = 0.05
START_TIMEOUT = 60.0
FINAL = {"completed", "failed", "cancelled", "deleted"}
TICKS = os.sysconf("SC_CLK_TCK")
Run = TypeVar("Run")


class Client(Protocol):
    """The little the benchmark needs from an HTTP client: status code and JSON body."""

    async def get(self, path: str) -> tuple[int, Any]: ...

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]: ...

    async def aclose(self) -> None: ...


class AiohttpClient:
    def __init__(self, base: str, token: str, connections: int) -> None:
        self.base = base
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"},
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(total=60),
        )

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.base + path) as answer:
            return answer.status, await answer.json(content_type=None)

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.session.post(self.base + path, json=body) as answer:
            return answer.status, await answer.json(content_type=None)

    async def aclose(self) -> None:
        await self.session.close()


class HttpxClient:
    def __init__(self, base: str, token: str, connections: int) -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.client = httpx.AsyncClient(
            base_url=base,
            headers={"Authorization": f"Bearer {token}"},
            limits=limits,
            timeout=60,
        )

    async def get(self, path: str) -> tuple[int, Any]:
        answer = await self.client.get(path)
        return answer.status_code, answer.json()

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        answer = await self.client.post(path, json=body)
        return answer.status_code, answer.json()

    async def aclose(self) -> None:
        await self.client.aclose()


CLIENTS: dict[str, Callable[[str, str, int], Client]] = {
    "aiohttp": AiohttpClient,
    "httpx": HttpxClient,
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User plus system time of one process (all its threads), from /proc."""
    with Path(f"/proc/{pid}/stat").open(encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        # a thread may end while it is being read: it then simply counts for nothing
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and everything under it: with `--processes N` the serving processes
    are children of a supervisor that itself does almost nothing."""
    total = 0.0
    pending = [pid]
    seen = 0
    while pending and seen < 1024:
        current = pending.pop()
        seen += 1
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += cpu_seconds(current)
            pending += children(current)
    return total


def memory_kib(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    with Path(f"/proc/{pid}/status").open(encoding="ascii") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0])
    return values


class Server:
    """`caverna serve` in a subprocess; its output is drained so it never blocks on a pipe."""

    def __init__(self, data_dir: Path, image_processes: int | None, processes: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "CAVERNA_DATA_DIR": str(data_dir),
            "CAVERNA_API_RATE_LIMIT": "1000000/minute",
        }
        if image_processes is not None:
            env["CAVERNA_IMAGE_PROCESSES"] = str(image_processes)
        command = [sys.executable, "-m", "caverna", "serve"]
        if processes != 1:  # left out otherwise, so older servers can be measured the same way
            command += ["--processes", str(processes)]
        self.process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        self.key_seen = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line.rstrip("\n"))
            if "admin API key:" in line:
                self.key_seen.set()

    def admin_key(self) -> str:
        if not self.key_seen.wait(START_TIMEOUT):
            raise RuntimeError("no admin key printed:\n" + "\n".join(self.output))
        line = next(line for line in self.output if "admin API key:" in line)
        return line.split(": ", 1)[1].strip()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the server exited:\n" + "\n".join(self.output))
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server did not become ready")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(timeout=5)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


@dataclass
class Polling:
    requests: int
    seconds: float
    latencies_ms: list[float]
    server_cpu: float  # cores busy on average
    client_cpu: float
    errors: int

    def rate_of(self) -> float:
        return self.requests / self.seconds

    def cpu_ms_per_request(self) -> float:
        """The server's CPU per answer: steadier than the rate on a machine shared with others."""
        return self.server_cpu * self.seconds / self.requests * 1000


@dataclass
class Latency:
    clients: int
    samples_ms: list[float] = field(default_factory=list)
    failed: int = 0
    seconds: float = 0.0


async def wait_completed(client: Client, image_id: str, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, body = await client.get(f"/api/v1/images/{image_id}/status")
        if code == 200 and body["status"] in FINAL:
            return str(body["status"])
        await asyncio.sleep(POLL_SECONDS)
    raise TimeoutError(f"image {image_id} not final after {timeout} s")


async def submit(client: Client, seed: int) -> str:
    code, body = await client.post("/api/v1/images/generate", {"frame": FRAME, "seed": seed})
    if code != 202:
        raise RuntimeError(f"generate answered {code}: {body}")
    return str(body["image_id"])


async def poll_status(
    client: Client, pid: int, image_id: str, clients: int, seconds: float
) -> Polling:
    path = f"/api/v1/images/{image_id}/status"
    latencies: list[float] = []
    errors = 0
    stop_at = 0.0

    async def poller() -> None:
        nonlocal errors
        while True:
            started = time.perf_counter()
            if started >= stop_at:
                return
            code, _ = await client.get(path)
            latencies.append((time.perf_counter() - started) * 1000)
            errors += code != 200

    for _ in range(clients):  # warm-up: every connection opened, caches filled
        await client.get(path)
    cpu_before, client_before = tree_cpu_seconds(pid), time.process_time()
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(poller() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return Polling(
        requests=len(latencies),
        seconds=elapsed,
        latencies_ms=latencies,
        server_cpu=(tree_cpu_seconds(pid) - cpu_before) / elapsed,
        client_cpu=(time.process_time() - client_before) / elapsed,
        errors=errors,
    )


async def submit_to_completed(
    client: Client, clients: int, jobs: int, seeds: Iterator[int]
) -> Latency:
    result = Latency(clients)
    per_client = max(1, math.ceil(jobs / clients))

    async def one_client() -> None:
        for _ in range(per_client):
            started = time.perf_counter()
            status = await wait_completed(client, await submit(client, next(seeds)))
            if status == "completed":
                result.samples_ms.append((time.perf_counter() - started) * 1000)
            else:
                result.failed += 1

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    result.seconds = time.perf_counter() - started
    return result


def median_of(runs: list[Run], value: Callable[[Run], float]) -> float:
    return statistics.median(value(run) for run in runs)


async def run(args: argparse.Namespace, server: Server, token: str) -> None:
    pid = server.process.pid
    make = CLIENTS[args.client]
    client = make(server.url, token, max([args.clients, *args.levels]))
    seeds = itertools.count(1000)
    try:
        image_id = await submit(client, 1)
        await wait_completed(client, image_id)
        args.rss_start_kib = memory_kib(pid)["VmRSS"]

        polls: list[Polling] = []
        for attempt in range(args.repeat):
            poll = await poll_status(client, pid, image_id, args.clients, args.duration)
            polls.append(poll)
            print(
                f"  polling run {attempt + 1}: {poll.rate_of():7.0f} req/s  "
                f"p50 {statistics.median(poll.latencies_ms):6.1f} ms  "
                f"p99 {percentile(poll.latencies_ms, 0.99):6.1f} ms  "
                f"server CPU {poll.server_cpu:4.2f} cores "
                f"({poll.cpu_ms_per_request():4.2f} ms/request)  "
                f"client CPU {poll.client_cpu:4.2f}  "
                f"errors {poll.errors}",
                flush=True,
            )

        latencies: dict[int, list[Latency]] = {level: [] for level in args.levels}
        for attempt in range(args.repeat):
            for level in args.levels:
                jobs = max(args.jobs, 2 * level)
                found = await submit_to_completed(client, level, jobs, seeds)
                latencies[level].append(found)
                print(
                    f"  latency run {attempt + 1}, {level:>2} clients: "
                    f"{len(found.samples_ms)} images in {found.seconds:5.1f} s  "
                    f"median {statistics.median(found.samples_ms):7.0f} ms  "
                    f"p95 {percentile(found.samples_ms, 0.95):7.0f} ms  failed {found.failed}",
                    flush=True,
                )
    finally:
        await client.aclose()

    memory = memory_kib(pid)
    pool = [memory_kib(child)["VmRSS"] for child in children(pid)]
    report(args, polls, latencies, memory, pool)


def report(
    args: argparse.Namespace,
    polls: list[Polling],
    latencies: dict[int, list[Latency]],
    memory: dict[str, int],
    pool: list[int],
) -> None:
    def row(name: str, value: float, digits: int = 0) -> None:
        print(f"{name:<46} {value:10.{digits}f}")

    print()
    print(f"machine: {machine()}")
    print(f"load average: {args.load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    print(
        f"client: {args.client}; server: caverna serve --processes {args.processes} "
        "(embedded SQLite, preview provider); "
        f"median of {args.repeat} run(s)"
    )
    print(f"{'measure':<46} {'value':>10}")
    row(f"status polling, {args.clients} clients: requests/s", median_of(polls, Polling.rate_of))
    row("  p50 (ms)", median_of(polls, lambda p: statistics.median(p.latencies_ms)), 1)
    row("  p99 (ms)", median_of(polls, lambda p: percentile(p.latencies_ms, 0.99)), 1)
    row("  server CPU (cores busy)", median_of(polls, lambda p: p.server_cpu), 2)
    row("  server CPU per request (ms)", median_of(polls, Polling.cpu_ms_per_request), 2)
    row("  client CPU (cores busy)", median_of(polls, lambda p: p.client_cpu), 2)
    for level, found in latencies.items():
        row(
            f"submit-to-completed, {level} clients: median ms",
            median_of(found, lambda r: statistics.median(r.samples_ms)),
        )
        row("  p95 (ms)", median_of(found, lambda r: percentile(r.samples_ms, 0.95)))
        row("  images/s", median_of(found, lambda r: len(r.samples_ms) / r.seconds), 1)
    row("server RSS after its first image (MiB)", args.rss_start_kib / 1024, 1)
    row("server RSS at the end (MiB)", memory["VmRSS"] / 1024, 1)
    row("  peak RSS (MiB)", memory["VmHWM"] / 1024, 1)
    # the image pool, or with --processes N the serving processes (each with its own pool)
    row(f"  child processes ({len(pool)}), RSS together (MiB)", sum(pool) / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--client", choices=sorted(CLIENTS), default="aiohttp")
    parser.add_argument("--clients", type=int, default=64, help="concurrent status pollers")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of status polling")
    parser.add_argument(
        "--levels", type=int, nargs="*", default=[1, 16, 64], help="none: skip the latency runs"
    )
    parser.add_argument("--jobs", type=int, default=24, help="images per latency level (at least)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measure, one server")
    parser.add_argument(
        "--image-processes", type=int, default=None, help="CAVERNA_IMAGE_PROCESSES for the server"
    )
    parser.add_argument("--processes", type=int, default=1, help="caverna serve --processes N")
    args = parser.parse_args()
    args.load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        server = Server(Path(folder) / "data", args.image_processes, args.processes)
        try:
            token = server.admin_key()
            server.wait_ready()
            print(f"server pid {server.process.pid} on {server.url}", flush=True)
            asyncio.run(run(args, server, token))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
