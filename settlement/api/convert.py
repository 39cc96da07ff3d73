"""Records -> API messages."""

from __future__ import annotations

from collections.abc import Iterable

from condpay.v1 import central_bank_pb2, ledger_pb2, money_pb2, wallet_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from settlement.ledger.records import (
    BalanceRecord,
    Bucket,
    EntryKind,
    EntryRecord,
    InstitutionRecord,
    WalletRecord,
)
from wallets import WalletKind, limit_day, limits_for

_BUCKETS = {
    Bucket.AVAILABLE: ledger_pb2.BUCKET_AVAILABLE,
    Bucket.HELD: ledger_pb2.BUCKET_HELD,
    Bucket.ISSUANCE: ledger_pb2.BUCKET_ISSUANCE,
}
_ENTRY_KINDS = {kind: ledger_pb2.EntryKind.Value(f"ENTRY_KIND_{kind.value}") for kind in EntryKind}
WALLET_KINDS = {
    WalletKind.PERSONAL: wallet_pb2.WALLET_KIND_PERSONAL,
    WalletKind.ENTERPRISE: wallet_pb2.WALLET_KIND_ENTERPRISE,
    WalletKind.INSTITUTION: wallet_pb2.WALLET_KIND_INSTITUTION,
}


def timestamp(us: int) -> Timestamp:
    seconds, micros = divmod(us, 1_000_000)
    return Timestamp(seconds=seconds, nanos=micros * 1000)


def money(currency: str, amount_minor: int) -> money_pb2.Money:
    return money_pb2.Money(currency=currency, amount_minor=amount_minor)


def entry(record: EntryRecord) -> ledger_pb2.JournalEntry:
    return ledger_pb2.JournalEntry(
        seq=record.seq,
        kind=_ENTRY_KINDS[record.kind],
        request_id=record.request_id,
        caller=record.caller,
        committed_at=timestamp(record.committed_at_us),
        memo=record.memo,
        prev_hash=record.prev_hash,
        hash=record.hash,
        postings=[
            ledger_pb2.Posting(
                account_id=p.account_id,
                bucket=_BUCKETS[p.bucket],
                amount=money_pb2.Money(currency=p.currency, amount_minor=p.amount),
                balance_after_minor=p.balance_after,
            )
            for p in record.postings
        ],
    )


def _cap(currency: str, cap: int | None) -> money_pb2.Money | None:
    return None if cap is None else money(currency, cap)


def wallet(
    record: WalletRecord, balances: Iterable[BalanceRecord], now_us: int
) -> wallet_pb2.Wallet:
    today = limit_day(now_us)
    lines = []
    for b in sorted(balances, key=lambda b: b.currency):
        limits = limits_for(record.kind, record.tier, b.currency)
        lines.append(
            wallet_pb2.CurrencyBalance(
                available=money(b.currency, b.available),
                held=money(b.currency, b.held),
                spent_today=money(b.currency, b.spent_today if b.spent_day == today else 0),
                balance_cap=_cap(b.currency, limits.balance_cap_minor),
                single_payment_cap=_cap(b.currency, limits.single_payment_cap_minor),
                daily_cap=_cap(b.currency, limits.daily_cap_minor),
            )
        )
    return wallet_pb2.Wallet(
        wallet_id=record.wallet_id,
        kind=WALLET_KINDS[record.kind],
        tier=record.tier,
        institution_id=record.institution_id,
        owner_public_key=record.owner_public_key,
        display_name=record.display_name,
        opened_at=timestamp(record.opened_at_us),
        balances=lines,
    )


def institution(record: InstitutionRecord) -> central_bank_pb2.Institution:
    return central_bank_pb2.Institution(
        institution_id=record.institution_id,
        display_name=record.display_name,
        reserve_wallet_id=record.reserve_wallet_id,
        registered_at=timestamp(record.registered_at_us),
    )
