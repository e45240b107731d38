"""``S3Sink``: a bucket (or a prefix in one) as a sink, through aiobotocore.

Needs ``pip install 'statefulrt[s3]'``. The sink is also a statefulrt
``Resource``: open it in ``init`` so that its client (and the client's
connection pool) lives across warm invocations::

    self.sink = await self.resources.open("sink", S3Sink("my-bucket", "video/"))

Segments are written with ``put_once``: a conditional ``PutObject``
(``If-None-Match: *``) that creates the key or fails with 412 when something
is already there. On a 412 the sink compares the stored object with the bytes
it meant to write: the same bytes mean an earlier attempt landed (a retry
after a timeout or a 5xx that hid a success) and the write counts as done;
other bytes raise ``ConflictError`` instead of replacing them. Manifests go
through ``put_manifest``, which checks that every segment it names exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from aiobotocore.session import AioSession, get_session  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
)

from ._base import ConflictError, ManifestError, MissingKeyError, validate_key

__all__ = ["S3Sink"]

logger = logging.getLogger("statefulrt.sinks")

# HEADs that put_manifest keeps in flight at once.
_MANIFEST_CHECKS = 16
_NOT_FOUND = frozenset(("404", "NoSuchKey", "NotFound"))


class S3Sink:
    """Objects under ``prefix`` in ``bucket``, one S3 object per key.

    ``endpoint_url`` points at another S3 implementation (moto, MinIO); it
    switches to path-style addressing unless ``config`` says otherwise.
    ``region`` defaults to botocore's own resolution (``AWS_REGION`` on
    Lambda). ``config`` is an ``aiobotocore.config.AioConfig`` (timeouts,
    retries); other keyword arguments go to ``create_client`` (credentials).

    ``check_first`` is for stores that ignore ``If-None-Match`` (older MinIO
    and Ceph releases): ``put_once`` then looks with HEAD before it writes.
    That is racy (two writers can both see nothing and both write) and only
    as good as what the store offers; S3 itself honours the condition.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        config: Any = None,
        session: Any = None,
        check_first: bool = False,
        **client_kwargs: Any,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ValueError(
                f"S3Sink bucket must be a bucket name without '/', not {bucket!r}; "
                "put folders in prefix"
            )
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.endpoint_url = endpoint_url
        self.region = region
        self.check_first = check_first
        self._config = config
        self._session: AioSession | None = session
        self._client_kwargs = client_kwargs
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._opening = asyncio.Lock()

    def __repr__(self) -> str:
        return f"S3Sink('s3://{self.bucket}/{self.prefix}')"

    def object_key(self, key: str) -> str:
        """The S3 object key that holds sink key ``key``."""
        return self.prefix + validate_key(key)

    # -- the Resource protocol ------------------------------------------------

    async def open(self) -> None:
        async with self._opening:
            if self._client is not None:
                return
            config = self._config
            if self.endpoint_url is not None:
                # Virtual-hosted style puts the bucket in the host name, which
                # an endpoint like http://127.0.0.1:9000 cannot serve.
                path_style = AioConfig(s3={"addressing_style": "path"})
                config = path_style if config is None else path_style.merge(config)
            session = self._session or get_session()
            stack = contextlib.AsyncExitStack()
            self._client = await stack.enter_async_context(
                session.create_client(
                    "s3",
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    config=config,
                    **self._client_kwargs,
                )
            )
            self._stack = stack
        logger.debug("S3 client open for %r", self)

    async def validate(self) -> bool:
        """True while the bucket answers; False when it cannot be reached.

        An answer that is an error (403, 404) is still an answer: reopening
        the client would not change it, so the next write reports it.
        """
        client = await self._require_client()
        try:
            await client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            logger.warning("S3 bucket %s answered its check with %s", self.bucket, exc)
        except (BotoCoreError, OSError, TimeoutError) as exc:
            logger.warning("S3 endpoint unreachable after idle: %s", exc)
            return False
        return True

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    # -- the Sink protocol ----------------------------------------------------

    async def put(
        self, key: str, data: bytes, *, content_type: str | None = None
    ) -> None:
        """Store ``data`` at ``key``, replacing what is there (one PUT)."""
        client = await self._require_client()
        await client.put_object(**self._put_args(key, data, content_type))
        logger.debug("put s3://%s/%s (%d bytes)", self.bucket, key, len(data))

    async def exists(self, key: str) -> bool:
        return await self._head(key) is not None

    async def get(self, key: str) -> bytes:
        client = await self._require_client()
        try:
            response = await client.get_object(
                Bucket=self.bucket, Key=self.object_key(key)
            )
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                raise MissingKeyError(
                    key, f"s3://{self.bucket}/{self.prefix}"
                ) from None
            raise
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    # -- exactly once ---------------------------------------------------------

    async def put_once(
        self, key: str, data: bytes, *, content_type: str | None = None
    ) -> bool:
        """Create ``key`` holding ``data``, unless it already holds exactly that.

        Returns True when this call stored the object, False when an identical
        object was already there (an earlier attempt that landed). Raises
        ``ConflictError`` when other bytes are stored at ``key``: nothing is
        overwritten. Any other failure leaves the outcome unknown; call again
        with the same key and bytes, and the check sorts it out.
        """
        client = await self._require_client()
        if self.check_first and await self._head(key) is not None:
            await self._verify(key, data)
            return False

        try:
            await client.put_object(
                IfNoneMatch="*", **self._put_args(key, data, content_type)
            )
        except ClientError as exc:
            if _http_status(exc) != 412:
                raise
            # botocore may have retried a PUT whose first attempt landed; or
            # this is a retry of a flush that failed after its write landed.
            await self._verify(key, data)
            logger.info(
                "s3://%s/%s already holds these %d bytes; not writing it again",
                self.bucket,
                self.object_key(key),
                len(data),
            )
            return False
        logger.debug("put once s3://%s/%s (%d bytes)", self.bucket, key, len(data))
        return True

    async def put_manifest(
        self,
        key: str,
        body: bytes,
        *,
        requires: Iterable[str] = (),
        content_type: str | None = None,
    ) -> None:
        """Write the manifest ``key`` once every key in ``requires`` exists.

        ``requires`` names the segments this version of the manifest adds;
        the ones an earlier version listed were checked when it was written,
        so they need not be checked again. Raises ``ManifestError`` (and
        writes nothing) when any is missing.
        """
        needed = list(dict.fromkeys(requires))
        limit = asyncio.Semaphore(_MANIFEST_CHECKS)

        async def present(segment: str) -> bool:
            async with limit:
                return await self.exists(segment)

        found = await asyncio.gather(*(present(segment) for segment in needed))
        missing = [segment for segment, ok in zip(needed, found, strict=True) if not ok]
        if missing:
            raise ManifestError(key, missing, f"s3://{self.bucket}/{self.prefix}")
        await self.put(key, body, content_type=content_type)

    # -- helpers --------------------------------------------------------------

    async def _require_client(self) -> Any:
        if self._client is None:
            # Opening lazily lets the sink work outside a handler's resources;
            # inside one, resources.open() has opened it and will close it.
            await self.open()
        return self._client

    def _put_args(
        self, key: str, data: bytes, content_type: str | None
    ) -> dict[str, Any]:
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.object_key(key),
            "Body": bytes(data),
        }
        if content_type is not None:
            args["ContentType"] = content_type
        return args

    async def _head(self, key: str) -> Mapping[str, Any] | None:
        client = await self._require_client()
        try:
            head: Mapping[str, Any] = await client.head_object(
                Bucket=self.bucket, Key=self.object_key(key)
            )
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                return None
            raise
        return head

    async def _verify(self, key: str, data: bytes) -> None:
        """Return if ``key`` holds ``data``; raise ConflictError if not."""
        head = await self._head(key)
        where = f"s3://{self.bucket}/{self.object_key(key)}"
        if head is None:
            # 412 said it exists; a missing object now means someone deleted it
            # in between. Writing again could race that deleter: let the
            # caller's retry decide with a fresh conditional PUT.
            raise ConflictError(
                f"{where} existed a moment ago and is gone now; is another "
                "process deleting this prefix? Retry the write"
            )
        if head.get("ContentLength") == len(data):
            # A single-part upload without SSE-KMS has the MD5 as its ETag;
            # anything else (multipart, KMS) needs the bytes compared.
            etag = str(head.get("ETag", "")).strip('"')
            if etag == hashlib.md5(data, usedforsecurity=False).hexdigest():
                return
            if await self.get(key) == data:
                return
        raise ConflictError(
            f"{where} already holds a different object ({head.get('ContentLength')} "
            f"bytes, ETag {head.get('ETag')}) than the {len(data)} bytes to write; "
            "keys must be unique per content: is another writer using this "
            "prefix, or did a new process restart a numbering the old one used?"
        )


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _http_status(exc: ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None
