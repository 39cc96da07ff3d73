"""``make run``: a short end-to-end story through the public gRPC API.

Act 1, money: the People's Bank of China registers an operating institution and issues e-CNY to
it; the institution opens wallets for a Shenzhen electronics maker, its overseas buyer and a trade
bank, and funds them; the buyer pays a deposit on a signed instruction; a retry with the same
request id is answered from storage; an overdraft is refused with typed details.

Act 2, a conditional payment: the buyer locks 125,000.00 CNY against an overseas-warehouse
delivery contract; the bank finances 40% of the escrow; Shenzhen customs clears the goods, two of
the three LAX-3 warehouse sensors confirm arrival (one BLS aggregate signature) and 30% goes to
the maker; the buyer signs the receipt and the rest follows.

Act 3, across currencies: a Hong Kong trading house buys part of the maker's next shipment. The
carrier issues an electronic bill of lading for 40 pallets to the maker; the trading house pays
in HKD, the maker is paid in CNY: one delivery-versus-payment of 25 pallets (the title is split)
at a firm FX quote, settled atomically across the core and the multi-CBDC bridge, final with the
validators' quorum certificate.

Act 4, inventory financing on warehouse receipts (docs/financing.md): the LAX-3 warehouse issues
the maker a receipt for 1,000 cartons; the maker pledges it to Bank A and borrows 50,000.00 CNY
(one transaction); the price feed marks the cartons down to 60.00: a margin call; the maker
pledges a second receipt and the loan is cured, then repays it in full and both receipts are
free. A second loan: the warehouse and two sensors count its stock SPOILED, a margin call at
once; its one-second cure period passes, the core's deadline sweep defaults it, and Bank A sells
the receipt to the HK trading house, which pays HKD through the bridge: Bank A is paid what is
owed, the maker the surplus, in one settlement. Then balances, the journal and the supply audit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from condpay.attest import (
    bls_registration,
    build_attestation,
    sign_bls_aggregate,
    sign_ed25519,
    sign_party,
)
from condpay.client import PaymentsClient, SettlementsClient
from condpay.errors import FailedPrecondition
from condpay.loans import (
    collateral_request,
    disposal_request,
    open_loan_request,
    pledge_more_request,
    repay_request,
)
from condpay.v1 import errors_pb2, finance_pb2, ledger_pb2, payment_pb2, settlement_pb2
from rich.console import Console
from rich.table import Table

from contracts_dsl import compile_source
from sim_central_bank.economy import CARRIER
from sim_central_bank.record import GATEWAY
from sim_central_bank.server_process import ServerProcess
from wallets import OwnerKey, TransferInstruction, bls, format_money, sign_transfer
from wallets.currencies import CURRENCIES
from wallets.loan_documents import CollateralStatement, LoanTerms

DEMO_DIR = Path("var") / "demo"
BANK, RESERVE = "icbc-sz", "w_reserve.icbc-sz"
CUSTOMS = "customs.cn.shenzhen"
SENSORS = ("iot.lax3.gate", "iot.lax3.dock", "iot.lax3.rfid")
WAREHOUSE, PRICE_FEED = "warehouse.lax3", "price.sz-electronics"
DELIVERY_CONTRACT = """\
contract "overseas-warehouse-delivery" version 1

param buyer       : wallet
param seller      : wallet
param price       : money CNY
param declaration : text
param ship_by     : timestamp

oracle customs = "customs.cn.shenzhen"
oracle sensors = quorum 2 of ["iot.lax3.gate", "iot.lax3.dock", "iot.lax3.rfid"]

escrow price from buyer
deadline ship_by -> refund remainder to buyer

clause arrival
when customs.cleared(declaration == declaration) by customs
  and iot.arrived(site == "LAX-FBA-3") by sensors
  -> pay 30% to seller

clause receipt
when receipt.signed(signer == buyer) by buyer within 14 days after iot.arrived
  -> pay remainder to seller
"""
Signatures = tuple[list[tuple[str, bytes]], tuple[tuple[str, ...], bytes] | None]
console = Console()


def _key(name: str) -> OwnerKey:
    return OwnerKey.from_seed(name.encode().ljust(32, b".")[:32])


def _cny(amount_minor: int) -> str:
    return format_money(amount_minor, "CNY")


async def story(address: str) -> None:
    cb = SettlementsClient(address, caller="central_bank/pboc")
    try:
        wallets = await act_one(cb)
        await act_two(cb, wallets)
        await act_three(cb, wallets)
        await act_four(cb, wallets)
        await show_ledger(cb, wallets)
    finally:
        await cb.close()


async def act_one(cb: PaymentsClient) -> dict[str, str]:
    bank = cb.with_caller(f"institution/{BANK}")
    platform = cb.with_caller("platform/gba-trade")
    await cb.register_institution(BANK, "ICBC Shenzhen", _key("icbc-sz reserve").public_key)
    await cb.issue(BANK, "CNY", 10_000_000_00, memo="two-tier issuance")
    console.print("[bold]PBoC[/] registered ICBC Shenzhen and issued 10,000,000.00 CNY")
    wallets = {}
    for name, display, funding in (
        ("seller", "Shenzhen Maker Ltd", 0),
        ("buyer", "LAX Import Co", 200_000_00),
        ("financier", "Bank A trade finance", 1_000_000_00),
    ):
        opened = await bank.open_wallet(
            BANK, _key(name).public_key, kind="ENTERPRISE", tier=0, display_name=display
        )
        wallets[name] = opened.wallet.wallet_id
        if funding:
            await bank.transfer(_key("icbc-sz reserve"), RESERVE, wallets[name], "CNY", funding)
    console.print(
        f"ICBC opened wallets for the maker {wallets['seller']}, the buyer {wallets['buyer']} "
        f"and Bank A {wallets['financier']}, and funded the buyer and the bank"
    )
    # The buyer signs once; the platform sends, loses the reply, and sends the same bytes again.
    deposit = sign_transfer(
        _key("buyer"),
        TransferInstruction(
            source=wallets["buyer"],
            target=wallets["seller"],
            currency="CNY",
            amount_minor=5_000_00,
            submitter="platform/gba-trade",  # only the platform may submit it
            request_id="deposit-1127",
            expires_at_us=int((time.time() + 600) * 1e6),
            memo="deposit PO-2026-1127",
        ),
    )
    first = await platform.transfer_signed(deposit.payload, deposit.signature, "deposit-1127")
    again = await platform.transfer_signed(deposit.payload, deposit.signature, "deposit-1127")
    console.print(
        f"The buyer paid a 5,000.00 CNY deposit (journal entry {first.entry.seq}); the retry "
        f"with the same request id was a replay: {again.operation.replayed}, same entry "
        f"{again.entry.seq}"
    )
    try:
        await platform.transfer(
            _key("buyer"), wallets["buyer"], wallets["seller"], "CNY", 900_000_00
        )
    except FailedPrecondition as refused:
        detail = refused.detail(errors_pb2.InsufficientFunds)
        assert detail is not None
        console.print(
            f"An overdraft was refused: [bold]{refused.reason}[/] needed "
            f"{_cny(detail.needed_minor)}, available {_cny(detail.available_minor)}"
        )
    return wallets


async def act_two(cb: PaymentsClient, wallets: dict[str, str]) -> None:
    platform = cb.with_caller("platform/gba-trade")
    oracle = cb.with_caller(f"oracle/{CUSTOMS}")
    sensor_keys = await register_oracles(cb)
    contract = compile_source(DELIVERY_CONTRACT, "delivery.contract").contract
    assert contract is not None
    params = {
        "buyer": wallets["buyer"],
        "seller": wallets["seller"],
        "price": ("CNY", 125_000_00),
        "declaration": "D-2026-1127",
        "ship_by": dt.datetime.now(dt.UTC) + dt.timedelta(days=30),
    }
    reply = await platform.lock_payment(
        _key("buyer"), contract, params, send_source=DELIVERY_CONTRACT
    )
    payment = reply.payment
    console.print(
        f"The buyer locked 125,000.00 CNY in escrow: payment {payment.payment_id}, contract "
        f"{contract.hash[:12]}…, deadline in 30 days"
    )
    await cb.with_caller("financier/bank-a").fund_escrow(
        _key("financier"),
        wallets["financier"],
        payment.payment_id,
        "CNY",
        50_000_00,
        payer_key=_key("buyer"),  # the buyer invites Bank A: it co-signs the terms
        payer_wallet=wallets["buyer"],
        fee_minor=500_00,
        due_at_us=int((time.time() + 60 * 86_400) * 1e6),
    )
    console.print(
        "Bank A financed 40% of the escrow: 50,000.00 CNY to the buyer, owed back with a "
        "500.00 CNY fee"
    )

    async def attest(
        name: str,
        event_type: str,
        attributes: dict[str, str | int | bool],
        sign: Callable[[bytes], Signatures],
        submitter: PaymentsClient,
    ) -> str:
        now = int(time.time() * 1e6)
        attestation = build_attestation(
            oracle_set_version=await cb.oracle_set_version(),
            oracle=name,
            event_id=f"{event_type}:{payment.payment_id}",
            payment_id=payment.payment_id,
            contract_hash=contract.hash,
            event_type=event_type,
            attributes=attributes,
            observed_at_us=now - 60_000_000,
            issued_at_us=now,
            expires_at_us=now + 600_000_000,
        )
        ed25519, aggregate = sign(attestation.statement)
        reply = await submitter.submit_attestation(
            attestation.statement, attestation.payload, ed25519, aggregate
        )
        legs = [f"{_cny(leg.amount.amount_minor)} to the maker" for leg in reply.legs]
        return ", ".join(legs) or "nothing due yet"

    def by_customs(statement: bytes) -> Signatures:
        signed = sign_ed25519(statement, CUSTOMS, _key("customs"))
        return [(signed.signer_id, signed.signature)], None

    def by_sensors(statement: bytes) -> Signatures:
        signers = [(n, sensor_keys[n]) for n in ("iot.lax3.gate", "iot.lax3.rfid")]
        aggregate = sign_bls_aggregate(statement, signers)
        return [], (aggregate.signer_ids, aggregate.signature)

    def by_buyer(statement: bytes) -> Signatures:
        signed = sign_party(statement, wallets["buyer"], _key("buyer"))
        return [(signed.signer_id, signed.signature)], None

    cleared = await attest(
        "customs", "customs.cleared", {"declaration": "D-2026-1127"}, by_customs, oracle
    )
    console.print(f"Shenzhen customs attested the clearance: {cleared}")
    arrived = await attest("sensors", "iot.arrived", {"site": "LAX-FBA-3"}, by_sensors, oracle)
    console.print(f"Two of the three LAX-3 sensors confirmed arrival, one signature: {arrived}")
    received = await attest(
        "buyer", "receipt.signed", {"signer": wallets["buyer"]}, by_buyer, platform
    )
    console.print(f"The buyer signed the receipt: {received}")
    final = await platform.get_payment(payment.payment_id)
    state = payment_pb2.PaymentState.Name(final.state).removeprefix("PAYMENT_STATE_")
    console.print(
        f"Payment {final.payment_id}: [bold]{state}[/], released "
        f"{_cny(final.released.amount_minor)}, held {_cny(final.held.amount_minor)}; the buyer "
        "owes Bank A "
        f"{_cny(final.financing[0].principal.amount_minor + final.financing[0].fee.amount_minor)}"
    )


async def act_three(cb: SettlementsClient, wallets: dict[str, str]) -> None:
    bank = cb.with_caller(f"institution/{BANK}")
    platform = cb.with_caller("platform/gba-trade")
    # The core's participant on the bridge: its reserve is the gateway for cross-currency legs.
    await cb.register_institution(GATEWAY, "condpay bridge gateway", _key(GATEWAY).public_key)
    # Each currency is issued by its own central bank (HKD: the HKMA).
    hkma = cb.with_caller(f"central_bank/{CURRENCIES['HKD'].central_bank.lower()}")
    await cb.issue(GATEWAY, "CNY", 5_000_000_00, memo="bridge gateway liquidity")
    await hkma.issue(GATEWAY, "HKD", 5_000_000_00, memo="bridge gateway liquidity")
    await hkma.issue(BANK, "HKD", 1_000_000_00, memo="two-tier issuance")
    opened = await bank.open_wallet(
        BANK, _key("hk-buyer").public_key, kind="ENTERPRISE", tier=0, display_name="HK Trading"
    )
    wallets["hk_buyer"] = opened.wallet.wallet_id
    await bank.transfer(_key("icbc-sz reserve"), RESERVE, wallets["hk_buyer"], "HKD", 150_000_00)
    await cb.register_oracle(CARRIER, "ED25519", _key(CARRIER).public_key)
    issued = await platform.issue_title(
        _key(CARRIER),
        CARRIER,
        "bill_of_lading",
        wallets["seller"],
        40,
        b"eBL COSU-6401127 Yantian -> Hong Kong, 40 pallets LED drivers",
        description="40 pallets LED drivers",
    )
    title = issued.title
    console.print(
        f"COSCO issued an electronic bill of lading {title.title_id} for {title.units} pallets "
        f"to the maker; the HK trading house holds {format_money(150_000_00, 'HKD')}"
    )
    quote = await platform.quote_fx("HKD", "CNY", target_amount_minor=80_000_00)
    console.print(
        f"Quote {quote.quote_id}: {format_money(quote.source.amount_minor, 'HKD')} -> "
        f"{format_money(quote.target.amount_minor, 'CNY')} (spread "
        f"{format_money(quote.spread.amount_minor, 'HKD')}, rate "
        f"{quote.rate_numerator}/{quote.rate_denominator} fen per HK cent)"
    )
    settled = await platform.settle_dvp(
        (_key("seller"), wallets["seller"]),
        (_key("hk-buyer"), wallets["hk_buyer"]),
        title.title_id,
        25,
        quote,
    )
    s = settled.settlement
    state = settlement_pb2.SettlementState.Name(s.state).removeprefix("SETTLEMENT_STATE_")
    console.print(
        f"DvP {s.settlement_id}: [bold]{state}[/]; 25 pallets ({s.legs[-1].title_id}) to the "
        f"trading house, {format_money(s.receive.amount_minor, 'CNY')} to the maker, bridge "
        f"transfer {s.transfer_id} in block {s.finality.block_height} certified by "
        f"{', '.join(s.finality.signer_ids)}"
    )


def _sensor_key(name: str) -> int:
    return bls.secret_key(name.encode().ljust(32, b"*"))


def _loan_state(loan: finance_pb2.Loan) -> str:
    return finance_pb2.LoanState.Name(loan.state).removeprefix("LOAN_STATE_")


async def act_four(cb: SettlementsClient, wallets: dict[str, str]) -> None:
    platform = cb.with_caller("platform/gba-trade")
    bank_a = cb.with_caller("financier/bank-a")
    seller = (_key("seller"), wallets["seller"])
    for name in (WAREHOUSE, PRICE_FEED):
        await cb.register_oracle(name, "ED25519", _key(name).public_key)

    def expiry() -> int:
        return int((time.time() + 300) * 1e6)

    async def receipt(units: int, number: str) -> str:
        issued = await platform.issue_title(
            _key(WAREHOUSE),
            WAREHOUSE,
            "warehouse_receipt",
            wallets["seller"],
            units,
            f"warehouse receipt LAX3-{number}: {units} cartons of LED drivers".encode(),
        )
        return issued.title.title_id

    async def open_loan(title_id: str, principal: int, cure_period_s: int, name: str) -> str:
        terms = LoanTerms(
            borrower=wallets["seller"],
            financier=wallets["financier"],
            borrower_agent=platform.caller,
            financier_agent=bank_a.caller,
            title_id=title_id,
            currency="CNY",
            principal_minor=principal,
            fee_minor=principal // 100,
            rate_bps=1_200,
            maturity_at_us=int((time.time() + 90 * 86_400) * 1e6),
            unit_price_minor=100_00,
            haircut_bps=3_000,
            margin_call_bps=10_000,
            cure_period_s=cure_period_s,
            price_oracle=PRICE_FEED,
            warehouse_oracle=WAREHOUSE,
            sensor_oracles=",".join(SENSORS),
            sensor_threshold=2,
            disposal="SELL",
            submitter=bank_a.caller,
            request_id=name,
            expires_at_us=expiry(),
        )
        reply = await bank_a.api.finance.open_loan(
            open_loan_request(terms, _key("seller"), _key("financier"))
        )
        return reply.loan.loan_id

    async def statement(
        loan_id: str,
        event_id: str,
        kind: str,
        *,
        unit_price_minor: int = 0,
        title_id: str = "",
        units_present: int = 0,
        condition: str = "",
    ) -> CollateralStatement:
        now = int(time.time() * 1e6)
        return CollateralStatement(
            oracle_set_version=await cb.oracle_set_version(),
            loan_id=loan_id,
            event_id=event_id,
            kind=kind,
            title_id=title_id,
            currency="CNY",
            unit_price_minor=unit_price_minor,
            units_present=units_present,
            condition=condition,
            observed_at_us=now - 60_000_000,
            issued_at_us=now,
            expires_at_us=now + 600_000_000,
        )

    first = await receipt(1_000, "0419")
    loan_id = await open_loan(first, 50_000_00, 3_600, "inventory-loan-1")
    console.print(
        f"The LAX-3 warehouse issued the maker receipt {first} for 1,000 cartons at 100.00; "
        f"pledged to Bank A, it secures loan {loan_id}: 50,000.00 CNY paid to the maker in the "
        "same transaction (30% haircut, 1% fee, 12% a year)"
    )
    feed = cb.with_caller(f"oracle/{PRICE_FEED}")
    valuation = await statement(loan_id, "lax3-price-1", "VALUATION", unit_price_minor=60_00)
    called = await feed.api.finance.submit_collateral_attestation(
        collateral_request(
            valuation, request_id="price-1", ed25519=[(PRICE_FEED, _key(PRICE_FEED))]
        )
    )
    console.print(
        f"The price feed marked the cartons down to 60.00: lending value "
        f"{_cny(called.loan.lending_value_minor)} < owed {_cny(called.loan.owed_minor)}: "
        f"[bold]{_loan_state(called.loan)}[/], cure within the hour"
    )
    second = await receipt(500, "0420")
    cured = await platform.api.finance.pledge_more(
        pledge_more_request(
            seller,
            loan_id,
            second,
            submitter=platform.caller,
            request_id="pledge-1",
            expires_at_us=expiry(),
        )
    )
    owed = (await bank_a.api.finance.get_loan(finance_pb2.GetLoanRequest(loan_id=loan_id))).loan
    repaid = await platform.api.finance.repay(
        repay_request(
            seller,
            loan_id,
            owed.owed_minor,
            submitter=platform.caller,
            request_id="repay-1",
            expires_at_us=expiry(),
        )
    )
    console.print(
        f"The maker pledged receipt {second} (500 cartons): [bold]{_loan_state(cured.loan)}[/] "
        f"again; then repaid {_cny(owed.owed_minor)} (interest rounded up to the fen): "
        f"[bold]{_loan_state(repaid.loan)}[/], both receipts free"
    )

    spoiled_receipt = await receipt(600, "0421")
    spoiled_loan = await open_loan(spoiled_receipt, 30_000_00, 1, "inventory-loan-2")
    count = await statement(
        spoiled_loan,
        "lax3-count-1",
        "STOCK",
        title_id=spoiled_receipt,
        units_present=600,
        condition="SPOILED",
    )
    reported = await cb.with_caller(
        f"oracle/{WAREHOUSE}"
    ).api.finance.submit_collateral_attestation(
        collateral_request(
            count,
            request_id="count-1",
            ed25519=[(WAREHOUSE, _key(WAREHOUSE))],
            bls_signers=[(name, _sensor_key(name)) for name in SENSORS[:2]],
        )
    )
    console.print(
        f"Loan {spoiled_loan} (30,000.00 against 600 cartons, a one-second cure period): the "
        f"warehouse and two sensors counted the stock SPOILED: [bold]"
        f"{_loan_state(reported.loan)}[/] at once"
    )
    while True:
        await asyncio.sleep(0.25)
        loan = (
            await bank_a.api.finance.get_loan(finance_pb2.GetLoanRequest(loan_id=spoiled_loan))
        ).loan
        if loan.state != finance_pb2.LOAN_STATE_MARGIN_CALL:
            break
    console.print(
        f"No cure: the deadline sweep made it [bold]{_loan_state(loan)}[/] "
        f"({loan.terminal_reason}), owing {_cny(loan.owed_minor)}"
    )
    sale = await bank_a.api.finance.dispose_collateral(
        disposal_request(
            _key("financier"),
            (_key("hk-buyer"), wallets["hk_buyer"]),
            spoiled_loan,
            spoiled_receipt,
            pay=("HKD", 45_000_00),  # at market, at most this
            receive_minor=36_000_00,
            submitter=bank_a.caller,
            request_id="sale-1",
            expires_at_us=expiry(),
        )
    )
    settlement = sale.settlement
    while settlement.state not in (
        settlement_pb2.SETTLEMENT_STATE_FINAL,
        settlement_pb2.SETTLEMENT_STATE_ABORTED,
    ):
        await asyncio.sleep(0.1)
        settlement = await bank_a.get_settlement(settlement.settlement_id)
    sold = (
        await bank_a.api.finance.get_loan(finance_pb2.GetLoanRequest(loan_id=spoiled_loan))
    ).loan
    state = settlement_pb2.SettlementState.Name(settlement.state).removeprefix("SETTLEMENT_STATE_")
    console.print(
        f"Bank A sold the receipt to the HK trading house by DvP {settlement.settlement_id} "
        f"([bold]{state}[/]): {format_money(settlement.pay.amount_minor, 'HKD')} through the "
        f"bridge, 36,000.00 CNY split: {_cny(sold.recovered_minor)} to Bank A, "
        f"{_cny(sold.surplus_minor)} to the maker; the loan is [bold]{_loan_state(sold)}[/]"
    )


async def register_oracles(cb: PaymentsClient) -> dict[str, int]:
    await cb.register_oracle(CUSTOMS, "ED25519", _key("customs").public_key)
    sensor_keys = {}
    for name in SENSORS:
        sensor_keys[name] = _sensor_key(name)
        registration = bls_registration(sensor_keys[name])
        await cb.register_oracle(
            name,
            "BLS12_381",
            registration.public_key,
            proof_of_possession=registration.proof_of_possession,
        )
    console.print(
        "PBoC registered the oracles: Shenzhen customs (Ed25519) and the three LAX-3 sensors "
        "(BLS12-381, each with a checked proof of possession)"
    )
    return sensor_keys


async def show_ledger(cb: PaymentsClient, wallets: dict[str, str]) -> None:
    cb = cb.with_caller("auditor/demo")  # every currency (a central bank sees its own only)
    balances = Table(title="Balances")
    for column in ("wallet", "currency", "available", "held"):
        balances.add_column(column, justify="left" if column == "wallet" else "right")
    for wallet_id in (RESERVE, f"w_reserve.{GATEWAY}", *wallets.values()):
        wallet = await cb.get_wallet(wallet_id)
        for line in wallet.balances:
            if line.available.amount_minor or line.held.amount_minor:
                currency = line.available.currency
                balances.add_row(
                    f"{wallet.display_name} ({wallet_id})",
                    currency,
                    format_money(line.available.amount_minor, currency),
                    format_money(line.held.amount_minor, currency),
                )
    console.print(balances)

    journal = Table(title="Journal (hash-chained)")
    for column in ("seq", "kind", "postings", "memo", "hash"):
        journal.add_column(column)
    async for entry in cb.journal():
        postings = "\n".join(
            f"{p.account_id}{' held' if p.bucket == ledger_pb2.BUCKET_HELD else ''} "
            f"{'+' if p.amount.amount_minor > 0 else ''}"
            f"{format_money(p.amount.amount_minor, p.amount.currency)}"
            for p in entry.postings
        )
        kind = ledger_pb2.EntryKind.Name(entry.kind).removeprefix("ENTRY_KIND_")
        journal.add_row(str(entry.seq), kind, postings, entry.memo, entry.hash.hex()[:16] + "…")
    console.print(journal)

    for supply in (await cb.get_supply("CNY", "HKD")).supplies:
        currency = supply.issued.currency
        verdict = "[green]PASS[/]" if supply.consistent else "[red]FAIL[/]"
        console.print(
            f"Supply audit {currency}: issued "
            f"{format_money(supply.issued.amount_minor, currency)}, in circulation "
            f"{format_money(supply.in_circulation.amount_minor, currency)}, sum of balances "
            f"{format_money(supply.balances_sum.amount_minor, currency)}, held "
            f"{format_money(supply.held_sum.amount_minor, currency)}: {verdict}"
        )
        if not supply.consistent:
            raise SystemExit(1)


def main(*, server: str | None = None, database_url: str | None = None) -> int:
    if server:
        asyncio.run(story(server))
        return 0
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    url = database_url or f"sqlite:///{DEMO_DIR / 'condpay.db'}"
    process = ServerProcess(url, log_path=DEMO_DIR / "server.log")
    console.print(f"Starting condpay on embedded SQLite ({url}); server log: {process.log_path}")
    process.start()
    try:
        asyncio.run(_ready_then(process))
    finally:
        status = process.stop()
        console.print(f"Server stopped (exit status {status}).")
    return 0


async def _ready_then(process: ServerProcess) -> None:
    await process.wait_ready()
    await story(process.address)
