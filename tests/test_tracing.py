"""OpenTelemetry tracing (issue 12), through the real gRPC server with an in-memory exporter: the
span tree of a transfer (RPC > ledger.batch > db.transaction > db.commit) and of a PvP at market
(the bridge calls under the RPC), the request id and the caller as attributes, a refusal's code and
reason, the caller's traceparent continued, and with a sampler that keeps some calls only, a kept
call's batch in its trace."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from condpay.client import AtMarket
from condpay.v1 import central_bank_pb2, central_bank_pb2_grpc, wallet_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

from settlement import tracing
from tests.settlement.audit import open_trade
from tests.settlement.world import BANK, TradeWorld, key

TRANSFER = "/condpay.v1.WalletService/Transfer"
SETTLE_PVP = "/condpay.v1.SettlementService/SettlePvP"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.install(provider)  # before the server starts: it decides at start
    try:
        yield spans
    finally:
        tracing.install(None)


@pytest.fixture
async def traced(exporter: InMemorySpanExporter, database_url: str) -> AsyncIterator[TradeWorld]:
    async with open_trade(database_url) as world:
        yield world


@pytest.fixture
def sampled_exporter() -> Iterator[InMemorySpanExporter]:
    """A sampler that keeps only the traces a caller sent as sampled (traceparent flag 01)."""
    spans = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(root=ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.install(provider)
    try:
        yield spans
    finally:
        tracing.install(None)


async def _finished(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    """The finished spans once ``name`` is among them: the server ends an RPC's span after its
    reply is on the wire, so the caller may have the answer a moment before the span."""
    give_up = time.monotonic() + 5
    while True:
        spans = list(exporter.get_finished_spans())
        if any(s.name == name for s in spans) or time.monotonic() > give_up:
            return spans
        await asyncio.sleep(0.01)


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


async def test_a_transfer_is_one_rpc_span_over_its_batch_and_commit(
    traced: TradeWorld, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    await traced.fund("buyer", "HKD", 1_000_00)  # one Transfer from the bank's reserve
    spans = await _finished(exporter, TRANSFER)
    rpc = _one(spans, TRANSFER)
    assert rpc.attributes is not None
    assert rpc.attributes["rpc.grpc.status_code"] == "OK"
    assert str(rpc.attributes["condpay.request_id"])
    assert str(rpc.attributes["condpay.caller"]).startswith("institution/")
    (batch,) = [s for s in _children(spans, rpc) if s.name == "ledger.batch"]
    assert batch.attributes is not None
    assert batch.attributes["condpay.batch_commands"] == 1
    (transaction,) = _children(spans, batch)
    assert transaction.name == "db.transaction"
    (commit,) = _children(spans, transaction)
    assert commit.name == "db.commit"
    assert {s.context.trace_id for s in (rpc, batch, transaction, commit)} == {rpc.context.trace_id}


async def test_a_pvp_shows_its_bridge_calls_under_its_rpc(
    traced: TradeWorld, exporter: InMemorySpanExporter
) -> None:
    await traced.fund("buyer", "HKD", 400_000_00)
    quote = await traced.platform.quote_fx("HKD", "CNY", target_amount_minor=1_000_00)
    buyer_key, buyer = traced.party("buyer")
    exporter.clear()
    reply = await traced.platform.settle_pvp(
        buyer_key,
        buyer,
        traced.wallets["seller"],
        AtMarket(receive=("CNY", 1_000_00), pay_at_most=("HKD", quote.source.amount_minor)),
    )
    assert reply.settlement.finality.block_height > 0
    spans = await _finished(exporter, SETTLE_PVP)
    rpc = _one(spans, SETTLE_PVP)
    under = [s.name for s in _children(spans, rpc)]
    # At market: the bridge quotes and prepares in one call before the core's first write
    # (held and decided), then the commit, answered with its certified block, and the core's
    # second write (committed and final).
    steps = [s for s in under if s.startswith(("bridge.", "ledger.batch"))]
    assert steps == ["bridge.prepare", "ledger.batch", "bridge.commit", "ledger.batch"], under


async def test_a_refusal_carries_its_code_and_reason_and_the_callers_trace(
    traced: TradeWorld, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    metadata = (
        ("condpay-caller", "platform/gba-trade"),  # may not issue: ROLE_NOT_ALLOWED
        ("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN}-01"),
    )
    with pytest.raises(grpc.aio.AioRpcError, match="PERMISSION_DENIED"):
        await central_bank_pb2_grpc.CentralBankServiceStub(traced.cb.channel).Issue(
            central_bank_pb2.IssueRequest(request_id="req-not-mine"), metadata=metadata
        )
    issue = "/condpay.v1.CentralBankService/Issue"
    rpc = _one(await _finished(exporter, issue), issue)
    assert rpc.attributes is not None
    assert rpc.attributes["rpc.grpc.status_code"] == "PERMISSION_DENIED"
    assert rpc.attributes["condpay.reason"] == "ROLE_NOT_ALLOWED"
    assert format(rpc.context.trace_id, "032x") == TRACE_ID
    assert rpc.parent is not None
    assert format(rpc.parent.span_id, "016x") == PARENT_SPAN


async def test_a_sampled_call_shows_its_batch_whatever_its_place_in_it(
    sampled_exporter: InMemorySpanExporter, database_url: str
) -> None:
    """Eight transfers at once, group-committed together as far as the engine can; only the
    last sent is sampled. Its trace has its batch and commit (the batch is the child of the
    first sampled call in it, not of the first call), and nothing of the others is recorded."""
    async with open_trade(database_url) as world:
        bank = world.client(f"institution/{BANK}")
        stub = wallet_pb2_grpc.WalletServiceStub(bank.channel)
        caller = ("condpay-caller", f"institution/{BANK}")
        requests = [
            bank.transfer_request(
                key(BANK), f"w_reserve.{BANK}", world.wallets["buyer"], "HKD", 1_00 + i
            )
            for i in range(8)
        ]
        sampled_exporter.clear()
        await asyncio.gather(
            *(stub.Transfer(request, metadata=(caller,)) for request in requests[:-1]),
            stub.Transfer(
                requests[-1], metadata=(caller, ("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN}-01"))
            ),
        )
        spans = await _finished(sampled_exporter, "db.commit")
    rpc = _one(spans, TRANSFER)
    assert rpc.attributes is not None
    assert rpc.attributes["condpay.request_id"] == requests[-1].request_id
    assert {format(s.context.trace_id, "032x") for s in spans} == {TRACE_ID}
    (batch,) = [s for s in _children(spans, rpc) if s.name == "ledger.batch"]
    assert batch.attributes is not None
    assert 1 <= int(str(batch.attributes["condpay.batch_commands"])) <= len(requests)
    assert batch.links == ()  # the other calls were not sampled: nothing to link to
    (transaction,) = _children(spans, batch)
    assert [s.name for s in _children(spans, transaction)] == ["db.commit"]


def test_tracing_is_off_by_default_and_an_unknown_exporter_is_refused() -> None:
    assert not tracing.configure(False, {"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.enabled()
    with pytest.raises(ValueError, match="otlp, console and none"):
        tracing.configure(True, {"OTEL_TRACES_EXPORTER": "zipkinz"})
    assert tracing.configure(True, {"OTEL_TRACES_EXPORTER": "none"})
    assert tracing.enabled()
    tracing.install(None)
