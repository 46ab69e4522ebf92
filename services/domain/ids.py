"""Deterministic venue client order ids, derived from (user, signal, broker, leg).

The same order always gets the same id, so a retry can look it up instead of placing a second
order. 30 hex characters after a short prefix: 35 in all, inside Binance's 36-character limit.
"""

from __future__ import annotations

import hashlib


def client_order_id(user_id: str, signal_id: str, broker: str, leg: int) -> str:
    digest = hashlib.sha256(f"{user_id}\x1f{signal_id}\x1f{broker}\x1f{leg}".encode()).hexdigest()
    return f"nija-{digest[:30]}"


def child_signal_id(parent_signal_id: str, broker: str) -> str:
    """The signal id of a split order's leg on `broker`: readable, unique, within 128 characters."""
    child = f"{parent_signal_id}.{broker}"
    if len(child) <= 128:
        return child
    digest = hashlib.sha256(parent_signal_id.encode()).hexdigest()[:16]
    return f"{parent_signal_id[:100]}.{digest}.{broker}"


def subscriber_signal_id(strategy_signal_id: str, user_id: str) -> str:
    """The signal id of one subscriber's order for a strategy signal: `<strategy signal>.<user>`,
    readable and deterministic (a repeated strategy signal finds its children); hashed when that
    would pass 128 characters."""
    child = f"{strategy_signal_id}.{user_id}"
    if len(child) <= 128:
        return child
    digest = hashlib.sha256(f"{strategy_signal_id}\x1f{user_id}".encode()).hexdigest()[:32]
    return f"{strategy_signal_id[:40]}.{digest}.{user_id[:40]}"
