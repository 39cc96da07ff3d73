"""Ids the core derives from who asked and with which request id, so a client knows them before
it calls (and a replay names the same thing)."""

from __future__ import annotations

import base64
import hashlib


def _derive(kind: str, prefix: str, *parts: str) -> str:
    digest = hashlib.sha256("\n".join((kind, *parts)).encode()).digest()
    return prefix + base64.b32encode(digest).decode()[:26].lower()


def payment_id_for(caller: str, request_id: str) -> str:
    """The id LockPayment gives the payment ``caller`` (``platform/<id>``) locks with
    ``request_id``: known before the call, so title holders can pledge titles to it."""
    return _derive("payment", "p_", caller, request_id)


def wallet_id_for(caller: str, request_id: str) -> str:
    """The id OpenWallet gives the wallet ``caller`` opens with ``request_id``."""
    return _derive("wallet", "w_", caller, request_id)


def settlement_id_for(caller: str, request_id: str) -> str:
    """The id SettlePvP or SettleDvP gives the settlement ``caller`` asks for with
    ``request_id``."""
    return _derive("settlement", "s_", caller, request_id)


def payout_id_for(payment_id: str, leg_id: str) -> str:
    """The settlement that pays out a payment's leg in another currency (``pay ... in CUR``)."""
    return _derive("payout", "s_", payment_id, leg_id)


def title_id_for(issuer_id: str, document_sha256: str) -> str:
    """The id IssueTitle gives the title ``issuer_id`` issues over a document."""
    return _derive("title", "t_", issuer_id, document_sha256)


def loan_id_for(caller: str, request_id: str) -> str:
    """The id OpenLoan gives the loan ``caller`` opens with ``request_id``."""
    return _derive("loan", "l_", caller, request_id)
