"""The CPU-heavy work of the contract calls, as pure functions a process pool runs.

Only plain data crosses the process boundary: source text, serialized requests and canonical
contract bytes go in; canonical bytes or serialized replies come back, or an :data:`ErrorData`
tuple that :func:`raise_error` turns back into the SettlementError it was. Nothing here touches
the database, the network or the clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from condpay.v1 import contract_pb2
from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from contracts_dsl import (
    CompiledContract,
    Event,
    bind_params,
    escrow_minor,
    load_compiled,
    simulate,
)
from contracts_dsl import Leg as DslLeg
from settlement import limits
from settlement.api import payment_views as views
from settlement.api import requests
from settlement.api.convert import money
from settlement.errors import Reason, SettlementError

if TYPE_CHECKING:
    from contracts_dsl import CompileResult

SOURCE_BYTES_MAX = 256 * 1024
SIMULATED_EVENTS_MAX = limits.SIMULATED_EVENTS_MAX

# (reason name, message, metadata, typed details packed as google.protobuf.Any bytes)
ErrorData = tuple[str, str, dict[str, str], list[bytes]]
# (True, reply or canonical bytes) or (False, the refusal)
JobResult = tuple[bool, bytes | ErrorData]


def error_data(error: SettlementError) -> ErrorData:
    packed = []
    for detail in error.details:
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)
        packed.append(wrapper.SerializeToString())
    return (error.reason.name, error.message, dict(error.metadata), packed)


def to_error(data: ErrorData) -> SettlementError:
    reason, message, metadata, packed = data
    details: list[Message] = []
    for raw in packed:
        wrapper = any_pb2.Any.FromString(raw)
        name = wrapper.TypeName()
        cls = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(name))
        detail = cls()
        wrapper.Unpack(detail)
        details.append(detail)
    return SettlementError(Reason[reason], message, metadata=metadata, details=details)


# -- compile ---------------------------------------------------------------------------------
def _compile(source: str, path: str) -> CompileResult:
    """contracts_dsl's compiler, loaded on the first compile (the parser, its grammar library and
    the checker are not needed to serve until then)."""
    from contracts_dsl.compiler import compile_source

    return compile_source(source, path)


def compile_or_refuse(source: str, path: str) -> CompiledContract:
    """The compiled contract, or CONTRACT_INVALID carrying every diagnostic as a typed detail."""
    if not source:
        raise requests.invalid(Reason.MISSING_FIELD, "source", "a contract source is required")
    if len(source.encode()) > SOURCE_BYTES_MAX:
        raise requests.invalid(
            Reason.CONTRACT_INVALID, "source", f"a contract is at most {SOURCE_BYTES_MAX} bytes"
        )
    result = _compile(source, path or "<contract>")
    if result.contract is None:
        errors = [d for d in result.diagnostics if d.is_error]
        raise SettlementError(
            Reason.CONTRACT_INVALID,
            f"the contract has {len(errors)} error(s); first: {errors[0].code} "
            f"{errors[0].message} at {errors[0].location()}"
            if errors
            else "the contract does not compile",
            metadata={"errors": str(len(errors))},
            details=views.diagnostics(result)[:50],
        )
    return result.contract


def compile_job(source: str, path: str) -> JobResult:
    """In a pool worker: the canonical bytes of the compiled contract, or the refusal."""
    try:
        return (True, bytes(compile_or_refuse(source, path).canonical))
    except SettlementError as error:
        return (False, error_data(error))


def validate_job(source: str, path: str) -> JobResult:
    """In a pool worker: a serialized ValidateContractResponse, or the refusal."""
    try:
        if not source:
            raise requests.invalid(Reason.MISSING_FIELD, "source", "a contract source is required")
        if len(source.encode()) > SOURCE_BYTES_MAX:
            raise requests.invalid(
                Reason.CONTRACT_INVALID, "source", f"at most {SOURCE_BYTES_MAX} bytes"
            )
        result = _compile(source, path or "<contract>")
        reply = contract_pb2.ValidateContractResponse(
            ok=result.contract is not None, diagnostics=views.diagnostics(result)
        )
        if result.contract is not None:
            reply.contract.CopyFrom(views.contract_info(result.contract, source))
        return (True, reply.SerializeToString())
    except SettlementError as error:
        return (False, error_data(error))


# -- simulate --------------------------------------------------------------------------------
def _micros(seconds: int, nanos: int, field: str) -> int:
    """A google.protobuf.Timestamp as microseconds, refused outside years 1-9999."""
    if not limits.TIMESTAMP_SECONDS_MIN <= seconds <= limits.TIMESTAMP_SECONDS_MAX or not (
        0 <= nanos < 1_000_000_000
    ):
        raise requests.invalid(Reason.PARAMS_INVALID, field, "a timestamp in years 1-9999")
    return seconds * 1_000_000 + nanos // 1000


def simulated_event(contract: CompiledContract, item: contract_pb2.SimulatedEvent) -> Event:
    kinds = {
        name: kind
        for spec in contract.events
        if spec.event_type == item.event_type
        for name, kind in spec.attributes
    }
    attributes: dict[str, str | int | bool] = {}
    for name, text in item.attributes.items():
        if kinds.get(name) == "bool":
            if text not in ("true", "false"):
                raise requests.invalid(
                    Reason.PARAMS_INVALID, f"events.{item.event_id}.{name}", "true or false"
                )
            attributes[name] = text == "true"
        else:
            attributes[name] = text
    observed = item.observed_at
    return Event(
        item.event_id,
        item.event_type,
        item.oracle,
        attributes,
        _micros(observed.seconds, observed.nanos, "events.observed_at"),
    )


def simulation_work(contract: CompiledContract, events: int) -> int:
    """What a simulation costs: step i evaluates the first i events against every clause."""
    return (events + 1) * (events + 2) // 2 * max(1, len(contract.clauses))


def simulate_reply(
    contract: CompiledContract, request: contract_pb2.SimulateContractRequest
) -> contract_pb2.SimulateContractResponse:
    binding = bind_params(contract, views.param_inputs(contract, request.params))
    if binding.params is None:
        raise views.params_error(binding.errors)
    if len(request.events) > SIMULATED_EVENTS_MAX:
        raise requests.invalid(
            Reason.PARAMS_INVALID, "events", f"at most {SIMULATED_EVENTS_MAX} events"
        )
    if simulation_work(contract, len(request.events)) > limits.SIMULATION_WORK_MAX:
        raise requests.invalid(
            Reason.PARAMS_INVALID,
            "events",
            f"too much to simulate: {len(request.events)} events against "
            f"{len(contract.clauses)} clauses (events x events x clauses / 2 is at most "
            f"{limits.SIMULATION_WORK_MAX})",
        )
    events = [simulated_event(contract, e) for e in request.events]
    until = (
        _micros(request.until.seconds, request.until.nanos, "until")
        if request.HasField("until")
        else None
    )
    steps = simulate(contract, binding.params, events, until)
    currency = contract.escrow.currency
    reply = contract_pb2.SimulateContractResponse()
    escrow_left = escrow_minor(contract, binding.params)
    for step in steps:
        evaluation = step.evaluation
        legs = [_simulated_leg(leg, currency) for leg in evaluation.legs]
        escrow_left = evaluation.escrow.remaining_minor
        if step.event is None:
            reply.closing_legs.extend(legs)
            continue
        item = request.events[len(reply.steps)]
        report = next((r for r in evaluation.reports if r.event_id == step.event.event_id), None)
        reply.steps.append(
            contract_pb2.SimulationStep(
                event=item,
                status=report.status if report else "processed",
                matched_clauses=list(report.matched) if report else [],
                fired_clauses=list(report.fired) if report else [],
                why_not=dict(report.why_not) if report else {},
                legs=legs,
                escrow_left=money(currency, escrow_left),
            )
        )
    reply.escrow_left.CopyFrom(money(currency, escrow_left))
    reply.terminal = bool(steps) and steps[-1].evaluation.state.terminal
    return reply


def simulate_job(request_bytes: bytes, canonical: bytes | None) -> JobResult:
    """In a pool worker: a serialized SimulateContractResponse, or the refusal. The contract is
    the registered one's canonical bytes, or compiled here from the request's source."""
    try:
        request = contract_pb2.SimulateContractRequest.FromString(request_bytes)
        contract = (
            load_compiled(canonical)
            if canonical is not None
            else compile_or_refuse(request.source, "<contract>")
        )
        return (True, simulate_reply(contract, request).SerializeToString())
    except SettlementError as error:
        return (False, error_data(error))


def _simulated_leg(leg: DslLeg, currency: str) -> contract_pb2.Leg:
    return contract_pb2.Leg(
        leg_id=leg.leg_id,
        clause=leg.clause,
        kind=leg.kind,
        party=leg.party,
        wallet_id=leg.wallet,
        amount=money(leg.currency or currency, leg.amount_minor),
        target_currency=leg.target_currency or "",
        title_id=leg.title or "",
        reason=leg.reason,
    )
