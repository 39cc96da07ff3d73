"""Read scopes: who may see which wallet, journal entry, payment, title and settlement.

The one place that answers "may caller C see object X" (docs/api.md, "Who may call what and see
what"). Every read handler asks here, as a SQL condition the reader adds to its query, so a list
returns only what the caller may see, filtered in the database (a page never holds, and a page
token never points past, rows the caller cannot see), and a single read of an object the caller
may not see finds nothing, which the handler answers exactly as an id that does not exist.

- Wallets: the wallet's institution; every central bank, with only the balances of the
  currencies it issues; auditors; a platform or financier only a wallet that is a party of a
  payment it may see (payment_parties) or the payer or payee of a settlement it requested.
- Journal: an institution the entries touching its wallets; a central bank the entries with a
  posting in a currency it issues; auditors everything (platforms, financiers, oracles: not at all).
- Payments: the platform that locked it, financiers that funded it or hold an assignment on it,
  central banks, auditors; an oracle only to attest, and only to a payment whose contract names
  its oracle id among an oracle's sources.
- Titles: the holder's institution, the issuer (``oracle/<issuer_id>``), the institution of the
  pledgee wallet, whoever sees the loan it is pledged to, the platform whose payment holds it,
  the requester of a settlement that delivers it, any caller that moved it, central banks,
  auditors.
- Settlements: the requester, central banks, auditors.
- Loans: the two agents the loan document names (the borrower's and the financier's), the
  institutions of the borrower's and the financier's wallets, central banks, auditors; the
  receipts pledged to a loan are visible to its agents as well.
- Evidence bundles (GetPaymentEvidence): the payment's platform, the institutions of its parties'
  wallets, the central bank of its currency, auditors.

Page tokens are AES-GCM sealed cursors, bound (associated data) to the caller, the method and the
list's filters, under a key made once and kept in the database (``server_keys``) so every
replica opens every other's tokens; anything else is INVALID_PAGE_TOKEN.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
from collections.abc import Mapping
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import ColumnElement, exists, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from contracts_dsl import CompiledContract
from settlement.api import requests
from settlement.api.identity import Caller, Role
from settlement.db import models
from settlement.db.server_keys import shared_secret
from settlement.errors import Reason, SettlementError
from wallets.currencies import CURRENCIES

_SEES_ALL: Final = frozenset({Role.CENTRAL_BANK, Role.AUDITOR})
#: Read scopes kept per kind: the same caller gets the same condition object, so a reader's
#: prebuilt statement for it is found again (settlement/ledger/scoped_statements.py).
_SCOPES_CACHED: Final = 4096


def issued_currencies(caller: Caller) -> frozenset[str]:
    """The currencies a central bank issues (none for any other role)."""
    if caller.role is not Role.CENTRAL_BANK:
        return frozenset()
    return frozenset(c for c, spec in CURRENCIES.items() if spec.central_bank.lower() == caller.id)


def may_issue(caller: Caller, currency: str) -> bool:
    """Issue and Redeem of ``currency``: only by the central bank that issues it."""
    return currency in issued_currencies(caller)


# -- payments ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=_SCOPES_CACHED)
def payments(caller: Caller) -> ColumnElement[bool]:
    """The payments ``caller`` may see, as a condition on ``payments``."""
    if caller.role in _SEES_ALL:
        return true()
    me = str(caller)
    if caller.role is Role.PLATFORM:
        return col(models.Payment.platform) == me
    if caller.role is Role.FINANCIER:
        funded = exists().where(
            col(models.PaymentFinancing.payment_id) == col(models.Payment.payment_id),
            col(models.PaymentFinancing.funded_by) == me,
        )
        assigned = exists().where(
            col(models.PaymentAssignment.payment_id) == col(models.Payment.payment_id),
            col(models.PaymentAssignment.assigned_by) == me,
        )
        return or_(funded, assigned)
    return false()


def evidence(caller: Caller) -> ColumnElement[bool]:
    """The payments whose evidence bundle ``caller`` may read, as a condition on ``payments``:
    its platform, the institutions of its parties' wallets, the central bank of its currency,
    auditors. (Financiers and oracles may not call GetPaymentEvidence: api/methods.py.)"""
    if caller.role is Role.AUDITOR:
        return true()
    if caller.role is Role.CENTRAL_BANK:
        return col(models.Payment.currency).in_(sorted(issued_currencies(caller)))
    if caller.role is Role.PLATFORM:
        return col(models.Payment.platform) == str(caller)
    if caller.role is Role.INSTITUTION:
        return exists().where(
            col(models.PaymentParty.payment_id) == col(models.Payment.payment_id),
            col(models.PaymentParty.wallet_id).in_(_institution_wallets(caller.id)),  # type: ignore[arg-type]
        )
    return false()


def may_attest(caller: Caller, platform: str, contract: CompiledContract) -> bool:
    """Whether ``caller`` may submit an attestation for a payment locked by ``platform`` under
    ``contract``: the platform that locked it, or an oracle the contract names as a source."""
    if caller.role is Role.PLATFORM:
        return platform == str(caller)
    if caller.role is Role.ORACLE:
        return any(caller.id in oracle.sources for oracle in contract.oracles)
    return False


# -- settlements ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=_SCOPES_CACHED)
def settlements(caller: Caller) -> ColumnElement[bool]:
    if caller.role in _SEES_ALL:
        return true()
    if caller.role in (Role.PLATFORM, Role.FINANCIER):
        return col(models.Settlement.requested_by) == str(caller)
    return false()


def loans(caller: Caller) -> ColumnElement[bool]:
    """The loans ``caller`` may see, as a condition on ``loans``."""
    if caller.role in _SEES_ALL:
        return true()
    me = str(caller)
    agent = or_(col(models.Loan.borrower_agent) == me, col(models.Loan.financier_agent) == me)
    if caller.role is Role.INSTITUTION:
        own = _institution_wallets(caller.id)
        return or_(
            agent,
            col(models.Loan.borrower_wallet_id).in_(own),  # type: ignore[arg-type]
            col(models.Loan.financier_wallet_id).in_(own),  # type: ignore[arg-type]
        )
    return agent


# -- wallets -------------------------------------------------------------------------------------
def _institution_wallets(institution_id: str) -> object:
    return select(col(models.Wallet.wallet_id)).where(
        col(models.Wallet.institution_id) == institution_id
    )


def wallets(caller: Caller) -> ColumnElement[bool]:
    """The wallets ``caller`` may see, as a condition on ``wallets``."""
    if caller.role in _SEES_ALL:
        return true()
    if caller.role is Role.INSTITUTION:
        return col(models.Wallet.institution_id) == caller.id
    if caller.role in (Role.PLATFORM, Role.FINANCIER):
        wallet_id = col(models.Wallet.wallet_id)
        party = (
            select(col(models.PaymentParty.wallet_id))
            .join(
                models.Payment,
                col(models.Payment.payment_id) == col(models.PaymentParty.payment_id),
            )
            .where(payments(caller))
        )
        mine = settlements(caller)
        return or_(
            wallet_id.in_(party),
            wallet_id.in_(select(col(models.Settlement.payer_wallet_id)).where(mine)),
            wallet_id.in_(select(col(models.Settlement.payee_wallet_id)).where(mine)),
        )
    return false()


def balance_currencies(caller: Caller) -> frozenset[str] | None:
    """The currencies of a visible wallet's balances ``caller`` sees (None: all of them)."""
    if caller.role is Role.CENTRAL_BANK:
        return issued_currencies(caller)
    return None


# -- journal -------------------------------------------------------------------------------------
def journal_postings(caller: Caller) -> ColumnElement[bool]:
    """A posting that makes its journal entry visible to ``caller`` (a condition on
    ``postings``); ListJournal is refused to the roles that see no entry at all."""
    if caller.role is Role.AUDITOR:
        return true()
    if caller.role is Role.CENTRAL_BANK:
        return col(models.Posting.currency).in_(sorted(issued_currencies(caller)))
    if caller.role is Role.INSTITUTION:
        return col(models.Posting.account_id).in_(_institution_wallets(caller.id))  # type: ignore[arg-type]
    return false()


# -- titles --------------------------------------------------------------------------------------
def titles(caller: Caller) -> ColumnElement[bool]:
    """The titles ``caller`` may see, as a condition on ``titles``."""
    if caller.role in _SEES_ALL:
        return true()
    title_id = col(models.Title.title_id)
    moved = exists().where(
        col(models.TitleMove.title_id) == title_id,
        col(models.TitleMove.moved_by) == str(caller),
    )
    if caller.role is Role.INSTITUTION:
        own = _institution_wallets(caller.id)
        return or_(
            col(models.Title.holder_wallet_id).in_(own),  # type: ignore[arg-type]
            col(models.Title.pledged_to).in_(own),  # type: ignore[arg-type]
            col(models.Title.pledged_to).in_(select(col(models.Loan.loan_id)).where(loans(caller))),
            moved,
        )
    if caller.role is Role.ORACLE:
        return or_(col(models.Title.issuer_id) == caller.id, moved)
    if caller.role in (Role.PLATFORM, Role.FINANCIER):
        requested = col(models.Settlement.requested_by) == str(caller)
        held_by_payment = col(models.Title.pledged_to).in_(
            select(col(models.Payment.payment_id)).where(
                col(models.Payment.platform) == str(caller)
            )
        )
        delivered = or_(
            title_id.in_(select(col(models.Settlement.title_id)).where(requested)),
            title_id.in_(select(col(models.Settlement.delivered_title_id)).where(requested)),
        )
        pledged_to_loan = col(models.Title.pledged_to).in_(
            select(col(models.Loan.loan_id)).where(loans(caller))
        )
        return or_(moved, delivered, held_by_payment, pledged_to_loan)
    return false()


# -- page tokens ---------------------------------------------------------------------------------
_KEY_NAME: Final = "page_token.aes256gcm"
_NONCE_BYTES: Final = 12
_TOKEN_CHARS_MAX: Final = 512


class PageTokens:
    """Opaque page tokens: the cursor sealed with AES-GCM, bound to who asks, for which list.

    The key is loaded (or made, once, by whichever replica comes first) by :meth:`load`."""

    def __init__(self) -> None:
        self._aead: AESGCM | None = None

    async def load(self, engine: AsyncEngine, now_us: int) -> None:
        secret = await shared_secret(
            engine, _KEY_NAME, lambda: AESGCM.generate_key(bit_length=256), now_us
        )
        self._aead = AESGCM(secret)

    def _cipher(self) -> AESGCM:
        assert self._aead is not None, "PageTokens.load was not awaited"
        return self._aead

    @staticmethod
    def _bound(caller: Caller, method: str, filters: Mapping[str, str]) -> bytes:
        return json.dumps(
            [str(caller), method, sorted(filters.items())], separators=(",", ":")
        ).encode()

    def seal(self, caller: Caller, method: str, filters: Mapping[str, str], cursor: str) -> str:
        """The token of the page after ``cursor`` (the last row of this page)."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._cipher().encrypt(
            nonce, cursor.encode(), self._bound(caller, method, filters)
        )
        return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()

    def open(self, caller: Caller, method: str, filters: Mapping[str, str], token: str) -> str:
        """The cursor of ``token`` ("" for no token); INVALID_PAGE_TOKEN for a token this server
        did not give this caller for this list with these filters, or any other string."""
        if not token:
            return ""
        try:
            if len(token) > _TOKEN_CHARS_MAX or not token.isascii():
                raise ValueError(token)
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            if len(raw) <= _NONCE_BYTES:
                raise ValueError(token)
            plain = self._cipher().decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], self._bound(caller, method, filters)
            )
            return plain.decode()
        except (ValueError, binascii.Error, InvalidTag, UnicodeDecodeError):
            raise _bad_token() from None


def _bad_token() -> SettlementError:
    return requests.invalid(Reason.INVALID_PAGE_TOKEN, "page_token", "not a page token")


def page_size(requested: int, default: int = 50, most: int = 500) -> int:
    """A list call's page size: INVALID_PAGE_SIZE if negative, 0 is ``default``, at most
    ``most``."""
    if requested < 0:
        raise requests.invalid(Reason.INVALID_PAGE_SIZE, "page_size", "must be >= 0")
    return min(requested or default, most)
