"""``python -m statefulrt [run] [HANDLER]`` is ``statefulrt run [HANDLER]``."""

from __future__ import annotations

import sys

from ._bootstrap import run

if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["run"]:
        args = args[1:]
    sys.exit(run(args))
