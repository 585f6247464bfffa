"""`caverna serve --processes 2` as a real process tree: one port, two servers, shared work."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

FRAME = "onboarding/lighting-the-torch"
FINAL = {"completed", "failed", "cancelled"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(
    data_dir: Path, port: int, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "caverna", "serve", "--port", str(port), *args],
        env={
            **os.environ,
            "CAVERNA_DATA_DIR": str(data_dir),
            "CAVERNA_IMAGE_PROCESSES": "0",
            **(env or {}),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


class Reader(threading.Thread):
    """Drains the server's output as it comes, so a test never blocks reading a live pipe."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True)
        self.process = process
        self.lines: list[str] = []
        self.start()

    def run(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def serving_children(pid: int) -> list[int]:
    """The spawned server processes (not multiprocessing's resource tracker)."""
    serving = []
    for child in children(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in command:
            serving.append(child)
    return serving


def wait_ready(url: str, process: subprocess.Popen[str], reader: Reader) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            reader.join(10)
            raise AssertionError("server exited:\n" + "\n".join(reader.lines))
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become ready")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads the process tree in /proc")
def test_two_processes_share_one_port_and_finish_the_jobs(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(tmp_path / "data", port, "--processes", "2")
    reader = Reader(process)
    servers: list[int] = []
    try:
        wait_ready(url, process, reader)
        # both servers are up once both answer their supervisor; readiness of one is not enough
        deadline = time.monotonic() + 60
        while len(serving_children(process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        servers = serving_children(process.pid)
        assert len(servers) == 2
        key_line = next((line for line in reader.lines if "admin API key:" in line), "")
        assert key_line, "no admin key printed"
        key = key_line.split(": ", 1)[1]
        headers = {"Authorization": f"Bearer {key.strip()}"}
        image_ids = []
        # a fresh connection per request lets the kernel hand them to either process
        for seed in range(8):
            answer = httpx.post(
                f"{url}/api/v1/images/generate",
                json={"frame": FRAME, "seed": seed},
                headers=headers,
                timeout=30,
            )
            assert answer.status_code == 202, answer.text
            image_ids.append(answer.json()["image_id"])
        statuses: dict[str, str] = {}
        deadline = time.monotonic() + 120
        while len(statuses) < len(image_ids) and time.monotonic() < deadline:
            for image_id in image_ids:
                body = httpx.get(
                    f"{url}/api/v1/images/{image_id}/status", headers=headers, timeout=30
                ).json()
                if body["status"] in FINAL:
                    statuses[image_id] = body["status"]
            time.sleep(0.2)
        assert statuses == dict.fromkeys(image_ids, "completed")
        # each image was rendered once, whichever process claimed it
        attempts = [
            httpx.get(f"{url}/api/v1/images/{image_id}", headers=headers, timeout=30).json()[
                "attempts"
            ]
            for image_id in image_ids
        ]
        assert attempts == [1] * len(image_ids)
    finally:
        stop(process)
        reader.join(30)
    output = "\n".join(reader.lines)
    assert output.count("admin API key:") == 1
    assert f"http://127.0.0.1:{port}, 2 processes" in output
    assert "Traceback" not in output
    for server in servers:
        assert not Path(f"/proc/{server}").exists()


def test_port_zero_prints_the_port_the_processes_share(tmp_path: Path) -> None:
    process = start(tmp_path / "data", 0, "--processes", "2")
    reader = Reader(process)
    try:
        deadline = time.monotonic() + 60
        found = None
        while found is None and time.monotonic() < deadline and process.poll() is None:
            line = next((line for line in reader.lines if ", 2 processes" in line), "")
            found = re.search(r"http://127\.0\.0\.1:(\d+), 2 processes", line)
            time.sleep(0.1)
        assert found is not None, "\n".join(reader.lines)
        port = int(found.group(1))
        assert port != 0
        wait_ready(f"http://127.0.0.1:{port}", process, reader)
    finally:
        stop(process)
        reader.join(30)


def test_a_bad_process_count_is_refused_before_anything_starts(tmp_path: Path) -> None:
    for args, env in ((["--processes", "0"], None), ([], {"CAVERNA_SERVE_PROCESSES": "lots"})):
        process = start(tmp_path / "data", free_port(), *args, env=env)
        out = process.communicate(timeout=60)[0]
        assert process.returncode == 2, out
        assert "--processes" in out
    assert not (tmp_path / "data" / "caverna.db").exists()
