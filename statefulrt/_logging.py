"""Lambda's log formats, installed by the bootstrap only.

Text records look like awslambdaric's (``[LEVEL]\\ttimestamp\\trequest id\\t
message``) and keep a multi-line message (a traceback) as one CloudWatch event
by turning its newlines into carriage returns, since Lambda splits stdout on
newlines.  JSON records carry the keys of the managed Python runtime, with the
top-level ``level`` the platform filters on.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

import orjson

from ._config import RuntimeConfig
from ._invocation import current_invocation
from ._log import TRACE

# AWS_LAMBDA_LOG_LEVEL values and the logging levels they stand for.
LEVELS = {
    "TRACE": TRACE,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
}
_NAMES = {
    TRACE: "TRACE",
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARN",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "FATAL",
}


class RequestContextFilter(logging.Filter):
    """Stamps each record with the request and tenant of its invocation."""

    def filter(self, record: logging.LogRecord) -> bool:
        invocation = current_invocation.get()
        record.aws_request_id = invocation.request_id if invocation else None
        record.tenant_id = invocation.tenant_id if invocation else None
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        request_id = getattr(record, "aws_request_id", None) or ""
        level = _NAMES.get(record.levelno, record.levelname)
        line = f"[{level}]\t{stamp}.{int(record.msecs):03d}Z\t{request_id}\t{message}"
        return line.replace("\n", "\r")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        document: dict[str, object] = {
            "timestamp": f"{stamp}.{int(record.msecs):03d}Z",
            "level": _NAMES.get(record.levelno, record.levelname),
            "message": record.getMessage(),
            "logger": record.name,
        }
        request_id = getattr(record, "aws_request_id", None)
        if request_id:
            document["requestId"] = request_id
        tenant_id = getattr(record, "tenant_id", None)
        if tenant_id:
            document["tenantId"] = tenant_id
        if record.exc_info and record.exc_info[0] is not None:
            document["errorType"] = record.exc_info[0].__name__
            document["errorMessage"] = str(record.exc_info[1])
            document["stackTrace"] = self.formatException(record.exc_info).split("\n")
        return orjson.dumps(document, default=str).decode()


class StreamLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """One record per line, flushed at once (Lambda reads stdout as lines)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)


def install(config: RuntimeConfig, stream: TextIO | None = None) -> None:
    """Send every logger's records to stdout in the configured format."""
    handler = StreamLineHandler(stream or sys.stdout)
    handler.addFilter(RequestContextFilter())
    handler.setFormatter(
        JsonFormatter() if config.log_format == "JSON" else TextFormatter()
    )

    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)

    if config.log_level is not None:
        level = LEVELS.get(config.log_level.upper())
        if level is None:
            raise ValueError(
                "AWS_LAMBDA_LOG_LEVEL must be one of "
                f"{', '.join(LEVELS)}, not {config.log_level!r}"
            )
        root.setLevel(level)
    else:
        # user loggers keep Python's default (WARNING, as under awslambdaric);
        # the runtime's own milestones are INFO
        logging.getLogger("statefulrt").setLevel(logging.INFO)
