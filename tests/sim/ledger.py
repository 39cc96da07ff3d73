"""A small but complete ledger for the auditor's tests, built through the real gRPC server: the
settlement tests' trade world (tests/settlement/world.py: a bank, the bridge gateway funded on
both sides, a seller, a buyer, a financier) behind a real bridge gRPC server, and a trade story
that leaves every kind of record the auditor reads:

- ``settled``: locked, financed, proceeds assigned with an advance, released in two steps (the
  first one to the assignee financier first), SETTLED; its customs attestation is then replayed;
- ``pending``: locked and partly released, left open on purpose (a reason in the expectations),
  with a forged attestation refused;
- ``cancelled``: locked, financed, cancelled: refunded to the financier first, then the payer;
- ``expired``: locked with a deadline three seconds ahead, refunded by the deadline sweep;
- ``payout``: released in HKD through a payout settlement and in CNY, SETTLED;
- a PvP: HKD from the buyer, CNY to the seller, FINAL.

:func:`loan_story` adds inventory loans: repaid in two parts, defaulted and sold, left open.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from condpay.attest import build_attestation, sign_ed25519, sign_party
from condpay.client import SettlementsClient
from condpay.errors import ApiError
from condpay.v1 import finance_pb2, payment_pb2

from bridges import BridgeClient
from bridges._server import start_server as start_bridge_server
from settlement.clock import ManualClock
from sim_central_bank.auditor import Auditor
from sim_central_bank.economy import SIM_AUDITOR
from sim_central_bank.record import ACCEPTED, Expectations, RefusedAttestation
from sim_central_bank.trading import TERMINAL
from tests.payments.fleet import wait_until_terminal
from tests.payments.world import compiled
from tests.settlement.loan_world import LoanWorld, build_loan_world
from tests.settlement.test_payment_payouts import PAYOUT
from tests.settlement.world import CURRENCIES, GATEWAY, TradeWorld, build_world, key
from tests.support.harness import Harness, start_harness
from wallets import AssignmentInstruction

CUSTOMS = "customs.hk"
STAGED = f"""
contract "staged-delivery" version 1

param buyer   : wallet
param seller  : wallet
param price   : money CNY
param ship_by : timestamp

oracle customs = "{CUSTOMS}"

escrow price from buyer
deadline ship_by -> refund remainder to buyer

clause cleared
when customs.cleared(declaration == "D-1") by customs
  -> pay 30% to seller

clause receipt
when receipt.signed(signer == buyer) by buyer
  -> pay remainder to seller
"""
PENDING_REASON = "receipt withheld on purpose"


def now_us() -> int:
    return int(time.time() * 1e6)


@dataclass
class AuditedTrade:
    world: TradeWorld
    auditor: Auditor
    expectations: Expectations
    bridge: BridgeClient
    payments: dict[str, str] = field(default_factory=dict)  # story name -> payment id

    @property
    def harness(self) -> Harness:
        return self.world.harness

    @property
    def cb(self) -> SettlementsClient:
        return self.world.cb

    async def failing(self) -> dict[str, str]:
        """The final check's failed invariants: name -> detail."""
        return {r.name: r.detail for r in await self.auditor.check(final=True) if not r.passed}


@contextlib.asynccontextmanager
async def audited_trade(database_url: str) -> AsyncIterator[AuditedTrade]:
    """A fresh server with its in-process bridge, the bridge also served over gRPC for the
    auditor, the trade world, and an auditor whose baseline is taken."""
    async with start_harness(database_url) as harness:
        assert harness.runtime.bridge is not None
        bridge_server = await start_bridge_server(
            harness.runtime.bridge.api,  # type: ignore[arg-type]
            "127.0.0.1:0",
            insecure=True,
            block_interval_ms=None,
        )
        bridge = BridgeClient(f"127.0.0.1:{bridge_server.port}", identity=SIM_AUDITOR)
        try:
            world = await build_world(harness)
            await world.cb.register_oracle(CUSTOMS, "ED25519", key(CUSTOMS).public_key)
            await world.fund("buyer", "CNY", 1_000_000_00)
            await world.fund("buyer", "HKD", 500_000_00)
            await world.fund("financier", "CNY", 1_000_000_00)
            expectations = Expectations(currencies=CURRENCIES, gateway=GATEWAY)
            auditor = Auditor(world.cb, bridge, expectations)
            await auditor.baseline()
            yield AuditedTrade(world, auditor, expectations, bridge)
        finally:
            await bridge.close()
            await bridge_server.stop(0)


# -- the story ----------------------------------------------------------------------------------
async def lock(
    trade: AuditedTrade, source: str, price_minor: int, **extra: object
) -> payment_pb2.Payment:
    world = trade.world
    params = {
        "buyer": world.wallets["buyer"],
        "seller": world.wallets["seller"],
        "price": ("CNY", price_minor),
        **extra,
    }
    reply = await world.platform.lock_payment(
        world.keys["buyer"], compiled(source), params, send_source=source
    )
    return reply.payment


async def attest(
    trade: AuditedTrade,
    payment_id: str,
    event_type: str,
    attributes: dict[str, str | int | bool],
    *,
    event_id: str,
    by_buyer: bool = False,
    signing_key_name: str = CUSTOMS,
    request_id: str = "",
) -> str:
    """Submit one attestation; returns ACCEPTED or the refusal's reason."""
    world = trade.world
    payment = await world.cb.get_payment(payment_id)
    now = now_us()
    attestation = build_attestation(
        oracle_set_version=await world.cb.oracle_set_version(),
        oracle="buyer" if by_buyer else "customs",
        event_id=event_id,
        payment_id=payment_id,
        contract_hash=payment.contract.contract_hash,
        event_type=event_type,
        attributes=attributes,
        observed_at_us=now - 1_000_000,
        issued_at_us=now,
        expires_at_us=now + 600_000_000,
    )
    if by_buyer:
        signature = sign_party(attestation.statement, world.wallets["buyer"], world.keys["buyer"])
        submitter = world.platform
    else:
        signature = sign_ed25519(attestation.statement, CUSTOMS, key(signing_key_name))
        submitter = world.client(f"oracle/{CUSTOMS}")
    try:
        await submitter.submit_attestation(
            attestation.statement,
            attestation.payload,
            [tuple(signature)],  # type: ignore[list-item]
            None,
            request_id=request_id or event_id,
        )
    except ApiError as refused:
        return refused.reason
    return ACCEPTED


async def clear_customs(
    trade: AuditedTrade,
    payment_id: str,
    *,
    event_id: str = "",
    signing_key_name: str = CUSTOMS,
    request_id: str = "",
) -> str:
    """Customs clears declaration D-1 (signed with ``signing_key_name``'s key)."""
    return await attest(
        trade,
        payment_id,
        "customs.cleared",
        {"declaration": "D-1"},
        event_id=event_id or f"cleared:{payment_id}",
        signing_key_name=signing_key_name,
        request_id=request_id,
    )


async def story(trade: AuditedTrade, *, with_expiry: bool = True) -> None:
    """The trade story of the module docstring; fills ``trade.payments`` and the expectations."""
    world, expected = trade.world, trade.expectations
    buyer, seller, financier = (world.wallets[n] for n in ("buyer", "seller", "financier"))
    bank = world.client("financier/bank-a")
    far = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=30)

    settled = (await lock(trade, STAGED, 100_000_00, ship_by=far)).payment_id
    await bank.fund_escrow(
        world.keys["financier"],
        financier,
        settled,
        "CNY",
        40_000_00,
        payer_key=world.keys["buyer"],
        payer_wallet=buyer,
        fee_minor=400_00,
    )
    await bank.assign_proceeds(
        world.keys["seller"],
        world.keys["financier"],
        AssignmentInstruction(
            payment_id=settled,
            payee=seller,
            financier=financier,
            currency="CNY",
            assigned_minor=20_000_00,
            advance_minor=19_000_00,
            submitter=bank.caller,
            request_id="assign-1",
            expires_at_us=now_us() + 300_000_000,
        ),
    )
    assert await clear_customs(trade, settled) == ACCEPTED
    receipt = {"signer": buyer}
    assert (
        await attest(trade, settled, "receipt.signed", receipt, event_id="receipt-1", by_buyer=True)
        == ACCEPTED
    )
    replayed = await clear_customs(trade, settled, request_id="replay-of-cleared")
    expected.refused_attestations.append(
        RefusedAttestation(settled, f"cleared:{settled}", "replayed", replayed)
    )

    pending = (await lock(trade, STAGED, 50_000_00, ship_by=far)).payment_id
    assert await clear_customs(trade, pending) == ACCEPTED
    expected.pending_reasons[pending] = PENDING_REASON
    forged = await clear_customs(
        trade, pending, event_id="forged-cleared", signing_key_name="not-the-customs-key"
    )
    expected.refused_attestations.append(
        RefusedAttestation(pending, "forged-cleared", "forged", forged)
    )

    cancelled = (await lock(trade, STAGED, 20_000_00, ship_by=far)).payment_id
    await bank.fund_escrow(
        world.keys["financier"],
        financier,
        cancelled,
        "CNY",
        5_000_00,
        payer_key=world.keys["buyer"],
        payer_wallet=buyer,
    )
    await world.platform.cancel_payment(
        cancelled, {buyer: world.keys["buyer"], seller: world.keys["seller"]}
    )

    payout = (await lock(trade, PAYOUT, 30_000_00)).payment_id
    assert await clear_customs(trade, payout) == ACCEPTED

    quote = await world.platform.quote_fx("HKD", "CNY", target_amount_minor=50_000_00)
    await world.platform.settle_pvp(world.keys["buyer"], buyer, seller, quote)
    trade.payments.update(settled=settled, pending=pending, cancelled=cancelled, payout=payout)

    if with_expiry:
        soon = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=3)
        expired = (await lock(trade, STAGED, 10_000_00, ship_by=soon)).payment_id
        trade.payments["expired"] = expired
        ended = await wait_until_terminal(trade.cb, [expired], timeout_seconds=10)
        assert ended[expired].state == payment_pb2.PAYMENT_STATE_EXPIRED
    await world.settle_everything()
    for name, payment_id in trade.payments.items():
        if name != "pending":
            state = (await trade.cb.get_payment(payment_id)).state
            assert state in TERMINAL, (name, payment_pb2.PaymentState.Name(state))


# -- inventory loans ----------------------------------------------------------------------------
class _WallClock(ManualClock):
    """The loan world's clock for statement and document times: the server's (the wall clock)."""

    def now_us(self) -> int:
        return now_us()


@dataclass
class LoanStory:
    world: LoanWorld
    loans: dict[str, str]  # story name -> loan id
    receipts: dict[str, str]  # story name -> receipt id


async def loan_story(trade: AuditedTrade) -> LoanStory:
    """Four inventory loans (tests/settlement/loan_world.py: 50,000.00 CNY against 1,000 units
    at 100.00, here without interest): ``repaid`` in two parts, the first freeing 500 units;
    ``disposed``: stock reported SPOILED, no cure within its 1 s cure period, defaulted by the
    deadline sweep and sold by DvP for 80,000.00 (a surplus to the borrower); ``open`` and
    ``open-2``, valued at 90.00 (still above the threshold) and left open. Plus a ``spare``
    receipt, free."""
    loans = await build_loan_world(trade.world, _WallClock(0))
    platform, fin = loans.platform.api.finance, loans.financier.api.finance
    receipts = {
        name: await loans.receipt("seller", 1_000, f"R-{name}")
        for name in ("repaid", "disposed", "open", "open-2", "spare")
    }
    ids: dict[str, str] = {}

    repaid = await loans.open(receipts["repaid"], rate_bps=0)
    ids["repaid"] = repaid.loan_id
    first = (
        await platform.repay(
            loans.repay(
                repaid.loan_id,
                500_00 + 25_000_00,
                release_title_id=receipts["repaid"],
                release_units=500,
            )
        )
    ).loan
    assert first.state == finance_pb2.LOAN_STATE_OPEN
    done = (await platform.repay(loans.repay(repaid.loan_id, 25_000_00))).loan
    assert done.state == finance_pb2.LOAN_STATE_REPAID

    disposed = await loans.open(receipts["disposed"], rate_bps=0, cure_period_s=1)
    ids["disposed"] = disposed.loan_id
    spoiled = await loans.stock(disposed.loan_id, receipts["disposed"], 1_000, "SPOILED")
    assert (await fin.submit_collateral_attestation(spoiled)).loan.state == (
        finance_pb2.LOAN_STATE_MARGIN_CALL
    )
    give_up = time.monotonic() + 20
    while (await loans.loan(disposed.loan_id)).loan.state != finance_pb2.LOAN_STATE_DEFAULTED:
        assert time.monotonic() < give_up, "the deadline sweep did not default the loan"
        await asyncio.sleep(0.2)
    sale = loans.dispose(
        disposed.loan_id, receipts["disposed"], pay=("CNY", 80_000_00), receive_minor=80_000_00
    )
    await fin.dispose_collateral(sale)
    assert (await loans.loan(disposed.loan_id)).loan.state == finance_pb2.LOAN_STATE_DISPOSED

    for name in ("open", "open-2"):
        opened = await loans.open(receipts[name], rate_bps=0)
        ids[name] = opened.loan_id
        valued = await fin.submit_collateral_attestation(
            await loans.valuation(opened.loan_id, 90_00)
        )
        assert valued.loan.state == finance_pb2.LOAN_STATE_OPEN
    return LoanStory(loans, ids, receipts)
