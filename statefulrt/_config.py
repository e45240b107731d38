"""Process-wide settings, read once from an injectable environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from ._exceptions import ConfigError

RUNTIME_API: Final = "AWS_LAMBDA_RUNTIME_API"
HANDLER: Final = "_HANDLER"
TASK_ROOT: Final = "LAMBDA_TASK_ROOT"
FUNCTION_NAME: Final = "AWS_LAMBDA_FUNCTION_NAME"
FUNCTION_VERSION: Final = "AWS_LAMBDA_FUNCTION_VERSION"
MEMORY_SIZE: Final = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
LOG_GROUP: Final = "AWS_LAMBDA_LOG_GROUP_NAME"
LOG_STREAM: Final = "AWS_LAMBDA_LOG_STREAM_NAME"
LOG_FORMAT: Final = "AWS_LAMBDA_LOG_FORMAT"
LOG_LEVEL: Final = "AWS_LAMBDA_LOG_LEVEL"
INIT_TYPE: Final = "AWS_LAMBDA_INITIALIZATION_TYPE"
MAX_CONCURRENCY: Final = "AWS_LAMBDA_MAX_CONCURRENCY"
JOURNAL_DIR: Final = "STATEFULRT_JOURNAL_DIR"
SHUTDOWN_BUDGET: Final = "STATEFULRT_SHUTDOWN_BUDGET_MS"

LogFormat = Literal["Text", "JSON"]
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    """Everything the runtime needs to know about its environment."""

    runtime_api: str
    handler: str
    task_root: str
    function_name: str = ""
    function_version: str = "$LATEST"
    memory_size_mb: int = 128
    log_group_name: str = ""
    log_stream_name: str = ""
    log_format: LogFormat = "Text"
    log_level: str | None = None
    initialization_type: str = "on-demand"
    max_concurrency: int = 1
    journal_dir: str = ""
    # Lambda allows the runtime 300-500 ms after SIGTERM; flush within it
    shutdown_budget_ms: int = 400

    def __post_init__(self) -> None:
        if not self.journal_dir:
            # Lambda's /tmp; tempfile would cost the cold start 6 ms to say so
            object.__setattr__(self, "journal_dir", "/tmp")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, handler: str | None = None
    ) -> RuntimeConfig:
        """Build the config from ``environ`` (``os.environ`` by default).

        ``handler`` (the command-line argument) wins over ``_HANDLER``.
        """
        env = os.environ if environ is None else environ

        runtime_api = env.get(RUNTIME_API, "")
        if not runtime_api:
            raise ConfigError(
                f"{RUNTIME_API} is not set: run under Lambda, or start the "
                "runtime with 'statefulrt dev HANDLER'"
            )
        host, _, port = runtime_api.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"{RUNTIME_API} must be 'host:port', like 127.0.0.1:9001, "
                f"not {runtime_api!r}"
            )
        handler = handler or env.get(HANDLER, "")
        if not handler:
            raise ConfigError(
                "no handler given: pass 'module.function' as an argument "
                f"or set {HANDLER}"
            )

        raw_format = env.get(LOG_FORMAT, "Text")
        log_format: LogFormat
        if raw_format == "Text":
            log_format = "Text"
        elif raw_format == "JSON":
            log_format = "JSON"
        else:
            raise ConfigError(
                f"{LOG_FORMAT} must be 'Text' or 'JSON', not {raw_format!r}"
            )

        return cls(
            runtime_api=runtime_api,
            handler=handler,
            task_root=env.get(TASK_ROOT) or os.getcwd(),
            function_name=env.get(FUNCTION_NAME, ""),
            function_version=env.get(FUNCTION_VERSION, "$LATEST"),
            memory_size_mb=_positive_int(env, MEMORY_SIZE, 128),
            log_group_name=env.get(LOG_GROUP, ""),
            log_stream_name=env.get(LOG_STREAM, ""),
            log_format=log_format,
            log_level=_log_level(env),
            initialization_type=env.get(INIT_TYPE, "on-demand"),
            max_concurrency=_positive_int(env, MAX_CONCURRENCY, 1),
            journal_dir=env.get(JOURNAL_DIR) or env.get("TMPDIR") or "",
            shutdown_budget_ms=_positive_int(env, SHUTDOWN_BUDGET, 400),
        )


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a positive integer, not {raw!r}") from None
    if value < 1:
        raise ConfigError(f"{name} must be a positive integer, not {raw!r}")
    return value


def _log_level(env: Mapping[str, str]) -> str | None:
    raw = env.get(LOG_LEVEL) or None
    if raw is not None and raw.upper() not in LOG_LEVELS:
        raise ConfigError(
            f"{LOG_LEVEL} must be one of {', '.join(LOG_LEVELS)}, not {raw!r}"
        )
    return raw
