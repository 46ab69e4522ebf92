"""The demo users, seeded into an empty store on first start (Config.seed_demo_users)."""

from __future__ import annotations

from decimal import Decimal

from services.domain.brokers import BROKERS
from services.permission.permissions import RoutingPolicy, RoutingPreferences, UserPermissions

ALICE = UserPermissions(
    user_id="alice",
    enabled=True,
    allowed_brokers=BROKERS,
    allowed_pairs=(),
    max_order_size_usd=Decimal("50000"),
)
BOB = UserPermissions(
    user_id="bob",
    enabled=True,
    allowed_brokers=("coinbase", "kraken"),
    allowed_pairs=(),
    max_order_size_usd=Decimal("5000"),
    preferences=RoutingPreferences(preferred_brokers=("kraken",)),
)
CAROL = UserPermissions(
    user_id="carol",
    enabled=False,
    allowed_brokers=BROKERS,
    allowed_pairs=(),
    max_order_size_usd=Decimal("50000"),
)
DAVE = UserPermissions(
    user_id="dave",
    enabled=True,
    allowed_brokers=BROKERS,
    allowed_pairs=("BTC-USD", "ETH-USD"),
    max_order_size_usd=Decimal("1000"),
    preferences=RoutingPreferences(routing_policy=RoutingPolicy.COST, max_slippage_bps=50),
)

DEMO_USERS: tuple[UserPermissions, ...] = (ALICE, BOB, CAROL, DAVE)
