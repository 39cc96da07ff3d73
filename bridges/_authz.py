"""Who may call what on the bridge: one role x method table, checked before any handler runs.

    method                      kinds allowed               and only
    ListValidators, GetSupply   every kind
    ListBalances                every kind                  its own (bank, provider); its
                                                            currency (central bank); all
                                                            (operator, auditor)
    CreateQuote                 bank                        the quote is bound to the caller
    PrepareTransfer             bank                        payer_id is the caller, and the
                                                            transfer id starts with "<caller>:"
    CommitTransfer, AbortTransfer,
    GetTransfer, GetFinality    bank                        a transfer id of its own ("<caller>:")
    Issue, Redeem, PublishRate  central_bank                the currency it issues (the rate
                                                            authority of a currency is its
                                                            central bank)
    RegisterBank,
    RegisterLiquidityProvider   operator
    AuditLedger, Tick           operator, auditor

Refusals: no identity -> IDENTITY_MISSING (UNAUTHENTICATED); a kind outside the row ->
ROLE_NOT_ALLOWED; a payer other than the caller -> NOT_PAYER; another payer's transfer id at
prepare -> TRANSFER_ID_NOT_OWNED; another currency -> NOT_CURRENCY_ISSUER (all PERMISSION_DENIED
or INVALID_ARGUMENT, said before anything is read). What is about another participant's object
answers exactly like an id that does not exist: TRANSFER_NOT_FOUND for another payer's transfer
id (whether or not it exists), QUOTE_NOT_FOUND for another's quote (bridges/_ledger.py),
PARTICIPANT_NOT_FOUND for another participant's balances.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from bridges._identity import Identity, Kind
from bridges._model import CENTRAL_BANKS
from bridges.errors import Reason, error

ALL: Final = frozenset(Kind)
BANK: Final = frozenset({Kind.BANK})
CENTRAL_BANK: Final = frozenset({Kind.CENTRAL_BANK})
OPERATOR: Final = frozenset({Kind.OPERATOR})
OVERSIGHT: Final = frozenset({Kind.OPERATOR, Kind.AUDITOR})

#: Every RPC of BridgeService and BridgeAdminService, and the kinds that may call it.
TABLE: Final[Mapping[str, frozenset[Kind]]] = {
    "ListValidators": ALL,
    "GetSupply": ALL,
    "ListBalances": ALL,
    "CreateQuote": BANK,
    "PrepareTransfer": BANK,
    "CommitTransfer": BANK,
    "AbortTransfer": BANK,
    "GetTransfer": BANK,
    "GetFinality": BANK,
    "Issue": CENTRAL_BANK,
    "Redeem": CENTRAL_BANK,
    "PublishRate": CENTRAL_BANK,
    "RegisterBank": OPERATOR,
    "RegisterLiquidityProvider": OPERATOR,
    "AuditLedger": OVERSIGHT,
    "Tick": OVERSIGHT,
}


def owns_transfer_id(caller: Identity, transfer_id: str) -> bool:
    """Transfer ids belong to their payer: ``<payer id>:<anything>``."""
    return transfer_id.startswith(f"{caller.id}:")


def _transfer_not_found(transfer_id: str) -> Exception:
    # The ledger's own words for an id that does not exist (bridges/_ledger.py _require).
    return error(
        Reason.TRANSFER_NOT_FOUND,
        f"transfer {transfer_id!r} does not exist",
        transfer_id=transfer_id,
    )


def _own_transfer(caller: Identity, request: Any) -> None:
    if not owns_transfer_id(caller, request.transfer_id):
        raise _transfer_not_found(request.transfer_id)


def _prepare(caller: Identity, request: Any) -> None:
    if request.payer_id != caller.id:
        raise error(
            Reason.NOT_PAYER,
            "only the payer prepares its transfers: payer_id must be the caller's own id",
            payer_id=request.payer_id,
        )
    if not owns_transfer_id(caller, request.transfer_id):
        raise error(
            Reason.TRANSFER_ID_NOT_OWNED,
            f"a transfer id starts with its payer's id and a colon ({caller.id}:...)",
            field="transfer_id",
        )


def issuer_of(caller: Identity) -> str:
    """The currency a central bank identity issues, "" for any other identity."""
    return CENTRAL_BANKS.get(caller.id, "") if caller.kind is Kind.CENTRAL_BANK else ""


def _issuer(caller: Identity, request: Any) -> None:
    currency = currency_of(request)
    if currency and issuer_of(caller) != currency:  # none: the handler refuses MISSING_FIELD
        raise error(
            Reason.NOT_CURRENCY_ISSUER,
            f"only the central bank that issues {currency or 'the currency'} may do this",
            currency=currency,
        )


def currency_of(request: Any) -> str:
    """The currency an Issue, Redeem or PublishRate request is about."""
    if hasattr(request, "amount"):
        return str(request.amount.currency)
    return str(request.currency)


def _balances(caller: Identity, request: Any) -> None:
    if caller.kind in (Kind.BANK, Kind.LIQUIDITY_PROVIDER) and request.participant_id not in (
        "",
        caller.id,
    ):
        raise error(
            Reason.PARTICIPANT_NOT_FOUND,
            f"participant {request.participant_id!r} is not registered",
            participant_id=request.participant_id,
        )


_OBJECT_CHECKS: Final[Mapping[str, Callable[[Identity, Any], None]]] = {
    "PrepareTransfer": _prepare,
    "CommitTransfer": _own_transfer,
    "AbortTransfer": _own_transfer,
    "GetTransfer": _own_transfer,
    "GetFinality": _own_transfer,
    "Issue": _issuer,
    "Redeem": _issuer,
    "PublishRate": _issuer,
    "ListBalances": _balances,
}


def authorize(method: str, caller: Identity, request: Any) -> None:
    """Raise the typed refusal, or return: ``caller`` may make this call."""
    allowed = TABLE.get(method)
    if allowed is None or caller.kind not in allowed:
        raise error(
            Reason.ROLE_NOT_ALLOWED,
            f"a {caller.kind.value} may not call {method}",
            method=method,
            kind=caller.kind.value,
        )
    check = _OBJECT_CHECKS.get(method)
    if check is not None:
        check(caller, request)
