"""ContractService: check, simulate and register contracts (docs/dsl.md)."""

from __future__ import annotations

import re

import grpc
from condpay.v1 import contract_pb2, contract_pb2_grpc, operation_pb2

from contracts_dsl import CompiledContract, load_compiled
from settlement.api import heavy_jobs, requests
from settlement.api import payment_views as views
from settlement.api.heavy_jobs import compile_or_refuse
from settlement.api.identity import current_caller
from settlement.api.replies import Reply
from settlement.errors import Reason, SettlementError, not_found
from settlement.ledger import commands, payments
from settlement.ledger.records import ContractRecord
from settlement.runtime import Runtime

__all__ = ["compile_or_refuse", "resolve_contract", "stored_contract"]

_SERVICE = "/condpay.v1.ContractService/"
# A contract hash: the hex SHA-256 of its canonical form (contracts_dsl/compiled.py).
_HASH = re.compile(r"[0-9a-f]{64}")


async def resolve_contract(
    rt: Runtime, source: str, contract_hash: str, path: str = ""
) -> tuple[CompiledContract, str]:
    """A contract from its source (compiled in the process pool, cached by source hash) or a
    registered hash: (compiled, source)."""
    if source:
        return await rt.heavy.compile(str(current_caller()), source, path), source
    if not contract_hash:
        raise requests.invalid(Reason.MISSING_FIELD, "contract", "give a source or a hash")
    record = await registered_contract(rt, contract_hash)
    return rt.directory.compiled(record), record.source


async def registered_contract(rt: Runtime, contract_hash: str) -> ContractRecord:
    """The registered contract, or CONTRACT_NOT_FOUND (a malformed hash is not found either)."""
    if not contract_hash:
        raise requests.invalid(Reason.MISSING_FIELD, "contract_hash", "contract_hash is required")
    if not _HASH.fullmatch(contract_hash):
        raise not_found(Reason.CONTRACT_NOT_FOUND, "contract", contract_hash)
    record = await rt.directory.contract(contract_hash)
    if record is None:
        raise not_found(Reason.CONTRACT_NOT_FOUND, "contract", contract_hash)
    return record


async def stored_contract(rt: Runtime, contract_hash: str) -> tuple[CompiledContract, str]:
    """The contract of a stored payment, (compiled, source): the directory's cached record, or
    the stored one, loaded and remembered (a payment's contract is stored with the payment)."""
    record = await rt.directory.contract(contract_hash)
    assert record is not None, "a payment's contract is stored with the payment"
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


def quota_refusal(error: SettlementError) -> bool:
    """A per-caller quota refusal is answered, never stored as the request's outcome: the same
    request id may succeed once the caller's other calls are done."""
    return error.reason.code is grpc.StatusCode.RESOURCE_EXHAUSTED


class ContractService(contract_pb2_grpc.ContractServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def ValidateContract(
        self, request: contract_pb2.ValidateContractRequest, context: grpc.aio.ServicerContext
    ) -> contract_pb2.ValidateContractResponse:
        if not request.source:
            raise requests.invalid(Reason.MISSING_FIELD, "source", "a contract source is required")
        reply = await self._rt.heavy.job(
            str(current_caller()), heavy_jobs.validate_job, request.source, request.path
        )
        return contract_pb2.ValidateContractResponse.FromString(reply)

    async def SimulateContract(
        self, request: contract_pb2.SimulateContractRequest, context: grpc.aio.ServicerContext
    ) -> contract_pb2.SimulateContractResponse:
        canonical: bytes | None = None
        if not request.source:
            record = await registered_contract(self._rt, request.contract_hash)
            canonical = bytes(record.canonical)
        reply = await self._rt.heavy.job(
            str(current_caller()),
            heavy_jobs.simulate_job,
            request.SerializeToString(),
            canonical,
        )
        return contract_pb2.SimulateContractResponse.FromString(reply)

    async def RegisterContract(
        self, request: contract_pb2.RegisterContractRequest, context: grpc.aio.ServicerContext
    ) -> contract_pb2.RegisterContractResponse:
        base = requests.command_fields(_SERVICE + "RegisterContract", current_caller(), request)
        try:
            if not request.source:
                raise requests.invalid(
                    Reason.MISSING_FIELD, "source", "a contract source is required"
                )
            contract = await self._rt.heavy.compile(base["caller"], request.source, request.path)
            command: commands.Command = payments.RegisterContract(
                **base,
                contract=contract,
                source=request.source,
                contracts_per_day_max=self._rt.settings.contracts_per_day_max,
            )
        except SettlementError as error:
            if quota_refusal(error):
                raise
            command = commands.Refuse(**base, error=error)
        return await self._rt.engine.execute(command, REGISTER)

    async def GetContract(
        self, request: contract_pb2.GetContractRequest, context: grpc.aio.ServicerContext
    ) -> contract_pb2.GetContractResponse:
        record = await registered_contract(self._rt, request.contract_hash)
        compiled = self._rt.directory.compiled(record)
        return contract_pb2.GetContractResponse(
            contract=views.contract_info(compiled, record.source)
        )
