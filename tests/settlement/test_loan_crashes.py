"""Crashes between an inventory loan's default and the sale of its collateral (issue 16): a
``condpay serve`` child process on PostgreSQL (one process, its in-process bridge's state in
its log directory, so it survives the restarts too) killed and crashed at named points,
restarted on the same database each time, its clients resending every call with the same
request bytes until a definite answer.

Eight SELL loans, each against one warehouse receipt, with a one-second cure period on the real
clock. The warehouse reports each receipt's stock SPOILED: a margin call at once, and a second
later the deadline sweep defaults the loan (CURE_PERIOD_EXPIRED). Then the financier sells every
receipt by delivery versus payment: four in the loan's currency (CNY, one transaction) and four
to a buyer paying HKD at market through the bridge; half of the sales fetch more than the loan
owes (the surplus goes to the borrower), half less (the financier takes it all).

The server dies, in order:
- ``deadline_sweep``: the sweep found the first four loans due and has fired none;
- ``loan_default``: the batch that defaulted one or more of them committed (settlement/faults.py);
- SIGKILL: once the last four loans have defaulted, before any sale;
- ``after_commit_before_reply``: the first batch of the CNY sales committed (the receipt
  delivered, the proceeds split), nobody has its answer;
- ``pvp_before_decision``, ``pvp_after_decision``, ``pvp_between_commits``: a cross-currency
  sale at market has its bridge leg prepared and nothing in the core yet (the retry takes the
  next attempt, docs/settlement.md "At market") / its legs held and the decision recorded, no
  leg committed / the bridge's leg committed and the core's (the split of the proceeds, the
  receipt) not.
Each point is armed at probability 1 until it has crashed the server once (one incarnation may
carry several: it dies at whichever comes first), so every one of them certainly happens.

Then: nothing lost (every request id has its stored outcome, GetOperation gives back what the
client got, and asked again each is answered from storage); nothing applied twice (per loan one
DEFAULTED, one SOLD and one DISPOSED event; per sale one DVP entry; each receipt's history is
issued, pledged to the loan, pledged to its sale, delivered to the buyer); money exact (the
financier gets min(proceeds, owed at the default), the borrower the rest, the buyer pays the
sale's price, every balance what the outcomes add up to; the interest owed at the default
recomputed from the loan's own timestamps); on the bridge, every committed sale committed there
too, and the gateway's core + bridge position unchanged; the ledger audit (with its loan checks)
clean. Prints one LOAN-CRASHES line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from condpay.attest import bls_registration
from condpay.errors import ApiError, NotFound
from condpay.loans import collateral_request, disposal_request, open_loan_request
from condpay.v1 import asset_pb2, finance_pb2, settlement_pb2

from bridges import DEMO_BANK_BALANCE_MINOR, AccountKind, Bridge, TransferState
from bridges.errors import BridgeError
from settlement.ledger import loan_math
from settlement.ledger.commands import reserve_wallet_id
from settlement.ledger.loans import SWEEPER, derive_loan_id
from settlement.ledger.settlements import derive_settlement_id
from tests.payments.fleet import (
    TRANSIENT,
    Answer,
    Call,
    Connection,
    RestartableServer,
    Sender,
    ServerSupervisor,
    audit,
)
from tests.payments.test_crashes import stored_answer
from tests.settlement.world import issue_request, key
from tests.support.harness import AUDITOR, central_bank_of
from wallets import bls
from wallets.loan_documents import CollateralStatement, LoanTerms

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(180)]

T = TypeVar("T")
CENTRAL_BANK = "central_bank/pboc"
PLATFORM = "platform/gba-trade"  # the borrower's agent
FINANCIER = "financier/bank-a"  # the financier's agent
BANK = "icbc-sz"
GATEWAY = "CONDPAY"  # the core's participant on its in-process bridge (the default)
GATEWAY_WALLET = reserve_wallet_id(GATEWAY)
WAREHOUSE = "warehouse.fba-ont8"
PRICE = "price.sz-electronics"
SENSORS = ("sensor.ont8-a", "sensor.ont8-b", "sensor.ont8-c")
CURRENCIES = ("CNY", "HKD")
RESERVE_MINOR = 10_000_000_00
FUNDING = {
    ("financier", "CNY"): 1_000_000_00,
    ("seller", "CNY"): 10_000_00,
    ("buyer", "CNY"): 500_000_00,
    ("buyer", "HKD"): 500_000_00,
}
LOANS = 8
PRINCIPAL, FEE, RATE_BPS = 50_000_00, 500_00, 1_200
UNITS, UNIT_PRICE = 1_000, 100_00  # lends 70,000.00 at a 30% haircut
# What each sale brings in, in the loan's currency: more than owed (a surplus), or less.
PROCEEDS = (80_000_00, 40_000_00, 60_000_00, 45_000_00)
PAY_AT_MOST_HKD = 100_000_00
SALE_POINTS = (
    "after_commit_before_reply",
    "pvp_before_decision",
    "pvp_after_decision",
    "pvp_between_commits",
)
ALL_POINTS = frozenset({"deadline_sweep", "loan_default", *SALE_POINTS})
SECOND_US = 1_000_000


# -- the server, restarted whenever it dies --------------------------------------------------------
class Supervisor(ServerSupervisor):
    """Each start carries the fault points still armed, each at probability 1 until it has
    crashed the server once (the crash is read back from what the dying process printed)."""

    def __init__(self, server: RestartableServer) -> None:
        super().__init__(server)
        self.armed: set[str] = set()

    def _env(self) -> dict[str, str]:
        self.armed -= set(self.server.fault_crashes())
        points = ",".join(f"{p}=1" for p in sorted(self.armed))
        return {"CONDPAY_FAULT_POINTS": points, "CONDPAY_FAULT_SEED": str(self.starts)}

    async def start(self, armed: Iterable[str] = ()) -> None:  # type: ignore[override]
        self.armed = set(armed)
        await super().start()

    async def kill(self, down_seconds: float = 0.0, arm: Iterable[str] = ()) -> None:
        """SIGKILL; then a new process on the same database and address, with ``arm`` armed."""
        self.armed |= set(arm)
        await super().kill(down_seconds)


# -- the world -------------------------------------------------------------------------------------
@dataclass
class Loan:
    index: int
    receipt: str = ""
    loan_id: str = ""
    request_id: str = ""
    calls: list[Call] = field(default_factory=list)
    sales: list[str] = field(default_factory=list)  # settlement ids, in order
    answers: list[Answer] = field(default_factory=list)  # DisposeCollateral's

    @property
    def currency_paid(self) -> str:
        return "CNY" if self.index < LOANS // 2 else "HKD"

    @property
    def proceeds(self) -> int:
        return PROCEEDS[self.index % len(PROCEEDS)]


@dataclass
class World:
    connection: Connection
    sender: Sender
    wallets: dict[str, str] = field(default_factory=dict)
    sensor_keys: dict[str, int] = field(default_factory=dict)
    oracle_set_version: int = 0
    loans: list[Loan] = field(default_factory=list)
    answers: dict[tuple[str, str], Answer] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    flips: list[str] = field(default_factory=list)

    def client(self, caller: str) -> Any:
        return self.connection.client(caller)

    async def send(self, call: Call) -> Answer:
        """Until a definite answer, the same bytes every time; the first answer is kept."""
        self.calls.append(call)
        answer = await self.sender.send(self.connection, call)
        first = self.answers.setdefault(call.key, answer)
        if not first.same_as(answer):
            self.flips.append(f"{call.request_id}: {first} then {answer}")
        return answer

    async def read(self, method: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``method(*args)``, a read, retried across restarts."""
        give_up = time.monotonic() + 60
        while True:
            try:
                return await method(*args)
            except ApiError as error:
                if error.code not in TRANSIENT or time.monotonic() > give_up:
                    raise
                await asyncio.sleep(0.1)

    async def loan(self, loan_id: str) -> finance_pb2.GetLoanResponse:
        return await self.read(
            self.client(AUDITOR).api.finance.get_loan, finance_pb2.GetLoanRequest(loan_id=loan_id)
        )


async def build_world(world: World) -> None:
    """Institutions (the bank and the gateway, reserves in CNY and HKD), the seller, the
    financier and a buyer, funded; the warehouse and its sensors; a receipt per loan and the
    loans, opened. Fixed request ids throughout."""
    cb = world.client(CENTRAL_BANK)
    for institution in (BANK, GATEWAY):
        await cb.register_institution(
            institution, institution.upper(), key(institution).public_key, request_id=institution
        )
        for currency in CURRENCIES:
            await world.client(central_bank_of(currency)).issue(
                institution, currency, RESERVE_MINOR, request_id=f"{institution}-{currency}"
            )
    bank = world.client(f"institution/{BANK}")
    names = ("seller", "financier", "buyer")
    opened = await asyncio.gather(
        *(
            bank.open_wallet(
                BANK, key(name).public_key, kind="ENTERPRISE", tier=0, request_id=f"open-{name}"
            )
            for name in names
        )
    )
    world.wallets = {name: o.wallet.wallet_id for name, o in zip(names, opened, strict=True)}
    await asyncio.gather(
        *(
            bank.transfer(
                key(BANK),
                reserve_wallet_id(BANK),
                world.wallets[name],
                currency,
                amount,
                request_id=f"fund-{name}-{currency}",
            )
            for (name, currency), amount in FUNDING.items()
        )
    )
    for oracle in (WAREHOUSE, PRICE):
        await cb.register_oracle(oracle, "ED25519", key(oracle).public_key, request_id=oracle)
    for name in SENSORS:
        secret = bls.secret_key(name.encode().ljust(32, b"*"))
        registration = bls_registration(secret)
        await cb.register_oracle(
            name,
            "BLS12_381",
            registration.public_key,
            proof_of_possession=registration.proof_of_possession,
            request_id=name,
        )
        world.sensor_keys[name] = secret
    world.oracle_set_version = await cb.oracle_set_version()
    world.loans = [Loan(i, request_id=f"loan-{i}") for i in range(LOANS)]
    await asyncio.gather(*(open_loan(world, loan) for loan in world.loans))


async def open_loan(world: World, loan: Loan) -> None:
    """The warehouse issues the seller a receipt for 1,000 units; the seller borrows 50,000.00
    against it from the financier (SELL on default, a one-second cure period)."""
    issue = issue_request(
        key(WAREHOUSE),
        WAREHOUSE,
        world.wallets["seller"],
        UNITS,
        f"warehouse receipt R-{loan.index}: {UNITS} cartons of LED drivers, ONT8".encode(),
        request_id=f"receipt-{loan.index}",
        kind="warehouse_receipt",
    )
    loan.receipt = (await world.client(PLATFORM).send(issue)).title.title_id
    now = time.time_ns() // 1000
    terms = LoanTerms(
        borrower=world.wallets["seller"],
        financier=world.wallets["financier"],
        borrower_agent=PLATFORM,
        financier_agent=FINANCIER,
        title_id=loan.receipt,
        currency="CNY",
        principal_minor=PRINCIPAL,
        fee_minor=FEE,
        rate_bps=RATE_BPS,
        maturity_at_us=now + 30 * 86_400 * SECOND_US,
        unit_price_minor=UNIT_PRICE,
        haircut_bps=3_000,
        margin_call_bps=10_000,
        cure_period_s=1,
        price_oracle=PRICE,
        warehouse_oracle=WAREHOUSE,
        sensor_oracles=",".join(SENSORS),
        sensor_threshold=2,
        disposal="SELL",
        submitter=FINANCIER,
        request_id=loan.request_id,
        expires_at_us=now + 600 * SECOND_US,
    )
    request = open_loan_request(terms, key("seller"), key("financier"))
    opened = await world.send(
        Call(FINANCIER, "finance", "OpenLoan", request, loan.request_id, "open")
    )
    assert opened.ok, opened
    loan.loan_id = derive_loan_id(FINANCIER, loan.request_id)


def spoiled_call(world: World, loan: Loan) -> Call:
    """The warehouse and two sensors report the receipt's stock spoiled (relayed by the
    financier's agent): a margin call at once, the loan due a second later."""
    now = time.time_ns() // 1000
    statement = CollateralStatement(
        oracle_set_version=world.oracle_set_version,
        loan_id=loan.loan_id,
        event_id=f"spoiled-{loan.index}",
        kind="STOCK",
        title_id=loan.receipt,
        currency="CNY",
        unit_price_minor=0,
        units_present=UNITS,
        condition="SPOILED",
        observed_at_us=now - SECOND_US,
        issued_at_us=now,
        expires_at_us=now + 600 * SECOND_US,
    )
    request = collateral_request(
        statement,
        request_id=f"spoiled-{loan.index}",
        ed25519=[(WAREHOUSE, key(WAREHOUSE))],
        bls_signers=[(s, world.sensor_keys[s]) for s in SENSORS[:2]],
    )
    return Call(FINANCIER, "finance", "SubmitCollateralAttestation", request, loan.loan_id, "stock")


def sale_call(world: World, loan: Loan) -> Call:
    """The financier sells the receipt to the buyer: in CNY, the proceeds; in HKD, at market,
    for the proceeds in CNY at most PAY_AT_MOST_HKD. A new request id for each attempt."""
    request_id = f"sale-{loan.index}-{len(loan.sales) + 1}"
    pay = ("CNY", loan.proceeds) if loan.currency_paid == "CNY" else ("HKD", PAY_AT_MOST_HKD)
    request = disposal_request(
        key("financier"),
        (key("buyer"), world.wallets["buyer"]),
        loan.loan_id,
        loan.receipt,
        pay=pay,
        receive_minor=loan.proceeds,
        submitter=FINANCIER,
        request_id=request_id,
        expires_at_us=time.time_ns() // 1000 + 600 * SECOND_US,
    )
    loan.sales.append(derive_settlement_id(FINANCIER, request_id))
    return Call(FINANCIER, "finance", "DisposeCollateral", request, loan.loan_id, "sale")


async def margin_call(world: World, loans: list[Loan]) -> None:
    answers = await asyncio.gather(*(world.send(spoiled_call(world, loan)) for loan in loans))
    for loan, answer in zip(loans, answers, strict=True):
        assert answer.ok, (loan.index, answer)
        assert answer.reply.loan.state == finance_pb2.LOAN_STATE_MARGIN_CALL


async def wait_for(
    world: World, loans: list[Loan], done: Callable[[finance_pb2.Loan], bool], *, at_least: int
) -> None:
    """Until ``done`` holds of ``at_least`` of ``loans`` (reads retried across restarts)."""
    give_up = time.monotonic() + 60
    while True:
        found = [(await world.loan(loan.loan_id)).loan for loan in loans]
        if sum(map(done, found)) >= at_least:
            return
        assert time.monotonic() < give_up, [finance_pb2.LoanState.Name(f.state) for f in found]
        await asyncio.sleep(0.1)


def defaulted(loan: finance_pb2.Loan) -> bool:
    return loan.state == finance_pb2.LOAN_STATE_DEFAULTED


async def sell(world: World, loan: Loan) -> None:
    """Sell the receipt until a sale commits: each sale's DisposeCollateral until a definite
    answer, then its settlement until FINAL or ABORTED (an aborted one puts the receipt back in
    the loan's pledge, and the financier sells it again)."""
    while True:
        answer = await world.send(sale_call(world, loan))
        loan.answers.append(answer)
        assert answer.ok, (loan.index, answer)
        settlement_id = loan.sales[-1]
        assert answer.reply.settlement.settlement_id == settlement_id
        give_up = time.monotonic() + 60
        while True:
            found = await world.read(
                world.client(AUDITOR).api.settlements.get_settlement,
                settlement_pb2.GetSettlementRequest(settlement_id=settlement_id),
            )
            state = settlement_pb2.SettlementState.Name(found.settlement.state)
            if state in ("SETTLEMENT_STATE_FINAL", "SETTLEMENT_STATE_ABORTED"):
                break
            assert time.monotonic() < give_up, (loan.index, state)
            await asyncio.sleep(0.1)
        if state == "SETTLEMENT_STATE_FINAL":
            return
        assert len(loan.sales) < 4, f"loan {loan.index}: every sale aborted"


# -- the checks ------------------------------------------------------------------------------------


def same_outcome(call: Call, first: Answer, other: Answer) -> bool:
    """A sale's reply shows its settlement as it was when answered (a cross-currency one moves
    on): the same settlement is the same outcome. Anything else must be equal."""
    if call.rpc == "DisposeCollateral" and first.ok and other.ok:
        return bool(first.reply.settlement.settlement_id == other.reply.settlement.settlement_id)
    return first.same_as(other)


async def check_nothing_lost_or_flipped(world: World) -> None:
    lost, differs, flips, fresh = [], [], [], []
    for call in {c.key: c for c in world.calls}.values():
        first = world.answers[call.key]
        try:
            operation = await world.read(world.client(call.caller).get_operation, call.request_id)
        except NotFound:
            lost.append(call.request_id)
            continue
        stored = stored_answer(operation, first)
        if not same_outcome(call, first, stored):
            differs.append(f"{call.request_id}: answered {first}, stored {stored}")
        again = await world.sender.send(world.connection, call)
        if not same_outcome(call, first, again):
            flips.append(f"{call.request_id}: answered {first}, now {again}")
        if not again.replayed:
            fresh.append(call.request_id)
    assert not lost, f"request ids without a stored outcome: {lost}"
    assert not differs, "stored outcomes differ from the answers:\n" + "\n".join(differs)
    assert not world.flips, "answers changed between retries:\n" + "\n".join(world.flips)
    assert not flips, "answers changed when asked again:\n" + "\n".join(flips)
    assert not fresh, f"asked again, not answered from storage: {fresh}"


async def check_loans(world: World, database_url: str) -> dict[str, int]:
    """Each loan defaulted once, sold once, disposed once; its receipt's history; the journal's
    entries per sale; the money. Returns the expected balances' figures for the summary."""
    problems: list[str] = []
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT settlement_id, origin_loan_id, state, pay_currency, pay_minor, receive_minor "
            "FROM settlements"
        )
        entries = await conn.fetch(
            "SELECT kind, memo FROM journal_entries WHERE kind IN ('HOLD', 'UNHOLD', 'DVP', 'PVP')"
        )
    finally:
        await conn.close()
    settlements = {r["settlement_id"]: r for r in rows}
    by_settlement: dict[str, Counter[str]] = {}
    for entry in entries:
        by_settlement.setdefault(entry["memo"].split()[1], Counter())[entry["kind"]] += 1
    expected = {(name, c): amount for (name, c), amount in FUNDING.items()}
    expected.setdefault(("financier", "HKD"), 0)
    expected.setdefault(("seller", "HKD"), 0)
    sold_by_loan = Counter(r["origin_loan_id"] for r in rows if r["state"] == "FINAL")
    for loan in world.loans:
        found = await world.loan(loan.loan_id)
        kinds = [e.kind for e in found.events]
        want = ["OPENED", "STOCK", "MARGIN_CALL", "DEFAULTED", "SOLD", "DISPOSED"]
        if kinds != want:
            problems.append(f"loan {loan.index}: events {kinds}")
            continue
        opened, default = found.events[0], found.events[3]
        if (default.by, default.detail) != (SWEEPER, "CURE_PERIOD_EXPIRED"):
            problems.append(f"loan {loan.index}: defaulted by {default.by} ({default.detail})")
        # What was owed at the default, from the loan's own times: principal, fee and the
        # interest from opening to the default (carried exactly between), rounded up.
        elapsed_us = default.at.ToMicroseconds() - opened.at.ToMicroseconds()
        owed = (
            PRINCIPAL
            + FEE
            + loan_math.interest_due(*loan_math.accrue(PRINCIPAL, RATE_BPS, elapsed_us, 0))
        )
        if default.amount_minor != owed:
            problems.append(
                f"loan {loan.index}: owed {default.amount_minor} at the default, {owed}"
            )
        to_financier = min(loan.proceeds, owed)
        surplus = loan.proceeds - to_financier
        state = found.loan
        if (state.state, state.recovered_minor, state.surplus_minor, len(state.collateral)) != (
            finance_pb2.LOAN_STATE_DISPOSED,
            to_financier,
            surplus,
            0,
        ):
            problems.append(
                f"loan {loan.index}: {finance_pb2.LoanState.Name(state.state)}, recovered "
                f"{state.recovered_minor} (want {to_financier}), surplus {state.surplus_minor} "
                f"(want {surplus}), {len(state.collateral)} receipts still pledged"
            )
        if sold_by_loan[loan.loan_id] != 1:
            problems.append(f"loan {loan.index}: {sold_by_loan[loan.loan_id]} sales FINAL")
        expected[("financier", "CNY")] += to_financier - PRINCIPAL
        expected[("seller", "CNY")] += PRINCIPAL + surplus
        for settlement_id in loan.sales:
            s = settlements.get(settlement_id)
            if s is None:
                problems.append(f"loan {loan.index}: sale {settlement_id} was never created")
                continue
            final = s["state"] == "FINAL"
            if s["origin_loan_id"] != loan.loan_id or s["state"] not in ("FINAL", "ABORTED"):
                problems.append(f"loan {loan.index}: sale {settlement_id} {dict(s)}")
            if loan.currency_paid == "CNY":
                want_entries = Counter({"DVP": 1}) if final else Counter()
            else:
                want_entries = Counter({"HOLD": 1, "DVP" if final else "UNHOLD": 1})
            got = by_settlement.get(settlement_id, Counter())
            if got != want_entries:
                problems.append(f"loan {loan.index}: sale {settlement_id} entries {dict(got)}")
            if final:
                expected[("buyer", s["pay_currency"])] -= s["pay_minor"]
        reply = loan.answers[-1].reply.settlement
        if reply.receive.amount_minor != loan.proceeds:
            problems.append(f"loan {loan.index}: the sale's reply {reply}")
        title = await world.read(
            world.client(AUDITOR).api.assets.get_title,
            asset_pb2.GetTitleRequest(title_id=loan.receipt),
        )
        aborted = len(loan.sales) - 1
        moves = [m.kind for m in title.moves]
        want_moves = ["ISSUED", "PLEDGED", *(["PLEDGED", "PLEDGED"] * aborted), "PLEDGED"]
        if moves != [*want_moves, "DELIVERED"]:
            problems.append(f"loan {loan.index}: receipt moves {moves}")
        if (title.title.holder_wallet_id, title.title.pledged_to) != (world.wallets["buyer"], ""):
            problems.append(f"loan {loan.index}: receipt {title.title}")
    auditor = world.client(AUDITOR)
    for (name, currency), amount in sorted(expected.items()):
        wallet = await world.read(auditor.get_wallet, world.wallets[name])
        line = next((b for b in wallet.balances if b.available.currency == currency), None)
        have = (line.available.amount_minor, line.held.amount_minor) if line else (0, 0)
        if have != (amount, 0):
            problems.append(f"{name} {currency}: {have}, the outcomes say {amount}")
    assert not problems, "loan check failed:\n" + "\n".join(problems)
    return {"sales": len(settlements)}


async def check_bridge(state: Path, database_url: str) -> None:
    """With the core stopped, its in-process bridge's state: every cross-currency sale the core
    committed is committed there (and no other), the gateway's core + bridge position in each
    currency unchanged, the bridge's own audit clean."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT settlement_id, state, transfer_id FROM settlements WHERE transfer_id != ''"
        )
        core = await conn.fetch(
            "SELECT currency, available + held AS total FROM balances WHERE wallet_id = $1",
            GATEWAY_WALLET,
        )
    finally:
        await conn.close()
    bridge = await Bridge.open(state)
    try:
        problems = []
        for r in rows:
            try:
                there = (await bridge.status(f"{GATEWAY}:{r['transfer_id']}")).state
            except BridgeError:  # never reached the bridge
                there = None
            committed = r["state"] in ("COMMITTED", "FINAL")
            if committed != (there is TransferState.COMMITTED):
                problems.append(f"{r['settlement_id']}: core {r['state']}, bridge {there}")
        on_bridge = {
            b.currency: b.balance_minor
            for b in await bridge.balances(GATEWAY)
            if b.kind is AccountKind.SETTLEMENT
        }
        on_core = {r["currency"]: r["total"] for r in core}
        for currency in CURRENCIES:
            position = on_core.get(currency, 0) + on_bridge.get(currency, 0)
            if position != RESERVE_MINOR + DEMO_BANK_BALANCE_MINOR:
                problems.append(f"gateway {currency}: core + bridge = {position}")
        report = await bridge.audit()
        problems += [f"bridge audit: {p}" for p in report.problems]
    finally:
        await bridge.close()
    assert rows, "no sale went through the bridge"
    assert not problems, "bridge check failed:\n" + "\n".join(problems)


# -- the test --------------------------------------------------------------------------------------
async def test_kills_between_default_and_disposal_lose_nothing_and_apply_nothing_twice(
    pg_url: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    server = RestartableServer(pg_url, tmp_path)
    supervisor = Supervisor(server)
    connection: Connection | None = None
    try:
        # The sweep's points armed from the start: nothing is due until the first margin call.
        await supervisor.start({"deadline_sweep", "loan_default"})
        connection = Connection(server.address)
        world = World(connection, Sender(definite_within_seconds=90))
        await build_world(world)
        first, last = world.loans[: LOANS // 2], world.loans[LOANS // 2 :]

        # The first four: the sweep dies having found them due, then again right after the
        # default of one or more of them committed; the next incarnation defaults the rest.
        await margin_call(world, first)
        await wait_for(world, first, defaulted, at_least=len(first))
        assert set(server.fault_crashes()) == {"deadline_sweep", "loan_default"}

        # The last four: SIGKILL once they have all defaulted (nothing of a sale yet); the next
        # incarnation carries every sale point.
        await margin_call(world, last)
        await wait_for(world, last, defaulted, at_least=len(last))
        await supervisor.kill(arm=SALE_POINTS)

        # The receipts sold: four in CNY at once (the first batch of them commits, and the
        # server dies before anyone hears: their retries are answered from storage), then four
        # in HKD at market at once, through each of the PvP points in turn.
        await asyncio.gather(*(sell(world, loan) for loan in world.loans[: LOANS // 2]))
        assert "after_commit_before_reply" in server.fault_crashes()
        assert any(a.replayed for loan in world.loans[: LOANS // 2] for a in loan.answers)
        await asyncio.gather(*(sell(world, loan) for loan in world.loans[LOANS // 2 :]))
        crashed_at = server.fault_crashes()
        assert set(crashed_at) == ALL_POINTS, crashed_at
        assert all(n == 1 for n in crashed_at.values()), crashed_at
        assert supervisor.crashes == len(ALL_POINTS)
        assert supervisor.kills == 1
        assert supervisor.other_deaths == []
        assert server.log_problems() == []

        await check_nothing_lost_or_flipped(world)
        figures = await check_loans(world, pg_url)
        report = await audit(pg_url)
        assert report.ok, report.failures
        await supervisor.close()
        await check_bridge(tmp_path / "var" / "bridge.db", pg_url)
        replayed = sum(a.replayed for a in world.answers.values())
        aborted = sum(len(loan.sales) - 1 for loan in world.loans)
        print(
            f"\nLOAN-CRASHES loans={LOANS} kills={supervisor.kills} "
            f"fault-crashes={supervisor.crashes} {dict(sorted(crashed_at.items()))} "
            f"starts={supervisor.starts} operations={len(world.answers)} sales={figures['sales']} "
            f"(aborted and sold again: {aborted}) rpc attempts={world.sender.attempts} "
            f"retries={world.sender.retries + connection.retries} first answers replayed from "
            f"storage={replayed}; lost=0 duplicated=0 flips=0; "
            f"seconds={time.monotonic() - started:.1f}"
        )
    finally:
        if connection is not None:
            await connection.close()
        with contextlib.suppress(Exception):
            await supervisor.close()
