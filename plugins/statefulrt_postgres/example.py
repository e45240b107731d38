"""An example handler: each event becomes a row; the answer counts the rows.

Run it under the emulator with ``statefulrt_postgres.example.EventLog`` as the
handler string. Settings, read once in ``init``:

``STATEFULRT_PG_DSN``             the server, ``postgresql://user@host/db``
``STATEFULRT_PG_TABLE``           the table to write (``statefulrt_events``)
``STATEFULRT_PG_APPLICATION_NAME`` shown in ``pg_stat_activity``
                                  (``statefulrt-example``)
``STATEFULRT_PG_REVALIDATE_AFTER`` seconds of idle after which the pool is
                                  checked before the next event, or ``off``
                                  (the runtime's default)
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from statefulrt import Context, StatefulHandler

from ._pool import PostgresPool

__all__ = ["EventLog", "ExampleConfig"]

DSN: Final = "STATEFULRT_PG_DSN"
TABLE: Final = "STATEFULRT_PG_TABLE"
APPLICATION_NAME: Final = "STATEFULRT_PG_APPLICATION_NAME"
REVALIDATE: Final = "STATEFULRT_PG_REVALIDATE_AFTER"

# A plain identifier: the table name is put into SQL text, never a parameter.
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True, kw_only=True)
class ExampleConfig:
    dsn: str
    table: str = "statefulrt_events"
    application_name: str = "statefulrt-example"
    #: None keeps the runtime's default
    revalidate_after: float | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ExampleConfig:
        dsn = environ.get(DSN)
        if not dsn:
            raise KeyError(
                f"{DSN} is not set: give the PostgreSQL server as "
                "postgresql://user:password@host:port/database"
            )
        table = environ.get(TABLE, cls.table)
        if not _IDENTIFIER.fullmatch(table):
            raise ValueError(
                f"{TABLE} must be a lowercase SQL identifier (letters, digits, "
                f"'_'), not {table!r}"
            )
        return cls(
            dsn=dsn,
            table=table,
            application_name=environ.get(APPLICATION_NAME, cls.application_name),
            revalidate_after=_seconds(environ.get(REVALIDATE)),
        )


def _seconds(text: str | None) -> float | None:
    if text is None:
        return None
    if text.strip().lower() == "off":
        return math.inf
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ValueError(
            f"{REVALIDATE} must be seconds (a number >= 0) or 'off', not {text!r}"
        )
    return value


class EventLog(StatefulHandler):
    """Insert each event as a row and answer with the table's row count.

    The answer also names the backend (``pg_backend_pid()``) that served it,
    so a caller can see warm invocations reuse one connection.
    """

    db: PostgresPool

    async def init(self) -> None:
        config = ExampleConfig.from_env(os.environ)
        self.table = config.table
        if config.revalidate_after is not None:
            self.resources.revalidate_after = config.revalidate_after
        self.db = await self.resources.open(
            "db",
            PostgresPool(
                config.dsn, min_size=1, application_name=config.application_name
            ),
        )
        async with self.db.acquire() as conn:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                " id bigserial PRIMARY KEY,"
                " request_id text NOT NULL,"
                " body jsonb NOT NULL,"
                " received timestamptz NOT NULL DEFAULT now())"
            )

    async def handle(self, event: Any, context: Context) -> dict[str, Any]:
        body = orjson.dumps(event).decode()
        async with self.db.acquire() as conn:
            async with conn.transaction():
                await conn.execute(
                    f"INSERT INTO {self.table} (request_id, body) VALUES ($1, $2)",
                    context.aws_request_id,
                    body,
                )
                count = await conn.fetchval(f"SELECT count(*) FROM {self.table}")
            backend = await conn.fetchval("SELECT pg_backend_pid()")
        return {
            "count": count,
            "backend_pid": backend,
            "replaced": self.db.replaced,
        }
