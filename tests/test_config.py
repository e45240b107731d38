from __future__ import annotations

import pytest

from statefulrt import ConfigError, RuntimeConfig


def test_config_from_env_reads_lambda_variables() -> None:
    config = RuntimeConfig.from_env(
        {
            "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
            "_HANDLER": "app.handler",
            "LAMBDA_TASK_ROOT": "/var/task",
            "AWS_LAMBDA_FUNCTION_NAME": "photos",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
            "AWS_LAMBDA_LOG_FORMAT": "JSON",
            "AWS_LAMBDA_MAX_CONCURRENCY": "16",
        }
    )
    assert (config.runtime_api, config.handler, config.task_root) == (
        "127.0.0.1:9001",
        "app.handler",
        "/var/task",
    )
    assert (config.function_name, config.memory_size_mb) == ("photos", 1024)
    assert (config.log_format, config.max_concurrency) == ("JSON", 16)


def test_config_argument_handler_wins() -> None:
    env = {"AWS_LAMBDA_RUNTIME_API": "h:1", "_HANDLER": "a.b", "LAMBDA_TASK_ROOT": "."}
    assert RuntimeConfig.from_env(env, handler="c.d").handler == "c.d"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "AWS_LAMBDA_RUNTIME_API is not set"),
        ({"AWS_LAMBDA_RUNTIME_API": "h:1"}, "no handler given"),
        (
            {"AWS_LAMBDA_RUNTIME_API": "not:a:host", "_HANDLER": "a.b"},
            "AWS_LAMBDA_RUNTIME_API must be 'host:port', like 127.0.0.1:9001, "
            "not 'not:a:host'",
        ),
        (
            {
                "AWS_LAMBDA_RUNTIME_API": "h:1",
                "_HANDLER": "a.b",
                "AWS_LAMBDA_LOG_FORMAT": "xml",
            },
            "AWS_LAMBDA_LOG_FORMAT must be 'Text' or 'JSON', not 'xml'",
        ),
        (
            {
                "AWS_LAMBDA_RUNTIME_API": "h:1",
                "_HANDLER": "a.b",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "lots",
            },
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE must be a positive integer, not 'lots'",
        ),
        (
            {
                "AWS_LAMBDA_RUNTIME_API": "h:1",
                "_HANDLER": "a.b",
                "AWS_LAMBDA_MAX_CONCURRENCY": "0",
            },
            "AWS_LAMBDA_MAX_CONCURRENCY must be a positive integer, not '0'",
        ),
    ],
)
def test_config_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RuntimeConfig.from_env(env)
    assert str(caught.value).startswith(message)


def test_config_rejects_unknown_log_level() -> None:
    env = {
        "AWS_LAMBDA_RUNTIME_API": "h:1",
        "_HANDLER": "a.b",
        "AWS_LAMBDA_LOG_LEVEL": "LOUD",
    }
    with pytest.raises(ConfigError) as caught:
        RuntimeConfig.from_env(env)
    assert str(caught.value) == (
        "AWS_LAMBDA_LOG_LEVEL must be one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL, "
        "not 'LOUD'"
    )
