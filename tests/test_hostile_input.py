"""Hostile input gets a typed refusal, never INTERNAL, and an error never echoes a megabyte back
(issue 10, item 8, and the class around it). Through the real gRPC server; the harness also fails
a test whose server logged an ``unhandled_error`` or ``undeclared_reason``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from condpay.errors import ApiError
from condpay.v1 import contract_pb2, money_pb2
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from settlement import limits
from settlement.api.identity import Role
from settlement.api.methods import METHODS
from settlement.ledger.commands import reserve_wallet_id
from tests.support.harness import CENTRAL_BANK, Harness
from tests.support.snapshots import BANK, build_world, expect_error, raw_call, status_code
from wallets import INT64_MAX

K = "/condpay.v1.ContractService/"
COLD_CHAIN = (
    Path(__file__).resolve().parents[1] / "examples" / "contracts" / "cold-chain-penalty.contract"
).read_text()
BIG = 1_000_000  # a one-megabyte id


def _caller(role: Role) -> str:
    return BANK if role is Role.INSTITUTION else f"{role.value}/probe"


def _assert_small(error: ApiError) -> None:
    """Nothing an error echoes is longer than the bounds of settlement/limits.py."""
    assert len(error.status.message) <= limits.ERROR_MESSAGE_CHARS_MAX, len(error.status.message)
    for key, value in error.metadata.items():
        assert len(key) <= 64, key
        assert len(value) <= limits.ERROR_ECHO_CHARS_MAX, (key, len(value))


# -- GetContract -------------------------------------------------------------------------------
async def test_get_contract_with_an_empty_or_malformed_hash_is_typed(harness: Harness) -> None:
    address = harness.address
    empty = contract_pb2.GetContractRequest()
    await expect_error(
        raw_call(address, K + "GetContract", empty),
        grpc.StatusCode.INVALID_ARGUMENT,
        "MISSING_FIELD",
    )
    for bad in ("../../etc", "A" * 64, "é" * 10, "0" * 63, "x" * BIG):
        error = await expect_error(
            raw_call(
                address, K + "GetContract", contract_pb2.GetContractRequest(contract_hash=bad)
            ),
            grpc.StatusCode.NOT_FOUND,
            "CONTRACT_NOT_FOUND",
        )
        _assert_small(error)
    # The same for SimulateContract by hash.
    error = await expect_error(
        raw_call(
            address,
            K + "SimulateContract",
            contract_pb2.SimulateContractRequest(contract_hash="x" * BIG),
        ),
        grpc.StatusCode.NOT_FOUND,
        "CONTRACT_NOT_FOUND",
    )
    _assert_small(error)


# -- timestamps out of range -------------------------------------------------------------------
def _simulation() -> contract_pb2.SimulateContractRequest:
    request = contract_pb2.SimulateContractRequest(source=COLD_CHAIN)
    request.params["importer"].id = "w_importer"
    request.params["exporter"].id = "w_exporter"
    request.params["price"].money.CopyFrom(money_pb2.Money(currency="CNY", amount_minor=100_000))
    return request


@pytest.mark.parametrize("seconds", [10**12, -(10**12)])
async def test_simulate_refuses_timestamps_out_of_range(harness: Harness, seconds: int) -> None:
    address = harness.address
    # Under an undeclared name, and under every place a timestamp goes.
    request = _simulation()
    request.params["no_such_param"].timestamp.seconds = seconds
    await expect_error(
        raw_call(address, K + "SimulateContract", request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "PARAMS_INVALID",
        field="params.no_such_param",
    )
    request = _simulation()
    request.until.seconds = seconds
    await expect_error(
        raw_call(address, K + "SimulateContract", request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "PARAMS_INVALID",
        field="until",
    )
    request = _simulation()
    event = request.events.add(event_id="e1", event_type="iot.condition", oracle="reefer")
    event.observed_at.seconds = seconds
    await expect_error(
        raw_call(address, K + "SimulateContract", request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "PARAMS_INVALID",
        field="events.observed_at",
    )
    request = _simulation()
    request.params["no_such_param"].duration.seconds = seconds * 1000
    await expect_error(
        raw_call(address, K + "SimulateContract", request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "PARAMS_INVALID",
    )


# -- the daily-spend counter of uncapped wallets -----------------------------------------------
async def test_daily_spend_of_an_uncapped_wallet_saturates_instead_of_overflowing(
    harness: Harness,
) -> None:
    """Two institution reserves (uncapped) pass nearly INT64_MAX back and forth in one day: the
    first reserve's spent-today would pass int64; it saturates, and the reserve keeps working."""
    cb = harness.client(CENTRAL_BANK)
    keys = {name: await harness.institution(name) for name in ("bank-a", "bank-b")}
    amount = INT64_MAX - 1_000
    await cb.issue("bank-a", "CNY", amount + 10)
    a, b = reserve_wallet_id("bank-a"), reserve_wallet_id("bank-b")
    bank_a, bank_b = harness.client("institution/bank-a"), harness.client("institution/bank-b")
    await bank_a.transfer(keys["bank-a"], a, b, "CNY", amount)
    await bank_b.transfer(keys["bank-b"], b, a, "CNY", amount)
    await bank_a.transfer(keys["bank-a"], a, b, "CNY", amount)  # spent today: 2 x amount
    await bank_b.transfer(keys["bank-b"], b, a, "CNY", amount)
    await bank_a.transfer(keys["bank-a"], a, b, "CNY", 1)  # still working the same day
    wallet = await cb.get_wallet(a)
    (cny,) = [line for line in wallet.balances if line.available.currency == "CNY"]
    assert cny.available.amount_minor == amount + 10 - 1


# -- a megabyte never comes back, and a bigger request never gets in ---------------------------
async def test_a_request_beyond_the_size_bound_is_refused_by_the_transport(
    harness: Harness,
) -> None:
    request = contract_pb2.GetContractRequest(contract_hash="x" * (limits.REQUEST_BYTES_MAX + 1))
    with pytest.raises(ApiError) as refused:
        await raw_call(harness.address, K + "GetContract", request)
    assert status_code(refused.value) is grpc.StatusCode.RESOURCE_EXHAUSTED


def _hostile_values(field: Any, mode: str) -> object:
    if field.type == FieldDescriptor.TYPE_STRING:
        return {"long": "x" * 100_000, "odd": "\x00\u202e é\n" * 50, "empty": ""}[mode]
    if field.type == FieldDescriptor.TYPE_BYTES:
        return {"long": b"\xff" * 100_000, "odd": b"\x00\x01{", "empty": b""}[mode]
    if field.type == FieldDescriptor.TYPE_BOOL:
        return mode != "empty"
    if field.type == FieldDescriptor.TYPE_ENUM:
        return {"long": 2**31 - 1, "odd": -1, "empty": 0}[mode]
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return {"long": 1e308, "odd": float("nan"), "empty": 0.0}[mode]
    if field.type in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return {"long": 2**32 - 1, "odd": 1, "empty": 0}[mode]
    if field.type in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return {"long": 2**64 - 1, "odd": 1, "empty": 0}[mode]
    if field.type in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
    ):
        return {"long": 2**31 - 1, "odd": -(2**31), "empty": 0}[mode]
    return {"long": INT64_MAX, "odd": -INT64_MAX - 1, "empty": 0}[mode]


def _fill(message: Message, mode: str, depth: int = 0) -> None:
    """Every field of ``message`` (nested messages to depth 3) set to a hostile value."""
    descriptor = message.DESCRIPTOR
    if descriptor.full_name == "google.protobuf.Timestamp":
        message.seconds = {"long": 10**12, "odd": -(10**12), "empty": 0}[mode]  # type: ignore[attr-defined]
        message.nanos = {"long": 999_999_999, "odd": -1, "empty": 0}[mode]  # type: ignore[attr-defined]
        return
    for field in descriptor.fields:
        if field.containing_oneof is not None and field.containing_oneof.fields[0] is not field:
            continue  # one member of each oneof
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            mapping = getattr(message, field.name)
            key = _hostile_values(key_field, mode)
            if value_field.message_type is not None:
                if depth < 3:
                    _fill(mapping[key], mode, depth + 1)
            else:
                mapping[key] = _hostile_values(value_field, mode)
            continue
        if field.message_type is not None:
            if depth >= 3:
                continue
            if field.is_repeated:
                _fill(getattr(message, field.name).add(), mode, depth + 1)
            else:
                _fill(getattr(message, field.name), mode, depth + 1)
            continue
        value = _hostile_values(field, mode)
        if field.is_repeated:
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)


def _hostile_requests(mode: str) -> Iterator[tuple[str, str, Message]]:
    for method, spec in sorted(METHODS.items()):
        descriptor = descriptor_pool.Default().FindMethodByName(method.strip("/").replace("/", "."))
        request = message_factory.GetMessageClass(descriptor.input_type)()
        _fill(request, mode)
        fields = descriptor.input_type.fields_by_name
        if "request_id" in fields:  # a valid id, so that the request reaches the handler
            request.request_id = f"req-{mode}-{os.urandom(4).hex()}"  # type: ignore[attr-defined]
        if "dry_run" in fields:
            request.dry_run = True  # type: ignore[attr-defined]
        role = sorted(spec.roles, key=lambda r: r.value)[0]
        yield method, _caller(role), request


@pytest.mark.parametrize("mode", ["long", "odd", "empty"])
async def test_every_method_answers_hostile_fields_with_a_typed_small_error(
    harness: Harness, mode: str, subtests: pytest.Subtests
) -> None:
    """Every field of every request of every method set to a hostile value (100 kB strings and
    bytes, int64 extremes, timestamps of +-1e12 seconds, control characters, empties): the answer
    is a typed refusal (or a reply), never INTERNAL or UNKNOWN, and echoes nothing long."""
    await build_world(harness)
    for method, caller, request in _hostile_requests(mode):
        with subtests.test(method):
            refusal: ApiError | None = None
            try:
                await raw_call(harness.address, method, request, caller=caller)
            except ApiError as error:
                refusal = error
            if refusal is not None:
                code = status_code(refusal)
                assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), refusal
                assert refusal.reason, (method, refusal)
                _assert_small(refusal)
