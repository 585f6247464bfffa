"""A live `caverna serve` and Debian's Chromium driven by Playwright, for the studio's pages.

The server is a real process on a free loopback port with its own data folder and the offline
preview provider (with a little latency, so progress can be watched). Screenshots of the pages go
to `test-artifacts/screenshots/`, plus one of the page a failing test was on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from playwright.sync_api import Error as PlaywrightError

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
PASSWORD = "correct horse battery staple"
STARTUP_SECONDS = 60.0
IMAGE_SECONDS = 30.0
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_env(data_dir: Path) -> dict[str, str]:
    """The caller's environment without any Caverna setting, then exactly this test's ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAVERNA_")}
    for name in ("OPENAI_API_KEY", "STABILITY_API_KEY"):
        env.pop(name, None)
    env.update(
        {
            "CAVERNA_DATA_DIR": str(data_dir),
            "CAVERNA_IMAGE_PROCESSES": "0",
            "CAVERNA_PREVIEW_LATENCY_MS": "300",
            "CAVERNA_PROVIDERS": "preview",
            "CAVERNA_LOG_LEVEL": "WARNING",
        }
    )
    return env


@dataclass
class LiveServer:
    """A `caverna serve` process and the admin API key it printed on its first start."""

    url: str
    data_dir: Path
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    admin_key: str = ""

    def cli(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "caverna", *args],
            input=stdin,
            env=server_env(self.data_dir),
            cwd=self.data_dir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"caverna {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def api(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def new_user(self, user_id: str) -> str:
        """A fresh user with an API key (through the admin API): an empty gallery of its own."""
        with self.api(self.admin_key) as client:
            answer = client.post(f"/api/v1/admin/users/{user_id}/keys", json={})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["token"])

    def make_image(self, key: str, **params: Any) -> str:
        """Generate one image through the JSON API and wait until it is done; its id."""
        with self.api(key) as client:
            answer = client.post("/api/v1/images/generate", json=params)
            assert answer.status_code == 202, answer.text
            image_id = str(answer.json()["image_id"])
            deadline = time.monotonic() + IMAGE_SECONDS
            while time.monotonic() < deadline:
                status = client.get(f"/api/v1/images/{image_id}/status").json()
                if status["status"] == "completed":
                    return image_id
                assert status["status"] in ("queued", "processing"), status
                time.sleep(0.1)
        raise AssertionError(f"image {image_id} did not finish in {IMAGE_SECONDS} s")


def _drain(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip("\n"))


def _start(data_dir: Path) -> LiveServer:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "caverna", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env(data_dir),
        cwd=data_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = LiveServer(f"http://127.0.0.1:{port}", data_dir, process)
    threading.Thread(target=_drain, args=(process, server.output), daemon=True).start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            time.sleep(0.2)  # let the reader thread collect the last lines
            raise AssertionError("caverna serve exited:\n" + "\n".join(server.output))
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    else:
        _stop(process)
        raise AssertionError("caverna serve did not answer:\n" + "\n".join(server.output))
    # the first-start key is printed before the server answers
    keys = [line.split(": ", 1)[1] for line in server.output if "admin API key:" in line]
    assert len(keys) == 1, server.output
    server.admin_key = keys[0].strip()
    return server


def _stop(process: subprocess.Popen[str]) -> None:
    """Stop this one process, by its PID: politely, then for good."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the whole e2e package; every test brings its own images or users."""
    data_dir = tmp_path_factory.mktemp("e2e-data")
    live = _start(data_dir)
    try:
        # `ana`: a normal user who signs in with a password, as a person would
        key = live.cli("keys", "create", "--user", "ana").strip().splitlines()[-1]
        assert key.startswith("cav_"), key
        live.cli("users", "set-password", "ana", "--password-stdin", stdin=PASSWORD + "\n")
        yield live
    finally:
        _stop(live.process)


# -- the browser ---------------------------------------------------------------------------------


def chromium_path() -> str:
    found = shutil.which("chromium")
    if found is None:
        reason = (
            "Chromium is not installed: `make test` installs Debian's `chromium` package "
            "(or run `apt-get install chromium`)"
        )
        if IN_CI:
            pytest.fail(f"{reason}; under CI the browser tests must run", pytrace=False)
        pytest.skip(reason)
    return found


def chromium_args() -> list[str]:
    # no update checks, no component downloads: the tests talk to loopback only
    args = ["--disable-background-networking", "--disable-component-update"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args += ["--no-sandbox", "--disable-gpu"]  # Chromium refuses its sandbox as root
    return args


@pytest.fixture(scope="package")
def chromium() -> str:
    """Debian's Chromium: the tests skip with the reason without it (and fail under CI)."""
    return chromium_path()


@pytest.fixture(scope="package")
def browser(chromium: str) -> Iterator[Browser]:
    with sync_playwright() as driver:
        launched = driver.chromium.launch(
            executable_path=chromium, headless=True, args=chromium_args()
        )
        try:
            yield launched
        finally:
            launched.close()


class Screenshots:
    """Full-page screenshots into test-artifacts/screenshots/, named after the page and state."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def save(self, page: Page, name: str) -> Path:
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture(scope="package")
def screenshots() -> Screenshots:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):  # the folder shows this run only
        old.unlink()
    return Screenshots(SCREENSHOTS)


@dataclass
class Contexts:
    """Browser contexts for one test (each a separate set of cookies), closed at its end."""

    browser: Browser
    base_url: str
    opened: list[BrowserContext] = field(default_factory=list)

    def new(self, **options: Any) -> BrowserContext:
        options.setdefault("locale", "en-US")
        options.setdefault("viewport", {"width": 1280, "height": 900})
        context = self.browser.new_context(base_url=self.base_url, **options)
        context.set_default_timeout(15_000)
        self.opened.append(context)
        return context


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.fixture
def contexts(
    request: pytest.FixtureRequest, browser: Browser, server: LiveServer, screenshots: Screenshots
) -> Iterator[Contexts]:
    made = Contexts(browser, server.url)
    yield made
    failed = request.node.stash.get(_FAILED, False)
    for number, context in enumerate(made.opened):
        if failed:
            for index, page in enumerate(context.pages):
                name = f"FAILED-{request.node.name}-{number}-{index}"
                # a crashed page has no screenshot; the failure itself says why
                with contextlib.suppress(PlaywrightError):
                    screenshots.save(page, name)
        context.close()


@pytest.fixture
def page(contexts: Contexts) -> Page:
    """A fresh, signed-out page on the live server (desktop size, English)."""
    return contexts.new().new_page()


def sign_in(page: Page, user: str = "ana", password: str = PASSWORD) -> None:
    page.goto("/login")
    page.fill("#user", user)
    page.fill("#password", password)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)


def sign_in_with_key(page: Page, key: str) -> None:
    page.goto("/login")
    page.fill("#api_key", key)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)
