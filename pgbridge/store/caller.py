"""The caller's transaction: the asyncpg connection that ``publish_in`` writes through.

``publish_in`` and its kin (docs/transactions.md) append inside a transaction
the application opened, on the application's own connection: an asyncpg
``Connection`` (or a pool's connection proxy), or a SQLAlchemy
``AsyncConnection`` / ``AsyncSession`` on the asyncpg driver. This module
turns what it was given into the asyncpg connection of that open
transaction, or refuses it (:class:`TransactionRequiredError`) before
anything of pgbridge's is sent, so a refused call writes nothing.

SQLAlchemy is imported here only when a SQLAlchemy object is given:
``import pgbridge`` never loads it (tests/unit/test_layering.py). Two
things about SQLAlchemy's asyncpg dialect shape the code:

* its documented way to the driver is ``await conn.get_raw_connection()``,
  whose ``driver_connection`` is the asyncpg connection (an
  ``AsyncSession`` gives its ``AsyncConnection`` with
  ``await session.connection()``, which also begins the session's
  transaction);
* it begins the transaction on the driver connection lazily, at the first
  statement *it* runs. A statement sent straight to the driver before that
  would run in autocommit: committed at once, whatever the caller does
  afterwards. So when the driver connection is not yet in a transaction, one
  no-op statement (``begin_caller_transaction``) runs through SQLAlchemy
  first; SQLAlchemy then holds that transaction, and its commit or rollback
  is the caller's. A connection in autocommit mode stays outside any
  transaction after it, and is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

from pgbridge.exceptions import TransactionAbortedError, TransactionRequiredError
from pgbridge.sql.queries import Queries

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    #: What publish_in takes (for type checkers only: SQLAlchemy is not imported at run time).
    CallerConnection: TypeAlias = asyncpg.Connection | AsyncConnection | AsyncSession

#: What publish_in accepts, in the words of its errors.
ACCEPTED = (
    "an asyncpg Connection, or a SQLAlchemy AsyncConnection or AsyncSession on the asyncpg "
    "driver (postgresql+asyncpg://)"
)


async def transaction_connection(conn: object, queries: Queries) -> asyncpg.Connection:
    """The asyncpg connection of the open transaction *conn* stands for.

    Refuses (:class:`TransactionRequiredError`, nothing sent of pgbridge's) a
    closed connection, one outside a transaction, an autocommit SQLAlchemy
    connection, another driver, or anything else.
    """
    if isinstance(conn, asyncpg.Connection):  # a pool's connection proxy is one too
        driver: asyncpg.Connection = conn
    elif type(conn).__module__.split(".", 1)[0] == "sqlalchemy":
        driver = await _sqlalchemy_driver_connection(conn, queries)
    else:
        raise TransactionRequiredError(f"publish_in needs {ACCEPTED}, not a {type(conn).__name__}")
    if driver.is_closed():
        raise TransactionRequiredError("publish_in was given a closed connection")
    if not driver.is_in_transaction():
        raise TransactionRequiredError(
            "publish_in was given a connection that is not inside a transaction: open one first "
            "(asyncpg: `async with conn.transaction():`; SQLAlchemy: `async with engine.begin() as conn:` "
            "or `async with session.begin():`), so the events commit or roll back with your writes"
        )
    return driver


async def _sqlalchemy_driver_connection(conn: object, queries: Queries) -> asyncpg.Connection:
    """The asyncpg connection under a SQLAlchemy AsyncConnection or AsyncSession, its
    transaction begun (see the module's docstring)."""
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    connection: AsyncConnection
    if isinstance(conn, AsyncSession):
        connection = await conn.connection()
    elif isinstance(conn, AsyncConnection):
        connection = conn
    else:
        raise TransactionRequiredError(
            f"publish_in needs {ACCEPTED}, not a {type(conn).__name__} (a synchronous SQLAlchemy object "
            "cannot be awaited on)"
        )
    driver: Any = (await connection.get_raw_connection()).driver_connection
    if not isinstance(driver, asyncpg.Connection):
        raise TransactionRequiredError(
            f"publish_in needs {ACCEPTED}; this engine's driver connection is a {type(driver).__name__}: "
            "create the engine with a postgresql+asyncpg:// URL"
        )
    if not driver.is_in_transaction() and not driver.is_closed():
        try:
            await connection.exec_driver_sql(queries.begin_caller_transaction)
        except SQLAlchemyError as exc:
            raise TransactionAbortedError(
                f"SQLAlchemy could not begin the transaction on its connection: {exc}", retryable=False
            ) from exc
    return driver
