"""Notifications: each user's webhooks, POSTed a signed JSON body for the events they chose.

Events: ``fill`` (a persisted update that carries fills), ``rejected`` (an order that ended
REJECTED or FAILED) and ``kill_switch`` (the user's own kill switch, or the global one, turned on
or off). Three parts, none of which the ledger's writers ever wait on:

- the **outbox** follows the ledger's updates with its own persisted cursor (like the position
  feed) and, for each update a webhook of its user is subscribed to, inserts a delivery row, in the
  same write that moves the cursor. A delivery is unique per (webhook, event): every event is
  enqueued once, across restarts and re-reads;
- the **kill switch follower** diffs the permission service's WatchControls snapshots (the first
  one after start is the baseline, not an event) and enqueues a delivery per subscribed webhook;
- the **sender** POSTs due deliveries, a bounded number at a time, each in a worker thread with a
  timeout. A 2xx answer delivers it; anything else schedules a retry (exponential backoff with
  jitter) until the last attempt, after which it is FAILED. One webhook has at most one POST in
  flight, webhooks whose last attempt failed get at most half the slots, and the ones that work
  are served first: a slow or dead receiver delays nobody else.

The request
-----------
``POST <url>`` with ``Content-Type: application/json`` and the body::

    {"delivery_id": "dlv_...", "event": "fill", "user_id": "alice",
     "sent_at": "2024-05-01T12:00:00.123Z", "update": {"signal_id": "...", ...}}

    {"delivery_id": "dlv_...", "event": "kill_switch", "user_id": "alice",
     "sent_at": "2024-05-01T12:00:00.123Z",
     "kill_switch": {"on": true, "reason": "venue outage", "scope": "global"}}

``event`` is ``fill`` or ``rejected`` with ``update``, ``kill_switch`` with ``kill_switch``
(``scope``: ``user`` for the user's own switch, ``global`` for everyone's; a user's switch turned
off has an empty reason).

``update`` is the persisted ExecutionUpdate in protobuf's JSON mapping with the proto field names
(``signal_id``, ``filled_quantity``, ...; enums by name; decimals, and 64-bit integers such as
``sequence``, as strings).

Headers: ``X-Nija-Delivery`` (the delivery id: the same on every retry, so deduplicate by it),
``X-Nija-Event``, ``X-Nija-Timestamp`` (unix seconds of this attempt) and ``X-Nija-Signature``.

Verifying a request (the secret is the one SetWebhook returned)::

    import hashlib, hmac, time

    def verify(secret: str, headers, body: bytes, tolerance_s: int = 300) -> bool:
        timestamp = headers["X-Nija-Timestamp"]
        expected = "sha256=" + hmac.new(
            secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        fresh = abs(time.time() - int(timestamp)) <= tolerance_s   # refuses replays
        return fresh and hmac.compare_digest(expected, headers["X-Nija-Signature"])

Compute the HMAC over the raw body bytes as received, before any JSON parsing. Answer 2xx quickly (within the
timeout, 5 s by default) and do the work afterwards; a redirect counts as a failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import hmac
import http.client
import itertools
import json
import logging
import random
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from google.protobuf import json_format
from nija.aggregator.v1 import aggregator_pb2
from nija.common.v1 import common_pb2
from nija.permission.v1 import permission_pb2

from services.aggregator.ledger import (
    MAX_SEQUENCE,
    NOTIFICATION_EVENTS,
    Attempt,
    DueDelivery,
    EventToSend,
    WebhookStore,
)
from services.domain.retry import backoff
from services.domain.signal import SignalProblem, check_id
from services.runtime.aio import wait_set
from services.runtime.errors import invalid

log = logging.getLogger(__name__)

FILL, REJECTED, KILL_SWITCH = "fill", "rejected", "kill_switch"
_EVENT_FROM_PB = {pb: name for name, pb in NOTIFICATION_EVENTS.items()}
_REJECTED_STATUSES = (common_pb2.EXECUTION_STATUS_REJECTED, common_pb2.EXECUTION_STATUS_FAILED)

MAX_URL_LENGTH = 2048
MAX_WEBHOOKS_PER_USER = 10
MAX_ERROR_LENGTH = 300
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

Clock = Callable[[], float]
#: POST `body` with `headers` to `url` within `timeout_s`: None when answered 2xx, else why not.
Post = Callable[[str, bytes, Mapping[str, str], float], "str | None"]


@dataclasses.dataclass(frozen=True)
class SenderSettings:
    timeout_s: float = 5.0
    max_attempts: int = 10
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0
    concurrency: int = 8


# -- the rules (pure) --------------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Nija-Signature value: HMAC-SHA256 over `timestamp + "." + body`, keyed by the secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def events_of(update: common_pb2.ExecutionUpdate) -> list[str]:
    """The events a persisted update is: a fill when it carries fills, a rejection when it ends
    the order REJECTED or FAILED (both, for a failure that still brought fills)."""
    events = []
    if update.fills:
        events.append(FILL)
    if update.status in _REJECTED_STATUSES:
        events.append(REJECTED)
    return events


def retry_delay(attempts: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """The wait after the `attempts`-th failed attempt (1, 2, ...): backoff's delay for it."""
    return next(itertools.islice(backoff(base_s, cap_s, rng), attempts - 1, None))


def check_user(user_id: str) -> str:
    try:
        return check_id(user_id, "user_id")
    except SignalProblem as problem:
        raise invalid("BAD_USER_ID", str(problem), field="user_id") from None


def check_webhook_id(webhook_id: str) -> str:
    """A webhook id shaped like the ones this service issues ("wh_" and hex); anything else names
    no webhook, and is refused before it is looked up (or quoted back whole in a NOT_FOUND)."""
    try:
        return check_id(webhook_id, "webhook_id")
    except SignalProblem as problem:
        raise invalid("BAD_WEBHOOK_ID", str(problem), field="webhook_id") from None


def check_url(url: str) -> str:
    """An absolute http(s) URL with a host, no credentials, no whitespace, bounded length."""

    def bad(why: str) -> Exception:
        return invalid("BAD_URL", f"url {why}", field="url")

    if not url:
        raise bad("is required")
    if len(url) > MAX_URL_LENGTH:
        raise bad(f"is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise bad("contains whitespace or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise bad("is malformed") from None
    if parts.scheme not in ("http", "https"):
        raise bad("must start with http:// or https://")
    if not parts.hostname:
        raise bad("has no host")
    if parts.username is not None or parts.password is not None:
        raise bad("must not carry credentials (put a token in the path or query instead)")
    return url


def check_events(events: Iterable[int]) -> list[str]:
    """Wire NotificationEvents -> their names, deduplicated in a fixed order; at least one."""
    names = set()
    for value in events:
        name = _EVENT_FROM_PB.get(value)
        if name is None:
            raise invalid("BAD_EVENT", f"unknown notification event {value}", field="events")
        names.add(name)
    if not names:
        raise invalid("BAD_EVENT", "choose at least one event", field="events")
    return [name for name in NOTIFICATION_EVENTS if name in names]


@dataclasses.dataclass(frozen=True)
class Controls:
    """A snapshot of the kill switches."""

    global_on: bool = False
    global_reason: str = ""
    users: Mapping[str, str] = dataclasses.field(default_factory=dict)  # user -> reason, the ones on


def controls_of(pb: permission_pb2.WatchControlsResponse) -> Controls:
    return Controls(pb.global_kill, pb.global_reason, {u.user_id: u.reason for u in pb.users})


@dataclasses.dataclass(frozen=True)
class KillSwitchChange:
    user_id: str | None  # None: the global switch
    on: bool
    reason: str

    def payload(self) -> dict[str, object]:
        return {"on": self.on, "reason": self.reason, "scope": "global" if self.user_id is None else "user"}


def diff_controls(before: Controls, after: Controls) -> list[KillSwitchChange]:
    """The switches turned on or off between two snapshots (a new reason alone is no change).
    A user's switch turned off has no reason in the snapshot: it is reported with ""."""
    changes = []
    if before.global_on != after.global_on:
        changes.append(KillSwitchChange(None, after.global_on, after.global_reason))
    for user in sorted(before.users.keys() | after.users.keys()):
        if (user in before.users) != (user in after.users):
            changes.append(KillSwitchChange(user, user in after.users, after.users.get(user, "")))
    return changes


def update_json(update: common_pb2.ExecutionUpdate) -> str:
    return json.dumps(
        json_format.MessageToDict(update, preserving_proto_field_name=True), separators=(",", ":")
    )


def _rfc3339(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_request(delivery: DueDelivery, now: float) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one attempt at `delivery`, signed with its webhook's secret."""
    key = "kill_switch" if delivery.event == KILL_SWITCH else "update"
    body = json.dumps(
        {
            "delivery_id": delivery.delivery_id,
            "event": delivery.event,
            "user_id": delivery.user_id,
            "sent_at": _rfc3339(now),
            key: json.loads(delivery.payload),
        },
        separators=(",", ":"),
    ).encode()
    timestamp = str(int(now))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "nija-webhooks/1",
        "X-Nija-Delivery": delivery.delivery_id,
        "X-Nija-Event": delivery.event,
        "X-Nija-Timestamp": timestamp,
        "X-Nija-Signature": sign(delivery.secret, timestamp, body),
    }
    return body, headers


def outcome(
    delivery: DueDelivery, error: str | None, now: float, settings: SenderSettings, rng: random.Random
) -> Attempt:
    """What one attempt (`error` None: answered 2xx) makes of a delivery."""
    attempts = delivery.attempts + 1
    if error is None:
        return Attempt(delivery.delivery_id, "delivered", attempts, "", None, now)
    error = error[:MAX_ERROR_LENGTH]
    if attempts >= settings.max_attempts:
        return Attempt(delivery.delivery_id, "failed", attempts, error, None, None)
    delay = retry_delay(attempts, settings.backoff_base_s, settings.backoff_cap_s, rng)
    return Attempt(delivery.delivery_id, "pending", attempts, error, now + delay, None)


# -- HTTP -------------------------------------------------------------------------------------


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None  # a 3xx is answered as an HTTPError: a failed attempt


_OPENER = urllib.request.build_opener(_NoRedirects)


def post_webhook(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> str | None:
    """Blocking (run it in a worker thread). None on a 2xx answer; else a short reason, which
    never holds the URL or the headers (a URL may carry a receiver's token)."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        reason = exc.reason
        return f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if 200 <= status < 300 else f"HTTP {status}"


# -- the outbox: updates -> deliveries ---------------------------------------------------------


class Outbox:
    """Follows the ledger's updates and enqueues a delivery for each subscribed webhook.

    The cursor is persisted with every batch that enqueues something (in the same write), and
    otherwise only every `persist_every` updates and at stop: most updates concern no webhook, and
    the ledger's writers should not pay a commit for each. Enqueueing is idempotent, so reading
    again from a cursor persisted late only costs the reading.
    """

    def __init__(
        self,
        store: WebhookStore,
        clock: Clock,
        on_enqueued: Callable[[], None] = lambda: None,
        batch: int = 200,
        idle_s: float = 1.0,
        persist_every: int = 1000,
    ) -> None:
        self._store = store
        self._clock = clock
        self._on_enqueued = on_enqueued
        self._batch = batch
        self._idle_s = idle_s
        self._persist_every = persist_every
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._position: int | None = None  # handled up to here
        self._persisted = 0  # ... and persisted up to here

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(_follow(self.drain_once, self._wake, lambda: self._idle_s, "outbox"),
                                         name="webhook-outbox")

    async def stop(self) -> None:
        await _cancel(self._task)
        self._task = None
        if self._position is not None and self._position > self._persisted:
            try:
                await self._store.enqueue_updates(self._position, [], self._clock())
            except Exception:  # the next start reads a little more again: no harm
                log.warning("webhook outbox: could not persist its cursor at stop", exc_info=True)

    async def drain_once(self) -> int:
        """Enqueue everything after the cursor; returns how many deliveries were created."""
        if self._position is None:
            self._position = self._persisted = await self._store.outbox_cursor()
        created = 0
        while True:
            rows, subscribed = await self._store.outbox_batch(self._position, self._batch)
            if not rows:
                return created
            events = []
            for position, update in rows:
                wanted = [e for e in events_of(update) if e in subscribed.get(update.user_id, ())]
                if wanted:
                    payload = update_json(update)
                    events.extend(EventToSend(position, update.user_id, update.sequence, e, payload) for e in wanted)
            last = rows[-1][0]
            if events or last - self._persisted >= self._persist_every:
                new = await self._store.enqueue_updates(last, events, self._clock())
                self._persisted = last
                if new:
                    created += new
                    self._on_enqueued()
            self._position = last


# -- the sender --------------------------------------------------------------------------------


class Sender:
    """Delivers due deliveries: bounded concurrency, one POST per webhook at a time, retries
    scheduled (never slept) through each delivery's next_attempt_at."""

    def __init__(
        self,
        store: WebhookStore,
        settings: SenderSettings,
        clock: Clock = time.time,
        post: Post = post_webhook,
        rng: random.Random | None = None,
        batch: int = 20,
        idle_s: float = 1.0,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._post = post
        self._rng = rng or random.Random()
        self._batch = batch
        self._idle_s = idle_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pool: ThreadPoolExecutor | None = None
        #: webhook -> its worker, while it has a POST in flight
        self._in_flight: dict[str, asyncio.Task[int]] = {}
        #: webhook -> consecutive failed attempts (forgotten on success)
        self._failing: dict[str, int] = {}
        self._next_wait = idle_s

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(_follow(self._round, self._wake, lambda: self._next_wait, "sender"),
                                         name="webhook-sender")

    async def stop(self) -> None:
        await _cancel(self._task)
        self._task = None
        for task in list(self._in_flight.values()):
            await _cancel(task)
        if self._pool is not None:
            # A POST already running ends within its timeout; nothing waits for it.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def deliver_due(self) -> int:
        """Attempt everything due now, until nothing more is (tests; the service runs `start`).
        Returns how many attempts were made."""
        made = 0
        while True:
            workers = await self.dispatch()
            if not workers:
                return made
            made += sum(await asyncio.gather(*workers))

    async def dispatch(self) -> list[asyncio.Task[int]]:
        """Start a worker for each webhook with due deliveries, as the free slots allow: the
        webhooks that work first, the failing ones in at most half the slots, one probe each."""
        settings = self._settings
        free = settings.concurrency - len(self._in_flight)
        if free <= 0:
            return []
        now = self._clock()
        due = [w for w in await self._store.due_webhooks(now) if w not in self._in_flight]
        due.sort(key=lambda w: self._failing.get(w, 0) > 0)  # stable: longest waiting first within
        failing_slots = max(1, settings.concurrency // 2) - sum(1 for w in self._in_flight if self._failing.get(w))
        started: list[asyncio.Task[int]] = []
        for webhook_id in due:
            if len(started) >= free:
                break
            failing = self._failing.get(webhook_id, 0) > 0
            if failing and failing_slots <= 0:
                continue
            deliveries = await self._store.due_deliveries(webhook_id, now, 1 if failing else self._batch)
            if not deliveries:
                continue
            failing_slots -= failing
            task = asyncio.create_task(self._work(webhook_id, deliveries), name=f"webhook-{webhook_id}")
            self._in_flight[webhook_id] = task
            started.append(task)
        return started

    async def _work(self, webhook_id: str, deliveries: Sequence[DueDelivery]) -> int:
        made = 0
        try:
            for delivery in deliveries:
                made += 1
                if not await self.attempt(delivery):
                    break  # the rest wait for their turn in the failing share
            return made
        finally:
            self._in_flight.pop(webhook_id, None)
            self._wake.set()

    async def attempt(self, delivery: DueDelivery) -> bool:
        """One POST of `delivery` and its recorded outcome; True when delivered."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._settings.concurrency, thread_name_prefix="webhook-post")
        body, headers = build_request(delivery, self._clock())
        loop = asyncio.get_running_loop()
        try:
            error = await loop.run_in_executor(
                self._pool, self._post, delivery.url, body, headers, self._settings.timeout_s
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in the poster: the delivery is retried like any failure
            error = f"{type(exc).__name__}: {exc}"
        result = outcome(delivery, error, self._clock(), self._settings, self._rng)
        await self._store.record_attempt(result)
        if error is None:
            self._failing.pop(delivery.webhook_id, None)
        else:
            self._failing[delivery.webhook_id] = self._failing.get(delivery.webhook_id, 0) + 1
            log.info(
                "webhook delivery failed",
                extra={"delivery_id": delivery.delivery_id, "webhook_id": delivery.webhook_id,
                       "attempts": result.attempts, "error": result.last_error, "status": result.status},
            )
        return error is None

    async def _round(self) -> None:
        await self.dispatch()
        # Sleep until the next retry is due, or a worker ends (a slot frees), or more is enqueued.
        due = await self._store.next_due_at()
        wait = self._idle_s
        if due is not None and due > self._clock():
            wait = min(wait, due - self._clock())
        self._next_wait = wait


# -- the whole -------------------------------------------------------------------------------


ControlsStream = Callable[[], AsyncIterator[permission_pb2.WatchControlsResponse]]


class Notifications:
    """Webhooks: their management (the RPCs), the outbox, the sender and the kill switch follower."""

    def __init__(
        self,
        store: WebhookStore,
        settings: SenderSettings,
        controls: ControlsStream | None = None,
        clock: Clock = time.time,
        post: Post = post_webhook,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self._clock = clock
        self._controls = controls
        self.sender = Sender(store, settings, clock=clock, post=post, rng=rng)
        self.outbox = Outbox(store, clock, on_enqueued=self.sender.wake)
        #: Set once the first kill switch snapshot (the baseline) arrived.
        self.controls_baseline = asyncio.Event()
        self._follower: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """An update was committed."""
        self.outbox.wake()

    async def start(self) -> None:
        """After the ledger is open."""
        await self.store.open()
        self.outbox.start()
        self.sender.start()
        if self._controls is not None:
            self._follower = asyncio.create_task(self.follow_controls(self._controls()), name="webhook-controls")

    async def stop(self) -> None:
        await _cancel(self._follower)
        self._follower = None
        await self.outbox.stop()
        await self.sender.stop()

    # -- the RPCs ---------------------------------------------------------------------------

    async def set_webhook(
        self, user_id: str, url: str, events: Iterable[int]
    ) -> tuple[aggregator_pb2.Webhook, str, bool]:
        """The webhook, its new secret (shown once) and whether it was created."""
        user_id, url, names = check_user(user_id), check_url(url), check_events(events)
        secret = secrets.token_urlsafe(32)
        webhook, created = await self.store.set_webhook(
            "wh_" + secrets.token_hex(8), user_id, url, names, secret, self._clock(), MAX_WEBHOOKS_PER_USER
        )
        log.info("webhook set", extra={"user_id": user_id, "webhook_id": webhook.webhook_id,
                                       "events": names, "replaced": not created})
        return webhook, secret, created

    async def list_webhooks(self, user_id: str) -> list[aggregator_pb2.Webhook]:
        return await self.store.list_webhooks(check_user(user_id))

    async def delete_webhook(self, user_id: str, webhook_id: str) -> None:
        await self.store.delete_webhook(check_user(user_id), check_webhook_id(webhook_id))
        log.info("webhook deleted", extra={"user_id": user_id, "webhook_id": webhook_id})

    async def list_deliveries(
        self, user_id: str, webhook_id: str, page_size: int, page_token: str
    ) -> tuple[list[aggregator_pb2.Delivery], str]:
        user_id = check_user(user_id)
        webhook_id = check_webhook_id(webhook_id) if webhook_id else ""
        if page_size > MAX_PAGE_SIZE:
            raise invalid("BAD_PAGE_SIZE", f"page_size is at most {MAX_PAGE_SIZE}", field="page_size")
        after = None
        if page_token:
            if not (len(page_token) <= 19 and page_token.isascii() and page_token.isdigit()
                    and int(page_token) <= MAX_SEQUENCE):
                raise invalid("BAD_PAGE_TOKEN", "page_token is not a token this service issued", field="page_token")
            after = int(page_token)
        deliveries, next_after = await self.store.list_deliveries(
            user_id, webhook_id, page_size or DEFAULT_PAGE_SIZE, after
        )
        return deliveries, "" if next_after is None else str(next_after)

    # -- kill switches ----------------------------------------------------------------------

    async def follow_controls(self, stream: AsyncIterator[permission_pb2.WatchControlsResponse]) -> None:
        """Enqueue a delivery for each kill switch change; the first snapshot is the baseline."""
        last: Controls | None = None
        async for pb in stream:
            current = controls_of(pb)
            if last is not None:
                for change in diff_controls(last, current):
                    try:
                        await self.kill_switch_changed(change)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("could not enqueue a kill switch notification",
                                      extra={"user_id": change.user_id or "*", "on": change.on})
            last = current
            self.controls_baseline.set()

    async def kill_switch_changed(self, change: KillSwitchChange) -> int:
        created = await self.store.enqueue_kill_switch(
            change.user_id, uuid.uuid4().hex, json.dumps(change.payload(), separators=(",", ":")), self._clock()
        )
        if created:
            self.sender.wake()
        return created


# -- helpers -----------------------------------------------------------------------------------


async def _follow(
    step: Callable[[], object], wake: asyncio.Event, wait_s: Callable[[], float], name: str
) -> None:
    """Run `step` again whenever `wake` is set, or `wait_s()` after the last run."""
    while True:
        wake.clear()
        try:
            await step()  # type: ignore[misc]
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhook %s failed; retrying", name)
        await wait_set(wake, wait_s())


async def _cancel(task: asyncio.Task | None) -> None:  # type: ignore[type-arg]
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
