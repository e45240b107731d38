"""Lambda's log formats, levels and framing."""

from __future__ import annotations

import io
import logging
import os
import struct
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from statefulrt import RuntimeConfig
from statefulrt import _logging as lambda_logging
from statefulrt._invocation import Invocation, current_invocation


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    ours = logging.getLogger("statefulrt").level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("statefulrt").setLevel(ours)


def _config(**overrides: Any) -> RuntimeConfig:
    settings: dict[str, Any] = {
        "runtime_api": "h:1",
        "handler": "a.b",
        "task_root": ".",
    }
    settings.update(overrides)
    return RuntimeConfig(**settings)


def _invocation(tenant: str | None = None) -> Invocation:
    return Invocation(
        request_id="8f507cfc-example",
        deadline_ms=1,
        invoked_function_arn="arn",
        body=b"{}",
        tenant_id=tenant,
    )


def test_logging_text_record_carries_request_id_and_stays_one_line() -> None:
    stream = io.StringIO()
    lambda_logging.install(_config(), stream, environ={})
    token = current_invocation.set(_invocation())
    try:
        logging.getLogger("app").warning("first line\nsecond line")
    finally:
        current_invocation.reset(token)
    (line,) = stream.getvalue().rstrip("\n").split("\n")
    level, stamp, request_id, message = line.split("\t")
    assert (level, request_id, message) == (
        "[WARN]",
        "8f507cfc-example",
        "first line\rsecond line",
    )
    assert stamp.endswith("Z") and len(stamp) == 24


def test_logging_json_keys_level_and_tenant() -> None:
    stream = io.StringIO()
    lambda_logging.install(_config(log_format="JSON"), stream, environ={})
    token = current_invocation.set(_invocation(tenant="acme"))
    try:
        logging.getLogger("app").info("hello %s", "world")
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            logging.getLogger("statefulrt.invoke").exception("handler failed")
    finally:
        current_invocation.reset(token)
    info, error = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert {
        k: info[k] for k in ("level", "message", "logger", "requestId", "tenantId")
    } == {
        "level": "INFO",
        "message": "hello world",
        "logger": "app",
        "requestId": "8f507cfc-example",
        "tenantId": "acme",
    }
    assert (error["level"], error["errorType"], error["errorMessage"]) == (
        "ERROR",
        "ValueError",
        "bad\nthing",
    )
    assert error["stackTrace"][0] == "Traceback (most recent call last):"


def test_logging_level_filter() -> None:
    stream = io.StringIO()
    lambda_logging.install(_config(log_level="ERROR"), stream, environ={})
    logging.getLogger("app").warning("hidden")
    logging.getLogger("statefulrt.runtime").info("hidden too")
    logging.getLogger("app").error("shown")
    assert [line.split("\t")[-1] for line in stream.getvalue().splitlines()] == [
        "shown"
    ]


def test_logging_rejects_unknown_level() -> None:
    with pytest.raises(ValueError, match="AWS_LAMBDA_LOG_LEVEL must be one of"):
        lambda_logging.install(_config(log_level="LOUD"), io.StringIO(), environ={})


def test_logging_telemetry_fd_frames_multiline_records() -> None:
    read_fd, write_fd = os.pipe()
    environ = {"_LAMBDA_TELEMETRY_LOG_FD": str(write_fd)}
    try:
        lambda_logging.install(_config(), environ=environ)
        logging.getLogger("app").error("line one\nline two")
        data = os.read(read_fd, 65536)
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert "_LAMBDA_TELEMETRY_LOG_FD" not in environ
    kind, length, _stamp = struct.unpack(">IIQ", data[:16])
    message = data[16 : 16 + length].decode()
    assert kind == 0xA55A0000 | 0x1 | 0x14  # text, ERROR
    assert message.endswith("\tline one\nline two")
    assert len(data) == 16 + length
