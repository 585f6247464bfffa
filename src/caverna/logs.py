"""Logs as JSON lines (for collectors) or readable text (for a terminal), with the job's context.

The context of a job (image id, sequence, provider, worker, attempt) is bound once, in a
contextvar, where the job starts: every line logged while it runs, in the pipeline, the retry
layer or an adapter, carries it without each call passing it along. asyncio tasks copy the
context when they are created, so tasks a job starts keep it and concurrent jobs never see each
other's. Fields given with `extra=` are added to the line as they are.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any, Literal

LogFormat = Literal["json", "text"]
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# the fields a job binds; any other name may be bound too
CONTEXT_FIELDS = ("image_id", "sequence_id", "provider", "worker_id", "attempt", "request_id")

_context: ContextVar[Mapping[str, object]] = ContextVar(
    "caverna_log_context", default=MappingProxyType({})
)
_CONTEXT_ATTR = "caverna_context"
# attributes every LogRecord has: anything else on a record came from `extra=`
_RECORD_ATTRS = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", (), None).__dict__,
        "message",
        "asctime",
        "taskName",
        _CONTEXT_ATTR,
    }
)


@contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Add fields to the context of every line logged inside the block (None leaves a field out).

    Nested blocks add to, and may override, the outer ones; leaving a block restores them.
    """
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def bound() -> dict[str, object]:
    """The fields bound in the current context."""
    return dict(_context.get())


def parse_level(value: str) -> str:
    """A level name in upper case; ValueError lists the accepted names."""
    name = value.strip().upper()
    if name == "WARN":
        name = "WARNING"
    if name not in LEVELS:
        raise ValueError(f"'{value}' is not a log level; use one of {', '.join(LEVELS)}")
    return name


class _ContextFilter(logging.Filter):
    """Stamps the bound context on each record while still in the caller's task."""

    def filter(self, record: logging.LogRecord) -> bool:
        setattr(record, _CONTEXT_ATTR, _context.get())
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """Context first, then `extra=` fields, which win: they are the more specific."""
    fields: dict[str, Any] = dict(getattr(record, _CONTEXT_ATTR, None) or {})
    for key, value in record.__dict__.items():
        if key not in _RECORD_ATTRS and not key.startswith("_"):
            fields[key] = value
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601, UTC), level, logger, msg, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "ts": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            entry.setdefault(key, value)  # a field never hides a core one
        if record.exc_info:
            entry["exc_type"] = getattr(record.exc_info[0], "__name__", None)
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """A readable line with the fields as key=value at its end."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = super().formatMessage(record)
        fields = " ".join(f"{key}={value}" for key, value in _fields(record).items())
        return f"{line} [{fields}]" if fields else line


class _StandardErrorHandler(logging.StreamHandler[IO[str]]):
    """Writes to whatever sys.stderr is at the time, as the CLI runner swaps it per command."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _: IO[str]) -> None:
        return None


def configure_logging(
    format: LogFormat = "text",
    level: str = "INFO",
    *,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send every logger's records through one handler on the root logger, at `level`.

    Calling it again replaces the handler it installed before (and no other), so a test or a
    second command in the same process never doubles the lines.
    """
    if format not in ("json", "text"):
        raise ValueError(f"'{format}' is not a log format; use json or text")
    handler: logging.Handler = (
        _StandardErrorHandler() if stream is None else logging.StreamHandler(stream)
    )
    handler.set_name("caverna")
    handler.addFilter(_ContextFilter())
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "caverna":
            root.removeHandler(existing)
            existing.close()
    root.addHandler(handler)
    root.setLevel(parse_level(level))
    return handler
