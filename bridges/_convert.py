"""The bridge's value types <-> condpay.bridge.v1 messages, both ways, exactly (round-trip tests
in tests/bridges/test_grpc.py). Parsing a message validates only its shape; the ledger validates
the values, so both transports refuse the same input with the same reason."""

from __future__ import annotations

from typing import Final

from condpay.bridge.v1 import bridge_pb2 as pb
from condpay.v1 import money_pb2

from bridges._model import (
    AccountBalance,
    AccountKind,
    AuditReport,
    BlockHeader,
    CurrencySupply,
    Finality,
    Issuance,
    MarketOrder,
    Money,
    Participant,
    ParticipantKind,
    PublishedRate,
    QuorumCertificate,
    Quote,
    Rate,
    TickResult,
    Transfer,
    TransferState,
    TransferTerms,
    ValidatorInfo,
    ValidatorSet,
)
from bridges.errors import Reason, error

_STATES: Final[dict[TransferState, pb.TransferState.ValueType]] = {
    TransferState.PREPARED: pb.TRANSFER_STATE_PREPARED,
    TransferState.COMMITTED: pb.TRANSFER_STATE_COMMITTED,
    TransferState.ABORTED: pb.TRANSFER_STATE_ABORTED,
    TransferState.EXPIRED: pb.TRANSFER_STATE_EXPIRED,
    TransferState.REJECTED: pb.TRANSFER_STATE_REJECTED,
}
_STATES_BACK: Final = {v: k for k, v in _STATES.items()}
_KINDS: Final[dict[AccountKind, pb.AccountKind.ValueType]] = {
    AccountKind.ISSUANCE: pb.ACCOUNT_KIND_ISSUANCE,
    AccountKind.SETTLEMENT: pb.ACCOUNT_KIND_SETTLEMENT,
    AccountKind.LIQUIDITY: pb.ACCOUNT_KIND_LIQUIDITY,
    AccountKind.SPREAD: pb.ACCOUNT_KIND_SPREAD,
}
_KINDS_BACK: Final = {v: k for k, v in _KINDS.items()}
_PARTICIPANTS: Final[dict[ParticipantKind, pb.ParticipantKind.ValueType]] = {
    ParticipantKind.CENTRAL_BANK: pb.PARTICIPANT_KIND_CENTRAL_BANK,
    ParticipantKind.BANK: pb.PARTICIPANT_KIND_BANK,
}
_PARTICIPANTS_BACK: Final = {v: k for k, v in _PARTICIPANTS.items()}


# ---------------------------------------------------------------- to messages


def money_pb(money: Money) -> money_pb2.Money:
    return money_pb2.Money(currency=money.currency, amount_minor=money.amount_minor)


def rate_pb(rate: Rate) -> pb.Rate:
    return pb.Rate(numerator=rate.numerator, denominator=rate.denominator)


def account_kind_pb(kind: AccountKind) -> pb.AccountKind.ValueType:
    return _KINDS[kind]


def validators_pb(validators: ValidatorSet) -> pb.ListValidatorsResponse:
    return pb.ListValidatorsResponse(
        validators=[
            pb.Validator(
                validator_id=v.validator_id,
                public_key=v.public_key,
                proof_of_possession=v.proof_of_possession,
                online=v.online,
            )
            for v in validators.validators
        ],
        threshold=validators.threshold,
    )


def market_order_pb(order: MarketOrder) -> pb.MarketOrder:
    message = pb.MarketOrder(
        source_currency=order.source_currency,
        target_currency=order.target_currency,
        liquidity_provider_id=order.liquidity_provider_id,
    )
    if order.source_amount_minor is not None:
        message.source_amount_minor = order.source_amount_minor
    if order.target_amount_minor is not None:
        message.target_amount_minor = order.target_amount_minor
    return message


def market_order_of(message: pb.MarketOrder) -> MarketOrder:
    which = message.WhichOneof("amount")
    return MarketOrder(
        message.source_currency,
        message.target_currency,
        message.source_amount_minor if which == "source_amount_minor" else None,
        message.target_amount_minor if which == "target_amount_minor" else None,
        message.liquidity_provider_id,
    )


def quote_pb(quote: Quote) -> pb.Quote:
    return pb.Quote(
        quote_id=quote.quote_id,
        liquidity_provider_id=quote.liquidity_provider_id,
        source=money_pb(quote.source),
        target=money_pb(quote.target),
        spread=money_pb(quote.spread),
        rate=rate_pb(quote.rate),
        spread_ppm=quote.spread_ppm,
        created_at_us=quote.created_at_us,
        expires_at_us=quote.expires_at_us,
    )


def transfer_pb(transfer: Transfer) -> pb.Transfer:
    message = pb.Transfer(
        transfer_id=transfer.transfer_id,
        state=_STATES[transfer.state],
        prepared_at_us=transfer.prepared_at_us,
        expires_at_us=transfer.expires_at_us,
        resolved_at_us=transfer.resolved_at_us,
        rejection_reason=transfer.rejection_reason,
        block_height=transfer.block_height,
    )
    if transfer.terms is not None:
        t = transfer.terms
        message.terms.CopyFrom(
            pb.TransferTerms(
                quote_id=t.quote_id,
                payer_id=t.payer_id,
                payee_id=t.payee_id,
                liquidity_provider_id=t.liquidity_provider_id,
                source=money_pb(t.source),
                target=money_pb(t.target),
                spread=money_pb(t.spread),
                timeout_ms=t.timeout_ms,
            )
        )
    return message


def header_pb(header: BlockHeader) -> pb.BlockHeader:
    return pb.BlockHeader(
        chain_id=header.chain_id,
        height=header.height,
        previous_hash=header.previous_hash,
        sealed_at_us=header.sealed_at_us,
        transfer_ids=list(header.transfer_ids),
        transfers_digest=header.transfers_digest,
        hash=header.hash,
    )


def certificate_pb(qc: QuorumCertificate) -> pb.QuorumCertificate:
    return pb.QuorumCertificate(
        block_hash=qc.block_hash,
        signer_ids=list(qc.signer_ids),
        aggregate_signature=qc.aggregate_signature,
    )


def finality_pb(finality: Finality) -> pb.GetFinalityResponse:
    message = pb.GetFinalityResponse(transfer_id=finality.transfer_id)
    if finality.block is not None:
        message.block.CopyFrom(header_pb(finality.block))
    if finality.certificate is not None:
        message.certificate.CopyFrom(certificate_pb(finality.certificate))
    return message


def balance_pb(balance: AccountBalance) -> pb.AccountBalance:
    return pb.AccountBalance(
        participant_id=balance.participant_id,
        kind=_KINDS[balance.kind],
        balance=money_pb(Money(balance.currency, balance.balance_minor)),
        reserved=money_pb(Money(balance.currency, balance.reserved_minor)),
    )


def supply_pb(supply: CurrencySupply) -> pb.CurrencySupply:
    return pb.CurrencySupply(
        currency=supply.currency,
        issued_minor=supply.issued_minor,
        redeemed_minor=supply.redeemed_minor,
        held_minor=supply.held_minor,
        reserved_minor=supply.reserved_minor,
    )


def participant_pb(participant: Participant) -> pb.Participant:
    return pb.Participant(
        participant_id=participant.participant_id,
        kind=_PARTICIPANTS[participant.kind],
        name=participant.name,
        currency=participant.currency,
        liquidity_provider=participant.liquidity_provider,
        spread_ppm=participant.spread_ppm,
    )


def published_rate_pb(rate: PublishedRate) -> pb.PublishedRate:
    return pb.PublishedRate(
        currency=rate.currency, value=rate_pb(rate.value), published_at_us=rate.published_at_us
    )


def audit_pb(report: AuditReport) -> pb.AuditLedgerResponse:
    return pb.AuditLedgerResponse(
        supply=[supply_pb(s) for s in report.supply], problems=list(report.problems)
    )


def tick_pb(result: TickResult) -> pb.TickResponse:
    return pb.TickResponse(
        expired_count=result.expired_count,
        tip_height=result.tip_height,
        final_height=result.final_height,
    )


# ---------------------------------------------------------------- from messages


def money_of(message: money_pb2.Money) -> Money:
    return Money(message.currency, message.amount_minor)


def rate_of(message: pb.Rate) -> Rate:
    return Rate(message.numerator, message.denominator)


def account_kind_of(value: pb.AccountKind.ValueType, field: str = "account_kind") -> AccountKind:
    kind = _KINDS_BACK.get(value)
    if kind is None:
        raise error(
            Reason.INVALID_ACCOUNT_KIND, f"{field} is unset or unknown ({value})", field=field
        )
    return kind


def validators_of(message: pb.ListValidatorsResponse) -> ValidatorSet:
    return ValidatorSet(
        tuple(
            ValidatorInfo(v.validator_id, v.public_key, v.proof_of_possession, v.online)
            for v in message.validators
        ),
        message.threshold,
    )


def quote_of(message: pb.Quote) -> Quote:
    return Quote(
        quote_id=message.quote_id,
        liquidity_provider_id=message.liquidity_provider_id,
        source=money_of(message.source),
        target=money_of(message.target),
        spread=money_of(message.spread),
        rate=rate_of(message.rate),
        spread_ppm=message.spread_ppm,
        created_at_us=message.created_at_us,
        expires_at_us=message.expires_at_us,
    )


def transfer_of(message: pb.Transfer, *, replayed: bool = False) -> Transfer:
    terms = None
    if message.HasField("terms"):
        t = message.terms
        terms = TransferTerms(
            quote_id=t.quote_id,
            payer_id=t.payer_id,
            payee_id=t.payee_id,
            liquidity_provider_id=t.liquidity_provider_id,
            source=money_of(t.source),
            target=money_of(t.target),
            spread=money_of(t.spread),
            timeout_ms=t.timeout_ms,
        )
    return Transfer(
        transfer_id=message.transfer_id,
        state=_STATES_BACK[message.state],
        terms=terms,
        prepared_at_us=message.prepared_at_us,
        expires_at_us=message.expires_at_us,
        resolved_at_us=message.resolved_at_us,
        rejection_reason=message.rejection_reason,
        block_height=message.block_height,
        replayed=replayed,
    )


def header_of(message: pb.BlockHeader) -> BlockHeader:
    """The header as sent; its ``hash`` field is dropped (always recomputed from the fields)."""
    return BlockHeader(
        chain_id=message.chain_id,
        height=message.height,
        previous_hash=message.previous_hash,
        sealed_at_us=message.sealed_at_us,
        transfer_ids=tuple(message.transfer_ids),
        transfers_digest=message.transfers_digest,
    )


def certificate_of(message: pb.QuorumCertificate) -> QuorumCertificate:
    return QuorumCertificate(
        message.block_hash, tuple(message.signer_ids), message.aggregate_signature
    )


def finality_of(message: pb.GetFinalityResponse) -> Finality:
    return Finality(
        message.transfer_id,
        header_of(message.block) if message.HasField("block") else None,
        certificate_of(message.certificate) if message.HasField("certificate") else None,
    )


def balance_of(message: pb.AccountBalance) -> AccountBalance:
    return AccountBalance(
        participant_id=message.participant_id,
        kind=_KINDS_BACK[message.kind],
        currency=message.balance.currency,
        balance_minor=message.balance.amount_minor,
        reserved_minor=message.reserved.amount_minor,
    )


def supply_of(message: pb.CurrencySupply) -> CurrencySupply:
    return CurrencySupply(
        message.currency,
        message.issued_minor,
        message.redeemed_minor,
        message.held_minor,
        message.reserved_minor,
    )


def participant_of(message: pb.Participant, *, replayed: bool = False) -> Participant:
    return Participant(
        participant_id=message.participant_id,
        kind=_PARTICIPANTS_BACK[message.kind],
        name=message.name,
        currency=message.currency,
        liquidity_provider=message.liquidity_provider,
        spread_ppm=message.spread_ppm,
        replayed=replayed,
    )


def published_rate_of(message: pb.PublishedRate) -> PublishedRate:
    return PublishedRate(message.currency, rate_of(message.value), message.published_at_us)


def issuance_of(request_id: str, message: pb.IssueResponse | pb.RedeemResponse) -> Issuance:
    return Issuance(request_id, balance_of(message.account), replayed=message.replayed)


def audit_of(message: pb.AuditLedgerResponse) -> AuditReport:
    return AuditReport(tuple(supply_of(s) for s in message.supply), tuple(message.problems))


def tick_of(message: pb.TickResponse) -> TickResult:
    return TickResult(message.expired_count, message.tip_height, message.final_height)


def required_money(message: money_pb2.Money, has: bool, field: str) -> Money:
    if not has:
        raise error(Reason.MISSING_FIELD, f"{field} is required", field=field)
    return money_of(message)


def required_rate(message: pb.Rate, has: bool, field: str) -> Rate:
    if not has:
        raise error(Reason.MISSING_FIELD, f"{field} is required", field=field)
    return rate_of(message)
