"""The engine under storage faults, through the real gRPC server: transient failures are retried
whole and apply once; a commit whose acknowledgement is lost is found and replayed, not repeated;
a command that crashes is isolated from the rest of its batch; exhausted retries answer
UNAVAILABLE and change nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import asyncpg
import pytest
from condpay.errors import ApiError, Internal, Unavailable

from settlement.db.urls import parse_database_url
from settlement.ledger import commands
from settlement.ledger.records import Reads
from settlement.ledger.store import LedgerStore, LedgerTransaction
from settlement.ledger.working_set import WorkingSet
from tests.support.harness import Harness, start_harness
from wallets import OwnerKey


class InjectedTransient(ConnectionError):
    """Stands for a serialization failure, a deadlock or a dropped connection."""


class FaultyStore:
    """Delegates to the real store; pops one planned fault per transaction."""

    def __init__(self, inner: LedgerStore) -> None:
        self.inner = inner
        self.dialect = inner.dialect
        self.writer_connections = inner.writer_connections
        self.faults: list[str] = []

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    def transaction(self, *, commit: bool) -> AbstractAsyncContextManager[LedgerTransaction]:
        return self._transaction(commit)

    @asynccontextmanager
    async def _transaction(self, commit: bool) -> AsyncIterator[LedgerTransaction]:
        fault = self.faults.pop(0) if self.faults else None
        async with self.inner.transaction(commit=commit) as tx:
            yield tx
            if fault == "before_commit":
                raise InjectedTransient("connection lost before COMMIT")
        if fault == "after_commit":
            raise InjectedTransient("connection lost after COMMIT, before the reply")

    def is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, InjectedTransient) or self.inner.is_retryable(exc)


@pytest.fixture
async def faulty(database_url: str) -> AsyncIterator[tuple[Harness, FaultyStore]]:
    stores: list[FaultyStore] = []

    def wrap(store: LedgerStore) -> LedgerStore:
        stores.append(FaultyStore(store))
        return stores[-1]

    async with start_harness(database_url, wrap_store=wrap) as h:
        yield h, stores[0]


async def funded_wallet(h: Harness) -> tuple[OwnerKey, str]:
    bank_key = await h.institution("icbc-sz")
    await h.client().issue("icbc-sz", "CNY", 1_000_00)
    return bank_key, "w_reserve.icbc-sz"


async def journal_length(h: Harness) -> int:
    return len([e async for e in h.client().journal()])


@pytest.mark.parametrize("fault", ["before_commit", "after_commit"])
async def test_transient_faults_are_retried_and_apply_once(
    faulty: tuple[Harness, FaultyStore], fault: str
) -> None:
    h, store = faulty
    bank_key, reserve = await funded_wallet(h)
    wallet = (
        await h.client("institution/icbc-sz").open_wallet("icbc-sz", OwnerKey.generate().public_key)
    ).wallet
    store.faults = [fault, fault]
    retries_before = h.runtime.engine.retries
    reply = await h.client("institution/icbc-sz").transfer(
        bank_key, reserve, wallet.wallet_id, "CNY", 250_00
    )
    assert h.runtime.engine.retries == retries_before + 2
    # A lost acknowledgement is resolved from the stored outcome: applied once, answered once.
    assert reply.operation.replayed is (fault == "after_commit")
    assert await journal_length(h) == 2
    balance = await h.client().get_wallet(wallet.wallet_id)
    assert (
        next(b for b in balance.balances if b.available.currency == "CNY").available.amount_minor
        == 250_00
    )


async def test_exhausted_retries_answer_unavailable_and_change_nothing(
    faulty: tuple[Harness, FaultyStore],
) -> None:
    h, store = faulty
    await funded_wallet(h)
    store.faults = ["before_commit"] * 50
    cb = h.client()
    cb._attempts_max = 1  # see the server's answer, not the client's own retries
    with pytest.raises(Unavailable) as refused:
        await cb.issue("icbc-sz", "CNY", 5_00, request_id="issue-under-fire")
    assert refused.value.reason == "STORAGE_UNAVAILABLE"
    store.faults = []
    assert await journal_length(h) == 1
    # Nothing was stored under the request id: the same call now goes through.
    reply = await cb.issue("icbc-sz", "CNY", 5_00, request_id="issue-under-fire")
    assert not reply.operation.replayed


class Crashes(commands.Command):
    """A command with a bug: it raises something that is not a SettlementError."""

    def reads(self) -> Reads:
        return Reads()

    def apply(self, ws: WorkingSet) -> object:
        raise RuntimeError("bug in a command")


async def test_a_crashing_command_does_not_sink_its_batch(harness: Harness) -> None:
    bank_key, reserve = await funded_wallet(harness)
    bank = harness.client("institution/icbc-sz")
    wallet = (await bank.open_wallet("icbc-sz", OwnerKey.generate().public_key)).wallet
    crash = Crashes(
        method="/test/Crash", caller="platform/x", request_id="crash-1", request_hash=b"x"
    )
    engine = harness.runtime.engine
    batches_before = engine.batches
    results = await asyncio.gather(
        engine.execute(crash, codec=None),  # type: ignore[arg-type]
        *(bank.transfer(bank_key, reserve, wallet.wallet_id, "CNY", 1_00) for _ in range(5)),
        return_exceptions=True,
    )
    assert isinstance(results[0], RuntimeError)
    assert all(not isinstance(r, BaseException) for r in results[1:]), results
    assert engine.batches > batches_before
    assert await journal_length(harness) == 6


async def test_an_unexpected_error_answers_internal_without_its_text(harness: Harness) -> None:
    async def broken(wallet_id: str) -> None:
        raise RuntimeError("secret database detail")

    harness.runtime.reader.wallet = broken  # type: ignore[method-assign]
    harness.allowed_log_events.add("unhandled_error")  # provoked on purpose
    with pytest.raises(Internal) as failed:
        await harness.client().get_wallet("w_anything")
    assert "secret" not in str(failed.value)
    assert failed.value.reason == "INTERNAL"
    assert isinstance(failed.value, ApiError)


@pytest.mark.postgres
async def test_a_writer_session_ended_between_batches_costs_the_caller_nothing(
    pg_url: str,
) -> None:
    """The writer keeps its next batch's transaction open between batches; a server that ends
    idle sessions (``idle_in_transaction_session_timeout``, a failover, an operator) leaves the
    next call to a retry on a fresh connection, never to the caller: applied once, no error."""
    async with start_harness(pg_url) as h:
        bank_key, reserve = await funded_wallet(h)
        dsn = parse_database_url(pg_url).asyncpg_dsn or ""
        observer = await asyncpg.connect(dsn)
        try:
            ended = await observer.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND state = 'idle in transaction'"
            )
        finally:
            await observer.close()
        assert ended >= 1  # the writer's open, statement-less transaction
        cb = h.client("institution/icbc-sz")
        cb._attempts_max = 1  # the server's own retry must absorb it, not the client's
        wallet = (await cb.open_wallet("icbc-sz", OwnerKey.generate().public_key)).wallet
        reply = await cb.transfer(bank_key, reserve, wallet.wallet_id, "CNY", 250_00)
        assert not reply.operation.replayed
        assert await journal_length(h) == 2
