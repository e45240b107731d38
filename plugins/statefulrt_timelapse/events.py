"""S3 event notifications: parsing what Lambda delivers, building what S3 sends.

The shape follows version 2.1 of Amazon S3's event message structure, which S3
uses for ``ObjectCreated`` events. The object key arrives URL-encoded the way
HTML forms encode (a space becomes ``+``, other bytes ``%XX`` of UTF-8), which
is why the handler decodes it with ``unquote_plus``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypedDict
from urllib.parse import quote_plus, unquote_plus

from .errors import EventError

__all__ = [
    "S3Event",
    "S3EventRecord",
    "S3ObjectRef",
    "parse_s3_event",
    "s3_put_event",
]


class _Principal(TypedDict):
    principalId: str


class _RequestParameters(TypedDict):
    sourceIPAddress: str


_ResponseElements = TypedDict(
    "_ResponseElements", {"x-amz-request-id": str, "x-amz-id-2": str}
)


class _Bucket(TypedDict):
    name: str
    ownerIdentity: _Principal
    arn: str


class _Object(TypedDict):
    key: str
    size: int
    eTag: str
    sequencer: str


class _S3Entity(TypedDict):
    s3SchemaVersion: str
    configurationId: str
    bucket: _Bucket
    object: _Object


class S3EventRecord(TypedDict):
    eventVersion: str
    eventSource: str
    awsRegion: str
    eventTime: str
    eventName: str
    userIdentity: _Principal
    requestParameters: _RequestParameters
    responseElements: _ResponseElements
    s3: _S3Entity


class S3Event(TypedDict):
    Records: list[S3EventRecord]


@dataclass(frozen=True, slots=True)
class S3ObjectRef:
    """What the handler needs from one record: which object, and what happened."""

    event_name: str
    bucket: str
    key: str
    size: int | None = None
    sequencer: str | None = None

    @property
    def created(self) -> bool:
        return self.event_name.startswith("ObjectCreated:")


def parse_s3_event(event: object) -> list[S3ObjectRef]:
    """Return one S3ObjectRef per record, keys URL-decoded, in record order.

    Raises EventError naming the first field that is missing or of the wrong
    type. The ``s3:TestEvent`` that S3 sends when a notification is configured
    parses to no records.
    """
    if isinstance(event, Mapping) and event.get("Event") == "s3:TestEvent":
        return []
    if not isinstance(event, Mapping) or not isinstance(event.get("Records"), list):
        raise EventError(
            "event is not an S3 event notification: expected an object with a "
            "'Records' list (see the S3 'Event message structure' documentation)"
        )

    refs = []
    for index, record in enumerate(event["Records"]):
        where = f"Records[{index}]"
        if not isinstance(record, Mapping):
            raise EventError(f"{where} must be an object, not {type(record).__name__}")
        source = record.get("eventSource")
        if source != "aws:s3":
            raise EventError(
                f"{where}.eventSource is {_show(source)}, expected 'aws:s3'"
            )

        s3 = _object(record, where, "s3")
        bucket = _object(s3, f"{where}.s3", "bucket")
        obj = _object(s3, f"{where}.s3", "object")
        size = obj.get("size")
        sequencer = obj.get("sequencer")

        refs.append(
            S3ObjectRef(
                event_name=_text(record, where, "eventName"),
                bucket=_text(bucket, f"{where}.s3.bucket", "name"),
                key=unquote_plus(_text(obj, f"{where}.s3.object", "key")),
                # bool is an int to Python, never a size to S3.
                size=size if type(size) is int else None,
                sequencer=sequencer if isinstance(sequencer, str) else None,
            )
        )
    return refs


def _object(
    parent: Mapping[str, object], where: str, name: str
) -> Mapping[str, object]:
    value = parent.get(name)
    if not isinstance(value, Mapping):
        raise EventError(f"{where}.{name} must be an object, not {_show(value)}")
    return value


def _text(parent: Mapping[str, object], where: str, name: str) -> str:
    value = parent.get(name)
    if not isinstance(value, str) or not value:
        raise EventError(
            f"{where}.{name} must be a non-empty string, not {_show(value)}"
        )
    return value


def _show(value: object) -> str:
    # Error messages reach the caller and the logs: quote a little, not a payload.
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def s3_put_event(
    bucket: str,
    key: str,
    data: bytes,
    *,
    region: str = "us-east-1",
    event_time: datetime | None = None,
    sequence: int = 0,
    configuration_id: str = "timelapse-photos",
    source_ip: str = "127.0.0.1",
) -> S3Event:
    """The notification S3 sends to Lambda after a PUT of ``data`` at ``key``.

    Identifiers that S3 makes up (request ids, sequencer) are derived from the
    arguments, so the same call always builds the same event; ``sequence``
    orders events for the same bucket, as S3's sequencer does.
    """
    when = event_time or datetime(1970, 1, 1, tzinfo=UTC)
    seed = hashlib.sha256(f"{bucket}\0{key}\0{sequence}".encode()).digest()

    # S3 reports time in UTC with milliseconds: 2024-05-01T12:00:00.123Z
    stamp = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": stamp,
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "AWS:AIDASTATEFULRTEXAMPLE"},
                "requestParameters": {"sourceIPAddress": source_ip},
                "responseElements": {
                    "x-amz-request-id": seed[:8].hex().upper(),
                    "x-amz-id-2": base64.b64encode(seed + seed[:16]).decode(),
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": configuration_id,
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "A1STATEFULRTOWNER"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": len(data),
                        "eTag": hashlib.md5(data, usedforsecurity=False).hexdigest(),
                        "sequencer": f"{sequence:018X}",
                    },
                },
            }
        ]
    }
