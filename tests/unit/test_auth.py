"""Principals, rules and the caching authenticator, without a network."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from services.runtime.auth import (
    CachingAuthenticator,
    Principal,
    PrincipalKind,
    Rule,
    admin_only,
    services_only,
    token_interceptors,
    user_scoped,
)

ALICE = Principal(PrincipalKind.USER, "alice")
MOMENTUM = Principal(PrincipalKind.STRATEGY, "momentum", frozenset({"alice", "bob"}))
ROOT = Principal(PrincipalKind.ADMIN, "root")
ROUTER = Principal(PrincipalKind.SERVICE, "router")


@pytest.mark.parametrize(
    ("principal", "user_id", "allowed"),
    [
        (ALICE, "alice", True),
        (ALICE, "bob", False),
        (ALICE, "", False),
        (MOMENTUM, "alice", True),
        (MOMENTUM, "bob", True),
        (MOMENTUM, "carol", False),
        (MOMENTUM, "momentum", False),  # a strategy is not its own subscriber
        (ROOT, "anyone", True),
        (ROUTER, "anyone", True),
    ],
)
def test_may_act_for(principal: Principal, user_id: str, allowed: bool) -> None:
    assert principal.may_act_for(user_id) is allowed


def test_rule_helpers() -> None:
    rule = user_scoped(lambda r: r.user_id, services=["router"])
    assert rule.kinds == {PrincipalKind.USER, PrincipalKind.STRATEGY, PrincipalKind.ADMIN, PrincipalKind.SERVICE}
    assert rule.services == {"router"}
    assert user_scoped(lambda r: r.user_id).kinds == {PrincipalKind.USER, PrincipalKind.STRATEGY, PrincipalKind.ADMIN}
    assert services_only("router", "aggregator") == Rule(frozenset({PrincipalKind.SERVICE}), frozenset({"router", "aggregator"}))
    assert admin_only().kinds == {PrincipalKind.ADMIN}
    with pytest.raises(ValueError):
        Rule(kinds=frozenset({PrincipalKind.USER}), services=frozenset({"router"}))


def test_token_interceptors_refuse_an_empty_token() -> None:
    with pytest.raises(ValueError):
        token_interceptors("")
    assert len(token_interceptors("t")) == 4


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Fetch:
    """Records fetched tokens; `gate` holds every fetch until set."""

    def __init__(self, principals: dict[str, Principal]) -> None:
        self.principals = principals
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def __call__(self, token: str) -> Principal | None:
        self.calls.append(token)
        await self.gate.wait()
        if self.fail:
            raise ConnectionError("auth upstream down")
        return self.principals.get(token)


async def test_cache_serves_within_ttl_and_refetches_after() -> None:
    clock, fetch = Clock(), Fetch({"tok-a": ALICE})
    auth = CachingAuthenticator(fetch, ttl_s=2.0, clock=clock)
    assert await auth("tok-a") == ALICE
    clock.now += 1.9
    assert await auth("tok-a") == ALICE
    assert fetch.calls == ["tok-a"]
    clock.now += 0.2  # 2.1 s after the fetch: revocation must be seen now
    del fetch.principals["tok-a"]
    assert await auth("tok-a") is None
    assert fetch.calls == ["tok-a", "tok-a"]


async def test_unknown_tokens_are_cached_briefly() -> None:
    clock, fetch = Clock(), Fetch({})
    auth = CachingAuthenticator(fetch, ttl_s=2.0, negative_ttl_s=0.5, clock=clock)
    assert await auth("nope") is None
    assert await auth("nope") is None
    assert fetch.calls == ["nope"]
    clock.now += 0.6
    fetch.principals["nope"] = ALICE  # issued meanwhile: visible after the short negative TTL
    assert await auth("nope") == ALICE
    assert len(fetch.calls) == 2


async def test_concurrent_lookups_share_one_fetch() -> None:
    fetch = Fetch({"tok-a": ALICE, "tok-b": ROUTER})
    fetch.gate.clear()
    auth = CachingAuthenticator(fetch, clock=Clock())
    calls = [asyncio.create_task(auth("tok-a")) for _ in range(50)] + [asyncio.create_task(auth("tok-b"))]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    fetch.gate.set()
    results = await asyncio.gather(*calls)
    assert results == [ALICE] * 50 + [ROUTER]
    assert sorted(fetch.calls) == ["tok-a", "tok-b"]


async def test_one_caller_cancelled_does_not_cancel_the_shared_fetch() -> None:
    fetch = Fetch({"tok-a": ALICE})
    fetch.gate.clear()
    auth = CachingAuthenticator(fetch, clock=Clock())
    first, second = asyncio.create_task(auth("tok-a")), asyncio.create_task(auth("tok-a"))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    fetch.gate.set()
    assert await second == ALICE
    assert fetch.calls == ["tok-a"]


async def test_fetch_errors_reach_every_waiter_and_are_not_cached() -> None:
    fetch = Fetch({"tok-a": ALICE})
    fetch.fail = True
    fetch.gate.clear()
    auth = CachingAuthenticator(fetch, clock=Clock())
    calls = [asyncio.create_task(auth("tok-a")) for _ in range(3)]
    await asyncio.sleep(0)
    fetch.gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    fetch.fail = False
    assert await auth("tok-a") == ALICE
    assert fetch.calls == ["tok-a", "tok-a"]


async def test_cache_keys_are_digests_never_tokens() -> None:
    auth = CachingAuthenticator(Fetch({"secret-token-123": ALICE}), clock=Clock())
    await auth("secret-token-123")
    assert list(auth._entries) == [hashlib.sha256(b"secret-token-123").digest()]
    assert "secret-token-123" not in repr(vars(auth))


async def test_cache_is_bounded() -> None:
    fetch = Fetch({f"t{i}": Principal(PrincipalKind.USER, f"u{i}") for i in range(10)})
    auth = CachingAuthenticator(fetch, clock=Clock(), max_entries=3)
    for i in range(10):
        await auth(f"t{i}")
    assert len(auth._entries) == 3
    await auth("t9")  # the newest stays cached
    assert fetch.calls.count("t9") == 1
    await auth("t0")  # the oldest was evicted
    assert fetch.calls.count("t0") == 2
