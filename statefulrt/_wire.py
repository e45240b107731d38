"""Names, limits and payload shapes of the Lambda Runtime API."""

from __future__ import annotations

from typing import Final, TypedDict

API_VERSION: Final = "2018-06-01"
EXTENSION_API_VERSION: Final = "2020-01-01"

# Headers Lambda sends with each event from /runtime/invocation/next.
REQUEST_ID: Final = "lambda-runtime-aws-request-id"
DEADLINE_MS: Final = "lambda-runtime-deadline-ms"
FUNCTION_ARN: Final = "lambda-runtime-invoked-function-arn"
TRACE_ID: Final = "lambda-runtime-trace-id"
CLIENT_CONTEXT: Final = "lambda-runtime-client-context"
COGNITO_IDENTITY: Final = "lambda-runtime-cognito-identity"
TENANT_ID: Final = "lambda-runtime-aws-tenant-id"

# Headers a runtime may send.
ERROR_TYPE: Final = "Lambda-Runtime-Function-Error-Type"

# 6 MiB plus the 100 bytes of slack the service allows (6291556 bytes).
MAX_RESPONSE_BYTES: Final = 6 * 1024 * 1024 + 100
# Error bodies are capped at 1 MiB by the service; stay well below it.
MAX_ERROR_BYTES: Final = 1024 * 1024

TRACE_ENV: Final = "_X_AMZN_TRACE_ID"


class ErrorBody(TypedDict):
    """The error document posted to /error and /init/error."""

    errorMessage: str
    errorType: str
    requestId: str
    stackTrace: list[str]


class ErrorType:
    """Lambda's error types for faults the runtime reports itself."""

    MALFORMED_HANDLER_NAME: Final = "Runtime.MalformedHandlerName"
    IMPORT_MODULE_ERROR: Final = "Runtime.ImportModuleError"
    USER_CODE_SYNTAX_ERROR: Final = "Runtime.UserCodeSyntaxError"
    HANDLER_NOT_FOUND: Final = "Runtime.HandlerNotFound"
    BUILT_IN_MODULE_CONFLICT: Final = "Runtime.BuiltInModuleConflict"
    INIT_ERROR: Final = "Runtime.InitError"
    UNMARSHAL_ERROR: Final = "Runtime.UnmarshalError"
    MARSHAL_ERROR: Final = "Runtime.MarshalError"
    RESPONSE_TOO_LARGE: Final = "Function.ResponseSizeTooLarge"
    BACKPRESSURE: Final = "Runtime.Backpressure"
    FLUSH_FAILED: Final = "Runtime.FlushFailed"
    RESOURCE_UNAVAILABLE: Final = "Runtime.ResourceUnavailable"
