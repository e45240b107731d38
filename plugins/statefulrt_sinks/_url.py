"""``sink_from_url``: a sink chosen by where the data should go."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ._base import ExactlyOnceSink
from ._local import LocalDirectorySink

__all__ = ["sink_from_url"]


def sink_from_url(
    url: str | os.PathLike[str], *, endpoint_url: str | None = None, **s3_options: Any
) -> ExactlyOnceSink:
    """The sink that ``url`` names.

    ``s3://bucket/prefix`` gives an ``S3Sink`` (``endpoint_url`` and
    ``s3_options`` go to it; the ``s3`` extra must be installed); a folder
    path or ``file:///folder`` gives a ``LocalDirectorySink``. The sink is
    not opened: open it with ``await self.resources.open("sink", sink)``.
    """
    if isinstance(url, os.PathLike):
        return LocalDirectorySink(url)
    if not isinstance(url, str) or not url.strip():
        raise ValueError(
            f"sink URL must be a folder path or s3://bucket/prefix, not {url!r}"
        )
    parts = urlsplit(url)
    scheme = parts.scheme.lower()

    if scheme == "s3":
        if not parts.netloc:
            hint = (
                " (pathlib.Path turns 's3://' into 's3:/': pass the URL as a str)"
                if url.startswith("s3:/") and not url.startswith("s3://")
                else ""
            )
            raise ValueError(
                f"sink URL {url!r} names no bucket: use s3://bucket/prefix{hint}"
            )
        try:
            from .s3 import S3Sink
        except ImportError as exc:
            raise ImportError(
                f"sink URL {url!r} needs aiobotocore: pip install 'statefulrt[s3]'"
            ) from exc
        return S3Sink(
            parts.netloc,
            unquote(parts.path),
            endpoint_url=endpoint_url,
            **s3_options,
        )

    if s3_options:
        raise TypeError(
            f"options {sorted(s3_options)} apply to s3:// sinks only, not {url!r}"
        )
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"sink URL {url!r} names a remote host; use file:///path")
        return LocalDirectorySink(Path(unquote(parts.path)))
    # A Windows drive letter parses as a one-letter scheme.
    if scheme and len(scheme) > 1:
        raise ValueError(
            f"sink URL {url!r} has scheme {scheme!r}; use a folder path, "
            "file:///folder or s3://bucket/prefix"
        )
    return LocalDirectorySink(url)
