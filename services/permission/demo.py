"""The demo users, seeded into an empty store on first start (Config.seed_demo_users).

They trade faster than the seed's 1 trade/s default (which every user created later gets), so
demos and tests can send a few signals back to back; no other limit is set.
"""

from __future__ import annotations

from decimal import Decimal

from services.domain.brokers import BROKERS
from services.permission.permissions import RiskLimits, RoutingPolicy, RoutingPreferences, UserPermissions

DEMO_LIMITS = RiskLimits(trades_per_second=Decimal(50), trade_burst=50)

ALICE = UserPermissions(
    user_id="alice",
    enabled=True,
    allowed_brokers=BROKERS,
    allowed_pairs=(),
    max_order_size_usd=Decimal("50000"),
    limits=DEMO_LIMITS,
)
BOB = UserPermissions(
    user_id="bob",
    enabled=True,
    allowed_brokers=("coinbase", "kraken"),
    allowed_pairs=(),
    max_order_size_usd=Decimal("5000"),
    preferences=RoutingPreferences(preferred_brokers=("kraken",)),
    limits=DEMO_LIMITS,
)
CAROL = UserPermissions(
    user_id="carol",
    enabled=False,
    allowed_brokers=BROKERS,
    allowed_pairs=(),
    max_order_size_usd=Decimal("50000"),
    limits=DEMO_LIMITS,
)
DAVE = UserPermissions(
    user_id="dave",
    enabled=True,
    allowed_brokers=BROKERS,
    allowed_pairs=("BTC-USD", "ETH-USD"),
    max_order_size_usd=Decimal("1000"),
    preferences=RoutingPreferences(routing_policy=RoutingPolicy.COST, max_slippage_bps=50),
    limits=DEMO_LIMITS,
)

DEMO_USERS: tuple[UserPermissions, ...] = (ALICE, BOB, CAROL, DAVE)
