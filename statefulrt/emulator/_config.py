"""The emulated function's configuration and the environment its runtime sees."""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = ["FunctionConfig"]

# What Lambda keeps from extensions: the runtime's own variables (A.8).
_RUNTIME_ONLY: Final = (
    "_HANDLER",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_XRAY_DAEMON_ADDRESS",
    "_AWS_XRAY_DAEMON_ADDRESS",
    "_AWS_XRAY_DAEMON_PORT",
    "AWS_XRAY_CONTEXT_MISSING",
)

ACCOUNT_ID: Final = "012345678912"
REGION: Final = "us-east-1"
VERSION: Final = "$LATEST"

_FUNCTION_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")

# Lambda gives an on-demand init ten seconds before it gives up on it.
INIT_TIMEOUT: Final = 10.0


@dataclass(frozen=True)
class FunctionConfig:
    """What Lambda knows about a function before any invoke arrives.

    ``max_concurrency`` set makes it a Managed Instances function (with that
    many concurrent invocations per environment); ``snap_start`` makes every
    environment a restored SnapStart one. Lambda offers the two apart only.
    """

    name: str = "function"
    memory_mb: int = 128
    timeout: float = 3.0
    init_timeout: float = INIT_TIMEOUT
    handler: str | None = None
    task_root: str = field(default_factory=os.getcwd)
    env: Mapping[str, str] = field(default_factory=dict)
    max_concurrency: int | None = None
    snap_start: bool = False

    def __post_init__(self) -> None:
        if not _FUNCTION_NAME.fullmatch(self.name):
            message = (
                f"function_name {self.name!r} must be 1-64 letters, digits, "
                "hyphens or underscores, as Lambda requires"
            )
            raise ValueError(message)
        if not 128 <= self.memory_mb <= 10240:
            message = f"memory_mb must be between 128 and 10240, got {self.memory_mb}"
            raise ValueError(message)
        if not self.timeout > 0:
            raise ValueError(f"timeout must be a positive number, got {self.timeout}")
        if not self.init_timeout > 0:
            message = f"init_timeout must be a positive number, got {self.init_timeout}"
            raise ValueError(message)
        if self.max_concurrency is not None and not self.max_concurrency >= 1:
            message = f"max_concurrency must be 1 or more, got {self.max_concurrency}"
            raise ValueError(message)
        if self.managed and self.snap_start:
            raise ValueError(
                "snap_start and max_concurrency cannot be combined: Lambda "
                "offers SnapStart for on-demand functions only"
            )

    @property
    def managed(self) -> bool:
        """A Managed Instances function (concurrent invocations, no freeze)."""
        return self.max_concurrency is not None

    @property
    def initialization_type(self) -> str:
        if self.managed:
            return "lambda-managed-instances"
        return "snap-start" if self.snap_start else "on-demand"

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.name}"

    @property
    def log_group(self) -> str:
        return f"/aws/lambda/{self.name}"

    @property
    def account_id(self) -> str:
        return ACCOUNT_ID

    def runtime_environ(
        self, runtime_api: str, base: Mapping[str, str], tmpdir: str | None = None
    ) -> dict[str, str]:
        """The environment of a freshly started runtime process.

        ``base`` (the emulator's own environment) comes first so the Lambda
        variables win over anything inherited, and the caller's ``env``
        overrides come last so a test can still set whatever it needs.
        ``tmpdir`` (the sandbox's own ``/tmp``) becomes ``TMPDIR``.
        """
        day = time.strftime("%Y/%m/%d", time.gmtime())
        log_stream = f"{day}/[{VERSION}]{secrets.token_hex(16)}"
        environ = dict(base)
        environ.update(
            {
                "AWS_LAMBDA_RUNTIME_API": runtime_api,
                "AWS_LAMBDA_FUNCTION_NAME": self.name,
                "AWS_LAMBDA_FUNCTION_VERSION": VERSION,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
                "AWS_LAMBDA_LOG_GROUP_NAME": self.log_group,
                "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
                "AWS_LAMBDA_INITIALIZATION_TYPE": self.initialization_type,
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                "LAMBDA_TASK_ROOT": self.task_root,
                "TZ": ":UTC",
            }
        )
        if self.max_concurrency is not None:
            environ["AWS_LAMBDA_MAX_CONCURRENCY"] = str(self.max_concurrency)
        if self.snap_start:
            # A snapshot is shared by many sandboxes, so it names no stream.
            del environ["AWS_LAMBDA_LOG_GROUP_NAME"]
            del environ["AWS_LAMBDA_LOG_STREAM_NAME"]
        if tmpdir is not None:
            environ["TMPDIR"] = tmpdir
        if self.handler is not None:
            environ["_HANDLER"] = self.handler
        environ.update(self.env)
        return environ

    def extension_environ(
        self, runtime_api: str, base: Mapping[str, str], tmpdir: str | None = None
    ) -> dict[str, str]:
        """An external extension's environment: the runtime's minus its own."""
        environ = self.runtime_environ(runtime_api, base, tmpdir)
        for name in _RUNTIME_ONLY:
            environ.pop(name, None)
        return environ
