"""Group commit on the bridge's worker (bridges/_bridge.py, Ledger.run_group): the transfer calls
that arrive together run as one transaction, a savepoint each, answered after its one COMMIT,
each answer exactly as if the call had run alone."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from bridges import Bridge, ManualClock, TransferState
from bridges._ledger import Ledger
from bridges.errors import InsufficientFunds, NotFound, Unavailable
from tests.bridges.conftest import BANK_FUNDS_MINOR, BANKS, KEY_SEED, fund

PAYER, PAYEE = BANKS


async def open_bridge(path: Path) -> Bridge:
    bridge = await Bridge.open(path, clock=ManualClock(), key_seed=KEY_SEED)
    await fund(bridge)
    return bridge


async def settle(bridge: Bridge, i: int) -> str:
    quote = await bridge.quote("HKD", "CNY", source_amount_minor=100_00 + i)
    transfer_id = f"{PAYER}:g-{i}"
    await bridge.prepare(
        transfer_id, quote_id=quote.quote_id, payer_id=PAYER, payee_id=PAYEE, timeout_ms=9_000
    )
    await bridge.commit(transfer_id)
    return transfer_id


async def test_concurrent_calls_share_commits_and_answer_as_alone(tmp_path: Path) -> None:
    bridge = await open_bridge(tmp_path / "bridge.db")
    try:
        before = bridge._ledger.groups_committed
        ids = await asyncio.gather(*(settle(bridge, i) for i in range(40)))
        groups = bridge._ledger.groups_committed - before
        assert groups < 3 * 40  # quote, prepare and commit of 40 transfers, in fewer commits
        for transfer_id in ids:
            assert (await bridge.status(transfer_id)).state is TransferState.COMMITTED
        await bridge.tick()
        assert all([(await bridge.finality(t)).final for t in ids])
        assert (await bridge.audit()).ok
    finally:
        await bridge.close()
    again = await Bridge.open(tmp_path / "bridge.db", key_seed=KEY_SEED)  # all of it durable
    try:
        for transfer_id in ids:
            assert (await again.status(transfer_id)).state is TransferState.COMMITTED
        assert (await again.audit()).ok
    finally:
        await again.close()


async def test_a_refused_call_in_a_group_leaves_the_others_and_its_refusal_stands(
    tmp_path: Path,
) -> None:
    bridge = await open_bridge(tmp_path / "bridge.db")
    try:
        good = await bridge.quote("HKD", "CNY", source_amount_minor=100_00)
        too_much = await bridge.quote("HKD", "CNY", source_amount_minor=BANK_FUNDS_MINOR + 1)
        answers = await asyncio.gather(
            bridge.prepare(
                f"{PAYER}:ok",
                quote_id=good.quote_id,
                payer_id=PAYER,
                payee_id=PAYEE,
                timeout_ms=9_000,
            ),
            bridge.prepare(
                f"{PAYER}:poor",
                quote_id=too_much.quote_id,
                payer_id=PAYER,
                payee_id=PAYEE,
                timeout_ms=9_000,
            ),
            bridge.prepare(
                f"{PAYER}:nil",
                quote_id="q-none",
                payer_id=PAYER,
                payee_id=PAYEE,
                timeout_ms=9_000,
            ),
            return_exceptions=True,
        )
        assert not isinstance(answers[0], BaseException)
        assert answers[0].state is TransferState.PREPARED
        assert isinstance(answers[1], InsufficientFunds)
        assert isinstance(answers[2], NotFound)
        assert (await bridge.status(f"{PAYER}:poor")).state is TransferState.REJECTED  # kept
        with pytest.raises(NotFound):
            await bridge.status(f"{PAYER}:nil")  # its writes undone
        assert (await bridge.audit()).ok
    finally:
        await bridge.close()


def test_calls_of_a_group_rolled_back_by_sqlite_answer_unavailable() -> None:
    ledger = Ledger.open(":memory:", clock=ManualClock(), rng=random.Random(0), key_seed=KEY_SEED)
    try:
        ledger.register_bank("A")

        def rolled_back() -> object:
            ledger._conn.execute("ROLLBACK")  # as SQLite does on some errors (SQLITE_FULL...)
            raise RuntimeError("disk full")

        results = ledger.run_group(
            [lambda: ledger.register_bank("B"), rolled_back, lambda: ledger.register_bank("C")]
        )
        assert [ok for ok, _ in results] == [False, False, True]
        assert isinstance(results[0][1], Unavailable)  # B's write went with the transaction
        assert isinstance(results[1][1], Unavailable)
        ids = {p.participant_id for p in ledger.participants()}
        assert "B" not in ids
        assert {"A", "C"} <= ids
        assert ledger.audit().ok
    finally:
        ledger.close()


async def test_a_closing_bridge_answers_queued_calls_then_refuses(tmp_path: Path) -> None:
    bridge = await open_bridge(tmp_path / "bridge.db")
    queued = asyncio.ensure_future(bridge.status(f"{PAYER}:none"))
    await asyncio.sleep(0)
    await bridge.close()
    with pytest.raises(NotFound):  # answered before the close
        await queued
    with pytest.raises(Unavailable):
        await bridge.status(f"{PAYER}:none")
