"""PostgreSQL for statefulrt handlers: an asyncpg pool kept warm.

``PostgresPool`` is a ``Resource``: open it in ``init`` with
``self.resources.open(name, PostgresPool(dsn))`` and every warm invocation
reuses its connections. After a long freeze the runtime validates it, and
connections that died meanwhile are replaced before the handler sees them.
``statefulrt_postgres.example`` is a complete handler.

Needs ``pip install 'statefulrt[postgres]'``.
"""

from __future__ import annotations

from ._pool import PostgresPool

__all__ = ["PostgresPool"]
