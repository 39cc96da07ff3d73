"""The recovery sweep's pacing and reach (settlement/coordination/recovery.py): a payout that
cannot take its leg stays PENDING, keeps no quote, releases the leg, and is asked again at its
next attempt with a backoff that doubles (the sweeps a quarter second apart while it waits, a
second apart once nothing is unfinished); settlements in doubt are driven however many
settlements wait before them by id.

Each test stops the background sweep and runs sweeps by hand on a ManualClock."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest
from condpay.v1 import settlement_pb2
from sqlalchemy import func
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from bridges import Quote, Transfer, TransferState
from bridges.errors import Reason as BridgeReason
from bridges.errors import Unavailable
from bridges.errors import error as bridge_error
from settlement.clock import ManualClock
from settlement.coordination import recovery as recovery_module
from settlement.coordination.bridge_link import BridgeLink
from settlement.coordination.recovery import RecoverySweeper, payout_backoff_us
from settlement.db import models
from settlement.ledger.records import SettlementRecord, SettlementState
from settlement.ledger.settlements import derive_settlement_id, transfer_id
from tests.settlement.audit import open_trade
from tests.settlement.test_payment_payouts import CUSTOMS, PAYOUT, clear_customs, compiled
from tests.settlement.world import (
    GATEWAY,
    PLATFORM,
    RESERVE_MINOR,
    TradeWorld,
    key,
    pvp_request,
    stop_payouts,
)
from tests.support.harness import central_bank_of

PRICE_CNY = 100_000_00
PAYOUT_CNY = 60_000_00  # PAYOUT pays 60% of the price in HKD


async def quote_rows(trade: TradeWorld) -> int:
    async with AsyncSession(trade.harness.runtime.sql) as session:
        return (await session.exec(select(func.count()).select_from(models.FxQuote))).one()


async def the_payout(trade: TradeWorld) -> SettlementRecord:
    (payout,) = [s for s in await trade.stored_settlements() if s.origin_payment_id]
    return payout


async def by_hand(trade: TradeWorld) -> tuple[RecoverySweeper, BridgeLink]:
    """Stop the background sweep and the payout starter: the test runs sweeps by hand. Returns
    the sweep and the bridge link."""
    runtime = trade.harness.runtime
    recovery, link = runtime.recovery, runtime.bridge
    assert recovery is not None
    assert link is not None
    await recovery.stop()
    await stop_payouts(runtime)
    return recovery, link


class CountingPrepares:
    """The bridge link's ``prepare_at_market`` (a payout's quote and leg), counted, and its
    ``abort``, recorded; ``expire`` hands out quotes already expired (as if they had expired on
    the way to the ledger)."""

    def __init__(self, trade: TradeWorld, clock: ManualClock) -> None:
        link = trade.harness.runtime.bridge
        assert link is not None
        self._link = link
        self._prepare, self._abort = link.prepare_at_market, link.abort
        self._clock = clock
        self.calls = 0
        self.aborted: list[str] = []
        self.expire = False

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(self._link, "prepare_at_market", self.prepare_at_market)
        monkeypatch.setattr(self._link, "abort", self.abort)

    async def prepare_at_market(self, *args: Any, **kwargs: Any) -> tuple[Quote, Transfer]:
        self.calls += 1
        quote, transfer = await self._prepare(*args, **kwargs)
        if self.expire:
            quote = dataclasses.replace(quote, expires_at_us=self._clock.now_us())
        return quote, transfer

    async def abort(self, transfer_id: str) -> Transfer:
        self.aborted.append(transfer_id)
        return await self._abort(transfer_id)

    async def bridge_states(self, settlement_id: str, attempts: range) -> list[TransferState]:
        return [
            (await self._link.status(transfer_id(settlement_id, attempt))).state
            for attempt in attempts
        ]


async def release_a_payout(trade: TradeWorld, event_id: str) -> None:
    """Lock the CNY escrow whose release pays 60% to the seller in HKD, and release it."""
    await trade.cb.register_oracle(CUSTOMS, "ED25519", key(CUSTOMS).public_key)
    await trade.fund("buyer", "CNY", 300_000_00)
    params = {
        "buyer": trade.wallets["buyer"],
        "seller": trade.wallets["seller"],
        "price": ("CNY", PRICE_CNY),
    }
    locked = await trade.platform.lock_payment(
        trade.keys["buyer"], compiled(PAYOUT), params, send_source=PAYOUT
    )
    await clear_customs(trade, locked.payment, event_id)


async def test_a_payout_the_gateway_cannot_fund_backs_off_doubling_and_keeps_no_quote(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway has no HKD: the bridge prepares the payout's leg, and attaching its quote is
    refused (INSUFFICIENT_FUNDS). The leg is aborted on the bridge, no quote row is kept, and the
    payout stays PENDING at its next attempt, which the sweep asks for only after 250 ms, then
    500 ms, then 1 s. Once the gateway is funded it settles, every refused leg aborted."""
    clock = ManualClock(time.time_ns() // 1000)
    async with open_trade(database_url, clock=clock) as trade:
        recovery, _ = await by_hand(trade)
        prepares = CountingPrepares(trade, clock)
        prepares.install(monkeypatch)
        await trade.client(central_bank_of("HKD")).redeem(GATEWAY, "HKD", RESERVE_MINOR)
        await release_a_payout(trade, "ev-no-hkd")
        pending = await the_payout(trade)
        assert (pending.state, pending.attempt) == (SettlementState.PENDING, 1)
        rows = await quote_rows(trade)

        await recovery.sweep()  # refused: no exception escapes the drive
        assert prepares.calls == 1
        # A payout waits: the next sweep comes after the short pause, not the idle one.
        assert recovery.pause_seconds() == recovery_module.SWEEP_SECONDS
        after = await the_payout(trade)
        assert (after.state, after.attempt, after.quote_id, after.abort_reason) == (
            SettlementState.PENDING,
            2,
            "",
            "INSUFFICIENT_FUNDS",
        )
        assert prepares.aborted == [f"{pending.settlement_id}.1"]
        assert await quote_rows(trade) == rows  # nothing kept of the refused quote

        # Asked again only after 250 ms, then 500 ms, then 1 s: each attempt doubles the wait.
        for refusals, wait_us in enumerate((250_000, 500_000, 1_000_000), start=1):
            assert payout_backoff_us(refusals + 1) == wait_us
            clock.advance((wait_us - 10_000) / 1e6)
            await recovery.sweep()
            assert prepares.calls == refusals, f"asked again before {wait_us} µs"
            clock.advance(0.02)
            await recovery.sweep()
            assert prepares.calls == refusals + 1
            assert (await the_payout(trade)).attempt == refusals + 2
        assert await quote_rows(trade) == rows
        assert (
            await prepares.bridge_states(pending.settlement_id, range(1, 5))
            == [TransferState.ABORTED] * 4
        )

        # Funded again, it is asked at the next due sweep and settles at the attempt it reached.
        await trade.client(central_bank_of("HKD")).issue(GATEWAY, "HKD", RESERVE_MINOR)
        clock.advance(2.1)
        (settled,) = [s for s in await trade.settle_everything() if s.origin_payment_id]
        assert settled.state is SettlementState.FINAL
        assert settled.attempt == 5
        assert prepares.calls == 5
        assert await trade.balance("seller", "HKD") == (settled.receive_minor, 0)
        await recovery.sweep()  # nothing unfinished: the sweep after it waits longer
        assert recovery.pause_seconds() == recovery_module.IDLE_SWEEP_SECONDS


async def test_a_payout_whose_quote_expired_before_attaching_is_asked_again(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quote has expired by the time the ledger attaches it (QUOTE_EXPIRED): the leg is
    aborted, the payout stays PENDING at its next attempt without a quote row, and a later,
    fresh quote settles it."""
    clock = ManualClock(time.time_ns() // 1000)
    async with open_trade(database_url, clock=clock) as trade:
        recovery, _ = await by_hand(trade)
        prepares = CountingPrepares(trade, clock)
        prepares.expire = True
        prepares.install(monkeypatch)
        await release_a_payout(trade, "ev-expired-quote")
        rows = await quote_rows(trade)

        await recovery.sweep()
        await recovery.sweep()  # in backoff: not asked again yet
        assert prepares.calls == 1
        payout = await the_payout(trade)
        assert (payout.state, payout.quote_id, payout.attempt, payout.abort_reason) == (
            SettlementState.PENDING,
            "",
            2,
            "QUOTE_EXPIRED",
        )
        assert await quote_rows(trade) == rows
        assert await prepares.bridge_states(payout.settlement_id, range(1, 2)) == [
            TransferState.ABORTED
        ]

        prepares.expire = False
        clock.advance(0.3)
        (settled,) = [s for s in await trade.settle_everything() if s.origin_payment_id]
        assert settled.state is SettlementState.FINAL
        assert prepares.calls == 2
        assert await quote_rows(trade) == rows + 1


async def test_a_bridge_refusing_the_gateways_identity_skips_no_attempt(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PERMISSION_DENIED (the bridge does not accept the gateway's identity: a configuration to
    fix) is no answer about the payout: it stays PENDING at its attempt, unchanged, and settles
    at that attempt once the bridge accepts the gateway again."""
    clock = ManualClock(time.time_ns() // 1000)
    async with open_trade(database_url, clock=clock) as trade:
        recovery, link = await by_hand(trade)
        prepare = link.prepare_at_market

        async def forbidden(*args: Any, **kwargs: Any) -> tuple[Quote, Transfer]:
            raise bridge_error(BridgeReason.ROLE_NOT_ALLOWED, "not a bank of this bridge")

        monkeypatch.setattr(link, "prepare_at_market", forbidden)
        await release_a_payout(trade, "ev-forbidden")
        pending = await the_payout(trade)
        await recovery.sweep()
        await recovery.sweep()
        after = await the_payout(trade)
        assert (after.state, after.attempt, after.version) == (
            SettlementState.PENDING,
            1,
            pending.version,
        )

        monkeypatch.setattr(link, "prepare_at_market", prepare)
        (settled,) = [s for s in await trade.settle_everything() if s.origin_payment_id]
        assert (settled.state, settled.attempt) == (SettlementState.FINAL, 1)


async def test_settlements_in_doubt_are_driven_however_many_wait_before_them(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More COMMITTED settlements waiting for their certificate than one page holds, all with
    lower ids than a COMMITTING and an ABORTING one: the sweep carries out each decision once it
    has been left alone for the grace, and, once the certificates come, one sweep makes every
    committed one FINAL."""
    monkeypatch.setattr(recovery_module, "SWEEP_BATCH", 2)
    clock = ManualClock(time.time_ns() // 1000)
    async with open_trade(database_url, clock=clock) as trade:
        recovery, link = await by_hand(trade)
        coordinator = trade.harness.runtime.coordinator
        assert coordinator is not None
        await trade.fund("buyer", "HKD", 2_000_000_00)
        client = trade.platform
        buyer_key, buyer = trade.party("buyer")
        seller = trade.wallets["seller"]
        ids = sorted((derive_settlement_id(PLATFORM, f"doubt-{i}"), f"doubt-{i}") for i in range(6))
        blocked, (committing, aborting) = ids[:4], ids[4:]

        async def settle(request_id: str) -> None:
            quote = await client.quote_fx("HKD", "CNY", target_amount_minor=10_000_00)
            await client.api.settlements.settle_pvp(
                pvp_request(buyer_key, buyer, seller, quote, request_id=request_id),
            )

        async def unreachable(*_args: Any, **_kwargs: Any) -> Any:
            raise Unavailable(BridgeReason.UNREACHABLE, "test: the bridge does not answer")

        async def not_final(_transfer_id: str) -> None:
            return None

        real_finality, real_commit_final = link.finality, link.commit_final

        async def committed_not_final(transfer_id: str) -> tuple[Transfer, None]:
            transfer, _final = await real_commit_final(transfer_id)
            return transfer, None

        # The bridge's quorum is short: commits are taken, no block is certified.
        monkeypatch.setattr(link, "finality", not_final)
        monkeypatch.setattr(link, "commit_final", committed_not_final)
        for _sid, request_id in blocked:
            await settle(request_id)
        monkeypatch.setattr(link, "commit_final", unreachable)
        await settle(committing[1])
        real_prepare, real_abort = link.prepare, link.abort
        monkeypatch.setattr(link, "prepare", unreachable)
        monkeypatch.setattr(link, "abort", unreachable)
        await settle(aborting[1])
        clock.advance(21)  # too late to prepare: decide ABORT, whose bridge abort gets no answer
        await coordinator.drive(aborting[0])

        async def states() -> dict[str, SettlementState]:
            return {s.settlement_id: s.state for s in await trade.stored_settlements()}

        committed = SettlementState.COMMITTED
        assert await states() == {
            **{sid: committed for sid, _ in blocked},
            committing[0]: SettlementState.COMMITTING,
            aborting[0]: SettlementState.ABORTING,
        }

        monkeypatch.setattr(link, "commit_final", committed_not_final)
        monkeypatch.setattr(link, "prepare", real_prepare)
        monkeypatch.setattr(link, "abort", real_abort)
        # The ABORTING one changed just now: left to whoever changed it (a call of another
        # worker or replica would still be driving it), though no call of this server is. The
        # COMMITTING one has waited 21 s: carried out.
        assert await recovery.sweep() == 1
        assert await states() == {
            **{sid: committed for sid, _ in blocked},
            committing[0]: committed,
            aborting[0]: SettlementState.ABORTING,
        }
        clock.advance(2.1)
        assert await recovery.sweep() == 1
        assert await states() == {
            **{sid: committed for sid, _ in blocked},
            committing[0]: committed,
            aborting[0]: SettlementState.ABORTED,
        }

        monkeypatch.setattr(link, "finality", real_finality)
        monkeypatch.setattr(link, "commit_final", real_commit_final)
        await recovery.sweep()
        assert await states() == {
            **{sid: SettlementState.FINAL for sid, _ in [*blocked, committing]},
            aborting[0]: SettlementState.ABORTED,
        }


async def test_the_sweep_leaves_a_settlement_to_the_call_driving_it(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SettlePvP waiting for the bridge's commit to be final: a sweep meanwhile does not drive
    the same settlement again (no second commit); once the call has returned, the sweep does."""
    clock = ManualClock(time.time_ns() // 1000)
    async with open_trade(database_url, clock=clock) as trade:
        recovery, link = await by_hand(trade)
        await trade.fund("buyer", "HKD", 200_000_00)
        buyer_key, buyer = trade.party("buyer")
        client = trade.platform
        quote = await client.quote_fx("HKD", "CNY", target_amount_minor=10_000_00)
        real_commit_final, real_finality = link.commit_final, link.finality
        asked: list[str] = []
        release, reached = asyncio.Event(), asyncio.Event()

        async def slow_finality(transfer_id: str) -> tuple[Transfer, None]:
            asked.append(transfer_id)
            transfer, _final = await real_commit_final(transfer_id)
            reached.set()
            await release.wait()
            return transfer, None  # committed, not final yet

        async def not_final(_transfer_id: str) -> None:
            return None

        monkeypatch.setattr(link, "commit_final", slow_finality)
        monkeypatch.setattr(link, "finality", not_final)
        settling = asyncio.ensure_future(
            client.api.settlements.settle_pvp(
                pvp_request(buyer_key, buyer, trade.wallets["seller"], quote, request_id="busy"),
            )
        )
        await asyncio.wait_for(reached.wait(), 30)
        clock.advance(2.1)  # past the grace: only the call's own drive keeps the sweep off it
        assert await recovery.sweep() == 0
        assert len(asked) == 1  # the sweep left it to the call
        release.set()
        reply = await settling
        assert reply.settlement.state == settlement_pb2.SETTLEMENT_STATE_COMMITTED
        monkeypatch.setattr(link, "commit_final", real_commit_final)
        monkeypatch.setattr(link, "finality", real_finality)
        clock.advance(2.1)
        assert await recovery.sweep() == 1  # now the sweep makes it FINAL
        (settled,) = await trade.stored_settlements()
        assert settled.state is SettlementState.FINAL
