"""Every RPC of the public API: who may call it and the closed set of reasons it may answer with.

The call wrapper (settlement/api/calls.py) checks the role of every call against this table
before the handler runs, and
turns any reason a handler raises outside its row into INTERNAL (a bug, logged), so the table is
the contract docs/api.md describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from settlement.api.identity import Role
from settlement.errors import Reason as R

_ALL_ROLES: Final = frozenset(Role)
# Reasons any call can meet: identity, and a server that is going away or overloaded.
_EVERY_CALL: Final = frozenset(
    {
        R.MALFORMED_REQUEST,
        R.CALLER_UNKNOWN,
        R.ROLE_NOT_ALLOWED,
        R.SHUTTING_DOWN,
        R.OVERLOADED,
        R.STORAGE_UNAVAILABLE,
        R.CALLS_IN_FLIGHT_EXCEEDED,
    }
)
# ... and every mutating call (request_id + dry_run).
_MUTATING: Final = _EVERY_CALL | {R.MISSING_FIELD, R.INVALID_REQUEST_ID, R.IDEMPOTENCY_KEY_REUSED}


@dataclass(frozen=True, slots=True)
class MethodSpec:
    roles: frozenset[Role]
    reasons: frozenset[R]
    mutating: bool


def _spec(roles: set[Role] | frozenset[Role], reasons: set[R], *, mutating: bool) -> MethodSpec:
    base = _MUTATING if mutating else _EVERY_CALL
    return MethodSpec(frozenset(roles), frozenset(reasons) | base, mutating)


_W = "/condpay.v1.WalletService/"
_C = "/condpay.v1.CentralBankService/"
_O = "/condpay.v1.OperationService/"
_E = "/condpay.v1.EvidenceService/"
_SUPERVISORS = frozenset({Role.CENTRAL_BANK, Role.AUDITOR})
_MONEY = {R.INVALID_AMOUNT, R.UNSUPPORTED_CURRENCY, R.AMOUNT_OVERFLOW}

METHODS: Final[dict[str, MethodSpec]] = {
    _C + "RegisterInstitution": _spec(
        {Role.CENTRAL_BANK},
        {R.INVALID_ID, R.INVALID_TEXT, R.INVALID_PUBLIC_KEY, R.INSTITUTION_EXISTS},
        mutating=True,
    ),
    _C + "Issue": _spec(
        {Role.CENTRAL_BANK},
        {R.INVALID_ID, R.INVALID_TEXT, R.INSTITUTION_NOT_FOUND, R.NOT_CURRENCY_ISSUER, *_MONEY},
        mutating=True,
    ),
    _C + "Redeem": _spec(
        {Role.CENTRAL_BANK},
        {
            R.INVALID_ID,
            R.INVALID_TEXT,
            R.INSTITUTION_NOT_FOUND,
            R.INSUFFICIENT_FUNDS,
            R.NOT_CURRENCY_ISSUER,
            *_MONEY,
        },
        mutating=True,
    ),
    _C + "GetSupply": _spec(
        {Role.CENTRAL_BANK, Role.AUDITOR},
        {R.MISSING_FIELD, R.UNSUPPORTED_CURRENCY},
        mutating=False,
    ),
    _W + "OpenWallet": _spec(
        {Role.INSTITUTION},  # the KYC tier is the institution's to set
        {
            R.INVALID_ID,
            R.INVALID_TEXT,
            R.INVALID_WALLET_KIND,
            R.INVALID_TIER,
            R.INVALID_PUBLIC_KEY,
            R.INSTITUTION_NOT_FOUND,
        },
        mutating=True,
    ),
    _W + "GetWallet": _spec(
        _ALL_ROLES - {Role.ORACLE},
        {R.MISSING_FIELD, R.INVALID_ID, R.WALLET_NOT_FOUND},
        mutating=False,
    ),
    _W + "Transfer": _spec(
        {Role.INSTITUTION, Role.PLATFORM, Role.FINANCIER},
        {
            R.INSTRUCTION_MALFORMED,
            R.INSTRUCTION_MISMATCH,
            R.SUBMITTER_MISMATCH,
            R.INSTRUCTION_EXPIRY_TOO_FAR,
            R.SAME_SOURCE_AND_TARGET,
            R.SIGNATURE_INVALID,
            R.WALLET_NOT_FOUND,
            R.INSTRUCTION_EXPIRED,
            R.INSUFFICIENT_FUNDS,
            R.LIMIT_EXCEEDED,
            *_MONEY,
        },
        mutating=True,
    ),
    _W + "ListJournal": _spec(
        {Role.INSTITUTION, Role.CENTRAL_BANK, Role.AUDITOR},
        {R.INVALID_ID, R.INVALID_PAGE_TOKEN, R.INVALID_PAGE_SIZE, R.WALLET_NOT_FOUND},
        mutating=False,
    ),
    _O + "GetOperation": _spec(
        _ALL_ROLES,
        {R.MISSING_FIELD, R.INVALID_REQUEST_ID, R.OPERATION_NOT_FOUND},
        mutating=False,
    ),
    _E + "GetCheckpointKey": _spec(_ALL_ROLES, set(), mutating=False),
    _E + "ListCheckpoints": _spec(
        _SUPERVISORS, {R.INVALID_PAGE_SIZE, R.INVALID_PAGE_TOKEN}, mutating=False
    ),
    _E + "GetCheckpoint": _spec(
        _SUPERVISORS, {R.MISSING_FIELD, R.CHECKPOINT_NOT_FOUND}, mutating=False
    ),
    _E + "GetInclusionProof": _spec(
        _SUPERVISORS,
        {R.MISSING_FIELD, R.CHECKPOINT_NOT_FOUND, R.ENTRY_NOT_FOUND},
        mutating=False,
    ),
    # Which payments' evidence each of these roles reads is a read scope (scopes.evidence): a
    # payment outside it is PAYMENT_NOT_FOUND, as an id that does not exist. Financiers and
    # oracles read none (a financier's institution does), so they may not call it at all.
    _E + "GetPaymentEvidence": _spec(
        {Role.PLATFORM, Role.INSTITUTION, Role.CENTRAL_BANK, Role.AUDITOR},
        {R.MISSING_FIELD, R.INVALID_ID, R.PAYMENT_NOT_FOUND},
        mutating=False,
    ),
}

_K = "/condpay.v1.ContractService/"
_P = "/condpay.v1.ConditionalPaymentService/"
_R = "/condpay.v1.OracleService/"
_READERS = frozenset({Role.PLATFORM, Role.FINANCIER, Role.CENTRAL_BANK, Role.AUDITOR})
_SIGNED = {
    R.INSTRUCTION_MALFORMED,
    R.INSTRUCTION_MISMATCH,
    R.SUBMITTER_MISMATCH,
    R.INSTRUCTION_EXPIRY_TOO_FAR,
    R.INSTRUCTION_EXPIRED,
    R.SIGNATURE_INVALID,
    R.WALLET_NOT_FOUND,
}
_OPEN_PAYMENT = {R.INVALID_ID, R.PAYMENT_NOT_FOUND, R.PAYMENT_NOT_OPEN}
_CONTRACT = {R.CONTRACT_INVALID, R.CONTRACT_NOT_FOUND}
_ORACLE_KEY = {
    R.INVALID_ID,
    R.INVALID_TEXT,
    R.INVALID_PUBLIC_KEY,
    R.PROOF_OF_POSSESSION_INVALID,
}

METHODS.update(
    {
        _K + "ValidateContract": _spec(
            _ALL_ROLES,
            {R.MISSING_FIELD, R.CONTRACT_INVALID, R.HEAVY_CALLS_EXCEEDED},
            mutating=False,
        ),
        _K + "SimulateContract": _spec(
            _ALL_ROLES,
            {R.MISSING_FIELD, R.PARAMS_INVALID, R.HEAVY_CALLS_EXCEEDED, *_CONTRACT},
            mutating=False,
        ),
        _K + "RegisterContract": _spec(
            {Role.PLATFORM},
            {R.CONTRACT_INVALID, R.HEAVY_CALLS_EXCEEDED, R.CONTRACTS_PER_DAY_EXCEEDED},
            mutating=True,
        ),
        _K + "GetContract": _spec(
            _ALL_ROLES, {R.MISSING_FIELD, R.CONTRACT_NOT_FOUND}, mutating=False
        ),
        _P + "LockPayment": _spec(
            {Role.PLATFORM},
            {
                *_SIGNED,
                *_CONTRACT,
                *_MONEY,
                R.CONTRACT_NOT_SUPPORTED,
                R.PARAMS_INVALID,
                R.INSUFFICIENT_FUNDS,
                R.LIMIT_EXCEEDED,
                R.TITLE_PLEDGE_MISSING,
                R.TITLE_NOT_FOUND,
                R.TITLE_RETIRED,
                R.NOT_TITLE_HOLDER,
                R.TITLE_PLEDGED,
                R.HEAVY_CALLS_EXCEEDED,
                R.CONTRACTS_PER_DAY_EXCEEDED,
                R.INVALID_VIEW,
            },
            mutating=True,
        ),
        _P + "FundEscrow": _spec(
            {Role.FINANCIER},
            {
                *_SIGNED,
                *_OPEN_PAYMENT,
                *_MONEY,
                R.CURRENCY_MISMATCH,
                R.FINANCING_EXCEEDS_ESCROW,
                R.INSUFFICIENT_FUNDS,
                R.LIMIT_EXCEEDED,
                R.INVALID_VIEW,
            },
            mutating=True,
        ),
        _P + "AssignProceeds": _spec(
            {Role.FINANCIER},
            {
                *_SIGNED,
                *_OPEN_PAYMENT,
                *_MONEY,
                R.CURRENCY_MISMATCH,
                R.ADVANCE_EXCEEDS_ASSIGNMENT,
                R.ASSIGNMENT_EXCEEDS_ESCROW,
                R.INSUFFICIENT_FUNDS,
                R.LIMIT_EXCEEDED,
                R.INVALID_VIEW,
            },
            mutating=True,
        ),
        _P + "CancelPayment": _spec(
            {Role.PLATFORM},
            {*_SIGNED, *_OPEN_PAYMENT, R.CANCEL_NOT_AUTHORIZED, R.INVALID_VIEW},
            mutating=True,
        ),
        _P + "GetPayment": _spec(
            _READERS,
            {R.MISSING_FIELD, R.INVALID_ID, R.PAYMENT_NOT_FOUND, R.INVALID_VIEW},
            mutating=False,
        ),
        _P + "ListPayments": _spec(
            _READERS, {R.INVALID_PAGE_SIZE, R.INVALID_PAGE_TOKEN, R.INVALID_VIEW}, mutating=False
        ),
        _P + "WatchPayment": _spec(
            _READERS,
            {
                R.MISSING_FIELD,
                R.INVALID_ID,
                R.PAYMENT_NOT_FOUND,
                R.INVALID_PAGE_TOKEN,
                R.STREAMS_EXCEEDED,
                R.INVALID_VIEW,
            },
            mutating=False,
        ),
        _R + "RegisterOracle": _spec(
            {Role.CENTRAL_BANK}, {*_ORACLE_KEY, R.ORACLE_EXISTS, R.ORACLE_KEY_IN_USE}, mutating=True
        ),
        _R + "RotateOracleKey": _spec(
            {Role.CENTRAL_BANK},
            {*_ORACLE_KEY, R.ORACLE_NOT_FOUND, R.ORACLE_REVOKED, R.ORACLE_KEY_IN_USE},
            mutating=True,
        ),
        _R + "RevokeOracle": _spec(
            {Role.CENTRAL_BANK},
            {R.INVALID_ID, R.INVALID_TEXT, R.ORACLE_NOT_FOUND, R.ORACLE_REVOKED},
            mutating=True,
        ),
        _R + "GetOracleSet": _spec(_ALL_ROLES, set(), mutating=False),
        _R + "SubmitAttestation": _spec(
            {Role.ORACLE, Role.PLATFORM},
            {
                R.INVALID_VIEW,
                R.INVALID_ID,
                R.PAYMENT_NOT_FOUND,
                R.PAYMENT_NOT_OPEN,
                R.ATTESTATION_MALFORMED,
                R.ATTESTATION_TIMES_INVALID,
                R.PAYLOAD_MALFORMED,
                R.SIGNER_NOT_ALLOWED,
                R.MISSING_FIELD,
                R.PAYLOAD_MISMATCH,
                R.ATTESTATION_WRONG_PAYMENT,
                R.ORACLE_NOT_IN_CONTRACT,
                R.ORACLE_NOT_FOUND,
                R.ORACLE_REVOKED,
                R.SIGNATURE_INVALID,
                R.QUORUM_NOT_MET,
                R.ORACLE_SET_CHANGED,
                R.ATTESTATION_STALE,
                R.ATTESTATION_FROM_FUTURE,
                R.ATTESTATION_EXPIRED,
                R.EVENT_ALREADY_SEEN,
                R.WALLET_NOT_FOUND,
            },
            mutating=True,
        ),
    }
)

_A = "/condpay.v1.AssetService/"
_S = "/condpay.v1.SettlementService/"
_TITLE = {R.TITLE_NOT_FOUND, R.TITLE_RETIRED, R.NOT_TITLE_HOLDER, R.TITLE_PLEDGED}
_QUOTED = {
    R.QUOTE_NOT_FOUND,
    R.QUOTE_EXPIRED,
    R.QUOTE_ALREADY_USED,
    R.SAME_CURRENCY,
    R.BRIDGE_NOT_CONFIGURED,
    # at market (no quote id): the core asks the bridge for the quote
    R.QUOTE_ABOVE_LIMIT,
    R.BRIDGE_REFUSED,
    R.BRIDGE_UNAVAILABLE,
}
_SETTLE = {
    *_SIGNED,
    *_MONEY,
    R.INSUFFICIENT_FUNDS,
    R.LIMIT_EXCEEDED,
    R.MISSING_FIELD,
}

METHODS.update(
    {
        _A + "IssueTitle": _spec(
            {Role.PLATFORM, Role.ORACLE},
            {
                R.INSTRUCTION_MALFORMED,
                R.INSTRUCTION_MISMATCH,
                R.SUBMITTER_MISMATCH,
                R.INSTRUCTION_EXPIRY_TOO_FAR,
                R.INSTRUCTION_EXPIRED,
                R.INVALID_TEXT,
                R.INVALID_TITLE_KIND,
                R.INVALID_UNITS,
                R.ORACLE_NOT_FOUND,
                R.ORACLE_REVOKED,
                R.SIGNATURE_INVALID,
                R.WALLET_NOT_FOUND,
                R.TITLE_EXISTS,
            },
            mutating=True,
        ),
        _A + "SplitTitle": _spec(
            {Role.PLATFORM, Role.FINANCIER},
            {*_SIGNED, *_TITLE, R.INVALID_UNITS, R.TITLE_UNITS_EXCEEDED},
            mutating=True,
        ),
        _A + "PledgeTitle": _spec(
            {Role.PLATFORM, Role.FINANCIER}, {*_SIGNED, *_TITLE}, mutating=True
        ),
        _A + "ReleasePledge": _spec(
            {Role.PLATFORM, Role.FINANCIER},
            {*_SIGNED, R.TITLE_NOT_FOUND, R.TITLE_RETIRED, R.TITLE_NOT_PLEDGED},
            mutating=True,
        ),
        _A + "GetTitle": _spec(
            _READERS | {Role.INSTITUTION, Role.ORACLE},
            {R.MISSING_FIELD, R.INVALID_ID, R.TITLE_NOT_FOUND},
            mutating=False,
        ),
        _A + "ListTitles": _spec(
            _READERS | {Role.INSTITUTION, Role.ORACLE},
            {R.MISSING_FIELD, R.INVALID_ID, R.INVALID_PAGE_SIZE, R.INVALID_PAGE_TOKEN},
            mutating=False,
        ),
        _S + "QuoteFx": _spec(
            {Role.PLATFORM, Role.FINANCIER},
            {
                *_MONEY,
                R.SAME_CURRENCY,
                R.BRIDGE_NOT_CONFIGURED,
                R.BRIDGE_REFUSED,
                R.BRIDGE_UNAVAILABLE,
            },
            mutating=True,
        ),
        _S + "SettlePvP": _spec(
            {Role.PLATFORM, Role.FINANCIER}, {*_SETTLE, *_QUOTED}, mutating=True
        ),
        _S + "SettleDvP": _spec(
            {Role.PLATFORM, Role.FINANCIER},
            {
                *_SETTLE,
                *_QUOTED,
                *_TITLE,
                R.INVALID_UNITS,
                R.TITLE_UNITS_EXCEEDED,
                R.SAME_SOURCE_AND_TARGET,
            },
            mutating=True,
        ),
        _S + "GetSettlement": _spec(
            _READERS, {R.MISSING_FIELD, R.INVALID_ID, R.SETTLEMENT_NOT_FOUND}, mutating=False
        ),
        _S + "ListSettlements": _spec(
            _READERS, {R.INVALID_PAGE_SIZE, R.INVALID_PAGE_TOKEN}, mutating=False
        ),
    }
)

_F = "/condpay.v1.InventoryFinanceService/"
_LOAN = {R.INVALID_ID, R.LOAN_NOT_FOUND, R.LOAN_NOT_OPEN}
# The loan's agents (any role but oracle and auditor) act on it; its oracles, and its agents as
# relays, attest to its collateral.
_AGENTS = frozenset({Role.PLATFORM, Role.FINANCIER, Role.INSTITUTION})

METHODS.update(
    {
        _F + "OpenLoan": _spec(
            _AGENTS,
            {
                *_SIGNED,
                *_MONEY,
                *_TITLE,
                R.INVALID_LOAN_TERMS,
                R.ORACLE_NOT_FOUND,
                R.ORACLE_REVOKED,
                R.LOAN_LIMIT_EXCEEDED,
                R.INSUFFICIENT_FUNDS,
                R.LIMIT_EXCEEDED,
            },
            mutating=True,
        ),
        _F + "Repay": _spec(
            _AGENTS,
            {
                *_SIGNED,
                *_MONEY,
                *_LOAN,
                R.NOT_LOAN_BORROWER,
                R.REPAYMENT_EXCEEDS_OWED,
                R.RELEASE_EXCEEDS_REPAYMENT,
                R.TITLE_NOT_IN_LOAN,
                R.TITLE_UNITS_EXCEEDED,
                R.TITLE_RETIRED,
                R.LOAN_LIMIT_EXCEEDED,
                R.INSUFFICIENT_FUNDS,
                R.LIMIT_EXCEEDED,
            },
            mutating=True,
        ),
        _F + "PledgeMore": _spec(
            _AGENTS,
            {
                *_SIGNED,
                *_LOAN,
                *_TITLE,
                R.NOT_LOAN_BORROWER,
                R.INVALID_LOAN_TERMS,
                R.LOAN_RECEIPTS_EXCEEDED,
            },
            mutating=True,
        ),
        _F + "SubmitCollateralAttestation": _spec(
            _AGENTS | {Role.ORACLE},
            {
                *_LOAN,
                R.MISSING_FIELD,
                R.ATTESTATION_MALFORMED,
                R.ATTESTATION_TIMES_INVALID,
                R.ATTESTATION_WRONG_LOAN,
                R.ATTESTATION_STALE,
                R.ATTESTATION_FROM_FUTURE,
                R.ATTESTATION_EXPIRED,
                R.ORACLE_SET_CHANGED,
                R.ORACLE_NOT_IN_LOAN,
                R.ORACLE_NOT_FOUND,
                R.ORACLE_REVOKED,
                R.SIGNER_NOT_ALLOWED,
                R.SIGNATURE_INVALID,
                R.QUORUM_NOT_MET,
                R.EVENT_ALREADY_SEEN,
                R.TITLE_NOT_IN_LOAN,
            },
            mutating=True,
        ),
        _F + "DisposeCollateral": _spec(
            {Role.FINANCIER, Role.PLATFORM, Role.INSTITUTION},
            {
                *_SETTLE,
                *_QUOTED,
                R.INVALID_ID,
                R.LOAN_NOT_FOUND,
                R.LOAN_NOT_DEFAULTED,
                R.TITLE_NOT_IN_LOAN,
                R.TITLE_NOT_FOUND,
                R.TITLE_RETIRED,
                R.SAME_SOURCE_AND_TARGET,
            },
            mutating=True,
        ),
        _F + "GetLoan": _spec(
            _READERS | {Role.INSTITUTION},
            {R.MISSING_FIELD, R.INVALID_ID, R.LOAN_NOT_FOUND},
            mutating=False,
        ),
        _F + "ListLoans": _spec(
            _READERS | {Role.INSTITUTION},
            {R.INVALID_ID, R.INVALID_PAGE_SIZE, R.INVALID_PAGE_TOKEN},
            mutating=False,
        ),
        _F + "WatchLoan": _spec(
            _READERS | {Role.INSTITUTION},
            {
                R.MISSING_FIELD,
                R.INVALID_ID,
                R.LOAN_NOT_FOUND,
                R.INVALID_PAGE_TOKEN,
                R.STREAMS_EXCEEDED,
            },
            mutating=False,
        ),
    }
)
