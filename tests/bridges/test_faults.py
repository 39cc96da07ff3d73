"""Every fault switch does what docs/bridge.md says, on both transports (the gRPC server puts the
same FaultyBridge in front of its bridge). Crashes of a real server process are in
test_server_process.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bridges import Bridge, FaultPlan, FaultyBridge, Operation, TransferState, checked_public_keys
from bridges import verify_quorum_certificate as verify
from bridges.errors import (
    InsufficientFunds,
    NotFound,
    QuorumUnavailable,
    QuoteUnusable,
    Reason,
    Unavailable,
)
from tests.bridges.conftest import BANKS, KEY_SEED, LIQUIDITY_MINOR, LP, Factory, World, open_world

A, B = BANKS


async def _quote_id(world: World, amount_minor: int = 1_000_00) -> str:
    quote = await world.api.quote("HKD", "CNY", source_amount_minor=amount_minor)
    return quote.quote_id


async def _prepare(world: World, transfer_id: str, quote_id: str) -> TransferState:
    transfer = await world.api.prepare(
        transfer_id, quote_id=quote_id, payer_id=A, payee_id=B, timeout_ms=60_000
    )
    return transfer.state


async def test_latency_delays_the_affected_calls_only(make_world: Factory) -> None:
    world = await make_world(FaultPlan.parse("latency_ms=60..80,on=status"))
    await world.api.abort("BANK-A:t-1")
    started = time.perf_counter()
    await world.api.status("BANK-A:t-1")
    assert time.perf_counter() - started >= 0.060
    started = time.perf_counter()
    await world.api.abort("BANK-A:t-1")  # not an affected operation
    assert time.perf_counter() - started < 0.060


async def test_a_dropped_request_changes_nothing(make_world: Factory) -> None:
    world = await make_world(FaultPlan.parse("drop_request,on=prepare"))
    quote_id = await _quote_id(world)
    with pytest.raises(Unavailable) as caught:
        await _prepare(world, "BANK-A:t-1", quote_id)
    assert caught.value.reason is Reason.UNREACHABLE
    with pytest.raises(NotFound):
        await world.api.status("BANK-A:t-1")
    await world.faulty.set_plan(FaultPlan())
    assert await _prepare(world, "BANK-A:t-1", quote_id) is TransferState.PREPARED


async def test_a_dropped_reply_hides_an_effect_that_happened(make_world: Factory) -> None:
    world = await make_world(FaultPlan.parse("drop_reply,on=commit"))
    await _prepare(world, "BANK-A:t-1", await _quote_id(world))
    with pytest.raises(Unavailable) as caught:
        await world.api.commit("BANK-A:t-1")
    assert caught.value.reason is Reason.UNREACHABLE  # indistinguishable from a lost request
    assert (await world.api.status("BANK-A:t-1")).state is TransferState.COMMITTED
    await world.faulty.set_plan(FaultPlan())
    retried = await world.api.commit("BANK-A:t-1")
    assert (retried.state, retried.replayed) == (TransferState.COMMITTED, True)


async def test_duplicate_delivery_runs_a_call_twice(make_world: Factory) -> None:
    world = await make_world(FaultPlan.parse("duplicate,on=quote+prepare"))
    first = await _quote_id(world)
    second = await _quote_id(world)
    # each quote request was delivered twice: the quote sequence advanced by two each time
    assert (first[:7], second[:7]) == ("q000001", "q000003")
    # a duplicated prepare reserves once; the caller sees the first answer, not a replay
    transfer = await world.api.prepare(
        "BANK-A:t-1", quote_id=second, payer_id=A, payee_id=B, timeout_ms=60_000
    )
    assert (transfer.state, transfer.replayed) == (TransferState.PREPARED, False)
    assert transfer.terms is not None
    reserved = {
        (b.participant_id, b.currency): b.reserved_minor
        for b in await world.api.balances(A)
        if b.reserved_minor
    }
    assert reserved == {(A, "HKD"): transfer.terms.source.amount_minor}


async def test_an_injected_rejection_is_a_remembered_refusal(make_world: Factory) -> None:
    world = await make_world(FaultPlan.parse("reject,on=prepare"))
    quote = await world.api.quote("HKD", "CNY", source_amount_minor=1_000_00)
    quote_id = quote.quote_id
    with pytest.raises(InsufficientFunds) as caught:
        await _prepare(world, "BANK-A:t-1", quote_id)
    assert caught.value.reason is Reason.INSUFFICIENT_LIQUIDITY
    # the metadata InsufficientFunds documents, as a real refusal's, marked injected
    assert caught.value.metadata == {
        "participant_id": LP,
        "account_kind": "LIQUIDITY",
        "currency": "CNY",
        "needed_minor": str(quote.target.amount_minor),
        "available_minor": str(LIQUIDITY_MINOR),
        "injected": "true",
    }
    assert "refused by fault injection" in caught.value.message
    await world.faulty.set_plan(FaultPlan())
    with pytest.raises(InsufficientFunds) as again:  # retries keep failing the same way
        await _prepare(world, "BANK-A:t-1", quote_id)
    assert again.value == caught.value
    status = await world.api.status("BANK-A:t-1")
    assert (status.state, status.rejection_reason) == (
        TransferState.REJECTED,
        "INSUFFICIENT_LIQUIDITY",
    )


async def test_one_validator_down_still_makes_a_quorum(make_world: Factory) -> None:
    world = await make_world(FaultPlan.parse("validators_down=HKMA"))
    await _prepare(world, "BANK-A:t-1", await _quote_id(world))
    await world.api.commit("BANK-A:t-1")
    finality = await world.api.finality("BANK-A:t-1")
    assert finality.final
    assert finality.block
    assert finality.certificate
    assert finality.certificate.signer_ids == ("BOT", "CBUAE", "PBoC", "SAMA")
    validators = await world.api.validators()
    assert {v.validator_id: v.online for v in validators.validators}["HKMA"] is False
    assert verify(finality.block, finality.certificate, checked_public_keys(validators))


@pytest.mark.parametrize("spec", ["validators_down=HKMA+BOT", "no_quorum"])
async def test_without_a_quorum_commits_stay_pending_and_prepares_are_refused(
    make_world: Factory, spec: str
) -> None:
    world = await make_world()
    await _prepare(world, "BANK-A:t-1", await _quote_id(world))
    await world.faulty.set_plan(FaultPlan.parse(spec))
    assert sum(v.online for v in (await world.api.validators()).validators) == 3
    committed = await world.api.commit("BANK-A:t-1")  # the decision stands: the commit is taken
    assert committed.state is TransferState.COMMITTED
    pending = await world.api.finality("BANK-A:t-1")
    assert pending.block is not None
    assert pending.block.height == 1
    assert pending.certificate is None
    assert not pending.final
    tick = await world.api.tick()
    assert (tick.tip_height, tick.final_height) == (1, 0)
    with pytest.raises(QuorumUnavailable) as refused:  # nothing new starts without a quorum
        await _prepare(world, "BANK-A:t-2", await _quote_id(world))
    assert refused.value.reason is Reason.QUORUM_UNAVAILABLE
    await world.faulty.set_plan(FaultPlan())  # the validators come back
    final = await world.api.finality("BANK-A:t-1")
    assert final.final
    assert final.block == pending.block


async def test_crash_before_commit_loses_the_commit(make_world: Factory) -> None:
    world = await make_world(FaultPlan.parse("crash_before_commit"))
    await _prepare(world, "BANK-A:t-1", await _quote_id(world))
    with pytest.raises(Unavailable):
        await world.api.commit("BANK-A:t-1")
    with pytest.raises(Unavailable):  # down until restarted
        await world.api.status("BANK-A:t-1")
    await world.faulty.restart(FaultPlan())
    assert (await world.api.status("BANK-A:t-1")).state is TransferState.PREPARED
    assert (await world.api.commit("BANK-A:t-1")).state is TransferState.COMMITTED


async def test_crash_after_commit_keeps_the_commit(make_world: Factory) -> None:
    world = await make_world(FaultPlan.parse("crash_after_commit"))
    await _prepare(world, "BANK-A:t-1", await _quote_id(world))
    with pytest.raises(Unavailable):
        await world.api.commit("BANK-A:t-1")
    await world.faulty.restart(FaultPlan())
    status = await world.api.status("BANK-A:t-1")
    assert status.state is TransferState.COMMITTED
    retried = await world.api.commit("BANK-A:t-1")
    assert retried.replayed
    assert (await world.api.finality("BANK-A:t-1")).final


async def test_crash_after_prepare_keeps_the_reservation(make_world: Factory) -> None:
    world = await make_world(FaultPlan.parse("crash_after_prepare"))
    quote_id = await _quote_id(world)
    with pytest.raises(Unavailable):
        await _prepare(world, "BANK-A:t-1", quote_id)
    with pytest.raises(Unavailable):  # down until restarted
        await world.api.status("BANK-A:t-1")
    await world.faulty.restart(FaultPlan())
    status = await world.api.status("BANK-A:t-1")
    assert status.state is TransferState.PREPARED  # durable before the crash
    assert status.terms is not None
    reserved = {b.currency: b.reserved_minor for b in await world.api.balances(A)}
    assert reserved["HKD"] == status.terms.source.amount_minor
    again = await world.api.prepare(
        "BANK-A:t-1", quote_id=quote_id, payer_id=A, payee_id=B, timeout_ms=60_000
    )
    assert (again.state, again.replayed) == (TransferState.PREPARED, True)  # reserved once
    assert (await world.api.commit("BANK-A:t-1")).state is TransferState.COMMITTED


async def test_crash_after_prepare_spares_a_refused_prepare(make_world: Factory) -> None:
    world = await make_world(FaultPlan.parse("crash_after_prepare,no_quorum"))
    with pytest.raises(QuorumUnavailable):
        await _prepare(world, "BANK-A:t-1", await _quote_id(world))
    assert not world.faulty.crashed  # a refusal is no durable prepare: no crash
    assert (await world.api.status("BANK-A:t-1")).state is TransferState.REJECTED


async def test_a_short_quote_ttl_lets_a_quote_expire_before_prepare(make_world: Factory) -> None:
    world = await make_world(FaultPlan.parse("quote_ttl_ms=500,on=status"))
    quote = await world.api.quote("HKD", "CNY", source_amount_minor=1_000_00)
    assert quote.expires_at_us == world.clock.now_us() + 500_000
    explicit = await world.api.quote("HKD", "CNY", source_amount_minor=1_000_00, ttl_ms=9_000)
    assert explicit.expires_at_us == world.clock.now_us() + 9_000_000  # an explicit TTL stands
    world.clock.advance_ms(500)
    with pytest.raises(QuoteUnusable) as caught:
        await _prepare(world, "BANK-A:t-1", quote.quote_id)
    assert caught.value.reason is Reason.QUOTE_EXPIRED
    assert await _prepare(world, "BANK-A:t-2", explicit.quote_id) is TransferState.PREPARED


async def test_fates_are_deterministic_from_the_seed(tmp_path: Path) -> None:
    spec = "latency_ms=0..2,drop_request=20,drop_reply=20,duplicate=30,on=status"

    async def outcomes(seed: int, name: str) -> list[str]:
        async with open_world("in_process", tmp_path / name, FaultPlan.parse(spec, seed=seed)) as w:
            await w.api.abort("BANK-A:t-1")
            seen = []
            for _ in range(30):
                try:
                    await w.api.status("BANK-A:t-1")
                    seen.append("ok")
                except Unavailable:
                    seen.append("lost")
            assert len(w.faulty.fates) == 30
            assert all(op is Operation.STATUS for op, _ in w.faulty.fates)
            return seen

    first = await outcomes(11, "a.db")
    assert first == await outcomes(11, "b.db")
    assert first != await outcomes(12, "c.db")
    assert "ok" in first
    assert "lost" in first


def test_fault_specs_parse_and_print_back() -> None:
    plan = FaultPlan.parse(
        ["latency_ms=5..20,drop_reply=30", "validators_down=HKMA+BOT,on=commit+prepare"], seed=9
    )
    assert plan == FaultPlan(
        seed=9,
        latency_ms_min=5,
        latency_ms_max=20,
        drop_reply_percent=30,
        validators_down=frozenset({"HKMA", "BOT"}),
        operations=frozenset({Operation.COMMIT, Operation.PREPARE}),
    )
    assert FaultPlan.parse(plan.spec()) == plan
    assert FaultPlan.parse("crash_after_commit,no_quorum").crash_after_commit_percent == 100
    assert FaultPlan.parse("crash_after_prepare=40").crash_after_prepare_percent == 40
    short = FaultPlan.parse("quote_ttl_ms=250,crash_after_prepare", seed=3)
    assert (short.quote_ttl_ms, FaultPlan.parse(short.spec())) == (250, short)
    env = {"CONDPAY_BRIDGE_FAULTS": "reject=50", "CONDPAY_BRIDGE_FAULT_SEED": "4"}
    assert FaultPlan.from_env(env) == FaultPlan(seed=4, reject_percent=50)
    assert FaultPlan.from_env({}) == FaultPlan()
    for bad in (
        "explode",
        "drop_reply=lots",
        "drop_reply=101",
        "validators_down=ECB",
        "on=x",
        "quote_ttl_ms=-1",
        "quote_ttl_ms=600001",
    ):
        with pytest.raises(ValueError, match=r"."):
            FaultPlan.parse(bad)


async def test_an_in_memory_bridge_refuses_to_restart_rather_than_start_empty() -> None:
    bridge = await Bridge.open(":memory:", key_seed=KEY_SEED)
    faulty = await FaultyBridge.wrap(bridge, FaultPlan())
    try:
        await faulty.register_bank("BANK-M")
        with pytest.raises(RuntimeError, match="in-memory bridge"):
            await faulty.restart()
        assert not faulty.crashed  # nothing changed: the same bridge answers, state and all
        assert {p.participant_id for p in await faulty.inner.participants()} >= {"BANK-M"}
        await faulty.close()
        with pytest.raises(RuntimeError, match="in-memory bridge"):
            await bridge.reopen()
    finally:
        await faulty.close()


async def test_an_in_memory_bridge_that_crashed_stays_down_rather_than_start_empty() -> None:
    bridge = await Bridge.open(":memory:", key_seed=KEY_SEED)
    faulty = await FaultyBridge.wrap(bridge, FaultPlan.parse("crash_before_commit"))
    with pytest.raises(Unavailable):
        await faulty.commit("BANK-A:t-1")
    with pytest.raises(RuntimeError, match="in-memory bridge"):
        await faulty.restart(FaultPlan())
    with pytest.raises(Unavailable):
        await faulty.status("BANK-A:t-1")
