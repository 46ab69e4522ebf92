"""What became of each accepted alert, as `GET /alerts/<alert_id>` shows it. Pure.

Built from the router's SubmitStrategySignal stream: each subscriber's latest update (status,
reason, filled quantity, its child signal id), the subscribers skipped and why, then the summary.
Updates of a split order's legs (parent_signal_id set) are left out: the user's own signal's
updates carry the cumulative figures.

Kept in memory only, bounded (least recently used first out, 10,000 alerts by default): a
restarted gateway forgets past results, never the trades (they are in the ledger).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

from nija.router.v1 import router_pb2

from services.gateway.alerts import Alert
from services.runtime.wire import status_name

PROCESSING, DONE, FAILED = "processing", "done", "failed"


@dataclasses.dataclass
class AlertRecord:
    alert: Alert
    status: str = PROCESSING
    users: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    summary: dict[str, Any] | None = None
    #: Why the fan-out failed: the call's status code, the router's reason (or the code again).
    code: str = ""
    error: str = ""
    message: str = ""

    @property
    def alert_id(self) -> str:
        return self.alert.alert_id

    def apply(self, event: router_pb2.SubmitStrategySignalResponse) -> None:
        kind = event.WhichOneof("event")
        if kind == "update":
            u = event.update
            if u.parent_signal_id:
                return
            self.users[u.user_id] = {
                "status": status_name(u.status),
                "reason": u.reason,
                "filled_quantity": u.filled_quantity,
                "signal_id": u.signal_id,
            }
        elif kind == "skipped":
            self.skipped[event.skipped.user_id] = event.skipped.reason
        elif kind == "summary":
            s = event.summary
            self.summary = {
                "strategy_signal_id": s.strategy_signal_id,
                "subscribers": s.subscribers,
                "orders": s.orders,
                "skipped": s.skipped,
                "outcomes": dict(s.outcomes),
            }
            self.status = DONE

    def fail(self, code: str, error: str, message: str) -> None:
        self.status = FAILED
        self.code = code
        self.error = error
        self.message = message

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "alert_id": self.alert_id,
            "strategy_id": self.alert.strategy_id,
            "status": self.status,
            "signal": self.alert.describe(),
            "users": self.users,
            "skipped": self.skipped,
            "summary": self.summary,
        }
        if self.error:
            out["code"] = self.code
            out["error"] = self.error
            out["message"] = self.message
        return out


class ResultStore:
    """Alert records by (strategy, alert id); the least recently used beyond `max_alerts` go."""

    def __init__(self, max_alerts: int = 10_000) -> None:
        self._max = max_alerts
        self._records: OrderedDict[tuple[str, str], AlertRecord] = OrderedDict()

    def add(self, record: AlertRecord) -> AlertRecord:
        key = (record.alert.strategy_id, record.alert_id)
        self._records[key] = record
        self._records.move_to_end(key)
        while len(self._records) > self._max:
            self._records.popitem(last=False)
        return record

    def get(self, strategy_id: str, alert_id: str) -> AlertRecord | None:
        record = self._records.get((strategy_id, alert_id))
        if record is not None:
            self._records.move_to_end((strategy_id, alert_id))
        return record

    def strategies_with(self, alert_id: str) -> list[str]:
        """The strategies that have an alert with this id (ids are unique per strategy only)."""
        return [s for (s, a) in self._records if a == alert_id]

    def __len__(self) -> int:
        return len(self._records)
