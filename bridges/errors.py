"""The bridge's errors: one tree, one closed set of stable reason codes.

    BridgeError                 .reason (a Reason, stable UPPER_SNAKE), .message for people,
    │                           .metadata (str -> str) for machines
    ├── InvalidRequest          the request is wrong; retrying it unchanged never helps
    ├── Unauthenticated         the call carries no participant identity the bridge accepts
    ├── Forbidden               the caller's kind may not call this method, or not for this
    │                           payer or currency (what is about someone else's object answers
    │                           NotFound instead, like an id that does not exist)
    ├── NotFound                a participant, quote, rate or transfer that does not exist
    ├── Conflict                an id already used for something else
    ├── Refused                 valid, but the ledger's state says no (FAILED_PRECONDITION)
    │   ├── InsufficientFunds       the payer's funds or the provider's liquidity are short
    │   ├── QuoteUnusable           the quote expired or another transfer used it
    │   ├── QuorumUnavailable       fewer than 2/3 of the validators are up: no new prepares
    │   ├── TransferAborted         commit refused: aborted, expired or rejected; it never commits
    │   ├── TransferCommitted       abort refused: the transfer committed
    │   └── TransferNotCommitted    finality asked of a transfer that did not commit
    ├── OutOfRange              a result beyond int64 minor units
    ├── Unavailable             transient, and the outcome is unknown: the request or its reply
    │                           was lost, or the bridge is down. Retry with the same transfer id.
    └── InternalError           a bug or a broken invariant; never retried blindly

The closed list of reasons lives in the proto, ``condpay.bridge.v1.ErrorReason``
(proto/condpay/bridge/v1/errors.proto): a Reason's value is the wire code, that enum value's name
without the ``ERROR_REASON_`` prefix, and importing this module fails if the two lists differ.
Each Reason belongs to exactly one class (``reason.error_class``); :func:`error` builds the right
one. The in-process bridge raises these; the gRPC client raises the very same classes with the
same reasons and metadata (bridges/_status.py maps them to gRPC status codes and back). Branch on
the class or on ``reason``, never on the message.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import ClassVar, Final

from condpay.bridge.v1 import errors_pb2
from condpay.errors import REASON_PREFIX

DOMAIN: Final = "condpay.bridge.v1"


class BridgeError(Exception):
    #: The gRPC status code name this class travels as.
    status_code_name: ClassVar[str] = "UNKNOWN"

    def __init__(
        self, reason: Reason, message: str, *, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{reason.name}: {message}")
        self.reason = reason
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason.name}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        """Same class, reason and metadata: how the contract tests compare the two transports."""
        if not isinstance(other, BridgeError):
            return NotImplemented
        return (type(self), self.reason, self.metadata) == (
            type(other),
            other.reason,
            other.metadata,
        )

    def __hash__(self) -> int:
        return hash((type(self), self.reason))


class InvalidRequest(BridgeError):
    status_code_name = "INVALID_ARGUMENT"


class Unauthenticated(BridgeError):
    status_code_name = "UNAUTHENTICATED"


class Forbidden(BridgeError):
    status_code_name = "PERMISSION_DENIED"


class NotFound(BridgeError):
    status_code_name = "NOT_FOUND"


class Conflict(BridgeError):
    status_code_name = "ALREADY_EXISTS"


class Refused(BridgeError):
    status_code_name = "FAILED_PRECONDITION"


class InsufficientFunds(Refused):
    """metadata: participant_id, account_kind, currency, needed_minor, available_minor."""


class QuoteUnusable(Refused):
    pass


class QuorumUnavailable(Refused):
    pass


class TransferAborted(Refused):
    """The transfer will never commit (it aborted, expired or its prepare was rejected)."""


class TransferCommitted(Refused):
    """The transfer committed; it can no longer be aborted."""


class TransferNotCommitted(Refused):
    pass


class OutOfRange(BridgeError):
    status_code_name = "OUT_OF_RANGE"


class Unavailable(BridgeError):
    status_code_name = "UNAVAILABLE"


class InternalError(BridgeError):
    status_code_name = "INTERNAL"


@enum.unique
class Reason(enum.Enum):
    """Every reason the bridge answers with. The value is the stable code on the wire, and
    ``ERROR_REASON_`` + the value is its ``condpay.bridge.v1.ErrorReason`` value's name."""

    # InvalidRequest
    MALFORMED_REQUEST = "MALFORMED_REQUEST"
    MISSING_FIELD = "MISSING_FIELD"
    INVALID_ID = "INVALID_ID"
    INVALID_AMOUNT = "INVALID_AMOUNT"
    UNSUPPORTED_CURRENCY = "UNSUPPORTED_CURRENCY"
    SAME_CURRENCY = "SAME_CURRENCY"
    INVALID_RATE = "INVALID_RATE"
    INVALID_SPREAD = "INVALID_SPREAD"
    INVALID_TIMEOUT = "INVALID_TIMEOUT"
    INVALID_TTL = "INVALID_TTL"
    INVALID_ACCOUNT_KIND = "INVALID_ACCOUNT_KIND"
    NOT_A_BANK = "NOT_A_BANK"
    NOT_A_LIQUIDITY_PROVIDER = "NOT_A_LIQUIDITY_PROVIDER"
    AMOUNT_TOO_SMALL = "AMOUNT_TOO_SMALL"
    PROOF_OF_POSSESSION_INVALID = "PROOF_OF_POSSESSION_INVALID"
    TRANSFER_ID_NOT_OWNED = "TRANSFER_ID_NOT_OWNED"
    # Unauthenticated
    IDENTITY_MISSING = "IDENTITY_MISSING"
    # Forbidden
    ROLE_NOT_ALLOWED = "ROLE_NOT_ALLOWED"
    NOT_PAYER = "NOT_PAYER"
    NOT_CURRENCY_ISSUER = "NOT_CURRENCY_ISSUER"
    # NotFound
    PARTICIPANT_NOT_FOUND = "PARTICIPANT_NOT_FOUND"
    QUOTE_NOT_FOUND = "QUOTE_NOT_FOUND"
    TRANSFER_NOT_FOUND = "TRANSFER_NOT_FOUND"
    RATE_NOT_PUBLISHED = "RATE_NOT_PUBLISHED"
    NO_LIQUIDITY_PROVIDER = "NO_LIQUIDITY_PROVIDER"
    # Conflict
    TRANSFER_EXISTS_WITH_DIFFERENT_TERMS = "TRANSFER_EXISTS_WITH_DIFFERENT_TERMS"
    REQUEST_ID_REUSED = "REQUEST_ID_REUSED"
    PARTICIPANT_EXISTS = "PARTICIPANT_EXISTS"
    # Refused and its subclasses
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    INSUFFICIENT_LIQUIDITY = "INSUFFICIENT_LIQUIDITY"
    QUOTE_EXPIRED = "QUOTE_EXPIRED"
    QUOTE_ALREADY_USED = "QUOTE_ALREADY_USED"
    QUORUM_UNAVAILABLE = "QUORUM_UNAVAILABLE"
    TRANSFER_ALREADY_ABORTED = "TRANSFER_ALREADY_ABORTED"
    TRANSFER_EXPIRED = "TRANSFER_EXPIRED"
    TRANSFER_REJECTED = "TRANSFER_REJECTED"
    TRANSFER_ALREADY_COMMITTED = "TRANSFER_ALREADY_COMMITTED"
    TRANSFER_NOT_COMMITTED = "TRANSFER_NOT_COMMITTED"
    # OutOfRange
    AMOUNT_OVERFLOW = "AMOUNT_OVERFLOW"
    # Unavailable
    UNREACHABLE = "UNREACHABLE"
    # InternalError
    INTERNAL = "INTERNAL"
    INVARIANT_VIOLATED = "INVARIANT_VIOLATED"

    @property
    def error_class(self) -> type[BridgeError]:
        return _CLASS_OF[self]

    @property
    def reason_code(self) -> errors_pb2.ErrorReason.ValueType:
        """This reason's ``condpay.bridge.v1.ErrorReason`` value."""
        return errors_pb2.ErrorReason.Value(REASON_PREFIX + self.value)


_CLASS_OF: Final[dict[Reason, type[BridgeError]]] = {
    **{
        r: InvalidRequest
        for r in (
            Reason.MALFORMED_REQUEST,
            Reason.MISSING_FIELD,
            Reason.INVALID_ID,
            Reason.INVALID_AMOUNT,
            Reason.UNSUPPORTED_CURRENCY,
            Reason.SAME_CURRENCY,
            Reason.INVALID_RATE,
            Reason.INVALID_SPREAD,
            Reason.INVALID_TIMEOUT,
            Reason.INVALID_TTL,
            Reason.INVALID_ACCOUNT_KIND,
            Reason.NOT_A_BANK,
            Reason.NOT_A_LIQUIDITY_PROVIDER,
            Reason.AMOUNT_TOO_SMALL,
            Reason.PROOF_OF_POSSESSION_INVALID,
            Reason.TRANSFER_ID_NOT_OWNED,
        )
    },
    Reason.IDENTITY_MISSING: Unauthenticated,
    Reason.ROLE_NOT_ALLOWED: Forbidden,
    Reason.NOT_PAYER: Forbidden,
    Reason.NOT_CURRENCY_ISSUER: Forbidden,
    **{
        r: NotFound
        for r in (
            Reason.PARTICIPANT_NOT_FOUND,
            Reason.QUOTE_NOT_FOUND,
            Reason.TRANSFER_NOT_FOUND,
            Reason.RATE_NOT_PUBLISHED,
            Reason.NO_LIQUIDITY_PROVIDER,
        )
    },
    Reason.TRANSFER_EXISTS_WITH_DIFFERENT_TERMS: Conflict,
    Reason.REQUEST_ID_REUSED: Conflict,
    Reason.PARTICIPANT_EXISTS: Conflict,
    Reason.INSUFFICIENT_FUNDS: InsufficientFunds,
    Reason.INSUFFICIENT_LIQUIDITY: InsufficientFunds,
    Reason.QUOTE_EXPIRED: QuoteUnusable,
    Reason.QUOTE_ALREADY_USED: QuoteUnusable,
    Reason.QUORUM_UNAVAILABLE: QuorumUnavailable,
    Reason.TRANSFER_ALREADY_ABORTED: TransferAborted,
    Reason.TRANSFER_EXPIRED: TransferAborted,
    Reason.TRANSFER_REJECTED: TransferAborted,
    Reason.TRANSFER_ALREADY_COMMITTED: TransferCommitted,
    Reason.TRANSFER_NOT_COMMITTED: TransferNotCommitted,
    Reason.AMOUNT_OVERFLOW: OutOfRange,
    Reason.UNREACHABLE: Unavailable,
    Reason.INTERNAL: InternalError,
    Reason.INVARIANT_VIOLATED: InternalError,
}
assert set(_CLASS_OF) == set(Reason), "every reason has exactly one class"


def closed_list_problems() -> list[str]:
    """How :class:`Reason` and ``condpay.bridge.v1.ErrorReason`` differ (empty when they agree):
    every enum value but UNSPECIFIED is exactly one Reason, named and valued as the value's name
    without its prefix."""
    names = {REASON_PREFIX + reason.value for reason in Reason}
    enum_names = set(errors_pb2.ErrorReason.keys()) - {"ERROR_REASON_UNSPECIFIED"}
    problems = [f"Reason.{r.name} has the value {r.value!r}" for r in Reason if r.name != r.value]
    problems += [f"{name} is not in ErrorReason" for name in sorted(names - enum_names)]
    problems += [f"ErrorReason {name} has no Reason" for name in sorted(enum_names - names)]
    return problems


if _problems := closed_list_problems():  # the proto and this module must never drift apart
    raise RuntimeError(
        "bridges.errors.Reason differs from condpay.bridge.v1.ErrorReason: " + "; ".join(_problems)
    )


def error(reason: Reason, message: str, **metadata: str) -> BridgeError:
    """The one way to build a bridge error: the class follows from the reason."""
    return reason.error_class(reason, message, metadata=metadata)


def reason_from_code(code: str) -> Reason | None:
    """The Reason for a wire code, or None for a code this version does not know."""
    try:
        return Reason(code)
    except ValueError:
        return None
