"""`caverna serve` as a real process over real HTTP: first-start key, generate, SSE, media."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "CAVERNA_DATA_DIR": str(data_dir), "CAVERNA_IMAGE_PROCESSES": "0"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "caverna", "serve", "--port", str(self.port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.process.stdout.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("server did not start")

    def stop(self) -> str:
        self.process.terminate()
        try:
            out, _ = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return out


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_serve_end_to_end_over_http(data_dir: Path) -> None:
    server = Server(data_dir)
    try:
        server.wait_ready()  # the first admin key is printed before the server answers
    finally:
        first_output = server.stop()
    keys = [
        line.split(": ", 1)[1] for line in first_output.splitlines() if "admin API key:" in line
    ]
    assert len(keys) == 1
    assert keys[0].startswith("cav_")
    assert f"http://127.0.0.1:{server.port}" in first_output

    again = Server(data_dir)  # a second start reuses the data and prints no key
    try:
        again.wait_ready()
        headers = {"Authorization": f"Bearer {keys[0]}"}
        with httpx.Client(base_url=again.url, timeout=30, headers=headers) as client:
            answer = client.post(
                "/api/v1/images/generate",
                json={"frame": "onboarding/lighting-the-torch", "seed": 3},
            )
            assert answer.status_code == 202, answer.text
            events_url = answer.json()["events_url"]
            statuses = []
            with client.stream("GET", events_url) as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                event = ""
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "status":
                        statuses.append(json.loads(line[6:]))
                    elif line.startswith("data: ") and event == "end":
                        break
            assert statuses[-1]["status"] == "completed"
            image = client.get(statuses[-1]["url"], headers={"Authorization": ""})
            assert image.status_code == 200
            assert image.content[:4] == b"RIFF"
            listing = client.get("/api/v1/images/user/admin").json()
            assert [item["image_id"] for item in listing["items"]] == [answer.json()["image_id"]]
    finally:
        second_output = again.stop()
    assert "admin API key" not in second_output
