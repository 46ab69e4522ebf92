"""Per-principal turns for unary calls (services.runtime.limits): one principal's burst waits behind
itself, never ahead of anyone else, and nothing is kept for a principal once its calls are done."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from services.runtime import auth
from services.runtime.auth import Principal, PrincipalKind
from services.runtime.limits import PrincipalLimiter, Turns

ALICE = (PrincipalKind.USER, "alice")
BOB = (PrincipalKind.USER, "bob")


async def test_at_most_the_limit_hold_a_turn_and_the_rest_wait_first_come_first_served() -> None:
    turns, release, order = Turns(2), asyncio.Event(), []

    async def call(n: int) -> None:
        async with turns.turn(ALICE):
            order.append(n)
            await release.wait()

    tasks = [asyncio.create_task(call(n)) for n in range(5)]
    await asyncio.sleep(0)
    assert (turns.holding(ALICE), turns.waiting(ALICE), order) == (2, 3, [0, 1])
    release.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert len(turns) == 0  # nothing kept once alice's calls are done


async def test_one_principals_waiting_calls_never_delay_anothers() -> None:
    turns, release = Turns(1), asyncio.Event()

    async def hold(key: tuple[PrincipalKind, str]) -> None:
        async with turns.turn(key):
            await release.wait()

    alices = [asyncio.create_task(hold(ALICE)) for _ in range(50)]
    await asyncio.sleep(0)

    async def bob() -> str:
        async with turns.turn(BOB):
            return "served"

    assert await asyncio.wait_for(bob(), 1) == "served"
    assert (turns.holding(ALICE), turns.waiting(ALICE), turns.holding(BOB)) == (1, 49, 0)
    release.set()
    await asyncio.gather(*alices)


async def test_a_call_cancelled_while_it_waits_gives_up_its_place_and_holds_nothing() -> None:
    turns, release = Turns(1), asyncio.Event()

    async def call() -> None:
        async with turns.turn(ALICE):
            await release.wait()

    holder, waiter = asyncio.create_task(call()), asyncio.create_task(call())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (turns.holding(ALICE), turns.waiting(ALICE)) == (1, 0)
    release.set()
    await holder
    assert len(turns) == 0


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method


async def _handler(limiter: PrincipalLimiter, body: Callable[[], Any]) -> Callable[..., Any]:
    async def unary(request: Any, context: Any) -> Any:
        return await body()

    async def continuation(details: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(unary)

    wrapped = await limiter.intercept_service(continuation, _Details("/nija.aggregator.v1.AggregatorService/GetOrder"))
    return wrapped.unary_unary


async def _as(principal: Principal | None, call: Callable[..., Any]) -> Any:
    """`call(None, None)` in a task whose caller is `principal`, as the AuthInterceptor sets it."""
    context = contextvars.copy_context()
    context.run(auth._current.set, principal)
    return await asyncio.create_task(call(None, None), context=context)


async def test_the_limiter_gives_users_and_strategies_turns_and_lets_services_and_admins_through() -> None:
    limiter, release = PrincipalLimiter(max_streams=4, max_calls=3), asyncio.Event()

    async def body() -> str:
        await release.wait()
        return "done"

    call = await _handler(limiter, body)
    user, service = Principal(PrincipalKind.USER, "alice"), Principal(PrincipalKind.SERVICE, "router")
    admin = Principal(PrincipalKind.ADMIN, "operator")
    calls = [asyncio.create_task(_as(user, call)) for _ in range(10)]
    unlimited = [asyncio.create_task(_as(who, call)) for who in (service, admin, None) for _ in range(10)]
    await asyncio.sleep(0.01)
    assert (limiter.calls.holding(ALICE), limiter.calls.waiting(ALICE), len(limiter.calls)) == (3, 7, 1)
    release.set()
    assert await asyncio.gather(*calls, *unlimited) == ["done"] * 40
    assert len(limiter.calls) == 0
