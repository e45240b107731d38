"""The error payload Lambda receives for a failed init or invocation."""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass

import orjson

from ._wire import ErrorBody

# Caps keep every error document far below the service's 1 MiB error limit,
# however long a message or deep a recursion the handler produced.
MAX_MESSAGE_CHARS = 256 * 1024
MAX_STACK_CHARS = 64 * 1024

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


@dataclass(frozen=True, slots=True)
class ErrorPayload:
    """``{"errorMessage", "errorType", "requestId", "stackTrace"}``, typed."""

    error_type: str
    error_message: str
    request_id: str = ""
    stack_trace: tuple[str, ...] = ()

    def to_body(self) -> ErrorBody:
        return {
            "errorMessage": self.error_message,
            "errorType": self.error_type,
            "requestId": self.request_id,
            "stackTrace": list(self.stack_trace),
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_body())

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        request_id: str = "",
        *,
        error_type: str | None = None,
        message_prefix: str = "",
    ) -> ErrorPayload:
        """Describe ``exc`` (and the exceptions chained to it) for Lambda.

        Never raises: an exception whose ``str()`` fails, non-UTF-8 text and
        arbitrarily deep tracebacks all give a well-formed, capped payload.
        """
        return cls(
            error_type=error_type or _safe_text(type(exc).__name__),
            error_message=_cap(message_prefix + describe(exc), MAX_MESSAGE_CHARS),
            request_id=request_id,
            stack_trace=tuple(_stack_entries(exc)),
        )


def describe(exc: BaseException) -> str:
    """``str(exc)``, or a note saying why it could not be had."""
    try:
        text = str(exc)
    except Exception as failure:  # the user's __str__ is arbitrary code
        text = f"<str() of {type(exc).__name__} raised {type(failure).__name__}>"
    return _safe_text(text)


def _stack_entries(exc: BaseException) -> list[str]:
    # oldest cause first, as Python prints a chain
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(chain) < 16:
        chain.append(current)
        seen.add(id(current))
        if current.__cause__ is not None:
            current = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            current = current.__context__
        else:
            current = None
    chain.reverse()

    entries: list[str] = []
    for position, item in enumerate(chain):
        frames = [
            frame
            for frame in traceback.extract_tb(item.__traceback__)
            if not frame.filename.startswith(_PACKAGE_DIR)
        ]
        entries.extend(_safe_text(line) for line in traceback.format_list(frames))
        if position < len(chain) - 1:
            entries.append(f"{_safe_text(type(item).__name__)}: {describe(item)}\n")
            follower = chain[position + 1]
            if follower.__cause__ is item:
                entries.append(
                    "The above exception was the direct cause of the following"
                    " exception:\n"
                )
            else:
                entries.append(
                    "During handling of the above exception, another exception"
                    " occurred:\n"
                )
    return _cap_entries(entries)


def _cap_entries(entries: list[str]) -> list[str]:
    kept: list[str] = []
    used = 0
    for position, entry in enumerate(entries):
        if used + len(entry) > MAX_STACK_CHARS:
            dropped = len(entries) - position
            kept.append(f"... {dropped} more entries (stack trace capped)\n")
            break
        kept.append(entry)
        used += len(entry)
    return kept


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"... ({len(text) - limit} more characters)"


def _safe_text(text: str) -> str:
    # lone surrogates cannot be encoded as UTF-8 JSON
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
