"""AWS event-stream framing, as ``InvokeWithResponseStream`` answers with it.

The API's response body is not the function's bytes but a sequence of
event-stream messages: a ``PayloadChunk`` event per piece of the response, and
one ``InvokeComplete`` event at the end whose ``ErrorCode`` and
``ErrorDetails`` say whether (and how) the stream failed after it began. The
function's own content type travels in the HTTP ``Content-Type`` header.
Speaking this format lets the AWS SDKs (``invoke_with_response_stream``) read
the emulator as they read Lambda.

A message is a prelude (total length, headers length, CRC32 of those eight
bytes), the headers, the payload, and a CRC32 of everything before it; all
integers big-endian. Only string headers (type 7) are written or read here.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Final

import orjson

__all__ = [
    "Event",
    "EventStreamDecoder",
    "EventStreamError",
    "invoke_complete",
    "payload_chunk",
]

PAYLOAD_CHUNK: Final = "PayloadChunk"
INVOKE_COMPLETE: Final = "InvokeComplete"

_PRELUDE: Final = struct.Struct(">III")
_CRC: Final = struct.Struct(">I")
_STRING: Final = 7
# Lambda's own messages stay far below this; it bounds a corrupt length.
_MAX_MESSAGE: Final = 24 * 1024 * 1024


class EventStreamError(ValueError):
    """The bytes are not a valid event stream (bad length, CRC or header)."""


@dataclass(frozen=True)
class Event:
    """One decoded message: its ``:event-type`` and the rest."""

    event_type: str
    headers: dict[str, str]
    payload: bytes


def _encode(headers: dict[str, str], payload: bytes) -> bytes:
    encoded = b"".join(
        bytes([len(name)])
        + name.encode("ascii")
        + bytes([_STRING])
        + struct.pack(">H", len(value.encode()))
        + value.encode()
        for name, value in headers.items()
    )
    total = _PRELUDE.size + len(encoded) + len(payload) + _CRC.size
    prelude = struct.pack(">II", total, len(encoded))
    message = prelude + _CRC.pack(zlib.crc32(prelude)) + encoded + payload
    return message + _CRC.pack(zlib.crc32(message))


def _event_headers(event_type: str, content_type: str) -> dict[str, str]:
    return {
        ":event-type": event_type,
        ":content-type": content_type,
        ":message-type": "event",
    }


def payload_chunk(data: bytes) -> bytes:
    """A ``PayloadChunk`` message carrying ``data``."""
    return _encode(_event_headers(PAYLOAD_CHUNK, "application/octet-stream"), data)


def invoke_complete(error_code: str | None = None, error_details: str = "") -> bytes:
    """The closing ``InvokeComplete`` message; ``error_code`` when it failed."""
    body: dict[str, str] = {}
    if error_code is not None:
        body = {"ErrorCode": error_code, "ErrorDetails": error_details}
    headers = _event_headers(INVOKE_COMPLETE, "application/json")
    return _encode(headers, orjson.dumps(body))


class EventStreamDecoder:
    """Turns the bytes of a response body, fed as they come, into events."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Event]:
        self._buffer += data
        events = []
        while len(self._buffer) >= _PRELUDE.size:
            total, headers_length, prelude_crc = _PRELUDE.unpack_from(self._buffer)
            if zlib.crc32(self._buffer[:8]) != prelude_crc:
                raise EventStreamError("the prelude CRC does not match")
            if total > _MAX_MESSAGE or headers_length > total:
                raise EventStreamError(f"implausible message length {total}")
            if len(self._buffer) < total:
                break
            message = bytes(self._buffer[:total])
            del self._buffer[:total]
            (crc,) = _CRC.unpack_from(message, total - _CRC.size)
            if zlib.crc32(message[: -_CRC.size]) != crc:
                raise EventStreamError("the message CRC does not match")
            start = _PRELUDE.size
            headers = _decode_headers(message[start : start + headers_length])
            payload = message[start + headers_length : -_CRC.size]
            events.append(Event(headers.get(":event-type", ""), headers, payload))
        return events

    @property
    def pending(self) -> int:
        """Bytes of an unfinished message (non-zero at the end: truncated)."""
        return len(self._buffer)


def _decode_headers(data: bytes) -> dict[str, str]:
    headers = {}
    offset = 0
    while offset < len(data):
        size = data[offset]
        name = data[offset + 1 : offset + 1 + size].decode("ascii")
        offset += 1 + size
        if data[offset] != _STRING:
            raise EventStreamError(f"header {name!r} is not a string")
        (length,) = struct.unpack_from(">H", data, offset + 1)
        headers[name] = data[offset + 3 : offset + 3 + length].decode()
        offset += 3 + length
    return headers
