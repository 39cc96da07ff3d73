"""Funding, assignment, cancellation, deadlines, watching, contracts and idempotency of
conditional payments, through the real server on SQLite and PostgreSQL, with the clock the
tests move. After every step each wallet's HELD balance must equal the sum of its open payments'
held amounts (check_held); every amount is exact to the fen."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from condpay.attest import Attestation
from condpay.client import bound_params, param_values
from condpay.v1 import contract_pb2, ledger_pb2, oracle_pb2, payment_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from contracts_dsl import Event, compile_source, render, simulate
from contracts_dsl.cli import main as dsl_cli
from tests.payments.sign import lock_request
from tests.payments.snapshot import (
    CONTRACT,
    MINUTE_US,
    ORACLE,
    arrived,
    assignment,
    by_buyer,
    by_customs,
    by_sensors,
    cancel_request,
    check_held,
    cleared,
    cleared_for,
    fund_request,
    locked,
    make_attestation,
    receipt,
    refused,
    refused_without_effect,
    submit,
    take_snapshot,
)
from tests.payments.world import (
    FINANCIER,
    SENSORS,
    WAREHOUSE,
    Oracles,
    TradeWorld,
    compiled,
    register_oracles,
    warehouse_params,
)
from wallets import OwnerKey

GATE, DOCK, RFID = SENSORS
DEADLINE_US = int(dt.datetime.fromisoformat("2026-12-31T00:00:00+08:00").timestamp() * 1_000_000)
DENIED = grpc.StatusCode.PERMISSION_DENIED
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
STATE = payment_pb2.PaymentState


def legs(has_legs: Any) -> list[tuple[str, str, int]]:
    """(clause, paid to, amount) of each leg of a reply or a payment."""
    return [(g.clause, g.paid_to_wallet_id, g.amount.amount_minor) for g in has_legs.legs]


async def fund(
    trade: TradeWorld,
    payment_id: str,
    amount_minor: int,
    *,
    fee_minor: int = 0,
    currency: str = "CNY",
) -> payment_pb2.FundEscrowResponse:
    financier = trade.client(FINANCIER)
    request = fund_request(
        trade,
        trade.wallets["financier"],
        payment_id,
        amount_minor,
        fee_minor=fee_minor,
        currency=currency,
    )
    reply: payment_pb2.FundEscrowResponse = await financier.api.payments.fund_escrow(request)
    return reply


async def arrive(
    trade: TradeWorld, oracles: Oracles, payment: payment_pb2.Payment, event_id: str
) -> list[tuple[str, str, int]]:
    statement = await arrived(trade, payment, event_id)
    reply = await submit(
        trade.client(ORACLE), statement, [], by_sensors(oracles, statement, GATE, RFID)
    )
    return legs(reply)


async def sign_receipt(
    trade: TradeWorld, payment: payment_pb2.Payment, event_id: str
) -> list[tuple[str, str, int]]:
    statement = await receipt(trade, payment, event_id)
    reply = await submit(trade.platform, statement, by_buyer(trade, statement))
    return legs(reply)


async def sweep_at(trade: TradeWorld, now_us: int) -> None:
    """Move the clock and run the deadline sweep (the background sweeper may run it too; a
    deadline fires once either way)."""
    assert trade.clock is not None
    trade.clock.set(now_us)
    await trade.harness.runtime.deadlines.sweep()


async def state_of(trade: TradeWorld, payment_id: str) -> int:
    return (await trade.cb.get_payment(payment_id)).state


async def refund_entries(trade: TradeWorld) -> list[ledger_pb2.JournalEntry]:
    return [e async for e in trade.cb.journal() if e.kind == ledger_pb2.ENTRY_KIND_REFUND]


# -- deadlines and financing ---------------------------------------------------------------------
async def test_a_funded_payment_expires_refunding_the_financier_first(trade: TradeWorld) -> None:
    oracles = await register_oracles(trade)
    buyer, seller, financier = (trade.wallets[n] for n in ("buyer", "seller", "financier"))
    first = await locked(trade)
    assert first.deadline.ToMicroseconds() == DEADLINE_US
    await check_held(trade)
    funded = await fund(trade, first.payment_id, 50_000_00, fee_minor=500_00)  # 40%
    assert (funded.financing.principal.amount_minor, funded.financing.fee.amount_minor) == (
        50_000_00,
        500_00,
    )
    assert await trade.balance("buyer") == (125_000_00, 125_000_00)
    await check_held(trade)
    # A second payment, 80% financed, 30% of it released before the deadline: what is left
    # (42,000.00) is less than the financier's principal (48,000.00), so "financiers first"
    # and "pro rata" (33,600.00 / 8,400.00) differ.
    second = await locked(trade, 60_000_00)
    await fund(trade, second.payment_id, 48_000_00)
    await check_held(trade)
    await cleared_for(trade, oracles, second, "ev-customs-2")
    assert await arrive(trade, oracles, second, "ev-arrived-2") == [("arrival", seller, 18_000_00)]
    await check_held(trade)
    assert await trade.balance("buyer") == (113_000_00, 167_000_00)
    assert await trade.balance("financier") == (902_000_00, 0)

    watched = trade.platform.watch_payment(first.payment_id, after_version=2)
    watcher = asyncio.create_task(collect(watched))
    # One microsecond early: nothing happens.
    await sweep_at(trade, DEADLINE_US - 1)
    assert await state_of(trade, first.payment_id) == STATE.PAYMENT_STATE_LOCKED
    assert await state_of(trade, second.payment_id) == STATE.PAYMENT_STATE_PARTIALLY_RELEASED
    await check_held(trade)

    await sweep_at(trade, DEADLINE_US)
    expired = await trade.cb.get_payment(first.payment_id)
    assert expired.state == STATE.PAYMENT_STATE_EXPIRED
    assert legs(expired) == [("deadline", financier, 50_000_00), ("deadline", buyer, 75_000_00)]
    assert (expired.held.amount_minor, expired.refunded.amount_minor) == (0, 125_000_00)
    (claim,) = expired.financing
    assert (claim.principal.amount_minor, claim.refunded.amount_minor) == (50_000_00, 50_000_00)
    short = await trade.cb.get_payment(second.payment_id)
    assert short.state == STATE.PAYMENT_STATE_EXPIRED
    assert legs(short)[-1:] == [("deadline", financier, 42_000_00)]
    assert (short.released.amount_minor, short.refunded.amount_minor) == (18_000_00, 42_000_00)
    (claim,) = short.financing
    assert (claim.principal.amount_minor, claim.refunded.amount_minor) == (48_000_00, 42_000_00)
    assert await trade.balance("buyer") == (188_000_00, 0)
    assert await trade.balance("financier") == (994_000_00, 0)
    assert await trade.balance("seller") == (18_000_00, 0)
    await check_held(trade)
    # The stream saw the expiry the sweeper committed, and ended with it.
    updates = await watcher
    assert [(u.version, u.kind) for u in updates] == [(3, "expired")]
    assert updates[-1].payment.state == STATE.PAYMENT_STATE_EXPIRED

    # Exactly one terminal transition: the deadline again, an attestation, funding, cancelling.
    refunds = len(await refund_entries(trade))
    assert refunds == 2
    await sweep_at(trade, DEADLINE_US + 60_000_000)
    assert len(await refund_entries(trade)) == refunds
    ids = [first.payment_id, second.payment_id]
    late = await cleared(trade, first, "ev-customs-late")
    await refused_without_effect(
        trade,
        ids,
        submit(trade.client(ORACLE), late, by_customs(oracles, late)),
        PRECONDITION,
        "PAYMENT_NOT_OPEN",
    )
    await refused_without_effect(
        trade, ids, fund(trade, first.payment_id, 1_00), PRECONDITION, "PAYMENT_NOT_OPEN"
    )
    everyone = {buyer: trade.keys["buyer"], seller: trade.keys["seller"]}
    platform = trade.platform
    await refused_without_effect(
        trade,
        ids,
        platform.api.payments.cancel_payment(cancel_request(trade, first.payment_id, everyone)),
        PRECONDITION,
        "PAYMENT_NOT_OPEN",
    )


async def collect(
    stream: AsyncIterator[payment_pb2.WatchPaymentResponse],
) -> list[payment_pb2.WatchPaymentResponse]:
    async with asyncio.timeout(20):
        return [update async for update in stream]


async def test_financing_is_capped_by_what_the_escrow_holds(trade: TradeWorld) -> None:
    oracles = await register_oracles(trade)
    payment = await locked(trade)
    ids = [payment.payment_id]
    bank = trade.client(FINANCIER)
    # The financier does not see the payment until it funds it.
    await refused(bank.get_payment(payment.payment_id), NOT_FOUND, "PAYMENT_NOT_FOUND")
    error = await refused_without_effect(
        trade,
        ids,
        fund(trade, payment.payment_id, 125_000_01),
        PRECONDITION,
        "FINANCING_EXCEEDS_ESCROW",
    )
    assert error.metadata["payment_id"] == payment.payment_id
    await refused_without_effect(
        trade,
        ids,
        fund(trade, payment.payment_id, 1_000_00, currency="HKD"),
        INVALID,
        "CURRENCY_MISMATCH",
    )
    await fund(trade, payment.payment_id, 50_000_00)
    await check_held(trade)
    assert (await bank.get_payment(payment.payment_id)).version == 2
    await refused_without_effect(
        trade,
        ids,
        fund(trade, payment.payment_id, 75_000_01),
        PRECONDITION,
        "FINANCING_EXCEEDS_ESCROW",
    )
    topped_up = await fund(trade, payment.payment_id, 75_000_00)  # fully financed: exactly fits
    assert [f.principal.amount_minor for f in topped_up.payment.financing] == [50_000_00, 75_000_00]
    assert await trade.balance("buyer") == (200_000_00, 125_000_00)
    assert await trade.balance("financier") == (875_000_00, 0)
    await check_held(trade)
    # A release shrinks the escrow below what is financed: not one fen more.
    await cleared_for(trade, oracles, payment, "ev-customs")
    await arrive(trade, oracles, payment, "ev-arrived")
    await check_held(trade)
    await refused_without_effect(
        trade, ids, fund(trade, payment.payment_id, 1), PRECONDITION, "FINANCING_EXCEEDS_ESCROW"
    )


async def test_assigned_proceeds_go_to_the_financier_first(trade: TradeWorld) -> None:
    oracles = await register_oracles(trade)
    buyer, seller, financier = (trade.wallets[n] for n in ("buyer", "seller", "financier"))
    payment = await locked(trade)
    ids = [payment.payment_id]
    bank = trade.client(FINANCIER)
    keys = trade.keys

    async def assign(
        payee: str, assigned: int, advance: int, payee_key: str = "seller"
    ) -> payment_pb2.AssignProceedsResponse:
        instruction = assignment(
            trade, payment.payment_id, payee=payee, assigned_minor=assigned, advance_minor=advance
        )
        return await bank.assign_proceeds(keys[payee_key], keys["financier"], instruction)

    # Only a payee of the payment can assign its proceeds: not the payer, not the financier;
    # to any other wallet the payment answers as one that does not exist.
    for payee, name in ((buyer, "buyer"), (financier, "financier")):
        error = await refused_without_effect(
            trade, ids, assign(payee, 10_000_00, 9_000_00, name), NOT_FOUND, "PAYMENT_NOT_FOUND"
        )
        assert error.metadata == {"id": payment.payment_id}
    error = await refused_without_effect(
        trade,
        ids,
        assign(seller, 50_000_00, 50_000_01),
        INVALID,
        "ADVANCE_EXCEEDS_ASSIGNMENT",
    )
    assert error.metadata["field"] == "advance_minor"
    await refused_without_effect(
        trade, ids, assign(seller, 125_000_01, 1_00), PRECONDITION, "ASSIGNMENT_EXCEEDS_ESCROW"
    )
    # The seller assigns 50,000.00 of its proceeds for an advance of 48,000.00, paid now.
    assigned = await assign(seller, 50_000_00, 48_000_00)
    assert (
        assigned.assignment.assigned.amount_minor,
        assigned.assignment.advance.amount_minor,
        assigned.assignment.collected.amount_minor,
    ) == (50_000_00, 48_000_00, 0)
    assert await trade.balance("seller") == (48_000_00, 0)
    assert await trade.balance("financier") == (952_000_00, 0)
    await check_held(trade)
    assert (await bank.get_payment(payment.payment_id)).assignments[0].payee_wallet_id == seller

    await cleared_for(trade, oracles, payment, "ev-customs")
    # 30% = 37,500.00 is due to the seller: all of it goes to the financier (up to 50,000.00).
    assert await arrive(trade, oracles, payment, "ev-arrived") == [
        ("arrival", financier, 37_500_00)
    ]
    await check_held(trade)
    # The remainder, 87,500.00: 12,500.00 completes the assignment, 75,000.00 to the seller.
    assert await sign_receipt(trade, payment, "ev-receipt") == [
        ("receipt", financier, 12_500_00),
        ("receipt", seller, 75_000_00),
    ]
    done = await trade.cb.get_payment(payment.payment_id)
    assert done.state == STATE.PAYMENT_STATE_SETTLED
    assert done.assignments[0].collected.amount_minor == 50_000_00
    assert await trade.balance("seller") == (123_000_00, 0)
    assert await trade.balance("financier") == (1_002_000_00, 0)
    assert await trade.balance("buyer") == (75_000_00, 0)
    await check_held(trade)
    kinds = [e.kind async for e in trade.cb.journal()][-4:]
    assert kinds == [
        ledger_pb2.ENTRY_KIND_LOCK,
        ledger_pb2.ENTRY_KIND_ADVANCE,
        ledger_pb2.ENTRY_KIND_RELEASE,
        ledger_pb2.ENTRY_KIND_RELEASE,
    ]


# -- cancellation and terminal states ------------------------------------------------------------
async def test_cancelling_needs_every_party_and_refunds_financiers_first(
    trade: TradeWorld,
) -> None:
    oracles = await register_oracles(trade)
    buyer, seller, financier = (trade.wallets[n] for n in ("buyer", "seller", "financier"))
    keys = trade.keys
    payment = await locked(trade)
    ids = [payment.payment_id]
    platform = trade.platform
    await fund(trade, payment.payment_id, 50_000_00)
    await cleared_for(trade, oracles, payment, "ev-customs")
    assert await arrive(trade, oracles, payment, "ev-arrived") == [("arrival", seller, 37_500_00)]
    await check_held(trade)

    async def cancel(signers: dict[str, OwnerKey]) -> payment_pb2.CancelPaymentResponse:
        request = cancel_request(trade, payment.payment_id, signers)
        return await platform.api.payments.cancel_payment(request)

    for signers in (
        {buyer: keys["buyer"]},
        {buyer: keys["buyer"], financier: keys["financier"]},
    ):
        error = await refused_without_effect(
            trade, ids, cancel(signers), DENIED, "CANCEL_NOT_AUTHORIZED"
        )
        assert error.metadata["missing"] == seller
    error = await refused_without_effect(
        trade, ids, cancel({seller: keys["seller"]}), DENIED, "CANCEL_NOT_AUTHORIZED"
    )
    assert error.metadata["missing"] == buyer
    # The seller's signature made with the buyer's key.
    error = await refused_without_effect(
        trade,
        ids,
        cancel({buyer: keys["buyer"], seller: keys["buyer"]}),
        DENIED,
        "SIGNATURE_INVALID",
    )
    assert error.metadata["wallet_id"] == seller

    cancelled = await cancel({buyer: keys["buyer"], seller: keys["seller"]})
    view = cancelled.payment
    assert view.state == STATE.PAYMENT_STATE_CANCELLED
    # 87,500.00 left: the financier's 50,000.00 first, then the buyer's 37,500.00 (pro rata
    # would have been 35,000.00 / 52,500.00).
    assert legs(view)[-2:] == [("cancel", financier, 50_000_00), ("cancel", buyer, 37_500_00)]
    assert (view.held.amount_minor, view.released.amount_minor, view.refunded.amount_minor) == (
        0,
        37_500_00,
        87_500_00,
    )
    assert await trade.balance("buyer") == (162_500_00, 0)
    assert await trade.balance("financier") == (1_000_000_00, 0)
    assert await trade.balance("seller") == (37_500_00, 0)
    await check_held(trade)

    # Cancelled is final: attestations, another cancel and the deadline change nothing.
    statement = await receipt(trade, payment, "ev-receipt")
    await refused_without_effect(
        trade,
        ids,
        submit(platform, statement, by_buyer(trade, statement)),
        PRECONDITION,
        "PAYMENT_NOT_OPEN",
    )
    await refused_without_effect(
        trade,
        ids,
        cancel({buyer: keys["buyer"], seller: keys["seller"]}),
        PRECONDITION,
        "PAYMENT_NOT_OPEN",
    )
    before = await take_snapshot(trade, ids)
    await sweep_at(trade, DEADLINE_US + 1)
    assert await take_snapshot(trade, ids) == before
    await check_held(trade)


async def test_a_settled_payment_takes_no_second_terminal_transition(trade: TradeWorld) -> None:
    oracles = await register_oracles(trade)
    buyer, seller = trade.wallets["buyer"], trade.wallets["seller"]
    keys = trade.keys
    payment = await locked(trade)
    ids = [payment.payment_id]
    platform = trade.platform
    await cleared_for(trade, oracles, payment, "ev-customs")
    await arrive(trade, oracles, payment, "ev-arrived")
    assert await sign_receipt(trade, payment, "ev-receipt") == [("receipt", seller, 87_500_00)]
    assert await state_of(trade, payment.payment_id) == STATE.PAYMENT_STATE_SETTLED
    await check_held(trade)
    await refused_without_effect(
        trade,
        ids,
        platform.api.payments.cancel_payment(
            cancel_request(
                trade, payment.payment_id, {buyer: keys["buyer"], seller: keys["seller"]}
            ),
        ),
        PRECONDITION,
        "PAYMENT_NOT_OPEN",
    )
    # A cold-chain breach would pay the buyer 5%: not after settlement.
    breach = await make_attestation(
        trade,
        payment,
        oracle="sensors",
        event_type="iot.condition",
        attributes={"max_temp_c": 12},
        event_id="ev-breach",
    )
    await refused_without_effect(
        trade,
        ids,
        submit(trade.client(ORACLE), breach, [], by_sensors(oracles, breach, GATE, DOCK)),
        PRECONDITION,
        "PAYMENT_NOT_OPEN",
    )
    instruction = assignment(
        trade, payment.payment_id, payee=seller, assigned_minor=1_00, advance_minor=1_00
    )
    await refused_without_effect(
        trade,
        ids,
        trade.client(FINANCIER).assign_proceeds(keys["seller"], keys["financier"], instruction),
        PRECONDITION,
        "PAYMENT_NOT_OPEN",
    )
    before = await take_snapshot(trade, ids)
    await sweep_at(trade, DEADLINE_US)
    assert await take_snapshot(trade, ids) == before


async def test_an_attestation_between_the_deadline_and_the_sweep_expires_the_payment_once(
    trade: TradeWorld,
) -> None:
    """The sweep runs every half second; an attestation can land after the deadline and before
    it. The evaluator then runs the deadline itself: what was observed in time still pays, the
    rest is refunded, the payment is EXPIRED, and the sweep that follows does nothing."""
    assert trade.clock is not None
    oracles = await register_oracles(trade)
    buyer, seller = trade.wallets["buyer"], trade.wallets["seller"]
    in_time = await locked(trade)
    too_late = await locked(trade, 50_000_00)
    for payment in (in_time, too_late):
        await cleared_for(trade, oracles, payment, f"ev-customs-{payment.payment_id}")
    await trade.harness.runtime.deadlines.stop()  # the sweep has not come round yet
    trade.clock.set(DEADLINE_US + 2 * MINUTE_US)
    watched = asyncio.create_task(collect(trade.platform.watch_payment(in_time.payment_id, 2)))
    oracle = trade.client(ORACLE)
    observed_before = await arrived(
        trade, in_time, "ev-arrived-1", observed_at_us=DEADLINE_US - 60 * MINUTE_US
    )
    reply = await submit(
        oracle, observed_before, [], by_sensors(oracles, observed_before, GATE, RFID)
    )
    assert legs(reply) == [("arrival", seller, 37_500_00), ("deadline", buyer, 87_500_00)]
    assert reply.payment.state == STATE.PAYMENT_STATE_EXPIRED
    observed_after = await arrived(
        trade, too_late, "ev-arrived-2", observed_at_us=DEADLINE_US + MINUTE_US
    )
    reply = await submit(
        oracle, observed_after, [], by_sensors(oracles, observed_after, GATE, DOCK)
    )
    assert legs(reply) == [("deadline", buyer, 50_000_00)]
    assert reply.payment.state == STATE.PAYMENT_STATE_EXPIRED
    assert reply.attestation.fired_clauses == []
    assert await trade.balance("buyer") == (162_500_00, 0)
    assert await trade.balance("seller") == (37_500_00, 0)
    await check_held(trade)
    updates = await watched
    assert [u.version for u in updates] == [3]
    assert updates[-1].payment.state == STATE.PAYMENT_STATE_EXPIRED
    ids = [in_time.payment_id, too_late.payment_id]
    before = await take_snapshot(trade, ids)
    await trade.harness.runtime.deadlines.sweep()
    assert await take_snapshot(trade, ids) == before
    assert len(await refund_entries(trade)) == 2


# -- watching ------------------------------------------------------------------------------------
async def test_watch_payment_streams_each_change_resumes_and_ends_when_terminal(
    trade: TradeWorld,
) -> None:
    oracles = await register_oracles(trade)
    payment = await locked(trade)
    stream = trade.platform.watch_payment(payment.payment_id)
    updates = aiter(stream)

    async def next_update() -> payment_pb2.WatchPaymentResponse:
        async with asyncio.timeout(10):
            return await anext(updates)

    seen = [await next_update()]
    await fund(trade, payment.payment_id, 50_000_00)
    seen.append(await next_update())
    await check_held(trade)
    await cleared_for(trade, oracles, payment, "ev-customs")
    seen.append(await next_update())
    await arrive(trade, oracles, payment, "ev-arrived")
    seen.append(await next_update())
    await check_held(trade)
    await sign_receipt(trade, payment, "ev-receipt")
    seen.append(await next_update())
    await check_held(trade)
    assert [(u.version, u.kind) for u in seen] == [
        (1, "locked"),
        (2, "funded"),
        (3, "attested"),
        (4, "released"),
        (5, "settled"),
    ]
    # Each update carries the payment as of that change.
    assert [(u.payment.version, u.payment.state) for u in seen] == [
        (1, STATE.PAYMENT_STATE_LOCKED),
        (2, STATE.PAYMENT_STATE_LOCKED),
        (3, STATE.PAYMENT_STATE_LOCKED),
        (4, STATE.PAYMENT_STATE_PARTIALLY_RELEASED),
        (5, STATE.PAYMENT_STATE_SETTLED),
    ]
    assert [u.payment.held.amount_minor for u in seen] == [
        125_000_00,
        125_000_00,
        125_000_00,
        87_500_00,
        0,
    ]
    # Terminal: the stream ends.
    async with asyncio.timeout(10):
        assert [u async for u in updates] == []
    # Resumed after version 2 it replays 3..5 and ends; after the last version, nothing.
    resumed = await collect(trade.platform.watch_payment(payment.payment_id, after_version=2))
    assert [(u.version, u.kind) for u in resumed] == [
        (3, "attested"),
        (4, "released"),
        (5, "settled"),
    ]
    assert await collect(trade.platform.watch_payment(payment.payment_id, after_version=5)) == []
    # The financier it funded watches it too; a negative version is refused.
    financed = await collect(trade.client(FINANCIER).watch_payment(payment.payment_id))
    assert [u.version for u in financed] == [1, 2, 3, 4, 5]
    await refused(
        collect(trade.platform.watch_payment(payment.payment_id, after_version=-1)),
        INVALID,
        "INVALID_PAGE_TOKEN",
    )


# -- contracts -----------------------------------------------------------------------------------
BROKEN = WAREHOUSE.replace("-> pay 30% to seller", "-> pay 30% to sellr").replace(
    "within 14 days", "within 14 fortnights"
)


def cli_check(source: str, path: Path) -> dict[str, Any]:
    """What `condpay dsl check --json` reports for ``source`` saved at ``path``."""
    path.write_text(source, encoding="utf-8")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        dsl_cli(["check", "--json", str(path)])
    (report,) = json.loads(out.getvalue())
    assert isinstance(report, dict)
    return report


async def test_validate_contract_gives_the_clis_diagnostics_and_hash(
    trade: TradeWorld, tmp_path: Path
) -> None:
    platform = trade.platform
    path = tmp_path / "warehouse.contract"
    good = await platform.api.contracts.validate_contract(
        contract_pb2.ValidateContractRequest(source=WAREHOUSE, path=str(path)),
    )
    cli = cli_check(WAREHOUSE, path)
    assert good.ok
    assert cli["ok"]
    assert good.contract.contract_hash == cli["hash"] == CONTRACT.hash
    assert good.contract.canonical_json == CONTRACT.canonical.decode()
    assert [d.code for d in good.diagnostics] == [d["code"] for d in cli["diagnostics"]]

    assert BROKEN != WAREHOUSE
    bad = await platform.api.contracts.validate_contract(
        contract_pb2.ValidateContractRequest(source=BROKEN, path=str(path)),
    )
    cli = cli_check(BROKEN, path)
    assert not bad.ok
    assert not cli["ok"]
    assert not bad.HasField("contract")
    assert cli["hash"] is None
    assert len(bad.diagnostics) >= 2
    got = [
        {
            "code": d.code,
            "severity": contract_pb2.Severity.Name(d.severity).removeprefix("SEVERITY_").lower(),
            "message": d.message,
            "path": d.path,
            "line": d.line,
            "column": d.column,
            "end_line": d.end_line,
            "end_column": d.end_column,
        }
        for d in bad.diagnostics
    ]
    keys = ("code", "severity", "message", "path", "line", "column", "end_line", "end_column")
    expected = [{k: d[k] for k in keys} for d in cli["diagnostics"]]
    assert got == expected
    # The rendered snippet: the source line and a caret under the span, as the CLI prints it.
    result = compile_source(BROKEN, str(path))
    assert [d.rendered for d in bad.diagnostics] == [
        render(d, result.source) for d in result.diagnostics
    ]
    first = bad.diagnostics[0]
    assert "sellr" in first.rendered or "fortnights" in first.rendered
    assert "^" in first.rendered
    # RegisterContract refuses it with the same diagnostics attached.
    error = await refused(platform.register_contract(BROKEN), INVALID, "CONTRACT_INVALID")
    details = [d for d in error.status.details if d.Is(contract_pb2.Diagnostic.DESCRIPTOR)]
    assert len(details) == len(
        [d for d in bad.diagnostics if d.severity == contract_pb2.SEVERITY_ERROR]
    )


def simulated(event: Event) -> contract_pb2.SimulatedEvent:
    observed = Timestamp()
    observed.FromMicroseconds(event.observed_at_us)
    return contract_pb2.SimulatedEvent(
        event_id=event.event_id,
        event_type=event.event_type,
        oracle=event.oracle,
        observed_at=observed,
        attributes={k: str(v) for k, v in event.attributes.items()},
    )


async def test_simulate_contract_gives_the_legs_the_evaluator_and_the_server_pay(
    trade: TradeWorld,
) -> None:
    oracles = await register_oracles(trade)
    buyer, seller = trade.wallets["buyer"], trade.wallets["seller"]
    params = warehouse_params(trade)
    bound = bound_params(CONTRACT, params)
    now = trade.now_us()
    events = [
        Event("s-customs", "customs.cleared", "customs", {"declaration": "D-2026-1127"}, now),
        Event("s-breach", "iot.condition", "sensors", {"max_temp_c": "12"}, now + 1),
        Event("s-arrived", "iot.arrived", "sensors", {"site": "LAX-FBA-3"}, now + 2),
        Event("s-receipt", "receipt.signed", "buyer", {"signer": buyer}, now + 3),
    ]
    platform = trade.platform
    reply = await platform.api.contracts.simulate_contract(
        contract_pb2.SimulateContractRequest(
            source=WAREHOUSE,
            params=param_values(CONTRACT, params),
            events=[simulated(e) for e in events],
        ),
    )
    expected = simulate(CONTRACT, bound, events)
    assert [
        [(g.clause, g.wallet_id, g.amount.amount_minor) for g in s.legs] for s in reply.steps
    ] == [[(g.clause, g.wallet, g.amount_minor) for g in step.evaluation.legs] for step in expected]
    assert [
        [(g.clause, g.wallet_id, g.amount.amount_minor) for g in s.legs] for s in reply.steps
    ] == [
        [],
        [("cold_chain_breach", buyer, 6_250_00)],
        [("arrival", seller, 37_500_00)],
        [("receipt", seller, 81_250_00)],
    ]
    assert reply.terminal
    assert reply.escrow_left.amount_minor == 0
    # Nothing moved.
    assert await trade.balance("buyer") == (200_000_00, 0)

    # The same events through the real server pay the same legs.
    payment = await locked(trade)
    oracle = trade.client(ORACLE)
    paid = []
    customs = await cleared(trade, payment, "ev-customs")
    paid.append(legs(await submit(oracle, customs, by_customs(oracles, customs))))
    breach = await make_attestation(
        trade,
        payment,
        oracle="sensors",
        event_type="iot.condition",
        attributes={"max_temp_c": 12},
        event_id="ev-breach",
    )
    paid.append(legs(await submit(oracle, breach, [], by_sensors(oracles, breach, GATE, DOCK))))
    paid.append(await arrive(trade, oracles, payment, "ev-arrived"))
    paid.append(await sign_receipt(trade, payment, "ev-receipt"))
    assert [[(c, a) for c, _, a in step] for step in paid] == [
        [(g.clause, g.amount.amount_minor) for g in s.legs] for s in reply.steps
    ]
    assert [[w for _, w, _ in step] for step in paid] == [
        [g.wallet_id for g in s.legs] for s in reply.steps
    ]
    await check_held(trade)

    # `until` runs the deadline: after customs alone, the whole escrow goes back to the buyer.
    until = Timestamp()
    until.FromMicroseconds(DEADLINE_US)
    closing = await platform.api.contracts.simulate_contract(
        contract_pb2.SimulateContractRequest(
            contract_hash=CONTRACT.hash,
            params=param_values(CONTRACT, params),
            events=[simulated(events[0])],
            until=until,
        ),
    )
    assert [(g.kind, g.wallet_id, g.amount.amount_minor) for g in closing.closing_legs] == [
        ("refund", buyer, 125_000_00)
    ]
    assert closing.terminal


async def test_register_contract_then_lock_by_hash(trade: TradeWorld) -> None:
    variant_source = WAREHOUSE.replace("pay 30% to seller", "pay 40% to seller")
    variant = compiled(variant_source)
    assert variant.hash != CONTRACT.hash
    platform = trade.platform
    params = warehouse_params(trade)
    await refused_without_effect(
        trade,
        [],
        platform.lock_payment(trade.keys["buyer"], variant, params),
        NOT_FOUND,
        "CONTRACT_NOT_FOUND",
    )
    registered = await platform.register_contract(variant_source, request_id="register-variant")
    assert registered.contract.contract_hash == variant.hash
    again = await platform.register_contract(variant_source)  # a no-op, under a new request id
    assert again.contract.contract_hash == variant.hash
    assert not again.operation.replayed
    fetched = await platform.api.contracts.get_contract(
        contract_pb2.GetContractRequest(contract_hash=variant.hash)
    )
    assert fetched.contract.source == variant_source
    reply = await platform.lock_payment(trade.keys["buyer"], variant, params)  # by hash alone
    assert reply.payment.contract.contract_hash == variant.hash
    assert reply.payment.held.amount_minor == 125_000_00
    await check_held(trade)


# -- idempotency ---------------------------------------------------------------------------------
async def test_lock_and_attestation_are_idempotent(trade: TradeWorld) -> None:
    oracles = await register_oracles(trade)
    platform = trade.platform
    request = lock_request(trade, CONTRACT, warehouse_params(trade), WAREHOUSE, "lock-once")
    first, *retries = await asyncio.gather(
        *(platform.api.payments.lock_payment(request) for _ in range(5))
    )
    again = await platform.api.payments.lock_payment(request)
    replies = [first, *retries, again]
    assert sum(not r.operation.replayed for r in replies) == 1
    assert {r.payment.payment_id for r in replies} == {first.payment.payment_id}
    assert {r.payment.version for r in replies} == {1}
    assert {r.operation.commit_seq for r in replies} == {first.operation.commit_seq}
    assert await trade.balance("buyer") == (75_000_00, 125_000_00)
    await check_held(trade)
    payment = first.payment
    ids = [payment.payment_id]
    # The same request id for another lock (another amount): refused, nothing locked.
    other = lock_request(trade, CONTRACT, warehouse_params(trade, 1_00), WAREHOUSE, "lock-once")
    await refused_without_effect(
        trade,
        ids,
        platform.api.payments.lock_payment(other),
        EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )

    # A dry run shows the legs and consumes nothing: not the event id, not the money, and not
    # the request id (the real call under the same id is applied, not answered from the dry run).
    await cleared_for(trade, oracles, payment, "ev-customs")
    statement = await arrived(trade, payment, "ev-arrived")
    aggregate = by_sensors(oracles, statement, GATE, RFID)
    before = await take_snapshot(trade, ids)
    oracle = trade.client(ORACLE)
    dry = await oracle.api.oracles.submit_attestation(
        submission_request(statement, aggregate, "arrival-real", dry_run=True),
    )
    assert dry.operation.dry_run
    assert legs(dry) == [("arrival", trade.wallets["seller"], 37_500_00)]
    assert await take_snapshot(trade, ids) == before
    # Then for real, five times at once and once more later, under one request id.
    real = submission_request(statement, aggregate, "arrival-real")
    replies = list(
        await asyncio.gather(*(oracle.api.oracles.submit_attestation(real) for _ in range(5)))
    )
    replies.append(await oracle.api.oracles.submit_attestation(real))
    assert sum(not r.operation.replayed for r in replies) == 1
    assert not any(r.operation.dry_run for r in replies)
    assert {tuple(legs(r)) for r in replies} == {(("arrival", trade.wallets["seller"], 37_500_00),)}
    assert {tuple(g.commit_seq for g in r.legs) for r in replies} == {
        (replies[0].legs[0].commit_seq,)
    }
    assert replies[0].legs[0].commit_seq > 0
    after = await take_snapshot(trade, ids)
    assert after.journal_length == before.journal_length + 1
    assert after.payments[payment.payment_id].event_ids == ("ev-customs", "ev-arrived")
    assert await trade.balance("seller") == (37_500_00, 0)
    await check_held(trade)
    # The same request id over other bytes is a reused key, not a replay.
    other_statement = await arrived(trade, payment, "ev-arrived-2")
    await refused_without_effect(
        trade,
        ids,
        oracle.api.oracles.submit_attestation(
            submission_request(
                other_statement, by_sensors(oracles, other_statement, GATE, RFID), "arrival-real"
            ),
        ),
        EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    # Funding, replayed: the financier pays once.
    funding = fund_request(trade, trade.wallets["financier"], payment.payment_id, 10_000_00)
    bank = trade.client(FINANCIER)
    funded = [await bank.api.payments.fund_escrow(funding) for _ in range(2)]
    assert [f.operation.replayed for f in funded] == [False, True]
    assert await trade.balance("financier") == (990_000_00, 0)
    await check_held(trade)


def submission_request(
    attestation: Attestation,
    aggregate: tuple[tuple[str, ...], bytes],
    request_id: str,
    *,
    dry_run: bool = False,
) -> oracle_pb2.SubmitAttestationRequest:
    request = oracle_pb2.SubmitAttestationRequest(
        request_id=request_id,
        dry_run=dry_run,
        statement=attestation.statement,
        payload=attestation.payload,
    )
    request.bls_aggregate.signer_ids.extend(aggregate[0])
    request.bls_aggregate.signature = aggregate[1]
    return request
