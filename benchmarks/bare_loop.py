"""The floor: a blocking-socket loop making a runtime's two requests, no more.

One keep-alive socket; ``GET next``, read the event, ``POST`` a ``null``
response, read the 202, repeat.  No handler, no JSON, no context: whatever a
runtime spends above this loop is the runtime's own overhead.

Run as a script (``python benchmarks/bare_loop.py``) with
``AWS_LAMBDA_RUNTIME_API`` set; it imports only ``os``, ``socket`` and ``sys``.
"""

from __future__ import annotations

import os
import socket
import sys


def read_response(sock: socket.socket, pending: bytes) -> tuple[bytes, bytes, bytes]:
    """One response from ``sock``: its head, its body and the bytes after it."""
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("the Runtime API closed the connection")
        pending += chunk
    head, _, pending = pending.partition(b"\r\n\r\n")

    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    while len(pending) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("the Runtime API closed the connection")
        pending += chunk
    return head, pending[:length], pending[length:]


def header(head: bytes, wanted: bytes) -> bytes:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == wanted:
            return value.strip()
    raise ValueError(f"no {wanted!r} header in {head!r}")


def main() -> int:
    host, _, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rpartition(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    host_line = b"Host: %s:%s\r\n" % (host.encode(), port.encode())
    next_request = (
        b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\n" + host_line + b"\r\n"
    )
    post_head = (
        b" HTTP/1.1\r\n" + host_line + b"Content-Type: application/json\r\n"
        b"Content-Length: 4\r\n\r\nnull"
    )

    pending = b""
    try:
        while True:
            sock.sendall(next_request)
            head, _event, pending = read_response(sock, pending)
            request_id = header(head, b"lambda-runtime-aws-request-id")
            sock.sendall(
                b"POST /2018-06-01/runtime/invocation/"
                + request_id
                + b"/response"
                + post_head
            )
            _head, _body, pending = read_response(sock, pending)
    except EOFError:
        return 0
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
