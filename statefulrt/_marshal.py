"""Events in, results out: JSON with orjson, as awslambdaric would encode them."""

from __future__ import annotations

from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def decode_event(body: bytes, content_type: str | None) -> Any:
    """The event a handler receives; raises ``ValueError`` for bad JSON.

    Only JSON is decoded (what Lambda sends); any other declared content type
    reaches the handler as raw bytes, as under awslambdaric.
    """
    if content_type and not content_type.startswith("application/json"):
        return body
    return orjson.loads(body)


def encode_result(result: Any) -> tuple[bytes, str]:
    """The response body and its content type; raises ``TypeError``.

    ``bytes`` go out as they are; everything else is JSON (``None`` is
    ``null``, ``Decimal`` an exact number).
    """
    if isinstance(result, bytes | bytearray | memoryview):
        return bytes(result), "application/unknown"
    try:
        body = orjson.dumps(result, default=_default, option=_OPTIONS)
    except TypeError as exc:
        if "Integer exceeds 64-bit range" not in str(exc):
            raise
        # orjson stops at 64-bit integers; Python's json (as awslambdaric's
        # encoder) writes any integer exactly.
        import json

        text = json.dumps(result, default=_default_plain, separators=(",", ":"))
        body = text.encode("utf-8")
    return body, "application/json"


def _default(value: Any) -> Any:
    import decimal  # only results orjson cannot encode alone pay for it

    if isinstance(value, decimal.Decimal):
        if value.is_finite():
            # the exact digits, not a float's approximation
            return orjson.Fragment(format(value, "f"))
        return None
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _default_plain(value: Any) -> Any:
    import decimal

    if isinstance(value, decimal.Decimal):
        return float(value)
    return _default(value)
