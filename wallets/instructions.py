"""Signed documents: what a wallet owner (or an oracle) authorises, as exact bytes plus a signature.

The server decodes the transmitted bytes (strictly: one encoding per document, see
wallets/canonical.py), looks up the signer's key, and verifies the signature over those same
bytes; it never rebuilds them from other request fields. Each kind has its own header, so bytes
signed as one kind never verify as another.

| document | signed by | authorises |
|---|---|---|
| ``condpay.transfer.v2`` | the source wallet's owner | a transfer |
| ``condpay.lock.v2`` | the payer | locking the escrow of a conditional payment |
| ``condpay.fund.v2`` | the financier's wallet owner and the payer | funding part of the escrow |
| ``condpay.assign.v2`` | the payee and the financier | assigning proceeds for an advance |
| ``condpay.cancel.v2`` | the payer and every payee | cancelling a payment (refund) |
| ``condpay.attestation.v1`` | an oracle, a quorum, or a party | an observed trade event |
| ``condpay.title.v2`` | a registered issuer | a digital title (eBL, warehouse receipt) |
| ``condpay.title-split.v2`` | the holder | splitting a title in two |
| ``condpay.pledge.v2`` | the holder | pledging a title to a financier's wallet |
| ``condpay.payment-pledge.v2`` | the holder | escrowing a title to one payment and its terms |
| ``condpay.pledge-release.v2`` | the pledgee | releasing the pledge |
| ``condpay.dvp.v2`` | the seller and the buyer | a title against payment, both or neither |
| ``condpay.pvp.v2`` | the payer | paying one currency for another at a quote, both or neither |

Inventory loans' documents (``condpay.loan.v1`` and the rest) are in wallets/loan_documents.py.

Every ``.v2`` document names its ``submitter``: the one authenticated caller (``<role>/<id>``)
that may submit it. Outcomes are stored per (caller, request id) and the document names both, so
a signed document has at most one effect, whoever relays it. The ``.v1`` formats (no submitter)
are refused, with a message that says so.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, Final, Self

from wallets import canonical
from wallets.canonical import Field
from wallets.keys import OwnerKey


class Document:
    """A frozen dataclass whose fields are exactly its format's fields, in order."""

    FORMAT: ClassVar[canonical.DocumentFormat]

    def to_bytes(self) -> bytes:
        return self.FORMAT.encode({f.name: getattr(self, f.name) for f in fields(self)})  # type: ignore[arg-type]

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode canonical bytes; MalformedInstruction (naming the field) on anything else."""
        return cls(**cls.FORMAT.decode(data))

    def sign(self, key: OwnerKey) -> SignedInstruction:
        """Client side: the canonical bytes and ``key``'s signature over them."""
        payload = self.to_bytes()
        type(self).from_bytes(payload)  # refuse to sign what the server would refuse
        return SignedInstruction(payload, key.sign(payload))


def document_format(header: str, *spec: tuple[str, Field]) -> canonical.DocumentFormat:
    """A document's format; a ``.v2`` header retires its ``.v1`` (refused, saying so)."""
    retired = (header.removesuffix(".v2") + ".v1",) if header.endswith(".v2") else ()
    return canonical.DocumentFormat(header, spec, retired)


@dataclass(frozen=True, slots=True)
class SignedInstruction:
    payload: bytes
    signature: bytes


TRANSFER_V2: Final = "condpay.transfer.v2"


@dataclass(frozen=True, slots=True)
class TransferInstruction(Document):
    """Move ``amount_minor`` of ``currency`` from ``source`` to ``target`` (wallet ids)."""

    FORMAT: ClassVar = document_format(
        TRANSFER_V2,
        ("source", Field.ID),
        ("target", Field.ID),
        ("currency", Field.CURRENCY),
        ("amount_minor", Field.UINT),
        ("submitter", Field.CALLER),
        ("request_id", Field.ID),
        ("expires_at_us", Field.UINT),
        ("memo", Field.TEXT),
    )
    source: str
    target: str
    currency: str
    amount_minor: int
    submitter: str
    request_id: str
    expires_at_us: int
    memo: str = ""


@dataclass(frozen=True, slots=True)
class LockInstruction(Document):
    """The payer locks ``amount_minor`` in escrow for the contract ``contract_hash`` with the
    parameter values whose canonical hash is ``params_hash`` (contracts_dsl BoundParams.hash)."""

    FORMAT: ClassVar = document_format(
        "condpay.lock.v2",
        ("payer", Field.ID),
        ("contract_hash", Field.HEX256),
        ("params_hash", Field.HEX256),
        ("currency", Field.CURRENCY),
        ("amount_minor", Field.UINT),
        ("submitter", Field.CALLER),
        ("request_id", Field.ID),
        ("expires_at_us", Field.UINT),
    )
    payer: str
    contract_hash: str
    params_hash: str
    currency: str
    amount_minor: int
    submitter: str
    request_id: str
    expires_at_us: int


@dataclass(frozen=True, slots=True)
class FundInstruction(Document):
    """The financier pays ``amount_minor`` into the escrow of ``payment_id`` for the payer, who
    owes it back with ``fee_minor`` by ``due_at_us``."""

    FORMAT: ClassVar = document_format(
        "condpay.fund.v2",
        ("financier", Field.ID),
        ("payer", Field.ID),
        ("payment_id", Field.ID),
        ("currency", Field.CURRENCY),
        ("amount_minor", Field.UINT),
        ("fee_minor", Field.UINT),
        ("due_at_us", Field.UINT),
        ("submitter", Field.CALLER),
        ("request_id", Field.ID),
        ("expires_at_us", Field.UINT),
    )
    financier: str
    payer: str
    payment_id: str
    currency: str
    amount_minor: int
    fee_minor: int
    due_at_us: int
    submitter: str
    request_id: str
    expires_at_us: int


@dataclass(frozen=True, slots=True)
class AssignmentInstruction(Document):
    """The payee assigns up to ``assigned_minor`` of what ``payment_id`` pays it to the financier,
    who pays the payee ``advance_minor`` now. Signed by both."""

    FORMAT: ClassVar = document_format(
        "condpay.assign.v2",
        ("payment_id", Field.ID),
        ("payee", Field.ID),
        ("financier", Field.ID),
        ("currency", Field.CURRENCY),
        ("assigned_minor", Field.UINT),
        ("advance_minor", Field.UINT),
        ("submitter", Field.CALLER),
        ("request_id", Field.ID),
        ("expires_at_us", Field.UINT),
    )
    payment_id: str
    payee: str
    financier: str
    currency: str
    assigned_minor: int
    advance_minor: int
    submitter: str
    request_id: str
    expires_at_us: int


@dataclass(frozen=True, slots=True)
class CancelInstruction(Document):
    """Cancel ``payment_id``: what remains in escrow goes back (financiers first)."""

    FORMAT: ClassVar = document_format(
        "condpay.cancel.v2",
        ("payment_id", Field.ID),
        ("submitter", Field.CALLER),
        ("request_id", Field.ID),
        ("expires_at_us", Field.UINT),
    )
    payment_id: str
    submitter: str
    request_id: str
    expires_at_us: int


@dataclass(frozen=True, slots=True)
class AttestationStatement(Document):
    """An observed trade event, bound to one payment, contract and oracle set version. ``oracle``
    is the attester's name in the contract (an oracle, or a wallet party such as ``buyer``); the
    event's attributes travel beside it as canonical JSON whose SHA-256 is ``payload_sha256``."""

    FORMAT: ClassVar = document_format(
        "condpay.attestation.v1",
        ("oracle_set_version", Field.UINT),
        ("oracle", Field.ID),
        ("event_id", Field.ID),
        ("payment_id", Field.ID),
        ("contract_hash", Field.HEX256),
        ("event_type", Field.ID),
        ("payload_sha256", Field.HEX256),
        ("observed_at_us", Field.UINT),
        ("issued_at_us", Field.UINT),
        ("expires_at_us", Field.UINT),
    )
    oracle_set_version: int
    oracle: str
    event_id: str
    payment_id: str
    contract_hash: str
    event_type: str
    payload_sha256: str
    observed_at_us: int
    issued_at_us: int
    expires_at_us: int


def sign_transfer(key: OwnerKey, instruction: TransferInstruction) -> SignedInstruction:
    """Client-side helper: the instruction's canonical bytes and the owner's signature over them."""
    return instruction.sign(key)


# -- digital titles: bills of lading, warehouse receipts, receivables ---------------------------
TITLE_KINDS: Final = ("bill_of_lading", "warehouse_receipt", "receivable")


@dataclass(frozen=True, slots=True)
class TitleIssue(Document):
    """A registered issuer (a shipping line, a bonded warehouse, a buyer acknowledging a debt)
    issues a title of ``units`` to ``holder``, describing the document whose SHA-256 it carries."""

    FORMAT: ClassVar = document_format(
        "condpay.title.v2",
        ("issuer", Field.ID),
        ("kind", Field.ID),
        ("holder", Field.ID),
        ("units", Field.UINT),
        ("description", Field.TEXT),
        ("document_sha256", Field.HEX256),
        ("submitter", Field.CALLER),
        ("request_id", Field.ID),
        ("expires_at_us", Field.UINT),
    )
    issuer: str
    kind: str
    holder: str
    units: int
    description: str
    document_sha256: str
    submitter: str
    request_id: str
    expires_at_us: int


@dataclass(frozen=True, slots=True)
class TitleSplit(Document):
    """The holder splits a title into two: ``units_first`` and the rest."""

    FORMAT: ClassVar = document_format(
        "condpay.title-split.v2",
        ("title_id", Field.ID),
        ("holder", Field.ID),
        ("units_first", Field.UINT),
        ("submitter", Field.CALLER),
        ("request_id", Field.ID),
        ("expires_at_us", Field.UINT),
    )
    title_id: str
    holder: str
    units_first: int
    submitter: str
    request_id: str
    expires_at_us: int


@dataclass(frozen=True, slots=True)
class TitlePledge(Document):
    """The holder pledges a title to ``pledgee``, a financier's wallet: it cannot move until the
    pledgee releases it. (A title escrowed to a conditional payment is a :class:`PaymentPledge`.)"""

    FORMAT: ClassVar = document_format(
        "condpay.pledge.v2",
        ("title_id", Field.ID),
        ("holder", Field.ID),
        ("pledgee", Field.ID),
        ("submitter", Field.CALLER),
        ("request_id", Field.ID),
        ("expires_at_us", Field.UINT),
    )
    title_id: str
    holder: str
    pledgee: str
    submitter: str
    request_id: str
    expires_at_us: int


@dataclass(frozen=True, slots=True)
class PaymentPledge(Document):
    """The holder escrows a title to the conditional payment ``payment_id`` locked with the
    contract ``contract_hash`` and the parameters whose canonical hash is ``params_hash`` (for a
    ``deliver title`` action): it moves when that contract delivers it, and is freed when the
    payment ends without. Bound to the deal, so it cannot serve another contract or terms."""

    FORMAT: ClassVar = document_format(
        "condpay.payment-pledge.v2",
        ("title_id", Field.ID),
        ("holder", Field.ID),
        ("payment_id", Field.ID),
        ("contract_hash", Field.HEX256),
        ("params_hash", Field.HEX256),
        ("submitter", Field.CALLER),
        ("request_id", Field.ID),
        ("expires_at_us", Field.UINT),
    )
    title_id: str
    holder: str
    payment_id: str
    contract_hash: str
    params_hash: str
    submitter: str
    request_id: str
    expires_at_us: int


@dataclass(frozen=True, slots=True)
class PledgeRelease(Document):
    """The pledgee releases its pledge."""

    FORMAT: ClassVar = document_format(
        "condpay.pledge-release.v2",
        ("title_id", Field.ID),
        ("pledgee", Field.ID),
        ("submitter", Field.CALLER),
        ("request_id", Field.ID),
        ("expires_at_us", Field.UINT),
    )
    title_id: str
    pledgee: str
    submitter: str
    request_id: str
    expires_at_us: int


@dataclass(frozen=True, slots=True)
class DvPInstruction(Document):
    """Delivery versus payment: ``units`` of the title from ``seller`` to ``buyer`` against
    ``pay_minor`` of ``pay_currency`` from ``buyer``, arriving as ``receive_minor`` of
    ``receive_currency`` to ``seller``: the same money when the currencies are equal (``quote_id``
    empty), else converted through the bridge at ``quote_id``, or, with ``quote_id`` empty, *at
    market*: exactly ``receive_minor`` arrives, at the bridge's quote when the core settles, and
    ``pay_minor`` is the most the buyer pays for it. Both parties sign the same bytes."""

    FORMAT: ClassVar = document_format(
        "condpay.dvp.v2",
        ("title_id", Field.ID),
        ("units", Field.UINT),
        ("seller", Field.ID),
        ("buyer", Field.ID),
        ("pay_currency", Field.CURRENCY),
        ("pay_minor", Field.UINT),
        ("receive_currency", Field.CURRENCY),
        ("receive_minor", Field.UINT),
        ("quote_id", Field.TEXT),
        ("submitter", Field.CALLER),
        ("request_id", Field.ID),
        ("expires_at_us", Field.UINT),
    )
    title_id: str
    units: int
    seller: str
    buyer: str
    pay_currency: str
    pay_minor: int
    receive_currency: str
    receive_minor: int
    quote_id: str
    submitter: str
    request_id: str
    expires_at_us: int


@dataclass(frozen=True, slots=True)
class PvPInstruction(Document):
    """Payment versus payment: ``pay_minor`` of ``pay_currency`` from ``payer`` against
    ``receive_minor`` of ``receive_currency`` to ``payee``, at the bridge quote ``quote_id``.

    With ``quote_id`` empty, *at market*: exactly ``receive_minor`` arrives, converted at the
    bridge's quote when the core settles, and ``pay_minor`` is the most the payer pays for it."""

    FORMAT: ClassVar = document_format(
        "condpay.pvp.v2",
        ("payer", Field.ID),
        ("payee", Field.ID),
        ("quote_id", Field.OPTIONAL_ID),
        ("pay_currency", Field.CURRENCY),
        ("pay_minor", Field.UINT),
        ("receive_currency", Field.CURRENCY),
        ("receive_minor", Field.UINT),
        ("submitter", Field.CALLER),
        ("request_id", Field.ID),
        ("expires_at_us", Field.UINT),
    )
    payer: str
    payee: str
    quote_id: str
    pay_currency: str
    pay_minor: int
    receive_currency: str
    receive_minor: int
    submitter: str
    request_id: str
    expires_at_us: int
