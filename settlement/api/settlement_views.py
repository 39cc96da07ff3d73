"""Titles, quotes and settlements as API messages."""

from __future__ import annotations

import json
from typing import Final

from condpay.v1 import asset_pb2, settlement_pb2

from settlement.api.convert import money, timestamp
from settlement.ledger.records import (
    Decision,
    QuoteRecord,
    SettlementKind,
    SettlementRecord,
    SettlementState,
    TitleMoveRecord,
    TitleRecord,
    TitleState,
)

_TITLE_STATES: Final = {
    TitleState.ACTIVE: asset_pb2.TITLE_STATE_ACTIVE,
    TitleState.SPLIT: asset_pb2.TITLE_STATE_SPLIT,
}
_KINDS: Final = {
    SettlementKind.PVP: settlement_pb2.SETTLEMENT_KIND_PVP,
    SettlementKind.DVP: settlement_pb2.SETTLEMENT_KIND_DVP,
}
STATES: Final = {
    state: getattr(settlement_pb2, f"SETTLEMENT_STATE_{state.value}") for state in SettlementState
}
STATES_BY_PROTO: Final = {number: state for state, number in STATES.items()}
_DECISIONS: Final = {
    Decision.NONE: settlement_pb2.DECISION_UNSPECIFIED,
    Decision.COMMIT: settlement_pb2.DECISION_COMMIT,
    Decision.ABORT: settlement_pb2.DECISION_ABORT,
}


def title(record: TitleRecord) -> asset_pb2.Title:
    return asset_pb2.Title(
        title_id=record.title_id,
        kind=record.kind,
        issuer_id=record.issuer_id,
        holder_wallet_id=record.holder_wallet_id,
        units=record.units,
        description=record.description,
        document_sha256=record.document_sha256,
        pledged_to=record.pledged_to,
        parent_title_id=record.parent_title_id,
        state=_TITLE_STATES[record.state],
        version=record.version,
        issued_at=timestamp(record.issued_at_us),
        updated_at=timestamp(record.updated_at_us),
    )


def title_move(seq: int, record: TitleMoveRecord) -> asset_pb2.TitleMove:
    return asset_pb2.TitleMove(
        seq=seq,
        kind=record.kind,
        from_wallet_id=record.from_wallet_id,
        to_wallet_id=record.to_wallet_id,
        units=record.units,
        request_id=record.request_id,
        at=timestamp(record.at_us),
    )


def quote(record: QuoteRecord) -> settlement_pb2.FxQuote:
    return settlement_pb2.FxQuote(
        quote_id=record.quote_id,
        source=money(record.source_currency, record.source_minor),
        target=money(record.target_currency, record.target_minor),
        spread=money(record.source_currency, record.spread_minor),
        rate_numerator=record.rate_num,
        rate_denominator=record.rate_den,
        liquidity_provider_id=record.provider_id,
        expires_at=timestamp(record.expires_at_us),
    )


def _core_state(s: SettlementRecord) -> str:
    if s.state in (SettlementState.COMMITTED, SettlementState.FINAL):
        return "COMMITTED"
    if s.decision is Decision.ABORT:
        return "RELEASED"
    return "HELD" if s.state is not SettlementState.PENDING or s.origin_payment_id else "NONE"


def legs(s: SettlementRecord, gateway: str) -> list[settlement_pb2.SettlementLeg]:
    """The core legs through the gateway wallet, the bridge leg (the gateway's participant on the
    bridge to the liquidity provider, at the transfer ``Settlement.transfer_id``), the title."""
    core = _core_state(s)
    participant = gateway.removeprefix("w_reserve.")
    out = []
    if s.cross_currency:
        out += [
            settlement_pb2.SettlementLeg(
                ledger="core",
                from_id=s.payer_wallet_id,
                to_id=gateway,
                amount=money(s.pay_currency, s.pay_minor),
                state=core,
            ),
            settlement_pb2.SettlementLeg(
                ledger="bridge",
                from_id=participant,
                to_id=s.provider_id,
                amount=money(s.pay_currency, s.pay_minor),
                state=s.bridge_state or "NONE",
            ),
            settlement_pb2.SettlementLeg(
                ledger="core",
                from_id=gateway,
                to_id=s.payee_wallet_id,
                amount=money(s.receive_currency, s.receive_minor),
                state=core,
            ),
        ]
    else:
        out.append(
            settlement_pb2.SettlementLeg(
                ledger="core",
                from_id=s.payer_wallet_id,
                to_id=s.payee_wallet_id,
                amount=money(s.pay_currency, s.pay_minor),
                state=core,
            )
        )
    if s.title_id:
        delivered = s.state in (SettlementState.COMMITTED, SettlementState.FINAL)
        out.append(
            settlement_pb2.SettlementLeg(
                ledger="title",
                from_id=s.payee_wallet_id,
                to_id=s.payer_wallet_id,
                title_id=s.delivered_title_id or s.title_id,
                units=s.title_units,
                state="DELIVERED"
                if delivered
                else "RELEASED"
                if s.decision is Decision.ABORT
                else "ESCROWED",
            )
        )
    return out


def settlement(s: SettlementRecord, gateway: str) -> settlement_pb2.Settlement:
    message = settlement_pb2.Settlement(
        settlement_id=s.settlement_id,
        kind=_KINDS[s.kind],
        state=STATES[s.state],
        decision=_DECISIONS[s.decision],
        abort_reason=s.abort_reason,
        payer_wallet_id=s.payer_wallet_id,
        payee_wallet_id=s.payee_wallet_id,
        pay=money(s.pay_currency, s.pay_minor),
        receive=money(s.receive_currency, s.receive_minor),
        transfer_id=s.transfer_id,
        legs=legs(s, gateway),
        origin_payment_id=s.origin_payment_id,
        origin_leg_id=s.origin_leg_id,
        attempt=s.attempt,
        version=s.version,
        created_at=timestamp(s.created_at_us),
        updated_at=timestamp(s.updated_at_us),
        request_id=s.request_id,
    )
    if s.decided_at_us:
        message.decided_at.CopyFrom(timestamp(s.decided_at_us))
    if s.bridge_expires_at_us:
        message.bridge_expires_at.CopyFrom(timestamp(s.bridge_expires_at_us))
    if s.quote_id:
        message.quote.CopyFrom(
            settlement_pb2.FxQuote(
                quote_id=s.quote_id,
                source=money(s.pay_currency, s.pay_minor),
                target=money(s.receive_currency, s.receive_minor),
                spread=money(s.pay_currency, s.spread_minor),
                rate_numerator=s.rate_num,
                rate_denominator=s.rate_den,
                liquidity_provider_id=s.provider_id,
                expires_at=timestamp(s.quote_expires_at_us),
            )
        )
    if s.certificate:
        qc = json.loads(s.certificate)
        message.finality.CopyFrom(
            settlement_pb2.Finality(
                block_height=s.block_height,
                block_header=s.block_header,
                block_hash=bytes.fromhex(qc["block_hash"]),
                signer_ids=qc["signer_ids"],
                aggregate_signature=bytes.fromhex(qc["aggregate_signature"]),
            )
        )
    return message
