"""Group commit: the short write transactions of concurrent requests on one event loop share one database
transaction (:meth:`service.db.Database.run_write`).

A create request writes two or three rows; the transaction around them cost more than the rows: BEGIN, a
flush, COMMIT (on PostgreSQL a WAL flush to disk, on SQLite the write lock), 1.0-1.5 ms of CPU for one
dataset and its job against 0.25 ms each when eight share a transaction and one flush (BENCHMARKS.md).
Writes that arrive while a transaction is running wait for the next one, so a batch grows with the load,
and a lone request still goes alone and at once: no write waits for a timer.

What each write ``fn(session)`` can rely on:

- Its result is handed back only once the transaction holding its rows has committed.
- An exception ``fn`` raises fails that write alone: the transaction rolls back, and the other writes of
  the batch run again in the next one. So ``fn`` may run more than once, each time in a fresh transaction,
  and must not act outside the database in a way that matters if it does.
- A database error in a batch (a duplicate key at the flush, say) cannot be pinned on one write: the batch
  rolls back and each of its writes runs again alone, so the error reaches the request that caused it.
- A write may raise :class:`RunAlone` for the same effect: one that would have to wait for a lock while the
  batch holds others (a deadlock waiting to happen, service/caps.py) gets its batch run one write at a time.
- A failed COMMIT fails every write in it. Whether it committed is unknown, so none is run again.
- The writes run with autoflush off and their rows are flushed together at the end: a query in ``fn``
  sees what was committed before the batch, not the rows of the other writes in it. (Two requests that
  collide, the same Idempotency-Key twice, meet at the flush and are sorted out by running alone.)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

# The most writes one transaction takes. A bigger batch holds SQLite's write lock longer (a job process
# waiting to record its progress waits that long) for a gain that has flattened out by then.
MAX_BATCH = 32

T = TypeVar("T")

# Runs apply(session) in a write transaction: commits when it returns, rolls back when it raises.
Transaction = Callable[[Callable[[Session], list[Any]]], Awaitable[list[Any]]]


@dataclass(eq=False)
class _Write:
    fn: Callable[[Session], Any]
    future: asyncio.Future[Any]


class _WriteFailed(Exception):
    """``fn`` of one write raised: it fails alone, and the rest of its batch runs again."""

    def __init__(self, write: _Write, error: Exception) -> None:
        super().__init__(error)
        self.write, self.error = write, error


class _RunAlone(Exception):
    """A database error that cannot be pinned on one write of the batch: each runs again on its own."""


class RunAlone(Exception):
    """Raised by a write that cannot go on inside a batch of others: the batch rolls back and each of its
    writes runs again in a transaction of its own. A write alone that raises it fails like any other."""


def _apply(batch: list[_Write], session: Session) -> list[Any]:
    results = []
    with session.no_autoflush:
        for write in batch:
            try:
                results.append(write.fn(session))
            except SQLAlchemyError:
                if len(batch) > 1:
                    raise _RunAlone from None
                raise
            except RunAlone as exc:
                if len(batch) > 1:
                    raise _RunAlone from None
                raise _WriteFailed(write, exc) from None
            except Exception as exc:
                raise _WriteFailed(write, exc) from None
    try:
        session.flush()
    except SQLAlchemyError:
        if len(batch) > 1:
            raise _RunAlone from None
        raise
    return results


def _settle(write: _Write, *, result: Any = None, error: BaseException | None = None) -> None:
    if write.future.done():  # its request was cancelled meanwhile
        return
    if error is not None:
        write.future.set_exception(error)
    else:
        write.future.set_result(result)


class GroupCommit:
    """The write queue of one event loop, drained by one task, one transaction at a time."""

    def __init__(self, transaction: Transaction, max_batch: int = MAX_BATCH) -> None:
        self._transaction, self._max_batch = transaction, max_batch
        self._pending: deque[_Write] = deque()
        self._drainer: asyncio.Task[None] | None = None

    async def run(self, fn: Callable[[Session], T]) -> T:
        loop = asyncio.get_running_loop()
        write = _Write(fn, loop.create_future())
        self._pending.append(write)
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        result: T = await write.future  # fn's own result (_settle)
        return result

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._take()
                if batch:
                    await self._commit(batch)
        finally:
            self._drainer = None

    def _take(self) -> list[_Write]:
        batch: list[_Write] = []
        while self._pending and len(batch) < self._max_batch:
            write = self._pending.popleft()
            if not write.future.done():
                batch.append(write)
        return batch

    async def _commit(self, batch: list[_Write]) -> None:
        try:
            results = await self._transaction(partial(_apply, batch))
        except _WriteFailed as failed:
            _settle(failed.write, error=failed.error)
            self._pending.extendleft(reversed([w for w in batch if w is not failed.write]))
        except _RunAlone:
            for write in batch:
                await self._commit([write])
        except Exception as exc:  # noqa: BLE001 - the COMMIT, or the database out of reach: handed to each write
            for write in batch:
                _settle(write, error=exc)
        except BaseException:  # the drainer itself cancelled (its loop closing): no write will be settled now
            for write in (*batch, *self._pending):
                write.future.cancel()
            self._pending.clear()
            raise
        else:
            for write, result in zip(batch, results, strict=True):
                _settle(write, result=result)
