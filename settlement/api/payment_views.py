"""Contracts, parameters and payments: records <-> API messages."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from condpay.v1 import contract_pb2, money_pb2, payment_pb2
from google.protobuf.duration_pb2 import Duration

from contracts_dsl import CompiledContract, Diagnostic, Severity, render
from settlement import limits
from settlement.api import requests
from settlement.api.convert import money, timestamp
from settlement.errors import Reason, SettlementError
from settlement.ledger.records import (
    AssignmentRecord,
    AttestationRecord,
    ContractRecord,
    FinancingRecord,
    LegRecord,
    PaymentRecord,
    PaymentState,
)

if TYPE_CHECKING:
    from contracts_dsl import CompileResult  # the compiler loads on the first compile

_SEVERITIES = {
    Severity.ERROR: contract_pb2.SEVERITY_ERROR,
    Severity.WARNING: contract_pb2.SEVERITY_WARNING,
}
PAYMENT_STATES = {
    PaymentState.LOCKED: payment_pb2.PAYMENT_STATE_LOCKED,
    PaymentState.PARTIALLY_RELEASED: payment_pb2.PAYMENT_STATE_PARTIALLY_RELEASED,
    PaymentState.SETTLED: payment_pb2.PAYMENT_STATE_SETTLED,
    PaymentState.REFUNDED: payment_pb2.PAYMENT_STATE_REFUNDED,
    PaymentState.EXPIRED: payment_pb2.PAYMENT_STATE_EXPIRED,
    PaymentState.CANCELLED: payment_pb2.PAYMENT_STATE_CANCELLED,
}
STATES_BY_PROTO = {v: k for k, v in PAYMENT_STATES.items()}


def diagnostics(result: CompileResult) -> list[contract_pb2.Diagnostic]:
    return [diagnostic(d, result) for d in result.diagnostics]


def diagnostic(d: Diagnostic, result: CompileResult) -> contract_pb2.Diagnostic:
    return contract_pb2.Diagnostic(
        code=d.code,
        severity=_SEVERITIES.get(d.severity, contract_pb2.SEVERITY_UNSPECIFIED),
        message=d.message,
        path=d.path,
        line=d.span.line,
        column=d.span.column,
        end_line=d.span.end_line,
        end_column=d.span.end_column,
        rendered=render(d, result.source),
    )


def contract_info(
    contract: CompiledContract, source: str, *, full: bool = True
) -> contract_pb2.ContractInfo:
    """The contract as the API shows it; without its source and canonical JSON unless ``full``."""
    info = contract_pb2.ContractInfo(
        contract_hash=contract.hash,
        name=contract.name,
        version=contract.language_version,
        params={
            p.name: f"{p.kind} {p.currency}" if p.currency else p.kind for p in contract.params
        },
    )
    if full:
        info.canonical_json = contract.canonical.decode()
        info.source = source
    return info


def record_info(record: ContractRecord, contract: CompiledContract) -> contract_pb2.ContractInfo:
    return contract_info(contract, record.source)


# -- parameter values ---------------------------------------------------------------------------
def param_inputs(
    contract: CompiledContract, values: Mapping[str, contract_pb2.ParamValue]
) -> dict[str, object]:
    """API parameter values -> the input forms contracts_dsl.bind_params takes (it checks them)."""
    out: dict[str, object] = {}
    for name, value in values.items():
        which = value.WhichOneof("value")
        if which is None:
            raise requests.invalid(Reason.PARAMS_INVALID, f"params.{name}", "no value given")
        if which == "money":
            out[name] = {"currency": value.money.currency, "amount_minor": value.money.amount_minor}
        elif which == "timestamp":
            seconds, nanos = value.timestamp.seconds, value.timestamp.nanos
            # Checked before anything formats it: outside years 1-9999 datetime overflows.
            if not limits.TIMESTAMP_SECONDS_MIN <= seconds <= limits.TIMESTAMP_SECONDS_MAX or not (
                0 <= nanos < 1_000_000_000
            ):
                raise requests.invalid(
                    Reason.PARAMS_INVALID, f"params.{name}", "a timestamp in years 1-9999"
                )
            out[name] = _rfc3339(seconds * 1_000_000 + nanos // 1000)
        elif which == "duration":
            if abs(value.duration.seconds) > limits.TIMESTAMP_SECONDS_MAX:
                raise requests.invalid(
                    Reason.PARAMS_INVALID, f"params.{name}", "a duration of at most 9999 years"
                )
            out[name] = f"{value.duration.seconds}s"
        else:
            out[name] = getattr(value, which)
    return out


def _rfc3339(us: int) -> str:
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)
    return moment.isoformat().replace("+00:00", "Z")


def param_values(
    contract: CompiledContract, params_json: str
) -> dict[str, contract_pb2.ParamValue]:
    """Stored bound values (BoundParams.to_json) -> API parameter values."""
    values = json.loads(params_json)
    kinds = {p.name: p.kind for p in contract.params}
    out: dict[str, contract_pb2.ParamValue] = {}
    for name, value in values.items():
        kind = kinds.get(name, "text")
        if kind == "money":
            out[name] = contract_pb2.ParamValue(
                money=money_pb2.Money(
                    currency=value["currency"], amount_minor=value["amount_minor"]
                )
            )
        elif kind in ("wallet", "title"):
            out[name] = contract_pb2.ParamValue(id=value)
        elif kind == "number":
            out[name] = contract_pb2.ParamValue(number=value)
        elif kind == "duration":
            out[name] = contract_pb2.ParamValue(duration=Duration(seconds=int(value.rstrip("s"))))
        elif kind == "timestamp":
            moment = dt.datetime.fromisoformat(value)
            epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
            out[name] = contract_pb2.ParamValue(
                timestamp=timestamp((moment - epoch) // dt.timedelta(microseconds=1))
            )
        else:
            out[name] = contract_pb2.ParamValue(text=value)
    return out


def params_error(errors: Iterable[object]) -> SettlementError:
    problems = [str(e) for e in errors]
    return SettlementError(
        Reason.PARAMS_INVALID,
        "the parameter values do not fit the contract: " + "; ".join(problems),
        metadata={"problems": json.dumps(problems)},
    )


# -- payments ------------------------------------------------------------------------------------
def leg(record: LegRecord) -> contract_pb2.Leg:
    return contract_pb2.Leg(
        leg_id=record.leg_id,
        clause=record.clause,
        kind=record.kind,
        party=record.party,
        wallet_id=record.wallet_id,
        amount=money(record.currency, record.amount_minor),
        reason=record.reason,
        paid_to_wallet_id=record.paid_to_wallet_id,
        commit_seq=record.seq,
    )


def financing(record: FinancingRecord, currency: str) -> payment_pb2.Financing:
    return payment_pb2.Financing(
        financier_wallet_id=record.financier_wallet_id,
        principal=money(currency, record.principal_minor),
        fee=money(currency, record.fee_minor),
        due_at=timestamp(record.due_at_us),
        refunded=money(currency, record.refunded_minor),
        request_id=record.request_id,
    )


def assignment(record: AssignmentRecord, currency: str) -> payment_pb2.Assignment:
    return payment_pb2.Assignment(
        payee_wallet_id=record.payee_wallet_id,
        financier_wallet_id=record.financier_wallet_id,
        assigned=money(currency, record.assigned_minor),
        advance=money(currency, record.advance_minor),
        collected=money(currency, record.collected_minor),
        request_id=record.request_id,
    )


def attestation(record: AttestationRecord) -> payment_pb2.AttestationRecord:
    report = json.loads(record.report_json)
    return payment_pb2.AttestationRecord(
        event_id=record.event_id,
        event_type=record.event_type,
        oracle=record.oracle,
        observed_at=timestamp(record.observed_at_us),
        accepted_at=timestamp(record.accepted_at_us),
        status=report.get("status", ""),
        matched_clauses=report.get("matched", []),
        fired_clauses=report.get("fired", []),
        why_not=report.get("why_not", {}),
        signer_ids=list(record.signer_ids),
        attributes_json=record.attributes_json,
    )


def full_view(view: int, *, mutating: bool) -> bool:
    """Whether a reply carries the FULL payment (PaymentView): UNSPECIFIED is BASIC for the
    mutating calls, FULL for the reads."""
    if view == payment_pb2.PAYMENT_VIEW_UNSPECIFIED:
        return not mutating
    if view not in (payment_pb2.PAYMENT_VIEW_BASIC, payment_pb2.PAYMENT_VIEW_FULL):
        raise requests.invalid(Reason.INVALID_VIEW, "view", "view must be BASIC or FULL")
    return view == payment_pb2.PAYMENT_VIEW_FULL


def payment(
    record: PaymentRecord, contract: CompiledContract, source: str, *, full: bool = True
) -> payment_pb2.Payment:
    """The payment as the API shows it: FULL, or BASIC (see PaymentView) unless ``full``."""
    currency = record.currency
    view = payment_pb2.Payment(
        payment_id=record.payment_id,
        platform=record.platform,
        contract=contract_info(contract, source, full=full),
        params=param_values(contract, record.params_json),
        payer_wallet_id=record.payer_wallet_id,
        escrow=money(currency, record.escrow_minor),
        held=money(currency, record.held_minor),
        released=money(currency, record.released_minor),
        refunded=money(currency, record.refunded_minor),
        state=PAYMENT_STATES[record.state],
        terminal_reason=record.terminal_reason,
        financing=[financing(f, currency) for f in record.financing],
        assignments=[assignment(a, currency) for a in record.assignments],
        legs=[leg(x) for x in record.legs],
        attestations=[attestation(a) for a in record.attestations] if full else (),
        created_at=timestamp(record.created_at_us),
        updated_at=timestamp(record.updated_at_us),
        version=record.version,
    )
    if record.deadline_at_us is not None:
        view.deadline.CopyFrom(timestamp(record.deadline_at_us))
    return view
