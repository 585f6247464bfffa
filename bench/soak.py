"""Soak test: a steady mix of submits and status polls against a real `caverna serve` (embedded).

The server runs as a subprocess on a free loopback port (SQLite, local storage, the preview
provider, a temporary data folder, the per-key rate limit raised out of the way); its first-start
admin key creates `--users` users with a key each, so the load is spread like real traffic.

The load is open-loop: request i of a stream is due at start + i / rate whether or not earlier
ones have answered, and its latency is counted from that due time. A server that falls behind
therefore shows up as growing latency (and, past `--max-backlog` requests waiting, as `backlog`
errors), never as a quietly lower rate. Submits mix a few seeds per user, which the server
answers by reusing the image, with new seeds (`--new-images`, the fraction that renders), so the
render rate stays within what the machine can do while the request rate is the one asked for.

Every `--window` seconds it records submits and polls done, errors by status, p50/p95/p99 of
each, the server's resident memory (with its image worker processes) and CPU, and the queue
(queued and running jobs, from the admin stats). At the end it writes `report.md` (a table per
window, a summary with the least-squares slope of RSS and p99 over time and a stable/unstable
verdict), `windows.json`, and `chart.png` into `--out`.

    .venv/bin/python -m bench.soak [--minutes 10] [--submit-rate 50] [--poll-rate 500]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image, ImageDraw, ImageFont

from bench.bench_api import FRAME, Server, children, cpu_seconds, memory_kib
from bench.bench_prompts import machine

# a rate or slope is "flat" when the trend over the whole run stays within this share of the mean
RSS_GROWTH_LIMIT = 0.10
P99_GROWTH_LIMIT = 0.50
REUSED_SEEDS = 8
RECENT_IMAGES = 200
DRAIN_SECONDS = 30.0


@dataclass
class Stream:
    """Latencies (ms) and outcomes of one kind of request within the current window."""

    latencies: list[float] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)

    def take(self) -> Stream:
        taken = Stream(self.latencies, self.errors)
        self.latencies, self.errors = [], collections.Counter()
        return taken


@dataclass
class Window:
    end_s: float
    submits: int
    polls: int
    errors: dict[str, int]
    submit_ms: dict[str, float]
    poll_ms: dict[str, float]
    rss_mib: float
    cpu_percent: float
    queued: int | None
    running: int | None
    load: float  # the machine's 1-minute load average: the server shares its cores


@dataclass
class Load:
    """What the streams share: who asks, which images exist, how many requests are waiting."""

    session: aiohttp.ClientSession
    base: str
    tokens: list[str]
    recent: list[collections.deque[str]]
    submit: Stream = field(default_factory=Stream)
    poll: Stream = field(default_factory=Stream)
    new_fraction: float = 0.05
    in_flight: int = 0
    new_seed: int = 1_000_000
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    return {name: percentile(values, q) for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of y over x (NaN values left out; 0 with fewer than two points)."""
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if not math.isnan(y)]
    if len(pairs) < 2:
        return 0.0
    mean_x = sum(x for x, _ in pairs) / len(pairs)
    mean_y = sum(y for _, y in pairs) / len(pairs)
    spread = sum((x - mean_x) ** 2 for x, _ in pairs)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in pairs) / spread


def tree_pids(pid: int) -> list[int]:
    """The server and every process under it (the image pool, and whatever those start)."""
    found: list[int] = []
    pending = [pid]
    while pending and len(found) < 1024:
        current = pending.pop()
        found.append(current)
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            pending += children(current)
    return found


def tree_rss_mib(pid: int) -> float:
    total = 0
    for member in tree_pids(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += memory_kib(member).get("VmRSS", 0)
    return total / 1024


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for member in tree_pids(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += cpu_seconds(member)
    return total


async def one_request(load: Load, kind: str, due: float) -> None:
    """One submit or poll, timed from its due time; any failure is counted under its status."""
    stream = load.submit if kind == "submit" else load.poll
    user = random.randrange(len(load.tokens))
    headers = {"Authorization": f"Bearer {load.tokens[user]}"}
    outcome = "ok"
    try:
        if kind == "submit":
            if random.random() < load.new_fraction:
                load.new_seed += 1
                seed = load.new_seed
            else:
                seed = random.randrange(REUSED_SEEDS)
            body = {"frame": FRAME, "seed": seed}
            url = f"{load.base}/api/v1/images/generate"
            async with load.session.post(url, json=body, headers=headers) as answer:
                payload = await answer.json(content_type=None)
                if answer.status == 202:
                    load.recent[user].append(str(payload["image_id"]))
                else:
                    outcome = str(answer.status)
        else:
            image_id = random.choice(load.recent[user])
            url = f"{load.base}/api/v1/images/{image_id}/status"
            async with load.session.get(url, headers=headers) as answer:
                await answer.read()
                if answer.status != 200:
                    outcome = str(answer.status)
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        outcome = type(exc).__name__
    finally:
        load.in_flight -= 1
    if outcome == "ok":
        stream.latencies.append((time.monotonic() - due) * 1000)
    else:
        stream.errors[f"{kind} {outcome}"] += 1


async def drive(load: Load, kind: str, rate: float, stop_at: float, max_backlog: int) -> None:
    """Starts each request at its due time (several per wake-up when the loop runs late)."""
    started = time.monotonic()
    stream = load.submit if kind == "submit" else load.poll
    index = 0
    while True:
        due = started + index / rate
        if due >= stop_at:
            return
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if load.in_flight >= max_backlog:
            stream.errors[f"{kind} backlog"] += 1
        else:
            load.in_flight += 1
            task = asyncio.create_task(one_request(load, kind, due))
            load.tasks.add(task)
            task.add_done_callback(load.tasks.discard)
        index += 1


async def queue_depth(load: Load, admin: str) -> tuple[int | None, int | None]:
    try:
        async with load.session.get(
            f"{load.base}/api/v1/admin/stats",
            headers={"Authorization": f"Bearer {admin}"},
            timeout=aiohttp.ClientTimeout(total=20),
        ) as answer:
            jobs = (await answer.json(content_type=None)).get("jobs", {})
            return int(jobs.get("queued", 0)), int(jobs.get("running", 0))
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None, None


async def record(
    load: Load, server_pid: int, admin: str, window: float, stop_at: float, begun: float
) -> list[Window]:
    windows: list[Window] = []
    cpu_before, clock_before = tree_cpu_seconds(server_pid), time.monotonic()
    tick = 1
    while True:
        end = begun + tick * window
        if end > stop_at + 1e-6:
            return windows
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        submits, polls = load.submit.take(), load.poll.take()
        cpu_now, clock_now = tree_cpu_seconds(server_pid), time.monotonic()
        cpu = 100 * (cpu_now - cpu_before) / max(1e-9, clock_now - clock_before)
        cpu_before, clock_before = cpu_now, clock_now
        queued, running = await queue_depth(load, admin)
        entry = Window(
            end_s=round(end - begun, 1),
            submits=len(submits.latencies),
            polls=len(polls.latencies),
            errors=dict(submits.errors + polls.errors),
            submit_ms=summary_ms(submits.latencies),
            poll_ms=summary_ms(polls.latencies),
            rss_mib=tree_rss_mib(server_pid),
            cpu_percent=cpu,
            queued=queued,
            running=running,
            load=os.getloadavg()[0],
        )
        windows.append(entry)
        print(
            f"{entry.end_s:6.0f}s submits {entry.submits:5d} polls {entry.polls:6d} "
            f"errors {sum(entry.errors.values()):4d} p99 submit {entry.submit_ms['p99']:7.1f} "
            f"poll {entry.poll_ms['p99']:7.1f} ms  rss {entry.rss_mib:6.1f} MiB  "
            f"cpu {cpu:5.0f}%  queue {queued}/{running}  load {entry.load:4.1f}",
            flush=True,
        )
        tick += 1


async def make_users(
    session: aiohttp.ClientSession, base: str, admin: str, users: int
) -> list[str]:
    tokens = []
    for number in range(users):
        async with session.post(
            f"{base}/api/v1/admin/users/soak-{number}/keys",
            json={"role": "user"},
            headers={"Authorization": f"Bearer {admin}"},
        ) as answer:
            if answer.status != 201:
                raise RuntimeError(f"could not create a key: {answer.status} {await answer.text()}")
            tokens.append(str((await answer.json())["token"]))
    return tokens


async def soak(args: argparse.Namespace, server: Server, admin: str) -> list[Window]:
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tokens = await make_users(session, server.url, admin, args.users)
        recent = [collections.deque[str](maxlen=RECENT_IMAGES) for _ in tokens]
        load = Load(session, server.url, tokens, recent, new_fraction=args.new_images)
        for user, token in enumerate(tokens):  # every user has an image to poll from the start
            async with session.post(
                f"{server.url}/api/v1/images/generate",
                json={"frame": FRAME, "seed": 0},
                headers={"Authorization": f"Bearer {token}"},
            ) as answer:
                load.recent[user].append(str((await answer.json())["image_id"]))
        begun = time.monotonic()
        stop_at = begun + args.minutes * 60
        recorder = asyncio.create_task(
            record(load, server.process.pid, admin, args.window, stop_at, begun)
        )
        await asyncio.gather(
            drive(load, "submit", args.submit_rate, stop_at, args.max_backlog),
            drive(load, "poll", args.poll_rate, stop_at, args.max_backlog),
        )
        windows = await recorder
        if load.tasks:  # the last requests are let finish, but not forever
            await asyncio.wait(set(load.tasks), timeout=DRAIN_SECONDS)
        for task in list(load.tasks):
            task.cancel()
        return windows


def verdict(windows: Sequence[Window]) -> dict[str, Any]:
    """Trends over the run, the first window (warm-up) left out when there are enough."""
    steady = list(windows[1:]) if len(windows) >= 4 else list(windows)
    minutes = [w.end_s / 60 for w in steady]
    span = (minutes[-1] - minutes[0]) if len(minutes) > 1 else 0.0
    rss = [w.rss_mib for w in steady]
    result: dict[str, Any] = {
        "rss_slope_mib_per_min": slope(minutes, rss),
        "submit_p99_slope_ms_per_min": slope(minutes, [w.submit_ms["p99"] for w in steady]),
        "poll_p99_slope_ms_per_min": slope(minutes, [w.poll_ms["p99"] for w in steady]),
        "errors": sum(sum(w.errors.values()) for w in windows),
    }
    reasons = []
    mean_rss = sum(rss) / len(rss) if rss else 0.0
    if mean_rss and result["rss_slope_mib_per_min"] * span > RSS_GROWTH_LIMIT * mean_rss:
        reasons.append("RSS grows")
    for kind in ("submit", "poll"):
        values = [
            (w.submit_ms if kind == "submit" else w.poll_ms)["p99"]
            for w in steady
            if not math.isnan((w.submit_ms if kind == "submit" else w.poll_ms)["p99"])
        ]
        mean = sum(values) / len(values) if values else 0.0
        if mean and result[f"{kind}_p99_slope_ms_per_min"] * span > P99_GROWTH_LIMIT * mean:
            reasons.append(f"{kind} p99 grows")
    if result["errors"]:
        reasons.append(f"{result['errors']} errors")
    result["verdict"] = "stable" if not reasons else "unstable"
    result["reasons"] = reasons
    return result


def write_report(
    out: Path, args: argparse.Namespace, windows: Sequence[Window], trend: dict[str, Any]
) -> None:
    def ms(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:.1f}"

    lines = [
        "# Soak run",
        "",
        "`caverna serve` (embedded: SQLite, local storage, preview provider) for"
        f" {args.minutes} min:"
        f" {args.submit_rate} submits/s ({args.new_images:.0%} new images) and"
        f" {args.poll_rate} status polls/s, open-loop, over {args.users} users;"
        f" {args.processes} serving process(es).",
        f"Machine: {machine()}. Load average at the start: {args.load_before:.2f}, at the end:"
        f" {os.getloadavg()[0]:.2f}.",
        "",
        "| end (s) | submits | polls | errors | submit p50/p95/p99 (ms) | poll p50/p95/p99 (ms) |"
        " RSS (MiB) | CPU % | queued/running | load |",
        "|---:|---:|---:|---|---|---|---:|---:|---|---:|",
    ]
    for w in windows:
        errors = ", ".join(f"{name}: {count}" for name, count in sorted(w.errors.items())) or "0"
        lines.append(
            f"| {w.end_s:.0f} | {w.submits} | {w.polls} | {errors} | "
            f"{ms(w.submit_ms['p50'])} / {ms(w.submit_ms['p95'])} / {ms(w.submit_ms['p99'])} | "
            f"{ms(w.poll_ms['p50'])} / {ms(w.poll_ms['p95'])} / {ms(w.poll_ms['p99'])} | "
            f"{w.rss_mib:.1f} | {w.cpu_percent:.0f} | {w.queued}/{w.running} | {w.load:.1f} |"
        )
    seconds = windows[-1].end_s if windows else 0.0
    submits = sum(w.submits for w in windows)
    polls = sum(w.polls for w in windows)
    lines += [
        "",
        "## Summary",
        "",
        "| measure | value |",
        "|---|---|",
        f"| submits answered (per s) | {submits} ({submits / max(seconds, 1):.1f}) |",
        f"| polls answered (per s) | {polls} ({polls / max(seconds, 1):.1f}) |",
        f"| errors | {trend['errors']} |",
        f"| median of window p99, submit / poll | "
        f"{ms(_median([w.submit_ms['p99'] for w in windows]))} / "
        f"{ms(_median([w.poll_ms['p99'] for w in windows]))} ms |",
        f"| RSS first / last / peak window | {windows[0].rss_mib:.1f} / "
        f"{windows[-1].rss_mib:.1f} / {max(w.rss_mib for w in windows):.1f} MiB |"
        if windows
        else "| RSS | - |",
        f"| RSS slope | {trend['rss_slope_mib_per_min']:+.2f} MiB/min |",
        f"| p99 slope, submit / poll | {trend['submit_p99_slope_ms_per_min']:+.2f} / "
        f"{trend['poll_p99_slope_ms_per_min']:+.2f} ms/min |",
        f"| verdict | **{trend['verdict']}**"
        + (f" ({'; '.join(trend['reasons'])})" if trend["reasons"] else "")
        + " |",
        "",
        f"Slopes are least-squares fits over the windows (the first, a warm-up, left out when there"
        " are four or more); stable means no errors,"
        f" RSS growing by less than {RSS_GROWTH_LIMIT:.0%} and p99 by less than"
        f" {P99_GROWTH_LIMIT:.0%} of their means over the run. Chart: `chart.png`.",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    (out / "windows.json").write_text(
        json.dumps({"windows": [asdict(w) for w in windows], "trend": trend}, indent=2) + "\n",
        encoding="utf-8",
    )


def _median(values: Sequence[float]) -> float:
    present = [v for v in values if not math.isnan(v)]
    return statistics.median(present) if present else math.nan


def draw_chart(path: Path, windows: Sequence[Window]) -> None:
    """Two panels over time: RSS (MiB), and p99 of submits and polls (ms)."""
    width, height, margin = 900, 620, 70
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    xs = [w.end_s for w in windows] or [0.0]
    x_max = max(xs) or 1.0
    panels: list[tuple[str, list[tuple[str, str, list[float]]]]] = [
        ("server RSS (MiB)", [("RSS", "#1f6feb", [w.rss_mib for w in windows])]),
        (
            "p99 latency (ms)",
            [
                ("submit", "#d1242f", [w.submit_ms["p99"] for w in windows]),
                ("poll", "#1a7f37", [w.poll_ms["p99"] for w in windows]),
            ],
        ),
    ]
    panel_height = (height - 2 * margin) // 2
    for number, (title, series) in enumerate(panels):
        top = margin // 2 + number * (panel_height + margin)
        bottom = top + panel_height - 20
        left, right = margin, width - 30
        values = [v for _, _, ys in series for v in ys if not math.isnan(v)] or [0.0]
        y_max = max(values) * 1.1 or 1.0
        draw.rectangle((left, top, right, bottom), outline="#888888")
        draw.text((left, top - 14), title, fill="black", font=font)
        for step in range(5):
            value = y_max * step / 4
            y = bottom - (bottom - top) * step / 4
            draw.line((left - 4, y, left, y), fill="#888888")
            draw.text((5, y - 6), f"{value:.0f}", fill="black", font=font)
        for step in range(5):
            x = left + (right - left) * step / 4
            draw.line((x, bottom, x, bottom + 4), fill="#888888")
            draw.text((x - 10, bottom + 6), f"{x_max * step / 4:.0f}s", fill="black", font=font)
        for index, (name, colour, ys) in enumerate(series):
            points = [
                (left + (right - left) * x / x_max, bottom - (bottom - top) * y / y_max)
                for x, y in zip(xs, ys, strict=False)
                if not math.isnan(y)
            ]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            for px, py in points:
                draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=colour)
            draw.text((right - 120, top + 6 + 14 * index), name, fill=colour, font=font)
    image.save(path)


def _exit_on_term(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--submit-rate", type=float, default=50.0, help="submits per second")
    parser.add_argument("--poll-rate", type=float, default=500.0, help="status polls per second")
    parser.add_argument("--window", type=float, default=30.0, help="seconds per recorded window")
    parser.add_argument("--users", type=int, default=8, help="users, one key each")
    parser.add_argument(
        "--new-images", type=float, default=0.05, help="fraction of submits with a new seed"
    )
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--max-backlog", type=int, default=5000, help="requests waiting at most")
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument("--image-processes", type=int, default=None)
    parser.add_argument("--processes", type=int, default=1, help="caverna serve --processes N")
    parser.add_argument("--out", type=Path, default=Path("bench-results/soak"))
    args = parser.parse_args(argv)
    if not (0 < args.minutes <= 120 and args.submit_rate > 0 and args.poll_rate > 0):
        parser.error("--minutes must be in (0, 120] and the rates positive")
    if not 0 <= args.new_images <= 1:
        parser.error("--new-images is a fraction between 0 and 1")
    args.out.mkdir(parents=True, exist_ok=True)
    args.load_before = os.getloadavg()[0]
    # A plain SIGTERM would end the process without running the finally below and leave the
    # server running; turning it into SystemExit lets the cleanup stop the server first.
    signal.signal(signal.SIGTERM, _exit_on_term)
    with tempfile.TemporaryDirectory() as folder:
        os.environ.setdefault("CAVERNA_LOG_LEVEL", "WARNING")
        server = Server(Path(folder) / "data", args.image_processes, args.processes)
        try:
            admin = server.admin_key()
            server.wait_ready()
            print(f"server pid {server.process.pid} on {server.url}", flush=True)
            windows = asyncio.run(soak(args, server, admin))
        finally:
            server.stop()
    trend = verdict(windows)
    write_report(args.out, args, windows, trend)
    draw_chart(args.out / "chart.png", windows)
    print(f"verdict: {trend['verdict']} {trend['reasons']}; report in {args.out}/report.md")
    return 0 if trend["verdict"] == "stable" else 1


if __name__ == "__main__":
    sys.exit(main())
