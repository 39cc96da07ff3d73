"""Validation of request fields at the boundary, with the reason each failure answers with."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, TypedDict, TypeVar, cast

from condpay.v1 import money_pb2

from settlement import limits
from settlement.api.identity import Caller
from settlement.errors import Reason, SettlementError
from wallets import INT64_MAX, Document, MalformedInstruction, is_supported
from wallets.canonical import ID_PATTERN

if TYPE_CHECKING:
    from settlement.runtime import Runtime

D = TypeVar("D", bound=Document)


class MutatingRequest(Protocol):
    request_id: str
    dry_run: bool

    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


class CommandFields(TypedDict):
    method: str
    caller: str
    request_id: str
    request_hash: bytes
    dry_run: bool


def command_fields(method: str, caller: Caller, request: MutatingRequest) -> CommandFields:
    """The fields every command carries. Raises before anything is stored if the request id is
    missing or malformed: there is nothing to store the outcome under."""
    return CommandFields(
        method=method,
        caller=str(caller),
        request_id=request_id(request),
        request_hash=request_hash(method, request),
        dry_run=request.dry_run,
    )


def invalid(reason: Reason, field: str, message: str) -> SettlementError:
    return SettlementError(reason, message, metadata={"field": field})


def request_id(request: MutatingRequest) -> str:
    value = request.request_id
    if not value:
        raise invalid(Reason.MISSING_FIELD, "request_id", "request_id is required")
    if len(value) > limits.REQUEST_ID_CHARS_MAX or not ID_PATTERN.fullmatch(value):
        raise invalid(
            Reason.INVALID_REQUEST_ID,
            "request_id",
            f"request_id must be 1-{limits.REQUEST_ID_CHARS_MAX} of [A-Za-z0-9._:@-], "
            "starting with a letter or digit",
        )
    return value


def decode(
    document: type[D],
    payload: bytes,
    field: str,
    *,
    within: str | None = None,
    reasons: Mapping[str, Reason] | None = None,
) -> D:
    """The signed document whose bytes are ``payload``, at ``field`` in the request.

    MISSING_FIELD if there are no bytes, INSTRUCTION_MALFORMED if there are too many or they do
    not decode. ``within`` is the request field that stands for the document (by default
    ``field``): an empty payload reports it missing, and a wrong field ``name`` of the document
    is reported at ``<within>.<name>`` with ``reasons[name]`` if given, else
    INSTRUCTION_MALFORMED."""
    within = within or field
    if not payload:
        raise invalid(Reason.MISSING_FIELD, within, f"{within} is required")
    if len(payload) > limits.INSTRUCTION_BYTES_MAX:
        raise invalid(Reason.INSTRUCTION_MALFORMED, field, "the instruction is too large")
    try:
        return document.from_bytes(payload)
    except MalformedInstruction as error:
        if not error.field:
            raise invalid(Reason.INSTRUCTION_MALFORMED, field, str(error)) from None
        reason = (reasons or {}).get(error.field, Reason.INSTRUCTION_MALFORMED)
        raise invalid(reason, f"{within}.{error.field}", str(error)) from None


class Consented(Protocol):
    """What every wallet-signed ``.v2`` document names: who may submit it, under which request
    id, until when."""

    @property
    def submitter(self) -> str: ...
    @property
    def request_id(self) -> str: ...
    @property
    def expires_at_us(self) -> int: ...


def signed(
    runtime: Runtime,
    base: CommandFields,
    document: type[D],
    payload: bytes,
    field: str,
    what: str,
    *,
    within: str | None = None,
    reasons: Mapping[str, Reason] | None = None,
    own_request_id: bool = True,
) -> D:
    """The signed document at ``field`` (see :func:`decode`), once it is one this call may act
    on: it names the call's request id (INSTRUCTION_MISMATCH; unless not ``own_request_id``: a
    title's pledge to a payment is bound by the payment id instead, which the locking caller's
    request id derives), the authenticated caller as its
    submitter (SUBMITTER_MISMATCH: whoever relays another's document cannot use it) and an expiry
    at most CONDPAY_INSTRUCTION_TTL_MAX_SECONDS ahead (INSTRUCTION_EXPIRY_TOO_FAR). Every handler
    of a signed document calls this one function; the signatures are checked after it."""
    found = decode(document, payload, field, within=within, reasons=reasons)
    consent = cast(Consented, found)
    prefix = within or field.removesuffix(".payload")
    if own_request_id:
        same_request(consent.request_id, base["request_id"], what)
    if consent.submitter != base["caller"]:
        raise SettlementError(
            Reason.SUBMITTER_MISMATCH,
            f"the signed {what} names another submitter than the caller {base['caller']}; a "
            "signed document is submitted only by the identity it names",
            metadata={"field": f"{prefix}.submitter"},
        )
    ttl_max_seconds = runtime.settings.instruction_ttl_max_seconds
    if consent.expires_at_us > runtime.clock.now_us() + ttl_max_seconds * 1_000_000:
        raise SettlementError(
            Reason.INSTRUCTION_EXPIRY_TOO_FAR,
            f"the signed {what} expires more than {ttl_max_seconds} s ahead "
            "(CONDPAY_INSTRUCTION_TTL_MAX_SECONDS)",
            metadata={"field": f"{prefix}.expires_at_us", "ttl_max_seconds": str(ttl_max_seconds)},
        )
    return found


def mismatch(field: str, message: str) -> SettlementError:
    return invalid(Reason.INSTRUCTION_MISMATCH, field, message)


def same_request(signed_request_id: str, request_id: str, what: str) -> None:
    """INSTRUCTION_MISMATCH unless the signed ``what`` names the request's own request id."""
    if signed_request_id != request_id:
        raise mismatch("request_id", f"request_id differs from the signed {what}'s")


def request_hash(method: str, request: MutatingRequest) -> bytes:
    """What makes two calls "the same request": the method and every field but dry_run."""
    dry_run = request.dry_run
    request.dry_run = False
    try:
        body = request.SerializeToString(deterministic=True)
    finally:
        request.dry_run = dry_run
    return hashlib.sha256(method.encode() + b"\n" + body).digest()


def identifier(value: str, field: str) -> str:
    if not value:
        raise invalid(Reason.MISSING_FIELD, field, f"{field} is required")
    if not ID_PATTERN.fullmatch(value):
        raise invalid(Reason.INVALID_ID, field, f"{field} is not a valid identifier")
    return value


def text(value: str, field: str, chars_max: int) -> str:
    if len(value) > chars_max or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise invalid(Reason.INVALID_TEXT, field, f"{field}: at most {chars_max} printable chars")
    return value


def currency(code: str, field: str = "currency") -> str:
    if not code:
        raise invalid(Reason.MISSING_FIELD, field, f"{field} is required")
    if not is_supported(code):
        raise SettlementError(
            Reason.UNSUPPORTED_CURRENCY,
            f"currency {code!r} is not supported (CNY, HKD, THB, AED, SAR)",
            metadata={"field": field, "currency": code},
        )
    return code


def positive_amount(amount_minor: int, field: str) -> int:
    if amount_minor <= 0:
        raise invalid(Reason.INVALID_AMOUNT, field, f"{field} must be > 0")
    if amount_minor > INT64_MAX:
        raise invalid(Reason.INVALID_AMOUNT, field, f"{field} is beyond int64")
    return amount_minor


def money(value: money_pb2.Money, present: bool, field: str) -> tuple[str, int]:
    if not present:
        raise invalid(Reason.MISSING_FIELD, field, f"{field} is required")
    return currency(value.currency, f"{field}.currency"), positive_amount(
        value.amount_minor, f"{field}.amount_minor"
    )
