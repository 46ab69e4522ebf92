"""An executor's cache of its users' accounts: read again after the TTL, kept much longer while
the permission service's API keys' version is followed, dropped at once when that changes."""

from __future__ import annotations

import types

import grpc
import pytest

from services.executor.accounts import AccountBook
from services.runtime.errors import ServiceError


class _Keys:
    def __init__(self) -> None:
        self.reads = 0
        self.stored: dict[str, str] = {}

    async def __call__(self, user_id: str, broker: str):  # type: ignore[no-untyped-def]
        self.reads += 1
        key = self.stored.get(user_id)
        return None if key is None else types.SimpleNamespace(api_key=key, api_secret="s", passphrase="")


@pytest.fixture
def clock() -> list[float]:
    return [0.0]


async def test_without_a_version_accounts_are_read_again_after_the_ttl(clock) -> None:
    keys = _Keys()
    book = AccountBook("kraken", keys, ttl_s=30.0, clock=lambda: clock[0], followed_ttl_s=600.0)
    await book.account("alice")
    clock[0] = 29.0
    await book.account("alice")
    assert keys.reads == 1
    clock[0] = 31.0
    await book.account("alice")
    assert keys.reads == 2


async def test_a_followed_version_keeps_accounts_until_it_changes(clock) -> None:
    keys = _Keys()
    book = AccountBook("kraken", keys, ttl_s=30.0, clock=lambda: clock[0], followed_ttl_s=600.0)
    book.follow("0@")
    assert (await book.account("alice")).api_key == ""  # keyless: nothing stored yet
    clock[0] = 500.0
    await book.account("alice")
    assert keys.reads == 1  # no credentials read per order

    keys.stored["alice"] = "AK-new"
    book.follow("0@")  # the same version announced again: nothing dropped
    assert (await book.account("alice")).api_key == ""
    book.follow("1@2026-12-07T08:00:00")  # keys set: every cached account goes
    assert (await book.account("alice")).api_key == "AK-new" and keys.reads == 2

    clock[0] = 1200.0  # past the followed TTL: read again all the same
    await book.account("alice")
    assert keys.reads == 3


async def test_a_service_that_does_not_track_keys_leaves_the_short_ttl(clock) -> None:
    keys = _Keys()
    book = AccountBook("kraken", keys, ttl_s=30.0, clock=lambda: clock[0], followed_ttl_s=600.0)
    book.follow("")
    await book.account("alice")
    clock[0] = 31.0
    await book.account("alice")
    assert keys.reads == 2


class _Busy(_Keys):
    """A permission service whose first `failures` reads fail with `code`."""

    def __init__(self, failures: int, code: grpc.StatusCode) -> None:
        super().__init__()
        self.failures = failures
        self.code = code

    async def __call__(self, user_id: str, broker: str):  # type: ignore[no-untyped-def]
        if self.reads < self.failures:
            self.reads += 1
            raise ServiceError(self.code, self.code.name, "busy")
        return await super().__call__(user_id, broker)


def _book(keys: _Keys, clock: list[float]) -> tuple[AccountBook, list[float]]:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += s

    return AccountBook("kraken", keys, clock=lambda: clock[0], retry_s=10.0, sleep=sleep), slept


@pytest.mark.parametrize("code", [grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE])
async def test_a_busy_permission_service_is_asked_again(clock, code: grpc.StatusCode) -> None:
    keys = _Busy(3, code)
    keys.stored["alice"] = "AK"
    book, slept = _book(keys, clock)
    assert (await book.account("alice")).api_key == "AK"
    assert keys.reads == 4 and len(slept) == 3 and all(0 < s <= 2.0 for s in slept)


async def test_it_gives_up_after_retry_s_and_never_retries_a_refusal(clock) -> None:
    book, slept = _book(_Busy(1000, grpc.StatusCode.UNAVAILABLE), clock)
    with pytest.raises(ServiceError):
        await book.account("alice")
    assert 8.0 <= sum(slept) <= 10.0

    refused = _Busy(1, grpc.StatusCode.PERMISSION_DENIED)
    book, slept = _book(refused, clock)
    with pytest.raises(ServiceError):
        await book.account("alice")
    assert refused.reads == 1 and slept == []
