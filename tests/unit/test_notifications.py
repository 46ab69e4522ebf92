"""Webhook notifications without a network: the signature, the backoff, which events reach which
webhook, the outbox cursor (each update enqueued once, across restarts), the sender's retries."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import random
import sqlite3
import threading
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import grpc
import pytest
from nija.aggregator.v1 import aggregator_pb2 as a
from nija.common.v1 import common_pb2 as c
from nija.permission.v1 import permission_pb2 as p

from services.aggregator.ledger import OUTBOX_FEED, DueDelivery, Ledger, WebhookStore
from services.aggregator.notifications import (
    Controls,
    KillSwitchChange,
    Notifications,
    SenderSettings,
    build_request,
    check_url,
    diff_controls,
    events_of,
    outcome,
    retry_delay,
    sign,
)
from services.runtime.errors import ServiceError
from tests.unit.test_ledger import fill, to_executing, update

FILL, REJECTED, KILL = a.NOTIFICATION_EVENT_FILL, a.NOTIFICATION_EVENT_REJECTED, a.NOTIFICATION_EVENT_KILL_SWITCH
SETTINGS = SenderSettings(timeout_s=1.0, max_attempts=4, backoff_base_s=1.0, backoff_cap_s=4.0, concurrency=4)


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Receivers:
    """Stands in for the HTTP endpoints: answers per URL from a script, records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict, Mapping[str, str], bytes]] = []
        self.failures: dict[str, int] = {}  # url -> how many requests to fail first
        self._lock = threading.Lock()

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> str | None:
        with self._lock:
            self.requests.append((url, json.loads(body), dict(headers), body))
            left = self.failures.get(url, 0)
            if left:
                self.failures[url] = left - 1
                return "HTTP 500"
        return None

    def events(self, url: str) -> list[tuple[str, int]]:
        return [(r[1]["event"], r[1].get("update", {}).get("sequence", 0)) for r in self.requests if r[0] == url]


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    """On SQLite and on PostgreSQL."""
    store = await Ledger(database_url).open()
    yield store
    await store.close()


@pytest.fixture
async def parts(ledger: Ledger) -> AsyncIterator[tuple[Notifications, FakeClock, Receivers]]:
    clock, receivers = FakeClock(), Receivers()
    notifications = Notifications(WebhookStore(ledger), SETTINGS, clock=clock, post=receivers.post,
                                  rng=random.Random(7))
    await notifications.store.open()
    yield notifications, clock, receivers
    await notifications.stop()


# -- the rules --------------------------------------------------------------------------------


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body_and_the_docstring_recipe_verifies_it() -> None:
    secret, timestamp, body = "s3cret", "1700000000", b'{"a":1}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(secret, timestamp, body) == f"sha256={expected}"

    delivery = DueDelivery("dlv_1", "wh_1", "u1", "http://x/hook", secret, "kill_switch",
                           '{"on":true,"reason":"r","scope":"global"}', 0)
    body, headers = build_request(delivery, 1_700_000_000.25)
    assert headers["X-Nija-Timestamp"] == "1700000000"
    assert headers["X-Nija-Delivery"] == "dlv_1" and headers["X-Nija-Event"] == "kill_switch"
    assert headers["Content-Type"] == "application/json"
    mac = hmac.new(secret.encode(), headers["X-Nija-Timestamp"].encode() + b"." + body, hashlib.sha256)
    assert hmac.compare_digest("sha256=" + mac.hexdigest(), headers["X-Nija-Signature"])
    assert json.loads(body) == {
        "delivery_id": "dlv_1", "event": "kill_switch", "user_id": "u1", "sent_at": "2023-11-14T22:13:20.250Z",
        "kill_switch": {"on": True, "reason": "r", "scope": "global"},
    }
    # Another secret, or a body changed in transit, does not verify.
    assert sign("other", "1700000000", body) != headers["X-Nija-Signature"]
    assert sign(secret, "1700000000", body + b" ") != headers["X-Nija-Signature"]


def test_the_verification_recipe_in_the_module_docstring_accepts_a_real_request_and_refuses_tampering() -> None:
    import textwrap
    import time

    from services.aggregator import notifications

    doc = notifications.__doc__ or ""
    block = doc.split("Verifying a request (the secret is the one SetWebhook returned)::", 1)[1]
    code = textwrap.dedent(block.split("\n\nCompute the HMAC", 1)[0])
    scope: dict[str, object] = {}
    exec(code, scope)  # noqa: S102 - our own documentation
    verify = scope["verify"]

    delivery = DueDelivery("dlv_1", "wh_1", "u1", "http://x/hook", "s3cret", "fill", '{"sequence":"3"}', 2)
    body, headers = build_request(delivery, time.time())
    assert verify("s3cret", headers, body)  # type: ignore[operator]
    assert not verify("other", headers, body)  # type: ignore[operator]
    assert not verify("s3cret", headers, body.replace(b'"3"', b'"4"'))  # type: ignore[operator]
    stale = build_request(delivery, time.time() - 3600)
    assert not verify("s3cret", stale[1], stale[0])  # type: ignore[operator]


def test_the_backoff_doubles_from_the_base_with_jitter_up_to_the_cap_and_gives_up_at_max_attempts() -> None:
    rng = random.Random(1)
    for attempts, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (12, 10.0)]:
        for _ in range(50):
            assert ceiling / 2 <= retry_delay(attempts, 1.0, 10.0, rng) <= ceiling

    due = DueDelivery("dlv_1", "wh_1", "u1", "http://x", "s", "fill", "{}", 0)
    first = outcome(due, "HTTP 500", 100.0, SETTINGS, rng)
    assert (first.status, first.attempts, first.last_error) == ("pending", 1, "HTTP 500")
    assert 100.5 <= first.next_attempt_at <= 101.0 and first.delivered_at is None
    third = outcome(dataclass_replace(due, attempts=2), "x" * 1000, 100.0, SETTINGS, rng)
    assert third.status == "pending" and 102.0 <= third.next_attempt_at <= 104.0 and len(third.last_error) == 300
    last = outcome(dataclass_replace(due, attempts=3), "HTTP 502", 100.0, SETTINGS, rng)
    assert (last.status, last.attempts, last.next_attempt_at) == ("failed", 4, None)
    done = outcome(dataclass_replace(due, attempts=3), None, 100.0, SETTINGS, rng)
    assert (done.status, done.attempts, done.delivered_at, done.last_error) == ("delivered", 4, 100.0, "")


def dataclass_replace(d: DueDelivery, **kw: object) -> DueDelivery:
    return dataclasses.replace(d, **kw)  # type: ignore[arg-type]


def test_which_updates_are_which_events() -> None:
    fills = [fill("t1", "0.001")]
    assert events_of(update(c.EXECUTION_STATUS_EXECUTING, "x")) == []
    assert events_of(update(c.EXECUTION_STATUS_FILLED, "x")) == []  # no fill carried: nothing to say
    assert events_of(update(c.EXECUTION_STATUS_PARTIAL_FILL, "x", fills=fills)) == ["fill"]
    assert events_of(update(c.EXECUTION_STATUS_REJECTED, "x")) == ["rejected"]
    assert events_of(update(c.EXECUTION_STATUS_FAILED, "x", fills=fills)) == ["fill", "rejected"]
    assert events_of(update(c.EXECUTION_STATUS_CANCELLED, "x")) == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "https://example.com/h?token=abc", "https://[::1]/x"])
def test_http_and_https_urls_are_accepted(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize("url", [
    "", "ftp://example.com/x", "file:///etc/passwd", "javascript:alert(1)", "example.com/hook", "http:///path",
    "https://user:pw@example.com/x", "http://example.com/a b", "http://example.com/\n", "http://example.com:99999/",
    "https://example.com/" + "a" * 2100,
])
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ServiceError) as info:
        check_url(url)
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_URL")


def test_kill_switch_changes_are_on_off_transitions_between_snapshots() -> None:
    off = Controls()
    assert diff_controls(off, off) == []
    on = Controls(True, "exchange outage", {"u1": "margin call"})
    assert diff_controls(off, on) == [KillSwitchChange(None, True, "exchange outage"),
                                      KillSwitchChange("u1", True, "margin call")]
    # A new reason for a switch that stays on is not a change.
    assert diff_controls(on, Controls(True, "still out", {"u1": "other"})) == []
    assert diff_controls(on, Controls(False, "back", {"u2": "x"})) == [
        KillSwitchChange(None, False, "back"), KillSwitchChange("u1", False, ""), KillSwitchChange("u2", True, "x")]
    assert KillSwitchChange("u1", True, "r").payload() == {"on": True, "reason": "r", "scope": "user"}


# -- the outbox -------------------------------------------------------------------------------


async def _deliveries(n: Notifications, user: str) -> list[a.Delivery]:
    out, _ = await n.list_deliveries(user, "", 1000, "")
    return sorted(out, key=lambda d: (d.webhook_id, d.event, d.sequence))


async def test_updates_reach_only_the_webhooks_of_their_user_subscribed_to_their_event(parts) -> None:
    n, _, _ = parts
    fills_only, _, _ = await n.set_webhook("u1", "http://r/u1-fills", [FILL])
    everything, _, _ = await n.set_webhook("u1", "http://r/u1-all", [FILL, REJECTED, KILL])
    kill_only, _, _ = await n.set_webhook("u1", "http://r/u1-kill", [KILL])
    other, _, _ = await n.set_webhook("u2", "http://r/u2", [FILL, REJECTED])
    ledger = n.store._ledger

    await to_executing(ledger, "s1")
    await ledger.record(update(c.EXECUTION_STATUS_FILLED, "s1:f", "s1", fills=[fill("t1", "0.002")], broker="kraken"))
    await ledger.create_order(c.TradeSignal(signal_id="s2", user_id="u1", pair="BTC-USD", side=c.SIDE_BUY,
                                            size_usd="100", signal_type=c.SIGNAL_TYPE_ENTRY))
    await ledger.record(update(c.EXECUTION_STATUS_REJECTED, "s2:r", "s2", reason="no liquidity"))
    assert await n.outbox.drain_once() == 3

    found = {(d.webhook_id, d.event, d.sequence) for d in await _deliveries(n, "u1")}
    filled_seq, rejected_seq = 5, 7
    assert found == {
        (fills_only.webhook_id, FILL, filled_seq),
        (everything.webhook_id, FILL, filled_seq),
        (everything.webhook_id, REJECTED, rejected_seq),
    }
    assert all(d.status == a.DELIVERY_STATUS_PENDING and d.attempts == 0 for d in await _deliveries(n, "u1"))
    assert await _deliveries(n, "u2") == [] and kill_only.webhook_id not in {w for w, _, _ in found}
    # ListDeliveries of another user's webhook: not found.
    with pytest.raises(ServiceError) as info:
        await n.list_deliveries("u2", everything.webhook_id, 0, "")
    assert info.value.reason == "WEBHOOK_NOT_FOUND"
    assert other.user_id == "u2"


async def test_each_update_is_enqueued_once_even_when_the_outbox_restarts_or_its_cursor_is_lost(tmp_path: Path) -> None:
    path = str(tmp_path / "aggregator.db")
    ledger = await Ledger(path).open()
    # History from before any webhook existed is never sent.
    await to_executing(ledger, "old")
    await ledger.record(update(c.EXECUTION_STATUS_FILLED, "old:f", "old", fills=[fill("t0", "0.002")], broker="kraken"))
    n = Notifications(WebhookStore(ledger), SETTINGS, clock=FakeClock(), post=Receivers().post)
    await n.store.open()
    hook, _, _ = await n.set_webhook("u1", "http://r/hook", [FILL])
    assert await n.outbox.drain_once() == 0

    await to_executing(ledger, "s1")
    await ledger.record(update(c.EXECUTION_STATUS_PARTIAL_FILL, "s1:p", "s1", fills=[fill("t1", "0.001")], broker="kraken"))
    assert await n.outbox.drain_once() == 1
    assert await n.outbox.drain_once() == 0

    # The aggregator restarts: only what is new is enqueued.
    await ledger.record(update(c.EXECUTION_STATUS_FILLED, "s1:f", "s1", fills=[fill("t2", "0.001")], broker="kraken"))
    await ledger.close()
    ledger = await Ledger(path).open()
    n = Notifications(WebhookStore(ledger), SETTINGS, clock=FakeClock(), post=Receivers().post)
    await n.store.open()
    assert await n.outbox.drain_once() == 1
    assert [d.sequence for d in await _deliveries(n, "u1")] == [10, 11]

    # Even with its cursor gone (a crash between two writes can't do this, but say it did),
    # nothing is enqueued twice.
    await ledger.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE feed_cursors SET position = 0 WHERE name = ?", (OUTBOX_FEED,))
    ledger = await Ledger(path).open()
    n = Notifications(WebhookStore(ledger), SETTINGS, clock=FakeClock(), post=Receivers().post)
    await n.store.open()
    assert await n.outbox.drain_once() == 0
    assert len(await _deliveries(n, "u1")) == 2 and hook.webhook_id
    await ledger.close()


async def test_updates_no_webhook_wants_cost_the_ledger_no_commit_and_the_cursor_is_kept_at_stop(tmp_path: Path) -> None:
    path = str(tmp_path / "aggregator.db")
    ledger = await Ledger(path).open()
    n = Notifications(WebhookStore(ledger), SETTINGS, clock=FakeClock(), post=Receivers().post)
    await n.store.open()

    def cursor() -> int:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute("SELECT position FROM feed_cursors WHERE name = ?", (OUTBOX_FEED,)).fetchone()[0]

    await to_executing(ledger, "s1")
    await ledger.record(update(c.EXECUTION_STATUS_FILLED, "s1:f", "s1", fills=[fill("t1", "0.002")], broker="kraken"))
    assert await n.outbox.drain_once() == 0
    assert cursor() == 0  # nothing written for updates nobody subscribed to
    await n.outbox.stop()
    assert cursor() == 5
    await ledger.close()


async def test_webhooks_are_set_replaced_listed_and_deleted_without_showing_secrets(parts) -> None:
    n, _, _ = parts
    first, secret1, created1 = await n.set_webhook("u1", "http://r/hook", [FILL, FILL])
    again, secret2, created2 = await n.set_webhook("u1", "http://r/hook", [REJECTED, KILL])
    assert created1 and not created2 and first.webhook_id == again.webhook_id
    assert secret1 != secret2 and len(secret1) >= 40
    listed = await n.list_webhooks("u1")
    assert [list(w.events) for w in listed] == [[REJECTED, KILL]]
    assert secret1 not in str(listed) and secret2 not in str(listed)
    assert await n.list_webhooks("u2") == []

    for bad, reason in [(lambda: n.set_webhook("u1", "http://r/x", []), "BAD_EVENT"),
                        (lambda: n.set_webhook("u1", "http://r/x", [0]), "BAD_EVENT"),
                        (lambda: n.set_webhook("", "http://r/x", [FILL]), "BAD_USER_ID"),
                        (lambda: n.delete_webhook("u2", first.webhook_id), "WEBHOOK_NOT_FOUND"),
                        (lambda: n.list_deliveries("u1", "", 0, "abc"), "BAD_PAGE_TOKEN")]:
        with pytest.raises(ServiceError) as info:
            await bad()
        assert info.value.reason == reason
    for i in range(9):
        await n.set_webhook("u1", f"http://r/{i}", [FILL])
    with pytest.raises(ServiceError) as info:
        await n.set_webhook("u1", "http://r/one-too-many", [FILL])
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TOO_MANY_WEBHOOKS")

    await n.delete_webhook("u1", first.webhook_id)
    assert first.webhook_id not in {w.webhook_id for w in await n.list_webhooks("u1")}


# -- the sender -------------------------------------------------------------------------------


async def test_a_failing_receiver_is_retried_with_backoff_under_the_same_delivery_id_until_delivered(parts) -> None:
    n, clock, receivers = parts
    hook, secret, _ = await n.set_webhook("u1", "http://r/flaky", [FILL])
    receivers.failures["http://r/flaky"] = 2
    ledger = n.store._ledger
    await to_executing(ledger, "s1")
    await ledger.record(update(c.EXECUTION_STATUS_FILLED, "s1:f", "s1", fills=[fill("t1", "0.002")], broker="kraken"))
    await n.outbox.drain_once()

    assert await n.sender.deliver_due() == 1
    [d] = await _deliveries(n, "u1")
    assert (d.status, d.attempts, d.last_error) == (a.DELIVERY_STATUS_PENDING, 1, "HTTP 500")
    assert await n.sender.deliver_due() == 0  # not due yet: nothing is slept, nothing is sent
    clock.now = d.next_attempt_at.ToNanoseconds() / 1e9
    assert await n.sender.deliver_due() == 1
    [d] = await _deliveries(n, "u1")
    assert d.attempts == 2 and 1.0 <= (d.next_attempt_at.ToNanoseconds() / 1e9 - clock.now) <= 2.0
    clock.now += 2.0
    assert await n.sender.deliver_due() == 1
    [d] = await _deliveries(n, "u1")
    assert (d.status, d.attempts, d.last_error, d.HasField("next_attempt_at")) == (a.DELIVERY_STATUS_DELIVERED, 3, "", False)
    assert d.delivered_at.ToNanoseconds() / 1e9 == clock.now

    ids = {r[2]["X-Nija-Delivery"] for r in receivers.requests}
    assert ids == {d.delivery_id} and len(receivers.requests) == 3
    for _, payload, headers, body in receivers.requests:
        assert headers["X-Nija-Signature"] == sign(secret, headers["X-Nija-Timestamp"], body)
        assert payload["update"]["update_id"] == "s1:f" and payload["update"]["fills"][0]["venue_trade_id"] == "t1"
        assert payload["update"]["status"] == "EXECUTION_STATUS_FILLED" and payload["event"] == "fill"
    assert hook.webhook_id == d.webhook_id


async def test_a_dead_receiver_is_given_up_after_max_attempts_and_never_holds_up_another(parts) -> None:
    n, clock, receivers = parts
    await n.set_webhook("u1", "http://r/dead", [FILL])
    await n.set_webhook("u2", "http://r/ok", [FILL])
    receivers.failures["http://r/dead"] = 10**6
    ledger = n.store._ledger
    for user in ("u1", "u2"):
        for s in ("s1", "s2", "s3"):
            await to_executing(ledger, s, user)
            await ledger.record(update(c.EXECUTION_STATUS_FILLED, f"{s}:f", s, user,
                                       fills=[fill(f"{user}-{s}", "0.002")], broker="kraken"))
    await n.outbox.drain_once()
    await n.sender.deliver_due()
    assert len(receivers.events("http://r/ok")) == 3  # all at once, whatever the dead one does
    for _ in range(SETTINGS.max_attempts + 2):
        clock.now += SETTINGS.backoff_cap_s
        await n.sender.deliver_due()
    dead = await _deliveries(n, "u1")
    assert [(d.status, d.attempts) for d in dead] == [(a.DELIVERY_STATUS_FAILED, SETTINGS.max_attempts)] * 3
    assert all(d.last_error == "HTTP 500" for d in dead)
    assert [d.status for d in await _deliveries(n, "u2")] == [a.DELIVERY_STATUS_DELIVERED] * 3
    assert len(receivers.events("http://r/ok")) == 3 and len(receivers.events("http://r/dead")) == 3 * SETTINGS.max_attempts


async def test_deliveries_are_listed_newest_first_page_by_page(parts) -> None:
    n, _, _ = parts
    hook, _, _ = await n.set_webhook("u1", "http://r/hook", [KILL])
    await n.set_webhook("u1", "http://r/other", [KILL])
    for i in range(5):
        await n.kill_switch_changed(KillSwitchChange("u1", i % 2 == 0, f"r{i}"))
    seen, token = [], ""
    while True:
        page, token = await n.list_deliveries("u1", hook.webhook_id, 2, token)
        seen.extend(page)
        assert len(page) <= 2
        if not token:
            break
    assert len(seen) == 5 and len({d.delivery_id for d in seen}) == 5
    assert all(d.webhook_id == hook.webhook_id and d.sequence == 0 for d in seen)
    assert [d.created_at.ToNanoseconds() for d in seen] == sorted((d.created_at.ToNanoseconds() for d in seen), reverse=True)
    everything, token = await n.list_deliveries("u1", "", 0, "")
    assert len(everything) == 10 and token == ""


async def test_kill_switch_changes_after_the_baseline_reach_the_subscribed_webhooks(parts) -> None:
    n, _, receivers = parts
    await n.set_webhook("u1", "http://r/u1", [KILL])
    await n.set_webhook("u2", "http://r/u2", [KILL, FILL])
    await n.set_webhook("u3", "http://r/u3", [FILL])

    async def snapshots() -> AsyncIterator[p.WatchControlsResponse]:
        # Already on when the aggregator starts: the baseline, not news.
        yield p.WatchControlsResponse(users=[p.UserKillSwitch(user_id="u2", reason="old")])
        yield p.WatchControlsResponse(users=[p.UserKillSwitch(user_id="u2", reason="old"),
                                             p.UserKillSwitch(user_id="u1", reason="risk")])
        yield p.WatchControlsResponse(global_kill=True, global_reason="venue down",
                                      users=[p.UserKillSwitch(user_id="u1", reason="risk")])

    await n.follow_controls(snapshots())
    assert n.controls_baseline.is_set()
    await n.sender.deliver_due()
    bodies = {url: [r[1]["kill_switch"] for r in receivers.requests if r[0] == url] for url in ("http://r/u1", "http://r/u2")}
    assert sorted(bodies["http://r/u1"], key=str) == sorted([
        {"on": True, "reason": "risk", "scope": "user"},
        {"on": True, "reason": "venue down", "scope": "global"},
    ], key=str)
    assert sorted(bodies["http://r/u2"], key=str) == sorted([
        {"on": False, "reason": "", "scope": "user"},
        {"on": True, "reason": "venue down", "scope": "global"},
    ], key=str)
    assert all(r[0] != "http://r/u3" for r in receivers.requests)
    assert {r[1]["user_id"] for r in receivers.requests if r[0] == "http://r/u2"} == {"u2"}
