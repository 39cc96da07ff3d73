"""The simulator's auditor: reads the core (and the bridge) only through their public APIs, as an
auditor (``auditor/sim``: a central bank sees only its own currencies), and says whether the
ledger is whole.

    auditor = Auditor(core, bridge, expectations)   # core: a SettlementsClient (any caller)
    await auditor.baseline()                        # before the traffic: the gateway's positions
    run.timeline.append(await auditor.sample(at_s, run.settlements_total))  # cheap
    run.invariants += await auditor.check(final=True)

Each invariant has a stable name and fails with a detail naming the first offending items:

- ``supply_equals_balances``: per currency, issued − redeemed = the sum of all balances
  (GetSupply's figures recomputed, its ``consistent`` not trusted), and replaying the journal up
  to GetSupply's seq gives the same circulation, held sum and issuance account; every entry
  balances and every ``balance_after`` follows. At the final check also every wallet the journal
  names (GetWallet) against its replay, which catches money moved between wallets without an
  entry.
- ``bridge_supply_equals_balances``: the same on the bridge: ``supply()``, the sum of its
  accounts' balances, and its own ``audit()``.
- ``gateway_mirror`` (final check only): per currency, the gateway's core reserve plus its
  bridge account equals the baseline: a PvP moves money out of one and into the other, so a leg
  applied twice or lost shows. (The gateway itself must not be issued to or redeemed from after
  the baseline.)
- ``held_equals_open_escrows``: per currency, GetSupply's held sum = what open payments hold +
  what undecided settlements hold (by state, as docs/settlement.md describes); a terminal
  payment holds nothing; at the end every settlement is FINAL or ABORTED.
- ``payments_terminal_or_pending_with_reason``: at the end every payment is terminal, or open
  with its deadline ahead and a reason in ``Expectations.pending_reasons`` (the detail counts the
  reasons); during the run no open payment is overdue by more than a grace.
- ``no_leg_paid_twice``: escrow = held + released + refunded; the legs add up to released and
  refunded; every leg names one RELEASE/REFUND entry that moves exactly it (or, paid in another
  currency, one payout settlement for exactly its amount) and every such entry pays a recorded
  leg; no leg is paid by two entries (an entry's memo is ``<payment id> <leg id>``: request ids
  alone may repeat, as one attestation can fire several legs), no settlement is committed by two
  PVP/DVP entries nor any request writes two; at the end each committed settlement has exactly
  one.
- ``forged_and_replayed_refused``: every attestation sent to be refused was refused, and its
  payment records a forged event (which carries an event id of its own) never and a replayed
  one at most once.
- ``financier_claims_consistent``: refunded ≤ principal, collected ≤ assigned, advance ≤
  assigned; the refund legs paid to each financier add up to its financings' refunded, the legs
  paid to an assignee to its collected; the journal's FUND and ADVANCE entries are exactly the
  recorded principals and advances (by request id, financier, payer or payee, amount).
- ``loans_repaid_disposed_or_covered``: every inventory loan (ListLoans) is REPAID (nothing
  owed, nothing pledged), DISPOSED (nothing pledged; a RETAIN loan recovered nothing here, a
  sale's surplus only once the financier got all that was owed), or live and covered: OPEN with
  no stock SPOILED or MISSING and owed × 10,000 ≤ lending value × margin_call_bps, before its
  maturity; MARGIN_CALL before its cure deadline. At the final check no loan is DEFAULTED with
  its collateral unsold; during the run a deadline may be past by the grace.
- ``no_receipt_pledged_twice``: no receipt is in two loans' collateral; and at the final check
  each receipt a live loan holds is, as its borrower's titles list it (ListTitles, a call per
  borrower: too dear for every round), active, held by the borrower, pledged to that loan, with
  the units the loan records, and every title those lists show pledged to a loan is in that
  loan's collateral.
- ``loan_claims_match_journal``: per loan, exactly one LOAN entry moving the principal from the
  financier to the borrower; its LOAN_REPAYMENT entries paying the financier what the loan
  records repaid; the DVP entries of its sales paying the financier what it records recovered
  and the borrower its surplus; and no LOAN or LOAN_REPAYMENT entry for a loan that does not
  exist. Compared when nothing committed during the read, and at the final check.
- ``journal_hash_chain_intact``: the whole journal verifies with
  :func:`condpay.journal.verify_entries` (gap-free seqs from 1, each hash chained) and reaches
  GetSupply's head. During the run each check reads, replays and chains only the entries after
  the last check's (:class:`_JournalProgress`); the final check reads and verifies them all.

One check reads everything once, in this order, so that comparisons across reads hold while the
ledger keeps moving: GetSupply (its ``as_of_seq`` is *s0*), every payment (and the bridge), then
every settlement and the whole journal (at the final check also every wallet), then GetSupply
again (*s1*). Every record read after *s0* includes whatever the entries up to *s0* did, and the
journal, read after the payments, includes every entry a payment's leg or financing names. Sums
over different reads (the held sum against the open escrows and settlements) are compared only
when nothing committed during the read (*s0* = *s1*) or at the final check, which the runner
makes when the traffic has stopped; the wallets only when nothing committed.

Costs: the pages are as large as the API allows (journal 1000, settlements 500, payments 500
in the BASIC view: no contract source, no attestations; the payments a refused attestation
named are read again in the FULL view, READS_IN_FLIGHT at a time); about 5,000 payments and
50,000 entries take a few seconds, mostly the server's reads. :meth:`Auditor.sample` makes one
GetSupply call.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

from condpay import journal
from condpay.client import SettlementsClient
from condpay.errors import NotFound
from condpay.v1 import (
    asset_pb2,
    central_bank_pb2,
    finance_pb2,
    ledger_pb2,
    payment_pb2,
    settlement_pb2,
    wallet_pb2,
)

from bridges import AccountBalance, AccountKind, AuditReport, CurrencySupply
from sim_central_bank.bounded import gathered
from sim_central_bank.record import (
    ACCEPTED,
    Expectations,
    InvariantResult,
    RefusedAttestation,
    TimelineSample,
)

T = TypeVar("T")
JOURNAL_PAGE: Final = 1000  # ListJournal's maximum
SETTLEMENTS_PAGE: Final = 500  # ListSettlements' maximum
PAYMENTS_PAGE: Final = 500  # ListPayments' maximum (BASIC: a few hundred bytes a payment)
LOANS_PAGE: Final = 500
TITLES_PAGE: Final = 500
# Single reads (the final check's GetWallet of every wallet the journal names, the FULL payments
# the forged-and-replayed check reads) this many at a time.
READS_IN_FLIGHT: Final = 32
# How many offending items a failed invariant names.
NAMED_MAX: Final = 5

SUPPLY: Final = "supply_equals_balances"
BRIDGE_SUPPLY: Final = "bridge_supply_equals_balances"
GATEWAY_MIRROR: Final = "gateway_mirror"
HELD: Final = "held_equals_open_escrows"
PAYMENTS_DONE: Final = "payments_terminal_or_pending_with_reason"
NO_LEG_TWICE: Final = "no_leg_paid_twice"
REFUSED: Final = "forged_and_replayed_refused"
FINANCIERS: Final = "financier_claims_consistent"
LOANS: Final = "loans_repaid_disposed_or_covered"
RECEIPTS: Final = "no_receipt_pledged_twice"
LOAN_JOURNAL: Final = "loan_claims_match_journal"
CHAIN: Final = "journal_hash_chain_intact"
#: Every invariant's name, in the order :meth:`Auditor.check` reports them.
INVARIANTS: Final = (
    SUPPLY,
    BRIDGE_SUPPLY,
    GATEWAY_MIRROR,
    HELD,
    PAYMENTS_DONE,
    NO_LEG_TWICE,
    REFUSED,
    FINANCIERS,
    LOANS,
    RECEIPTS,
    LOAN_JOURNAL,
    CHAIN,
)

_OPEN_PAYMENTS: Final = frozenset(
    {payment_pb2.PAYMENT_STATE_LOCKED, payment_pb2.PAYMENT_STATE_PARTIALLY_RELEASED}
)
_DONE_SETTLEMENTS: Final = frozenset(
    {settlement_pb2.SETTLEMENT_STATE_FINAL, settlement_pb2.SETTLEMENT_STATE_ABORTED}
)
# What a settlement holds, by (is a payout, state): (the payer's pay amount, the gateway's
# receive amount). docs/settlement.md: HOLD holds both sides (a payout's payer side is held since
# its leg left the escrow), an ABORT's UNHOLD gives back the gateway's side and, for a standalone
# settlement, the payer's; a commit moves both.
_HOLDS: Final = {
    (False, settlement_pb2.SETTLEMENT_STATE_PREPARED): (True, True),
    (False, settlement_pb2.SETTLEMENT_STATE_COMMITTING): (True, True),
    (True, settlement_pb2.SETTLEMENT_STATE_PENDING): (True, False),
    (True, settlement_pb2.SETTLEMENT_STATE_PREPARED): (True, True),
    (True, settlement_pb2.SETTLEMENT_STATE_COMMITTING): (True, True),
    (True, settlement_pb2.SETTLEMENT_STATE_ABORTING): (True, False),
}
_LEG_ENTRIES: Final = frozenset({ledger_pb2.ENTRY_KIND_RELEASE, ledger_pb2.ENTRY_KIND_REFUND})
_SETTLEMENT_ENTRIES: Final = frozenset({ledger_pb2.ENTRY_KIND_PVP, ledger_pb2.ENTRY_KIND_DVP})
_REFUND_LEG: Final = "refund"
_LIVE_LOANS: Final = frozenset(
    {
        finance_pb2.LOAN_STATE_OPEN,
        finance_pb2.LOAN_STATE_MARGIN_CALL,
        finance_pb2.LOAN_STATE_DEFAULTED,
    }
)
_FAILED_STOCK: Final = frozenset({"SPOILED", "MISSING"})
_BPS: Final = 10_000


class BridgeReads(Protocol):
    """What the auditor asks the bridge: :class:`bridges.BridgeClient` (or the in-process
    :class:`bridges.Bridge`)."""

    async def balances(self, participant_id: str = "") -> tuple[AccountBalance, ...]: ...

    async def supply(self) -> tuple[CurrencySupply, ...]: ...

    async def audit(self) -> AuditReport: ...


def _wall_clock_us() -> int:
    return time.time_ns() // 1_000


@dataclass(frozen=True, slots=True)
class _BridgeReads:
    supply: tuple[CurrencySupply, ...]
    balances: tuple[AccountBalance, ...]  # every participant's accounts
    audit: AuditReport


@dataclass(frozen=True, slots=True)
class _Reads:
    """Everything one check read, once."""

    supply: central_bank_pb2.GetSupplyResponse  # before the rest: as_of_seq is s0
    head_seq_after: int  # GetSupply's as_of_seq after the rest: s1
    payments: dict[str, payment_pb2.Payment]
    settlements: dict[str, settlement_pb2.Settlement]
    entries: list[ledger_pb2.JournalEntry]
    #: Every loan (read with the payments, before the journal), and, at the final check, the
    #: titles its borrowers hold (ListTitles of each borrower wallet; None during the run).
    loans: dict[str, finance_pb2.Loan]
    #: loan id -> the request ids of its sales (SOLD events), for loans a sale paid.
    sales: dict[str, list[str]]
    titles: dict[str, asset_pb2.Title] | None
    bridge: _BridgeReads | None
    #: At the final check: wallet id -> currency -> (available, held), for every wallet the
    #: journal names; None during the run.
    wallets: dict[str, dict[str, tuple[int, int]]] | None
    now_us: int
    final: bool
    #: What the checks before this one verified of ``entries`` (empty at the final check).
    journal: _JournalProgress

    @property
    def head_seq(self) -> int:
        return self.supply.as_of_seq

    @property
    def quiet(self) -> bool:
        """Nothing committed while the check read."""
        return self.head_seq == self.head_seq_after

    @property
    def moved(self) -> str:
        return f"the ledger moved during the read (seq {self.head_seq} -> {self.head_seq_after})"


@dataclass(slots=True)
class _JournalProgress:
    """The journal's replay and hash chain as far as earlier checks of this run took them: an
    entry, once read, is not read again during the run, so neither is it replayed or hashed
    again (the final check reads the whole journal and starts over)."""

    #: (account, bucket, currency) -> balance, every posting up to ``replayed_to`` replayed
    replayed: defaultdict[tuple[str, int, str], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    #: What the replay found wrong so far (reported again at every check).
    problems: list[str] = field(default_factory=list)
    replayed_to: int = 0
    #: The last entry of the verified chain, or the first that broke it.
    chained_to: int = 0
    chain_hash: bytes = journal.GENESIS_HASH
    broken: int | None = None

    def replay(self, entries: Sequence[ledger_pb2.JournalEntry], up_to: int) -> None:
        """Replay the entries after ``replayed_to`` up to seq ``up_to``."""
        replayed = self.replayed
        for entry in entries[_after(entries, self.replayed_to) :]:
            if entry.seq > up_to:
                break
            totals: dict[str, int] = defaultdict(int)
            for p in entry.postings:
                key = (p.account_id, p.bucket, p.amount.currency)
                replayed[key] += p.amount.amount_minor
                totals[p.amount.currency] += p.amount.amount_minor
                if replayed[key] != p.balance_after_minor:
                    self.problems.append(
                        f"entry {entry.seq}: {p.account_id} {journal.bucket_name(p.bucket)} "
                        f"{p.amount.currency} balance_after {p.balance_after_minor}, "
                        f"replay gives {replayed[key]}"
                    )
            if any(totals.values()):
                self.problems.append(f"entry {entry.seq} does not balance: {dict(totals)}")
            self.replayed_to = entry.seq

    def chain(self, entries: Sequence[ledger_pb2.JournalEntry]) -> None:
        """Verify the entries after ``chained_to`` continue the chain (once broken, it stays)."""
        if self.broken is not None:
            return
        new = entries[_after(entries, self.chained_to) :]
        self.broken = journal.verify_entries(new, self.chain_hash, self.chained_to)
        if self.broken is None and new:
            self.chained_to, self.chain_hash = new[-1].seq, new[-1].hash


def _after(entries: Sequence[ledger_pb2.JournalEntry], seq: int) -> int:
    """The index of the first entry after seq ``seq`` (the entries in seq order)."""
    return bisect.bisect_right(entries, seq, key=lambda entry: entry.seq)


AUDITOR_CALLER = "auditor/sim"


class Auditor:
    """``core``: a client of the core; the auditor reads through it as ``auditor/sim`` (it lists
    the whole journal and every payment and settlement, which only an auditor sees in every
    currency). ``bridge``: the bridge, or None when the run has none.
    ``now_us``: the clock deadlines are compared with (the servers' clock: the wall clock).
    ``overdue_grace_s``: during the run, how long past its deadline a payment may still be open
    (the deadline sweep runs every 0.5 s)."""

    def __init__(
        self,
        core: SettlementsClient,
        bridge: BridgeReads | None,
        expectations: Expectations,
        *,
        now_us: Callable[[], int] = _wall_clock_us,
        overdue_grace_s: float = 30.0,
    ) -> None:
        self.core = core.with_caller(AUDITOR_CALLER)
        self.bridge = bridge
        self.expectations = expectations
        self._now_us = now_us
        self._overdue_grace_us = int(overdue_grace_s * 1_000_000)
        #: currency -> the gateway's core reserve plus its bridge account, set by baseline().
        self.gateway_baseline: dict[str, int] | None = None
        #: The journal as far as the last check read it: a check during the run reads only the
        #: entries after it (the final check reads the whole journal again).
        self._entries: list[ledger_pb2.JournalEntry] = []
        self._journal_progress = _JournalProgress()
        # Refusals checked against their payment in a terminal state (see
        # _forged_and_replayed_refused).
        self._refusals_done: set[RefusedAttestation] = set()

    @property
    def gateway_wallet(self) -> str:
        return f"w_reserve.{self.expectations.gateway}"

    # -- the API ---------------------------------------------------------------------------------
    async def adopt_open_payments(self, reason: str) -> int:
        """Before the traffic, on a ledger that already has payments (a running server): give
        each open one ``reason`` for staying open, so the run answers for its own payments only
        (each still needs its deadline ahead). Returns how many there were."""
        adopted = 0
        for payment in await self._payments():
            if payment.state in _OPEN_PAYMENTS:
                self.expectations.pending_reasons.setdefault(payment.payment_id, reason)
                adopted += 1
        return adopted

    async def baseline(self) -> dict[str, int]:
        """Record, before the traffic, the gateway's positions per currency (its core reserve
        plus its bridge account); empty without a bridge."""
        self.gateway_baseline = await self._gateway_positions() if self.bridge else {}
        return dict(self.gateway_baseline)

    async def sample(self, at_s: float, settlements_total: int) -> TimelineSample:
        """The ledger now: per currency (``Expectations.currencies``) the money in circulation
        and GetSupply's held sum (open escrows plus what undecided settlements hold), beside the
        runner's ``settlements_total`` (RunRecord.settlements_total: what it counts)."""
        supply = await self.core.get_supply(*self.expectations.currencies)
        return TimelineSample(
            at_s=at_s,
            settlements_total=settlements_total,
            escrow_held_minor={s.currency: s.held_sum.amount_minor for s in supply.supplies},
            supply_minor={s.currency: s.in_circulation.amount_minor for s in supply.supplies},
        )

    async def check(self, *, final: bool, when: str = "final") -> list[InvariantResult]:
        """Every invariant, in :data:`INVARIANTS` order (``gateway_mirror`` at the final check
        only). ``final``: the traffic has stopped; nothing may be in doubt any more."""
        reads = await self._read(final=final)
        results = [
            _supply_equals_balances(reads),
            _bridge_supply_equals_balances(reads),
        ]
        if final:
            results.append(await self._gateway_mirror())
        results += [
            _held_equals_open_escrows(reads),
            _payments_terminal_or_pending(reads, self.expectations, self._overdue_grace_us),
            _no_leg_paid_twice(reads),
            await self._forged_and_replayed_refused(reads),
            _financier_claims_consistent(reads),
            _loans_repaid_disposed_or_covered(reads, self._overdue_grace_us),
            _no_receipt_pledged_twice(reads),
            _loan_claims_match_journal(reads),
            _journal_hash_chain_intact(reads),
        ]
        return [
            InvariantResult(r.name, r.passed, r.detail, "final" if final else when) for r in results
        ]

    # -- reading -----------------------------------------------------------------------------------
    async def _read(self, *, final: bool) -> _Reads:
        supply = await self.core.get_supply()

        async def loans_and_theirs() -> tuple[
            list[finance_pb2.Loan], dict[str, asset_pb2.Title] | None, dict[str, list[str]]
        ]:
            loans = await self._loans()
            titles, sales = await asyncio.gather(
                self._titles(loans) if final else _none(), self._sales(loans)
            )
            return loans, titles, sales

        async def journal_and_wallets() -> tuple[
            list[ledger_pb2.JournalEntry], dict[str, dict[str, tuple[int, int]]] | None
        ]:
            entries = await self._journal(final=final)
            return entries, await self._wallets(entries) if final else None

        # All at once (the traffic has stopped; the two supply reads bracket them).
        (
            payments,
            (loans, titles, sales),
            bridge,
            settlements,
            (entries, wallets),
        ) = await asyncio.gather(
            self._payments(),
            loans_and_theirs(),
            self._bridge_reads(),
            self._settlements(),
            journal_and_wallets(),
        )
        after = await self.core.get_supply()
        return _Reads(
            supply=supply,
            head_seq_after=after.as_of_seq,
            payments={p.payment_id: p for p in payments},
            settlements={s.settlement_id: s for s in settlements},
            entries=entries,
            loans={loan.loan_id: loan for loan in loans},
            sales=sales,
            titles=titles,
            bridge=bridge,
            wallets=wallets,
            now_us=self._now_us(),
            final=final,
            journal=self._progress(final=final),
        )

    def _progress(self, *, final: bool) -> _JournalProgress:
        """The journal's progress to continue: the last check's during the run; at the final
        check, a fresh one (the whole journal was read again)."""
        if final:
            self._journal_progress = _JournalProgress()
        return self._journal_progress

    async def _bridge_reads(self) -> _BridgeReads | None:
        if self.bridge is None:
            return None
        supply, balances, audit = await asyncio.gather(
            self.bridge.supply(), self.bridge.balances(), self.bridge.audit()
        )
        return _BridgeReads(supply, balances, audit)

    async def _payments(self) -> list[payment_pb2.Payment]:
        """Every payment. The core reads each page in one snapshot, so a payment's row, legs
        and claims always agree with each other, even while a release commits."""
        return await every_page(
            self.core,
            payment_pb2.ListPaymentsRequest(
                page_size=PAYMENTS_PAGE, view=payment_pb2.PAYMENT_VIEW_BASIC
            ),
            lambda page: page.payments,
        )

    async def _loans(self) -> list[finance_pb2.Loan]:
        return await every_page(
            self.core, finance_pb2.ListLoansRequest(page_size=LOANS_PAGE), lambda page: page.loans
        )

    async def _sales(self, loans: Iterable[finance_pb2.Loan]) -> dict[str, list[str]]:
        """The request ids of the sales of every loan a sale paid (GetLoan's SOLD events): the
        settlement that sold a receipt has that request id, and pays the loan's financier."""

        async def read(loan_id: str) -> list[str]:
            finance = self.core.api.finance
            reply = await finance.get_loan(finance_pb2.GetLoanRequest(loan_id=loan_id))
            events = list(reply.events)
            if reply.earlier_events:  # GetLoan answers the newest only: stream the whole history
                events = []
                async for streamed in finance.watch_loan(
                    finance_pb2.WatchLoanRequest(loan_id=loan_id)
                ):
                    events.append(streamed.event)
                    if streamed.event.seq >= reply.loan.version:
                        break
            return [e.request_id for e in events if e.kind == "SOLD"]

        sold = sorted(x.loan_id for x in loans if x.recovered_minor or x.surplus_minor)
        return await gathered(sold, read, in_flight=READS_IN_FLIGHT)

    async def _titles(self, loans: Iterable[finance_pb2.Loan]) -> dict[str, asset_pb2.Title]:
        """Every title the loans' borrowers hold, READS_IN_FLIGHT wallets at a time."""

        async def read(wallet_id: str) -> list[asset_pb2.Title]:
            return await every_page(
                self.core,
                asset_pb2.ListTitlesRequest(holder_wallet_id=wallet_id, page_size=TITLES_PAGE),
                lambda page: page.titles,
            )

        borrowers = sorted({loan.borrower_wallet_id for loan in loans})
        held = await gathered(borrowers, read, in_flight=READS_IN_FLIGHT)
        return {t.title_id: t for titles in held.values() for t in titles}

    async def _settlements(self) -> list[settlement_pb2.Settlement]:
        return await every_page(
            self.core,
            settlement_pb2.ListSettlementsRequest(page_size=SETTLEMENTS_PAGE),
            lambda page: page.settlements,
        )

    async def _journal(self, *, final: bool) -> list[ledger_pb2.JournalEntry]:
        """The whole journal: during the run what the last check read and the entries after it;
        at the final check every entry read again."""
        known = [] if final else self._entries
        self._entries = known + await every_page(
            self.core,
            wallet_pb2.ListJournalRequest(
                page_size=JOURNAL_PAGE, after_seq=known[-1].seq if known else 0
            ),
            lambda page: page.entries,
        )
        return self._entries

    async def _wallets(
        self, entries: Iterable[ledger_pb2.JournalEntry]
    ) -> dict[str, dict[str, tuple[int, int]]]:
        """The balances of every wallet the journal names, READS_IN_FLIGHT at a time."""
        wallet_ids = sorted(
            {
                p.account_id
                for e in entries
                for p in e.postings
                if p.bucket != ledger_pb2.BUCKET_ISSUANCE
            }
        )

        async def read(wallet_id: str) -> dict[str, tuple[int, int]]:
            wallet = await self.core.get_wallet(wallet_id)
            return {
                b.available.currency: (b.available.amount_minor, b.held.amount_minor)
                for b in wallet.balances
            }

        return await gathered(wallet_ids, read, in_flight=READS_IN_FLIGHT)

    async def _full_payment_or_none(self, payment_id: str) -> payment_pb2.Payment | None:
        try:
            return await self.core.get_payment(payment_id, view=payment_pb2.PAYMENT_VIEW_FULL)
        except NotFound:
            return None

    async def _gateway_positions(self) -> dict[str, int]:
        """currency -> the gateway's core reserve (available + held) plus its bridge account."""
        assert self.bridge is not None
        try:
            wallet = await self.core.get_wallet(self.gateway_wallet)
            core = {
                b.available.currency: b.available.amount_minor + b.held.amount_minor
                for b in wallet.balances
            }
        except NotFound:
            core = {}
        bridge: dict[str, int] = defaultdict(int)
        for account in await self.bridge.balances(self.expectations.gateway):
            if account.kind is AccountKind.SETTLEMENT:
                bridge[account.currency] += account.balance_minor
        return {c: core.get(c, 0) + bridge[c] for c in self.expectations.currencies}

    # -- the invariants that read more ---------------------------------------------------------
    async def _gateway_mirror(self) -> InvariantResult:
        if self.bridge is None:
            return _passed(GATEWAY_MIRROR, "no bridge in this run: nothing mirrored")
        if self.gateway_baseline is None:
            return _failed(GATEWAY_MIRROR, ["no baseline: call baseline() before the traffic"])
        now, then = await self._gateway_positions(), self.gateway_baseline
        problems = [
            f"{c}: core reserve + bridge account {now[c]}, baseline {then.get(c, 0)} "
            f"(off by {now[c] - then.get(c, 0)})"
            for c in self.expectations.currencies
            if now[c] != then.get(c, 0)
        ]
        if problems:
            return _failed(GATEWAY_MIRROR, problems)
        return _passed(
            GATEWAY_MIRROR,
            f"{self.gateway_wallet} + bridge {self.expectations.gateway} unchanged: "
            + ", ".join(f"{c} {now[c]}" for c in self.expectations.currencies),
        )

    async def _forged_and_replayed_refused(self, reads: _Reads) -> InvariantResult:
        """A forged attestation (its own event id, a bad signature or an unregistered signer)
        must never be recorded; a replayed one (the event id of one already accepted) at most
        once. The payments they name are read with GetPayment in the FULL view (the listing
        shows no attestations). During the run, a refusal already checked against its payment
        in a terminal state (which takes no attestation any more) is not read again; the final
        check reads every one."""
        problems: list[str] = []
        outcomes: Counter[tuple[str, str]] = Counter()
        refusals = self.expectations.refused_attestations
        if reads.final:
            self._refusals_done.clear()
        unread = [r for r in refusals if r not in self._refusals_done]
        payments = await gathered(
            sorted({r.payment_id for r in unread}),
            self._full_payment_or_none,
            in_flight=READS_IN_FLIGHT,
        )
        for refused in refusals:
            outcomes[(refused.kind, refused.outcome)] += 1
        for refused in unread:
            where = f"{refused.kind} {refused.event_id} on {refused.payment_id}"
            if refused.outcome == ACCEPTED:
                problems.append(f"{where} was accepted")
            payment = payments[refused.payment_id]
            if payment is None:
                continue  # no payment: nothing recorded on it
            recorded = sum(a.event_id == refused.event_id for a in payment.attestations)
            allowed = 0 if refused.kind == "forged" else 1
            if recorded > allowed:
                problems.append(f"{where} is recorded {recorded} times")
            elif payment.state not in _OPEN_PAYMENTS and refused.outcome != ACCEPTED:
                self._refusals_done.add(refused)
        if problems:
            return _failed(REFUSED, problems)
        return _passed(
            REFUSED,
            f"{len(self.expectations.refused_attestations)} refused as expected"
            + "".join(f"; {k} {o}: {n}" for (k, o), n in sorted(outcomes.items())),
        )


async def every_page(
    client: SettlementsClient,
    request: Any,
    items: Callable[[Any], Iterable[T]],
) -> list[T]:
    """Every item of a paginated list call, page after page until the last."""
    out: list[T] = []
    while True:
        page = await client.send(request)
        out += items(page)
        if not page.next_page_token:
            return out
        request.page_token = page.next_page_token


# -- the invariants on what was read --------------------------------------------------------------
def _passed(name: str, detail: str) -> InvariantResult:
    return InvariantResult(name, True, detail)


def _failed(name: str, problems: Sequence[str]) -> InvariantResult:
    named = "; ".join(problems[:NAMED_MAX])
    more = f" (and {len(problems) - NAMED_MAX} more)" if len(problems) > NAMED_MAX else ""
    return InvariantResult(name, False, f"{len(problems)} problem(s): {named}{more}")


def _payment_state(payment: payment_pb2.Payment) -> str:
    return payment_pb2.PaymentState.Name(payment.state).removeprefix("PAYMENT_STATE_")


def _settlement_state(settlement: settlement_pb2.Settlement) -> str:
    return settlement_pb2.SettlementState.Name(settlement.state).removeprefix("SETTLEMENT_STATE_")


def _supply_equals_balances(reads: _Reads) -> InvariantResult:
    """GetSupply's figures recomputed, and the journal replayed up to GetSupply's seq."""
    # (account, bucket, currency) -> balance, every posting up to s0 replayed (this check
    # replays the entries after the last check's; the final check replays them all)
    progress = reads.journal
    progress.replay(reads.entries, reads.head_seq)
    replayed = progress.replayed
    problems = list(progress.problems)
    circulation: dict[str, int] = defaultdict(int)
    held: dict[str, int] = defaultdict(int)
    issuance: dict[str, int] = defaultdict(int)
    for (_account, bucket, currency), balance in replayed.items():
        if bucket == ledger_pb2.BUCKET_ISSUANCE:
            issuance[currency] += balance
        else:
            circulation[currency] += balance
            held[currency] += balance if bucket == ledger_pb2.BUCKET_HELD else 0
    shown = []
    for s in reads.supply.supplies:
        c = s.currency
        issued, redeemed = s.issued.amount_minor, s.redeemed.amount_minor
        in_circulation, balances = s.in_circulation.amount_minor, s.balances_sum.amount_minor
        if in_circulation != issued - redeemed:
            problems.append(f"{c}: in_circulation {in_circulation} != issued - redeemed")
        if balances != issued - redeemed:
            problems.append(f"{c}: issued - redeemed = {issued - redeemed}, balances {balances}")
        if s.consistent != (balances == in_circulation):
            problems.append(f"{c}: GetSupply says consistent={s.consistent}, the figures differ")
        if circulation[c] != issued - redeemed or issuance[c] != redeemed - issued:
            problems.append(
                f"{c}: issued - redeemed = {issued - redeemed}, the journal replays to "
                f"{circulation[c]} in wallets and {issuance[c]} in issuance:{c}"
            )
        if held[c] != s.held_sum.amount_minor:
            problems.append(f"{c}: held sum {s.held_sum.amount_minor}, journal replay {held[c]}")
        shown.append(f"{c} {issued - redeemed}")
    compared = "every wallet's balances = journal replay"
    if reads.wallets is None:
        compared = "wallets compared at the end"
    elif not reads.quiet:
        compared = f"wallets not compared: {reads.moved}"
    else:
        problems += _wallets_replay(reads.wallets, replayed)
    if problems:
        return _failed(SUPPLY, problems)
    return _passed(
        SUPPLY,
        f"issued - redeemed = balances = journal replay (seq {reads.head_seq}): "
        + ", ".join(shown)
        + f"; {compared}",
    )


def _wallets_replay(
    wallets: dict[str, dict[str, tuple[int, int]]], replayed: dict[tuple[str, int, str], int]
) -> list[str]:
    """Each wallet's available and held balances are what the journal replays to."""
    replay: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    for (account, bucket, currency), balance in replayed.items():
        if bucket != ledger_pb2.BUCKET_ISSUANCE:
            available, held = replay[account].get(currency, (0, 0))
            replay[account][currency] = (
                (balance, held) if bucket == ledger_pb2.BUCKET_AVAILABLE else (available, balance)
            )
    problems = []
    for wallet_id in sorted(set(wallets) | set(replay)):
        lines, replayed_lines = wallets.get(wallet_id, {}), replay.get(wallet_id, {})
        for c in sorted(set(lines) | set(replayed_lines)):
            found, expected = lines.get(c, (0, 0)), replayed_lines.get(c, (0, 0))
            if found != expected:
                problems.append(
                    f"{wallet_id} {c}: available/held {found[0]}/{found[1]}, "
                    f"journal replay {expected[0]}/{expected[1]}"
                )
    return problems


def _bridge_supply_equals_balances(reads: _Reads) -> InvariantResult:
    bridge = reads.bridge
    if bridge is None:
        return _passed(BRIDGE_SUPPLY, "no bridge in this run")
    problems = [f"bridge audit: {problem}" for problem in bridge.audit.problems]
    held: dict[str, int] = defaultdict(int)
    issuance: dict[str, int] = defaultdict(int)
    for account in bridge.balances:
        if account.kind is AccountKind.ISSUANCE:
            issuance[account.currency] += account.balance_minor
        else:
            held[account.currency] += account.balance_minor
            if not 0 <= account.reserved_minor <= account.balance_minor:
                problems.append(
                    f"{account.participant_id}/{account.kind.value}/{account.currency}: "
                    f"reserved {account.reserved_minor} of {account.balance_minor}"
                )
    for s in bridge.supply:
        c, outstanding = s.currency, s.outstanding_minor
        if s.held_minor != outstanding:
            problems.append(f"{c}: issued - redeemed = {outstanding}, balances {s.held_minor}")
        if held[c] != outstanding or issuance[c] != -outstanding:
            problems.append(
                f"{c}: issued - redeemed = {outstanding}, the accounts hold {held[c]} and the "
                f"issuance account {issuance[c]}"
            )
        if not 0 <= s.reserved_minor <= s.held_minor:
            problems.append(f"{c}: reserved {s.reserved_minor} of {s.held_minor}")
    if problems:
        return _failed(BRIDGE_SUPPLY, problems)
    return _passed(
        BRIDGE_SUPPLY,
        "issued - redeemed = balances, bridge audit clean: "
        + ", ".join(f"{s.currency} {s.outstanding_minor}" for s in bridge.supply),
    )


def _settlement_holds(settlement: settlement_pb2.Settlement) -> Iterable[tuple[str, int]]:
    """(currency, amount) this settlement keeps in HELD balances now."""
    payer_side, gateway_side = _HOLDS.get(
        (bool(settlement.origin_payment_id), settlement.state), (False, False)
    )
    if payer_side:
        yield settlement.pay.currency, settlement.pay.amount_minor
    if gateway_side:
        yield settlement.receive.currency, settlement.receive.amount_minor


def _held_equals_open_escrows(reads: _Reads) -> InvariantResult:
    problems: list[str] = []
    expected: dict[str, int] = defaultdict(int)
    for payment in reads.payments.values():
        if payment.state in _OPEN_PAYMENTS:
            expected[payment.held.currency] += payment.held.amount_minor
        elif payment.held.amount_minor:
            problems.append(
                f"payment {payment.payment_id} is {_payment_state(payment)} but holds "
                f"{payment.held.amount_minor}"
            )
    undecided = Counter[str]()
    for settlement in reads.settlements.values():
        for currency, amount in _settlement_holds(settlement):
            expected[currency] += amount
        if settlement.state not in _DONE_SETTLEMENTS:
            undecided[_settlement_state(settlement)] += 1
            if reads.final:
                problems.append(
                    f"settlement {settlement.settlement_id} is {_settlement_state(settlement)} "
                    "at the end"
                )
    if reads.final or reads.quiet:
        for s in reads.supply.supplies:
            if s.held_sum.amount_minor != expected.get(s.currency, 0):
                problems.append(
                    f"{s.currency}: held {s.held_sum.amount_minor}, open payments and "
                    f"settlements hold {expected.get(s.currency, 0)}"
                )
    if problems:
        return _failed(HELD, problems)
    compared = (
        "held = open escrows + undecided settlements: "
        + ", ".join(f"{s.currency} {s.held_sum.amount_minor}" for s in reads.supply.supplies)
        if reads.final or reads.quiet
        else f"sums not compared: {reads.moved}"
    )
    return _passed(HELD, f"{compared}; settlements not done: {dict(undecided) or 'none'}")


def _payments_terminal_or_pending(
    reads: _Reads, expectations: Expectations, overdue_grace_us: int
) -> InvariantResult:
    problems: list[str] = []
    states: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for payment in reads.payments.values():
        states[_payment_state(payment)] += 1
        if payment.state not in _OPEN_PAYMENTS:
            continue
        deadline_us = payment.deadline.ToMicroseconds() if payment.HasField("deadline") else None
        if not reads.final:
            if deadline_us is not None and deadline_us + overdue_grace_us < reads.now_us:
                late_s = (reads.now_us - deadline_us) / 1e6
                problems.append(f"{payment.payment_id}: open {late_s:.1f} s past its deadline")
            continue
        reason = expectations.pending_reasons.get(payment.payment_id)
        if reason is None:
            problems.append(f"{payment.payment_id}: {_payment_state(payment)} with no reason")
        elif deadline_us is not None and deadline_us <= reads.now_us:
            problems.append(f"{payment.payment_id}: open ({reason}) past its deadline")
        else:
            reasons[reason] += 1
    if problems:
        return _failed(PAYMENTS_DONE, problems)
    detail = f"{len(reads.payments)} payments: {dict(sorted(states.items()))}"
    if reads.final:
        detail += f"; pending by reason: {dict(sorted(reasons.items())) or 'none'}"
    return _passed(PAYMENTS_DONE, detail)


def _base_leg_id(leg_id: str) -> str:
    """A leg paid to several recipients (an assignee first) is split as ``<leg>#<i>``."""
    return leg_id.split("#", 1)[0]


def _no_leg_paid_twice(reads: _Reads) -> InvariantResult:
    problems: list[str] = []
    by_seq = {e.seq: e for e in reads.entries}
    legs_by_seq: dict[int, list[tuple[str, str, int]]] = defaultdict(list)
    for payment in reads.payments.values():
        problems += _escrow_accounted(payment)
        problems += _payouts_are_settlements(payment, reads.settlements)
        for leg in payment.legs:
            if leg.commit_seq:
                legs_by_seq[leg.commit_seq].append(
                    (
                        f"{payment.payment_id} {_base_leg_id(leg.leg_id)}",
                        leg.paid_to_wallet_id,
                        leg.amount.amount_minor,
                    )
                )
    # Every leg names one RELEASE/REFUND entry, which pays exactly its legs.
    for seq, legs in sorted(legs_by_seq.items()):
        entry = by_seq.get(seq)
        if entry is None or entry.kind not in _LEG_ENTRIES:
            problems.append(f"leg {legs[0][0]} names entry {seq}, not a RELEASE or REFUND")
            continue
        problems += _entry_pays_legs(entry, legs)
    # Every RELEASE/REFUND entry committed before the payments were read pays a leg, and no two
    # entries pay the same leg; no settlement or PVP/DVP request is paid twice.
    paid_legs: Counter[str] = Counter()
    settlement_entries: Counter[str] = Counter()
    settlement_requests: Counter[tuple[str, str]] = Counter()
    for entry in reads.entries:
        if entry.kind in _LEG_ENTRIES:
            paid_legs[entry.memo] += 1
            if entry.seq <= reads.head_seq and entry.seq not in legs_by_seq:
                problems.append(f"entry {entry.seq} ({entry.memo}) pays no recorded leg")
        elif entry.kind in _SETTLEMENT_ENTRIES:
            settlement_entries[_settlement_of(entry)] += 1
            settlement_requests[(entry.caller, entry.request_id)] += 1
    problems += [f"leg {memo} paid by {n} entries" for memo, n in paid_legs.items() if n > 1]
    problems += [
        f"settlement {sid} committed by {n} entries"
        for sid, n in settlement_entries.items()
        if n > 1
    ]
    problems += [
        f"request {caller} {request_id} wrote {n} PVP/DVP entries"
        for (caller, request_id), n in settlement_requests.items()
        if n > 1
    ]
    if reads.final:
        problems += _settlements_committed_once(reads.settlements, settlement_entries)
    if problems:
        return _failed(NO_LEG_TWICE, problems)
    return _passed(
        NO_LEG_TWICE,
        f"{sum(len(p.legs) for p in reads.payments.values())} legs, "
        f"{sum(paid_legs.values())} RELEASE/REFUND and {sum(settlement_entries.values())} "
        "PVP/DVP entries, each paid once",
    )


def _escrow_accounted(payment: payment_pb2.Payment) -> list[str]:
    """escrow = held + released + refunded (financing replaced the payer's money in the payer's
    available balance, outside the escrow, and an assignment only redirects legs, so neither
    enters this sum); the legs add up to released and refunded, each recorded once."""
    pid, problems = payment.payment_id, []
    held, escrow = payment.held.amount_minor, payment.escrow.amount_minor
    released, refunded = payment.released.amount_minor, payment.refunded.amount_minor
    if min(held, released, refunded) < 0 or escrow != held + released + refunded:
        problems.append(
            f"{pid}: escrow {escrow} != held {held} + released {released} + refunded {refunded}"
        )
    legs_released = sum(x.amount.amount_minor for x in payment.legs if x.kind != _REFUND_LEG)
    legs_refunded = sum(x.amount.amount_minor for x in payment.legs if x.kind == _REFUND_LEG)
    if (legs_released, legs_refunded) != (released, refunded):
        problems.append(
            f"{pid}: legs release {legs_released} and refund {legs_refunded}, the payment "
            f"records {released} and {refunded}"
        )
    leg_ids = Counter(x.leg_id for x in payment.legs)
    problems += [f"{pid}: leg {leg} recorded {n} times" for leg, n in leg_ids.items() if n > 1]
    problems += [
        f"{pid}: leg {leg.leg_id} in {leg.amount.currency}"
        for leg in payment.legs
        if leg.amount.amount_minor and leg.amount.currency != payment.escrow.currency
    ]
    return problems


def _payouts_are_settlements(
    payment: payment_pb2.Payment, settlements: dict[str, settlement_pb2.Settlement]
) -> list[str]:
    """A leg paid in another currency has no entry: it is one payout settlement of its amount."""
    pid, problems = payment.payment_id, []
    for leg in payment.legs:
        if leg.commit_seq or not leg.amount.amount_minor:
            continue
        payout = settlements.get(leg.paid_to_wallet_id)
        if payout is None or (payout.origin_payment_id, payout.origin_leg_id) != (
            pid,
            leg.leg_id,
        ):
            problems.append(f"{pid}: leg {leg.leg_id} has no entry and no payout settlement")
        elif payout.pay.amount_minor != leg.amount.amount_minor:
            problems.append(
                f"{pid}: leg {leg.leg_id} pays {leg.amount.amount_minor} out through "
                f"{payout.settlement_id}, which pays {payout.pay.amount_minor}"
            )
    return problems


def _entry_pays_legs(entry: ledger_pb2.JournalEntry, legs: list[tuple[str, str, int]]) -> list[str]:
    """The entry pays the legs that name it: its memo is their ``<payment> <leg>``, its HELD
    debit their sum, its credits their recipients and amounts."""
    names = {name for name, _, _ in legs}
    debit = -sum(
        p.amount.amount_minor for p in entry.postings if p.bucket == ledger_pb2.BUCKET_HELD
    )
    credits = Counter(
        (p.account_id, p.amount.amount_minor)
        for p in entry.postings
        if p.bucket == ledger_pb2.BUCKET_AVAILABLE
    )
    if names != {entry.memo}:
        return [f"entry {entry.seq} ({entry.memo}) is named by legs {sorted(names)}"]
    if debit != sum(amount for _, _, amount in legs) or credits != Counter(
        (to, amount) for _, to, amount in legs
    ):
        return [f"entry {entry.seq} ({entry.memo}) does not move what its legs record"]
    return []


def _settlement_of(entry: ledger_pb2.JournalEntry) -> str:
    """The settlement a PVP/DVP entry commits: its memo is ``<kind> <settlement id> ...``."""
    words = entry.memo.split()
    return words[1] if len(words) > 1 else f"? entry {entry.seq}"


def _settlements_committed_once(
    settlements: dict[str, settlement_pb2.Settlement], entries: Counter[str]
) -> list[str]:
    committed = {settlement_pb2.SETTLEMENT_STATE_COMMITTED, settlement_pb2.SETTLEMENT_STATE_FINAL}
    problems = []
    for sid, settlement in settlements.items():
        wanted = 1 if settlement.state in committed else 0
        if entries.get(sid, 0) != wanted:
            problems.append(
                f"settlement {sid} is {_settlement_state(settlement)} with "
                f"{entries.get(sid, 0)} PVP/DVP entries"
            )
    problems += [
        f"entry commits unknown settlement {sid}" for sid in entries if sid not in settlements
    ]
    return problems


def _financier_claims_consistent(reads: _Reads) -> InvariantResult:
    problems: list[str] = []
    # (request id, financier wallet, counterparty wallet, amount) of recorded FUND / ADVANCE
    funds: Counter[tuple[str, str, str, int]] = Counter()
    advances: Counter[tuple[str, str, str, int]] = Counter()
    principal = advanced = 0
    for payment in reads.payments.values():
        problems += _claims_of(payment)
        for f in payment.financing:
            fund = (f.request_id, f.financier_wallet_id, payment.payer_wallet_id)
            funds[(*fund, f.principal.amount_minor)] += 1
            principal += f.principal.amount_minor
        for a in payment.assignments:
            if a.advance.amount_minor:
                advance = (a.request_id, a.financier_wallet_id, a.payee_wallet_id)
                advances[(*advance, a.advance.amount_minor)] += 1
                advanced += a.advance.amount_minor
    # The journal's FUND and ADVANCE entries are exactly those: each recorded one has its entry
    # (the journal was read after the payments), and each entry up to s0 its record.
    for kind, recorded, label in (
        (ledger_pb2.ENTRY_KIND_FUND, funds, "financing"),
        (ledger_pb2.ENTRY_KIND_ADVANCE, advances, "advance"),
    ):
        journaled: Counter[tuple[str, str, str, int]] = Counter()
        early: Counter[tuple[str, str, str, int]] = Counter()
        for entry in reads.entries:
            if entry.kind != kind:
                continue
            key = _claim_key(entry)
            journaled[key] += 1
            if entry.seq <= reads.head_seq:
                early[key] += 1
        problems += [
            f"{label} {k[0]} of {k[1]} ({k[3]}) has no matching journal entry"
            for k in (recorded - journaled)
        ]
        problems += [
            f"journal {label} {k[0]} of {k[1]} ({k[3]}) is recorded on no payment"
            for k in (early - recorded)
        ]
    if problems:
        return _failed(FINANCIERS, problems)
    return _passed(
        FINANCIERS,
        f"{funds.total()} financings ({principal} principal) and {advances.total()} advances "
        f"({advanced}) match the journal; refunds and collections within their claims",
    )


def _claim_key(entry: ledger_pb2.JournalEntry) -> tuple[str, str, str, int]:
    """A FUND or ADVANCE entry as (request id, financier, payer or payee, amount)."""
    debits = [p for p in entry.postings if p.amount.amount_minor < 0]
    credits = [p for p in entry.postings if p.amount.amount_minor > 0]
    if len(debits) != 1 or len(credits) != 1:
        return (entry.request_id, f"? entry {entry.seq}", "", 0)
    return (
        entry.request_id,
        debits[0].account_id,
        credits[0].account_id,
        credits[0].amount.amount_minor,
    )


def _claims_of(payment: payment_pb2.Payment) -> list[str]:
    """Financing refunded within its principal, assignments collected within what is assigned,
    and the legs paid to financiers adding up to those."""
    pid, problems = payment.payment_id, []
    refunded_to: dict[str, int] = defaultdict(int)
    collected_by: dict[tuple[str, str], int] = defaultdict(int)
    for leg in payment.legs:
        if leg.kind == _REFUND_LEG:
            refunded_to[leg.paid_to_wallet_id] += leg.amount.amount_minor
        elif leg.paid_to_wallet_id != leg.wallet_id and leg.commit_seq:
            collected_by[(leg.wallet_id, leg.paid_to_wallet_id)] += leg.amount.amount_minor
    financed: dict[str, int] = defaultdict(int)
    for f in payment.financing:
        who, refunded, owed = (
            f.financier_wallet_id,
            f.refunded.amount_minor,
            f.principal.amount_minor,
        )
        if not 0 <= refunded <= owed or owed <= 0:
            problems.append(f"{pid}: financing {f.request_id} refunded {refunded} of {owed}")
        if f.principal.currency != payment.escrow.currency:
            problems.append(f"{pid}: financing {f.request_id} in {f.principal.currency}")
        financed[who] += refunded
    collected: dict[tuple[str, str], int] = defaultdict(int)
    for a in payment.assignments:
        got, assigned, advance = (
            a.collected.amount_minor,
            a.assigned.amount_minor,
            a.advance.amount_minor,
        )
        if not 0 <= got <= assigned or not 0 <= advance <= assigned:
            problems.append(
                f"{pid}: assignment {a.request_id} collected {got} and advanced {advance} "
                f"of {assigned}"
            )
        collected[(a.payee_wallet_id, a.financier_wallet_id)] += got
    problems += [
        f"{pid}: refund legs pay financier {who} {refunded_to.get(who, 0)}, its financing "
        f"records {amount} refunded"
        for who, amount in financed.items()
        if refunded_to.get(who, 0) != amount
    ]
    problems += [
        f"{pid}: legs of {payee} paid to {financier} {collected_by.get((payee, financier), 0)}, "
        f"the assignment records {amount} collected"
        for (payee, financier), amount in collected.items()
        if collected_by.get((payee, financier), 0) != amount
    ]
    problems += [
        f"{pid}: a refund leg pays {to} ({amount}), neither the payer nor a financier"
        for to, amount in refunded_to.items()
        if to != payment.payer_wallet_id and to not in financed
    ]
    problems += [
        f"{pid}: legs of {payee} paid to {to} ({amount}) without an assignment"
        for (payee, to), amount in collected_by.items()
        if (payee, to) not in collected
    ]
    return problems


async def _none() -> None:
    return None


def _loan_state(loan: finance_pb2.Loan) -> str:
    return finance_pb2.LoanState.Name(loan.state).removeprefix("LOAN_STATE_")


def _loans_repaid_disposed_or_covered(reads: _Reads, overdue_grace_us: int) -> InvariantResult:
    """Repaid and released, defaulted and disposed of, or live with its collateral above the
    threshold or inside its cure window (module docstring)."""
    problems: list[str] = []
    states: Counter[str] = Counter()
    grace_us = 0 if reads.final else overdue_grace_us
    for loan in reads.loans.values():
        lid, state = loan.loan_id, loan.state
        states[_loan_state(loan)] += 1
        if not 0 <= loan.principal_outstanding_minor <= loan.principal_minor:
            problems.append(f"{lid}: principal outstanding {loan.principal_outstanding_minor}")
        if min(loan.repaid_minor, loan.recovered_minor, loan.surplus_minor, loan.owed_minor) < 0:
            problems.append(f"{lid}: a negative amount")
        if state == finance_pb2.LOAN_STATE_REPAID:
            outstanding = (
                loan.owed_minor,
                loan.principal_outstanding_minor,
                loan.fee_outstanding_minor,
                loan.interest_outstanding_minor,
            )
            if any(outstanding) or loan.collateral:
                problems.append(
                    f"{lid}: REPAID owing {loan.owed_minor} with {len(loan.collateral)} "
                    "receipt(s) still pledged"
                )
            elif loan.repaid_minor < loan.principal_minor + loan.fee_minor:
                problems.append(f"{lid}: REPAID with {loan.repaid_minor} repaid")
        elif state == finance_pb2.LOAN_STATE_DISPOSED:
            if loan.collateral:
                problems.append(f"{lid}: DISPOSED with {len(loan.collateral)} receipt(s) pledged")
            if loan.disposal == "RETAIN" and (loan.recovered_minor or loan.surplus_minor):
                problems.append(f"{lid}: RETAIN, yet a sale paid {loan.recovered_minor}")
            if loan.surplus_minor and loan.owed_minor:
                problems.append(
                    f"{lid}: a surplus of {loan.surplus_minor} to the borrower while "
                    f"{loan.owed_minor} is still owed to the financier"
                )
        elif state == finance_pb2.LOAN_STATE_DEFAULTED:
            if reads.final or loan.disposal != "SELL" or not loan.collateral:
                problems.append(f"{lid}: DEFAULTED, its collateral not disposed of")
        elif state in (finance_pb2.LOAN_STATE_OPEN, finance_pb2.LOAN_STATE_MARGIN_CALL):
            failed = [c.title_id for c in loan.collateral if c.condition in _FAILED_STOCK]
            breached = loan.owed_minor * _BPS > loan.lending_value_minor * loan.margin_call_bps
            due_us = loan.maturity_at.ToMicroseconds()
            if state == finance_pb2.LOAN_STATE_OPEN and (failed or breached):
                problems.append(
                    f"{lid}: OPEN owing {loan.owed_minor} against a lending value of "
                    f"{loan.lending_value_minor}" + (f", stock failed: {failed}" if failed else "")
                )
            if state == finance_pb2.LOAN_STATE_MARGIN_CALL:
                due_us = min(due_us, loan.cure_by.ToMicroseconds())
            if due_us + grace_us <= reads.now_us:
                problems.append(f"{lid}: {_loan_state(loan)} past its deadline")
            if not loan.collateral:
                problems.append(f"{lid}: {_loan_state(loan)} with nothing pledged")
        else:
            problems.append(f"{lid}: state {state}")
    if problems:
        return _failed(LOANS, problems)
    return _passed(LOANS, f"{len(reads.loans)} loans: {dict(sorted(states.items()))}")


def _no_receipt_pledged_twice(reads: _Reads) -> InvariantResult:
    problems: list[str] = []
    holders: dict[str, str] = {}
    pledged = 0
    for loan in reads.loans.values():
        for item in loan.collateral:
            pledged += 1
            other = holders.setdefault(item.title_id, loan.loan_id)
            if other != loan.loan_id:
                problems.append(f"receipt {item.title_id} pledged to {other} and {loan.loan_id}")
            if reads.titles is None:
                continue
            title = reads.titles.get(item.title_id)
            if title is None:
                problems.append(
                    f"{loan.loan_id}: receipt {item.title_id} is not among its borrower's titles"
                )
            elif (
                title.pledged_to != loan.loan_id
                or title.state != asset_pb2.TITLE_STATE_ACTIVE
                or title.units != item.units
            ):
                problems.append(
                    f"{loan.loan_id}: receipt {item.title_id} ({title.units} units, "
                    f"{asset_pb2.TitleState.Name(title.state)}) is pledged to "
                    f"{title.pledged_to or 'nothing'}, the loan records {item.units} units"
                )
    for title in (reads.titles or {}).values():
        holder = reads.loans.get(title.pledged_to)
        if holder is not None and title.title_id not in {c.title_id for c in holder.collateral}:
            problems.append(
                f"receipt {title.title_id} is pledged to {holder.loan_id} "
                f"({_loan_state(holder)}), which does not hold it"
            )
    if problems:
        return _failed(RECEIPTS, problems)
    if reads.titles is None:
        return _passed(
            RECEIPTS,
            f"{pledged} receipts pledged to live loans, each to one; titles compared at the end",
        )
    borrowers = len({loan.borrower_wallet_id for loan in reads.loans.values()})
    return _passed(
        RECEIPTS,
        f"{pledged} receipts pledged to live loans, each to one, as their titles say "
        f"({len(reads.titles)} titles of {borrowers} borrowers read)",
    )


def _loan_claims_match_journal(reads: _Reads) -> InvariantResult:
    """Per loan: (principal lent, financier, borrower) from its LOAN entries, what its
    LOAN_REPAYMENT entries paid its financier, what its sales' DVP entries paid its financier
    and its borrower, against what the loan records."""
    problems: list[str] = []
    lent: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    repaid: dict[str, int] = defaultdict(int)
    recovered: dict[str, int] = defaultdict(int)
    surplus: dict[str, int] = defaultdict(int)
    loans = reads.loans
    # settlement id -> the loan whose receipt it sold: a DvP paying the loan's financier, named
    # by the SOLD event's request id (in one currency the sale's, DisposeCollateral's; across
    # currencies the commit step's, ``<settlement id>:commit:<attempt>``).
    by_request = {s.request_id: s for s in reads.settlements.values()}
    sales: dict[str, str] = {}
    for loan_id, request_ids in reads.sales.items():
        for request_id in request_ids:
            found = reads.settlements.get(request_id.split(":", 1)[0]) or by_request.get(request_id)
            if (
                found is not None
                and found.payee_wallet_id == loans[loan_id].financier_wallet_id
                and found.kind == settlement_pb2.SETTLEMENT_KIND_DVP
            ):
                sales[found.settlement_id] = loan_id
            elif reads.final:
                problems.append(f"{loan_id}: sold by {request_id}, which no DvP settlement is")
    for entry in reads.entries:
        if entry.kind in (ledger_pb2.ENTRY_KIND_LOAN, ledger_pb2.ENTRY_KIND_LOAN_REPAYMENT):
            words = entry.memo.split()
            loan = loans.get(words[1]) if len(words) > 1 else None
            if loan is None:
                if entry.seq <= reads.head_seq:
                    problems.append(f"entry {entry.seq} ({entry.memo}) names no loan")
                continue
            debits = [p for p in entry.postings if p.amount.amount_minor < 0]
            credits = [p for p in entry.postings if p.amount.amount_minor > 0]
            if len(debits) != 1 or len(credits) != 1:
                problems.append(f"entry {entry.seq} ({entry.memo}) is not one movement")
                continue
            source, target = debits[0].account_id, credits[0].account_id
            amount = credits[0].amount.amount_minor
            if entry.kind == ledger_pb2.ENTRY_KIND_LOAN:
                lent[loan.loan_id].append((source, target, amount))
            elif target != loan.financier_wallet_id:
                problems.append(f"entry {entry.seq} repays {loan.loan_id} to {target}")
            else:
                repaid[loan.loan_id] += amount
        elif entry.kind == ledger_pb2.ENTRY_KIND_DVP:
            loan_id = sales.get(_settlement_of(entry), "")
            sold = loans.get(loan_id)
            if sold is None:
                continue
            for p in entry.postings:
                if p.amount.amount_minor <= 0 or p.amount.currency != sold.currency:
                    continue
                if p.account_id == sold.financier_wallet_id:
                    recovered[loan_id] += p.amount.amount_minor
                elif p.account_id == sold.borrower_wallet_id:
                    surplus[loan_id] += p.amount.amount_minor
    compared = reads.final or reads.quiet
    if compared:
        for loan in loans.values():
            lid = loan.loan_id
            wanted = [(loan.financier_wallet_id, loan.borrower_wallet_id, loan.principal_minor)]
            if lent[lid] != wanted:
                problems.append(f"{lid}: LOAN entries {lent[lid]}, the loan records {wanted}")
            journaled = (repaid[lid], recovered[lid], surplus[lid])
            recorded = (loan.repaid_minor, loan.recovered_minor, loan.surplus_minor)
            if journaled != recorded:
                problems.append(
                    f"{lid}: the journal repaid, recovered and paid a surplus of {journaled}, "
                    f"the loan records {recorded}"
                )
    if problems:
        return _failed(LOAN_JOURNAL, problems)
    lent_total = sum(amount for moves in lent.values() for _, _, amount in moves)
    detail = (
        f"{len(loans)} loans: {lent_total} lent, {sum(repaid.values())} repaid, "
        f"{sum(recovered.values())} recovered and {sum(surplus.values())} surplus by sales"
    )
    return _passed(LOAN_JOURNAL, detail if compared else f"{detail}; compared at the end")


def _journal_hash_chain_intact(reads: _Reads) -> InvariantResult:
    reads.journal.chain(reads.entries)
    broken = reads.journal.broken
    last = reads.entries[-1] if reads.entries else None
    if broken is not None:
        return _failed(CHAIN, [f"the chain breaks at entry {broken}"])
    if last is None or last.seq < reads.head_seq:
        return _failed(
            CHAIN,
            [f"the journal ends at {last.seq if last else 0}, the ledger head is {reads.head_seq}"],
        )
    return _passed(
        CHAIN, f"{len(reads.entries)} entries, seq 1..{last.seq}, head {last.hash.hex()[:16]}"
    )


__all__ = ["INVARIANTS", "Auditor", "BridgeReads"]
