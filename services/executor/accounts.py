"""The users' accounts on this executor's venue, with their API keys.

Keys come decrypted from the permission service (only executors may ask, each for its own
broker) and are kept in memory, never written anywhere or logged: for `ttl_s`, or for
`followed_ttl_s` while the permission service's API keys' version is followed (every cached
account is dropped when it changes), so an order does not cost a credentials read.

A read that times out or finds the permission service unreachable is tried again for up to
`retry_s`: nothing has been sent for the order yet, and handing it back would end it FAILED when
no other broker can take it (seen with 76 of 940 orders of a 1,000-subscriber fan-out on a loaded
machine, each read over its 2 s deadline).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from services.domain.retry import backoff
from services.executor.venues.base import Account
from services.runtime.errors import ServiceError
from services.runtime.retrying import retrying

log = logging.getLogger(__name__)

#: (user_id, broker) -> the stored credentials (with api_key, api_secret, passphrase), or None.
FetchCredentials = Callable[[str, str], Awaitable[Any]]


class AccountBook:
    def __init__(
        self,
        broker: str,
        fetch: FetchCredentials,
        ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        followed_ttl_s: float = 600.0,
        retry_s: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._broker = broker
        self._fetch = fetch
        self._retry_s = retry_s
        self._sleep = sleep
        self._ttl_s = ttl_s
        self._followed_ttl_s = followed_ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, Account]] = {}
        self._version = ""

    def follow(self, api_keys_version: str) -> None:
        """The permission service's API keys' version, as WatchControls announced it: a change
        drops every cached account. Empty (a service that does not track it) keeps the short TTL."""
        if api_keys_version != self._version:
            self._cache.clear()
            self._version = api_keys_version

    async def account(self, user_id: str) -> Account:
        """The user's account; keyless when no keys are stored (the simulated venues need none)."""
        now = self._clock()
        cached = self._cache.get(user_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        credentials = await self._read(user_id)
        if credentials is None:
            account = Account(user_id=user_id, account_id=user_id)
        else:
            # A fingerprint, never the key: enough to tell which key an order was signed with.
            fingerprint = hashlib.sha256(credentials.api_key.encode()).hexdigest()[:12]
            log.info("api keys loaded", extra={"user_id": user_id, "broker": self._broker, "key_fingerprint": fingerprint})
            account = Account(
                user_id=user_id,
                account_id=user_id,
                api_key=credentials.api_key,
                api_secret=credentials.api_secret,
                passphrase=credentials.passphrase,
            )
        ttl = self._followed_ttl_s if self._version else self._ttl_s
        self._cache[user_id] = (now + ttl, account)
        return account

    async def _read(self, user_id: str) -> Any:
        def on_retry(exc: ServiceError, delay: float) -> None:
            log.warning("api keys could not be read; trying again",
                        extra={"user_id": user_id, "broker": self._broker, "code": exc.code.name,
                               "retry_in_s": round(delay, 3)})

        return await retrying(lambda: self._fetch(user_id, self._broker), for_s=self._retry_s,
                              delays=backoff(0.2, 2.0, random.Random()), on_retry=on_retry,
                              clock=self._clock, sleep=self._sleep)

    def forget(self, user_id: str | None = None) -> None:
        """Drop cached keys (all of them without a user): the next order reads them again."""
        if user_id is None:
            self._cache.clear()
        else:
            self._cache.pop(user_id, None)
