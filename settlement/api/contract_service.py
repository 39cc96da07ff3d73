"""ContractService: check, simulate and register contracts (docs/dsl.md)."""

from __future__ import annotations

import grpc
from condpay.v1 import contract_pb2, contract_pb2_grpc, operation_pb2

from contracts_dsl import (
    CompiledContract,
    Event,
    bind_params,
    compile_source,
    escrow_minor,
    load_compiled,
    simulate,
)
from contracts_dsl import Leg as DslLeg
from settlement.api import payment_views as views
from settlement.api import requests
from settlement.api.convert import money
from settlement.api.identity import current_caller
from settlement.api.replies import Reply
from settlement.errors import Reason, SettlementError, not_found
from settlement.ledger import commands, payments
from settlement.ledger.records import ContractRecord
from settlement.runtime import Runtime

_SERVICE = "/condpay.v1.ContractService/"
SOURCE_BYTES_MAX = 256 * 1024
SIMULATED_EVENTS_MAX = 1000


def compile_or_refuse(source: str, path: str) -> CompiledContract:
    """The compiled contract, or CONTRACT_INVALID carrying every diagnostic as a typed detail."""
    if not source:
        raise requests.invalid(Reason.MISSING_FIELD, "source", "a contract source is required")
    if len(source.encode()) > SOURCE_BYTES_MAX:
        raise requests.invalid(
            Reason.CONTRACT_INVALID, "source", f"a contract is at most {SOURCE_BYTES_MAX} bytes"
        )
    result = compile_source(source, path or "<contract>")
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


async def resolve_contract(
    rt: Runtime, source: str, contract_hash: str, path: str = ""
) -> tuple[CompiledContract, str]:
    """A contract from its source or a registered hash: (compiled, source)."""
    if source:
        return compile_or_refuse(source, path), source
    if not contract_hash:
        raise requests.invalid(Reason.MISSING_FIELD, "contract", "give a source or a hash")
    record = await rt.reader.contract(contract_hash)
    if record is None:
        raise not_found(Reason.CONTRACT_NOT_FOUND, "contract", contract_hash)
    return rt.directory.compiled(record), record.source


async def stored_contract(rt: Runtime, contract_hash: str) -> tuple[CompiledContract, str]:
    """The contract of a stored payment, (compiled, source): the directory's cached record, or
    the stored one, loaded and remembered (a payment's contract is stored with the payment)."""
    record = rt.directory.contract_record(contract_hash)
    if record is None:
        record = await rt.reader.contract(contract_hash)
        assert record is not None, "a payment's contract is stored with the payment"
        rt.directory.remember_contracts([record])
    return rt.directory.compiled(record), record.source


def _register_reply(
    result: object, op: operation_pb2.OperationInfo
) -> contract_pb2.RegisterContractResponse:
    assert isinstance(result, ContractRecord)
    compiled = load_compiled(result.canonical)
    return contract_pb2.RegisterContractResponse(
        operation=op, contract=views.contract_info(compiled, result.source)
    )


REGISTER = Reply(contract_pb2.RegisterContractResponse, _register_reply)


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
        observed.seconds * 1_000_000 + observed.nanos // 1000,
    )


class ContractService(contract_pb2_grpc.ContractServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def ValidateContract(
        self, request: contract_pb2.ValidateContractRequest, context: grpc.aio.ServicerContext
    ) -> contract_pb2.ValidateContractResponse:
        if not request.source:
            raise requests.invalid(Reason.MISSING_FIELD, "source", "a contract source is required")
        if len(request.source.encode()) > SOURCE_BYTES_MAX:
            raise requests.invalid(
                Reason.CONTRACT_INVALID, "source", f"at most {SOURCE_BYTES_MAX} bytes"
            )
        result = compile_source(request.source, request.path or "<contract>")
        reply = contract_pb2.ValidateContractResponse(
            ok=result.contract is not None, diagnostics=views.diagnostics(result)
        )
        if result.contract is not None:
            reply.contract.CopyFrom(views.contract_info(result.contract, request.source))
        return reply

    async def SimulateContract(
        self, request: contract_pb2.SimulateContractRequest, context: grpc.aio.ServicerContext
    ) -> contract_pb2.SimulateContractResponse:
        contract, _ = await resolve_contract(
            self._rt, request.source, request.contract_hash, "<contract>"
        )
        binding = bind_params(contract, views.param_inputs(contract, request.params))
        if binding.params is None:
            raise views.params_error(binding.errors)
        if len(request.events) > SIMULATED_EVENTS_MAX:
            raise requests.invalid(Reason.PARAMS_INVALID, "events", "too many events")
        events = [simulated_event(contract, e) for e in request.events]
        until = (
            request.until.seconds * 1_000_000 + request.until.nanos // 1000
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
            report = next(
                (r for r in evaluation.reports if r.event_id == step.event.event_id), None
            )
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

    async def RegisterContract(
        self, request: contract_pb2.RegisterContractRequest, context: grpc.aio.ServicerContext
    ) -> contract_pb2.RegisterContractResponse:
        base = requests.command_fields(_SERVICE + "RegisterContract", current_caller(), request)
        try:
            contract = compile_or_refuse(request.source, request.path)
            command: commands.Command = payments.RegisterContract(
                **base, contract=contract, source=request.source
            )
        except SettlementError as error:
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, REGISTER)

    async def GetContract(
        self, request: contract_pb2.GetContractRequest, context: grpc.aio.ServicerContext
    ) -> contract_pb2.GetContractResponse:
        if not request.contract_hash:
            raise requests.invalid(Reason.MISSING_FIELD, "contract_hash", "required")
        record = await self._rt.reader.contract(request.contract_hash)
        if record is None:
            raise not_found(Reason.CONTRACT_NOT_FOUND, "contract", request.contract_hash)
        compiled = self._rt.directory.compiled(record)
        return contract_pb2.GetContractResponse(
            contract=views.contract_info(compiled, record.source)
        )


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
