"""Inventory loans as API messages."""

from __future__ import annotations

from typing import Final

from condpay.v1 import finance_pb2

from settlement.api.convert import timestamp
from settlement.ledger import loan_math, loans
from settlement.ledger.records import LoanEventRecord, LoanRecord, LoanState
from wallets import INT64_MAX

STATES: Final = {state: getattr(finance_pb2, f"LOAN_STATE_{state.value}") for state in LoanState}
STATES_BY_PROTO: Final = {number: state for state, number in STATES.items()}


def loan(record: LoanRecord, now_us: int) -> finance_pb2.Loan:
    """The loan as of ``now_us``: its interest accrued to then (a live loan's grows by the
    microsecond; the stored row holds it as of its last change)."""
    items = loans.collateral(record)
    interest, remainder = loans.interest_at(record, now_us)
    value = loan_math.value(items, record.unit_price_minor)
    return finance_pb2.Loan(
        loan_id=record.loan_id,
        state=STATES[record.state],
        borrower_wallet_id=record.borrower_wallet_id,
        financier_wallet_id=record.financier_wallet_id,
        borrower_agent=record.borrower_agent,
        financier_agent=record.financier_agent,
        currency=record.currency,
        principal_minor=record.principal_minor,
        principal_outstanding_minor=record.principal_outstanding_minor,
        fee_minor=record.fee_minor,
        fee_outstanding_minor=record.fee_outstanding_minor,
        rate_bps=record.rate_bps,
        interest_outstanding_minor=loan_math.interest_due(interest, remainder),
        owed_minor=loans.owed_at(record, now_us),
        repaid_minor=record.repaid_minor,
        recovered_minor=record.recovered_minor,
        surplus_minor=record.surplus_minor,
        maturity_at=timestamp(record.maturity_at_us),
        unit_price_minor=record.unit_price_minor,
        price_observed_at=(
            timestamp(record.price_observed_at_us) if record.price_observed_at_us else None
        ),
        haircut_bps=record.haircut_bps,
        margin_call_bps=record.margin_call_bps,
        cure_period_s=record.cure_period_s,
        price_oracle_id=record.price_oracle_id,
        warehouse_oracle_id=record.warehouse_oracle_id,
        sensor_oracle_ids=loans.sensors(record),
        sensor_threshold=record.sensor_threshold,
        disposal=record.disposal,
        collateral=[
            finance_pb2.PledgedReceipt(
                title_id=p.title_id,
                units=p.units,
                units_present=p.present,
                condition=p.condition,
                observed_at=timestamp(p.observed_at_us) if p.observed_at_us else None,
            )
            for p in items
        ],
        # (units × price can pass int64 on a hostile valuation: the view saturates)
        collateral_value_minor=min(value, INT64_MAX),
        lending_value_minor=min(loans.lending_value(record, items), INT64_MAX),
        cure_by=timestamp(record.cure_by_us) if record.cure_by_us else None,
        terminal_reason=record.terminal_reason,
        version=record.version,
        created_at=timestamp(record.created_at_us),
        updated_at=timestamp(record.updated_at_us),
    )


def loan_event(seq: int, record: LoanEventRecord) -> finance_pb2.LoanEvent:
    return finance_pb2.LoanEvent(
        seq=seq,
        kind=record.kind,
        event_id=record.event_id,
        amount_minor=record.amount_minor,
        title_id=record.title_id,
        units=record.units,
        detail=record.detail,
        request_id=record.request_id,
        at=timestamp(record.at_us),
        by=record.by,
    )
