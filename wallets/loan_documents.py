"""Inventory loans' signed documents: a loan against a pledged warehouse receipt, its
repayments, more collateral, what its oracles observe of the collateral, and the sale of the
collateral after a default (docs/financing.md).

| document | signed by | authorises |
|---|---|---|
| ``condpay.loan.v1`` | borrower and financier | the loan: receipt pledged, principal paid |
| ``condpay.loan-repay.v1`` | the borrower | repaying, and freeing part of the collateral |
| ``condpay.loan-pledge.v1`` | the borrower | pledging another receipt to the loan |
| ``condpay.collateral.v1`` | the loan's oracles | a price per unit, or a receipt's stock |
| ``condpay.loan-disposal.v1`` | the financier and the buyer | selling a defaulted loan's receipt |

Like every ``.v2`` payment document each names its ``submitter`` (the one caller that may submit
it) and its ``request_id``; a collateral statement is bound instead to one loan, one oracle set
version and one event id, as payment attestations are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final

from wallets.canonical import Field
from wallets.instructions import Document, document_format

DISPOSALS: Final = ("RETAIN", "SELL")
COLLATERAL_KINDS: Final = ("VALUATION", "STOCK")
CONDITIONS: Final = ("GOOD", "DAMAGED", "SPOILED", "MISSING")


@dataclass(frozen=True, slots=True)
class LoanTerms(Document):
    """``financier`` lends ``principal_minor`` of ``currency`` to ``borrower`` against the
    warehouse receipt ``title_id``, pledged to the loan while anything is owed.

    Owed: the principal, a flat ``fee_minor``, and simple interest at ``rate_bps`` a year on the
    principal outstanding, counted actual/365 to the microsecond and rounded up to the fen when
    due. Collateral value: units present × the newest price per unit (``unit_price_minor`` until
    ``price_oracle`` says otherwise); lending value: value × (1 − ``haircut_bps``/10,000), floored.
    Opening needs principal + fee ≤ lending value. A margin call comes when owed × 10,000 exceeds
    lending value × ``margin_call_bps`` (10,000 = as soon as owed exceeds lending value), or at
    once when a receipt's stock is reported spoiled or missing; it is cured within
    ``cure_period_s`` or the loan defaults, as it does at ``maturity_at_us`` unpaid. Stock counts
    come from ``warehouse_oracle`` together with ``sensor_threshold`` of ``sensor_oracles``.
    ``disposal``: RETAIN (the receipt goes to the financier) or SELL (the financier sells it by
    delivery versus payment; the proceeds pay what is owed, the surplus goes to the borrower)."""

    FORMAT: ClassVar = document_format(
        "condpay.loan.v1",
        ("borrower", Field.ID),
        ("financier", Field.ID),
        ("borrower_agent", Field.CALLER),
        ("financier_agent", Field.CALLER),
        ("title_id", Field.ID),
        ("currency", Field.CURRENCY),
        ("principal_minor", Field.UINT),
        ("fee_minor", Field.UINT),
        ("rate_bps", Field.UINT),
        ("maturity_at_us", Field.UINT),
        ("unit_price_minor", Field.UINT),
        ("haircut_bps", Field.UINT),
        ("margin_call_bps", Field.UINT),
        ("cure_period_s", Field.UINT),
        ("price_oracle", Field.ID),
        ("warehouse_oracle", Field.ID),
        ("sensor_oracles", Field.ID_LIST),
        ("sensor_threshold", Field.UINT),
        ("disposal", Field.ID),
        ("submitter", Field.CALLER),
        ("request_id", Field.ID),
        ("expires_at_us", Field.UINT),
    )
    borrower: str
    financier: str
    borrower_agent: str
    financier_agent: str
    title_id: str
    currency: str
    principal_minor: int
    fee_minor: int
    rate_bps: int
    maturity_at_us: int
    unit_price_minor: int
    haircut_bps: int
    margin_call_bps: int
    cure_period_s: int
    price_oracle: str
    warehouse_oracle: str
    sensor_oracles: str
    sensor_threshold: int
    disposal: str
    submitter: str
    request_id: str
    expires_at_us: int


@dataclass(frozen=True, slots=True)
class LoanRepayment(Document):
    """The borrower pays ``amount_minor`` towards ``loan_id`` (interest first, then the fee, then
    principal) and, if ``release_units`` > 0, frees that many units of the pledged receipt
    ``release_title_id`` (split off and returned to the borrower) as far as the loan allows."""

    FORMAT: ClassVar = document_format(
        "condpay.loan-repay.v1",
        ("loan_id", Field.ID),
        ("payer", Field.ID),
        ("amount_minor", Field.UINT),
        ("release_title_id", Field.OPTIONAL_ID),
        ("release_units", Field.UINT),
        ("submitter", Field.CALLER),
        ("request_id", Field.ID),
        ("expires_at_us", Field.UINT),
    )
    loan_id: str
    payer: str
    amount_minor: int
    release_title_id: str
    release_units: int
    submitter: str
    request_id: str
    expires_at_us: int


@dataclass(frozen=True, slots=True)
class LoanPledge(Document):
    """The holder (the borrower) pledges another receipt to ``loan_id``: more collateral, e.g. to
    cure a margin call."""

    FORMAT: ClassVar = document_format(
        "condpay.loan-pledge.v1",
        ("loan_id", Field.ID),
        ("title_id", Field.ID),
        ("holder", Field.ID),
        ("submitter", Field.CALLER),
        ("request_id", Field.ID),
        ("expires_at_us", Field.UINT),
    )
    loan_id: str
    title_id: str
    holder: str
    submitter: str
    request_id: str
    expires_at_us: int


@dataclass(frozen=True, slots=True)
class CollateralStatement(Document):
    """What a loan's oracle observed of its collateral, bound to one loan and one oracle set
    version: a VALUATION (``unit_price_minor`` of ``currency`` per unit, from the price oracle;
    ``title_id`` empty, ``units_present`` 0, ``condition`` empty) or a STOCK count of one
    pledged receipt (``units_present`` and its ``condition``: GOOD, DAMAGED, SPOILED or
    MISSING; ``unit_price_minor`` 0), signed by the warehouse and the sensor quorum."""

    FORMAT: ClassVar = document_format(
        "condpay.collateral.v1",
        ("oracle_set_version", Field.UINT),
        ("loan_id", Field.ID),
        ("event_id", Field.ID),
        ("kind", Field.ID),
        ("title_id", Field.OPTIONAL_ID),
        ("currency", Field.CURRENCY),
        ("unit_price_minor", Field.UINT),
        ("units_present", Field.UINT),
        ("condition", Field.OPTIONAL_ID),
        ("observed_at_us", Field.UINT),
        ("issued_at_us", Field.UINT),
        ("expires_at_us", Field.UINT),
    )
    oracle_set_version: int
    loan_id: str
    event_id: str
    kind: str
    title_id: str
    currency: str
    unit_price_minor: int
    units_present: int
    condition: str
    observed_at_us: int
    issued_at_us: int
    expires_at_us: int


@dataclass(frozen=True, slots=True)
class LoanDisposal(Document):
    """After ``loan_id`` defaulted (its terms saying SELL), the financier sells the pledged
    receipt ``title_id``, whole, to ``buyer``: ``receive_minor`` of the loan's currency arrives
    for it, paid as ``pay_minor`` of ``pay_currency`` (the same amount in one currency; across
    currencies through the bridge, at ``quote_id`` or, with it empty, at market with
    ``pay_minor`` the most the buyer pays). Signed by the financier and the buyer."""

    FORMAT: ClassVar = document_format(
        "condpay.loan-disposal.v1",
        ("loan_id", Field.ID),
        ("title_id", Field.ID),
        ("buyer", Field.ID),
        ("pay_currency", Field.CURRENCY),
        ("pay_minor", Field.UINT),
        ("receive_minor", Field.UINT),
        ("quote_id", Field.OPTIONAL_ID),
        ("submitter", Field.CALLER),
        ("request_id", Field.ID),
        ("expires_at_us", Field.UINT),
    )
    loan_id: str
    title_id: str
    buyer: str
    pay_currency: str
    pay_minor: int
    receive_minor: int
    quote_id: str
    submitter: str
    request_id: str
    expires_at_us: int
