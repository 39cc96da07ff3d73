"""The simulator's clients on their own, against stand-ins: the metered client counts each call's
own retries, and a trader reports an aborted settlement or a failed read as a surprise at once."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import grpc
from condpay.errors import NotFound
from condpay.v1 import settlement_pb2, wallet_pb2
from google.rpc import status_pb2

from sim_central_bank.economy import CARRIER, Economy, Party, derive_key, member_key
from sim_central_bank.metered import MeteredClient
from sim_central_bank.plan import DirectDvP, make_plan
from sim_central_bank.record import ACCEPTED, Expectations, RunRecord
from sim_central_bank.scenario import load
from sim_central_bank.trading import SURPRISE, Trader


class FlakyRpc:
    """A unary multi-callable whose first attempt per request gets no answer (UNAVAILABLE)."""

    _method = b"/condpay.v1.WalletService/GetWallet"

    def __init__(self) -> None:
        self.seen: set[str] = set()

    async def __call__(self, request: wallet_pb2.GetWalletRequest, **_: Any) -> wallet_pb2.Wallet:
        await asyncio.sleep(0.01)  # every call in flight at once
        if request.wallet_id not in self.seen:
            self.seen.add(request.wallet_id)
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
            )
        return wallet_pb2.Wallet(wallet_id=request.wallet_id)


async def test_concurrent_calls_count_only_their_own_retries() -> None:
    record = RunRecord("test", 0, "test", "test")
    client = MeteredClient("127.0.0.1:1", caller="central_bank/pboc", record=record)
    rpc = FlakyRpc()
    try:
        replies = await asyncio.gather(
            *(client.call(rpc, wallet_pb2.GetWalletRequest(wallet_id=f"w_{i}")) for i in range(4))
        )
    finally:
        await client.close()
    assert [r.wallet_id for r in replies] == [f"w_{i}" for i in range(4)]
    assert record.faults["client retries (no answer)"] == 4  # one each, not 4 + 4 + 4 + 4
    assert [(c.rpc, c.outcome) for c in record.calls] == [("GetWallet", ACCEPTED)] * 4


class StandIn:
    """The core as a trader sees it: every identity is this one; the settlement ends in
    ``state``, or reading it fails with ``error``."""

    def __init__(self, state: int = 0, error: Exception | None = None) -> None:
        self.state, self.error = state, error
        self.reads = 0

    def with_caller(self, caller: str) -> StandIn:
        return self

    async def issue_title(self, *_: Any, **__: Any) -> Any:
        return SimpleNamespace(title=SimpleNamespace(title_id="t_1"))

    async def quote_fx(self, *_: Any, **__: Any) -> Any:
        return SimpleNamespace(quote_id="q_1")

    async def settle_dvp(self, *_: Any, **__: Any) -> Any:
        return SimpleNamespace(settlement=SimpleNamespace(settlement_id="s_1"))

    async def get_settlement(self, settlement_id: str) -> settlement_pb2.Settlement:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return settlement_pb2.Settlement(settlement_id=settlement_id, state=self.state)  # type: ignore[arg-type]


def trader(core: StandIn) -> tuple[Trader, RunRecord]:
    plan = make_plan(load("smoke"))
    economy = Economy("test", plan, carrier_key=member_key(CARRIER))
    for role, currency in (("seller", "CNY"), ("buyer", "HKD")):
        party = Party(f"{role}-000", derive_key(0, role), f"w_{role}", currency)
        (economy.sellers if role == "seller" else economy.buyers).append(party)
    record = RunRecord("test", 0, "test", "test")
    return Trader(economy, core, record, Expectations(("CNY", "HKD"))), record  # type: ignore[arg-type]


SALE = DirectDvP("d-1", 0, 0, 0, 0, "HKD", 100_00, 5)


async def test_an_aborted_settlement_is_a_surprise_at_once() -> None:
    core = StandIn(state=settlement_pb2.SETTLEMENT_STATE_ABORTED)
    sim, record = trader(core)
    begun = time.monotonic()
    await sim.run_direct(SALE)
    assert time.monotonic() - begun < 5  # not after SETTLE_TIMEOUT_SECONDS (120 s)
    assert core.reads == 1
    assert record.operations[(SURPRISE, "dvp SETTLEMENT_STATE_ABORTED")] == 1
    assert record.settlements_total == 0  # what did not reach FINAL is not a settlement


async def test_a_final_settlement_counts() -> None:
    sim, record = trader(StandIn(state=settlement_pb2.SETTLEMENT_STATE_FINAL))
    await sim.run_direct(SALE)
    assert record.operations[("dvp.final", ACCEPTED)] == 1
    assert record.settlements_total == 1
    assert not [k for k in record.operations if k[0] == SURPRISE]


async def test_a_read_that_fails_is_a_surprise_of_its_job() -> None:
    gone = NotFound(status_pb2.Status(code=5, message="no such settlement"))
    sim, record = trader(StandIn(error=gone))
    await sim.run_direct(SALE)  # does not raise
    assert record.operations[(SURPRISE, "direct DvP failed: NOT_FOUND")] == 1
    assert record.settlements_total == 0
