"""Lambda's log formats, installed by the bootstrap only.

Text records look like awslambdaric's (``[LEVEL]\\ttimestamp\\trequest id\\t
message``) and keep a multi-line message (a traceback) as one CloudWatch event
by turning its newlines into carriage returns, since Lambda splits stdout on
newlines.  JSON records carry the keys of the managed Python runtime, with the
top-level ``level`` the platform filters on.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
import time
from collections.abc import MutableMapping
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
    def __init__(self, *, frames: bool = False) -> None:
        super().__init__()
        # a frame carries newlines safely; a stdout line does not
        self._frames = frames

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        request_id = getattr(record, "aws_request_id", None) or ""
        level = _NAMES.get(record.levelno, record.levelname)
        line = f"[{level}]\t{stamp}.{int(record.msecs):03d}Z\t{request_id}\t{message}"
        return line if self._frames else line.replace("\n", "\r")


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


TELEMETRY_FD = "_LAMBDA_TELEMETRY_LOG_FD"
_FRAME_HEAD = struct.Struct(">IIQ")
# Frame types: a magic prefix, bit 0x1 for text (clear for JSON), the level.
_FRAME_MAGIC = 0xA55A0000
_FRAME_TEXT = 0x1
_FRAME_LEVELS = {
    TRACE: 0x04,
    logging.DEBUG: 0x08,
    logging.INFO: 0x0C,
    logging.WARNING: 0x10,
    logging.ERROR: 0x14,
    logging.CRITICAL: 0x18,
}
_FRAME_LEVEL_UNKNOWN = 0x02


class TelemetryFrameHandler(logging.Handler):
    """Writes each record as one frame to Lambda's telemetry descriptor.

    A frame is: type (4 bytes), length (4), timestamp in microseconds (8), the
    message; big-endian.  Frames keep a multi-line record (a traceback) one
    CloudWatch event without rewriting its newlines.
    """

    def __init__(self, fd: int, *, text: bool) -> None:
        super().__init__()
        self._fd = fd
        self._text = text

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record).encode("utf-8", "backslashreplace")
            kind = _FRAME_MAGIC | (_FRAME_TEXT if self._text else 0)
            kind |= _FRAME_LEVELS.get(record.levelno, _FRAME_LEVEL_UNKNOWN)
            stamp = int(record.created * 1_000_000)
            frame = _FRAME_HEAD.pack(kind, len(message), stamp) + message
            view = memoryview(frame)
            while view:
                view = view[os.write(self._fd, view) :]
        except Exception:
            self.handleError(record)


def install(
    config: RuntimeConfig,
    stream: TextIO | None = None,
    environ: MutableMapping[str, str] | None = None,
) -> None:
    """Send every logger's records to Lambda in the configured format.

    With ``_LAMBDA_TELEMETRY_LOG_FD`` set (managed runtimes declare it) records
    go there as frames and the variable is removed, as the official clients
    do; otherwise to stdout, one line per record.
    """
    env = os.environ if environ is None else environ
    text = config.log_format != "JSON"
    raw_fd = env.pop(TELEMETRY_FD, None)
    handler: logging.Handler
    if raw_fd is not None and raw_fd.isdigit():
        handler = TelemetryFrameHandler(int(raw_fd), text=text)
    else:
        handler = StreamLineHandler(stream or sys.stdout)
    handler.addFilter(RequestContextFilter())
    if text:
        framed = isinstance(handler, TelemetryFrameHandler)
        handler.setFormatter(TextFormatter(frames=framed))
    else:
        handler.setFormatter(JsonFormatter())

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
    elif not text:
        # Lambda's JSON format filters at INFO unless told otherwise
        root.setLevel(logging.INFO)
    else:
        # user loggers keep Python's default (WARNING, as under awslambdaric);
        # the runtime's own milestones are INFO
        logging.getLogger("statefulrt").setLevel(logging.INFO)
