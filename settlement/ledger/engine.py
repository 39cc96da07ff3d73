"""The ledger engine: group commit with per-request guarantees.

Calls arrive concurrently; the engine queues them and a writer task takes everything queued (up to
``BATCH_COMMANDS_MAX``) into one database transaction:

1. look up the stored outcome of every request id (a retry is answered from there);
2. load the rows the commands name (see Reads for the order), the wallets and institutions, then
   lock their balance rows, the supply rows and, if the batch reads a balance (it may post), the
   ledger head, always in that order and sorted, so batches never deadlock (on PostgreSQL the
   last three in one statement; a batch that reads nothing but money, its wallets known, looks
   up its stored outcomes in that statement too);
3. run each command against the in-memory working set inside a savepoint: a refused command
   changes nothing and does not disturb its neighbours;
4. if anything was posted, seal the new journal entries (sequence numbers in commit order, hash
   chain; the head locked now if it was not yet); build every reply; write balances, entries,
   postings and the outcomes in the same transaction; commit;
5. only then answer the callers.

Every guarantee holds per request: each sees the state left by the ones before it in the batch,
exactly as if they had committed one by one. A batch that fails for a transient reason is retried
whole (tenacity, bounded); one that fails for any other reason is split and its commands run one
per transaction, so one bad request cannot sink the others. Dry runs take the same path in a
transaction of their own that is rolled back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import structlog
from google.protobuf.message import Message
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from settlement import limits, tracing
from settlement.clock import Clock
from settlement.errors import Reason, SettlementError, idempotency_conflict
from settlement.faults import NO_FAULTS, Faults
from settlement.ledger.commands import Command
from settlement.ledger.contract_quota import count_today
from settlement.ledger.directory import Directory
from settlement.ledger.journal import seal
from settlement.ledger.notifier import PaymentNotifier
from settlement.ledger.payment_memo import PaymentMemo
from settlement.ledger.payment_rows import (
    fetch_contracts,
    fetch_key_owners,
    fetch_oracles,
    fetch_seen_events,
    lock_payments,
    lock_registry,
    payment_table_rows,
)
from settlement.ledger.record_rows import (
    LOANS,
    QUOTES,
    SETTLEMENTS,
    TITLES,
    fetch_seen_loan_events,
    loan_event_rows,
    title_move_rows,
)
from settlement.ledger.records import (
    BalanceKey,
    ChangeSet,
    Funds,
    InstitutionRecord,
    LoanRecord,
    OperationKey,
    OperationRecord,
    QuoteRecord,
    Reads,
    SettlementRecord,
    SettlementState,
    TitleRecord,
    WalletRecord,
    reply_snapshot,
)
from settlement.ledger.store import LedgerStore, LedgerTransaction
from settlement.ledger.working_set import WorkingSet, World

if TYPE_CHECKING:
    from opentelemetry.context import Context

log = structlog.get_logger("condpay.engine")


@dataclass(frozen=True, slots=True)
class OperationInfo:
    request_id: str
    replayed: bool
    dry_run: bool
    commit_seq: int


ReplyT = TypeVar("ReplyT", bound=Message, covariant=True)


class ReplyCodec(Protocol[ReplyT]):
    """Supplied by the API layer: the reply to store for a result, and a stored reply replayed."""

    def build(self, result: object, info: OperationInfo) -> ReplyT: ...

    def replay(self, stored: bytes) -> ReplyT: ...


class ErrorCodec(Protocol):
    def encode(self, error: SettlementError) -> bytes: ...


class StoredFailure(Exception):
    """The stored failure of an earlier call with this request id (a serialized rpc Status)."""

    def __init__(self, status: bytes) -> None:
        super().__init__("stored failure")
        self.status = status


@dataclass(slots=True)
class _Submission:
    command: Command
    codec: ReplyCodec[Any]
    future: asyncio.Future[Message]
    trace: Context | None = None  # the caller's tracing context (settlement/tracing.py)

    @property
    def key(self) -> OperationKey:
        return (self.command.caller, self.command.request_id)


@dataclass(frozen=True, slots=True)
class _Applied:
    submission: _Submission
    result: object
    first_entry: int
    error: SettlementError | None


@dataclass(slots=True)
class _Fresh:
    """The outcome of a command run in this batch."""

    ok: bool
    outcome: bytes  # the reply or the rpc Status, as stored
    reply: Message | None
    error: SettlementError | None
    commit_seq: int  # the last journal entry it wrote, 0 if none


class LedgerEngine:
    def __init__(
        self,
        store: LedgerStore,
        clock: Clock,
        errors: ErrorCodec,
        directory: Directory,
        notifier: PaymentNotifier | None = None,
        faults: Faults = NO_FAULTS,
    ) -> None:
        self._store = store
        self._faults = faults
        self._notifier = notifier or PaymentNotifier()
        # Told the ids of new payouts after their commit (settlement/coordination/payouts.py).
        self._payouts_created: Callable[[list[SettlementRecord]], None] | None = None
        self._directory = directory
        self._payment_memo = PaymentMemo(limits.PAYMENT_MEMO_SIZE)
        self._clock = clock
        self._errors = errors
        self._queue: list[_Submission] = []
        self._has_work = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._busy = 0
        self._idle = asyncio.Event()
        self._closing = False
        self._retrying = AsyncRetrying(
            stop=stop_after_attempt(limits.RETRY_ATTEMPTS_MAX)
            | stop_after_delay(limits.RETRY_TOTAL_SECONDS_MAX),
            wait=wait_exponential_jitter(
                multiplier=limits.RETRY_WAIT_INITIAL_SECONDS,
                max=limits.RETRY_WAIT_MAX_SECONDS,
                jitter=limits.RETRY_WAIT_JITTER_SECONDS,
            ),
            retry=retry_if_exception(store.is_retryable),
            before_sleep=self._count_retry,
            reraise=True,
        )
        self.retries = 0
        self.batches = 0  # counters for tests and metrics
        self.batch_commands = 0
        # Told each batch's size and the commands still waiting when it starts (metrics).
        self.on_batch: Callable[[int, int], None] | None = None

    def _count_retry(self, state: RetryCallState) -> None:
        self.retries += 1
        log.info(
            "batch_retry",
            attempt=state.attempt_number,
            error=repr(state.outcome.exception()) if state.outcome else None,
        )

    async def start(self) -> None:
        self._idle.set()
        self._workers = [
            asyncio.create_task(self._work(), name=f"ledger-writer-{i}")
            for i in range(self._store.writer_connections)
        ]

    async def close(self) -> None:
        """Refuse new work, finish what is queued, stop the writers."""
        self._closing = True
        while self._queue or self._busy:
            await self._idle.wait()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    async def execute(self, command: Command, codec: ReplyCodec[ReplyT]) -> ReplyT:
        """Run ``command`` in the next batch; its reply, or raise SettlementError/StoredFailure."""
        if self._closing:
            raise SettlementError(Reason.SHUTTING_DOWN, "the server is shutting down; retry")
        if len(self._queue) >= limits.QUEUE_COMMANDS_MAX:
            raise SettlementError(Reason.OVERLOADED, "too many requests in flight; retry")
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._queue.append(_Submission(command, codec, future, tracing.current()))
        self._idle.clear()
        self._has_work.set()
        # A caller that goes away cancels only its future: the batch goes on, the outcome is
        # stored, and a retry gets it.
        return cast(ReplyT, await future)

    # -- the writer loop -----------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            while not self._queue:
                self._has_work.clear()
                await self._has_work.wait()
            batch = self._queue[: limits.BATCH_COMMANDS_MAX]
            del self._queue[: len(batch)]
            if self.on_batch is not None:
                self.on_batch(len(batch), len(self._queue))
            self._busy += 1
            try:
                await self._process(batch)
            finally:
                self._busy -= 1
                if not self._busy and not self._queue:
                    self._idle.set()

    async def _process(self, batch: list[_Submission]) -> None:
        real = [s for s in batch if not s.command.dry_run]
        if real:
            await self._run(real, commit=True)
        for submission in batch:
            if submission.command.dry_run:
                await self._run([submission], commit=False)

    async def _run(self, batch: list[_Submission], *, commit: bool) -> None:
        self.batches += 1
        self.batch_commands += len(batch)
        try:
            with tracing.span(
                "ledger.batch",
                parent=batch[0].trace,
                links_from=[s.trace for s in batch[1:]],
                batch_commands=len(batch),
            ):
                async for attempt in self._retrying.copy():
                    with attempt:
                        results = await self._attempt(batch, commit=commit)
        except Exception as exc:
            if len(batch) > 1 and not self._store.is_retryable(exc):
                log.warning("batch_failed_splitting", error=repr(exc), commands=len(batch))
                for submission in batch:
                    await self._run([submission], commit=commit)
                return
            self._fail(batch, exc)
            return
        for submission, result in zip(batch, results, strict=True):
            if submission.future.done():
                continue
            if isinstance(result, BaseException):
                submission.future.set_exception(result)
            else:
                submission.future.set_result(result)

    def _fail(self, batch: Sequence[_Submission], exc: Exception) -> None:
        if self._store.is_retryable(exc):
            log.warning("storage_unavailable", error=repr(exc), commands=len(batch))
            error: Exception = SettlementError(
                Reason.STORAGE_UNAVAILABLE, "the database is unavailable; retry"
            )
        else:
            log.error(
                "command_failed",
                error=repr(exc),
                exc_info=exc,
                request_ids=[s.command.request_id for s in batch],
            )
            error = exc
        for submission in batch:
            if not submission.future.done():
                submission.future.set_exception(error)

    async def _attempt(
        self, batch: list[_Submission], *, commit: bool
    ) -> list[Message | BaseException]:
        now_us = self._clock.now_us()
        primaries: dict[OperationKey, _Submission] = {}
        for submission in batch:
            primaries.setdefault(submission.key, submission)
        fresh_results: dict[OperationKey, _Fresh] = {}
        ws: WorkingSet | None = None
        committing = None
        with tracing.span("db.transaction"):
            try:
                async with self._store.transaction(commit=commit) as tx:
                    keys = [key for key, s in primaries.items() if s.command.store_outcome]
                    money = self._money_only(primaries.values())
                    if money is not None:
                        # Money alone (transfers and the like, their wallets known): the stored
                        # outcomes come with the locks, in one statement.
                        funds = await tx.lock_funds(*money.locks, operations=keys)
                        stored = funds.operations
                    else:
                        stored = await tx.fetch_operations(keys)
                    fresh = [s for key, s in primaries.items() if key not in stored]
                    if fresh:
                        if money is not None:
                            ws, head = money.working_set(now_us, funds), funds.head
                        else:
                            ws, head = await self._load(tx, fresh, now_us)
                        applied = self._apply(ws, fresh)
                        head_seq, head_hash = 0, b""
                        # The ledger head is locked last: with the balances by a batch that
                        # reads any (it may post), else only if it posted after all.
                        if ws.entries:
                            head_seq, head_hash = head or await tx.lock_head()
                            head_seq, head_hash = seal(ws.entries, head_seq, head_hash, now_us)
                        operations = self._record(applied, ws, fresh_results, now_us)
                        await self._write(tx, ws, operations, head_seq, head_hash)
                    committing = tracing.start("db.commit")  # ends once the block's exit commits
            finally:
                tracing.end(committing)
        if commit and ws is not None:
            self._committed(ws, fresh)
        return [self._answer(s, primaries, stored, fresh_results) for s in batch]

    async def _load(
        self, tx: LedgerTransaction, fresh: list[_Submission], now_us: int
    ) -> tuple[WorkingSet, tuple[int, bytes] | None]:
        """Everything the commands read, locked in the global order (see Reads), and the ledger
        head (seq, hash) when locked with the balances."""
        reads = Reads()
        for submission in fresh:
            reads.merge(submission.command.reads())
        world = await self._load_world(tx, reads)
        for submission in fresh:  # what only the loaded payments, settlements and loans name
            reads.merge(submission.command.reads_after(world))
        if reads.loan_ids - world.loans.keys():  # loans a loaded settlement names
            world.loans.update(await LOANS.lock(tx, sorted(reads.loan_ids - world.loans.keys())))
        if reads.loan_event_ids:
            world.seen_loan_events = await fetch_seen_loan_events(tx, sorted(reads.loan_event_ids))
        world.titles = await TITLES.lock(tx, sorted(reads.title_ids))
        world.quotes = await QUOTES.lock(tx, sorted(reads.quote_ids))
        wallets, missing = self._directory.cached_wallets(sorted(reads.wallet_ids))
        if missing:
            loaded = await tx.fetch_wallets(missing)
            self._directory.remember_wallets(loaded.values())  # committed rows
            wallets.update(loaded)
        institutions, absent = self._directory.cached_institutions(sorted(reads.institution_ids))
        if absent:
            found = await tx.fetch_institutions(absent)
            self._directory.remember_institutions(found.values())
            institutions.update(found)
        funds = await tx.lock_funds(*_locks(reads))
        ws = WorkingSet(now_us, wallets, institutions, funds.balances, funds.supply, world)
        return ws, funds.head

    def _money_only(self, submissions: Iterable[_Submission]) -> _MoneyOnly | None:
        """The batch's reads when they are balances and supply alone and every wallet and
        institution they name is known to this process (their rows never change): then nothing
        but the money needs reading, and it is locked with the stored outcomes' lookup. (The
        locks may cover a request answered from its stored outcome: held to the commit, no
        more.)"""
        reads = Reads()
        for submission in submissions:
            command = submission.command
            if type(command).reads_after is not Command.reads_after:
                return None  # it may read more once its first rows are loaded
            own = command.reads()
            if not own.money_only():
                return None  # at the first command that reads more, not after all of them
            reads.merge(own)
        wallets, missing = self._directory.cached_wallets(sorted(reads.wallet_ids))
        institutions, absent = self._directory.cached_institutions(sorted(reads.institution_ids))
        if missing or absent:
            return None
        return _MoneyOnly(_locks(reads), wallets, institutions)

    @staticmethod
    def _apply(ws: WorkingSet, fresh: list[_Submission]) -> list[_Applied]:
        """Each command in a savepoint: a refused one leaves the working set as it found it."""
        applied = []
        for submission in fresh:
            savepoint, first_entry = ws.savepoint(), len(ws.entries)
            try:
                ws.caller = submission.command.caller
                result = reply_snapshot(submission.command.apply(ws))
            except SettlementError as error:
                ws.rollback_to(savepoint)
                applied.append(_Applied(submission, None, first_entry, error))
            else:
                applied.append(_Applied(submission, result, first_entry, None))
        ws.assert_conserved()
        return applied

    def _record(
        self,
        applied: list[_Applied],
        ws: WorkingSet,
        fresh_results: dict[OperationKey, _Fresh],
        now_us: int,
    ) -> list[OperationRecord]:
        """Build every reply (the entries are sealed by now) and the outcomes to store."""
        operations = []
        # Each command's own entries run from its first to the next command's first: a refused
        # command rolled back to its savepoint, so it wrote none and the next one starts there.
        ends = [item.first_entry for item in applied[1:]] + [len(ws.entries)]
        for item, end in zip(applied, ends, strict=True):
            command = item.submission.command
            written = ws.entries[item.first_entry : end] if item.error is None else []
            commit_seq = written[-1].seq if written else 0
            fresh = self._outcome(item.submission, item.result, item.error, commit_seq)
            fresh_results[item.submission.key] = fresh
            if command.store_outcome:
                operations.append(
                    OperationRecord(
                        command.caller,
                        command.request_id,
                        command.method,
                        command.request_hash,
                        fresh.ok,
                        fresh.outcome,
                        commit_seq,
                        now_us,
                    )
                )
        return operations

    @staticmethod
    async def _write(
        tx: LedgerTransaction,
        ws: WorkingSet,
        operations: list[OperationRecord],
        head_seq: int,
        head_hash: bytes,
    ) -> None:
        world = ws.world
        titles = ws.changed(TitleRecord)
        loans = ws.changed(LoanRecord)
        tables = [
            *TITLES.rows(titles),
            title_move_rows(titles),
            *QUOTES.rows(ws.changed(QuoteRecord)),
            *SETTLEMENTS.rows(ws.changed(SettlementRecord)),
            *LOANS.rows(loans),
            loan_event_rows(loans),
        ]
        if ws.changed_payments() or ws.new_contracts or world.registry_changed:
            tables += payment_table_rows(
                ws.changed_payments(),
                ws.new_contracts,
                ws.changed_oracles(),
                world.registry_version if world.registry_changed else None,
                world.claimed_keys,
                ws.now_us,
            )
        await tx.write(
            ChangeSet(
                institutions=ws.new_institutions,
                wallets=ws.new_wallets,
                new_balances=ws.new_balances,
                changed_balances=ws.changed_balances(),
                changed_supply=ws.changed_supply(),
                entries=ws.entries,
                operations=operations,
                head_seq=head_seq,
                head_hash=head_hash,
                tables=[t for t in tables if t.rows],
            )
        )

    def on_payouts_created(self, callback: Callable[[list[SettlementRecord]], None]) -> None:
        """``callback(settlements)`` after each commit that creates payouts (new PENDING
        settlements, as committed), before the callers are answered; it must not block."""
        self._payouts_created = callback

    def _committed(self, ws: WorkingSet, fresh: list[_Submission]) -> None:
        """After COMMIT, before anyone is answered: test crash points, caches, watchers."""
        self._faults.point("after_commit_before_reply")
        for point in {s.command.AFTER_COMMIT_FAULT for s in fresh} - {""}:
            self._faults.point(point)
        self._directory.remember_wallets(ws.new_wallets)
        self._directory.remember_institutions(ws.new_institutions)
        self._directory.remember_contracts(ws.new_contracts)
        self._directory.remember_payments(p for p in ws.changed_payments() if p.is_new)
        self._payment_memo.committed(ws.changed_payments())
        self._notifier.notify(p.payment_id for p in ws.changed_payments())
        self._notifier.notify(loan.loan_id for loan in ws.changed(LoanRecord))
        if self._payouts_created is not None:
            created = [
                s
                for s in ws.changed(SettlementRecord)
                if s.is_new and s.state is SettlementState.PENDING
            ]
            if created:
                self._payouts_created(created)

    async def _load_world(self, tx: LedgerTransaction, reads: Reads) -> World:
        """The rows other reads depend on, in the global lock order: the oracle registry, then
        payments, then settlements, then loans (each sorted); contracts and oracles are read,
        contracts from the cache when known. Titles and quotes are locked next (by the caller,
        once the loaded rows have said which), then balances and supply."""
        world = World()
        if reads.registry:
            world.registry_version = await lock_registry(tx, write=reads.registry == "write")
        world.payments = await lock_payments(tx, sorted(reads.payment_ids), self._payment_memo)
        world.settlements = await SETTLEMENTS.lock(tx, sorted(reads.settlement_ids))
        world.loans = await LOANS.lock(tx, sorted(reads.loan_ids))
        hashes = reads.contract_hashes | {p.contract_hash for p in world.payments.values()}
        world.contracts, missing = self._directory.cached_contracts(sorted(hashes))
        if missing:
            loaded = await fetch_contracts(tx, missing)
            self._directory.remember_contracts(loaded.values())
            world.contracts.update(loaded)
        world.compiled = {h: self._directory.compiled(c) for h, c in world.contracts.items()}
        registering = [
            caller
            for caller, wanted in reads.registrations.items()
            if wanted - world.contracts.keys()
        ]
        if registering:  # only a batch that may register a new contract counts (and locks)
            world.contracts_today = await count_today(tx, registering, self._clock.now_us())
        world.oracles = await fetch_oracles(tx, sorted(reads.oracle_ids))
        world.seen_events = await fetch_seen_events(tx, sorted(reads.event_ids), world.payments)
        world.key_owners = await fetch_key_owners(tx, sorted(reads.oracle_keys))
        return world

    def _outcome(
        self,
        submission: _Submission,
        result: object,
        error: SettlementError | None,
        commit_seq: int,
    ) -> _Fresh:
        command = submission.command
        if error is not None:
            return _Fresh(False, self._errors.encode(error), None, error, 0)
        info = OperationInfo(command.request_id, False, command.dry_run, commit_seq)
        reply = submission.codec.build(result, info)
        return _Fresh(True, reply.SerializeToString(), reply, None, commit_seq)

    def _answer(
        self,
        submission: _Submission,
        primaries: dict[OperationKey, _Submission],
        stored: dict[OperationKey, OperationRecord],
        fresh: dict[OperationKey, _Fresh],
    ) -> Message | BaseException:
        key = submission.key
        record = stored.get(key)
        if record is not None:
            return self._replay(
                submission,
                record.method,
                record.request_hash,
                _Fresh(record.ok, record.outcome, None, None, record.commit_seq),
            )
        primary = primaries[key]
        result = fresh[key]
        if primary is submission:
            if result.error is not None:
                return result.error
            assert result.reply is not None
            return result.reply
        # A duplicate in the same batch: answered as a replay of the first.
        return self._replay(
            submission, primary.command.method, primary.command.request_hash, result
        )

    @staticmethod
    def _replay(
        submission: _Submission, method: str, request_hash: bytes, stored: _Fresh
    ) -> Message | BaseException:
        """The answer to a call whose request id has an outcome: the stored (or just made) one's
        reply or failure, or IDEMPOTENCY_KEY_REUSED (saying what that outcome was) when the
        outcome is another request's."""
        command = submission.command
        if request_hash != command.request_hash or method != command.method:
            return idempotency_conflict(
                command.request_id, method, stored.ok, stored.outcome, stored.commit_seq
            )
        if stored.ok:
            reply: Message = submission.codec.replay(stored.outcome)
            return reply
        return StoredFailure(stored.outcome)


def _locks(reads: Reads) -> tuple[list[BalanceKey], list[str], bool]:
    """``lock_funds``' arguments for ``reads``: a batch that reads a balance may post, so it
    locks the ledger head with them."""
    return sorted(reads.balance_keys), sorted(reads.currencies), bool(reads.balance_keys)


@dataclass(frozen=True, slots=True)
class _MoneyOnly:
    locks: tuple[list[BalanceKey], list[str], bool]
    wallets: dict[str, WalletRecord]
    institutions: dict[str, InstitutionRecord]

    def working_set(self, now_us: int, funds: Funds) -> WorkingSet:
        return WorkingSet(
            now_us, self.wallets, self.institutions, funds.balances, funds.supply, World()
        )
