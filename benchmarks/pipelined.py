"""statefulrt with every response pipelined with the next ``next``.

``python benchmarks/pipelined.py HANDLER`` runs statefulrt's bootstrap with
``RuntimeApiClient.post_response`` asking for ``then_next`` on every
response: the POST and the following ``GET .../next`` leave in one write on
the poller's keep-alive connection, and the runtime then only waits for the
event.  The runtime loop asks for this itself once it knows there is no
post-response work for an invocation (no flush due); this stand-in forces it,
which is what the loop would do for the no-op handlers the benchmarks run,
so ``overhead`` can measure it next to the plain runtime in the same rounds.

Once ``statefulrt/_runtime.py`` passes ``then_next``, the default transport
is the pipelined one and ``STATEFULRT_TRANSPORT=serial`` is the one without;
this script can go then.
"""

from __future__ import annotations

import sys

from statefulrt import _client
from statefulrt._bootstrap import run

_post_response = _client.RuntimeApiClient.post_response


async def _post_then_next(
    self: _client.RuntimeApiClient,
    request_id: str,
    body: bytes,
    content_type: str = "application/json",
    *,
    then_next: bool = True,
) -> bool:
    return await _post_response(self, request_id, body, content_type, then_next=True)


if __name__ == "__main__":
    _client.RuntimeApiClient.post_response = _post_then_next  # type: ignore[method-assign]
    sys.exit(run(sys.argv[1:]))
