"""The deployment assets cannot run here (no container runtime, no systemd, no Prometheus), so
these tests check what can be checked: the files parse, name real commands and settings, and
every metric and label the alert rules use is one a running app exports."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from caverna.api.app import ApiOptions, create_app
from caverna.bootstrap import build_container, open_runtime
from caverna.cli.app import app as cli
from caverna.config import Settings
from caverna.providers.preview import PreviewProvider
from caverna.providers.resilience import BreakerState
from caverna.storage.factory import parse_storage_url
from caverna.storage.s3 import S3Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
COMPOSE = DEPLOY / "compose.yaml"
SYSTEMD = DEPLOY / "systemd"
OPERATIONS = ROOT / "docs" / "operations.md"

# metrics of other exporters the rules may use: Prometheus's scrape status, the blackbox exporter
FOREIGN_METRICS = {"up": {"job", "instance"}, "probe_success": {"job", "instance"}}
PROMQL_WORDS = {
    "sum",
    "max",
    "min",
    "by",
    "on",
    "and",
    "or",
    "unless",
    "without",
    "ignoring",
    "rate",
    "increase",
    "delta",
    "deriv",
    "clamp_min",
    "min_over_time",
    "max_over_time",
    "offset",
}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
# settings read under their usual names rather than CAVERNA_*
USUAL_NAMES = {"OPENAI_API_KEY", "STABILITY_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


@pytest.fixture
async def exported(tmp_path: Path) -> dict[str, set[str]]:
    """Every series name a freshly started app exports, with the label names it carries.

    One provider call and one request are recorded first, so labelled series have samples.
    """
    container = build_container(Settings(data_dir=tmp_path, image_processes=0))
    runtime = await open_runtime(container, providers={"preview": PreviewProvider()})
    try:
        application = create_app(container, runtime=runtime, options=ApiOptions(run_workers=False))
        assert runtime.metrics is not None
        runtime.metrics.observe("preview", "ok", 0.5, 0.01, BreakerState.CLOSED)
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://caverna.test") as client:
            assert (await client.get("/healthz")).status_code == 200
            text = (await client.get("/metrics")).text
    finally:
        await runtime.aclose()
    series: dict[str, set[str]] = {}
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? ", line)
        if match and not line.startswith("#"):
            labels = {pair.split("=")[0] for pair in re.findall(r'(\w+)="', match.group(2) or "")}
            series.setdefault(match.group(1), set()).update(labels)
    return series


def families(series: dict[str, set[str]]) -> dict[str, str]:
    """caverna_* metric families and their type, read back from the exported series names."""
    found: dict[str, str] = {}
    for name in series:
        if not name.startswith("caverna_") or name.endswith("_created"):
            continue
        for kind, endings in SUFFIXES.items():
            for ending in endings:
                if ending and name.endswith(ending):
                    found.setdefault(name.removesuffix(ending), kind)
                    break
            else:
                continue
            break
        else:
            found.setdefault(name, "gauge")
    return found


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names in its selector) for every metric an expression reads."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    found: list[tuple[str, set[str]]] = []
    for match in re.finditer(r"\b([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?", without_strings):
        name, selector = match.group(1), match.group(2) or ""
        before = without_strings[: match.start()].rstrip()
        if name in PROMQL_WORDS or (before.endswith(("(", ",")) and _in_grouping(before)):
            continue
        if re.fullmatch(r"\d+[smhd]?", name) or before.endswith("["):
            continue
        found.append((name, set(re.findall(r"(\w+)\s*[=!]~?", selector))))
    return found


def _in_grouping(before: str) -> bool:
    # label lists follow `by (`, `on (`, `without (` and `ignoring (`
    opened = before[: before.rfind("(")].rstrip() if "(" in before else ""
    return opened.endswith(("by", "on", "without", "ignoring")) and ")" not in before.split("(")[-1]


def test_alert_rules_are_well_formed() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))
    assert len(names) >= 10
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"])
        runbook = rule["annotations"].get("runbook")
        if runbook is not None:
            page, _, anchor = runbook.partition("#")
            assert page == "docs/operations.md"
            headings = re.findall(r"^#+ (.+)$", OPERATIONS.read_text(encoding="utf-8"), re.M)
            anchors = {
                re.sub(r"[^\w -]", "", h).strip().lower().replace(" ", "-") for h in headings
            }
            assert anchor in anchors, runbook


async def test_every_metric_and_label_an_alert_uses_is_exported(
    exported: dict[str, set[str]],
) -> None:
    covered = {"breaker": False, "http": False, "jobs": False, "provider": False}
    for rule in rules():
        used = selectors(rule["expr"])
        assert used, rule["alert"]
        for name, labels in used:
            if name in FOREIGN_METRICS:
                assert labels <= FOREIGN_METRICS[name], (rule["alert"], name)
                continue
            assert name in exported, f"{rule['alert']} reads {name}, which the app never exports"
            assert labels <= exported[name], (rule["alert"], name, labels - exported[name])
            covered["breaker"] |= name == "caverna_provider_breaker_state"
            covered["http"] |= name == "caverna_http_requests_total"
            covered["jobs"] |= name == "caverna_jobs"
            covered["provider"] |= name == "caverna_provider_requests_total"
    assert all(covered.values()), covered


def test_the_expression_reader_sees_metrics_and_skips_functions() -> None:
    assert selectors('sum by (provider) (rate(x_total{outcome!="ok", a=~"b"}[5m])) > 0.2') == [
        ("x_total", {"outcome", "a"})
    ]
    assert selectors("up == 0 and on () y") == [("up", set()), ("y", set())]


async def test_the_metrics_table_lists_exactly_the_exported_families(
    exported: dict[str, set[str]],
) -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text[text.index("## Metrics") : text.index("## Alerts")]
    documented = {
        row[0]: row[1]
        for row in re.findall(r"^\| `(caverna_\w+)` \| (\w+) \|", section, re.MULTILINE)
    }
    assert documented == families(exported)
    documented_alerts = set(re.findall(r"^\| `(Caverna\w+)` \|", text, re.MULTILINE))
    assert documented_alerts == {rule["alert"] for rule in rules()}


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    return services


def setting_names() -> set[str]:
    return {f"CAVERNA_{name.upper()}" for name in Settings.model_fields} | USUAL_NAMES


def assert_cli_accepts(argv: list[str]) -> None:
    """The command exists and takes these options (checked by asking it for --help)."""
    assert argv[0] == "caverna", argv
    words = [word for word in argv[1:] if not word.startswith("-")]
    commands = [word for word in words if word.isalpha() or "-" in word]
    path: list[str] = []
    for word in commands:
        result = CliRunner().invoke(cli, [*path, word, "--help"])
        if result.exit_code != 0:
            break
        path.append(word)
    result = CliRunner().invoke(cli, [*path, "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, argv
    for option in (word.split("=")[0] for word in argv[1:] if word.startswith("--")):
        assert option in result.output, (argv, option)


def test_compose_wires_the_scale_out_services() -> None:
    services = compose_services()
    assert {"postgres", "redis", "minio", "minio-init", "migrate", "api", "worker"} <= set(services)
    assert services["api"]["command"] == [
        "caverna",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--no-workers",
    ]
    worker = services["worker"]
    assert worker["command"][:2] == ["caverna", "worker"]
    # every replica serves its metrics, and the health check asks that endpoint's /healthz
    port = worker["command"][worker["command"].index("--metrics-port") + 1]
    assert worker["command"][worker["command"].index("--metrics-host") + 1] == "0.0.0.0"
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(worker["healthcheck"]["test"])
    assert worker["deploy"]["replicas"] == 2
    for name in ("migrate", "api", "worker"):
        service = services[name]
        assert_cli_accepts(service["command"])
        environment = service["environment"]
        assert set(environment) <= setting_names(), name
        assert environment["CAVERNA_DATABASE_URL"].startswith("postgresql://")
        assert environment["CAVERNA_REDIS_URL"].startswith("redis://redis:")
        spec = parse_storage_url(environment["CAVERNA_STORAGE_URL"], data_dir=Path())
        assert isinstance(spec, S3Settings)
        assert spec.endpoint == "http://minio:9000"
        assert f"local/{spec.bucket}" in " ".join(services["minio-init"]["command"])
        Settings(**{k.removeprefix("CAVERNA_").lower(): v for k, v in environment.items()})
    depends = services["api"]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["minio-init"]["condition"] == "service_completed_successfully"


def test_the_env_example_names_real_settings() -> None:
    names = [
        line.partition("=")[0]
        for line in (DEPLOY / "caverna.env.example").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    assert names
    assert set(names) <= setting_names()


def test_dockerfile_installs_the_project_and_runs_unprivileged() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "FROM python:3.11-slim"
    assert any(line.startswith("RUN pip install .") for line in lines)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users == ["caverna"]
    raw = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines()
    (command,) = [line for line in raw if line.startswith("CMD ")]  # not HEALTHCHECK's CMD
    assert_cli_accepts(yaml.safe_load(command.removeprefix("CMD ")))


@pytest.mark.parametrize(
    "unit", ["caverna-api.service", "caverna-worker@.service", "caverna-backup.service"]
)
def test_systemd_units_run_real_commands_sandboxed(unit: str) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(SYSTEMD / unit, encoding="utf-8")
    service = parser["Service"]
    command = shlex.split(service["ExecStart"])
    if unit == "caverna-worker@.service":  # its metrics port is 9100 + the instance number
        assert "--metrics-port $$((9100 + %i))" in command[2]
    if command[0] == "/bin/sh":  # the backup names its archive with the date, a worker its port
        command = shlex.split(command[2].removeprefix("exec "))[:2]
    assert command[0] == "/opt/caverna/venv/bin/caverna"
    assert_cli_accepts(["caverna", *command[1:]])
    assert service["User"] == "caverna"
    for option in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectHome"):
        assert option in service, (unit, option)
    assert service["ProtectSystem"] == "strict"
    assert service["CapabilityBoundingSet"] == ""
