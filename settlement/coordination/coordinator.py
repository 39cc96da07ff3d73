"""Drives one settlement through the protocol of docs/settlement.md, from whatever state it is in:
the SettlePvP/SettleDvP handlers call it right after the settlement is prepared, the recovery
sweep calls it for anything a crash (of the core or of the bridge) left unfinished.

Every step is idempotent, so two replicas (or a handler and the sweep) driving the same
settlement at once is safe: the decision is one row, and the first decision wins; each bridge
call is idempotent by transfer id; each core step is guarded by the settlement's state.

    PENDING    --quote and prepare the bridge leg in one call--> COMMITTING   (a payout in
               another currency, at market; no usable leg: the next attempt, still PENDING)
    PREPARED   --prepare the bridge leg--> decide COMMIT | ABORT
    COMMITTING --commit the bridge leg, then the core's--> COMMITTED   (bridge refused: ABORT)
    ABORTING   --abort the bridge leg (a tombstone if it never arrived)--> ABORTED
    COMMITTED  --quorum certificate verified--> FINAL

A bridge answer no step expects is resolved by the decision log's rules (docs/settlement.md,
"Recovery"): a bridge leg COMMITTED with exactly this settlement's terms while the core has not
decided -> COMMIT; anything else (committed with other terms, committed after an ABORT decision,
a transfer the bridge no longer knows...) is STUCK: one critical log line, counted in
:attr:`Coordinator.stuck_count` (the runtime's ``stuck_settlements``), and the settlement is left
where it is for an operator; the sweep no longer drives it (no loop of refused calls).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Final, TypedDict

import grpc
import structlog
from google.protobuf.empty_pb2 import Empty

from bridges import MarketOrder, Quote, Transfer, TransferState
from bridges.errors import (
    BridgeError,
    Conflict,
    Forbidden,
    InsufficientFunds,
    InternalError,
    NotFound,
    QuorumUnavailable,
    QuoteUnusable,
    TransferAborted,
    TransferCommitted,
    Unauthenticated,
    Unavailable,
)
from settlement.clock import Clock
from settlement.coordination.bridge_link import BridgeLink, Verified
from settlement.errors import SettlementError
from settlement.faults import Faults
from settlement.ledger import settlements as steps
from settlement.ledger.commands import Command
from settlement.ledger.engine import LedgerEngine, OperationInfo
from settlement.ledger.records import (
    Decision,
    QuoteRecord,
    Reads,
    SettlementRecord,
    SettlementState,
)
from settlement.ledger.settlement_reads import SettlementReader
from settlement.ledger.working_set import WorkingSet, World

log = structlog.get_logger("condpay.coordinator")
COORDINATOR: Final = "system/settlement-coordinator"
# At market, the attempts whose bridge transfer a call tries to prepare before the core records
# anything (each one taken already means an earlier try of the same call stopped in between).
MARKET_ATTEMPTS: Final = 4
_serial = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Timing:
    """``hold_ms``: from preparing the core's legs to the last moment a COMMIT may be decided.
    ``margin_ms``: the bridge's reservation expires this much before that moment, and COMMIT is
    decided only while the bridge's reservation has at least this much left."""

    hold_ms: int = 30_000
    margin_ms: int = 5_000


class StepFields(TypedDict):
    method: str
    caller: str
    request_id: str
    request_hash: bytes
    store_outcome: bool
    settlement_id: str
    gateway: str


class _Capture:
    """A reply codec for internal steps: keeps the command's result, stores nothing."""

    def __init__(self) -> None:
        self.result: object = None

    def build(self, result: object, info: OperationInfo) -> Empty:
        self.result = result
        return Empty()

    def replay(self, stored: bytes) -> Empty:
        return Empty()


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotePayout(Command):
    """A payout's quote kept and attached in one transaction (RecordQuote, then AttachQuote,
    which decides COMMIT when the attempt's bridge leg is prepared already): if the payout
    cannot take it (the gateway lacks the target currency, the quote expired on the way), the
    refusal leaves nothing behind, not even the quote's row. A payout that is no longer PENDING
    at that attempt keeps no quote either."""

    record: steps.RecordQuote
    attach: steps.AttachQuote

    def reads(self) -> Reads:
        reads = Reads()
        reads.merge(self.record.reads())
        reads.merge(self.attach.reads())
        return reads

    def reads_after(self, world: World) -> Reads:
        reads = Reads()
        reads.merge(self.record.reads_after(world))
        reads.merge(self.attach.reads_after(world))
        return reads

    def apply(self, ws: WorkingSet) -> object:
        payout = ws.settlement(self.attach.settlement_id)
        if (
            payout is not None
            and payout.state is SettlementState.PENDING
            and payout.attempt == self.attach.attempt
        ):
            self.record.apply(ws)
        return self.attach.apply(ws)


def bridge_state(transfer: Transfer) -> str:
    return transfer.state.value


def quote_record(quote: Quote, requested_by: str) -> QuoteRecord:
    return QuoteRecord(
        quote_id=quote.quote_id,
        requested_by=requested_by,
        source_currency=quote.source.currency,
        target_currency=quote.target.currency,
        source_minor=quote.source.amount_minor,
        target_minor=quote.target.amount_minor,
        spread_minor=quote.spread.amount_minor,
        rate_num=quote.rate.numerator,
        rate_den=quote.rate.denominator,
        provider_id=quote.liquidity_provider_id,
        expires_at_us=quote.expires_at_us,
        created_at_us=0,
    )


class Coordinator:
    def __init__(
        self,
        engine: LedgerEngine,
        reader: SettlementReader,
        link: BridgeLink,
        gateway_wallet_id: str,
        clock: Clock,
        faults: Faults,
        timing: Timing,
    ) -> None:
        self._engine, self._reader, self._link = engine, reader, link
        self.gateway = gateway_wallet_id
        self._clock, self._faults, self.timing = clock, faults, timing
        # Settlements left for an operator (settlement id -> why), in this process.
        self.stuck: dict[str, str] = {}
        # Settlements being driven in this process now (id -> how many drives): the sweep
        # leaves them to the call driving them (it takes them as far as they can go now).
        self._driving: dict[str, int] = {}

    def driving(self, settlement_id: str) -> bool:
        """Whether a drive of ``settlement_id`` is in progress in this process."""
        return settlement_id in self._driving

    @property
    def stuck_count(self) -> int:
        return len(self.stuck)

    def _stuck(self, s: SettlementRecord, why: str, **details: object) -> SettlementRecord:
        """Leave ``s`` for an operator: logged once, counted, never driven again here."""
        if s.settlement_id not in self.stuck:
            self.stuck[s.settlement_id] = why
            log.critical(
                "settlement_stuck",
                settlement_id=s.settlement_id,
                state=s.state.value,
                why=why,
                stuck_settlements=len(self.stuck),
                **details,
            )
        return s

    # -- one step at a time --------------------------------------------------------------------
    def _fields(self, step: str, settlement_id: str) -> StepFields:
        request_id = f"{step}.{settlement_id}.{next(_serial)}"
        return StepFields(
            method=f"/condpay.internal/{step}",
            caller=COORDINATOR,
            request_id=request_id,
            request_hash=hashlib.sha256(request_id.encode()).digest(),
            store_outcome=False,
            settlement_id=settlement_id,
            gateway=self.gateway,
        )

    async def _run(self, command: Command) -> SettlementRecord:
        capture = _Capture()
        await self._engine.execute(command, capture)
        result = capture.result
        if isinstance(result, SettlementRecord):
            return result
        raise AssertionError(f"{type(command).__name__} answered {result!r}")

    async def _decide(
        self, s: SettlementRecord, decision: Decision, reason: str, transfer: Transfer | None
    ) -> SettlementRecord:
        return await self._run(
            steps.Decide(
                **self._fields("Decide", s.settlement_id),
                decision=decision,
                bridge_state=bridge_state(transfer) if transfer else "UNKNOWN",
                bridge_expires_at_us=transfer.expires_at_us if transfer else 0,
                margin_ms=self.timing.margin_ms,
                reason=reason,
            )
        )

    async def _complete(
        self, s: SettlementRecord, transfer: Transfer, proof: steps.BlockProof | None = None
    ) -> SettlementRecord:
        return await self._run(
            steps.Complete(
                **self._fields("Complete", s.settlement_id),
                bridge_state=bridge_state(transfer),
                proof=proof,
            )
        )

    # -- at market: the bridge's leg first ------------------------------------------------------
    async def prepare_at_market(
        self, settlement_id: str, order: MarketOrder
    ) -> tuple[Quote | None, int, steps.PreparedLeg | None]:
        """Quote ``order`` and reserve the bridge's leg with that quote in one bridge call,
        before the core records anything, so that the core then holds its legs and decides
        COMMIT in one write (docs/settlement.md, "At market"). Returns the quote, the attempt
        the settlement starts with, and its prepared leg.

        The transfer of an attempt answered as it is (a retry of the same call, the same
        order: idempotent) is taken if it is still PREPARED; one that no longer is (an earlier
        try's leg, aborted after that try was refused, or expired) is passed over for the next
        attempt. Any other answer (a refusal, no answer) returns no quote and the next attempt:
        the call then gets its quote from the bridge on its own and prepares the settlement as
        a quoted one is (PREPARED), for the coordinator to prepare that attempt and decide,
        as it always has (a refusal comes again, and the decision is ABORT with its reason)."""
        timeout_ms = self.timing.hold_ms - self.timing.margin_ms
        for attempt in range(1, MARKET_ATTEMPTS + 1):
            try:
                quote, transfer = await self._link.prepare_at_market(
                    steps.transfer_id(settlement_id, attempt), order, timeout_ms
                )
            except (Conflict, TransferAborted):
                continue  # taken by another order, or aborted before it was prepared
            except BridgeError as error:
                log.info("market_prepare_refused", settlement_id=settlement_id, error=str(error))
                return None, attempt + 1, None
            if transfer.state is not TransferState.PREPARED:
                continue
            self._faults.point("pvp_before_decision")
            return quote, attempt, steps.PreparedLeg(transfer.expires_at_us, self.timing.margin_ms)
        return None, MARKET_ATTEMPTS + 1, None

    async def after_prepare(
        self, prepare: steps.PrepareSettlement, taken: SettlementRecord | None
    ) -> None:
        """After the preparing write: abort the bridge transfers of this call that no settlement
        names. ``taken``: the settlement that write created (None: it was refused, or it
        replayed an outcome stored by another try). If the write took this call's leg, the
        earlier attempts' legs (nothing will ever commit them: the settlement names its own);
        if it did not, this call's leg, unless the settlement (created by another try of the
        call, the same order, so the same transfer) names it. An abort that gets no answer
        leaves the leg to expire at its timeout. Then, if the write decided COMMIT (at market),
        the fault point ``pvp_after_decision``, as after a decision of its own."""
        own = steps.transfer_id(prepare.settlement_id, prepare.attempt)
        took = taken is not None and taken.transfer_id == own
        unused: list[int] = list(range(1, prepare.attempt)) if took else []
        if taken is None and prepare.bridge_leg is not None:
            found = await self._reader.settlement(prepare.settlement_id)
            if found is None or found.transfer_id != own:
                unused = [prepare.attempt]
        for attempt in unused:
            await self._release(prepare.settlement_id, attempt)
        if took and taken is not None and taken.state is SettlementState.COMMITTING:
            self._faults.point("pvp_after_decision")

    # -- the protocol --------------------------------------------------------------------------
    async def drive(
        self, settlement_id: str, known: SettlementRecord | None = None
    ) -> SettlementRecord:
        """Take the settlement as far as it can go now; returns it as it then is. Bridge calls
        that get no answer (after bounded retries) leave it where it is, for the sweep.
        ``known``: the settlement as a command just committed it (not read again); every step
        is guarded by the stored state, so a copy that is already stale only costs a no-op."""
        self._driving[settlement_id] = self._driving.get(settlement_id, 0) + 1
        try:
            return await self._drive(settlement_id, known)
        finally:
            left = self._driving.pop(settlement_id) - 1
            if left:
                self._driving[settlement_id] = left

    async def _drive(self, settlement_id: str, known: SettlementRecord | None) -> SettlementRecord:
        s = known if known is not None else await self._reader.settlement(settlement_id)
        assert s is not None, f"settlement {settlement_id} vanished"
        if settlement_id in self.stuck:
            return s  # left for an operator: asking the bridge again changes nothing
        for _ in range(8):  # at most PENDING -> PREPARED -> COMMITTING -> COMMITTED -> FINAL
            before = (s.state, s.version)
            try:
                s = await self._step(s)
            except (Unavailable, Unauthenticated, Forbidden, InternalError) as error:
                # No answer, the bridge does not accept the gateway's identity (a configuration
                # to fix), or its own bug: nothing moved; the sweep asks again.
                log.warning("bridge_unreachable", settlement_id=s.settlement_id, error=str(error))
                return s
            except BridgeError as error:
                # An answer no step expects (a bridge that lost state, a bug): the settlement
                # stays where it is, for an operator.
                return self._stuck(s, "BRIDGE_UNEXPECTED_ANSWER", error=repr(error))
            if (s.state, s.version) == before or s.state.done:
                return s
            if before[0] is SettlementState.PENDING and s.state is SettlementState.PENDING:
                return s  # an attempt skipped: the next one after its backoff (the sweep's)
        return s

    async def _step(self, s: SettlementRecord) -> SettlementRecord:
        match s.state:
            case SettlementState.PENDING:
                return await self._payout_at_market(s)
            case SettlementState.PREPARED:
                return await self._prepare_and_decide(s)
            case SettlementState.COMMITTING:
                return await self._commit(s)
            case SettlementState.ABORTING:
                return await self._abort(s)
            case SettlementState.COMMITTED:
                return await self._finality(s)
        return s

    async def _payout_at_market(self, s: SettlementRecord) -> SettlementRecord:
        """A PENDING payout, at market: the bridge quotes the payout's amount and prepares its
        attempt's leg with that quote in one call, then one write keeps the quote, holds the
        gateway's side and decides COMMIT (docs/settlement.md, "Payouts"). An attempt that
        gets no leg it can use (the bridge refused, the core refused the quote, or an earlier
        try's leg was aborted or expired since) is skipped: the next attempt asks again after
        its backoff. A bridge that does not answer changes nothing (the next drive asks again,
        for the same transfer: the bridge answers it as it is)."""
        attempt = s.attempt
        leg_id = steps.transfer_id(s.settlement_id, attempt)
        order = MarketOrder(s.pay_currency, s.receive_currency, source_amount_minor=s.pay_minor)
        timeout_ms = self.timing.hold_ms - self.timing.margin_ms
        try:
            quote, transfer = await self._link.prepare_at_market(leg_id, order, timeout_ms)
        except (Unavailable, Unauthenticated, Forbidden, InternalError):
            raise  # no answer, or not one about this payout: the drive leaves it as it is
        except BridgeError as error:
            log.warning("payout_market_refused", settlement_id=s.settlement_id, error=str(error))
            return await self._skip(s, attempt, error.reason.name)
        if transfer.state is TransferState.COMMITTED:  # only a COMMIT decision sends a commit
            return self._stuck(s, "BRIDGE_COMMITTED_AN_UNDECIDED_PAYOUT")
        if transfer.state is not TransferState.PREPARED:
            return await self._skip(s, attempt, transfer.rejection_reason or transfer.state.value)
        self._faults.point("pvp_before_decision")
        fields = self._fields("QuotePayout", s.settlement_id)
        attach = steps.AttachQuote(
            **fields,
            quote_id=quote.quote_id,
            hold_ms=self.timing.hold_ms,
            attempt=attempt,
            bridge_leg=steps.PreparedLeg(transfer.expires_at_us, self.timing.margin_ms),
        )
        try:
            taken = await self._run(
                QuotePayout(
                    method=fields["method"],
                    caller=fields["caller"],
                    request_id=fields["request_id"],
                    request_hash=fields["request_hash"],
                    store_outcome=False,
                    record=steps.RecordQuote(
                        method=fields["method"],
                        caller=fields["caller"],
                        request_id=fields["request_id"],
                        request_hash=fields["request_hash"],
                        store_outcome=False,
                        quote=quote_record(quote, COORDINATOR),
                    ),
                    attach=attach,
                )
            )
        except SettlementError as error:
            if error.reason.code is grpc.StatusCode.UNAVAILABLE:  # transient: the next drive
                raise
            # The payout cannot take the quote (the gateway lacks the target currency...):
            # release the leg, and the next attempt asks again after its backoff.
            log.warning(
                "payout_quote_refused",
                settlement_id=s.settlement_id,
                reason=error.reason.name,
                error=str(error),
            )
            await self._release(s.settlement_id, attempt)
            return await self._skip(s, attempt, error.reason.name)
        if taken.transfer_id != leg_id:  # another drive moved the payout on meanwhile
            await self._release(s.settlement_id, attempt)
        elif taken.state is SettlementState.COMMITTING:
            self._faults.point("pvp_after_decision")
        return taken

    async def _skip(self, s: SettlementRecord, attempt: int, reason: str) -> SettlementRecord:
        return await self._run(
            steps.SkipAttempt(
                **self._fields("SkipAttempt", s.settlement_id), attempt=attempt, reason=reason
            )
        )

    async def _release(self, settlement_id: str, attempt: int) -> None:
        """Abort the bridge leg of an attempt that no settlement will take (an abort that gets
        no answer leaves it to expire at its timeout)."""
        try:
            await self._link.abort(steps.transfer_id(settlement_id, attempt))
        except BridgeError as error:
            log.warning(
                "market_leg_left_to_expire",
                settlement_id=settlement_id,
                attempt=attempt,
                error=str(error),
            )

    async def _prepare_and_decide(self, s: SettlementRecord) -> SettlementRecord:
        """Reserve the bridge leg (idempotent by transfer id) and decide on its answer."""
        now = self._clock.now_us()
        timeout_ms = (s.decide_by_us - now) // 1000 - self.timing.margin_ms
        if timeout_ms <= self.timing.margin_ms:
            # Too late to reserve a leg that could still be committed: abort (an abort of a
            # transfer the bridge never saw leaves a tombstone, so a late prepare is refused).
            return await self._decide(s, Decision.ABORT, "DECISION_DEADLINE", None)
        self._faults.point("pvp_before_prepare")
        try:
            transfer = await self._link.prepare(s.transfer_id, s.quote_id, timeout_ms)
        except (QuoteUnusable, QuorumUnavailable, InsufficientFunds, TransferAborted) as error:
            return await self._decide(s, Decision.ABORT, error.reason.name, _rejected(error))
        except Conflict as error:
            # An earlier prepare of this transfer whose reply was lost asked for another
            # timeout (it counts down to the decision deadline, so a later drive asks for less):
            # take the transfer as the bridge has it, if it is this settlement's; Decide checks
            # its actual expiry.
            own = await self._own_transfer(s)
            if own is None:  # the gateway's id with other terms: a bug, or a leaked identity
                return self._stuck(s, "BRIDGE_TRANSFER_OTHER_TERMS", error=str(error))
            transfer = own
        except NotFound as error:  # a bug in the core, or a bridge that lost state
            log.error("bridge_prepare_refused", settlement_id=s.settlement_id, error=str(error))
            return await self._decide(s, Decision.ABORT, error.reason.name, None)
        except Unavailable:
            if self._clock.now_us() + self.timing.margin_ms * 1000 >= s.decide_by_us:
                return await self._decide(s, Decision.ABORT, "BRIDGE_UNREACHABLE", None)
            raise
        self._faults.point("pvp_before_decision")
        if transfer.state is TransferState.COMMITTED:
            # Only a COMMIT decision sends a commit, so the core did not commit this leg: the
            # decision log's rule decides. Exactly this settlement's terms: COMMIT (the core's
            # legs are still held); anything else: an operator's case.
            if await self._own_transfer(s) is None:
                return self._stuck(s, "BRIDGE_COMMITTED_OTHER_TERMS")
            decided = await self._decide(s, Decision.COMMIT, "", transfer)
            if decided.decision is not Decision.COMMIT:  # too late for a COMMIT
                return self._stuck(decided, "BRIDGE_COMMITTED_AFTER_DEADLINE")
            return decided
        if transfer.state.value != "PREPARED":
            return await self._decide(
                s, Decision.ABORT, transfer.rejection_reason or transfer.state.value, transfer
            )
        decided = await self._decide(s, Decision.COMMIT, "", transfer)
        self._faults.point("pvp_after_decision")
        return decided

    async def _own_transfer(self, s: SettlementRecord) -> Transfer | None:
        """The bridge's transfer of ``s``'s attempt, if its terms are this settlement's."""
        transfer = await self._link.status(s.transfer_id)
        terms = transfer.terms
        if terms is None or (terms.quote_id, terms.payer_id, terms.payee_id) != (
            s.quote_id,
            self._link.gateway,
            self._link.gateway,
        ):
            return None
        return transfer

    async def _commit(self, s: SettlementRecord) -> SettlementRecord:
        """Bridge leg first, then the core's: the core's leg only moves held money."""
        try:
            # The commit is answered once its block is certified (the bridge seals one every
            # block interval), so the core's leg and the finality are one write. Without a
            # certified block (no quorum yet) the core's leg posts alone, COMMITTED, and the
            # next step asks for finality again.
            transfer, verified = await self._link.commit_final(s.transfer_id)
        except TransferAborted as error:
            # The bridge's leg expired or was aborted before our commit reached it; the core's
            # leg has not moved: abort both.
            log.warning("bridge_commit_refused", settlement_id=s.settlement_id, error=str(error))
            return await self._decide(s, Decision.ABORT, error.reason.name, _rejected(error))
        self._faults.point("pvp_between_commits")
        return await self._complete(s, transfer, _proof(verified))

    async def _abort(self, s: SettlementRecord) -> SettlementRecord:
        try:
            transfer = await self._link.abort(s.transfer_id)
        except TransferCommitted:
            # Only a COMMIT decision sends a commit, and a decision never changes from ABORT:
            # the bridge's leg committed behind the core's back (a bug, or the gateway's
            # identity used elsewhere). Leave the settlement for an operator, once, loudly.
            return self._stuck(s, "BRIDGE_COMMITTED_AN_ABORTED_SETTLEMENT")
        return await self._complete(s, transfer)

    async def _finality(self, s: SettlementRecord) -> SettlementRecord:
        proof = _proof(await self._link.finality(s.transfer_id))
        if proof is None:
            return s
        return await self._run(
            steps.RecordFinality(**self._fields("RecordFinality", s.settlement_id), proof=proof)
        )


def _proof(verified: Verified | None) -> steps.BlockProof | None:
    """The bridge leg's block and its verified certificate, as the core keeps them; None while
    it is not final."""
    if verified is None:
        return None
    certificate = json.dumps(
        {
            "block_hash": verified.block_hash.hex(),
            "signer_ids": list(verified.signer_ids),
            "aggregate_signature": verified.aggregate_signature.hex(),
        },
        sort_keys=True,
    ).encode()
    return steps.BlockProof(verified.height, verified.header, certificate)


def _rejected(error: BridgeError) -> Transfer | None:
    """A refusal of prepare or commit, as the bridge leg's state: it never commits."""
    state = {
        "TRANSFER_EXPIRED": TransferState.EXPIRED,
        "TRANSFER_ALREADY_ABORTED": TransferState.ABORTED,
    }.get(error.reason.name, TransferState.REJECTED)
    return Transfer(transfer_id="", state=state, terms=None)
