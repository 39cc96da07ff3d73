"""Inventory loans on warehouse receipts as ledger commands (docs/financing.md).

A loan is opened by one document both sides signed: in one transaction the receipt is pledged to
the loan (it must be active, held by the borrower and pledged or escrowed nowhere else: double
pledging is the fraud the design starts from) and the principal moves from the financier to the
borrower. From then on its collateral is watched: the price oracle's valuations and the stock
counts the warehouse signs with its sensor quorum change the collateral's value, and every change
of what is owed or of what secures it re-checks the margin rule (settlement/ledger/loan_math.py):

    OPEN ──(value falls, stock spoiled or missing)──> MARGIN_CALL ──(cured in time)──> OPEN
    OPEN | MARGIN_CALL ──(repaid in full)──> REPAID          (every pledge released with it)
    OPEN ──(maturity, unpaid)──> DEFAULTED;  MARGIN_CALL ──(cure deadline)──> DEFAULTED
    DEFAULTED ──(RETAIN: at once; SELL: the last receipt sold)──> DISPOSED

Deadlines are the loans table itself (``deadline_at_us``): every replica's sweep may fire one;
the command runs under the loan's row lock and does nothing to a loan no longer due, so a
default happens once. The sale of a defaulted loan's receipt is a delivery versus payment
(settlement/ledger/settlements.py, ``loan_id``): the proceeds pay the financier up to what is
owed and the borrower the rest, in the settlement's own transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final

from condpay.ids import loan_id_for

from settlement import limits
from settlement.errors import Reason, SettlementError, not_found
from settlement.ledger import loan_math, titles
from settlement.ledger.attestations import (
    DEFAULT_LIMITS,
    OracleSet,
    Submission,
    check_times,
    verify_oracle_signatures,
)
from settlement.ledger.commands import (
    Command,
    check_not_expired,
    existing_wallet,
    pay_available,
)
from settlement.ledger.loan_math import Pledged
from settlement.ledger.records import (
    Bucket,
    ConcurrentDuplicate,
    EntryKind,
    LoanEventRecord,
    LoanRecord,
    LoanState,
    Reads,
    TitleRecord,
)
from settlement.ledger.working_set import Leg, WorkingSet, World
from wallets.loan_documents import CollateralStatement, LoanTerms

WAREHOUSE_RECEIPT: Final = "warehouse_receipt"
SWEEPER: Final = "system/loan-deadline-sweep"
MATURITY_UNPAID: Final = "MATURITY_UNPAID"
CURE_PERIOD_EXPIRED: Final = "CURE_PERIOD_EXPIRED"


def derive_loan_id(caller: str, request_id: str) -> str:
    return loan_id_for(caller, request_id)


def sensors(loan: LoanRecord) -> list[str]:
    return [s for s in loan.sensor_oracle_ids.split(",") if s]


def owed(loan: LoanRecord) -> int:
    return loan_math.owed(
        loan.principal_outstanding_minor,
        loan.fee_outstanding_minor,
        loan.interest_outstanding_minor,
        loan.interest_remainder,
    )


def interest_at(loan: LoanRecord, now_us: int) -> tuple[int, int]:
    """The interest (whole fen, carried fraction) a loan owes at ``now_us``: what is stored,
    plus what accrued since on a live loan (a read's view; commands accrue it for good)."""
    if not loan.state.live or now_us <= loan.accrued_at_us:
        return loan.interest_outstanding_minor, loan.interest_remainder
    whole, remainder = loan_math.accrue(
        loan.principal_outstanding_minor,
        loan.rate_bps,
        now_us - loan.accrued_at_us,
        loan.interest_remainder,
    )
    return loan.interest_outstanding_minor + whole, remainder


def owed_at(loan: LoanRecord, now_us: int) -> int:
    """What repays the loan at ``now_us`` (less what a sale already recovered)."""
    interest, remainder = interest_at(loan, now_us)
    return (
        loan_math.owed(
            loan.principal_outstanding_minor, loan.fee_outstanding_minor, interest, remainder
        )
        - loan.recovered_minor
    )


def collateral(loan: LoanRecord) -> list[Pledged]:
    return loan_math.read_collateral(loan.collateral_json)


def lending_value(loan: LoanRecord, items: list[Pledged] | None = None) -> int:
    items = collateral(loan) if items is None else items
    return loan_math.lending_value(items, loan.unit_price_minor, loan.haircut_bps)


# -- the pieces every command shares -----------------------------------------------------------
def _loan(ws: WorkingSet, loan_id: str) -> LoanRecord:
    loan = ws.loan(loan_id)
    if loan is None:
        raise not_found(Reason.LOAN_NOT_FOUND, "loan", loan_id)
    return loan


def agent(loan: LoanRecord, caller: str) -> bool:
    """The two callers the loan document names act on it; nobody else learns it exists."""
    return caller in (loan.borrower_agent, loan.financier_agent)


def _acting_loan(ws: WorkingSet, loan_id: str) -> LoanRecord:
    """The loan, if the calling agent may act on it; LOAN_NOT_FOUND otherwise (as if none)."""
    loan = ws.loan(loan_id)
    if loan is None or not agent(loan, ws.caller):
        raise not_found(Reason.LOAN_NOT_FOUND, "loan", loan_id)
    return loan


def _live(loan: LoanRecord) -> None:
    if not loan.state.live:
        raise SettlementError(
            Reason.LOAN_NOT_OPEN,
            f"loan {loan.loan_id} is {loan.state.value}",
            metadata={"loan_id": loan.loan_id, "state": loan.state.value},
        )


def _event(
    ws: WorkingSet,
    loan: LoanRecord,
    kind: str,
    request_id: str,
    *,
    amount_minor: int = 0,
    title_id: str = "",
    units: int = 0,
    detail: str = "",
    event_id: str = "",
) -> None:
    """Record one change of ``loan`` (touched already): its version counts its events."""
    loan.events.append(
        LoanEventRecord(
            kind, event_id, amount_minor, title_id, units, detail, request_id, ws.now_us, ws.caller
        )
    )
    loan.version += 1
    loan.updated_at_us = ws.now_us


def _accrue(ws: WorkingSet, loan: LoanRecord) -> None:
    """Interest up to now on the principal outstanding (a live loan only: it stops at default)."""
    if not loan.state.live or ws.now_us <= loan.accrued_at_us:
        return
    loan.interest_outstanding_minor, loan.interest_remainder = interest_at(loan, ws.now_us)
    loan.accrued_at_us = ws.now_us


def _reassess(ws: WorkingSet, loan: LoanRecord, request_id: str) -> None:
    """After any change of what a live loan owes or of what secures it: call the margin, or
    lift the call when it is cured (owed within the lending value, no failed stock)."""
    if not loan.state.live:
        return
    items = collateral(loan)
    lending = lending_value(loan, items)
    now_owed = owed(loan)
    failed = loan_math.failed_stock(items)
    if loan.state is LoanState.OPEN:
        if failed or loan_math.margin_breached(now_owed, lending, loan.margin_call_bps):
            loan.state = LoanState.MARGIN_CALL
            loan.cure_by_us = ws.now_us + loan.cure_period_s * 1_000_000
            loan.deadline_at_us = min(loan.maturity_at_us, loan.cure_by_us)
            why = (
                f"stock {'/'.join(failed)} reported spoiled or missing"
                if failed
                else (f"owed {now_owed} against a lending value of {lending}")
            )
            _event(ws, loan, "MARGIN_CALL", request_id, amount_minor=now_owed, detail=why)
    elif not failed and loan_math.within_limit(now_owed, lending):
        loan.state = LoanState.OPEN
        loan.cure_by_us = 0
        loan.deadline_at_us = loan.maturity_at_us
        _event(ws, loan, "CURED", request_id, amount_minor=now_owed)


def _release(ws: WorkingSet, loan: LoanRecord, title: TitleRecord, request_id: str) -> None:
    """Free a pledged receipt back to its holder (the borrower)."""
    titles.move(ws, title, "RELEASED", title.holder_wallet_id, request_id, pledged_to="")
    _event(ws, loan, "RELEASED", request_id, title_id=title.title_id, units=title.units)


def _pledged_title(ws: WorkingSet, loan: LoanRecord, title_id: str) -> TitleRecord:
    title = ws.title(title_id)
    if title is None or title.pledged_to != loan.loan_id:
        raise SettlementError(
            Reason.TITLE_NOT_IN_LOAN,
            f"title {title_id} is not pledged to loan {loan.loan_id}",
            metadata={"title_id": title_id, "loan_id": loan.loan_id},
        )
    return title


def _free_receipt(ws: WorkingSet, title_id: str, borrower: str) -> TitleRecord:
    """A receipt that may be pledged: a warehouse receipt, active, the borrower's, free."""
    title = titles.active_title(ws, title_id)
    titles.check_holder(title, borrower)
    titles.check_free(title)
    if title.kind != WAREHOUSE_RECEIPT:
        raise SettlementError(
            Reason.INVALID_LOAN_TERMS,
            f"title {title_id} is a {title.kind}; a loan is secured by warehouse receipts",
            metadata={"field": "title_id", "title_id": title_id},
        )
    return title


def _loan_reads(world: World, loan_id: str, *extra_titles: str) -> Reads:
    loan = world.loans.get(loan_id)
    if loan is None:
        return Reads()
    held = {p.title_id for p in collateral(loan)}
    return Reads(
        wallet_ids={loan.borrower_wallet_id, loan.financier_wallet_id},
        title_ids=held | set(extra_titles),
    )


# -- opening -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class OpenLoan(Command):
    """Both sides' signatures are verified by the API layer (wallet keys never change)."""

    loan_id: str
    terms: LoanTerms

    def reads(self) -> Reads:
        t = self.terms
        return Reads(
            loan_ids={self.loan_id},
            title_ids={t.title_id},
            wallet_ids={t.borrower, t.financier},
            balance_keys={(t.financier, t.currency), (t.borrower, t.currency)},
            oracle_ids={
                t.price_oracle,
                t.warehouse_oracle,
                *filter(None, t.sensor_oracles.split(",")),
            },
            registry="read",
        )

    def apply(self, ws: WorkingSet) -> LoanRecord:
        t = self.terms
        if ws.loan(self.loan_id) is not None:  # a concurrent duplicate (or a collision)
            raise ConcurrentDuplicate(f"derived loan id {self.loan_id} already exists")
        existing_wallet(ws, t.borrower)
        existing_wallet(ws, t.financier)
        check_not_expired(ws, t.expires_at_us)
        for oracle_id in sorted(self.reads().oracle_ids):
            oracle = ws.world.oracles.get(oracle_id)
            if oracle is None:
                raise not_found(Reason.ORACLE_NOT_FOUND, "oracle", oracle_id)
            if oracle.revoked:
                raise SettlementError(
                    Reason.ORACLE_REVOKED,
                    f"oracle {oracle_id!r} is revoked",
                    metadata={"id": oracle_id},
                )
        title = _free_receipt(ws, t.title_id, t.borrower)
        items = [Pledged(title.title_id, title.units, title.units, "GOOD", 0)]
        lending = loan_math.lending_value(items, t.unit_price_minor, t.haircut_bps)
        if not loan_math.within_limit(t.principal_minor + t.fee_minor, lending):
            raise SettlementError(
                Reason.LOAN_LIMIT_EXCEEDED,
                f"principal and fee {t.principal_minor + t.fee_minor} exceed the receipt's "
                f"lending value {lending} ({title.units} units at {t.unit_price_minor} less a "
                f"{t.haircut_bps} bps haircut)",
                metadata={"lending_value_minor": str(lending), "field": "principal_minor"},
            )
        pay_available(
            ws,
            self,
            EntryKind.LOAN,
            f"loan {self.loan_id}",
            t.financier,
            t.borrower,
            t.currency,
            t.principal_minor,
        )
        titles.move(
            ws, title, "PLEDGED", title.holder_wallet_id, self.request_id, pledged_to=self.loan_id
        )
        loan = LoanRecord(
            loan_id=self.loan_id,
            opened_by=self.caller,
            request_id=self.request_id,
            borrower_wallet_id=t.borrower,
            financier_wallet_id=t.financier,
            borrower_agent=t.borrower_agent,
            financier_agent=t.financier_agent,
            currency=t.currency,
            principal_minor=t.principal_minor,
            principal_outstanding_minor=t.principal_minor,
            fee_minor=t.fee_minor,
            fee_outstanding_minor=t.fee_minor,
            rate_bps=t.rate_bps,
            interest_outstanding_minor=0,
            interest_remainder=0,
            accrued_at_us=ws.now_us,
            repaid_minor=0,
            recovered_minor=0,
            surplus_minor=0,
            maturity_at_us=t.maturity_at_us,
            unit_price_minor=t.unit_price_minor,
            price_observed_at_us=0,
            haircut_bps=t.haircut_bps,
            margin_call_bps=t.margin_call_bps,
            cure_period_s=t.cure_period_s,
            price_oracle_id=t.price_oracle,
            warehouse_oracle_id=t.warehouse_oracle,
            sensor_oracle_ids=t.sensor_oracles,
            sensor_threshold=t.sensor_threshold,
            disposal=t.disposal,
            collateral_json=loan_math.write_collateral(items),
            state=LoanState.OPEN,
            cure_by_us=0,
            deadline_at_us=t.maturity_at_us,
            terminal_reason="",
            version=0,
            created_at_us=ws.now_us,
            updated_at_us=ws.now_us,
            is_new=True,
        )
        ws.add(loan)
        _event(
            ws,
            loan,
            "OPENED",
            self.request_id,
            amount_minor=t.principal_minor,
            title_id=title.title_id,
            units=title.units,
        )
        return loan


# -- repayment -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Repaid:
    loan: LoanRecord
    released_title_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RepayLoan(Command):
    """The payer's signature is verified by the API layer; the payer must be the borrower (the
    collateral it frees can only go back to its holder)."""

    loan_id: str
    payer: str
    amount_minor: int
    release_title_id: str
    release_units: int
    expires_at_us: int

    def reads(self) -> Reads:
        return Reads(loan_ids={self.loan_id}, wallet_ids={self.payer})

    def reads_after(self, world: World) -> Reads:
        loan = world.loans.get(self.loan_id)
        if loan is None:
            return Reads()
        extra = (self.release_title_id, *titles.child_ids(self.release_title_id))
        reads = _loan_reads(world, self.loan_id, *(extra if self.release_title_id else ()))
        reads.balance_keys = {
            (self.payer, loan.currency),
            (loan.financier_wallet_id, loan.currency),
        }
        return reads

    def apply(self, ws: WorkingSet) -> Repaid:
        loan = _acting_loan(ws, self.loan_id)
        if self.payer != loan.borrower_wallet_id:
            raise SettlementError(
                Reason.NOT_LOAN_BORROWER,
                f"only the borrower's wallet repays loan {loan.loan_id} (its collateral goes back "
                "to the borrower)",
                metadata={"loan_id": loan.loan_id, "wallet_id": self.payer},
            )
        check_not_expired(ws, self.expires_at_us)
        _live(loan)
        ws.touch(loan)
        _accrue(ws, loan)
        now_owed = owed(loan)
        if self.amount_minor > now_owed:
            raise SettlementError(
                Reason.REPAYMENT_EXCEEDS_OWED,
                f"loan {loan.loan_id} owes {now_owed}; {self.amount_minor} were offered",
                metadata={"loan_id": loan.loan_id, "owed_minor": str(now_owed)},
            )
        principal_before = loan.principal_outstanding_minor
        split = loan_math.allocate(
            self.amount_minor,
            loan.interest_outstanding_minor,
            loan.interest_remainder,
            loan.fee_outstanding_minor,
            loan.principal_outstanding_minor,
        )
        pay_available(
            ws,
            self,
            EntryKind.LOAN_REPAYMENT,
            f"loan {loan.loan_id} repaid",
            self.payer,
            loan.financier_wallet_id,
            loan.currency,
            self.amount_minor,
        )
        if split.interest_cleared:
            loan.interest_outstanding_minor, loan.interest_remainder = 0, 0
        else:
            loan.interest_outstanding_minor -= split.interest
        loan.fee_outstanding_minor -= split.fee
        loan.principal_outstanding_minor -= split.principal
        loan.repaid_minor += self.amount_minor
        _event(
            ws,
            loan,
            "REPAID",
            self.request_id,
            amount_minor=self.amount_minor,
            detail=f"interest {split.interest}, fee {split.fee}, principal {split.principal}",
        )
        if owed(loan) == 0:
            for item in collateral(loan):
                _release(ws, loan, _pledged_title(ws, loan, item.title_id), self.request_id)
            loan.collateral_json = loan_math.write_collateral([])
            loan.state, loan.cure_by_us, loan.deadline_at_us = LoanState.REPAID, 0, None
            return Repaid(loan, "")
        released = ""
        if self.release_units:
            released = self._release_part(ws, loan, split.principal, principal_before)
        _reassess(ws, loan, self.request_id)
        return Repaid(loan, released)

    def _release_part(
        self, ws: WorkingSet, loan: LoanRecord, retired: int, principal_before: int
    ) -> str:
        """Free ``release_units`` of one pledged receipt, within the proportion this repayment
        retires and keeping the rest within the opening limit; returns the freed title's id."""
        items = collateral(loan)
        title = _pledged_title(ws, loan, self.release_title_id)
        allowed = loan_math.releasable(sum(p.units for p in items), retired, principal_before)
        if self.release_units > allowed:
            raise SettlementError(
                Reason.RELEASE_EXCEEDS_REPAYMENT,
                f"this repayment retires {retired} of {principal_before} principal: it frees at "
                f"most {allowed} units",
                metadata={"loan_id": loan.loan_id, "releasable_units": str(allowed)},
            )
        if self.release_units > title.units:
            raise SettlementError(
                Reason.TITLE_UNITS_EXCEEDED,
                f"title {title.title_id} has {title.units} units",
                metadata={"title_id": title.title_id, "units": str(title.units)},
            )
        entry = next(p for p in items if p.title_id == title.title_id)
        items.remove(entry)
        if self.release_units == title.units:
            freed = title
            _release(ws, loan, title, self.request_id)
        else:
            # The part kept pledged counts the units present first against those freed (in the
            # financier's favour: any shortfall stays with the loan's part).
            ws.touch(title)
            title.pledged_to = ""
            freed, kept = titles.split(ws, title, self.release_units, self.request_id)
            titles.move(
                ws, kept, "PLEDGED", kept.holder_wallet_id, self.request_id, pledged_to=loan.loan_id
            )
            present = max(0, entry.present - self.release_units)
            items.append(
                Pledged(kept.title_id, kept.units, present, entry.condition, entry.observed_at_us)
            )
            _event(
                ws, loan, "RELEASED", self.request_id, title_id=freed.title_id, units=freed.units
            )
        lending = lending_value(loan, items)
        if not loan_math.within_limit(owed(loan), lending):
            raise SettlementError(
                Reason.LOAN_LIMIT_EXCEEDED,
                f"what would stay pledged lends {lending}; the loan owes {owed(loan)}",
                metadata={"loan_id": loan.loan_id, "lending_value_minor": str(lending)},
            )
        loan.collateral_json = loan_math.write_collateral(items)
        return freed.title_id


# -- more collateral -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class PledgeToLoan(Command):
    """The holder's signature is verified by the API layer; the holder must be the borrower."""

    loan_id: str
    title_id: str
    holder: str
    expires_at_us: int

    def reads(self) -> Reads:
        return Reads(loan_ids={self.loan_id}, title_ids={self.title_id})

    def apply(self, ws: WorkingSet) -> LoanRecord:
        loan = _acting_loan(ws, self.loan_id)
        if self.holder != loan.borrower_wallet_id:
            raise SettlementError(
                Reason.NOT_LOAN_BORROWER,
                f"only the borrower pledges receipts to loan {loan.loan_id}",
                metadata={"loan_id": loan.loan_id, "wallet_id": self.holder},
            )
        check_not_expired(ws, self.expires_at_us)
        _live(loan)
        items = collateral(loan)
        if len(items) >= limits.LOAN_RECEIPTS_MAX:
            raise SettlementError(
                Reason.LOAN_RECEIPTS_EXCEEDED,
                f"loan {loan.loan_id} holds {len(items)} receipts, the most a loan may",
                metadata={"loan_id": loan.loan_id, "limit": str(limits.LOAN_RECEIPTS_MAX)},
            )
        title = _free_receipt(ws, self.title_id, self.holder)
        ws.touch(loan)
        _accrue(ws, loan)
        titles.move(
            ws, title, "PLEDGED", title.holder_wallet_id, self.request_id, pledged_to=loan.loan_id
        )
        items.append(Pledged(title.title_id, title.units, title.units, "GOOD", 0))
        loan.collateral_json = loan_math.write_collateral(items)
        _event(ws, loan, "PLEDGED", self.request_id, title_id=title.title_id, units=title.units)
        _reassess(ws, loan, self.request_id)
        return loan


# -- collateral attestations ---------------------------------------------------------------------
def may_attest(loan: LoanRecord, caller: str) -> bool:
    """Its oracles attest to a loan, and its agents relay; to anyone else it does not exist."""
    named = {loan.price_oracle_id, loan.warehouse_oracle_id, *sensors(loan)}
    return agent(loan, caller) or caller in {f"oracle/{o}" for o in named}


def verify_collateral_signatures(
    statement: CollateralStatement, loan: LoanRecord, submission: Submission, oracles: OracleSet
) -> None:
    """Who signed a collateral statement, checked against the registry at the statement's oracle
    set version (pure, CPU-heavy for a BLS aggregate: the API runs it beside the event loop; the
    write batch then only confirms that version is still the current one, which makes this
    verification hold for the registry as it is): every signer one the loan names for the
    statement's kind (ORACLE_NOT_IN_LOAN), registered, unrevoked, of its scheme; a VALUATION
    signed by the price oracle; a STOCK by the warehouse and ``sensor_threshold`` sensors
    (QUORUM_NOT_MET); every signature valid (SIGNATURE_INVALID)."""
    if oracles.version != statement.oracle_set_version:
        raise _set_changed(statement.oracle_set_version, oracles.version)
    if statement.kind == "VALUATION":
        sources, threshold, attester = [loan.price_oracle_id], 1, "price oracle"
    else:
        sources = [loan.warehouse_oracle_id, *sensors(loan)]
        threshold, attester = 1 + loan.sensor_threshold, "warehouse and sensor quorum"
    listed = {i for i, _ in submission.ed25519_signatures}
    if submission.bls_aggregate is not None:
        listed |= set(submission.bls_aggregate[0])
    strangers = sorted(listed - set(sources))
    if strangers:
        raise SettlementError(
            Reason.ORACLE_NOT_IN_LOAN,
            f"{strangers[0]!r} is not the loan's {attester}",
            metadata={"signer_id": strangers[0]},
        )
    counted = verify_oracle_signatures(submission, sources, threshold, oracles, attester)
    if statement.kind == "STOCK" and loan.warehouse_oracle_id not in counted:
        raise SettlementError(
            Reason.QUORUM_NOT_MET,
            f"a stock count needs the warehouse's own signature ({loan.warehouse_oracle_id})",
            metadata={"oracle": loan.warehouse_oracle_id},
        )


def _set_changed(signed_for: int, current: int) -> SettlementError:
    return SettlementError(
        Reason.ORACLE_SET_CHANGED,
        f"signed for oracle set version {signed_for}; the current one is {current}",
        metadata={"statement_version": str(signed_for), "current_version": str(current)},
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AttestCollateral(Command):
    """A ``condpay.collateral.v1`` statement whose signatures the API layer verified
    (:func:`verify_collateral_signatures`) against the registry at the statement's oracle set
    version. Under the loan's lock and the registry's: that version is still the current one (a
    rotation or a revocation since refuses it), the loan is live, the statement is in its
    currency, fresh, of an event id the loan has not seen, about a receipt pledged to it, and
    newer than the observation in force."""

    statement: CollateralStatement

    def reads(self) -> Reads:
        s = self.statement
        return Reads(
            loan_ids={s.loan_id}, loan_event_ids={(s.loan_id, s.event_id)}, registry="read"
        )

    def apply(self, ws: WorkingSet) -> LoanRecord:
        s = self.statement
        loan = ws.loan(s.loan_id)
        if loan is None or not may_attest(loan, ws.caller):
            raise not_found(Reason.LOAN_NOT_FOUND, "loan", s.loan_id)
        _live(loan)
        if s.currency != loan.currency:
            raise SettlementError(
                Reason.ATTESTATION_WRONG_LOAN,
                f"the statement is in {s.currency}; loan {loan.loan_id} is in {loan.currency}",
                metadata={"field": "currency"},
            )
        version = ws.world.registry_version or 0
        if s.oracle_set_version != version:
            raise _set_changed(s.oracle_set_version, version)
        check_times(s, ws.now_us, DEFAULT_LIMITS)
        if (loan.loan_id, s.event_id) in ws.world.seen_loan_events:
            raise SettlementError(
                Reason.EVENT_ALREADY_SEEN,
                f"loan {loan.loan_id} already recorded event {s.event_id}",
                metadata={"loan_id": loan.loan_id, "event_id": s.event_id},
            )
        items = collateral(loan)
        entry = next((p for p in items if p.title_id == s.title_id), None)
        if s.kind == "VALUATION":
            if s.observed_at_us <= loan.price_observed_at_us:
                raise _superseded(loan.price_observed_at_us)
        else:
            if entry is None:
                raise SettlementError(
                    Reason.TITLE_NOT_IN_LOAN,
                    f"title {s.title_id} is not pledged to loan {loan.loan_id}",
                    metadata={"title_id": s.title_id, "loan_id": loan.loan_id},
                )
            if s.units_present > entry.units:
                raise SettlementError(
                    Reason.ATTESTATION_MALFORMED,
                    f"{s.units_present} units present of a {entry.units}-unit receipt",
                    metadata={"field": "units_present"},
                )
            if s.observed_at_us <= entry.observed_at_us:
                raise _superseded(entry.observed_at_us)
        ws.touch(loan)
        _accrue(ws, loan)
        ws.see_loan_event(loan.loan_id, s.event_id)
        if s.kind == "VALUATION":
            loan.unit_price_minor, loan.price_observed_at_us = s.unit_price_minor, s.observed_at_us
            _event(
                ws,
                loan,
                "VALUATION",
                self.request_id,
                event_id=s.event_id,
                amount_minor=s.unit_price_minor,
            )
        else:
            assert entry is not None
            entry.present, entry.condition, entry.observed_at_us = (
                s.units_present,
                s.condition,
                s.observed_at_us,
            )
            loan.collateral_json = loan_math.write_collateral(items)
            _event(
                ws,
                loan,
                "STOCK",
                self.request_id,
                event_id=s.event_id,
                title_id=s.title_id,
                units=s.units_present,
                detail=s.condition,
            )
        _reassess(ws, loan, self.request_id)
        return loan


def _superseded(newest_us: int) -> SettlementError:
    return SettlementError(
        Reason.ATTESTATION_STALE,
        "observed no later than the observation already in force",
        metadata={"observed_in_force_at_us": str(newest_us)},
    )


# -- deadlines -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class FireLoanDeadline(Command):
    """The sweep's command: a live loan past maturity, or past its cure deadline, defaults; with
    disposal RETAIN its receipts go to the financier at once (DISPOSED); with SELL they stay
    pledged to the loan until the financier sells them. Does nothing to a loan not due."""

    loan_id: str
    AFTER_COMMIT_FAULT: ClassVar[str] = "loan_default"

    def reads(self) -> Reads:
        return Reads(loan_ids={self.loan_id})

    def reads_after(self, world: World) -> Reads:
        return _loan_reads(world, self.loan_id)

    def apply(self, ws: WorkingSet) -> LoanRecord | None:
        loan = ws.loan(self.loan_id)
        if loan is None or not loan.state.live or loan.deadline_at_us is None:
            return None
        if ws.now_us < loan.deadline_at_us:
            return None
        ws.touch(loan)
        _accrue(ws, loan)
        matured = ws.now_us >= loan.maturity_at_us
        reason = MATURITY_UNPAID if matured else CURE_PERIOD_EXPIRED
        loan.state, loan.deadline_at_us, loan.terminal_reason = LoanState.DEFAULTED, None, reason
        _event(ws, loan, "DEFAULTED", self.request_id, amount_minor=owed(loan), detail=reason)
        if loan.disposal == "RETAIN":
            for item in collateral(loan):
                title = _pledged_title(ws, loan, item.title_id)
                titles.move(
                    ws,
                    title,
                    "DELIVERED",
                    loan.financier_wallet_id,
                    self.request_id,
                    pledged_to="",
                )
                _event(
                    ws,
                    loan,
                    "DISPOSED",
                    self.request_id,
                    title_id=title.title_id,
                    units=title.units,
                    detail="RETAINED",
                )
            loan.collateral_json = loan_math.write_collateral([])
            loan.state = LoanState.DISPOSED
        return loan


# -- the sale of a defaulted loan's receipt (a DvP's payee side) ------------------------------
def check_disposable(ws: WorkingSet, loan_id: str, title_id: str) -> TitleRecord:
    """A receipt a defaulted loan (terms SELL) holds, for sale by the loan's financier agent."""
    loan = ws.loan(loan_id)
    if loan is None or ws.caller != loan.financier_agent:
        raise not_found(Reason.LOAN_NOT_FOUND, "loan", loan_id)
    if loan.state is not LoanState.DEFAULTED:
        raise SettlementError(
            Reason.LOAN_NOT_DEFAULTED,
            f"loan {loan_id} is {loan.state.value}: its collateral is sold only after a default",
            metadata={"loan_id": loan_id, "state": loan.state.value},
        )
    title = _pledged_title(ws, loan, title_id)
    titles.active_title(ws, title_id)
    return title


def split_proceeds(loan: LoanRecord, proceeds: int) -> tuple[int, int]:
    """(to the financier, to the borrower) of a defaulted loan's sale proceeds: the financier
    up to what the loan still owes (interest stopped at the default), the borrower the rest."""
    to_financier = min(proceeds, owed(loan) - loan.recovered_minor)
    return to_financier, proceeds - to_financier


def sale_legs(
    ws: WorkingSet,
    loan_id: str,
    title_id: str,
    source: Leg,
    proceeds: int,
    request_id: str,
) -> list[Leg]:
    """The receiving side of a sold receipt's proceeds (``source`` is where they come from):
    the financier up to what the loan owes, the rest to the borrower; the loan records the sale,
    and is DISPOSED when its last receipt is sold."""
    loan = _loan(ws, loan_id)
    ws.touch(loan)
    to_financier, surplus = split_proceeds(loan, proceeds)
    legs = [source, Leg(loan.financier_wallet_id, Bucket.AVAILABLE, loan.currency, to_financier)]
    if surplus:
        legs.append(Leg(loan.borrower_wallet_id, Bucket.AVAILABLE, loan.currency, surplus))
    legs = [leg for leg in legs if leg.amount]
    loan.recovered_minor += to_financier
    loan.surplus_minor += surplus
    items = [p for p in collateral(loan) if p.title_id != title_id]
    loan.collateral_json = loan_math.write_collateral(items)
    _event(
        ws,
        loan,
        "SOLD",
        request_id,
        amount_minor=proceeds,
        title_id=title_id,
        detail=f"financier {to_financier}, borrower {surplus}",
    )
    if not items:
        loan.state = LoanState.DISPOSED
        _event(ws, loan, "DISPOSED", request_id, detail="SOLD")
    return legs
