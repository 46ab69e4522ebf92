"""The executor's in-flight journal: what it has taken on and what it has sent, on disk before
it is acted on, so a restarted executor can finish every order it had (one SQLite file per
executor; WAL with synchronous=NORMAL survives the process being killed).

A job is written when it is admitted, each venue order (leg) before it is sent, and the job is
removed once its terminal update is in the ledger.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, Callable, TypeVar

from nija.common.v1 import common_pb2

from services.domain.signal import ExecutionMethod, Side
from services.executor.venues.base import OrderRequest, OrderType

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    user_id    TEXT NOT NULL,
    signal_id  TEXT NOT NULL,
    signal     BLOB NOT NULL,
    method     TEXT NOT NULL,
    priority   INTEGER NOT NULL,
    legs       TEXT NOT NULL,
    PRIMARY KEY (user_id, signal_id)
)
"""


@dataclasses.dataclass(frozen=True)
class JournaledJob:
    signal: common_pb2.TradeSignal
    method: ExecutionMethod
    priority: int
    # leg index -> the venue order sent (or about to be sent) for it
    legs: dict[int, OrderRequest]


def _request_json(request: OrderRequest) -> dict[str, Any]:
    return {
        "cid": request.client_order_id, "pair": request.pair, "side": request.side.value,
        "type": request.order_type.value, "quantity": str(request.quantity),
        "limit": str(request.limit_price) if request.limit_price is not None else None,
    }


def _request(data: dict[str, Any]) -> OrderRequest:
    return OrderRequest(
        client_order_id=data["cid"], pair=data["pair"], side=Side(data["side"]),
        order_type=OrderType(data["type"]), quantity=Decimal(data["quantity"]),
        limit_price=Decimal(data["limit"]) if data["limit"] is not None else None,
    )


class Journal:
    def __init__(self, path: str) -> None:
        self.path = path
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    async def open(self) -> "Journal":
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        await self._run(self._open)
        return self

    def _open(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(SCHEMA)
        self._db = db

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._run(lambda: self._db.close() if self._db else None)
        self._executor.shutdown(wait=True)
        self._executor = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None, "journal not open"
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def admit(self, signal: common_pb2.TradeSignal, method: ExecutionMethod, priority: int) -> None:
        await self._run(self._admit, signal, method, priority)

    def _admit(self, signal: common_pb2.TradeSignal, method: ExecutionMethod, priority: int) -> None:
        assert self._db is not None
        self._db.execute(
            "INSERT OR IGNORE INTO jobs (user_id, signal_id, signal, method, priority, legs) VALUES (?, ?, ?, ?, ?, '{}')",
            (signal.user_id, signal.signal_id, signal.SerializeToString(), method.value, priority),
        )

    async def leg(self, user_id: str, signal_id: str, index: int, request: OrderRequest) -> None:
        await self._run(self._leg, user_id, signal_id, index, request)

    def _leg(self, user_id: str, signal_id: str, index: int, request: OrderRequest) -> None:
        assert self._db is not None
        row = self._db.execute("SELECT legs FROM jobs WHERE user_id=? AND signal_id=?", (user_id, signal_id)).fetchone()
        legs = json.loads(row[0]) if row else {}
        legs[str(index)] = _request_json(request)
        self._db.execute("UPDATE jobs SET legs=? WHERE user_id=? AND signal_id=?", (json.dumps(legs), user_id, signal_id))

    async def done(self, user_id: str, signal_id: str) -> None:
        await self._run(self._done, user_id, signal_id)

    def _done(self, user_id: str, signal_id: str) -> None:
        assert self._db is not None
        self._db.execute("DELETE FROM jobs WHERE user_id=? AND signal_id=?", (user_id, signal_id))

    async def pending(self) -> list[JournaledJob]:
        return await self._run(self._pending)

    def _pending(self) -> list[JournaledJob]:
        assert self._db is not None
        rows = self._db.execute("SELECT signal, method, priority, legs FROM jobs ORDER BY rowid").fetchall()
        return [
            JournaledJob(
                signal=common_pb2.TradeSignal.FromString(signal),
                method=ExecutionMethod(method),
                priority=priority,
                legs={int(k): _request(v) for k, v in json.loads(legs).items()},
            )
            for signal, method, priority, legs in rows
        ]
