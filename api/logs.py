"""Structured JSON logs: one object per line, the request's trace id on every record,
secrets redacted (by field name and by shape) before anything is written."""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

#: the trace id of the request being served (set by the edge middleware)
trace_id_var: ContextVar[str | None] = ContextVar("valueos_trace_id", default=None)

REDACTED = "[REDACTED]"
_SECRET_NAMES = re.compile(
    r"(authorization|api[_-]?key|token|secret|password|signature|cookie)", re.IGNORECASE
)
_SECRET_SHAPES = (
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\bvo_[0-9a-f]{16}_[A-Za-z0-9_-]+"),
    re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"),  # a bare JWT
)
#: attributes every LogRecord has; anything else was passed with ``extra=``
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def redact_text(text: str) -> str:
    for shape in _SECRET_SHAPES:
        text = shape.sub(REDACTED, text)
    return text


def redact(value: Any, name: str = "") -> Any:
    """A copy of ``value`` with secret-named fields and secret-shaped strings masked."""
    if name and _SECRET_NAMES.search(name):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact_text(record.getMessage()),
        }
        trace = trace_id_var.get()
        if trace:
            out["trace_id"] = trace
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = redact(value, key)
        if record.exc_info:
            out["exc"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(out, default=str, separators=(",", ":"))


def configure_logging(level: int = logging.INFO) -> None:
    """Route every logger through one JSON handler on stderr (idempotent)."""
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.handlers = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access",):  # the API writes its own access log line
        logging.getLogger(noisy).disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
