"""The settlement core's errors: one closed set of reasons, each with its gRPC status code.

    SettlementError         a request the core refuses; carries a Reason, a message for people,
    │                       metadata for machines and optional typed detail messages
    └── (no subclasses: the Reason is the type; clients branch on it, never on the message)

Anything else that escapes a handler is a bug: the API answers INTERNAL without its text and logs
it with the request id. settlement/api/status.py turns a SettlementError into a gRPC status with a
``google.rpc.ErrorInfo`` (domain ``condpay.v1``) and the typed details.

The closed list of reasons lives in the proto, ``condpay.v1.ErrorReason``
(proto/condpay/v1/errors.proto), which the client SDK decodes too. :class:`Reason` gives each of
its values, by the same name without the ``ERROR_REASON_`` prefix, the one status code it always
comes with; importing this module fails if the two lists differ in any way.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

import grpc
from condpay.errors import REASON_PREFIX
from condpay.v1 import errors_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "condpay.v1"


_INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
_UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
_PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
_NOT_FOUND = grpc.StatusCode.NOT_FOUND
_ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS
_FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
_OUT_OF_RANGE = grpc.StatusCode.OUT_OF_RANGE
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
_RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
_INTERNAL = grpc.StatusCode.INTERNAL
_R = errors_pb2.ErrorReason


@enum.unique
class Reason(enum.Enum):
    """Every reason the API can answer with: its ``condpay.v1.ErrorReason`` value and the one
    status code it always comes with. The name is the reason on the wire (``ErrorInfo.reason``)."""

    # INVALID_ARGUMENT: the request itself is wrong; retrying it unchanged never helps.
    MISSING_FIELD = (_R.ERROR_REASON_MISSING_FIELD, _INVALID_ARGUMENT)
    INVALID_REQUEST_ID = (_R.ERROR_REASON_INVALID_REQUEST_ID, _INVALID_ARGUMENT)
    INVALID_AMOUNT = (_R.ERROR_REASON_INVALID_AMOUNT, _INVALID_ARGUMENT)
    UNSUPPORTED_CURRENCY = (_R.ERROR_REASON_UNSUPPORTED_CURRENCY, _INVALID_ARGUMENT)
    INVALID_WALLET_KIND = (_R.ERROR_REASON_INVALID_WALLET_KIND, _INVALID_ARGUMENT)
    INVALID_TIER = (_R.ERROR_REASON_INVALID_TIER, _INVALID_ARGUMENT)
    INVALID_PUBLIC_KEY = (_R.ERROR_REASON_INVALID_PUBLIC_KEY, _INVALID_ARGUMENT)
    INVALID_ID = (_R.ERROR_REASON_INVALID_ID, _INVALID_ARGUMENT)
    INVALID_TEXT = (_R.ERROR_REASON_INVALID_TEXT, _INVALID_ARGUMENT)
    INVALID_PAGE_TOKEN = (_R.ERROR_REASON_INVALID_PAGE_TOKEN, _INVALID_ARGUMENT)
    INVALID_PAGE_SIZE = (_R.ERROR_REASON_INVALID_PAGE_SIZE, _INVALID_ARGUMENT)
    INVALID_VIEW = (_R.ERROR_REASON_INVALID_VIEW, _INVALID_ARGUMENT)
    MALFORMED_REQUEST = (_R.ERROR_REASON_MALFORMED_REQUEST, _INVALID_ARGUMENT)
    INSTRUCTION_MALFORMED = (_R.ERROR_REASON_INSTRUCTION_MALFORMED, _INVALID_ARGUMENT)
    INSTRUCTION_MISMATCH = (_R.ERROR_REASON_INSTRUCTION_MISMATCH, _INVALID_ARGUMENT)
    INSTRUCTION_EXPIRY_TOO_FAR = (_R.ERROR_REASON_INSTRUCTION_EXPIRY_TOO_FAR, _INVALID_ARGUMENT)
    SAME_SOURCE_AND_TARGET = (_R.ERROR_REASON_SAME_SOURCE_AND_TARGET, _INVALID_ARGUMENT)
    CONTRACT_INVALID = (_R.ERROR_REASON_CONTRACT_INVALID, _INVALID_ARGUMENT)
    PARAMS_INVALID = (_R.ERROR_REASON_PARAMS_INVALID, _INVALID_ARGUMENT)
    CURRENCY_MISMATCH = (_R.ERROR_REASON_CURRENCY_MISMATCH, _INVALID_ARGUMENT)
    ADVANCE_EXCEEDS_ASSIGNMENT = (_R.ERROR_REASON_ADVANCE_EXCEEDS_ASSIGNMENT, _INVALID_ARGUMENT)
    ATTESTATION_MALFORMED = (_R.ERROR_REASON_ATTESTATION_MALFORMED, _INVALID_ARGUMENT)
    PAYLOAD_MISMATCH = (_R.ERROR_REASON_PAYLOAD_MISMATCH, _INVALID_ARGUMENT)
    ATTESTATION_WRONG_PAYMENT = (_R.ERROR_REASON_ATTESTATION_WRONG_PAYMENT, _INVALID_ARGUMENT)
    PROOF_OF_POSSESSION_INVALID = (_R.ERROR_REASON_PROOF_OF_POSSESSION_INVALID, _INVALID_ARGUMENT)
    ATTESTATION_TIMES_INVALID = (_R.ERROR_REASON_ATTESTATION_TIMES_INVALID, _INVALID_ARGUMENT)
    PAYLOAD_MALFORMED = (_R.ERROR_REASON_PAYLOAD_MALFORMED, _INVALID_ARGUMENT)
    INVALID_TITLE_KIND = (_R.ERROR_REASON_INVALID_TITLE_KIND, _INVALID_ARGUMENT)
    INVALID_UNITS = (_R.ERROR_REASON_INVALID_UNITS, _INVALID_ARGUMENT)
    SAME_CURRENCY = (_R.ERROR_REASON_SAME_CURRENCY, _INVALID_ARGUMENT)
    TITLE_PLEDGE_MISSING = (_R.ERROR_REASON_TITLE_PLEDGE_MISSING, _INVALID_ARGUMENT)
    # UNAUTHENTICATED / PERMISSION_DENIED: who is calling, and what proves the payer's consent.
    CALLER_UNKNOWN = (_R.ERROR_REASON_CALLER_UNKNOWN, _UNAUTHENTICATED)
    ROLE_NOT_ALLOWED = (_R.ERROR_REASON_ROLE_NOT_ALLOWED, _PERMISSION_DENIED)
    SIGNATURE_INVALID = (_R.ERROR_REASON_SIGNATURE_INVALID, _PERMISSION_DENIED)
    SUBMITTER_MISMATCH = (_R.ERROR_REASON_SUBMITTER_MISMATCH, _PERMISSION_DENIED)
    CANCEL_NOT_AUTHORIZED = (_R.ERROR_REASON_CANCEL_NOT_AUTHORIZED, _PERMISSION_DENIED)
    ORACLE_NOT_IN_CONTRACT = (_R.ERROR_REASON_ORACLE_NOT_IN_CONTRACT, _PERMISSION_DENIED)
    ORACLE_REVOKED = (_R.ERROR_REASON_ORACLE_REVOKED, _PERMISSION_DENIED)
    QUORUM_NOT_MET = (_R.ERROR_REASON_QUORUM_NOT_MET, _PERMISSION_DENIED)
    SIGNER_NOT_ALLOWED = (_R.ERROR_REASON_SIGNER_NOT_ALLOWED, _PERMISSION_DENIED)
    NOT_CURRENCY_ISSUER = (_R.ERROR_REASON_NOT_CURRENCY_ISSUER, _PERMISSION_DENIED)
    # NOT_FOUND
    WALLET_NOT_FOUND = (_R.ERROR_REASON_WALLET_NOT_FOUND, _NOT_FOUND)
    INSTITUTION_NOT_FOUND = (_R.ERROR_REASON_INSTITUTION_NOT_FOUND, _NOT_FOUND)
    OPERATION_NOT_FOUND = (_R.ERROR_REASON_OPERATION_NOT_FOUND, _NOT_FOUND)
    CHECKPOINT_NOT_FOUND = (_R.ERROR_REASON_CHECKPOINT_NOT_FOUND, _NOT_FOUND)
    ENTRY_NOT_FOUND = (_R.ERROR_REASON_ENTRY_NOT_FOUND, _NOT_FOUND)
    # Inventory loans.
    INVALID_LOAN_TERMS = (_R.ERROR_REASON_INVALID_LOAN_TERMS, _INVALID_ARGUMENT)
    ATTESTATION_WRONG_LOAN = (_R.ERROR_REASON_ATTESTATION_WRONG_LOAN, _INVALID_ARGUMENT)
    LOAN_NOT_FOUND = (_R.ERROR_REASON_LOAN_NOT_FOUND, _NOT_FOUND)
    ORACLE_NOT_IN_LOAN = (_R.ERROR_REASON_ORACLE_NOT_IN_LOAN, _PERMISSION_DENIED)
    LOAN_NOT_OPEN = (_R.ERROR_REASON_LOAN_NOT_OPEN, _FAILED_PRECONDITION)
    LOAN_LIMIT_EXCEEDED = (_R.ERROR_REASON_LOAN_LIMIT_EXCEEDED, _FAILED_PRECONDITION)
    NOT_LOAN_BORROWER = (_R.ERROR_REASON_NOT_LOAN_BORROWER, _FAILED_PRECONDITION)
    REPAYMENT_EXCEEDS_OWED = (_R.ERROR_REASON_REPAYMENT_EXCEEDS_OWED, _FAILED_PRECONDITION)
    RELEASE_EXCEEDS_REPAYMENT = (_R.ERROR_REASON_RELEASE_EXCEEDS_REPAYMENT, _FAILED_PRECONDITION)
    TITLE_NOT_IN_LOAN = (_R.ERROR_REASON_TITLE_NOT_IN_LOAN, _FAILED_PRECONDITION)
    LOAN_NOT_DEFAULTED = (_R.ERROR_REASON_LOAN_NOT_DEFAULTED, _FAILED_PRECONDITION)
    LOAN_RECEIPTS_EXCEEDED = (_R.ERROR_REASON_LOAN_RECEIPTS_EXCEEDED, _FAILED_PRECONDITION)
    CONTRACT_NOT_FOUND = (_R.ERROR_REASON_CONTRACT_NOT_FOUND, _NOT_FOUND)
    PAYMENT_NOT_FOUND = (_R.ERROR_REASON_PAYMENT_NOT_FOUND, _NOT_FOUND)
    ORACLE_NOT_FOUND = (_R.ERROR_REASON_ORACLE_NOT_FOUND, _NOT_FOUND)
    TITLE_NOT_FOUND = (_R.ERROR_REASON_TITLE_NOT_FOUND, _NOT_FOUND)
    QUOTE_NOT_FOUND = (_R.ERROR_REASON_QUOTE_NOT_FOUND, _NOT_FOUND)
    SETTLEMENT_NOT_FOUND = (_R.ERROR_REASON_SETTLEMENT_NOT_FOUND, _NOT_FOUND)
    # ALREADY_EXISTS
    IDEMPOTENCY_KEY_REUSED = (_R.ERROR_REASON_IDEMPOTENCY_KEY_REUSED, _ALREADY_EXISTS)
    INSTITUTION_EXISTS = (_R.ERROR_REASON_INSTITUTION_EXISTS, _ALREADY_EXISTS)
    ORACLE_EXISTS = (_R.ERROR_REASON_ORACLE_EXISTS, _ALREADY_EXISTS)
    ORACLE_KEY_IN_USE = (_R.ERROR_REASON_ORACLE_KEY_IN_USE, _ALREADY_EXISTS)
    EVENT_ALREADY_SEEN = (_R.ERROR_REASON_EVENT_ALREADY_SEEN, _ALREADY_EXISTS)
    TITLE_EXISTS = (_R.ERROR_REASON_TITLE_EXISTS, _ALREADY_EXISTS)
    # FAILED_PRECONDITION: valid, but the state of the ledger does not allow it now.
    INSUFFICIENT_FUNDS = (_R.ERROR_REASON_INSUFFICIENT_FUNDS, _FAILED_PRECONDITION)
    LIMIT_EXCEEDED = (_R.ERROR_REASON_LIMIT_EXCEEDED, _FAILED_PRECONDITION)
    INSTRUCTION_EXPIRED = (_R.ERROR_REASON_INSTRUCTION_EXPIRED, _FAILED_PRECONDITION)
    CONTRACT_NOT_SUPPORTED = (_R.ERROR_REASON_CONTRACT_NOT_SUPPORTED, _FAILED_PRECONDITION)
    PAYMENT_NOT_OPEN = (_R.ERROR_REASON_PAYMENT_NOT_OPEN, _FAILED_PRECONDITION)
    NOT_A_PARTY = (_R.ERROR_REASON_NOT_A_PARTY, _FAILED_PRECONDITION)
    FINANCING_EXCEEDS_ESCROW = (_R.ERROR_REASON_FINANCING_EXCEEDS_ESCROW, _FAILED_PRECONDITION)
    ASSIGNMENT_EXCEEDS_ESCROW = (_R.ERROR_REASON_ASSIGNMENT_EXCEEDS_ESCROW, _FAILED_PRECONDITION)
    ORACLE_SET_CHANGED = (_R.ERROR_REASON_ORACLE_SET_CHANGED, _FAILED_PRECONDITION)
    ATTESTATION_STALE = (_R.ERROR_REASON_ATTESTATION_STALE, _FAILED_PRECONDITION)
    ATTESTATION_FROM_FUTURE = (_R.ERROR_REASON_ATTESTATION_FROM_FUTURE, _FAILED_PRECONDITION)
    ATTESTATION_EXPIRED = (_R.ERROR_REASON_ATTESTATION_EXPIRED, _FAILED_PRECONDITION)
    NOT_TITLE_HOLDER = (_R.ERROR_REASON_NOT_TITLE_HOLDER, _FAILED_PRECONDITION)
    TITLE_PLEDGED = (_R.ERROR_REASON_TITLE_PLEDGED, _FAILED_PRECONDITION)
    TITLE_NOT_PLEDGED = (_R.ERROR_REASON_TITLE_NOT_PLEDGED, _FAILED_PRECONDITION)
    TITLE_RETIRED = (_R.ERROR_REASON_TITLE_RETIRED, _FAILED_PRECONDITION)
    TITLE_UNITS_EXCEEDED = (_R.ERROR_REASON_TITLE_UNITS_EXCEEDED, _FAILED_PRECONDITION)
    QUOTE_EXPIRED = (_R.ERROR_REASON_QUOTE_EXPIRED, _FAILED_PRECONDITION)
    QUOTE_ALREADY_USED = (_R.ERROR_REASON_QUOTE_ALREADY_USED, _FAILED_PRECONDITION)
    QUOTE_ABOVE_LIMIT = (_R.ERROR_REASON_QUOTE_ABOVE_LIMIT, _FAILED_PRECONDITION)
    BRIDGE_NOT_CONFIGURED = (_R.ERROR_REASON_BRIDGE_NOT_CONFIGURED, _FAILED_PRECONDITION)
    BRIDGE_REFUSED = (_R.ERROR_REASON_BRIDGE_REFUSED, _FAILED_PRECONDITION)
    # OUT_OF_RANGE: the result would not fit the API's int64 amounts.
    AMOUNT_OVERFLOW = (_R.ERROR_REASON_AMOUNT_OVERFLOW, _OUT_OF_RANGE)
    # RESOURCE_EXHAUSTED: a per-caller quota (metadata: ``limit`` and the ``setting`` that sets
    # it). Not retried by the client: back off, or finish the calls already in flight.
    CALLS_IN_FLIGHT_EXCEEDED = (_R.ERROR_REASON_CALLS_IN_FLIGHT_EXCEEDED, _RESOURCE_EXHAUSTED)
    STREAMS_EXCEEDED = (_R.ERROR_REASON_STREAMS_EXCEEDED, _RESOURCE_EXHAUSTED)
    CONTRACTS_PER_DAY_EXCEEDED = (_R.ERROR_REASON_CONTRACTS_PER_DAY_EXCEEDED, _RESOURCE_EXHAUSTED)
    HEAVY_CALLS_EXCEEDED = (_R.ERROR_REASON_HEAVY_CALLS_EXCEEDED, _RESOURCE_EXHAUSTED)
    # UNAVAILABLE: transient; retry with the same request id.
    SHUTTING_DOWN = (_R.ERROR_REASON_SHUTTING_DOWN, _UNAVAILABLE)
    OVERLOADED = (_R.ERROR_REASON_OVERLOADED, _UNAVAILABLE)
    STORAGE_UNAVAILABLE = (_R.ERROR_REASON_STORAGE_UNAVAILABLE, _UNAVAILABLE)
    BRIDGE_UNAVAILABLE = (_R.ERROR_REASON_BRIDGE_UNAVAILABLE, _UNAVAILABLE)
    # INTERNAL: a bug. Only settlement.api.status.internal_status answers with it, never with the
    # exception's text; a SettlementError never carries it.
    INTERNAL = (_R.ERROR_REASON_INTERNAL, _INTERNAL)

    @property
    def code(self) -> grpc.StatusCode:
        code: grpc.StatusCode = self.value[1]
        return code

    @property
    def reason_code(self) -> errors_pb2.ErrorReason.ValueType:
        """This reason's ``condpay.v1.ErrorReason`` value (what a client's ``reason_code`` is)."""
        value: errors_pb2.ErrorReason.ValueType = self.value[0]
        return value


def closed_list_problems() -> list[str]:
    """How :class:`Reason` and ``condpay.v1.ErrorReason`` differ (empty when they agree): every
    enum value but UNSPECIFIED is exactly one Reason, named as the value without its prefix."""
    problems = [
        f"Reason.{reason.name} is ErrorReason {_R.Name(reason.reason_code)}"
        for reason in Reason
        if _R.Name(reason.reason_code) != REASON_PREFIX + reason.name
    ]
    numbers = {reason.reason_code for reason in Reason}
    problems += [
        f"ErrorReason {name} has no Reason"
        for name, number in _R.items()
        if number != _R.ERROR_REASON_UNSPECIFIED and number not in numbers
    ]
    if _R.ERROR_REASON_UNSPECIFIED in numbers:
        problems.append("ERROR_REASON_UNSPECIFIED is never a Reason")
    return problems


if _problems := closed_list_problems():  # the proto and this module must never drift apart
    raise RuntimeError(
        "settlement.errors.Reason differs from condpay.v1.ErrorReason: " + "; ".join(_problems)
    )


class SettlementError(Exception):
    """A refusal with a stable reason. ``details`` are typed protobuf messages for machines."""

    def __init__(
        self,
        reason: Reason,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        details: Sequence[Message] = (),
    ) -> None:
        if reason is Reason.INTERNAL:  # internal_status() answers INTERNAL, without a message
            raise ValueError("a SettlementError never carries INTERNAL")
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})
        self.details = tuple(details)

    def __repr__(self) -> str:
        return f"SettlementError({self.reason.name}, {self.message!r})"


def insufficient_funds(
    wallet_id: str, currency: str, needed: int, available: int
) -> SettlementError:
    return SettlementError(
        Reason.INSUFFICIENT_FUNDS,
        f"wallet {wallet_id} has {available} {currency} minor units available, needs {needed}",
        metadata={"wallet_id": wallet_id, "currency": currency},
        details=[
            errors_pb2.InsufficientFunds(
                wallet_id=wallet_id,
                currency=currency,
                needed_minor=needed,
                available_minor=available,
            )
        ],
    )


_LIMIT_KINDS = {
    "balance_cap": errors_pb2.LIMIT_KIND_BALANCE_CAP,
    "single_payment_cap": errors_pb2.LIMIT_KIND_SINGLE_PAYMENT_CAP,
    "daily_cap": errors_pb2.LIMIT_KIND_DAILY_CAP,
}


def limit_exceeded(
    wallet_id: str, currency: str, limit: str, limit_minor: int, used: int, attempted: int
) -> SettlementError:
    """``limit`` is balance_cap, single_payment_cap or daily_cap."""
    return SettlementError(
        Reason.LIMIT_EXCEEDED,
        f"wallet {wallet_id}: {attempted} {currency} minor units would cross its {limit} of "
        f"{limit_minor} (already used {used})",
        metadata={"wallet_id": wallet_id, "currency": currency, "limit": limit},
        details=[
            errors_pb2.LimitExceeded(
                wallet_id=wallet_id,
                currency=currency,
                limit=_LIMIT_KINDS[limit],
                limit_minor=limit_minor,
                used_minor=used,
                attempted_minor=attempted,
            )
        ],
    )


def quota_exceeded(reason: Reason, what: str, limit: int, setting: str) -> SettlementError:
    """A per-caller quota refusal: ``what`` says which, the metadata the limit and its setting."""
    return SettlementError(
        reason,
        f"{what}: the limit is {limit} ({setting})",
        metadata={"limit": str(limit), "setting": setting},
    )


def not_found(reason: Reason, what: str, ident: str) -> SettlementError:
    return SettlementError(reason, f"{what} {ident!r} does not exist", metadata={"id": ident})


def idempotency_conflict(
    request_id: str,
    original_method: str,
    original_ok: bool,
    original_outcome: bytes,
    commit_seq: int,
) -> SettlementError:
    """IDEMPOTENCY_KEY_REUSED, saying what became of the original call: its status code name
    ("OK" when it succeeded), its reason when it failed, and the journal entry it committed.
    ``original_outcome`` is the stored failure (a serialized google.rpc.Status) when it failed."""
    code, reason = ("OK", "") if original_ok else _failure_of(original_outcome)
    return SettlementError(
        Reason.IDEMPOTENCY_KEY_REUSED,
        f"request id {request_id!r} was already used for a different request; that request's "
        f"outcome stands: {code}{' ' + reason if reason else ''}",
        metadata={
            "request_id": request_id,
            "original_method": original_method,
            "original_code": code,
            "original_reason": reason,
            "original_commit_seq": str(commit_seq),
        },
        details=[
            errors_pb2.IdempotencyConflict(
                request_id=request_id,
                original_method=original_method,
                original_code=code,
                original_reason=reason,
                original_commit_seq=commit_seq,
            )
        ],
    )


def _failure_of(stored: bytes) -> tuple[str, str]:
    """(status code name, reason) of a stored failure."""
    status = status_pb2.Status.FromString(stored)
    return code_name(status), reason_of(status)


_CODE_NAMES: dict[int, str] = {code.value[0]: code.name for code in grpc.StatusCode}


def code_name(status: status_pb2.Status | None) -> str:
    """The gRPC status code's name (``OK`` for no status)."""
    return "OK" if status is None else _CODE_NAMES.get(status.code, str(status.code))


def reason_of(status: status_pb2.Status) -> str:
    """The ErrorInfo reason a status carries ("" for none)."""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""
