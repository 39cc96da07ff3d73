"""Per-caller quotas (docs/api.md "Quotas"): each refusal is RESOURCE_EXHAUSTED with its reason,
the limit and the setting in the metadata, never retried by the client, and changes nothing; a
slot taken is given back however the call ends; another caller is never affected. The limits are
lowered on the running server (they are settings; the defaults are far above what a test sends).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from condpay.client import PaymentsClient
from condpay.errors import ApiError, ResourceExhausted
from condpay.v1 import contract_pb2

from settlement.runtime import Runtime
from tests.payments.snapshot import locked, refused, refused_without_effect, take_snapshot
from tests.payments.world import (
    PLATFORM,
    WAREHOUSE,
    TradeWorld,
    compiled,
    warehouse_params,
)
from tests.support.harness import start_harness

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
AUDITOR = "auditor/regulator"


async def until(check: Callable[[], bool], seconds: float = 20.0) -> None:
    """Wait until ``check()`` holds (the server has admitted or ended a call)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def first_update(stream: AsyncIterator[object]) -> None:
    async for _ in stream:
        return


async def hold_stream(stream: AsyncIterator[object]) -> None:
    """Read a WatchPayment stream until cancelled (an open payment's stream never ends)."""
    async for _ in stream:
        pass


def variant(n: int) -> str:
    """The warehouse contract under another name: another hash, a new contract."""
    return WAREHOUSE.replace(
        'contract "overseas-warehouse-delivery"', f'contract "overseas-warehouse-delivery-{n}"'
    )


def _quota(error: ApiError, limit: int, setting: str) -> None:
    assert error.metadata == {"limit": str(limit), "setting": setting}, error.metadata


async def test_calls_in_flight_per_caller_are_bounded_and_given_back(
    trade: TradeWorld,
) -> None:
    payment = await locked(trade)
    runtime: Runtime = trade.harness.runtime
    runtime.quotas.calls_max = 2
    platform = trade.platform
    retries_before = platform.retries
    # Two open streams hold the platform's two slots.
    holders = [
        asyncio.create_task(hold_stream(platform.watch_payment(payment.payment_id)))
        for _ in range(2)
    ]
    await until(lambda: runtime.quotas.in_flight(PLATFORM) == 2)
    error = await refused(
        platform.get_payment(payment.payment_id), EXHAUSTED, "CALLS_IN_FLIGHT_EXCEEDED"
    )
    assert isinstance(error, ResourceExhausted)
    _quota(error, 2, "CONDPAY_CALLS_IN_FLIGHT_MAX")
    assert platform.retries == retries_before  # never retried
    # A refused mutating call stores nothing: the same request id succeeds later.
    await refused(
        platform.register_contract(variant(1), request_id="reg-busy"),
        EXHAUSTED,
        "CALLS_IN_FLIGHT_EXCEEDED",
    )
    # Another caller is not affected.
    assert (await trade.client(AUDITOR).get_payment(payment.payment_id)).payment_id
    # A stream that ends (cancelled by its client) gives its slot back.
    holders[0].cancel()
    await asyncio.gather(holders[0], return_exceptions=True)
    await until(lambda: runtime.quotas.in_flight(PLATFORM) == 1)
    assert (await platform.get_payment(payment.payment_id)).payment_id == payment.payment_id
    reply = await platform.register_contract(variant(1), request_id="reg-busy")
    assert not reply.operation.replayed
    holders[1].cancel()
    await asyncio.gather(holders[1], return_exceptions=True)
    await until(lambda: runtime.quotas.in_flight(PLATFORM) == 0)


async def test_open_streams_per_caller_are_bounded(trade: TradeWorld) -> None:
    payment = await locked(trade)
    runtime: Runtime = trade.harness.runtime
    runtime.quotas.streams_max = 1
    platform = trade.platform
    holder = asyncio.create_task(hold_stream(platform.watch_payment(payment.payment_id)))
    await until(lambda: runtime.quotas.in_flight(PLATFORM) == 1)
    error = await refused(
        first_update(platform.watch_payment(payment.payment_id)), EXHAUSTED, "STREAMS_EXCEEDED"
    )
    _quota(error, 1, "CONDPAY_STREAMS_MAX")
    # Unary calls are not streams; another caller's stream is its own.
    assert (await platform.get_payment(payment.payment_id)).payment_id
    await first_update(trade.client(AUDITOR).watch_payment(payment.payment_id))
    holder.cancel()
    await asyncio.gather(holder, return_exceptions=True)
    await until(lambda: runtime.quotas.in_flight(PLATFORM) == 0)
    await first_update(platform.watch_payment(payment.payment_id))


async def test_contracts_per_caller_per_utc_day_are_counted_in_the_database(
    trade: TradeWorld,
) -> None:
    runtime: Runtime = trade.harness.runtime
    runtime.settings = runtime.settings.replace(contracts_per_day_max=2)
    platform = trade.platform
    await platform.register_contract(variant(1))
    # A lock with a new source registers it: it counts.
    payment = await trade.lock(
        compiled(variant(2)), warehouse_params(trade, 1_00), source=variant(2), request_id="lock-2"
    )
    # Registering a contract that exists is free, for anyone.
    await platform.register_contract(variant(1))
    await platform.register_contract(variant(1).replace("# Overseas", "#  Overseas"))
    error = await refused_without_effect(
        trade,
        [payment.payment_id],
        platform.register_contract(variant(3), request_id="reg-3"),
        EXHAUSTED,
        "CONTRACTS_PER_DAY_EXCEEDED",
    )
    _quota(error, 2, "CONDPAY_CONTRACTS_PER_DAY_MAX")
    before = await take_snapshot(trade, [payment.payment_id], [])
    await refused(
        trade.lock(
            compiled(variant(4)),
            warehouse_params(trade, 1_00),
            source=variant(4),
            request_id="lock-4",
        ),
        EXHAUSTED,
        "CONTRACTS_PER_DAY_EXCEEDED",
    )
    assert await take_snapshot(trade, [payment.payment_id], []) == before
    with_hash = contract_pb2.GetContractRequest(contract_hash=compiled(variant(3)).hash)
    await refused(
        platform.api.contracts.get_contract(with_hash),
        grpc.StatusCode.NOT_FOUND,
        "CONTRACT_NOT_FOUND",
    )
    # A lock of a registered contract registers nothing: allowed.
    await trade.lock(compiled(variant(1)), warehouse_params(trade, 1_00), source=variant(1))
    # The next UTC day the caller may register again.
    assert trade.clock is not None
    trade.clock.advance(86_400)
    await platform.register_contract(variant(5))


async def test_heavy_calls_per_caller_are_bounded(trade: TradeWorld) -> None:
    runtime: Runtime = trade.harness.runtime
    runtime.heavy.heavy_calls_max = 1
    platform = trade.platform
    slow = asyncio.create_task(platform.validate_contract(variant(10)))
    await until(lambda: runtime.heavy.in_flight(PLATFORM) == 1, seconds=30)
    error = await refused(
        platform.validate_contract(variant(11)), EXHAUSTED, "HEAVY_CALLS_EXCEEDED"
    )
    _quota(error, 1, "CONDPAY_HEAVY_CALLS_MAX")
    # Another caller has its own bound.
    assert (await trade.client(AUDITOR).validate_contract(variant(12))).ok
    assert (await slow).ok
    assert (await platform.validate_contract(variant(11))).ok


async def test_failed_outcomes_are_kept_for_the_retention_then_swept(trade: TradeWorld) -> None:
    runtime: Runtime = trade.harness.runtime
    assert trade.clock is not None
    platform = trade.platform

    async def register(source: str) -> contract_pb2.RegisterContractResponse:
        return await platform.register_contract(source, request_id="reg-retained")

    async def refused_again(call: Callable[[], Awaitable[object]]) -> None:
        error = await refused(call(), grpc.StatusCode.INVALID_ARGUMENT, "CONTRACT_INVALID")
        assert error.replayed

    bad = "contract broken"
    await refused(register(bad), grpc.StatusCode.INVALID_ARGUMENT, "CONTRACT_INVALID")
    trade.clock.advance(runtime.settings.failed_outcome_retention_seconds - 1)
    assert await runtime.retention.sweep() == 0
    await refused_again(lambda: register(bad))  # still failing the same way
    trade.clock.advance(2)
    assert await runtime.retention.sweep() == 1
    # The id is free again: a retry runs afresh (and a successful outcome is never swept).
    error = await refused(register(bad), grpc.StatusCode.INVALID_ARGUMENT, "CONTRACT_INVALID")
    assert not error.replayed
    trade.clock.advance(runtime.settings.failed_outcome_retention_seconds + 1)
    assert await runtime.retention.sweep() == 1
    ok = await register(WAREHOUSE)
    trade.clock.advance(10 * runtime.settings.failed_outcome_retention_seconds)
    assert await runtime.retention.sweep() == 0
    assert (await register(WAREHOUSE)).operation.replayed
    assert ok.contract.contract_hash == compiled(WAREHOUSE).hash


@pytest.mark.postgres
async def test_two_replicas_never_both_let_a_caller_past_its_daily_contracts(pg_url: str) -> None:
    """Two servers on one database, the same caller registering new contracts on both at once:
    exactly the limit are registered (the count is taken under a per-caller lock)."""
    async with start_harness(pg_url) as one, start_harness(pg_url) as two:
        clients = []
        for harness in (one, two):
            harness.runtime.settings = harness.runtime.settings.replace(contracts_per_day_max=3)
            harness.runtime.heavy.heavy_calls_max = 8  # the compiles are not what is tested
            client = PaymentsClient(harness.address, caller=PLATFORM)
            harness.clients.append(client)
            clients.append(client)
        results = await asyncio.gather(
            *(clients[i % 2].register_contract(variant(100 + i)) for i in range(8)),
            return_exceptions=True,
        )
        refusals = [r for r in results if isinstance(r, BaseException)]
        assert len(results) - len(refusals) == 3, results
        assert all(
            isinstance(r, ResourceExhausted) and r.reason == "CONTRACTS_PER_DAY_EXCEEDED"
            for r in refusals
        ), refusals
