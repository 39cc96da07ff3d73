"""Blocks sealed on the block timer (docs/bridge.md, "Blocks, validators and finality"): with a
timer, a finality request waits for the timer's next block instead of sealing one, so one block
and one certificate serve every commit that waited for it; without a timer, finality seals."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bridges import (
    BlockHeader,
    Bridge,
    BridgeClient,
    FaultPlan,
    FaultyBridge,
    Finality,
    Identity,
    Kind,
    ManualClock,
    QuorumCertificate,
    TickResult,
    TransferState,
)
from bridges import limits as bridge_limits
from bridges._ledger import CertifiedBlock
from bridges._server import _block_timer, start_server
from tests.bridges.conftest import BANKS, KEY_SEED, fund

PAYER, PAYEE = BANKS


async def committed(bridge: Bridge, count: int, prefix: str = "t") -> list[str]:
    ids = []
    for i in range(count):
        quote = await bridge.quote("HKD", "CNY", source_amount_minor=10_00 + i)
        transfer_id = f"{PAYER}:{prefix}-{i}"
        await bridge.prepare(
            transfer_id, quote_id=quote.quote_id, payer_id=PAYER, payee_id=PAYEE, timeout_ms=9_000
        )
        await bridge.commit(transfer_id)
        ids.append(transfer_id)
    return ids


async def open_bridge(tmp_path: Path) -> Bridge:
    bridge = await Bridge.open(tmp_path / "bridge.db", clock=ManualClock(), key_seed=KEY_SEED)
    await fund(bridge)
    return bridge


async def test_with_a_timer_many_finality_requests_share_one_certified_block(
    tmp_path: Path,
) -> None:
    bridge = await open_bridge(tmp_path)
    try:
        ids = await committed(bridge, 6)
        bridge.block_timer_ms = 10
        waiting = [asyncio.ensure_future(bridge.finality(t)) for t in ids]
        await asyncio.sleep(0.05)
        assert not any(w.done() for w in waiting)  # nothing sealed a block for them
        assert (await bridge.tick()).tip_height == 1  # the timer's tick: one block
        answers = await asyncio.gather(*waiting)
        assert all(a.final for a in answers)
        assert {a.block.height for a in answers if a.block} == {1}
        assert answers[0].block is not None
        assert answers[0].block.transfer_ids == tuple(ids)
        assert (await bridge.audit()).ok
    finally:
        await bridge.close()


async def test_a_final_transfer_is_answered_at_once_with_a_timer(tmp_path: Path) -> None:
    bridge = await open_bridge(tmp_path)
    try:
        [transfer_id] = await committed(bridge, 1)
        await bridge.tick()
        bridge.block_timer_ms = 10_000
        started = time.monotonic()
        assert (await bridge.finality(transfer_id)).final
        assert time.monotonic() - started < 1
    finally:
        await bridge.close()


async def test_the_wait_is_bounded_and_then_answers_not_final(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bridge_limits, "FINALITY_WAIT_MS", 100)
    bridge = await open_bridge(tmp_path)
    try:
        [transfer_id] = await committed(bridge, 1)
        bridge.block_timer_ms = 10_000  # a timer that does not tick within the bound
        started = time.monotonic()
        answer = await bridge.finality(transfer_id)
        assert (answer.block, answer.certificate) == (None, None)
        assert 0.09 <= time.monotonic() - started < 2
        assert (await bridge.tick()).final_height == 1  # the timer's next tick makes it final
        assert (await bridge.finality(transfer_id)).final
    finally:
        await bridge.close()


async def test_a_commit_with_a_timer_is_answered_with_the_next_block(tmp_path: Path) -> None:
    """commit_final with a timer: the commit is written at once, and the answer waits for the
    timer's next block (no block is sealed for it); a retry of the same commit, already final,
    is answered at once."""
    bridge = await open_bridge(tmp_path)
    try:
        quote = await bridge.quote("HKD", "CNY", source_amount_minor=10_00)
        transfer_id = f"{PAYER}:c-1"
        await bridge.prepare(
            transfer_id, quote_id=quote.quote_id, payer_id=PAYER, payee_id=PAYEE, timeout_ms=9_000
        )
        bridge.block_timer_ms = 10_000
        waiting = asyncio.ensure_future(bridge.commit_final(transfer_id))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        assert (await bridge.status(transfer_id)).state is TransferState.COMMITTED
        assert (await bridge.tick()).tip_height == 1
        transfer, finality = await waiting
        assert finality.final
        assert finality.block is not None
        assert finality.block.transfer_ids == (transfer_id,)
        assert (transfer.block_height, transfer.replayed) == (1, False)
        started = time.monotonic()
        again, same = await bridge.commit_final(transfer_id)
        assert time.monotonic() - started < 1
        assert again.replayed
        assert same == finality
        assert (await bridge.audit()).ok
    finally:
        await bridge.close()


async def test_without_a_quorum_finality_answers_at_once(tmp_path: Path) -> None:
    bridge = await open_bridge(tmp_path)
    try:
        [transfer_id] = await committed(bridge, 1)
        await bridge.set_validator_faults(no_quorum=True)
        bridge.block_timer_ms = 10_000
        started = time.monotonic()
        answer = await bridge.finality(transfer_id)
        assert time.monotonic() - started < 1
        assert answer.certificate is None
        await bridge.set_validator_faults()
        await bridge.tick()
        assert (await bridge.finality(transfer_id)).final
    finally:
        await bridge.close()


async def test_without_a_timer_finality_seals_at_once(tmp_path: Path) -> None:
    bridge = await open_bridge(tmp_path)
    try:
        assert bridge.block_timer_ms is None
        ids = await committed(bridge, 2)
        first = await bridge.finality(ids[0])
        assert first.final
        assert first.block is not None
        assert first.block.transfer_ids == tuple(ids)
    finally:
        await bridge.close()


async def test_the_server_runs_the_timer_and_finality_waits_for_its_block(
    tmp_path: Path,
) -> None:
    bridge = await open_bridge(tmp_path)
    faulty = await FaultyBridge.wrap(bridge, FaultPlan())
    ids = await committed(bridge, 3)
    server = await start_server(faulty, "127.0.0.1:0", insecure=True, block_interval_ms=20)
    try:
        assert bridge.block_timer_ms == 20
        client = BridgeClient(f"127.0.0.1:{server.port}", identity=Identity(Kind.BANK, PAYER))
        async with client:
            answers = await asyncio.gather(*(client.finality(t) for t in ids))
        assert all(a.final for a in answers)
        assert len({a.block.height for a in answers if a.block}) == 1
    finally:
        await server.stop(grace_ms=0)
    assert bridge.block_timer_ms is None  # stopped: nothing ticks it any more


async def test_a_restarted_bridge_keeps_its_timer(tmp_path: Path) -> None:
    bridge = await open_bridge(tmp_path)
    faulty = await FaultyBridge.wrap(bridge, FaultPlan())
    try:
        bridge.block_timer_ms = 25
        await faulty.restart()
        assert faulty.inner is not bridge
        assert faulty.inner.block_timer_ms == 25
    finally:
        await faulty.close()


async def test_the_tick_answers_the_commits_it_certified_without_reading_them_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each waiting request reads once, before it waits; the tick that certifies its block
    answers it with that block and certificate, exactly what a read afterwards answers."""
    bridge = await open_bridge(tmp_path)
    try:
        ids = await committed(bridge, 5)
        reads: list[str] = []
        read = bridge._ledger.finality

        def counted(transfer_id: str, *, seal: bool = True) -> Finality:
            reads.append(transfer_id)
            return read(transfer_id, seal=seal)

        monkeypatch.setattr(bridge._ledger, "finality", counted)
        bridge.block_timer_ms = 10_000
        waiting = [asyncio.ensure_future(bridge.finality(t)) for t in ids]
        await asyncio.sleep(0.05)
        assert sorted(reads) == sorted(ids)  # one read each, not final: they wait
        assert (await bridge.tick()).final_height == 1
        answers = await asyncio.gather(*waiting)
        assert sorted(reads) == sorted(ids)  # answered by the tick: no read more
        assert all(a.final for a in answers)
        for transfer_id, answer in zip(ids, answers, strict=True):
            assert answer.transfer_id == transfer_id
            assert answer == read(transfer_id, seal=False)
    finally:
        await bridge.close()


async def test_a_tick_that_fails_tells_the_waiting_requests_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a failed tick certified is not known to be durable: the requests waiting for it
    read again, and the next tick answers them with the block as stored."""
    bridge = await open_bridge(tmp_path)
    try:
        [transfer_id] = await committed(bridge, 1)
        tick = bridge._ledger.tick
        unstored = CertifiedBlock(
            BlockHeader("other-chain", 1, b"\0" * 32, 0, (transfer_id,), b"\0" * 32),
            QuorumCertificate(b"\0" * 32, ("PBOC",), b"\0" * 96),
        )

        def failing(certified: list[CertifiedBlock] | None = None) -> TickResult:
            assert certified is not None
            certified.append(unstored)
            raise RuntimeError("the tick failed after certifying in memory")

        monkeypatch.setattr(bridge._ledger, "tick", failing)
        bridge.block_timer_ms = 10_000
        waiting = asyncio.ensure_future(bridge.finality(transfer_id))
        await asyncio.sleep(0.05)
        with pytest.raises(RuntimeError):
            await bridge.tick()
        await asyncio.sleep(0.05)
        assert not waiting.done()  # it read again: no stored block holds it yet
        monkeypatch.setattr(bridge._ledger, "tick", tick)
        assert (await bridge.tick()).final_height == 1
        answer = await waiting
        assert answer.final
        assert answer.block != unstored.header
        assert answer == await bridge.finality(transfer_id)
    finally:
        await bridge.close()


async def test_the_timer_keeps_its_rate_however_long_a_tick_takes() -> None:
    """Blocks are due one interval apart: a tick's own time is not added to the interval."""
    started: list[float] = []
    six = asyncio.Event()

    class SlowTicks:
        async def tick(self) -> TickResult:
            started.append(time.monotonic())
            if len(started) == 6:
                six.set()
            await asyncio.sleep(0.06)  # a tick that takes most of its interval
            return TickResult(0, 0, 0)

    timer = asyncio.ensure_future(_block_timer(SlowTicks(), 80, None))  # type: ignore[arg-type]
    try:
        await asyncio.wait_for(six.wait(), 5)
    finally:
        timer.cancel()
    spacing = (started[-1] - started[0]) / (len(started) - 1)
    assert spacing < 0.125  # 0.08 apart, where sleeping after each tick would be 0.14
