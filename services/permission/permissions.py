"""A user's trading permissions: the record the permission service owns. Pure."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from decimal import Decimal

from services.domain.brokers import BROKERS
from services.domain.money import BadDecimal, parse_positive
from services.domain.signal import SignalProblem, check_id, check_pair


class BadPermissions(ValueError):
    """A permissions record that breaks a rule (unknown broker, malformed pair, ...)."""


@dataclasses.dataclass(frozen=True)
class UserPermissions:
    """Validated on construction; brokers and pairs are kept sorted and de-duplicated."""

    user_id: str
    enabled: bool
    allowed_brokers: tuple[str, ...]
    #: Empty means every pair.
    allowed_pairs: tuple[str, ...]
    max_order_size_usd: Decimal

    def __post_init__(self) -> None:
        try:
            check_id(self.user_id, "user_id")
            pairs = _sorted_unique(check_pair(p) for p in self.allowed_pairs)
        except SignalProblem as problem:
            raise BadPermissions(str(problem)) from None
        if not isinstance(self.enabled, bool):
            raise BadPermissions(f"enabled must be a bool, got {self.enabled!r}")
        unknown = sorted(set(self.allowed_brokers) - set(BROKERS))
        if unknown:
            raise BadPermissions(f"unknown brokers {unknown}; known: {list(BROKERS)}")
        size = self.max_order_size_usd
        if not isinstance(size, Decimal) or not size.is_finite():
            raise BadPermissions(f"max_order_size_usd must be a finite Decimal, got {size!r}")
        try:
            # Must survive the trip through the wire and the store as a plain decimal string.
            parse_positive(format(size, "f"), "max_order_size_usd")
        except BadDecimal as exc:
            raise BadPermissions(str(exc)) from None
        object.__setattr__(self, "allowed_brokers", _sorted_unique(self.allowed_brokers))
        object.__setattr__(self, "allowed_pairs", pairs)


def _sorted_unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))
