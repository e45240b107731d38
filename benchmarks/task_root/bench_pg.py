"""A read-only handler with a PostgreSQL pool, for the ``postgres`` benchmark.

``init`` opens a ``PostgresPool`` of one connection to ``STATEFULRT_PG_DSN``
(part of the cold start, as it would be on Lambda); each invocation runs one
small catalog query on the pooled connection and answers with its result.
"""

from __future__ import annotations

import os
from typing import Any

from statefulrt_postgres import PostgresPool

from statefulrt import Context, StatefulHandler


class Query(StatefulHandler):
    db: PostgresPool

    async def init(self) -> None:
        self.db = await self.resources.open(
            "db",
            PostgresPool(
                os.environ["STATEFULRT_PG_DSN"],
                min_size=1,
                max_size=1,
                application_name="statefulrt-bench",
            ),
        )

    async def handle(self, event: Any, context: Context) -> Any:
        async with self.db.acquire() as conn:
            return await conn.fetchval("SELECT count(*) FROM pg_class")
