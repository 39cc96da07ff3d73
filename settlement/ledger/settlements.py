"""PvP and DvP settlements as ledger commands: the core's side of the protocol in
docs/settlement.md.

A settlement moves ``pay_minor`` of ``pay_currency`` from the payer and ``receive_minor`` of
``receive_currency`` to the payee (and, for DvP, a title from the payee to the payer). Across
currencies the conversion happens on the bridge, between the core's *gateway* (the reserve wallet
of the institution that is the core's participant on the bridge) and the bridge's liquidity
provider:

| entry  | postings                                                                       |
|--------|--------------------------------------------------------------------------------|
| HOLD   | payer AVAILABLE -A, payer HELD +A; gateway AVAILABLE -B, gateway HELD +B       |
| PVP    | payer HELD -A, gateway AVAILABLE +A; gateway HELD -B, payee AVAILABLE +B       |
| DVP    | as PVP, with the title's move in the same transaction                          |
| UNHOLD | the HOLD reversed                                                              |

(in one currency a DvP is one DVP entry, buyer AVAILABLE -A, seller AVAILABLE +A, title moved,
with no bridge leg). The gateway's core balance plus its bridge balance, per currency, is what a
settlement never changes: it pays out on one side what it receives on the other.

The decision is the one record that says which way a settlement goes: the first decision wins
(a COMMIT turns into ABORT only on the bridge's word that its leg can never commit), and after
COMMIT the core's leg only moves held money, so it cannot fail.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from condpay.ids import settlement_id_for

from settlement.errors import Reason, SettlementError, insufficient_funds, not_found
from settlement.ledger import loans, titles
from settlement.ledger.commands import (
    Command,
    check_debit,
    check_incoming,
    check_not_expired,
    existing_wallet,
)
from settlement.ledger.records import (
    Bucket,
    ConcurrentDuplicate,
    Decision,
    EntryKind,
    QuoteRecord,
    Reads,
    SettlementKind,
    SettlementRecord,
    SettlementState,
)
from settlement.ledger.working_set import Leg, WorkingSet, World
from wallets import limit_day

# Bridge transfer states that mean its leg can never commit.
BRIDGE_NEVER_COMMITS: Final = frozenset({"ABORTED", "EXPIRED", "REJECTED"})


def derive_settlement_id(caller: str, request_id: str) -> str:
    return settlement_id_for(caller, request_id)


def transfer_id(settlement_id: str, attempt: int) -> str:
    """The bridge transfer of an attempt, chosen (and stored) before the bridge hears of it."""
    return f"{settlement_id}.{attempt}"


def _settlement_reads(world: World, settlement_id: str, gateway: str) -> Reads:
    found = world.settlements.get(settlement_id)
    if found is None:
        return Reads()
    wallets = {found.payer_wallet_id, found.payee_wallet_id, gateway}
    reads = Reads(
        wallet_ids=wallets,
        balance_keys={
            (found.payer_wallet_id, found.pay_currency),
            (gateway, found.pay_currency),
            (gateway, found.receive_currency),
            (found.payee_wallet_id, found.receive_currency),
        },
        title_ids={t for t in (found.title_id, found.delivered_title_id) if t},
    )
    if found.origin_loan_id:  # the sale of a defaulted loan's receipt: the surplus's borrower
        # (locked after the batch's other loans: a rare crossing with another batch is a
        # deadlock PostgreSQL breaks, and the engine retries)
        reads.loan_ids = {found.origin_loan_id}
        reads.wallet_ids.add(found.surplus_wallet_id)
        reads.balance_keys.add((found.surplus_wallet_id, found.receive_currency))
    return reads


def _bump(settlement: SettlementRecord, now_us: int) -> None:
    settlement.version += 1
    settlement.updated_at_us = now_us


def _usable_quote(
    ws: WorkingSet, quote_id: str, settlement_id: str, caller: str | None = None
) -> QuoteRecord:
    """The quote, if ``caller`` (None: the coordinator) asked for it, unused, and unexpired."""
    quote = ws.quote(quote_id)
    if quote is None or (caller is not None and quote.requested_by != caller):
        raise not_found(Reason.QUOTE_NOT_FOUND, "quote", quote_id)
    if quote.used_by and quote.used_by != settlement_id:
        raise SettlementError(
            Reason.QUOTE_ALREADY_USED,
            f"quote {quote_id} was used by settlement {quote.used_by}",
            metadata={"quote_id": quote_id, "settlement_id": quote.used_by},
        )
    if ws.now_us >= quote.expires_at_us:
        raise SettlementError(
            Reason.QUOTE_EXPIRED,
            f"quote {quote_id} expired; ask for a new one",
            metadata={"quote_id": quote_id, "expires_at_us": str(quote.expires_at_us)},
        )
    return quote


def _hold_gateway(ws: WorkingSet, gateway: str, currency: str, amount: int) -> Leg:
    """The gateway's side of a hold: refused (with the typed detail) if it lacks liquidity."""
    available = ws.balance(gateway, currency).available
    if available < amount:
        raise insufficient_funds(gateway, currency, amount, available)
    return Leg(gateway, Bucket.AVAILABLE, currency, -amount)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordQuote(Command):
    """Keep a bridge quote handed out by QuoteFx, so a settlement can hold its legs."""

    quote: QuoteRecord

    def reads(self) -> Reads:
        return Reads(quote_ids={self.quote.quote_id})

    def apply(self, ws: WorkingSet) -> QuoteRecord:
        found = ws.quote(self.quote.quote_id)
        if found is not None:
            return found
        quote = replace(self.quote, created_at_us=ws.now_us, is_new=True)
        ws.add(quote)
        return quote


@dataclass(frozen=True, slots=True, kw_only=True)
class Terms:
    """What the signed instruction (PvP or DvP) says."""

    payer: str
    pay_currency: str
    pay_minor: int
    payee: str
    receive_currency: str
    receive_minor: int
    quote_id: str
    title_id: str = ""
    title_units: int = 0
    expires_at_us: int


@dataclass(frozen=True, slots=True)
class PreparedLeg:
    """At market: the bridge's leg of the settlement's attempt, already PREPARED when the core
    holds its own (the coordinator's ``prepare_at_market``), reserved until ``expires_at_us``."""

    expires_at_us: int
    margin_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareSettlement(Command):
    """A new settlement. In one currency (DvP only) it commits at once and is FINAL. Across
    currencies it checks the quote and holds both legs (and escrows the title to the settlement):
    PREPARED, decided later by the coordinator; or, with the bridge's leg already prepared
    (``bridge_leg``, at market), decided in the same transaction by the rule of :class:`Decide`:
    COMMITTING."""

    settlement_id: str
    kind: SettlementKind
    terms: Terms
    gateway: str
    hold_ms: int
    # At market (the terms name no quote): the bridge's quote the server got for the amount to
    # arrive, kept in this transaction if the settlement takes it.
    market_quote: QuoteRecord | None = None
    # The sale of a defaulted loan's receipt (DisposeCollateral): the payee is the loan's
    # financier, paid up to what the loan is owed; the rest goes to its borrower.
    loan_id: str = ""
    # The attempt whose bridge transfer the settlement starts with (more than 1 when an earlier
    # try of the same call left that attempt's transfer on the bridge), and, at market, that
    # transfer if the bridge has already prepared it.
    attempt: int = 1
    bridge_leg: PreparedLeg | None = None

    def reads(self) -> Reads:
        t = self.terms
        quotes = {q for q in (t.quote_id, self.market_quote and self.market_quote.quote_id) if q}
        balances = {(t.payer, t.pay_currency), (t.payee, t.receive_currency)}
        wallets = {t.payer, t.payee}
        if t.pay_currency != t.receive_currency:  # only a PvP leg touches the gateway
            balances |= {(self.gateway, t.pay_currency), (self.gateway, t.receive_currency)}
            wallets.add(self.gateway)
        reads = Reads(
            settlement_ids={self.settlement_id},
            wallet_ids=wallets,
            balance_keys=balances,
            quote_ids=quotes,
        )
        if t.title_id:
            reads.title_ids = {t.title_id, *titles.child_ids(t.title_id)}
        if self.loan_id:
            reads.loan_ids = {self.loan_id}
        return reads

    def reads_after(self, world: World) -> Reads:
        loan = world.loans.get(self.loan_id) if self.loan_id else None
        if loan is None:
            return Reads()
        return Reads(
            wallet_ids={loan.borrower_wallet_id},
            balance_keys={(loan.borrower_wallet_id, loan.currency)},
        )

    def apply(self, ws: WorkingSet) -> SettlementRecord:
        t = self.terms
        if ws.settlement(self.settlement_id) is not None:  # a concurrent duplicate (or a collision)
            raise ConcurrentDuplicate(f"derived settlement id {self.settlement_id} already exists")
        existing_wallet(ws, t.payer)
        existing_wallet(ws, t.payee)
        check_not_expired(ws, t.expires_at_us)
        quote = None
        pay_minor = t.pay_minor  # at market: the quote's price, at most the signed amount
        if t.pay_currency != t.receive_currency:
            existing_wallet(ws, self.gateway)
            quote = self._quote(ws)
            pay_minor = quote.source_minor
        day = check_debit(ws, existing_wallet(ws, t.payer), t.pay_currency, pay_minor)
        if self.loan_id:  # the payee (the financier) receives its share only: checked there
            delivered, units, borrower = self._loan_title(ws)
        else:
            check_incoming(ws, existing_wallet(ws, t.payee), t.receive_currency, t.receive_minor)
            delivered, units, borrower = (self._title(ws) if t.title_id else ""), t.title_units, ""
        settlement = SettlementRecord(
            settlement_id=self.settlement_id,
            kind=self.kind,
            requested_by=self.caller,
            request_id=self.request_id,
            origin_payment_id="",
            origin_leg_id="",
            payer_wallet_id=t.payer,
            pay_currency=t.pay_currency,
            pay_minor=pay_minor,
            payee_wallet_id=t.payee,
            receive_currency=t.receive_currency,
            receive_minor=t.receive_minor,
            title_id=t.title_id,
            title_units=units,
            delivered_title_id=delivered,
            quote_id=quote.quote_id if quote else "",
            spread_minor=quote.spread_minor if quote else 0,
            rate_num=quote.rate_num if quote else 1,
            rate_den=quote.rate_den if quote else 1,
            provider_id=quote.provider_id if quote else "",
            quote_expires_at_us=quote.expires_at_us if quote else 0,
            transfer_id=transfer_id(self.settlement_id, self.attempt) if quote else "",
            bridge_state="",
            bridge_expires_at_us=0,
            decide_by_us=ws.now_us + self.hold_ms * 1000,
            decision=Decision.NONE,
            decided_at_us=0,
            abort_reason="",
            state=SettlementState.PREPARED,
            attempt=self.attempt if quote else 1,
            version=1,
            created_at_us=ws.now_us,
            updated_at_us=ws.now_us,
            origin_loan_id=self.loan_id,
            surplus_wallet_id=borrower,
            is_new=True,
        )
        ws.add(settlement)
        ws.record_spend(ws.balance(t.payer, t.pay_currency), pay_minor, day)
        if quote is None:  # one currency: nothing to wait for
            settlement.decision, settlement.decided_at_us = Decision.COMMIT, ws.now_us
            ws.post(
                EntryKind.DVP,
                self.request_id,
                self.caller,
                f"DvP {settlement.settlement_id}",
                _payee_legs(
                    ws,
                    settlement,
                    Leg(t.payer, Bucket.AVAILABLE, t.pay_currency, -t.pay_minor),
                    self.request_id,
                ),
            )
            _deliver(ws, settlement, self.request_id)
            settlement.state = SettlementState.FINAL
            return settlement
        if self.market_quote is None:
            ws.touch(quote)
            quote.used_by = self.settlement_id
        ws.post(
            EntryKind.HOLD,
            self.request_id,
            self.caller,
            f"{self.kind.value} {settlement.settlement_id} held",
            [
                Leg(t.payer, Bucket.AVAILABLE, t.pay_currency, -pay_minor),
                Leg(t.payer, Bucket.HELD, t.pay_currency, pay_minor),
                _hold_gateway(ws, self.gateway, t.receive_currency, t.receive_minor),
                Leg(self.gateway, Bucket.HELD, t.receive_currency, t.receive_minor),
            ],
        )
        _decide_prepared(ws, settlement, self.bridge_leg)
        return settlement

    def _quote(self, ws: WorkingSet) -> QuoteRecord:
        """The quote the settlement converts at: the one the instruction names, with exactly its
        amounts; or, at market, the one the server got, kept now (already used by this
        settlement) if its price is within the signed limit."""
        t = self.terms
        if self.market_quote is None:
            quote = _usable_quote(ws, t.quote_id, self.settlement_id, self.caller)
            offered = (quote.source_currency, quote.source_minor, quote.target_currency)
            if (*offered, quote.target_minor) != (
                t.pay_currency,
                t.pay_minor,
                t.receive_currency,
                t.receive_minor,
            ):
                raise SettlementError(
                    Reason.INSTRUCTION_MISMATCH,
                    f"quote {quote.quote_id} is {quote.source_minor} {quote.source_currency} for "
                    f"{quote.target_minor} {quote.target_currency}; the instruction says "
                    f"{t.pay_minor} {t.pay_currency} for {t.receive_minor} {t.receive_currency}",
                    metadata={"field": "quote_id", "quote_id": quote.quote_id},
                )
            return quote
        market = self.market_quote
        if (market.source_currency, market.target_currency, market.target_minor) != (
            t.pay_currency,
            t.receive_currency,
            t.receive_minor,
        ):
            # The bridge answered a quote for something else: nothing is settled on it.
            raise SettlementError(
                Reason.BRIDGE_REFUSED,
                f"the bridge's quote {market.quote_id} is not for {t.receive_minor} "
                f"{t.receive_currency} paid in {t.pay_currency}",
                metadata={"quote_id": market.quote_id, "bridge_reason": "QUOTE_OTHER_TERMS"},
            )
        if market.source_minor > t.pay_minor:
            raise SettlementError(
                Reason.QUOTE_ABOVE_LIMIT,
                f"{t.receive_minor} {t.receive_currency} minor units cost {market.source_minor} "
                f"{t.pay_currency} minor units at the bridge's quote {market.quote_id}; the "
                f"instruction pays at most {t.pay_minor}",
                metadata={
                    "field": "pay_minor",
                    "quote_id": market.quote_id,
                    "quoted_minor": str(market.source_minor),
                },
            )
        if ws.now_us >= market.expires_at_us:
            raise SettlementError(
                Reason.QUOTE_EXPIRED,
                f"the bridge's quote {market.quote_id} expired before it was used; retry",
                metadata={"quote_id": market.quote_id},
            )
        quote = replace(market, created_at_us=ws.now_us, used_by=self.settlement_id, is_new=True)
        ws.add(quote)
        return quote

    def _loan_title(self, ws: WorkingSet) -> tuple[str, int, str]:
        """The defaulted loan's receipt, sold whole to the payer and escrowed to this settlement
        until it commits; returns its id, its units and the loan's borrower."""
        t = self.terms
        title = loans.check_disposable(ws, self.loan_id, t.title_id)
        loan = ws.loan(self.loan_id)
        assert loan is not None
        if loan.financier_wallet_id != t.payee or loan.currency != t.receive_currency:
            raise SettlementError(
                Reason.INSTRUCTION_MISMATCH,
                f"loan {self.loan_id}'s proceeds go to {loan.financier_wallet_id} in "
                f"{loan.currency}",
                metadata={"field": "loan_id", "loan_id": self.loan_id},
            )
        # The proceeds are split: the financier (the payee) up to what the loan owes, the surplus
        # to the borrower. Each share is a credit like any other, bounded by its wallet's
        # balance cap (checked now, like every leg a settlement will pay).
        to_financier, surplus = loans.split_proceeds(loan, t.receive_minor)
        check_incoming(ws, existing_wallet(ws, t.payee), t.receive_currency, to_financier)
        borrower = existing_wallet(ws, loan.borrower_wallet_id)
        check_incoming(ws, borrower, loan.currency, surplus)
        titles.move(
            ws,
            title,
            "PLEDGED",
            title.holder_wallet_id,
            self.request_id,
            pledged_to=self.settlement_id,
        )
        return title.title_id, title.units, loan.borrower_wallet_id

    def _title(self, ws: WorkingSet) -> str:
        """Check the title and escrow the units delivered to this settlement (splitting off
        that part first if it is not the whole title); returns the delivered title's id."""
        t = self.terms
        title = titles.active_title(ws, t.title_id)
        titles.check_holder(title, t.payee)
        titles.check_free(title)
        if t.title_units > title.units:
            raise SettlementError(
                Reason.TITLE_UNITS_EXCEEDED,
                f"title {title.title_id} has {title.units} units, {t.title_units} were sold",
                metadata={"title_id": title.title_id, "units": str(title.units)},
            )
        if t.title_units < title.units:
            title, _rest = titles.split(ws, title, t.title_units, self.request_id)
        titles.move(
            ws,
            title,
            "PLEDGED",
            title.holder_wallet_id,
            self.request_id,
            pledged_to=self.settlement_id,
        )
        return title.title_id


def _deliver(ws: WorkingSet, settlement: SettlementRecord, request_id: str) -> None:
    if not settlement.delivered_title_id:
        return
    title = ws.title(settlement.delivered_title_id)
    assert title is not None
    assert title.pledged_to == settlement.settlement_id
    titles.move(ws, title, "DELIVERED", settlement.payer_wallet_id, request_id, pledged_to="")


def _free_title(ws: WorkingSet, settlement: SettlementRecord, request_id: str) -> None:
    """An aborted settlement's title is free again, or, sold from a defaulted loan, back in the
    loan's pledge for another sale."""
    if not settlement.delivered_title_id:
        return
    title = ws.title(settlement.delivered_title_id)
    assert title is not None
    assert title.pledged_to == settlement.settlement_id
    if settlement.origin_loan_id:
        titles.move(
            ws,
            title,
            "PLEDGED",
            title.holder_wallet_id,
            request_id,
            pledged_to=settlement.origin_loan_id,
        )
        return
    titles.move(ws, title, "RELEASED", title.holder_wallet_id, request_id, pledged_to="")


def _payee_legs(
    ws: WorkingSet, settlement: SettlementRecord, source: Leg, request_id: str
) -> list[Leg]:
    """``source`` (what pays, negative) and the payee's side of it: the payee takes it all, or,
    for a defaulted loan's receipt, the financier what the loan is owed and the borrower the
    rest (settlement/ledger/loans.py)."""
    amount = -source.amount
    if settlement.origin_loan_id:
        return loans.sale_legs(
            ws,
            settlement.origin_loan_id,
            settlement.delivered_title_id,
            source,
            amount,
            request_id,
        )
    payee = Leg(settlement.payee_wallet_id, Bucket.AVAILABLE, source.currency, amount)
    return [source, payee]


@dataclass(frozen=True, slots=True, kw_only=True)
class _SettlementStep(Command):
    """An internal step of the coordinator or the recovery sweep: guarded by the settlement's
    state (a step that already happened is a no-op), never stored as an operation."""

    settlement_id: str
    gateway: str

    def reads(self) -> Reads:
        return Reads(settlement_ids={self.settlement_id})

    def reads_after(self, world: World) -> Reads:
        return _settlement_reads(world, self.settlement_id, self.gateway)

    def _settlement(self, ws: WorkingSet) -> SettlementRecord:
        found = ws.settlement(self.settlement_id)
        if found is None:
            raise not_found(Reason.SETTLEMENT_NOT_FOUND, "settlement", self.settlement_id)
        return found


def _may_commit(
    ws: WorkingSet, s: SettlementRecord, bridge_expires_at_us: int, margin_ms: int
) -> bool:
    """The time half of the decision's rule: before ``decide_by``, and the bridge's reservation
    has more than the margin left."""
    return ws.now_us < s.decide_by_us and ws.now_us + margin_ms * 1000 < bridge_expires_at_us


def _decide_prepared(ws: WorkingSet, s: SettlementRecord, leg: PreparedLeg | None) -> None:
    """At market: a settlement just PREPARED whose bridge leg is prepared already is decided
    COMMIT in the same transaction if the decision's rule allows it (it stays PREPARED
    otherwise, for the coordinator to decide as it does any other)."""
    if leg is not None and _may_commit(ws, s, leg.expires_at_us, leg.margin_ms):
        s.bridge_state, s.bridge_expires_at_us = "PREPARED", leg.expires_at_us
        s.decision, s.state = Decision.COMMIT, SettlementState.COMMITTING
        s.decided_at_us = ws.now_us


@dataclass(frozen=True, slots=True, kw_only=True)
class Decide(_SettlementStep):
    """Record the decision. COMMIT is taken only while the bridge's leg is PREPARED and has at
    least ``margin_ms`` left, and before ``decide_by_us``; otherwise, and when asked, ABORT, which
    releases the core's holds in the same transaction (nothing can commit after it)."""

    decision: Decision
    bridge_state: str
    bridge_expires_at_us: int
    margin_ms: int
    reason: str

    def apply(self, ws: WorkingSet) -> SettlementRecord:
        s = self._settlement(ws)
        if s.decision is Decision.COMMIT and self.decision is Decision.ABORT:
            # Only the bridge's word that its leg can never commit turns a COMMIT around; the
            # core's leg has not moved (it moves only after the bridge's commit).
            if s.state is not SettlementState.COMMITTING or (
                self.bridge_state not in BRIDGE_NEVER_COMMITS
            ):
                return s
        elif s.decision is not Decision.NONE or s.state is not SettlementState.PREPARED:
            return s
        ws.touch(s)
        _bump(s, ws.now_us)
        s.bridge_state = self.bridge_state or s.bridge_state
        if self.bridge_expires_at_us:
            s.bridge_expires_at_us = self.bridge_expires_at_us
        commit_ok = (
            self.decision is Decision.COMMIT
            # COMMITTED: the bridge's leg already posted with exactly this settlement's terms
            # (the coordinator checked them): the decision log's rule is COMMIT.
            and self.bridge_state in ("PREPARED", "COMMITTED")
            and _may_commit(ws, s, s.bridge_expires_at_us, self.margin_ms)
        )
        s.decided_at_us = ws.now_us
        if commit_ok:
            s.decision, s.state = Decision.COMMIT, SettlementState.COMMITTING
            return s
        s.decision = Decision.ABORT
        s.abort_reason = self.reason if self.decision is Decision.ABORT else "DECISION_DEADLINE"
        legs = [
            Leg(self.gateway, Bucket.HELD, s.receive_currency, -s.receive_minor),
            Leg(self.gateway, Bucket.AVAILABLE, s.receive_currency, s.receive_minor),
        ]
        if not s.origin_payment_id:  # a payout keeps the payer's side held for the next attempt
            _give_back_spend(ws, s)
            legs[:0] = [
                Leg(s.payer_wallet_id, Bucket.HELD, s.pay_currency, -s.pay_minor),
                Leg(s.payer_wallet_id, Bucket.AVAILABLE, s.pay_currency, s.pay_minor),
            ]
        entry = ws.post(
            EntryKind.UNHOLD,
            f"{s.settlement_id}:unhold:{s.attempt}",
            self.caller,
            f"{s.kind.value} {s.settlement_id} aborted: {s.abort_reason}",
            legs,
        )
        _free_title(ws, s, entry.request_id)  # the title's history names the journal's entry
        s.state = SettlementState.ABORTING
        if self.bridge_state in BRIDGE_NEVER_COMMITS:
            _aborted(s)
        return s


def _give_back_spend(ws: WorkingSet, s: SettlementRecord) -> None:
    """An aborted settlement's amount no longer counts against the payer's daily cap (if the day
    it was counted on is still the current one)."""
    balance = ws.balance(s.payer_wallet_id, s.pay_currency)
    day = limit_day(s.created_at_us)
    if balance.spent_day == day and day == limit_day(ws.now_us):
        ws.record_spend(balance, -min(s.pay_minor, balance.spent_today), day)


def _aborted(s: SettlementRecord) -> None:
    """The bridge confirmed its leg never commits: ABORTED, or, for a payout, PENDING again (its
    money stays held for the payee; the next attempt gets a new quote and a new transfer)."""
    if not s.origin_payment_id:
        s.state = SettlementState.ABORTED
        return
    s.state = SettlementState.PENDING
    s.attempt += 1
    s.decision = Decision.NONE
    s.quote_id, s.receive_minor, s.spread_minor = "", 0, 0
    s.rate_num, s.rate_den, s.provider_id, s.quote_expires_at_us = 1, 1, "", 0
    s.transfer_id, s.bridge_state, s.bridge_expires_at_us = "", "", 0
    s.decided_at_us, s.decide_by_us = 0, 0  # abort_reason stays: why the last attempt failed


@dataclass(frozen=True, slots=True)
class BlockProof:
    """A bridge block holding a settlement's transfer, and its quorum certificate as verified
    against the pinned validator keys: what makes a COMMITTED settlement FINAL."""

    height: int
    header: bytes  # the block header's canonical encoding
    certificate: bytes  # JSON: block hash, signer ids, aggregate signature


def _final(ws: WorkingSet, s: SettlementRecord, proof: BlockProof) -> None:
    ws.touch(s)
    _bump(s, ws.now_us)
    s.block_height, s.block_header, s.certificate = proof.height, proof.header, proof.certificate
    s.state = SettlementState.FINAL


@dataclass(frozen=True, slots=True, kw_only=True)
class Complete(_SettlementStep):
    """After the bridge answered: a COMMITTING settlement whose bridge leg is COMMITTED posts the
    core's leg (COMMITTED); an ABORTING one whose bridge leg can never commit is ABORTED.

    ``proof``: the bridge leg's block with its verified quorum certificate, when the coordinator
    already has it: the committed settlement is then FINAL in the same transaction (what
    RecordFinality would do next), one write instead of two."""

    bridge_state: str
    proof: BlockProof | None = None

    def apply(self, ws: WorkingSet) -> SettlementRecord:
        s = self._settlement(ws)
        if s.state is SettlementState.COMMITTING and self.bridge_state == "COMMITTED":
            ws.touch(s)
            _bump(s, ws.now_us)
            s.bridge_state = self.bridge_state
            kind = EntryKind.DVP if s.kind is SettlementKind.DVP else EntryKind.PVP
            entry = ws.post(
                kind,
                f"{s.settlement_id}:commit:{s.attempt}",
                self.caller,
                f"{s.kind.value} {s.settlement_id} ({s.transfer_id})",
                [
                    Leg(s.payer_wallet_id, Bucket.HELD, s.pay_currency, -s.pay_minor),
                    Leg(self.gateway, Bucket.AVAILABLE, s.pay_currency, s.pay_minor),
                    *_payee_legs(
                        ws,
                        s,
                        Leg(self.gateway, Bucket.HELD, s.receive_currency, -s.receive_minor),
                        f"{s.settlement_id}:commit:{s.attempt}",
                    ),
                ],
            )
            _deliver(ws, s, entry.request_id)
            s.state = SettlementState.COMMITTED
            if self.proof is not None:
                _final(ws, s, self.proof)
        elif s.state is SettlementState.ABORTING and self.bridge_state in BRIDGE_NEVER_COMMITS:
            ws.touch(s)
            _bump(s, ws.now_us)
            s.bridge_state = self.bridge_state
            _aborted(s)
        return s


@dataclass(frozen=True, slots=True, kw_only=True)
class AttachQuote(_SettlementStep):
    """A PENDING payout (a contract's ``pay ... in <currency>``) takes the quote the coordinator
    got for it and holds the gateway's side: PREPARED, as a new settlement would be; or, with
    its attempt's bridge leg already prepared with that quote (``bridge_leg``, at market),
    decided in the same transaction by the rule of :class:`Decide`: COMMITTING. ``attempt``:
    the attempt the quote (and the leg) is for; a payout that has moved on to another is left
    as it is."""

    quote_id: str
    hold_ms: int
    attempt: int
    bridge_leg: PreparedLeg | None = None

    def reads(self) -> Reads:
        return Reads(settlement_ids={self.settlement_id}, quote_ids={self.quote_id})

    def reads_after(self, world: World) -> Reads:
        found = world.settlements.get(self.settlement_id)
        if found is None:
            return Reads()
        return Reads(
            wallet_ids={self.gateway, found.payee_wallet_id},
            balance_keys={
                (self.gateway, found.receive_currency),
                (found.payee_wallet_id, found.receive_currency),
            },
        )

    def apply(self, ws: WorkingSet) -> SettlementRecord:
        s = self._settlement(ws)
        if s.state is not SettlementState.PENDING or s.attempt != self.attempt:
            return s
        quote = _usable_quote(ws, self.quote_id, s.settlement_id)
        if (quote.source_currency, quote.source_minor, quote.target_currency) != (
            s.pay_currency,
            s.pay_minor,
            s.receive_currency,
        ):
            raise AssertionError(f"quote {quote.quote_id} is not for payout {s.settlement_id}")
        ws.touch(s)
        ws.touch(quote)
        quote.used_by = s.settlement_id
        _bump(s, ws.now_us)
        s.quote_id, s.receive_minor = quote.quote_id, quote.target_minor
        s.spread_minor, s.rate_num, s.rate_den = quote.spread_minor, quote.rate_num, quote.rate_den
        s.provider_id, s.quote_expires_at_us = quote.provider_id, quote.expires_at_us
        s.transfer_id = transfer_id(s.settlement_id, s.attempt)
        s.decide_by_us = ws.now_us + self.hold_ms * 1000
        s.state = SettlementState.PREPARED
        ws.post(
            EntryKind.HOLD,
            f"{s.settlement_id}:hold:{s.attempt}",
            self.caller,
            f"payout {s.settlement_id} held",
            [
                _hold_gateway(ws, self.gateway, s.receive_currency, s.receive_minor),
                Leg(self.gateway, Bucket.HELD, s.receive_currency, s.receive_minor),
            ],
        )
        _decide_prepared(ws, s, self.bridge_leg)
        return s


@dataclass(frozen=True, slots=True, kw_only=True)
class SkipAttempt(_SettlementStep):
    """A PENDING payout whose attempt ``attempt`` got no bridge leg it can use (the bridge
    refused it, or the leg it prepared was refused by the core, or aborted or expired since):
    the next attempt, with a transfer id of its own, after the backoff that an attempt's number
    sets (settlement/coordination/recovery.py). Nothing moves. A payout already past that
    attempt, or no longer PENDING, is left as it is."""

    attempt: int
    reason: str

    def apply(self, ws: WorkingSet) -> SettlementRecord:
        s = self._settlement(ws)
        if s.state is not SettlementState.PENDING or s.attempt != self.attempt:
            return s
        ws.touch(s)
        _bump(s, ws.now_us)
        s.attempt += 1
        s.abort_reason = self.reason
        return s


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordFinality(_SettlementStep):
    """A COMMITTED settlement whose bridge block carries a verified quorum certificate: FINAL."""

    proof: BlockProof

    def reads_after(self, world: World) -> Reads:
        return Reads()

    def apply(self, ws: WorkingSet) -> SettlementRecord:
        s = self._settlement(ws)
        if s.state is SettlementState.COMMITTED:
            _final(ws, s, self.proof)
        return s
